"""What the app does, without its page: list the store's models, classify a text with one or several of
them, classify an uploaded file, answer a question from a context with an extractive-QA run (or a file of
questions, scored with EM and F1), and put an experiment's runs on a metric (their task's headline, or
another they recorded) against a cost.

Everything here is plain Python (the page in ``ui.py`` only lays it out), so tests call it directly. A
user's mistake is a ``SpecrunError`` with a message for the page; the store is only read, unless the
app was started with ``--record``.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specrun.app.batch import BatchResult, classify_upload, expect_labels, read_upload
from specrun.app.models import CACHE_SIZE, PredictorCache, takes_pairs, trim
from specrun.app.qa import QABatchResult, answer_upload, check_question, highlighted, read_qa_upload
from specrun.core.tasks import DEFAULT_TASK, task_name
from specrun.errors import StoreError, UsageError
from specrun.metrics import EVAL_METRICS
from specrun.store.catalog import RecordedPrediction, StoredModel, model_experiments, record_predictions, stored_models
from specrun.store.db import Store

log = logging.getLogger("specrun.app")

#: The longest text the app classifies (the model sees its first ``model.max_length`` tokens anyway).
MAX_TEXT_CHARS = 20_000
#: How many models "compare" runs side by side.
COMPARE_MIN, COMPARE_MAX = 2, 4
#: Costs the efficiency view can put a metric against: cost metric (split ``cost``) -> (axis title, log scale).
COSTS = {
    "latency_ms_mean": ("latency, ms (batch size 1, mean)", False),
    "trainable_params": ("trainable parameters (log scale)", True),
    "total_params": ("total parameters (log scale)", True),
    "model_memory_mb": ("model memory, MB", False),
    "train_seconds": ("training time, s", False),
    "train_flops": ("training FLOPs (log scale)", True),
}
#: Evaluation metrics that measure no quality (counts): the efficiency view does not offer them.
NOT_QUALITY = frozenset({"n_examples"})


@dataclass
class Prediction:
    """One text through one model: what it said and how long it took."""

    model: StoredModel
    label: str
    confidence: float
    probabilities: dict[str, float]
    latency_ms: float
    #: Seconds spent loading the model for this call (0.0 when it was cached).
    load_seconds: float


@dataclass
class Answer:
    """One question through an extractive-QA model: the answer found in the context (its first character;
    -1: none found), its score and how long it took."""

    model: StoredModel
    question: str
    context: str
    answer: str
    start: int
    score: float
    latency_ms: float
    #: Seconds spent loading the model for this call (0.0 when it was cached).
    load_seconds: float

    def highlighted(self) -> list[tuple[str, str | None]]:
        """The context with the answer marked, for the page."""
        return highlighted(self.context, self.answer, self.start)


#: The task of the runs the app answers questions with.
QA_TASK = "extractive_qa"


class Evaluation:
    """The app's state: the store (read-only unless ``record``), the loaded models, a folder for downloads."""

    def __init__(
        self, store: Store, record: bool = False, cache_size: int = CACHE_SIZE, out_dir: Path | None = None, load=None
    ):
        self.store = store
        self.record = record
        self.cache = PredictorCache(load or self._load, cache_size)
        if out_dir is None:  # downloads live as long as the app
            out_dir = Path(tempfile.mkdtemp(prefix="specrun-app-"))
            atexit.register(shutil.rmtree, out_dir, ignore_errors=True)
        self.out_dir = Path(out_dir)

    def _load(self, run_id: str) -> Any:
        from specrun.driver.models import load_predictor

        return load_predictor(self.store, run_id)

    # --- the store's models -----------------------------------------------------------------------

    def experiments(self) -> list[str]:
        return model_experiments(self.store)

    def models(
        self, experiment: str | None = None, method: str | None = None, dataset: str | None = None
    ) -> list[StoredModel]:
        """The models (completed runs with weights), newest first, filtered by experiment, method and dataset."""
        found = stored_models(self.store, experiment or None)
        return [m for m in found if (not method or m.method == method) and (not dataset or m.dataset == dataset)]

    def model(self, run_id: str | None, task: str | None = DEFAULT_TASK) -> StoredModel:
        """The model with this run id; UsageError when none is picked or it is a run of another task than
        ``task`` (None: any task), StoreError when it is gone."""
        if not run_id:
            raise UsageError("pick a model first")
        for model in stored_models(self.store):
            if model.run_id == run_id:
                _check_task(model, task)
                return model
        raise StoreError(
            f"run {run_id} is no longer a completed run with weights in {self.store.path}; reload the model list"
        )

    def load(self, run_id: str) -> tuple[StoredModel, float]:
        """Load a model into the cache (for the picker, so that the first prediction is quick)."""
        model = self.model(run_id, task=None)
        _, seconds = self.cache.get(model.run_id)
        return model, seconds

    # --- classifying ------------------------------------------------------------------------------

    def classify(
        self, run_id: str | None, text: str | None, pair: str | None = None, source: str = "text"
    ) -> Prediction:
        """One text (and its pair, for a sentence-pair model) through one model."""
        return self._predict([self.model(run_id)], text, pair, source)[0]

    def compare(self, run_ids: list[str] | None, text: str | None, pair: str | None = None) -> list[Prediction]:
        """The same text through two to four models, in the order given."""
        chosen = list(dict.fromkeys(run_ids or []))
        if not COMPARE_MIN <= len(chosen) <= COMPARE_MAX:
            raise UsageError(f"pick {COMPARE_MIN} to {COMPARE_MAX} models to compare ({len(chosen)} picked)")
        known = {m.run_id: m for m in stored_models(self.store)}
        missing = [r for r in chosen if r not in known]
        if missing:
            raise StoreError(
                f"run {missing[0]} is no longer a completed run with weights in {self.store.path}; reload the model list"
            )
        return self._predict([known[r] for r in chosen], text, pair, "compare")

    def _predict(self, models: list[StoredModel], text: str | None, pair: str | None, source: str) -> list[Prediction]:
        text = _check_text(text, "text")
        pair = _check_text(pair, "second text") if (pair or "").strip() else None
        for model in models:
            _check_task(model, DEFAULT_TASK)
            _check_pair(model, bool(pair))
        found = []
        for model in models:
            predictor, seconds = self.cache.get(model.run_id)
            result = predictor.classify([(text, pair)])[0]
            trim(predictor)
            found.append(
                Prediction(model, result.label, result.confidence, result.probabilities, result.latency_ms, seconds)
            )
        if self.record:
            record_predictions(
                self.store,
                source,
                [
                    RecordedPrediction(p.model.run_id, 0, text, pair, None, p.label, p.confidence, p.latency_ms)
                    for p in found
                ],
            )
        return found

    def classify_file(
        self, run_id: str | None, path: str | Path | None, name: str | None = None
    ) -> tuple[BatchResult, float]:
        """Every row of an uploaded file through one model: (result, seconds spent loading the model)."""
        model = self.model(run_id)
        if not path:
            raise UsageError("upload a CSV, TSV, JSONL or parquet file with a 'text' column first")
        upload = read_upload(Path(path), name)
        for text_pair in {pair is not None for _, pair in upload.items}:
            _check_pair(model, text_pair, where=f"{upload.name}: ")
        predictor, seconds = self.cache.get(model.run_id)
        expect_labels(upload, tuple(predictor.label_names))
        result = classify_upload(predictor, upload, self.out_dir, model.run_id)
        trim(predictor)
        if self.record:
            record_predictions(
                self.store,
                upload.name,
                [
                    RecordedPrediction(
                        model.run_id,
                        i,
                        text,
                        pair,
                        upload.labels[i] if upload.labels is not None else None,
                        row[result.columns.index("prediction")],
                        row[result.columns.index("confidence")],
                        row[result.columns.index("latency_ms")],
                    )
                    for i, ((text, pair), row) in enumerate(zip(upload.items, result.rows))
                ],
            )
        return result, seconds

    # --- question answering -----------------------------------------------------------------------

    def answer(self, run_id: str | None, question: str | None, context: str | None) -> Answer:
        """A question answered from ``context`` by an extractive-QA run (``specrun predict --question``'s path)."""
        model = self.model(run_id, QA_TASK)
        question, context = check_question(question, context)
        predictor, seconds = self.cache.get(model.run_id)
        (found,) = predictor.answer([(question, context)])
        result = Answer(model, question, context, found.answer, found.start, found.score, found.latency_ms, seconds)
        if self.record:
            record_predictions(
                self.store,
                "question",
                [
                    RecordedPrediction(
                        model.run_id, 0, question, context, None, found.answer, found.score, found.latency_ms
                    )
                ],
            )
        return result

    def answer_file(
        self, run_id: str | None, path: str | Path | None, name: str | None = None
    ) -> tuple[QABatchResult, float]:
        """Every question of an uploaded file answered by one extractive-QA run: (result, seconds spent
        loading the model)."""
        import json

        model = self.model(run_id, QA_TASK)
        if not path:
            raise UsageError("upload a CSV, TSV, JSONL or parquet file with 'question' and 'context' columns first")
        upload = read_qa_upload(Path(path), name)
        predictor, seconds = self.cache.get(model.run_id)
        result = answer_upload(predictor, upload, self.out_dir, model.run_id)
        if self.record:
            at = {name: result.columns.index(name) for name in ("answer", "score", "latency_ms")}
            record_predictions(
                self.store,
                upload.name,
                [
                    RecordedPrediction(
                        model.run_id,
                        i,
                        question,
                        context,
                        json.dumps(upload.answers[i], ensure_ascii=False) if upload.answers is not None else None,
                        row[at["answer"]],
                        row[at["score"]],
                        row[at["latency_ms"]],
                    )
                    for i, ((question, context), row) in enumerate(zip(upload.items, result.rows))
                ],
            )
        return result, seconds

    # --- efficiency -------------------------------------------------------------------------------

    def efficiency(
        self, experiment: str | None, cost: str = "latency_ms_mean", metric: str | None = None
    ) -> Efficiency:
        """An experiment's configurations (runs differing only in seed, averaged) on ``metric`` (None: the
        headline metric of the runs' task) against ``cost``, each marked whether it is on the Pareto front
        (no other is at least as good on the metric at no more cost, and better on one). Every number is the
        run's final one on its primary evaluation set (``metric``) or its recorded cost."""
        from specrun.analysis.stats import pareto_front
        from specrun.metrics import LOWER_IS_BETTER
        from specrun.spec.labels import describe_configs
        from specrun.store.analyses import selected_on_reported

        if cost not in COSTS:
            raise UsageError(f"cost must be one of {', '.join(COSTS)}, not {cost!r}")
        if not experiment:
            raise UsageError(
                "pick an experiment" if self.experiments() else "no experiment in the store has trained models yet"
            )
        models = self.models(experiment)
        if not models:
            raise UsageError(f"experiment {experiment!r} has no completed runs with weights in {self.store.path}")
        with self.store.read() as db:
            found = db.execute(_FINAL_METRICS, {"runs": [m.run_id for m in models]}).fetchall()
            selected = selected_on_reported(db, experiment)
        quality: dict[str, dict[str, float]] = {}
        costs: dict[str, dict[str, float]] = {}
        for run_id, is_cost, name, value in found:
            if is_cost:
                costs.setdefault(run_id, {})[name] = value
            elif name not in NOT_QUALITY and not name.startswith("skipped_"):
                quality.setdefault(run_id, {})[name] = value
        recorded = {name for values in quality.values() for name in values}
        if not recorded:
            raise UsageError(f"no run of {experiment!r} recorded an evaluation metric on its primary evaluation set")
        headlines = _headlines(models)
        primary = next((h for h in headlines if h in recorded), None)
        order = {name: i for i, name in enumerate(EVAL_METRICS)}
        # the headline first, then the other metrics that are better higher, then those better lower (a loss)
        metrics = sorted(recorded, key=lambda n: (n != primary, n in LOWER_IS_BETTER, order.get(n, len(order)), n))
        metric = metric or metrics[0]
        if metric not in recorded:
            raise UsageError(
                f"no run of {experiment!r} recorded {metric} on its primary evaluation set; "
                f"they recorded {', '.join(metrics)}"
            )
        labels = describe_configs([(m.method, m.sweep) for m in models])
        groups: dict[str, list[StoredModel]] = {}
        for label, model in zip(labels, models):
            groups.setdefault(label, []).append(model)
        rows = []
        for label, group in groups.items():
            row: dict[str, Any] = {
                "label": label,
                "config": label,
                "runs": len(group),
                "run_ids": ", ".join(m.run_id[:8] for m in group),
            }
            for name, source in [*((n, quality) for n in metrics), *((c, costs) for c in (*COSTS, "latency_ms_p95"))]:
                values = [source[m.run_id][name] for m in group if name in source.get(m.run_id, {})]
                row[name] = sum(values) / len(values) if values else None
            rows.append(row)
        have = [r for r in rows if r[cost] is not None and r[metric] is not None]
        if not have:
            raise UsageError(f"no run of {experiment!r} recorded both {metric} and {cost}")
        front = pareto_front([r[cost] for r in have], [r[metric] for r in have], metric not in LOWER_IS_BETTER)
        for row, on in zip(have, front):
            row["on_front"] = on
        return Efficiency(
            experiment,
            metric,
            cost,
            primary,
            metrics,
            sorted({m.eval_set for m in models}),
            sorted(have, key=lambda r: r[cost]),
            len(rows) - len(have),
            selected,
            sorted({task_name(m.config) for m in models}),
        )


#: The final evaluation metrics of runs on their primary evaluation set, and their costs.
_FINAL_METRICS = """
SELECT m.run_id, m.split = 'cost' AS is_cost, m.name, m.value
FROM metrics m JOIN runs r USING (run_id)
WHERE m.final AND m.run_id IN (SELECT unnest($runs)) AND (m.split = r.eval_set OR m.split = 'cost')
ORDER BY m.run_id, m.name
"""


def _headlines(models: list[StoredModel]) -> list[str]:
    """The headline metric of each task the ``models`` are runs of (``core.tasks.headline_metric``), the
    task of the newest run first; a task whose plugin is not installed here has none."""
    from specrun.core.tasks import headline_metric
    from specrun.errors import PluginError
    from specrun.plugins import get_registry

    found = []
    for name in dict.fromkeys(task_name(m.config) for m in models):
        try:
            found.append(headline_metric(get_registry().get("task", name)))
        except PluginError:
            log.debug("task %r: no plugin here, so no headline metric", name)
    return found


@dataclass
class Efficiency:
    """An experiment's configurations on one metric against one cost: the efficiency view."""

    experiment: str
    metric: str
    cost: str
    #: The headline metric of the runs' task (its plugin's first metric); None when no installed task
    #: plugin names one the runs recorded (then ``metrics[0]`` is drawn by default).
    primary: str | None
    #: The metrics the runs recorded on their primary evaluation set, the headline first.
    metrics: list[str]
    #: The evaluation sets the metric comes from: each run's primary one (``runs.eval_set``).
    splits: list[str]
    #: One per configuration that recorded the metric and the cost, cheapest first: ``label``, ``runs``,
    #: ``run_ids``, each of ``metrics`` and ``COSTS`` (means over its seeds), ``on_front``.
    rows: list[dict[str, Any]]
    #: Configurations left out because none of their runs recorded the metric, or the cost.
    left_out: int = 0
    #: Runs that picked their weights on the split they report: their numbers are optimistic.
    selected_on_reported: int = 0
    tasks: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        """Where the numbers come from, for the page: ``validation (each run's primary evaluation set)``."""
        return f"{', '.join(self.splits)} (each run's primary evaluation set, its final evaluation)"

    def status(self) -> str:
        """The view's status line: what is drawn, from which split, and what is on the front."""
        title = COSTS[self.cost][0].split(" (")[0]
        front = ", ".join(r["label"] for r in self.rows if r["on_front"])
        tasks = " and ".join(repr(t) for t in self.tasks)
        if self.primary is None:
            which = f"task {tasks} names no headline metric these runs recorded"
        elif self.metric == self.primary:
            which = f"the headline metric of task {tasks}"
        else:
            which = f"picked; the headline metric of task {tasks} is {self.primary}"
        text = (
            f"{self.experiment}: **{self.metric}** ({which}) on **{self.where}** against {title}: "
            f"{len(self.rows)} configuration(s); on the Pareto front: {front}"
        )
        if self.left_out:
            text += f". {self.left_out} configuration(s) left out: they recorded no {self.metric} or no {title}"
        if self.selected_on_reported:
            text += (
                f". ⚠ {self.selected_on_reported} run(s) picked their weights on the split they report: "
                "their numbers are optimistic"
            )
        return text


def _check_task(model: StoredModel, task: str | None) -> None:
    """UsageError when ``model`` is a run of another task than ``task`` (None: any will do), saying where
    in the app its task is served."""
    found = task_name(model.config)
    if task is None or found == task:
        return
    if found == QA_TASK:
        raise UsageError(
            f"run {model.run_id[:8]} is a run of task {found!r}: it answers questions, it does not classify texts; "
            "use the Question answering tab"
        )
    if task == QA_TASK:
        raise UsageError(
            f"run {model.run_id[:8]} is a run of task {found!r}: the Question answering tab needs a run of task "
            f"{QA_TASK!r}; pick one"
        )
    raise UsageError(
        f"run {model.run_id[:8]} is a run of task {found!r}: the app has no view for that task; "
        f"use `specrun predict {model.run_id}`"
    )


def _check_text(text: str | None, what: str) -> str:
    text = (text or "").strip()
    if not text:
        raise UsageError(f"type a {what} to classify")
    if len(text) > MAX_TEXT_CHARS:
        raise UsageError(
            f"the {what} has {len(text):,} characters; the app classifies at most {MAX_TEXT_CHARS:,} "
            "(the model reads only its first tokens anyway)"
        )
    return text


def _check_pair(model: StoredModel, has_pair: bool, where: str = "") -> None:
    """Refuse a second text for a model trained on single texts, and a missing one for a pair model
    (a model whose dataset the app does not know takes either)."""
    pairs = takes_pairs(model)
    if pairs is True and not has_pair:
        raise UsageError(
            f"{where}run {model.run_id[:8]} classifies sentence pairs ({model.dataset}): give the second text too"
            + (" (a 'text_pair' column)" if where else "")
        )
    if pairs is False and has_pair:
        raise UsageError(
            f"{where}run {model.run_id[:8]} was trained on single texts ({model.dataset}): "
            + ("drop the 'text_pair' column" if where else "leave the second text empty")
        )
