"""Adaptive search (``[search]``): Optuna asks for a configuration, the driver runs it as runs (one per
seed, identified, cached and stored like any run), and Optuna is told the objective: the mean over the
seeds of ``search.metric`` on the selection (primary evaluation) set.

The objective and the pruner read ``search.metric`` on the trial's *selection set* (split 'selection': a
set carved from the training split, or ``train.select_on``), never on the split whose numbers the runs
report, unless the spec says ``train.allow_selection_on_reported`` (then the primary evaluation set, and
the report marks those numbers selected-on). A trial's runs carry ``train.evaluate_selection``.

Trials run ``search.parallel`` at a time (a wave): asked together, trained together (side by side on
``--executor ray``, one after the other on the local executor), told in trial order once the whole wave
has finished. So the suggestions depend on ``parallel`` and the sampler's seed, never on the executor or
on which trial finished first. A pruner watches the first seed's run of each trial: after each
evaluation it is told the metric, and may stop the run there (``StopRun``; on Ray the worker waits for
the driver's decision after each evaluation): the run is stored 'pruned', with the step it stopped at and
its curve so far, and the trial's other seeds do not run. Whether a trial is pruned may depend on what
the other trials of its wave had reported by then; it is recorded, and a replay takes it from the store.

Nothing of a search lives outside the store. Each apply (and each ``plan``) makes the study afresh and
replays it: it asks for trial 0, finds its runs in the store and tells Optuna what they gave (their
evaluations reported to the pruner, in order), then trial 1, and so on; a trial whose runs the store
does not hold finished is trained. Asked and told the same things in the same order, a seeded sampler
suggests the same configurations: a finished search trains nothing, and an interrupted one goes on with
the trials it would have run had it not stopped.
"""

from __future__ import annotations

import copy
import logging
import statistics
import warnings
from dataclasses import dataclass, field

from specrun.core.task import StopRun
from specrun.driver.apply import Driver, Outcome
from specrun.errors import SpecError, UsageError
from specrun.plugins.registry import Registry
from specrun.runner.plan import PlannedRun, plan_one
from specrun.spec.load import LoadedSpec, dotted, expand
from specrun.spec.schema import SearchSpec, selection_split
from specrun.store import search as store_search
from specrun.store.db import Store

log = logging.getLogger("specrun.search")

#: A trial's runs are all finished when each is one of these (others train at the next apply).
FINISHED = ("completed", "pruned")
#: A trial's runs that join its apply (``current_runs``): those it trained, whatever they gave.
RAN = ("completed", "pruned", "failed")


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise UsageError("[search] needs Optuna: pip install 'specrun[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def distributions(search: SearchSpec, optuna) -> dict:
    """Optuna's distribution for each key of the space."""
    d = optuna.distributions
    out = {}
    for key, p in search.space.items():
        if p.type == "categorical":
            out[key] = d.CategoricalDistribution(p.choices)
        elif p.type == "int":
            out[key] = d.IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        else:
            out[key] = d.FloatDistribution(p.low, p.high, log=p.log, step=p.step)
    return out


def make_sampler(search: SearchSpec, optuna):
    s = optuna.samplers
    if search.sampler == "random":
        return s.RandomSampler(seed=search.seed)
    if search.sampler == "qmc":
        return s.QMCSampler(seed=search.seed, scramble=True, warn_independent_sampling=False)
    if search.sampler == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise UsageError(
                "search.sampler \"cmaes\" needs the cmaes package: pip install 'specrun[search]'"
            ) from None
        return s.CmaEsSampler(seed=search.seed, warn_independent_sampling=False)
    # TPE: random for the first few trials (a third of them, at most 10), then modelled on the results
    return s.TPESampler(seed=search.seed, n_startup_trials=min(10, max(1, search.n_trials // 3)))


def make_pruner(search: SearchSpec, optuna):
    p = optuna.pruners
    return {
        "none": p.NopPruner,
        "median": lambda: p.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        "successive_halving": p.SuccessiveHalvingPruner,
        "hyperband": p.HyperbandPruner,
    }[search.pruner]()


def describe_params(params: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


@dataclass
class Trial:
    number: int
    params: dict
    runs: list[PlannedRun] = field(default_factory=list)
    #: complete | pruned | failed | left (its runs are not all finished: the next apply trains them)
    state: str = "left"
    value: float | None = None
    #: the step its pruned run stopped at
    pruned_step: int | None = None


class Search:
    """The study of one spec's ``[search]``, replayed from ``store``; ``driver`` trains what is missing."""

    def __init__(
        self,
        loaded: LoadedSpec,
        registry: Registry,
        store: Store,
        driver: Driver | None = None,
        apply_id: str | None = None,
    ):
        self.loaded, self.registry, self.store, self.driver, self.apply_id = loaded, registry, store, driver, apply_id
        self.search: SearchSpec = loaded.spec.search
        self.optuna = import_optuna()
        self.distributions = distributions(self.search, self.optuna)
        self.study = self.optuna.create_study(
            study_name=loaded.experiment,
            direction=self.search.direction,
            sampler=make_sampler(self.search, self.optuna),
            pruner=make_pruner(self.search, self.optuna),
        )
        self.trials: list[Trial] = []
        self.outcomes: dict[str, object] = {}
        #: {trial number: steps already reported to Optuna while its first run trained}
        self._reported: dict[int, set[int]] = {}

    def trial_runs(self, params: dict) -> list[PlannedRun]:
        """A configuration's runs, one per seed: the spec with each searched key set, planned like a sweep
        point. ``[search]`` stays in the tree: a trial's run evaluates a selection set (``train.evaluate_selection``)."""
        tree = copy.deepcopy(self.loaded.raw)
        tree["sweep"] = {key: [value] for key, value in params.items()}
        runs, problems = expand(tree, self.registry, lambda loc, msg: self.loaded.locate(dotted(loc), msg))
        if problems:
            raise SpecError(str(self.loaded.path), problems)
        return [plan_one(run, self.loaded, self.registry) for run in runs]

    def run(self, train: bool) -> list[Trial]:
        """Every trial in order, ``search.parallel`` at a time (a wave): asked together, replayed from the
        store, trained (``train``) where they are not finished, then told in trial order. Without ``train``
        (``plan``) the replay stops at the first wave with an unfinished trial: the rest are 'left'."""
        optuna = self.optuna
        n_trials, parallel = self.search.n_trials, self.search.parallel
        number = 0
        while number < n_trials:
            wave = []
            for _ in range(min(parallel, n_trials - number)):
                ot = self.study.ask(self.distributions)
                trial = Trial(number, dict(ot.params))
                number += 1
                self.trials.append(trial)
                try:
                    trial.runs = self.trial_runs(trial.params)
                except SpecError as exc:  # a value inside the range the spec refuses (checked only at the ends)
                    log.warning("search trial %d %s: %s", trial.number, trial.params, exc)
                    trial.state = "failed"
                    self.study.tell(ot, state=optuna.trial.TrialState.FAIL)
                    continue
                wave.append((trial, ot))
            results = {t.number: self._results(t) for t, _ in wave}
            unfinished = [(t, ot) for t, ot in wave if not self._finished(t, results[t.number])]
            if unfinished:
                if not train:
                    left = {t.number for t, _ in unfinished}
                    for t, _ in wave:  # shown with what the store holds; the replay ends with this wave
                        if t.number not in left:
                            self._state(t, results[t.number])
                    self.trials += [Trial(n, {}) for n in range(number, n_trials)]
                    break
                self._train(unfinished)
                results.update({t.number: self._results(t) for t, _ in unfinished})
            for trial, ot in wave:
                self._tell(trial, ot, results[trial.number])
                if train:
                    self._record(trial, results[trial.number])
        if train:
            store_search.forget_trials_from(self.store, self.loaded.experiment, n_trials)
        return self.trials

    def _record(self, trial: Trial, results: dict) -> None:
        log.info(
            f"[trial {trial.number}] {trial.state}"
            + (f" {self.search.metric}={trial.value:.4g}" if trial.value is not None else "")
            + f" {describe_params(trial.params)}"
        )
        store_search.record_trial(
            self.store,
            self.loaded.experiment,
            trial.number,
            [(r.run_id, r.seed, trial.params, trial.state, trial.value) for r in trial.runs],
        )
        # every run the trial trained joins the apply: completed, pruned or failed (a pruned trial's other seeds never ran)
        if self.apply_id:
            store_search.add_apply_runs(
                self.store, self.apply_id, [r.run_id for r in trial.runs if results[r.run_id]["status"] in RAN]
            )

    @staticmethod
    def objective_split(run: PlannedRun) -> str:
        """The split the objective and the pruner read: 'selection' (carved from the training split, or
        ``train.select_on``), the primary evaluation set only with ``train.allow_selection_on_reported``."""
        return selection_split(run.config["train"], run.eval_set)

    def _results(self, trial: Trial) -> dict:
        if not self.store.path.exists():  # plan before the first apply: nothing is finished
            return {r.run_id: {"status": None, "final": None, "curve": []} for r in trial.runs}
        split = self.objective_split(trial.runs[0])
        return store_search.run_results(self.store, [r.run_id for r in trial.runs], split, self.search.metric)

    def _finished(self, trial: Trial, results: dict) -> bool:
        first = results[trial.runs[0].run_id]
        if first["status"] == "pruned":
            return True
        return all(results[r.run_id]["status"] in FINISHED for r in trial.runs)

    def _train(self, wave: list) -> None:
        """Train a wave's trials: their first seeds' runs together, each under the pruner's watch; then the
        other seeds of those not pruned, together."""
        metric, pruner = self.search.metric, self.search.pruner
        watched = {t.runs[0].run_id: (t, ot) for t, ot in wave}

        def watch(run: PlannedRun, event: str, step: int, metrics: list) -> None:
            if pruner == "none" or event != "evaluation" or run.run_id not in watched:
                return
            trial, ot = watched[run.run_id]
            split = self.objective_split(run)
            value = next((m.value for m in metrics if m.split == split and m.name == metric), None)
            reported = self._reported.setdefault(trial.number, set())
            if value is None or step in reported:
                return
            ot.report(value, step)
            reported.add(step)
            if ot.should_prune():
                raise StopRun(f"pruned by the {pruner} pruner at step {step} ({split} {metric} {value:.4g})")

        self.driver.watch = watch
        self.driver.watched = set(watched) if pruner != "none" else set()
        try:
            for outcome in self.driver.run_all([t.runs[0] for t, _ in wave]):
                self.outcomes[outcome.run.run_id] = outcome
            rest = [r for t, _ in wave if self.outcomes[t.runs[0].run_id].status != "pruned" for r in t.runs[1:]]
            if rest:
                for outcome in self.driver.run_all(rest):
                    self.outcomes[outcome.run.run_id] = outcome
        finally:
            self.driver.watch, self.driver.watched = None, set()

    def _state(self, trial: Trial, results: dict) -> bool:
        """The trial's state and objective from its runs' results; whether it was pruned."""
        first = results[trial.runs[0].run_id]
        if first["status"] == "pruned":
            trial.state = "pruned"
            trial.pruned_step = first["curve"][-1][0] if first["curve"] else None
            return True
        finals = [results[r.run_id]["final"] for r in trial.runs]
        if all(results[r.run_id]["status"] == "completed" for r in trial.runs) and None not in finals:
            trial.state, trial.value = "complete", statistics.fmean(finals)
        else:
            trial.state = "failed"
        return False

    def _tell(self, trial: Trial, ot, results: dict) -> None:
        """Tell Optuna what the trial's runs gave, as the store holds it (fresh or replayed alike): the
        first run's evaluations as intermediate values, then the objective, or that it was pruned or failed."""
        TrialState = self.optuna.trial.TrialState
        first = results[trial.runs[0].run_id]
        done = self._reported.pop(trial.number, set())
        if self.search.pruner != "none":
            for step, value in first["curve"]:
                if step not in done:
                    ot.report(value, step)
        for run in trial.runs:
            if run.run_id not in self.outcomes:
                status = results[run.run_id]["status"]
                self.outcomes[run.run_id] = Outcome(run, "cached" if status == "completed" else status or "left")
        self._state(trial, results)
        if trial.state == "pruned":
            self.study.tell(ot, state=TrialState.PRUNED)
        elif trial.state == "complete":
            self.study.tell(ot, trial.value)
        else:
            self.study.tell(ot, state=TrialState.FAIL)
