"""Per-example scores from a teacher run (its loss on each example), for transforms that rank examples
by difficulty: ``TransformContext.scores(teacher_run_id, examples)``.

The task brings each teacher's weights and the scores the store already holds; scores computed here
for examples not scored before go back in the record (``RunRecord.teacher_scores``) and the driver
stores them, so each example is scored once per teacher.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from specrun.core.task import ScoreRow, TeacherSource
from specrun.errors import DataError
from specrun.examples import Examples
from specrun.plugins.registry import Registry
from specrun.runner.batching import Encoded
from specrun.runner.evaluate import evaluate


def text_hash(text: str, pair: str | None) -> str:
    return hashlib.sha256(f"{text}\x1f{pair or ''}".encode()).hexdigest()[:16]


def teacher_scorer(teachers: dict[str, TeacherSource], registry: Registry, produced: list[ScoreRow]):
    """A ``scores(teacher_run_id, examples) -> list[float]`` over the task's ``teachers``; appends the
    scores it computes to ``produced``."""
    predictors = {}

    def scores(teacher: str, examples: Examples) -> list[float]:
        source = teachers.get(teacher)
        if source is None:
            raise DataError(
                f"teacher run {teacher!r} was not given to this run (its weights were not found in the store)"
            )
        pairs = examples.text_pair or (None,) * len(examples)
        keys = [(i, text_hash(t, p)) for i, t, p in zip(examples.ids, examples.text, pairs)]
        missing = [n for n, k in enumerate(keys) if k not in source.known]
        if missing:
            from specrun.runner.predict import Predictor

            if teacher not in predictors:
                predictors[teacher] = Predictor.from_weights(source.config, Path(source.weights), registry)
            p = predictors[teacher]
            subset = examples.select(missing)
            ev = evaluate(p.model, Encoded.build(subset, p.cache), len(p.label_names), 128, p.precision, p.device)
            for n, label, loss in zip(missing, subset.label, ev.loss.tolist()):
                source.known[keys[n]] = loss
                produced.append(ScoreRow(teacher, keys[n][0], keys[n][1], int(label), float(loss)))
        return [source.known[k] for k in keys]

    return scores
