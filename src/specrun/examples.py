"""Labelled text examples: the value that dataset sources produce and transforms map to new values."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Examples:
    """One split: parallel, immutable columns. ``ids`` are stable across runs (provenance keys)."""

    ids: tuple[str, ...]
    text: tuple[str, ...]
    label: tuple[int, ...]
    text_pair: tuple[str, ...] | None = None

    def __post_init__(self):
        n = len(self.ids)
        columns = {"text": self.text, "label": self.label}
        if self.text_pair is not None:
            columns["text_pair"] = self.text_pair
        for name, column in columns.items():
            if len(column) != n:
                raise ValueError(f"column {name!r} has {len(column)} values for {n} ids")

    @classmethod
    def from_columns(
        cls,
        ids: Sequence,
        text: Sequence[str],
        label: Sequence[int],
        text_pair: Sequence[str] | None = None,
    ) -> Examples:
        return cls(
            ids=tuple(str(i) for i in ids),
            text=tuple(text),
            label=tuple(int(x) for x in label),
            text_pair=None if text_pair is None else tuple(text_pair),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, indices: Sequence[int]) -> Examples:
        """The examples at ``indices``, in that order (repeats allowed)."""
        pick = lambda col: tuple(col[i] for i in indices)  # noqa: E731
        return Examples(
            ids=pick(self.ids),
            text=pick(self.text),
            label=pick(self.label),
            text_pair=None if self.text_pair is None else pick(self.text_pair),
        )

    def replace(self, **columns) -> Examples:
        """A copy with some columns swapped for new ones of the same length."""
        values = {
            "ids": self.ids,
            "text": self.text,
            "label": self.label,
            "text_pair": self.text_pair,
        }
        for name, column in columns.items():
            if name not in values:
                raise TypeError(f"unknown column {name!r}")
            values[name] = None if column is None else tuple(column)
        return Examples(**values)

    def concat(self, other: Examples) -> Examples:
        """These examples followed by ``other``'s (both with or both without ``text_pair``)."""
        if (self.text_pair is None) != (other.text_pair is None):
            raise ValueError("cannot concatenate examples with and without text_pair")
        return Examples(
            ids=self.ids + other.ids,
            text=self.text + other.text,
            label=self.label + other.label,
            text_pair=None if self.text_pair is None else self.text_pair + other.text_pair,
        )

    def indices_by_label(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i, y in enumerate(self.label):
            out.setdefault(y, []).append(i)
        return out

    @functools.cached_property
    def fingerprint(self) -> str:
        """A content hash of every column, order included."""
        h = hashlib.sha256()
        pairs = self.text_pair if self.text_pair is not None else ("",) * len(self)
        for i, t, p, y in zip(self.ids, self.text, pairs, self.label):
            h.update(f"{i}\x1f{t}\x1f{p}\x1f{y}\x1e".encode())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class Dataset:
    """A named dataset: its label names (index = label id) and its labelled splits (``Examples``, or
    another task's examples such as ``QAExamples``); ``description`` says where the splits come from
    when that is more than the source's name (recorded on each run, ``runs.environment.data``)."""

    name: str
    label_names: tuple[str, ...]
    splits: Mapping[str, Examples] = field(default_factory=dict)
    description: str = ""

    @property
    def num_labels(self) -> int:
        return len(self.label_names)
