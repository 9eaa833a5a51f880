"""specrun from Python: the CLI's commands as functions, for notebooks, scripts and other tools.

    import specrun

    result = specrun.apply("specs/quickstart.toml", overrides=["train.epochs=1"], store="results.duckdb")
    result.runs                      # a polars DataFrame: one row per planned run, with its status and numbers
    specrun.runs(store="results.duckdb", experiment="quickstart")
    specrun.sql("SELECT method, avg(accuracy) AS acc FROM run_summary GROUP BY method", store="results.duckdb")
    model = specrun.load_run(result.runs["run_id"][0], store="results.duckdb")
    model.predict([("a gorgeous, heartfelt film", None)])

Mistakes raise ``specrun.errors.SpecrunError`` (``SpecError`` with file, line and key for a spec) before
anything is written, as the CLI's exit code 2 does.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from specrun.errors import UsageError

if TYPE_CHECKING:
    import polars

    from specrun.driver.apply import Outcome
    from specrun.runner.predict import Predictor

log = logging.getLogger("specrun.cli")


def _store(store: str | os.PathLike | None):
    from specrun.store import Store
    from specrun.store.db import default_store_path

    return Store(Path(store) if store is not None else default_store_path())


@dataclass
class ApplyResult:
    """What an apply did: each planned run's outcome, and whether everything (analyses included) went well."""

    experiment: str
    store: Path
    outcomes: list[Outcome] = field(default_factory=list)
    analyses_failed: bool = False

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self.outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        return counts

    @property
    def ok(self) -> bool:
        """No run failed, was skipped or interrupted, and no analysis failed."""
        return not (set(self.counts) & {"failed", "skipped", "interrupted", "busy"}) and not self.analyses_failed

    @property
    def runs(self) -> polars.DataFrame:
        """One row per planned run: run_id, label, status, error and its headline numbers."""
        import polars

        return polars.DataFrame(
            [
                {
                    "run_id": o.run.run_id,
                    "label": o.run.label(),
                    "seed": o.run.seed,
                    "status": o.status,
                    "error": o.error,
                    "accuracy": o.metrics.get("accuracy"),
                    "f1": o.metrics.get("f1"),
                    "train_seconds": o.metrics.get("train_seconds"),
                }
                for o in self.outcomes
            ],
            schema={
                "run_id": polars.String,
                "label": polars.String,
                "seed": polars.Int64,
                "status": polars.String,
                "error": polars.String,
                "accuracy": polars.Float64,
                "f1": polars.Float64,
                "train_seconds": polars.Float64,
            },
        )


def apply(
    spec: str | os.PathLike,
    overrides: list[str] | None = None,
    store: str | os.PathLike | None = None,
    profile: str | None = None,
    executor: str | None = None,
    force: bool = False,
    fail_fast: bool = False,
    ray_address: str | None = None,
    cpus_per_run: float = 1,
    gpus_per_run: float = 0,
    progress: bool = True,
    track: list[str] | None = None,
) -> ApplyResult:
    """``specrun apply``: train every run of ``spec`` the store does not hold completed, record the
    results, then run the spec's analyses and write its report (not for an apply with ``overrides``,
    which is a variant). ``executor``: 'local' (default, or ``SPECRUN_EXECUTOR``) or 'ray'. ``track``:
    built-in trackers to log the runs to live, besides the spec's ``[tracking] trackers``."""
    from specrun.console import ApplyProgress, err, progress_every
    from specrun.driver.apply import Driver
    from specrun.driver.preflight import check_runs
    from specrun.executors import executor_name
    from specrun.logs import is_quiet, quiet_libraries
    from specrun.store.runs import record_apply

    quiet_libraries()
    spec = Path(spec)
    every = progress_every()  # a bad SPECRUN_PROGRESS_EVERY is refused before anything is written
    executor = executor_name(executor)
    if executor != "ray" and (ray_address or cpus_per_run != 1 or gpus_per_run):
        raise UsageError("--ray-address, --cpus-per-run and --gpus-per-run go with --executor ray")
    store = _store(store)
    loaded, planned, registry, skipped = _plan(spec, overrides, profile)
    if loaded.spec.report and loaded.spec.report.path and not overrides:  # before training, not after
        _check_report_path(store, Path(loaded.spec.report.path))
    for left in skipped:
        log.warning("run %s (%s) left out: %s", left.run.run_id, left.run.label(), left.reason)
    if not planned:
        raise UsageError(f"every run of {spec} is left out by its constraints: nothing to apply")
    found = check_runs(planned, registry, store, force=force)
    for run_id, why in found.unavailable.items():
        log.warning("run %s cannot run on this machine and will be recorded as failed: %s", run_id, why)
    if found.to_train:
        _check_artifacts_folder(store.path)
    from specrun.tracking import open_trackers, tracker_names

    tracking, search = loaded.spec.tracking, loaded.spec.search
    if search is not None:
        from specrun.driver.search import import_optuna

        import_optuna()  # a missing extra: refused before anything is written
    names = tracker_names(tracking, track)  # an unknown tracker or a missing extra: refused before anything runs
    runner = _executor(
        executor, registry, ray_address, cpus_per_run, gpus_per_run
    )  # a cluster that cannot run them: before any write
    trackers = None
    try:
        trackers = open_trackers(names, tracking, store.path)
        apply_id = record_apply(store, loaded, overrides or [], [] if search else [p.run_id for p in planned])
        total = search.n_trials * len(loaded.spec.experiment.seeds) if search else len(planned)
        log.info(
            f"{loaded.experiment}: "
            + (f"a search of {search.n_trials} trial(s)" if search else f"{len(planned)} run(s)")
            + f" → {store.path}"
        )
        with ApplyProgress(total, quiet=is_quiet(), every=every) if progress else contextlib.nullcontext() as bars:
            runner.progress = bars
            driver = Driver(
                store,
                registry,
                str(spec),
                runner,
                progress=bars,
                fail_fast=fail_fast,
                force=force,
                trackers=trackers,
                track_every=tracking.every,
            )
            if search is not None:
                from specrun.driver.search import Search

                driver.keep_pruned = True
                if search.pruner != "none" and not driver.track_every:  # the pruner hears each evaluation
                    driver.track_every = tracking.every
                searching = Search(loaded, registry, store, driver, apply_id)
                searching.run(train=True)
                outcomes = list(searching.outcomes.values())
            else:
                outcomes = driver.run_all(planned)
    finally:
        if trackers is not None:
            trackers.close()
        runner.close()
    result = ApplyResult(loaded.experiment, store.path, outcomes)
    counts = result.counts
    if progress:
        err.print("summary: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        if counts.get("failed"):
            err.print(f"failed runs keep their error in the store: specrun runs --status failed --store {store.path}")
    result.analyses_failed = _analyze_and_report(loaded, registry, store, variant=bool(overrides))
    if progress and counts.get("interrupted"):
        err.print("interrupted runs run again at the next apply (from their last checkpoint when it is reachable)")
    return result


def runs(
    store: str | os.PathLike | None = None,
    experiment: str | None = None,
    status: str | None = None,
    history: bool = False,
) -> polars.DataFrame:
    """``specrun runs`` as a DataFrame: the experiment's current runs (``history``: every run it ever
    had), or all runs; optionally only those with ``status``."""
    import polars

    from specrun.store.runs import list_runs

    columns, rows = list_runs(_store(store), experiment, status, history)
    return polars.DataFrame(rows, schema=columns, orient="row", infer_schema_length=None)


def sql(query: str, store: str | os.PathLike | None = None, allow_files: bool = False) -> polars.DataFrame:
    """A read-only SQL query over the store, as a DataFrame (other files only with ``allow_files``). Several
    statements separated by ';' run in order, and one of them at most may give a result (a UsageError
    before any runs otherwise)."""
    import polars

    from specrun.store.query import run_query

    columns, rows = run_query(_store(store), query, allow_files=allow_files)
    return polars.DataFrame(rows, schema=columns, orient="row", infer_schema_length=None)


def load_run(run_id: str, store: str | os.PathLike | None = None) -> Predictor:
    """A stored run's trained model, ready to ``predict([(text, pair_or_None), ...])`` (classification) or
    ``answer([(question, context), ...])`` (an extractive-QA run)."""
    from specrun.driver.models import load_predictor

    return load_predictor(_store(store), run_id)


def _check_artifacts_folder(store: Path) -> None:
    """Runs save their weights and checkpoints under the artifacts folder: one that is a file, or cannot
    be made or written, would fail every run after it trained (a file even crashed the failure's cleanup)."""
    import os

    from specrun.store.db import artifacts_root

    if not os.access(store.resolve().parent, os.W_OK):
        return  # the store's own folder is read-only: recording the apply fails first, with the store's message
    root = artifacts_root(store)
    fix = "set SPECRUN_ARTIFACTS to a writable folder (default: specrun-artifacts/ beside the store)"
    if root.exists() and not root.is_dir():
        raise UsageError(f"the artifacts folder {root} is a file; {fix}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot make the artifacts folder {root}: {exc.strerror or exc}; {fix}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the artifacts folder {root}; {fix}")


def _plan(spec: Path, overrides: list[str] | None, profile: str | None):
    from specrun.plugins import get_registry
    from specrun.runner.constraints import apply_constraints
    from specrun.runner.plan import plan_runs
    from specrun.spec.load import load_spec

    registry = get_registry()  # logs the plugins that failed to load
    loaded = load_spec(spec, overrides or [], registry, profile)
    planned, skipped = apply_constraints(loaded, plan_runs(loaded, registry), registry)
    return loaded, planned, registry, skipped


def _executor(name: str, registry, ray_address, cpus_per_run: float, gpus_per_run: float):
    if name == "ray":
        from specrun.executors.ray import RayExecutor

        return RayExecutor(ray_address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run)
    from specrun.executors.local import LocalExecutor

    return LocalExecutor(registry)


def _analyze_and_report(loaded, registry, store, variant: bool) -> bool:
    """After an apply: the spec's analyses, then its report if ``[report] path`` asks for one. Returns
    whether an analysis failed. A variant (an apply with ``--set``) leaves them alone: they describe the
    experiment's current runs, which are the spec's own."""
    from specrun.analysis.targets import from_spec

    if not loaded.analyses and not (loaded.spec.report and loaded.spec.report.path):
        return False
    if variant:
        log.info(
            "analyses and report skipped: an apply with --set is a variant, and they cover the spec's own runs "
            f"(specrun analyze / specrun report {loaded.path} after an apply without --set)"
        )
        return False
    target = from_spec(loaded, store)
    failed = _run_analyses(store, registry, target, target.entries, force=False)
    report_spec = loaded.spec.report
    if report_spec and report_spec.path:
        _write_report(
            store,
            registry,
            [target],
            Path(report_spec.path),
            report_spec.title,
            Path(report_spec.png) if report_spec.png else None,
            analyze=False,
        )
    return failed


def _run_analyses(store, registry, target, entries, force: bool) -> bool:
    """Run ``entries`` (the target's, or a selection of them) over the target's runs; whether any failed."""
    from specrun.analysis.engine import run_analyses
    from specrun.console import analysis_line

    if not entries:
        return False
    log.info(f"{target.experiment}: {len(entries)} analys{'is' if len(entries) == 1 else 'es'}")

    def done(outcome) -> None:
        (log.warning if outcome.status == "failed" else log.info)(analysis_line(outcome))

    outcomes = run_analyses(
        store, registry, target.experiment, entries, force=force, on_done=done, declared=target.entries
    )
    return any(o.status == "failed" for o in outcomes)


def _check_report_path(store, out: Path) -> None:
    """A report replaces an earlier report only: never the store (its WAL), a spec or another file.
    UsageError before anything is computed or written."""
    target = out.resolve()
    held = Path(store.path).resolve()
    if target in (held, held.with_name(held.name + ".wal")):
        raise UsageError(f"the report path {out} is the store itself: give the report an .html path (-o report.html)")
    if target.is_file():
        with target.open("rb") as file:
            head = file.read(512).lstrip().lower()
        if head and not head.startswith((b"<!doctype html", b"<html")):
            raise UsageError(
                f"the report path {out} is a file that is not an HTML report: give another path "
                "(a report replaces only an earlier report)"
            )


def _write_report(store, registry, targets, out: Path, title, png: Path | None, analyze: bool) -> None:
    from specrun.analysis.targets import resolve
    from specrun.console import err
    from specrun.report.build import build_report

    _check_report_path(store, out)
    named = {t.experiment for t in targets}
    compared = dict.fromkeys(name for t in targets if t.report for name in t.report.compare if name not in named)
    targets = list(targets) + [resolve(name, store, registry) for name in compared]
    if analyze:
        for target in targets:
            _run_analyses(store, registry, target, target.entries, force=False)
    summary = build_report(store, registry, targets, out, title, png)
    for problem in summary.problems:
        log.warning(f"report: {problem}")
    err.print(
        f"report: {out} ({summary.charts} charts, {summary.tables} tables"
        + (f"; {len(summary.images)} images in {png}" if png else "")
        + ")",
        markup=False,
        highlight=False,
    )
