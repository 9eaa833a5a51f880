"""The ``specrun`` command line. User mistakes become one message on stderr and exit code 2."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from specrun import api
from specrun.errors import SpecError, SpecrunError, UsageError

app = typer.Typer(
    help="Declarative experiments for fine-tuning pretrained transformers on text tasks (classification, extractive QA).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
log = logging.getLogger("specrun.cli")

StoreOpt = Annotated[Path, typer.Option("--store", envvar="SPECRUN_STORE", help="DuckDB result store")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="override a spec key: --set train.epochs=1 (repeatable)")
]
ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile", help="apply the spec's \\[profiles.NAME] overrides (its runs form the experiment <name>-<profile>)"
    ),
]
Format = Literal["table", "csv", "json", "markdown"]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="output format")]
#: Run statuses (``runs.status``) and plugin kinds (``registry.HOOK_FOR_KIND``; a test keeps them equal).
Status = Literal["running", "completed", "failed", "interrupted", "skipped", "pruned"]
Kind = Literal["method", "dataset", "model_source", "transform", "analysis", "task"]
DEFAULT_STORE = Path("specrun.duckdb")
FORMATS = ("table", "csv", "json", "markdown")
GLOBAL_OPTIONS = ("-v", "--verbose", "-q", "--quiet", "--version")
APPLY_INTERRUPTED = (
    "interrupted: a run in progress is recorded as interrupted; the next apply resumes it "
    "(from its last checkpoint when it has one)"
)
_interrupt_note = "interrupted"  # what Ctrl-C prints: apply says what becomes of its run, other commands train nothing


def _version(value: bool) -> None:
    if value:
        from specrun.version import __version__  # the one place it is written (pyproject.toml reads it at build time)

        typer.echo(f"specrun {__version__}")
        raise typer.Exit()


@app.callback()
def options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="more detail: debug notes, and library warnings (each once)")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="warnings, errors and results only")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
):
    """Declarative experiments for fine-tuning pretrained transformers on text tasks (classification, extractive QA)."""
    from specrun.logs import configure

    if verbose and quiet:
        raise UsageError("give -v/--verbose or -q/--quiet, not both")
    configure(verbose=verbose, quiet=quiet)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")


@app.command()
def apply(
    spec: Annotated[Path, typer.Argument(help="the experiment's TOML spec")],
    set_: SetOpt = None,
    profile: ProfileOpt = None,
    store: StoreOpt = DEFAULT_STORE,
    force: Annotated[
        bool,
        typer.Option("--force", help="rerun runs already completed; interrupted ones start over instead of resuming"),
    ] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="stop at the first failed run")] = False,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            help="where runs execute: local (one at a time, in this process) or ray; default: $SPECRUN_EXECUTOR or local",
            show_default=False,
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="join this Ray cluster (default: $RAY_ADDRESS, else start a local Ray instance)",
            show_default=False,
        ),
    ] = None,
    cpus_per_run: Annotated[
        float, typer.Option("--cpus-per-run", help="with --executor ray: CPUs per run (torch threads follow)")
    ] = 1,
    gpus_per_run: Annotated[float, typer.Option("--gpus-per-run", help="with --executor ray: GPUs per run")] = 0,
    track: Annotated[
        list[str] | None,
        typer.Option(
            "--track",
            help="log every run live to this built-in tracker (mlflow, tensorboard; repeatable), besides the spec's \\[tracking] trackers",
            show_default=False,
        ),
    ] = None,
):
    """Run every run of SPEC that the store does not hold completed (an interrupted one resumes from its
    last checkpoint), and record the results."""
    global _interrupt_note
    _interrupt_note = APPLY_INTERRUPTED
    result = api.apply(
        spec,
        overrides=set_,
        store=store,
        profile=profile,
        executor=executor,
        force=force,
        fail_fast=fail_fast,
        ray_address=ray_address,
        cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run,
        progress=True,
        track=track,
    )
    if not result.ok:
        raise typer.Exit(1)


def _plan_search(loaded, registry, store, fmt: str) -> None:
    """``plan`` of a spec with ``[search]``: its trials replayed from the store, as far as the store holds them finished."""
    from specrun.console import print_rows
    from specrun.driver.search import Search

    search = loaded.spec.search
    trials = Search(loaded, registry, store).run(train=False)
    rows = [
        (
            t.number,
            "new" if t.state == "left" else t.state,
            "" if t.value is None else round(t.value, 6),
            json.dumps(t.params) if t.params else "",
            " ".join(r.run_id for r in t.runs),
        )
        for t in trials
    ]
    print_rows(
        ["trial", "status", "value", "params", "run_ids"],
        rows,
        fmt,
        title=f"{loaded.experiment}: a search of {search.n_trials} trial(s) ({search.sampler}, pruner {search.pruner})",
    )
    count = {s: sum(t.state == s for t in trials) for s in ("complete", "pruned", "failed", "left")}
    train = loaded.spec.train
    if train.allow_selection_on_reported and not train.select_on:
        where = "on the reported evaluation set (train.allow_selection_on_reported: optimistic, marked selected-on)"
    elif train.select_on:
        where = f"on split 'selection' (train.select_on = {train.select_on!r})"
    else:
        where = f"on split 'selection' (carved from {loaded.spec.data.train_split!r}; never the reported split)"
    log.info(
        f"search: {search.n_trials} trials: {count['complete'] + count['pruned'] + count['failed']} finished "
        f"({count['complete']} complete, {count['pruned']} pruned, {count['failed']} failed), {count['left']} left, "
        f"{search.parallel} at a time; "
        f"objective: the mean {search.metric} {where} over {len(loaded.spec.experiment.seeds)} seed(s), {search.direction}d"
    )


@app.command()
def plan(
    spec: Annotated[Path, typer.Argument(help="the experiment's TOML spec")],
    set_: SetOpt = None,
    profile: ProfileOpt = None,
    store: StoreOpt = DEFAULT_STORE,
    fmt: FormatOpt = "table",
):
    """Print the runs SPEC expands into, which the store already holds and which will fail; checks every run's data and model; trains nothing."""
    from specrun.console import print_rows
    from specrun.driver.preflight import preflight
    from specrun.runner.checkpoint import saved_step
    from specrun.store import Store
    from specrun.store.db import artifacts_root

    _check_format(fmt)
    loaded, planned, registry, skipped = api._plan(spec, set_, profile)
    if loaded.spec.search is not None:  # the spec's runs at its own values stand for the trials' data and model checks
        found = preflight(planned, registry, Store(store))
        for run in planned:
            if found.reason(run.run_id):
                log.warning(f"the search's trials will fail: {found.reason(run.run_id)}")
                break
        _plan_search(loaded, registry, Store(store), fmt)
        return
    found = preflight(planned, registry, Store(store))  # it reads every run's status (dependencies too) once
    required = {d.run_id: d for p in planned for d in _all_dependencies(p)}
    known, evaluated = found.statuses, found.evaluated

    def status(run) -> str:
        reason = found.reason(run.run_id)
        if reason:
            return f"will fail: {reason}"
        state = known.get(run.run_id)
        if run.run_id in found.stale:
            return f"stale: will retrain ({' and '.join(found.stale[run.run_id])} changed since it trained)"
        if state == "completed":
            new_sets, _ = run.eval_sets_to_add(evaluated.get(run.run_id, {}))
            return f"cached, will evaluate on {', '.join(new_sets)}" if new_sets else "cached"
        if not state:
            return "new"
        step = saved_step(artifacts_root(Path(store)), run.run_id)
        return f"will resume from step {step} ({state})" if step is not None else f"will rerun ({state})"

    rows = [
        (d.run_id, d.method, f"required first ({d.experiment}: {d.spec_path})", d.seed, status(d))
        for d in required.values()
    ]
    rows += [
        (p.run_id, p.method, json.dumps(p.sweep_values) if p.sweep_values else "", p.seed, status(p)) for p in planned
    ]
    rows += [
        (
            s.run.run_id,
            s.run.method,
            json.dumps(s.run.sweep_values) if s.run.sweep_values else "",
            s.run.seed,
            f"left out: {s.reason}",
        )
        for s in skipped
    ]
    print_rows(
        ["run_id", "method", "sweep", "seed", "status"], rows, fmt, title=f"{loaded.experiment}: {len(planned)} run(s)"
    )
    if loaded.analyses or (loaded.spec.report and loaded.spec.report.path):
        then = [f"analyses {', '.join(a['id'] for a in loaded.analyses)}"] if loaded.analyses else []
        then += [f"report {loaded.spec.report.path}"] if loaded.spec.report and loaded.spec.report.path else []
        log.info(f"then: {'; '.join(then)}")
    error = found.error()
    if error is not None:
        raise error


def _all_dependencies(run):
    for dep in run.dependencies:
        yield from _all_dependencies(dep)
        yield dep


@app.command()
def validate(
    spec: Annotated[Path, typer.Argument(help="the experiment's TOML spec")],
    set_: SetOpt = None,
    profile: ProfileOpt = None,
):
    """Check SPEC (syntax, keys, plugin options, sweep; every profile unless --profile names one) without touching data or the store."""
    from specrun.plugins import get_registry
    from specrun.spec.load import load_spec

    registry = get_registry()
    loaded = load_spec(spec, set_ or [], registry, profile)
    search = loaded.spec.search
    checked = [
        f"a search of {search.n_trials} trial(s) × {len(loaded.runs)} seed(s)"
        if search
        else f"{len(loaded.runs)} run(s)"
    ]
    problems: list[tuple] = []  # every profile's, reported together
    for name in loaded.composed.profiles if profile is None else []:
        try:
            other = load_spec(spec, set_ or [], registry, name)
        except SpecError as exc:
            problems += [
                (p[0], p[1], f"(profile {name}) {p[2]}", p[3] if len(p) > 3 and p[3] else exc.path)
                for p in exc.problems
            ]
            continue
        found = other.spec.search
        checked.append(
            f"profile {name}: "
            + (
                f"a search of {found.n_trials} trial(s) × {len(other.runs)} seed(s)"
                if found
                else f"{len(other.runs)} run(s)"
            )
        )
    if problems:
        raise SpecError(str(spec), problems)
    typer.echo(f"{spec}: ok ({'; '.join(checked)})")


#: Rows ``specrun runs`` shows in a table unless --limit says otherwise.
RUNS_TABLE_LIMIT = 50


@app.command()
def runs(
    store: StoreOpt = DEFAULT_STORE,
    experiment: Annotated[
        str | None, typer.Option(help="only this experiment's runs (those of its latest apply without --set)")
    ] = None,
    status: Annotated[Status | None, typer.Option(help="only runs with this status")] = None,
    history: Annotated[
        bool, typer.Option("--history", help="with --experiment: also runs of its earlier applies")
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option(min=0, help="show the last N runs (default: 50 in a table, all in csv/json/markdown; 0: all)"),
    ] = None,
    fmt: FormatOpt = "table",
):
    """List the runs in the store with their main results (the most recently finished last)."""
    from specrun.console import print_rows
    from specrun.store import Store
    from specrun.store.runs import drop_empty, list_runs

    if history and experiment is None:
        raise UsageError(
            "--history goes with --experiment NAME (without --experiment, runs lists every run in the store)"
        )
    columns, rows = list_runs(Store(store), experiment, status, history)
    if limit is None:
        limit = RUNS_TABLE_LIMIT if fmt == "table" else 0
    if limit and len(rows) > limit:
        log.info(
            f"the last {limit} of {len(rows)} runs (--limit 0 shows all; --experiment or --status narrow them down)"
        )
        rows = rows[-limit:]
    if fmt == "table":  # a terminal table leaves out the QA column when it lists no QA run; files keep every column
        columns, rows = drop_empty(columns, rows, ("exact_match",))
    at = columns.index("sweep")  # a run outside any sweep: blank, as plan shows it (not the store's '{}')
    rows = [(*row[:at], "" if row[at] in (None, "{}") else row[at], *row[at + 1 :]) for row in rows]
    print_rows(columns, rows, fmt)


@app.command()
def sql(
    query: Annotated[
        str,
        typer.Argument(
            help="SQL over the store (read-only); several statements separated by ';' run in order and each result is shown"
        ),
    ],
    store: StoreOpt = DEFAULT_STORE,
    fmt: FormatOpt = "table",
    allow_files: Annotated[
        bool, typer.Option("--allow-files", help="let the query read and write other files (COPY, read_csv, ATTACH)")
    ] = False,
):
    """Run a read-only SQL query over the store and print the result (other files only with --allow-files).

    Statements separated by ';' run in order; the table and markdown formats show each result in turn,
    csv and json take one statement that gives a result."""
    from specrun.console import print_rows
    from specrun.store import Store
    from specrun.store.query import run_queries

    one = fmt in ("csv", "json")  # one file holds one table
    results = run_queries(Store(store), query, allow_files=allow_files, most=1 if one else None)
    for number, (statement, columns, rows) in enumerate(results):
        if fmt == "markdown" and number:
            sys.stdout.write("\n")
        if len(results) > 1 and fmt == "markdown":
            sys.stdout.write(f"`{statement}`\n\n")
        print_rows(columns, rows, fmt, title=statement if len(results) > 1 else None)


@app.command()
def snapshot(
    path: Annotated[Path, typer.Argument(help="where to write the copy (a new file)")],
    store: StoreOpt = DEFAULT_STORE,
):
    """Write a consistent copy of the store to PATH, for notebooks and backups (the store stays free for writers)."""
    from specrun.store import Store
    from specrun.store.query import snapshot as write_snapshot

    runs = write_snapshot(Store(store), path)
    log.info(f"snapshot of {store} ({runs} runs) written to {path}")


TargetsArg = Annotated[
    list[str], typer.Argument(help="spec files, or names of experiments in the store", metavar="SPEC_OR_EXPERIMENT...")
]


@app.command()
def analyze(
    targets: TargetsArg,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="run only this analysis (an id in the spec, or any installed analysis with its defaults); repeatable",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="recompute even when the results are current")] = False,
    set_: SetOpt = None,
    profile: ProfileOpt = None,
    store: StoreOpt = DEFAULT_STORE,
):
    """Run the analyses a spec declares over the runs the store holds (never trains); results go to tables in the store."""
    from specrun.analysis.engine import select
    from specrun.analysis.targets import resolve
    from specrun.plugins import get_registry
    from specrun.store import Store

    registry = get_registry()
    resolved = [resolve(t, Store(store), registry, set_ or [], profile) for t in targets]
    failed = False
    for target in resolved:
        entries = select(target.entries, only, registry)
        if not entries:
            raise UsageError(
                f"{target.spec_path} declares no analyses: add [[analyses]] entries, or name one with --only "
                f"({', '.join(registry.names('analysis'))})"
            )
        failed |= api._run_analyses(Store(store), registry, target, entries, force)
        tables = sorted({t.name for e in entries for t in registry.get("analysis", e.name).tables})
        log.info(
            f"  query them: specrun sql \"SELECT * FROM {tables[0]} WHERE experiment = '{target.experiment}'\""
            f" (tables: {', '.join(tables)})"
        )
    if failed:
        raise typer.Exit(1)


@app.command()
def report(
    targets: TargetsArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="the HTML file (default: the spec's \\[report] path, else reports/<experiment>.html)"
        ),
    ] = None,
    png: Annotated[
        Path | None, typer.Option("--png", help="also export every chart as PNG and SVG into this folder")
    ] = None,
    title: Annotated[str | None, typer.Option("--title", help="the report's title")] = None,
    no_analyze: Annotated[
        bool, typer.Option("--no-analyze", help="show stored analysis results as they are; compute nothing")
    ] = False,
    set_: SetOpt = None,
    profile: ProfileOpt = None,
    store: StoreOpt = DEFAULT_STORE,
):
    """Write one self-contained HTML report of one or more experiments: runs, analyses with charts, the SQL behind each."""
    from specrun.analysis.targets import resolve
    from specrun.plugins import get_registry
    from specrun.store import Store

    registry = get_registry()
    resolved = [resolve(t, Store(store), registry, set_ or [], profile) for t in targets]
    first = resolved[0].report
    out = output or (
        Path(first.path)
        if len(resolved) == 1 and first and first.path
        else Path("reports") / ("+".join(t.experiment for t in resolved) + ".html")
    )
    png = png or (Path(first.png) if len(resolved) == 1 and first and first.png else None)
    api._write_report(
        Store(store),
        registry,
        resolved,
        out,
        title or (first.title if len(resolved) == 1 and first else None),
        png,
        analyze=not no_analyze,
    )


@app.command()
def plugins(
    name: Annotated[
        str | None, typer.Argument(help="show this plugin's options: type, default and description", metavar="NAME")
    ] = None,
    kind: Annotated[Kind | None, typer.Option(help="only plugins of this kind")] = None,
    check: Annotated[
        bool, typer.Option("--check", help="exit with code 1 when any plugin failed to load (for CI)")
    ] = False,
    fmt: FormatOpt = "table",
):
    """List every plugin with its kind, origin and options; with NAME, one plugin's options in detail."""
    from specrun.console import out, print_rows
    from specrun.plugins import describe, get_registry

    _check_format(fmt)
    registry = get_registry()  # logs the plugins that failed to load
    if check:
        from specrun.plugins.commands import problems as command_problems

        failed = len(registry.load_errors) + len(command_problems)
        loaded = f"{len(registry.all())} plugins loaded"
        if registry.deprecations:  # they work: not a failure, but CI should show what to change
            loaded += (
                f"; {len(registry.deprecations)} use{'s' if len(registry.deprecations) == 1 else ''} a deprecated form "
                "of the plugin API (the warnings above say what to change)"
            )
        if failed:
            raise typer.Exit(_fail(f"{loaded}; {failed} failed to load (the warnings above say which and what to do)"))
        out.print(f"{loaded}; none failed", markup=False, highlight=False)
        return
    if name is not None:
        for entry in describe.find(registry, name, kind):
            if fmt == "table":
                out.print(
                    f"{entry.plugin.name} ({entry.kind.replace('_', ' ')}) from {entry.origin}, "
                    f"version {registry.code_version(entry.kind, entry.plugin.name)}",
                    markup=False,
                    highlight=False,
                )
                if entry.plugin.description:
                    out.print(f"  {entry.plugin.description}", markup=False, highlight=False)
            print_rows(
                ["option", "type", "default", "description"],
                describe.option_rows(entry),
                fmt,
                title=None if fmt != "table" else f"{entry.plugin.name} options",
            )
            if hasattr(entry.plugin, "details"):  # e.g. lora: which placements each architecture takes
                title, columns, rows = entry.plugin.details()
                print_rows(columns, rows, fmt, title=None if fmt != "table" else title)
        return
    rows = []
    for entry in registry.all():
        if kind and entry.kind != kind:
            continue
        options = (
            entry.plugin.Options.model_json_schema().get("properties", {})
            if fmt == "json"
            else describe.options_summary(entry)
        )
        rows.append((entry.kind, entry.plugin.name, entry.origin, entry.plugin.description, options))
    print_rows(["kind", "name", "origin", "description", "options"], rows, fmt)


def _fail(message: str) -> int:
    """Print ``message`` as an error; the exit code of a check that failed."""
    from specrun.console import err

    err.print(f"error: {message}", markup=False, highlight=False)
    return 1


@app.command("new-plugin")
def new_plugin(
    kind: Annotated[
        Kind,
        typer.Argument(
            help="what the plugin provides: method, dataset, model_source, transform, analysis or task", metavar="KIND"
        ),
    ],
    name: Annotated[
        str, typer.Argument(help="the plugin's name in specs (lower-case letters, digits, _ . / -)", metavar="NAME")
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="the package folder to create (default: ./specrun-NAME)")
    ] = None,
):
    """Write a plugin package for KIND called NAME: a working plugin, its pyproject.toml entry point, and
    tests on specrun.testing that pass as written."""
    from specrun.plugins.template import write_package

    written = write_package(kind, name, output)
    log.info(
        f"wrote {written.folder}/ ({len(written.files)} files): the {kind.replace('_', ' ')} {name!r} in {written.module}"
    )
    log.info(f"next: pip install -e {written.folder} && pytest {written.folder}  (then: specrun plugins {name})")


@app.command()
def predict(
    run_id: Annotated[str, typer.Argument(help="a completed run's id (or a unique prefix)")],
    texts: Annotated[list[str] | None, typer.Argument(help="texts to classify")] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="a CSV/TSV/JSONL file with a 'text' column (and 'text_pair'; with 'label': accuracy and F1); "
            "for a QA run 'question' and 'context' columns (with 'answers': EM and F1)",
        ),
    ] = None,
    question: Annotated[
        str | None, typer.Option("--question", help="extractive-QA runs: the question (with --context)")
    ] = None,
    context: Annotated[
        str | None, typer.Option("--context", help="extractive-QA runs: the text to find the answer in")
    ] = None,
    store: StoreOpt = DEFAULT_STORE,
    fmt: FormatOpt = "table",
):
    """Load a stored run and print label, confidence and latency for each text (classification), or the
    answer, its score and latency for each question (extractive QA: --question and --context, or --file)."""
    from specrun.console import out, print_rows
    from specrun.driver.models import load_predictor
    from specrun.plugins import get_registry
    from specrun.runner.predict import label_ids, read_texts, scores
    from specrun.store import Store

    get_registry()  # loads the plugins first, so their load warnings show whatever happens next
    if not re.fullmatch(r"[0-9a-fA-F]+", run_id):  # a prefix is matched with LIKE: '' or '%' picked any run
        raise UsageError(
            f"{run_id!r} is not a run id: run ids are hexadecimal, e.g. 0f3a61f22496 or a prefix of one (specrun runs lists them)"
        )
    run_id = run_id.lower()
    if question is not None or context is not None:
        if texts:
            raise UsageError("give either texts to classify or --question and --context, not both")
        if not (question or "").strip() or not (context or "").strip():
            raise UsageError("--question and --context go together, and neither may be empty")
    predictor = None
    if question is not None or (file is not None and not texts):
        predictor = load_predictor(Store(store), run_id)
        if predictor.task_name == "extractive_qa":
            _predict_qa(predictor, question, context, file, fmt)
            return
        if question is not None:
            raise UsageError(
                f"run {run_id} is a run of task {predictor.task_name!r}: --question and --context are for extractive_qa runs; give texts"
            )
    for number, text in enumerate(texts or [], start=1):
        if not text.strip():
            raise UsageError(f"text {number} is empty; give a text to classify")
    items = [(t, None) for t in texts or []]
    given = read_texts(file) if file is not None else None
    if given is not None:
        items += given.items
    if not items:
        raise UsageError("give texts to classify, or --file")
    predictor = predictor or load_predictor(Store(store), run_id)
    expected = label_ids(given, predictor.label_names) if given is not None and given.labels is not None else None
    rows = predictor.predict(items)
    if fmt == "table":  # a long text would fill the terminal: the table shows its start, csv/json all of it
        rows = [(_clipped(t), *rest) for t, *rest in rows]
    if expected is None:
        print_rows(["text", "label", "confidence", "latency_ms"], rows, fmt)
        return
    expected = [None] * (len(items) - len(expected)) + expected  # texts given as arguments come first, unlabelled
    print_rows(
        ["text", "label", "expected", "confidence", "latency_ms"],
        [
            (t, label, predictor.label_names[e] if e is not None else None, c, ms)
            for (t, label, c, ms), e in zip(rows, expected)
        ],
        fmt,
    )
    labelled = [(row[1], e, row[3]) for row, e in zip(rows, expected) if e is not None]
    found = scores(
        [p for p, _, _ in labelled], [e for _, e, _ in labelled], predictor.label_names, [ms for _, _, ms in labelled]
    )
    summary = f"{file}: {len(labelled)} labelled texts: " + ", ".join(f"{k} {v:.4g}" for k, v in found.items())
    if fmt == "table":
        out.print(summary, markup=False, highlight=False)
    else:  # keep csv and json output machine-readable
        log.info(summary)


#: Characters of a text ``predict``'s table shows (csv, json and markdown show it whole).
SHOWN_TEXT = 200


def _clipped(text: str) -> str:
    """``text`` as a table cell: whitespace runs as one space, cut after ``SHOWN_TEXT`` characters."""
    flat = " ".join(text.split())
    if len(flat) <= SHOWN_TEXT:
        return flat
    return f"{flat[:SHOWN_TEXT].rstrip()}… ({len(text):,} characters; --format csv shows them all)"


def _predict_qa(predictor, question: str | None, context: str | None, file: Path | None, fmt: str) -> None:
    """``predict`` on an extractive-QA run: each question's answer, score and latency; with a file's
    'answers' column, each one's EM and F1 and the file's means (SQuAD v1.1)."""
    from specrun.console import out, print_rows
    from specrun.core.squad import question_scores
    from specrun.runner.predict import read_questions

    items = [(question, context)] if question is not None else []
    given = read_questions(file) if file is not None else None
    if given is not None:
        items += given.items
    answered = predictor.answer(items)
    references = (
        ([None] * (len(items) - len(given.answers)) + given.answers)
        if given is not None and given.answers is not None
        else None
    )
    if references is None:
        print_rows(
            ["question", "answer", "start", "score", "latency_ms"],
            [(a.question, a.answer, a.start, a.score, a.latency_ms) for a in answered],
            fmt,
        )
        return
    rows, em, f1 = [], [], []
    for a, refs in zip(answered, references):
        e, f = question_scores(a.answer, refs) if refs else (None, None)
        if refs:
            em.append(e)
            f1.append(f)
        rows.append((a.question, a.answer, " | ".join(refs or []) or None, a.score, e, f, a.latency_ms))
    print_rows(["question", "answer", "expected", "score", "exact_match", "f1", "latency_ms"], rows, fmt)
    latency = sum(a.latency_ms for a in answered) / len(answered)
    summary = (
        f"{file}: {len(em)} questions with answers: exact_match {sum(em) / len(em):.4g}, f1 {sum(f1) / len(f1):.4g}, "
        f"latency_ms_mean {latency:.4g}"
    )
    if fmt == "table":
        out.print(summary, markup=False, highlight=False)
    else:
        log.info(summary)


@app.command("app")
def serve_app(
    store: StoreOpt = DEFAULT_STORE,
    experiment: Annotated[
        str | None, typer.Option(help="preselect this experiment's runs (and its efficiency view)")
    ] = None,
    host: Annotated[
        str, typer.Option(help="address to serve on; anything but a loopback address serves other machines too")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to serve on")] = 7860,
    share: Annotated[
        bool,
        typer.Option("--share", help="also serve through a public gradio.live link (anyone with it can use the app)"),
    ] = False,
    record: Annotated[
        bool,
        typer.Option("--record", help="write the predictions made in the app to the store's app_predictions table"),
    ] = False,
):
    """Serve a local web app over the store's trained models: classify texts and files, compare runs, see accuracy against cost."""
    from specrun.store import Store

    try:
        import gradio  # noqa: F401 - an optional extra
    except ImportError as exc:
        raise UsageError(f"specrun app needs Gradio ({exc}): pip install 'specrun[app]'") from None
    from specrun.app import serve

    serve(Store(store), experiment=experiment, host=host, port=port, share=share, record=record)


@app.command()
def export(
    run_id: Annotated[str, typer.Argument(help="a completed run's id (or a unique prefix)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the folder to write (new, or empty)")],
    merge: Annotated[
        bool,
        typer.Option(
            "--merge", help="merge LoRA/IA3 adapters into the weights: a plain transformers model, no peft needed"
        ),
    ] = False,
    store: StoreOpt = DEFAULT_STORE,
):
    """Write a stored run as a model folder that transformers' from_pretrained and pipeline load: the
    model with its tokenizer and labels (adapters merged with --merge, else attached on load)."""
    from specrun.console import out
    from specrun.driver.models import export_run
    from specrun.plugins import get_registry
    from specrun.store import Store

    get_registry()  # loads the plugins first, so their load warnings show whatever happens next
    exported = export_run(Store(store), run_id, output, merge)
    what = {
        "model": "the model",
        "merged": "the model with its adapters merged into the weights",
        "model+adapter": "the base model and the run's adapters",
        "adapter": "the adapter folder",
    }[exported.kind]
    out.print(
        f"exported run {exported.run_id or run_id} ({exported.method}) to {exported.folder}: {what}, "
        + (f"labels {', '.join(exported.label_names)}" if exported.label_names else f"task {exported.task}"),
        markup=False,
        highlight=False,
    )
    if exported.note:
        log.info(exported.note)
    out.print(f"load it with {exported.how_to_load()}", markup=False, highlight=False)
    if exported.max_difference is not None:
        out.print(
            f"checked: loaded that way, it predicts what the run does (largest probability difference {exported.max_difference:.1e})",
            markup=False,
            highlight=False,
        )


# typer vendors click; its exception base is reachable through the public BadParameter
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _plugin_commands_possible() -> bool:
    """Whether a plugin could add commands, asked without loading the plugins (the light commands never
    need them): built-ins add none, so only entry-point plugins or a registry installed in-process can."""
    registry = sys.modules.get("specrun.plugins.registry")
    if registry is not None:
        return registry.commands_possible()
    from specrun.hookspecs import entry_point_plugins_installed

    return entry_point_plugins_installed()


def main() -> None:
    """Entry point: run the app, turning user errors into a message and exit code 2."""
    from specrun.console import err
    from specrun.logs import configure

    global _interrupt_note
    _interrupt_note = "interrupted"
    for stream in (sys.stdout, sys.stderr):  # a text an ASCII or Latin-1 terminal cannot show: escaped, no traceback
        if hasattr(stream, "reconfigure") and (stream.encoding or "").lower().replace("-", "") != "utf8":
            stream.reconfigure(errors="backslashreplace")
    configure()  # the defaults, for errors raised before the options are read
    plugin_commands = _plugin_commands_possible()
    if plugin_commands:
        from specrun.plugins.commands import add_plugin_commands

        add_plugin_commands(app)
    try:
        code = app(standalone_mode=False)
    except SpecrunError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(exc.exit_code)
    except _ClickException as exc:  # usage errors from the argument parser
        if isinstance(getattr(exc, "message", None), str):  # pydantic's prefix on a choice typer refused
            exc.message = exc.message.replace("Value error, ", "")
            if getattr(exc, "option_name", None) in GLOBAL_OPTIONS:  # `specrun apply -q ...`
                command = getattr(getattr(exc, "ctx", None), "info_name", None) or "COMMAND"
                exc.message += f"; global options go before the command: specrun {exc.option_name} {command} ..."
        exc.show()
        sys.exit(exc.exit_code if exc.exit_code else 2)
    except (KeyboardInterrupt, typer.Abort):
        err.print(_interrupt_note, markup=False, highlight=False)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    finally:
        if plugin_commands:
            from specrun.plugins.commands import restore_own_commands

            restore_own_commands(app)
    if code == 130:  # typer turns Ctrl-C into exit code 130
        err.print(_interrupt_note, markup=False, highlight=False)
    sys.exit(code if isinstance(code, int) else 0)


def entry() -> None:
    """The ``specrun`` command (and ``python -m specrun``): ``main``, then an exit that skips tearing
    down the interpreter once torch is loaded. Freeing torch's, transformers' and peft's module state
    object by object takes 1-1.5 s after every training or prediction command and serves nothing: the
    exit handlers still run, logs and output are flushed, files and the store are closed by then.
    (``main`` alone, for callers in a Python process that goes on.)"""
    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if "torch" not in sys.modules:
        sys.exit(code)
    import atexit
    import logging
    import os

    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, exit status 1
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`specrun ... | head`)
            pass
    os._exit(code)
