"""The Ray executor: each run a Ray task, on a local Ray instance (the default) or an existing cluster
(``--ray-address`` / ``RAY_ADDRESS``). ``pip install 'specrun[ray]'``.

Each task asks Ray for ``cpus_per_run`` CPUs (and ``gpus_per_run`` GPUs) and sets torch to that many
threads. The driver submits only what fits the cluster at once, so a run is claimed in the store when it
starts, not while it queues. Workers on this machine (a local instance) write artifacts where the driver
reads them; on a cluster they send them back in the record unless ``SPECRUN_ARTIFACTS`` names a folder
every worker sees. A worker that dies mid-run (killed, out of memory, a lost node) returns its run as
'interrupted'; the others go on.

Live reports (the ``on_train_window`` / ``on_evaluation`` hooks, the trackers) travel from the workers to
the driver through one Ray queue. A run a search's pruner watches (``RunTask.awaits_decision``) waits
after each evaluation for the driver's answer (a small ``Decisions`` actor): the pruner runs in the
driver on the forwarded evaluation and the worker stops there ('pruned') or trains on.
"""

from __future__ import annotations

import logging
import os
import time

from specrun.core.task import RunRecord, RunTask, StopRun
from specrun.errors import UsageError
from specrun.logs import is_verbose, level

log = logging.getLogger("specrun.executors.ray")

#: Environment a worker needs to find data and stay offline like the driver.
FORWARDED_ENV = ("SPECRUN_DATA_DIR", "HF_HUB_OFFLINE", "HF_HOME", "SPECRUN_ARTIFACTS")


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'specrun[ray]'") from None
    return ray


#: How often a worker that waits for the driver's decision after an evaluation asks again (seconds).
DECISION_POLL_S = 0.05


class Decisions:
    """A Ray actor: the driver's answer, after each evaluation of a run that waits for one
    (``RunTask.awaits_decision``): '' to go on, or the reason to stop it there (a search's pruner)."""

    def __init__(self):
        self.answers: dict[tuple[str, int], str] = {}

    def put(self, run_id: str, step: int, reason: str) -> None:
        self.answers[(run_id, step)] = reason

    def take(self, run_id: str, step: int) -> str | None:
        return self.answers.pop((run_id, step), None)


def _run_task(task: RunTask, events=None, decisions=None, log_level: str = "info") -> RunRecord:
    """What a Ray worker executes: the run, with the plugins installed in the worker's environment and the
    driver's log level (``log_level``: ``-v`` gives the worker's debug notes too). Its live reports go into ``events`` (a Ray queue the driver drains), in order, before the record returns.
    A run that ``awaits_decision`` waits after each evaluation for the driver's answer in ``decisions``
    and stops there (``StopRun``: recorded 'pruned') when the answer is a reason."""
    from specrun.logs import configure_level
    from specrun.runner.execute import execute

    configure_level(log_level)
    on_metrics = None
    if events is not None and task.track_every:

        def on_metrics(event, step, rows):
            events.put((task.run_id, event, step, rows))
            if event == "evaluation" and decisions is not None:
                import ray

                while (reason := ray.get(decisions.take.remote(task.run_id, step))) is None:
                    time.sleep(DECISION_POLL_S)
                if reason:
                    raise StopRun(reason)

    return execute(task, on_metrics=on_metrics)


class RayExecutor:
    name = "ray"
    progress = None  # set by the driver; workers report no steps, the driver shows the pool
    on_event = None  # set by the driver: live reports, forwarded from the workers through a Ray queue

    def __init__(
        self, address: str | None = None, cpus_per_run: float = 1, gpus_per_run: float = 0, num_cpus: int | None = None
    ):
        if cpus_per_run <= 0 or gpus_per_run < 0:
            raise UsageError("--cpus-per-run must be above 0 and --gpus-per-run 0 or more")
        self.ray = _import_ray()
        address = address or os.environ.get("RAY_ADDRESS") or None
        self.cpus_per_run, self.gpus_per_run = cpus_per_run, gpus_per_run
        env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
        self.log_level = level()  # the driver's -v / -q, for the workers (passed with each task)
        self.started_here = False
        if not self.ray.is_initialized():
            # a worker's own output reaches the driver's console with -v only (its debug notes, library warnings)
            kwargs = {"runtime_env": {"env_vars": env}, "logging_level": logging.ERROR, "log_to_driver": is_verbose()}
            if address:
                kwargs["address"] = address
            else:
                kwargs.update(
                    num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, object_store_memory=512 * 2**20
                )
                self.started_here = True
            try:
                self.ray.init(**kwargs)
            except ConnectionError as exc:
                raise UsageError(f"cannot join the Ray cluster at {address}: {exc}") from None
        #: A local instance shares this machine's disk; a cluster shares it only through SPECRUN_ARTIFACTS.
        self.shares_artifacts = address is None or bool(os.environ.get("SPECRUN_ARTIFACTS"))
        self.remote = self.ray.remote(max_retries=0)(_run_task)
        self.refs: dict[object, str] = {}
        self.events = None  # the queue of live reports, made when a task first asks for them
        self.decisions = None  # the driver's answers to runs that wait for one after each evaluation
        self.awaiting: set[str] = set()
        self._capacity, self._capacity_at = 1, float("-inf")
        self._check_fits()

    def _check_fits(self) -> None:
        """A run asking for more than the whole cluster has would wait forever: refuse it up front."""
        resources = self.ray.cluster_resources()
        for flag, wanted, kind in (
            ("--cpus-per-run", self.cpus_per_run, "CPU"),
            ("--gpus-per-run", self.gpus_per_run, "GPU"),
        ):
            have = resources.get(kind, 0)
            if wanted > have:
                self.close()
                raise UsageError(
                    f"{flag} {wanted:g}: the Ray cluster has {have:g} {kind}s in all, so no run could ever start"
                )

    def capacity(self) -> int:
        """How many runs fit the cluster at once; asked of Ray at most every 10 s (a cluster may grow)."""
        now = time.monotonic()
        if now - self._capacity_at >= 10:
            resources = self.ray.cluster_resources()
            fits = int(resources.get("CPU", 1) // self.cpus_per_run)
            if self.gpus_per_run:
                fits = min(fits, int(resources.get("GPU", 0) // self.gpus_per_run))
            self._capacity, self._capacity_at = max(fits, 1), now
        return self._capacity

    def free_slots(self) -> int:
        return self.capacity() - len(self.refs)

    def submit(self, task: RunTask) -> None:
        task.threads = task.threads or max(1, int(self.cpus_per_run))
        events = None
        if task.track_every and self.on_event is not None:
            if self.events is None:
                from ray.util.queue import Queue

                self.events = Queue(actor_options={"num_cpus": 0})
            events = self.events
        decisions = None
        if events is not None and task.awaits_decision:
            if self.decisions is None:
                self.decisions = self.ray.remote(num_cpus=0)(Decisions).remote()
            decisions = self.decisions
            self.awaiting.add(task.run_id)
        ref = self.remote.options(
            num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, name=f"specrun:{task.run_id}"
        ).remote(task, events, decisions, self.log_level)
        self.refs[ref] = task.run_id

    def next_finished(self) -> RunRecord:
        ray = self.ray
        ready: list = []
        while not ready:  # a short timeout, so that Ctrl-C and SIGTERM reach the driver at once
            ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=1.0)
            self._forward_events()
        ref = ready[0]
        run_id = self.refs.pop(ref)
        self.awaiting.discard(run_id)
        try:
            return ray.get(ref)
        except (
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.NodeDiedError,
            ray.exceptions.TaskCancelledError,
            ray.exceptions.OutOfMemoryError,
            ray.exceptions.LocalRayletDiedError,
        ) as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return RunRecord(
                run_id,
                status="interrupted",
                error=f"the Ray worker running it stopped: {why}",
                message=f"interrupted: the Ray worker running it stopped ({type(exc).__name__})",
            )
        except (
            ray.exceptions.RayError
        ) as exc:  # the task raised past execute (a KeyboardInterrupt in the worker, a pickling error)
            cause = getattr(exc, "cause", None) or exc
            if isinstance(cause, KeyboardInterrupt):
                return RunRecord(
                    run_id,
                    status="interrupted",
                    error="interrupted in its Ray worker",
                    message="interrupted in its Ray worker",
                )
            text = str(cause).strip().splitlines()
            return RunRecord(
                run_id, status="failed", error=str(exc), message=f"{type(cause).__name__}: {text[0] if text else ''}"
            )

    def _forward_events(self) -> None:
        """Hand the live reports the workers queued to ``on_event``, in the driver's process (a finished
        run's reports are all queued before its record is ready: ``put`` waits for the queue)."""
        if self.events is None or self.on_event is None:
            return
        while True:
            from ray.util.queue import Empty

            try:
                batch = self.events.get_nowait_batch(self.events.qsize())
            except Empty:
                batch = []
            if not batch:
                return
            for run_id, event, step, rows in batch:
                reason = ""
                try:
                    self.on_event(run_id, event, step, rows)
                except StopRun as stop:  # the driver's watch (a search's pruner) stops the run here
                    reason = stop.reason
                finally:
                    if event == "evaluation" and run_id in self.awaiting:  # the worker waits for this answer
                        self.decisions.put.remote(run_id, step, reason)

    def cancel(self) -> None:
        for ref in list(self.refs):
            try:
                self.ray.cancel(ref, force=True)
            except Exception as exc:  # already finished or gone
                log.debug("cancel %s: %s", self.refs[ref], exc)
        self.refs.clear()
        self.awaiting.clear()

    def close(self) -> None:
        if self.events is not None:
            self.events.shutdown()
            self.events = None
        if self.decisions is not None:
            self.ray.kill(self.decisions)
            self.decisions = None
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()
