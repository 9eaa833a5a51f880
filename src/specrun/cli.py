"""The ``specrun`` command line. User mistakes become one message on stderr and exit code 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from specrun.errors import SpecrunError, UsageError

app = typer.Typer(
    help="Declarative experiments for fine-tuning BERT-family text classifiers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

StoreOpt = Annotated[Path, typer.Option("--store", envvar="SPECRUN_STORE", help="DuckDB result store")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a spec key: --set train.epochs=1 (repeatable)")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table, csv or json")]
DEFAULT_STORE = Path("specrun.duckdb")
FORMATS = ("table", "csv", "json")


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def _plan(spec: Path, overrides: list[str] | None):
    from specrun.plugins import get_registry
    from specrun.runner.plan import plan_runs
    from specrun.spec.load import load_spec

    registry = get_registry()
    for problem in registry.load_errors:
        from specrun.console import err

        err.print(f"warning: {problem}")
    loaded = load_spec(spec, overrides or [], registry)
    return loaded, plan_runs(loaded, registry), registry


@app.command()
def apply(
    spec: Annotated[Path, typer.Argument(help="the experiment's TOML spec")],
    set_: SetOpt = None,
    store: StoreOpt = DEFAULT_STORE,
    force: Annotated[bool, typer.Option("--force", help="rerun runs already completed")] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="stop at the first failed run")] = False,
):
    """Run every run of SPEC that the store does not hold completed, and record the results."""
    from specrun.console import ApplyProgress, err
    from specrun.runner.local import LocalExecutor
    from specrun.runner.preflight import check_runs
    from specrun.store import Store
    from specrun.store.runs import record_apply

    loaded, planned, registry = _plan(spec, set_)
    found = check_runs(planned, registry, Store(store), force=force)
    for run_id, why in found.unavailable.items():
        err.print(f"warning: run {run_id} cannot run on this machine and will be recorded as failed: {why}", markup=False, highlight=False)
    record_apply(Store(store), loaded.experiment, str(spec), loaded.text, set_ or [], [p.run_id for p in planned])
    err.print(f"{loaded.experiment}: {len(planned)} run(s) → {store}")
    with ApplyProgress(len(planned)) as progress:
        executor = LocalExecutor(Store(store), registry, str(spec), progress=progress, fail_fast=fail_fast, force=force)
        outcomes = executor.run_all(planned)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    err.print("summary: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if counts.get("failed"):
        err.print(f"failed runs keep their error in the store: specrun runs --status failed --store {store}")
        raise typer.Exit(1)


@app.command()
def plan(
    spec: Annotated[Path, typer.Argument(help="the experiment's TOML spec")],
    set_: SetOpt = None,
    store: StoreOpt = DEFAULT_STORE,
    fmt: FormatOpt = "table",
):
    """Print the runs SPEC expands into and which the store already holds; checks every run's data; trains nothing."""
    from specrun.console import print_rows
    from specrun.runner.preflight import preflight
    from specrun.store import Store
    from specrun.store.runs import evaluations, statuses

    _check_format(fmt)
    loaded, planned, registry = _plan(spec, set_)
    found = preflight(planned, registry, Store(store))
    required = {d.run_id: d for p in planned for d in _all_dependencies(p)}
    known = statuses(Store(store), [p.run_id for p in planned] + list(required))
    evaluated = evaluations(Store(store), [p.run_id for p in planned])

    def status(run) -> str:
        reason = found.reason(run.run_id)
        if reason:
            return f"will fail: {reason}"
        state = known.get(run.run_id)
        if state == "completed":
            new_sets, _ = run.eval_sets_to_add(evaluated.get(run.run_id, {}))
            return f"cached, will evaluate on {', '.join(new_sets)}" if new_sets else "cached"
        return f"will rerun ({state})" if state else "new"

    rows = [(d.run_id, d.method, f"required first ({d.experiment}: {d.spec_path})", d.seed, status(d)) for d in required.values()]
    rows += [(p.run_id, p.method, json.dumps(p.sweep_values) if p.sweep_values else "", p.seed, status(p)) for p in planned]
    print_rows(["run_id", "method", "sweep", "seed", "status"], rows, fmt, title=f"{loaded.experiment}: {len(planned)} run(s)")
    error = found.error()
    if error is not None:
        raise error


def _all_dependencies(run):
    for dep in run.dependencies:
        yield from _all_dependencies(dep)
        yield dep


@app.command()
def validate(spec: Annotated[Path, typer.Argument(help="the experiment's TOML spec")], set_: SetOpt = None):
    """Check SPEC (syntax, keys, plugin options, sweep) without touching data or the store."""
    from specrun.plugins import get_registry
    from specrun.spec.load import load_spec

    loaded = load_spec(spec, set_ or [], get_registry())
    typer.echo(f"{spec}: ok ({len(loaded.runs)} run(s))")


@app.command()
def runs(
    store: StoreOpt = DEFAULT_STORE,
    experiment: Annotated[Optional[str], typer.Option(help="only this experiment's runs (those of its latest apply)")] = None,
    status: Annotated[Optional[str], typer.Option(help="only runs with this status")] = None,
    history: Annotated[bool, typer.Option("--history", help="with --experiment: also runs of its earlier applies")] = False,
    fmt: FormatOpt = "table",
):
    """List the runs in the store with their main results."""
    from specrun.console import print_rows
    from specrun.store import Store

    _check_format(fmt)
    query = """
        SELECT s.run_id, s.experiment, s.status, s.method, s.seed, s.sweep, s.accuracy, s.f1, s.train_seconds,
               strftime(s.finished_at, '%Y-%m-%d %H:%M:%S') AS finished_at, regexp_extract(r.error, '^[^\n]*') AS error
        FROM run_summary s JOIN runs r USING (run_id)
        WHERE ($experiment IS NULL OR s.run_id IN (
                SELECT run_id FROM current_runs WHERE experiment = $experiment
                UNION ALL  -- the whole history when asked, or when no apply was recorded (stores older than m005)
                SELECT run_id FROM experiment_runs WHERE experiment = $experiment
                  AND ($history OR NOT EXISTS (SELECT 1 FROM applies WHERE experiment = $experiment))))
          AND ($status IS NULL OR s.status = $status)
        ORDER BY s.finished_at NULLS LAST, s.run_id
    """
    with Store(store).read() as db:
        cursor = db.execute(query, {"experiment": experiment, "status": status, "history": history})
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    print_rows(columns, rows, fmt)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="a SQL query over the store (read-only)")],
    store: StoreOpt = DEFAULT_STORE,
    fmt: FormatOpt = "table",
):
    """Run a read-only SQL query over the store and print the result."""
    import duckdb

    from specrun.console import print_rows
    from specrun.store import Store

    _check_format(fmt)
    with Store(store).read() as db:
        try:
            cursor = db.execute(query)
        except duckdb.Error as exc:
            raise UsageError(f"SQL error: {exc}") from None
        if cursor.description is None:
            return
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    print_rows(columns, rows, fmt)


@app.command()
def plugins(
    kind: Annotated[Optional[str], typer.Option(help="method, dataset, model_source, transform or analysis")] = None,
    fmt: FormatOpt = "table",
):
    """List every plugin with its kind, origin and options."""
    from specrun.console import err, print_rows
    from specrun.plugins import get_registry
    from specrun.plugins.registry import HOOK_FOR_KIND

    _check_format(fmt)
    if kind is not None and kind not in HOOK_FOR_KIND:
        raise UsageError(f"--kind must be one of {', '.join(HOOK_FOR_KIND)}")
    registry = get_registry()
    for problem in registry.load_errors:
        err.print(f"warning: {problem}")
    rows = []
    for entry in registry.all():
        if kind and entry.kind != kind:
            continue
        schema = entry.plugin.Options.model_json_schema()
        if fmt == "json":
            options = schema.get("properties", {})
        else:
            options = ", ".join(f"{name}={_default(field)}" for name, field in entry.plugin.Options.model_fields.items())
        rows.append((entry.kind, entry.plugin.name, entry.origin, entry.plugin.description, options))
    print_rows(["kind", "name", "origin", "description", "options"], rows, fmt)


def _default(field) -> str:
    """A plugin option's default as the spec would write it, or '(required)'."""
    if field.is_required():
        return "(required)"
    value = field.get_default(call_default_factory=True)
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return json.dumps(value, default=str)


@app.command()
def predict(
    run_id: Annotated[str, typer.Argument(help="a completed run's id")],
    texts: Annotated[Optional[list[str]], typer.Argument(help="texts to classify")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", help="a CSV/TSV/JSONL file with a 'text' column (and 'text_pair')")] = None,
    store: StoreOpt = DEFAULT_STORE,
    fmt: FormatOpt = "table",
):
    """Load a stored run and print label, confidence and latency for each text."""
    from specrun.console import print_rows
    from specrun.runner.predict import Predictor, read_texts
    from specrun.store import Store

    _check_format(fmt)
    items = [(t, None) for t in texts or []]
    if file is not None:
        items += read_texts(file)
    if not items:
        raise UsageError("give texts to classify, or --file")
    predictor = Predictor.load(Store(store), run_id)
    rows = predictor.predict(items)
    print_rows(["text", "label", "confidence", "latency_ms"], rows, fmt)


# typer vendors click; its exception base is reachable through the public BadParameter
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main() -> None:
    """Entry point: run the app, turning user errors into a message and exit code 2."""
    from specrun.console import err
    from specrun.runner.modeling import quiet_libraries

    quiet_libraries()
    try:
        code = app(standalone_mode=False)
    except SpecrunError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(exc.exit_code)
    except _ClickException as exc:  # usage errors from the argument parser
        exc.show()
        sys.exit(exc.exit_code if exc.exit_code else 2)
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted: a run in progress is recorded as interrupted and reruns on the next apply")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    if code == 130:  # typer turns Ctrl-C into exit code 130
        err.print("interrupted: a run in progress is recorded as interrupted and reruns on the next apply")
    sys.exit(code if isinstance(code, int) else 0)
