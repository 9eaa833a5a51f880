"""The metrics a run records, by name, and how a spec refers to one of them.

The runner writes these into the store's ``metrics`` table; analyses and reports read them back. A
reference such as ``accuracy``, ``noisy.f1`` or ``cost.train_seconds`` names one final metric of a run:
``[<split>.]<name>``, where an evaluation metric without a split means the run's primary evaluation set
and a cost metric needs none.
"""

from __future__ import annotations

from dataclasses import dataclass

from specrun.errors import did_you_mean

#: Computed on every evaluation set (split = the set's name), by the run's task: classification records
#: accuracy, f1, f1_macro, loss, n_examples; extractive_qa f1, exact_match, loss, n_examples.
EVAL_METRICS = ("accuracy", "f1", "f1_macro", "loss", "n_examples", "exact_match")
#: Recorded at each evaluation during training (split = ``train``): the running loss and accuracy of the
#: training batches since the previous evaluation, the learning rate, and the training seconds so far.
TRAIN_METRICS = ("loss", "accuracy", "learning_rate", "seconds")
#: What a run cost (split = ``cost``, final).
COST_METRICS = (
    "trainable_params",
    "total_params",
    "trainable_pct",
    "train_seconds",
    "train_steps",
    "train_examples",
    "samples_per_second",
    "peak_memory_mb",
    "model_memory_mb",
    "time_to_best_seconds",
    "eval_examples_per_second",
    "latency_ms_mean",
    "latency_ms_p50",
    "latency_ms_p95",
    "artifact_bytes",
    "train_flops",
    "eval_flops",
    "train_real_tokens",
    "eval_real_tokens",
    "train_flops_per_second",
    "eval_flops_per_second",
    "frozen_features_seconds",
    "frozen_features_cached",
)
#: Metrics where lower is better (the rest: higher is better, or neither for costs).
LOWER_IS_BETTER = frozenset({"loss"})


@dataclass(frozen=True)
class MetricRef:
    """A final metric of a run: ``split`` is an evaluation set's name, ``cost``, or None for the run's
    primary evaluation set."""

    split: str | None
    name: str

    @classmethod
    def parse(cls, text: str) -> MetricRef:
        split, _, name = text.strip().rpartition(".")
        if not split and name in COST_METRICS and name not in EVAL_METRICS:
            return cls("cost", name)
        return cls(split or None, name)

    def split_for(self, primary: str) -> str:
        return self.split or primary

    def __str__(self) -> str:
        return f"{self.split}.{self.name}" if self.split else self.name

    def problem(self, eval_sets: tuple[str, ...]) -> str | None:
        """Why this reference can name no recorded metric, given a spec's evaluation sets (primary first)."""
        if self.split == "cost":
            if self.name not in COST_METRICS:
                return f"no cost metric {self.name!r}{did_you_mean(self.name, COST_METRICS)}; cost metrics: {', '.join(COST_METRICS)}"
            return None
        if self.split is not None and self.split not in eval_sets:
            splits = (*eval_sets, "cost")
            return f"no evaluation set {self.split!r}{did_you_mean(self.split, splits)}; this spec has: {', '.join(splits)}"
        if self.name not in EVAL_METRICS:
            known = EVAL_METRICS + COST_METRICS
            return f"no metric {self.name!r}{did_you_mean(self.name, known)}; evaluation metrics: {', '.join(EVAL_METRICS)}; cost metrics: {', '.join(COST_METRICS)}"
        return None

    @property
    def higher_is_better(self) -> bool:
        return self.name not in LOWER_IS_BETTER
