"""Per-example scores from a teacher run (its loss on each example), computed once and kept in the store.

Transforms that rank examples by difficulty call ``TransformContext.scores(teacher_run_id, examples)``;
this module provides that callable for the runner.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

from specrun.examples import Examples
from specrun.runner.data import Encoded
from specrun.runner.evaluate import evaluate
from specrun.store.db import Store, now


def _text_hash(text: str, pair: str | None) -> str:
    return hashlib.sha256(f"{text}\x1f{pair or ''}".encode()).hexdigest()[:16]


def scorer(store: Store):
    """A ``scores(teacher_run_id, examples) -> list[float]`` bound to ``store``."""
    predictors = {}

    def scores(teacher: str, examples: Examples) -> list[float]:
        pairs = examples.text_pair or (None,) * len(examples)
        keys = [(i, _text_hash(t, p)) for i, t, p in zip(examples.ids, examples.text, pairs)]
        with store.read() as db:
            known = {
                (r[0], r[1]): r[2]
                for r in db.execute("SELECT example_id, text_hash, loss FROM example_scores WHERE teacher_run_id = ?", [teacher]).fetchall()
            }
        missing = [n for n, k in enumerate(keys) if k not in known]
        if missing:
            from specrun.runner.predict import Predictor

            if teacher not in predictors:
                predictors[teacher] = Predictor.load(store, teacher)
            p = predictors[teacher]
            subset = examples.select(missing)
            ev = evaluate(p.model, Encoded.build(subset, p.cache), len(p.label_names), 128, p.precision, p.device)
            table = pa.table({
                "teacher_run_id": [teacher] * len(missing),
                "example_id": [keys[n][0] for n in missing],
                "text_hash": [keys[n][1] for n in missing],
                "label": list(subset.label),
                "loss": ev.loss.tolist(),
                "scored_at": [now()] * len(missing),
            })
            with store.write() as db:
                db.register("_scores", table)
                db.execute("INSERT INTO example_scores SELECT * FROM _scores")
            for n, loss in zip(missing, ev.loss.tolist()):
                known[keys[n]] = loss
        return [known[k] for k in keys]

    return scores
