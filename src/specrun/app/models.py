"""The models the app serves: how each is named and described, and a bounded cache of loaded ones.

Loading a run's model (building it, reading its weights and tokenizer) takes a second or more; the
cache keeps the most recently used few loaded, so switching back to one is instant.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from specrun.store.catalog import StoredModel

#: How many loaded models the app keeps (comparing four at once keeps all four).
CACHE_SIZE = 6


def human_count(value: float | None) -> str:
    """1234567 → '1.23M'; None → '—'."""
    if value is None:
        return "—"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def number(value: float | None, digits: int = 4) -> str:
    """A number for reading: 0.9123, 12.35, 3,140 (never 3.14e+03); None → '—'."""
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"


def hyperparameters(model: StoredModel, limit: int = 5) -> str:
    """The method's options, the learning rate and any other swept value: ``rank=4 alpha=16 dropout=0.1 lr=0.05``."""
    from specrun.spec.labels import sweep_assignments

    parts = [
        f"{k}={_short(v)}"
        for k, v in model.config.get("method", {}).items()
        if k != "name" and v is not None and not isinstance(v, (dict, list))
    ]
    rate = model.config.get("train", {}).get("learning_rate")
    if rate is not None:
        parts.append(f"lr={rate:g}")
    for key, value in model.sweep.items():
        for dotted, item in sweep_assignments(key, value):
            if (
                not dotted.startswith("method")
                and dotted != "train.learning_rate"
                and not isinstance(item, (dict, list))
            ):
                parts.append(f"{dotted.split('.')[-1]}={_short(item)}")
    return " ".join(parts[:limit])


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


#: Built-in datasets by whether their examples are sentence pairs.
PAIR_DATASETS = frozenset({"glue/mrpc", "glue/rte"})
SINGLE_DATASETS = frozenset({"glue/sst2", "ag_news"})


def takes_pairs(model: StoredModel) -> bool | None:
    """Whether the run was trained on sentence pairs (MRPC, RTE, a local file with a text_pair column);
    None for a dataset plugin the app does not know (it then accepts either)."""
    data = model.config.get("data", {})
    if model.dataset == "local":
        return bool((data.get("options") or {}).get("text_pair_column"))
    if model.dataset in PAIR_DATASETS:
        return True
    return False if model.dataset in SINGLE_DATASETS else None


#: The metrics the model table, card and picker show (those a ``StoredModel`` holds): metric -> shown name.
SHOWN_METRICS = {"accuracy": "accuracy", "f1": "F1", "exact_match": "exact match"}
#: Shorter names for the model picker's labels.
SHORT_NAMES = {"accuracy": "acc", "f1": "F1", "exact_match": "EM"}


def task_metrics(model: StoredModel) -> tuple[str, ...]:
    """The metrics of ``SHOWN_METRICS`` that the run's task reports, its headline metric first
    (``core.tasks.headline_metric``: accuracy, F1 for classification; F1, exact match for extractive QA);
    for a task whose plugin is not installed here, those the run recorded."""
    from specrun.core.tasks import task_name
    from specrun.errors import PluginError
    from specrun.plugins import get_registry

    try:
        reported = tuple(get_registry().get("task", task_name(model.config)).metrics)
    except PluginError:
        reported = tuple(n for n in SHOWN_METRICS if getattr(model, n) is not None)
    return tuple(n for n in reported if n in SHOWN_METRICS)


def choice_label(model: StoredModel) -> str:
    """How the model picker names a model: id, experiment, method and hyperparameters, seed, and its
    task's headline metric (for extractive QA, exact match too)."""
    from specrun.core.tasks import DEFAULT_TASK, task_name

    names = task_metrics(model)
    if task_name(model.config) == DEFAULT_TASK:
        names = names[:1]  # accuracy: the labels stay short
    shown = " ".join(
        f"{SHORT_NAMES[n]} {getattr(model, n):.3f}" if getattr(model, n) is not None else f"{SHORT_NAMES[n]} —"
        for n in names
    )
    details = " ".join(p for p in (model.method, hyperparameters(model, limit=3)) if p)
    return (
        f"{model.run_id[:8]} · {', '.join(model.experiments)} · {details} · seed {model.seed} · {shown or 'no metric'}"
    )


def card(model: StoredModel, loaded_seconds: float | None = None) -> str:
    """A short Markdown description of a model with the numbers its run recorded: its task, and the
    metrics that task reports (its headline first) on its primary evaluation set."""
    from specrun.core.tasks import task_name

    task = task_name(model.config)
    names = task_metrics(model)
    scored = f"{model.eval_set}, SQuAD v1.1" if task == "extractive_qa" else model.eval_set
    rows = [
        ("experiment", ", ".join(model.experiments)),
        ("task", task),
        ("method", f"{model.method} {hyperparameters(model, limit=8)}".strip()),
        ("model · dataset", f"{model.model} · {model.dataset}" + (" (sentence pairs)" if takes_pairs(model) else "")),
        ("seed", str(model.seed)),
        (
            f"{' · '.join(SHOWN_METRICS[n] for n in names) or 'metrics'} ({scored})",
            " · ".join(number(getattr(model, n)) for n in names) or "—",
        ),
        ("trainable · total parameters", f"{human_count(model.trainable_params)} · {human_count(model.total_params)}"),
        ("model memory", "—" if model.model_memory_mb is None else f"{model.model_memory_mb:.1f} MB"),
        (
            "latency (batch size 1)",
            "—"
            if model.latency_ms_mean is None
            else f"{model.latency_ms_mean:.2f} ms mean, {number(model.latency_ms_p95)} ms p95 (measured by its run)",
        ),
    ]
    if loaded_seconds is not None:
        rows.append(("loaded", f"in {loaded_seconds:.2f} s" if loaded_seconds > 0 else "(cached)"))
    return f"| run | `{model.run_id}` |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


class PredictorCache:
    """Loaded predictors by run id, least recently used dropped first. Safe to share between threads:
    one model loads at a time, and a model asked for while it loads is loaded once."""

    def __init__(self, load: Callable[[str], Any], size: int = CACHE_SIZE):
        if size < 1:
            raise ValueError("the cache must hold at least one model")
        self._load = load
        self.size = size
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, run_id: str) -> bool:
        return run_id in self._loaded

    def __len__(self) -> int:
        return len(self._loaded)

    def get(self, run_id: str) -> tuple[Any, float]:
        """(predictor, seconds spent loading it now: 0.0 when it was cached)."""
        with self._lock:
            if run_id in self._loaded:
                self._loaded.move_to_end(run_id)
                return self._loaded[run_id], 0.0
            start = time.perf_counter()
            predictor = self._load(run_id)
            seconds = time.perf_counter() - start
            self._loaded[run_id] = predictor
            while len(self._loaded) > self.size:
                _, dropped = self._loaded.popitem(last=False)
                _release(dropped)
            return predictor, seconds


#: Tokenized texts a loaded model keeps before they are dropped (each request's texts are new ones).
TOKENS_KEPT = 10_000


def trim(predictor: Any) -> None:
    """Forget a predictor's tokenized texts once they pass ``TOKENS_KEPT``, so uploads do not grow memory."""
    cache = getattr(predictor, "cache", None)
    if cache is not None and len(cache.cache) > TOKENS_KEPT:
        cache.cache.clear()


def _release(predictor: Any) -> None:
    """Drop a predictor's tokenized texts: ``TokenCache`` keeps them per tokenizer for the process's
    life, keyed by the tokenizer's id(), which a later tokenizer may reuse."""
    cache = getattr(predictor, "cache", None)
    if cache is None:
        return
    from specrun.runner.batching import TokenCache

    TokenCache._caches.pop((id(cache.tokenizer), cache.max_length), None)
    cache.cache.clear()
