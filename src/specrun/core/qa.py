"""Extractive-QA examples and the SQuAD v1.1 JSON format.

``QAExamples`` is what the ``extractive_qa`` task trains and evaluates on: one row per question, with
its context, its reference answers (text and character offset) and the title of its article. ``read_squad``
reads a file in the SQuAD v1.1 format and refuses, naming the file and the place in it, a missing field,
an empty context or question, an answer whose ``answer_start`` does not point at its text, and a question
id used twice.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from specrun.errors import DataError

#: One reference answer: (text, answer_start as a character offset into the context).
Answer = tuple[str, int]


@dataclass(frozen=True)
class QAExamples:
    """One split of an extractive-QA dataset: parallel, immutable columns, one row per question.

    ``ids`` are the questions' own ids from the data (the store keys predictions by them)."""

    ids: tuple[str, ...]
    question: tuple[str, ...]
    context: tuple[str, ...]
    answers: tuple[tuple[Answer, ...], ...]
    title: tuple[str, ...]

    def __post_init__(self):
        n = len(self.ids)
        for name in ("question", "context", "answers", "title"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"column {name!r} has {len(getattr(self, name))} values for {n} ids")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def label(self) -> tuple[None, ...]:
        """No class labels: extractive QA stores answers, not label ids (``train_examples.label`` is NULL)."""
        return (None,) * len(self)

    def select(self, indices: Sequence[int]) -> QAExamples:
        pick = lambda col: tuple(col[i] for i in indices)  # noqa: E731
        return QAExamples(pick(self.ids), pick(self.question), pick(self.context), pick(self.answers), pick(self.title))

    def concat(self, other: QAExamples) -> QAExamples:
        return QAExamples(
            self.ids + other.ids,
            self.question + other.question,
            self.context + other.context,
            self.answers + other.answers,
            self.title + other.title,
        )

    def answer_texts(self, i: int) -> list[str]:
        return [text for text, _ in self.answers[i]]

    @functools.cached_property
    def fingerprint(self) -> str:
        """A content hash of every column, order included."""
        h = hashlib.sha256()
        for row in zip(self.ids, self.question, self.context, self.answers, self.title):
            h.update(json.dumps(row, ensure_ascii=False).encode())
            h.update(b"\x1e")
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class Article:
    title: str
    #: (question id, question, context, answers), in file order.
    rows: tuple[tuple[str, str, str, tuple[Answer, ...]], ...]


def _field(node, key: str, kind: type, where: str, path: Path):
    if not isinstance(node, dict) or key not in node:
        raise DataError(f"{path}: {where}: missing field {key!r}")
    value = node[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"{path}: {where}.{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def read_squad(path: Path) -> list[Article]:
    """The articles of a SQuAD v1.1 JSON file, checked (see the module docstring)."""
    try:
        tree = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None
    data = _field(tree, "data", list, "top level", path)
    articles, seen = [], {}
    for a, article in enumerate(data):
        where_a = f"data[{a}]"
        title = _field(article, "title", str, where_a, path)
        rows = []
        for p, paragraph in enumerate(_field(article, "paragraphs", list, where_a, path)):
            where_p = f"{where_a}.paragraphs[{p}]"
            context = _field(paragraph, "context", str, where_p, path)
            if not context.strip():
                raise DataError(f"{path}: {where_p}.context: the context is empty")
            for q, qa in enumerate(_field(paragraph, "qas", list, where_p, path)):
                where_q = f"{where_p}.qas[{q}]"
                qid = _field(qa, "id", str, where_q, path)
                where_q = f"{where_q} (id {qid!r})"
                question = _field(qa, "question", str, where_q, path)
                if not question.strip():
                    raise DataError(f"{path}: {where_q}.question: the question is empty")
                if qid in seen:
                    raise DataError(f"{path}: {where_q}: question id {qid!r} is used twice (also at {seen[qid]})")
                seen[qid] = where_q
                answers = []
                raw_answers = _field(qa, "answers", list, where_q, path)
                if not raw_answers:
                    raise DataError(f"{path}: {where_q}.answers: no answer (SQuAD v1.1 questions have at least one)")
                for n, answer in enumerate(raw_answers):
                    where_n = f"{where_q}.answers[{n}]"
                    text = _field(answer, "text", str, where_n, path)
                    start = _field(answer, "answer_start", int, where_n, path)
                    if not text.strip():
                        raise DataError(f"{path}: {where_n}.text: the answer is empty")
                    if start < 0 or context[start : start + len(text)] != text:
                        found = context[max(start, 0) : max(start, 0) + len(text)]
                        raise DataError(
                            f"{path}: {where_n}: answer_start {start} does not point at the answer text {text!r} "
                            f"(the context there reads {found!r})"
                        )
                    answers.append((text, start))
                rows.append((qid, question, context, tuple(answers)))
        articles.append(Article(title, tuple(rows)))
    return articles


def to_examples(articles: Sequence[Article]) -> QAExamples:
    rows = [(r, a.title) for a in articles for r in a.rows]
    return QAExamples(
        ids=tuple(r[0] for r, _ in rows),
        question=tuple(r[1] for r, _ in rows),
        context=tuple(r[2] for r, _ in rows),
        answers=tuple(r[3] for r, _ in rows),
        title=tuple(t for _, t in rows),
    )


def split_by_article(articles: Sequence[Article], eval_fraction: float) -> tuple[list[Article], list[Article]]:
    """(train, eval) articles: the articles ordered by the SHA-256 of their title (a fixed order that is
    no property of the data), the first ``round(n * eval_fraction)`` (at least one) for evaluation. Whole
    articles go one way or the other, so no training question shares a paragraph with an evaluation one."""
    order = sorted(articles, key=lambda a: hashlib.sha256(a.title.encode()).hexdigest())
    n_eval = min(max(1, round(len(order) * eval_fraction)), len(order) - 1)
    eval_titles = {a.title for a in order[:n_eval]}
    return [a for a in articles if a.title not in eval_titles], [a for a in articles if a.title in eval_titles]
