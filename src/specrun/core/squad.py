"""The official SQuAD v1.1 evaluation (``evaluate-v1.1.py``), reimplemented line for line.

Answers are normalised (lower case, punctuation removed, the articles a/an/the removed, whitespace
collapsed) before comparing; exact match is equality of the normalised strings, F1 the token-overlap
F1 of the normalised strings; each question takes the maximum over its reference answers. As in v1.1
(not v2.0): a prediction with no tokens after normalisation has F1 0, even against an empty reference.
``squad_scores`` returns fractions (the official script prints 100 times these).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (the official order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def f1_score(prediction: str, ground_truth: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def metric_max_over_ground_truths(
    metric_fn: Callable[[str, str], float], prediction: str, ground_truths: Iterable[str]
) -> float:
    return max(metric_fn(prediction, gt) for gt in ground_truths)


def question_scores(prediction: str, ground_truths: Sequence[str]) -> tuple[float, float]:
    """(exact match, F1) of one question's prediction against its reference answers (at least one)."""
    if not ground_truths:
        raise ValueError("a SQuAD question needs at least one reference answer")
    return (
        metric_max_over_ground_truths(exact_match_score, prediction, ground_truths),
        metric_max_over_ground_truths(f1_score, prediction, ground_truths),
    )


def squad_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """{"exact_match", "f1"}: the means over questions, as fractions."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} questions")
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    pairs = [question_scores(p, r) for p, r in zip(predictions, references)]
    return {"exact_match": sum(e for e, _ in pairs) / len(pairs), "f1": sum(f for _, f in pairs) / len(pairs)}
