"""The local executor: runs an experiment's planned runs one after another in this process.

For each run: claim it in the store (skip if completed, or running in another live process), train and
evaluate it with the store closed, then write its results in one transaction. A run that raises is
recorded as failed and the others go on; Ctrl-C or SIGTERM records the current run as interrupted, and
its checkpoint (``train.checkpoint_every``) stays for the next apply to resume from.
"""

from __future__ import annotations

import signal
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from specrun.errors import SpecrunError, StoreError
from specrun.logs import quiet_libraries
from specrun.plugins.registry import Registry
from specrun.runner.artifacts import artifacts_root
from specrun.runner.checkpoint import remove_checkpoint
from specrun.runner.execute import environment_info, evaluate_completed, execute
from specrun.runner.modeling import pick_device
from specrun.runner.plan import PlannedRun
from specrun.runner.teacher import scorer
from specrun.runner.train import StepReport
from specrun.store import runs as store_runs
from specrun.store.db import Store


@dataclass
class Outcome:
    run: PlannedRun
    status: str  # completed | cached | evaluated (cached, evaluated on new eval sets) | failed | skipped (a required run failed) | busy | interrupted
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is. A subclass on purpose: CPython (3.11) remembers a KeyboardInterrupt
    raised while C code runs Python (``PyRun_String``) as unhandled, even once caught, and then exits by
    re-raising SIGINT instead of with the exit code specrun chose; it checks for that exact type only."""


#: Set by SIGTERM. The handler raises at once, but an exception raised inside a finalizer or a library's
#: catch-all can be swallowed; training checks this at every step, so the run stops all the same.
_terminated = threading.Event()


def stop_if_terminated() -> None:
    if _terminated.is_set():
        raise Terminated("signal 15")


def _in_finalizer(frame) -> bool:
    """Whether the signal arrived inside a ``__del__``: Python prints and drops an exception raised there,
    so the handler only sets the flag and the next training step stops the run."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


@contextmanager
def sigterm_as_interrupt():
    """Turn SIGTERM into KeyboardInterrupt so a killed apply records its run as interrupted."""
    def handler(signum, frame):
        _terminated.set()
        if not _in_finalizer(frame):
            raise Terminated(f"signal {signum}")

    _terminated.clear()
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _terminated.clear()


def run_weights(store: Store):
    """A resolver from a run id to its saved weights (for ``model.init_from``)."""
    def resolve(run_id: str) -> Path:
        with store.read() as db:
            row = db.execute(
                "SELECT a.path FROM artifacts a JOIN runs r USING (run_id) WHERE r.run_id = ? AND r.status = 'completed' AND a.kind = 'weights'",
                [run_id],
            ).fetchone()
        if row is None:
            raise StoreError(f"model.init_from: no completed run {run_id!r} with saved weights in {store.path}")
        return Path(row[0])
    return resolve


def summary_metrics(record, eval_set: str) -> dict[str, float]:
    final = {(m[2], m[3]): m[4] for m in record.metrics if m[5]}
    keys = [(eval_set, "accuracy"), (eval_set, "f1"), ("cost", "train_seconds"), ("cost", "samples_per_second")]
    return {name: final[(split, name)] for split, name in keys if (split, name) in final}


class LocalExecutor:
    """Runs planned runs sequentially in this process."""

    def __init__(self, store: Store, registry: Registry, spec_path: str, progress=None, fail_fast: bool = False, force: bool = False):
        self.store = store
        self.registry = registry
        self.spec_path = spec_path
        self.spec_dir = str(Path(spec_path).resolve().parent)
        self.progress = progress
        self.fail_fast = fail_fast
        self.force = force

    def _on_step(self, report: StepReport) -> None:
        stop_if_terminated()
        if self.progress:
            self.progress.step(report)

    def _on_phase(self, name: str) -> None:
        stop_if_terminated()
        if self.progress:
            self.progress.phase(name)

    def run_all(self, planned: list[PlannedRun]) -> list[Outcome]:
        quiet_libraries()
        store_runs.reap_interrupted(self.store)
        outcomes = []
        self._done: dict[str, Outcome] = {}
        with sigterm_as_interrupt():
            for run in planned:
                outcome = self.run_with_dependencies(run)
                outcomes.append(outcome)
                if self.progress:
                    self.progress.run_done(outcome)
                if outcome.status == "failed" and self.fail_fast:
                    break
        return outcomes

    def run_with_dependencies(self, run: PlannedRun, required: bool = False) -> Outcome:
        """Run what ``run`` needs first (transfer sources, teachers; each once per apply, completed ones
        cached), then ``run``."""
        for dep in run.dependencies:
            if dep.run_id not in self._done:
                self._done[dep.run_id] = self.run_with_dependencies(dep, required=True)
                if self.progress:
                    self.progress.dependency_done(self._done[dep.run_id])
            status = self._done[dep.run_id].status
            if status not in ("completed", "cached", "evaluated"):
                error = f"required run {dep.run_id} ({dep.experiment}) is {status}: {self._done[dep.run_id].error or 'not available'}"
                if store_runs.claim(self.store, run, run.spec_path or self.spec_path, {}, self.force) == "claimed":
                    store_runs.fail(self.store, run.run_id, error, status="skipped")
                return Outcome(run, "skipped", error)
        return self.run_one(run, required)

    def run_one(self, run: PlannedRun, required: bool = False) -> Outcome:
        try:
            device = pick_device(run.config["train"]["device"])
        except SpecrunError:
            device = torch.device("cpu")
        env = environment_info(device, self.spec_dir)
        claim = store_runs.claim(self.store, run, run.spec_path or self.spec_path, env, self.force)
        spec_dir = run.spec_dir or self.spec_dir
        if claim == "cached":
            return self.evaluate_new_sets(run, spec_dir, required)
        if claim != "claimed":
            return Outcome(run, claim)
        if self.progress:
            self.progress.run_started(run, required=required)
        artifacts_dir = artifacts_root(self.store.path)
        try:
            record = execute(
                run, self.registry, spec_dir, artifacts_dir,
                init_weights=run_weights(self.store),
                on_step=self._on_step,
                scores=scorer(self.store),
                on_phase=self._on_phase,
                resume=not self.force,
            )
        except KeyboardInterrupt:  # the checkpoint stays: the next apply resumes from it
            store_runs.fail(self.store, run.run_id, "interrupted by the user (Ctrl-C or SIGTERM)", status="interrupted")
            raise
        except SpecrunError as exc:
            remove_checkpoint(artifacts_dir, run.run_id)
            store_runs.fail(self.store, run.run_id, f"{type(exc).__name__}: {exc}")
            return Outcome(run, "failed", str(exc))
        except Exception as exc:  # a bug or a library failure: keep the traceback in the store
            remove_checkpoint(artifacts_dir, run.run_id)
            detail = "".join(traceback.format_exception(exc))
            store_runs.fail(self.store, run.run_id, f"{type(exc).__name__}: {exc}\n{detail}")
            return Outcome(run, "failed", f"{type(exc).__name__}: {exc}")
        if self.progress:
            self.progress.phase("recording results")
        store_runs.complete(self.store, run.run_id, record)
        remove_checkpoint(artifacts_dir, run.run_id)
        return Outcome(run, "completed", metrics=summary_metrics(record, run.eval_set))

    def evaluate_new_sets(self, run: PlannedRun, spec_dir: str, required: bool) -> Outcome:
        """A completed run: evaluate its stored weights on the spec's named evaluation sets it lacks."""
        missing, changed = run.eval_sets_to_add(store_runs.evaluations(self.store, [run.run_id]).get(run.run_id, {}))
        if changed:
            return Outcome(run, "failed", f"run {run.run_id} was {store_runs.different_definition(changed)}")
        if not missing:
            return Outcome(run, "cached")
        if self.progress:
            self.progress.run_started(run, required=required, action=f"evaluating on {', '.join(missing)} (no training)")
        try:
            from specrun.runner.predict import Predictor

            predictor = Predictor.load(self.store, run.run_id)
            with self.store.read() as db:
                step = db.execute("SELECT coalesce(max(step), 0) FROM metrics WHERE run_id = ? AND final", [run.run_id]).fetchone()[0]
            record = evaluate_completed(
                run, missing, predictor.model, predictor.cache, predictor.device, step, self.registry, spec_dir,
                scores=scorer(self.store), on_phase=self._on_phase,
            )
            store_runs.add_evaluations(self.store, run.run_id, record)
        except SpecrunError as exc:
            return Outcome(run, "failed", f"evaluating on {', '.join(missing)}: {exc}")
        except Exception as exc:  # a bug or a library failure; the run itself stays completed
            return Outcome(run, "failed", f"evaluating on {', '.join(missing)}: {type(exc).__name__}: {exc}")
        final = {(m[2], m[3]): m[4] for m in record.metrics}
        metrics = {f"{name}.{key}": final[(name, key)] for name in missing for key in ("accuracy", "f1") if (name, key) in final}
        return Outcome(run, "evaluated", metrics=metrics)

