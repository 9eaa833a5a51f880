"""Applying planned runs: the driver's walk over the dependency graph.

For each run, once the runs it needs are done: claim it in the store (skip it if completed; wait for it
when another live process — a second, overlapping apply — is running it, then take it as that process left
it: completed, or to train again), build its task, hand the task to the executor, and when its record comes back
write everything in one transaction. A run that fails is recorded as failed and the others go on (its
dependants are skipped, with the reason); Ctrl-C or SIGTERM records the runs in flight as interrupted,
and their checkpoints (``train.checkpoint_every``) stay for the next apply to resume from.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from specrun.core.task import RunRecord, RunTask
from specrun.driver import tasks
from specrun.errors import SpecrunError
from specrun.executors import Executor
from specrun.interrupts import sigterm_as_interrupt, stop_if_terminated
from specrun.logs import quiet_libraries
from specrun.plugins.lifecycle import notify
from specrun.plugins.registry import Registry
from specrun.runner.plan import PlannedRun
from specrun.store import runs as store_runs
from specrun.store import search as store_search
from specrun.store.db import Store, artifacts_root
from specrun.tracking import Trackers

log = logging.getLogger("specrun.driver")

#: How often a run another process holds is looked at again (seconds).
BUSY_POLL_S = 1.0


#: The live report events (``runner.train``) and the hooks that hear them.
LIVE_HOOKS = {"window": "on_train_window", "evaluation": "on_evaluation"}


@dataclass
class Outcome:
    run: PlannedRun
    status: str  # completed | cached | evaluated (cached, evaluated on new eval sets) | failed | skipped (a required run failed) | busy | interrupted | pruned
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def summary_metrics(record: RunRecord, eval_set: str) -> dict[str, float]:
    final = record.final()
    keys = [(eval_set, "accuracy"), (eval_set, "f1"), ("cost", "train_seconds"), ("cost", "samples_per_second")]
    return {name: final[(split, name)] for split, name in keys if (split, name) in final}


@dataclass
class _Node:
    run: PlannedRun
    #: A run another run needs first (a transfer source, a teacher) and not itself planned by the spec.
    required: bool
    task: RunTask | None = None


def dependency_order(planned: list[PlannedRun]) -> list[_Node]:
    """Every run of ``planned`` and the runs they need, each once, each after what it needs (depth
    first, in the spec's order)."""
    top = {p.run_id for p in planned}
    seen: dict[str, _Node] = {}

    def visit(run: PlannedRun) -> None:
        if run.run_id in seen:
            return
        for dep in run.dependencies:
            visit(dep)
        seen[run.run_id] = _Node(run, required=run.run_id not in top)

    for run in planned:
        visit(run)
    return list(seen.values())


class Driver:
    """Applies planned runs through ``executor``, recording everything in ``store``."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        spec_path: str,
        executor: Executor,
        progress=None,
        fail_fast: bool = False,
        force: bool = False,
        threads: int | None = None,
        trackers: Trackers | None = None,
        track_every: int = 10,
    ):
        self.store = store
        self.registry = registry
        self.spec_path = spec_path
        self.spec_dir = str(Path(spec_path).resolve().parent)
        self.executor = executor
        self.progress = progress
        self.fail_fast = fail_fast
        self.force = force
        self.threads = threads
        self.artifacts_dir = artifacts_root(store.path)
        if progress is not None and executor.name != "local":
            progress.concurrent = True
        self.done: dict[str, Outcome] = {}
        self.running: dict[str, _Node] = {}
        #: Runs another live process holds (an overlapping apply): waited for once nothing else can run.
        self.busy: list[_Node] = []
        #: Live tracking: the built-in trackers named, and whether any plugin implements the live hooks.
        self.trackers = trackers or Trackers([])
        pm = registry.manager
        hears = pm is not None and any(getattr(pm.hook, h).get_hookimpls() for h in LIVE_HOOKS.values())
        self.track_every = track_every if (hears or self.trackers) else 0
        executor.on_event = self._live
        #: A search's: keep its pruned runs (not rerun them), and watch its runs' live reports (may raise StopRun).
        self.keep_pruned = False
        self.watch = None
        #: Runs ``watch`` may stop after an evaluation: on an executor that runs them in other processes
        #: they wait for its decision (``RunTask.awaits_decision``).
        self.watched: set[str] = set()

    # --- the walk ----------------------------------------------------------------------------------

    def run_all(self, planned: list[PlannedRun]) -> list[Outcome]:
        quiet_libraries()
        store_runs.reap_interrupted(self.store)
        pending = dependency_order(planned)
        self.stopping = False
        with sigterm_as_interrupt():
            try:
                while True:
                    if not self.stopping:
                        pending = self._start_ready(pending)
                    if not self.running and self.busy and not self.stopping:
                        pending = self._wait_for_busy() + pending
                        continue
                    if not self.running:
                        if pending and not self.stopping:  # cannot happen with an acyclic plan
                            raise RuntimeError(
                                f"runs wait on dependencies that never ran: {[n.run.run_id for n in pending]}"
                            )
                        break
                    self._show_pool(pending)
                    self._finish(self.executor.next_finished())
                stop_if_terminated()  # a Ctrl-C lost in a finalizer while the last run finished: not exit code 0
            except KeyboardInterrupt:
                self._interrupted()
                raise
        return [self.done[p.run_id] for p in planned if p.run_id in self.done]

    def _start_ready(self, pending: list[_Node]) -> list[_Node]:
        """Start every pending run whose dependencies are done, while the executor has room; returns
        the runs still pending."""
        left = []
        for node in pending:
            if (
                self.stopping
                or any(d.run_id not in self.done for d in node.run.dependencies)
                or self.executor.free_slots() <= 0
            ):
                left.append(node)
                continue
            self._start(node)
        return left

    def _wait_for_busy(self) -> list[_Node]:
        """Wait until another process releases at least one of the runs it holds (finished, failed or
        gone); those runs go back to be claimed again: a completed one is then cached, any other trains here."""
        while True:
            held = store_runs.held_elsewhere(self.store, [n.run.run_id for n in self.busy])
            free = [n for n in self.busy if n.run.run_id not in held]
            if free:
                self.busy = [n for n in self.busy if n.run.run_id in held]
                return free
            time.sleep(BUSY_POLL_S)

    def _show_pool(self, pending: list[_Node]) -> None:
        if self.progress is not None and self.executor.name != "local":
            self.progress.pool(queued=len(pending), running=len(self.running), done=len(self.done))

    def _start(self, node: _Node) -> None:
        run = node.run
        for dep in run.dependencies:
            status = self.done[dep.run_id].status
            if status not in ("completed", "cached", "evaluated"):
                error = f"required run {dep.run_id} ({dep.experiment}) is {status}: {self.done[dep.run_id].error or 'not available'}"
                if store_runs.claim(self.store, run, run.spec_path or self.spec_path, {}, self.force) == "claimed":
                    store_runs.fail(self.store, run.run_id, error, status="skipped")
                self._outcome(node, Outcome(run, "skipped", error))
                return
        claim = store_runs.claim(
            self.store, run, run.spec_path or self.spec_path, self._environment(run), self.force, self.keep_pruned
        )
        spec_dir = run.spec_dir or self.spec_dir
        if claim == "cached":
            self._start_evaluation(node, spec_dir)
            return
        if claim == "busy":
            holder = store_runs.held_elsewhere(self.store, [run.run_id]).get(run.run_id, "another process")
            log.warning(
                f"run {run.run_id} ({run.label()}) is being trained by another apply ({holder}) on {self.store.path}: "
                "waiting for it to finish (Ctrl-C stops waiting; the other apply goes on)"
            )
            self.busy.append(node)
            return
        if claim != "claimed":
            self._outcome(node, Outcome(run, claim))
            return
        try:
            task = tasks.train_task(run, self.store, spec_dir, self.artifacts_dir, resume=not self.force)
        except SpecrunError as exc:  # a source or teacher missing from the store
            store_runs.fail(self.store, run.run_id, f"{type(exc).__name__}: {exc}")
            self._outcome(node, Outcome(run, "failed", str(exc)))
            return
        self._submit(node, task, action="training")

    def _start_evaluation(self, node: _Node, spec_dir: str) -> None:
        """A completed run: evaluate its stored weights on the spec's named evaluation sets it lacks."""
        run = node.run
        missing, changed = run.eval_sets_to_add(store_runs.evaluations(self.store, [run.run_id]).get(run.run_id, {}))
        if changed:
            self._outcome(
                node, Outcome(run, "failed", f"run {run.run_id} was {store_runs.different_definition(changed)}")
            )
            return
        if not missing:
            self._outcome(node, Outcome(run, "cached"))
            return
        try:
            task = tasks.evaluate_task(run, self.store, spec_dir, self.artifacts_dir, missing)
        except SpecrunError as exc:
            self._outcome(node, Outcome(run, "failed", f"evaluating on {', '.join(missing)}: {exc}"))
            return
        self._submit(node, task, action=f"evaluating on {', '.join(missing)} (no training)")

    def _submit(self, node: _Node, task: RunTask, action: str) -> None:
        task.threads = self.threads
        if not self.executor.shares_artifacts:  # the worker writes on its own disk and sends the files back
            task.return_artifacts = True
            task.artifacts_dir = str(Path(tempfile.gettempdir()) / "specrun-worker-artifacts")
        node.task = task
        self.running[task.run_id] = node
        if self.progress:
            self.progress.run_started(node.run, required=node.required, action=action)
        task.track_every = self.track_every if task.kind == "train" else 0
        task.awaits_decision = task.kind == "train" and task.run_id in self.watched and bool(task.track_every)
        notify(self.registry, "on_run_start", task=task)
        self.trackers.call("run_start", task)
        self.executor.submit(task)

    def _live(self, run_id: str, event: str, step: int, metrics: list) -> None:
        """A run in flight reported its training (``runner.train``): the live hooks and trackers hear it."""
        node = self.running.get(run_id)
        if node is None or node.task is None:
            return
        notify(self.registry, LIVE_HOOKS[event], task=node.task, step=step, metrics=metrics)
        self.trackers.call(event, node.task, step, metrics)
        if self.watch is not None:
            self.watch(node.run, event, step, metrics)

    def _environment(self, run: PlannedRun) -> dict:
        """What the driver knows of where a run executes; the worker adds its own (device, threads, host)."""
        import torch

        from specrun.runner.execute import environment_info
        from specrun.runner.modeling import pick_device

        try:
            device = pick_device(run.settings.train.device)
        except SpecrunError:
            device = torch.device("cpu")
        info = environment_info(device, self.spec_dir, run.config, self.registry)
        info["executor"] = self.executor.name
        return info

    # --- records -----------------------------------------------------------------------------------

    def _finish(self, record: RunRecord) -> None:
        node = self.running[record.run_id]  # still running (recorded as interrupted on Ctrl-C) until recorded
        run, task = node.run, node.task
        stop_if_terminated()  # a Ctrl-C that landed after training (evaluating, saving) and was lost there
        if task.kind == "evaluate":
            outcome = self._finish_evaluation(node, record)
        elif record.status == "completed":
            if self.progress:
                self.progress.phase("recording results")
            self._receive_files(record)
            store_runs.complete(self.store, run.run_id, record)
            outcome = Outcome(run, "completed", metrics=summary_metrics(record, run.eval_set))
        elif record.status == "pruned":
            store_search.prune(self.store, run.run_id, record)
            outcome = Outcome(run, "pruned", record.message)
        elif record.status == "interrupted":
            store_runs.fail(
                self.store,
                run.run_id,
                record.error or "interrupted",
                status="interrupted",
                scores=record.teacher_scores,
            )
            outcome = Outcome(run, "interrupted", record.message or record.error)
        else:
            store_runs.fail(self.store, run.run_id, record.error or "failed", scores=record.teacher_scores)
            outcome = Outcome(run, "failed", record.message or record.error)
        self.running.pop(record.run_id, None)
        notify(self.registry, "on_run_end", task=task, record=record)
        self.trackers.call("run_end", task, record)
        self._outcome(node, outcome)

    def _finish_evaluation(self, node: _Node, record: RunRecord) -> Outcome:
        run, names = node.run, node.task.evaluate_sets
        store_runs.save_scores(self.store, record.teacher_scores)
        if record.status != "evaluated":  # the run itself stays completed
            return Outcome(run, "failed", f"evaluating on {', '.join(names)}: {record.message or record.error}")
        try:
            store_runs.add_evaluations(self.store, run.run_id, record)
        except SpecrunError as exc:
            return Outcome(run, "failed", f"evaluating on {', '.join(names)}: {exc}")
        final = record.final()
        metrics = {
            f"{name}.{key}": final[(name, key)] for name in names for key in ("accuracy", "f1") if (name, key) in final
        }
        return Outcome(run, "evaluated", metrics=metrics)

    def _receive_files(self, record: RunRecord) -> None:
        """Files a worker sent back in the record: written into this store's artifact folder, and the
        record's artifact paths pointed at them."""
        if not record.files:
            return
        folder = self.artifacts_dir / record.run_id
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in record.files.items():
            tmp = folder / f".{name}.partial"
            tmp.write_bytes(data)
            tmp.replace(folder / name)
        for artifact in record.artifacts:
            artifact.path = str(folder / Path(artifact.path).name)
        record.files = {}

    def _outcome(self, node: _Node, outcome: Outcome) -> None:
        self.done[node.run.run_id] = outcome
        if outcome.status == "failed" and self.fail_fast and not node.required:
            self.stopping = True
        if self.progress:
            (self.progress.dependency_done if node.required else self.progress.run_done)(outcome)

    def _interrupted(self) -> None:
        """Ctrl-C or SIGTERM: the runs in flight are recorded as interrupted (their checkpoints stay)."""
        try:
            self.executor.cancel()
        finally:
            error = "interrupted by the user (Ctrl-C or SIGTERM)"
            for run_id, node in list(self.running.items()):
                if node.task is not None and node.task.kind == "train":
                    store_runs.fail(self.store, run_id, error, status="interrupted")
                if node.task is not None:
                    record = RunRecord(run_id, status="interrupted", error=error, message=error)
                    notify(self.registry, "on_run_end", task=node.task, record=record)
                    self.trackers.call("run_end", node.task, record)
            self.running.clear()
