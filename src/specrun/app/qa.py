"""Question answering in the app: a question and its context answered by an extractive-QA run (the answer
found in the context, with its score and latency), and an uploaded file of questions answered row by row,
scored with SQuAD v1.1 exact match and F1 when it has an 'answers' column.

Questions are answered through ``runner.predict.Predictor.answer``, the path ``specrun predict RUN
--question/--context`` takes; files are read as ``specrun predict RUN --file`` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from specrun.app.batch import MAX_ROWS, FileResult, read_rows
from specrun.errors import UsageError

#: The longest context the app answers from (the run reads it window by window, so any length works, but
#: each window costs a forward pass).
MAX_CONTEXT_CHARS = 50_000
MAX_QUESTION_CHARS = 2_000


def check_question(question: str | None, context: str | None) -> tuple[str, str]:
    """The question and context, stripped; UsageError for an empty or overlong one."""
    question, context = (question or "").strip(), (context or "").strip()
    if not question:
        raise UsageError("type a question")
    if not context:
        raise UsageError("paste the context the answer is to be found in")
    for what, text, limit in (("question", question, MAX_QUESTION_CHARS), ("context", context, MAX_CONTEXT_CHARS)):
        if len(text) > limit:
            raise UsageError(f"the {what} has {len(text):,} characters; the app answers from at most {limit:,}")
    return question, context


def highlighted(context: str, answer: str, start: int) -> list[tuple[str, str | None]]:
    """The context as (text, label) pieces with the answer labelled ``answer`` (gradio's HighlightedText);
    the whole context unlabelled when there is no answer."""
    if start < 0 or not answer:
        return [(context, None)]
    end = start + len(answer)
    pieces = [(context[:start], None), (context[start:end], "answer"), (context[end:], None)]
    return [(text, label) for text, label in pieces if text]


@dataclass
class QAUpload:
    """An uploaded file's questions: (question, context) items, their reference answers (None without
    an 'answers' column), and the line each row starts on."""

    name: str
    items: list[tuple[str, str]]
    answers: list[list[str]] | None
    lines: list[int]


def read_qa_upload(path: Path, name: str | None = None, max_rows: int = MAX_ROWS) -> QAUpload:
    """The questions of an uploaded file (``name``: as the user called it). DataError, naming the file and
    line, for a file the app cannot answer: wrong extension, no 'question' or 'context' column, an empty
    question or context, answers that are not texts, more than ``max_rows`` rows."""
    from specrun.runner.predict import read_questions

    found, name, lines = read_rows(path, name, read_questions, max_rows, f"answers at most {max_rows:,} questions")
    return QAUpload(name, found.items, found.answers, lines)


@dataclass
class QABatchResult(FileResult):
    """What answering a file gives: the answers, and (``scores``) SQuAD v1.1 exact match and F1, means over
    the questions, when the file had answers."""

    def summary(self) -> str:
        if self.scores is None:
            return (
                f"{self.name}: {len(self.rows)} questions answered (no 'answers' column: no EM or F1); {self.latency()}"
            )
        return (
            f"{self.name}: {len(self.rows)} questions with answers: exact match {self.scores['exact_match']:.4f}, "
            f"F1 {self.scores['f1']:.4f}; {self.latency()}"
        )


def answer_upload(predictor: Any, upload: QAUpload, out_dir: Path, run_id: str) -> QABatchResult:
    """Answer every question of ``upload`` (one at a time, as latency is measured) and write the CSV."""
    from specrun.core.squad import question_scores

    answered = predictor.answer(upload.items)
    has_answers = upload.answers is not None
    columns = [
        "line",
        "question",
        "context",
        *(["answers"] if has_answers else []),
        "answer",
        "start",
        "score",
        *(["exact_match", "f1"] if has_answers else []),
        "latency_ms",
    ]
    rows, em, f1 = [], [], []
    for i, found in enumerate(answered):
        scored = []
        if has_answers:
            e, f = question_scores(found.answer, upload.answers[i])
            em.append(e)
            f1.append(f)
            scored = [e, round(f, 4)]
        rows.append(
            [
                upload.lines[i],
                found.question,
                found.context,
                *([" | ".join(upload.answers[i])] if has_answers else []),
                found.answer,
                found.start,
                round(found.score, 4),
                *scored,
                round(found.latency_ms, 3),
            ]
        )
    scores = {"exact_match": float(np.mean(em)), "f1": float(np.mean(f1))} if has_answers else None
    return QABatchResult.written(
        upload.name,
        columns,
        rows,
        [a.latency_ms for a in answered],
        scores,
        out_dir / f"{Path(upload.name).stem}-answers-{run_id[:8]}.csv",
    )
