"""Built-in ``augment`` transform: EDA-style random swap, deletion, insertion and synonym replacement.

Synonyms come from a file you supply (no network at run time): TSV, one word per line followed by its
synonyms (``word<TAB>syn1<TAB>syn2``), or JSON (``{"word": ["syn1", "syn2"]}``). A relative path is
relative to the folder of the spec that uses it. The parsed table's hash joins the run's identity.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from specrun.errors import DataError
from specrun.examples import Examples
from specrun.hookspecs import hookimpl
from specrun.plugins.api import TransformContext, TransformPlugin
from specrun.plugins.transforms.common import CopyOptions, fail, rewrite_examples

Op = Literal["swap", "delete", "insert", "synonym"]
NEEDS_SYNONYMS = ("insert", "synonym")
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "at",
        "by",
        "for",
        "with",
        "about",
        "to",
        "from",
        "in",
        "on",
        "into",
        "over",
        "under",
        "again",
        "then",
        "than",
        "so",
        "i",
        "me",
        "my",
        "we",
        "our",
        "you",
        "your",
        "he",
        "him",
        "his",
        "she",
        "her",
        "it",
        "its",
        "they",
        "them",
        "their",
        "this",
        "that",
        "these",
        "those",
        "is",
        "am",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "have",
        "has",
        "had",
        "do",
        "does",
        "did",
        "not",
        "no",
        "nor",
        "only",
        "own",
        "same",
        "too",
        "very",
        "s",
        "t",
        "can",
        "will",
        "just",
        "don",
        "should",
        "now",
    ]
)
_STRIP = "\"'.,!?;:()[]{}"


class AugmentOptions(CopyOptions):
    ops: list[Op] | None = Field(
        None,
        description="operations to draw from, one per copy, uniformly: swap, delete, insert, synonym "
        "(default: all four with a synonyms file, else swap and delete)",
    )
    alpha: float = Field(
        0.1, gt=0, le=1, description="share of a text's words each operation changes (EDA's alpha; at least one word)"
    )
    synonyms: str | None = Field(
        None,
        description="TSV (word<TAB>synonym...) or JSON ({word: [synonyms]}) file; absolute, or relative to the spec's folder",
    )

    @model_validator(mode="after")
    def _synonyms_for_ops(self):
        if self.ops is not None:
            if not self.ops:
                raise ValueError("ops must name at least one operation")
            if len(set(self.ops)) != len(self.ops):
                raise ValueError(f"ops lists an operation twice: {self.ops}")
            missing = [op for op in self.ops if op in NEEDS_SYNONYMS]
            if missing and self.synonyms is None:
                raise ValueError(f"ops {missing} need a synonyms file (option synonyms)")
        return self

    def resolved_ops(self) -> list[str]:
        if self.ops is not None:
            return list(self.ops)
        return ["swap", "delete", "insert", "synonym"] if self.synonyms else ["swap", "delete"]


@functools.lru_cache(maxsize=8)
def _read_synonyms(path: str, mtime: float) -> dict[str, tuple[str, ...]]:
    del mtime  # part of the cache key only: an edited file is read again
    text = Path(path).read_text(encoding="utf-8")
    if path.lower().endswith(".json"):
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("expected a JSON object mapping each word to a list of synonyms")
        pairs = {word: [syns] if isinstance(syns, str) else syns for word, syns in raw.items()}
    else:
        pairs = {}
        for line in text.splitlines():
            fields = [f.strip() for f in line.split("\t")]
            if fields[0] and not fields[0].startswith("#"):
                pairs.setdefault(fields[0], []).extend(f for f in fields[1:] if f)
    table: dict[str, tuple[str, ...]] = {}
    for word, syns in pairs.items():
        if not isinstance(syns, list) or not all(isinstance(s, str) for s in syns):
            raise ValueError(f"synonyms of {word!r} must be a list of strings")
        found = tuple(dict.fromkeys(s for s in syns if s and s.lower() != word.lower()))
        if found:
            table[word.lower()] = found
    return table


def synonyms_path(path: str, spec_dir: str | None) -> Path:
    """Where the ``synonyms`` option points: absolute, or relative to the spec's folder."""
    given = Path(path).expanduser()
    return (given if given.is_absolute() or spec_dir is None else Path(spec_dir) / given).resolve()


def load_synonyms(path: str, spec_dir: str | None = None) -> dict[str, tuple[str, ...]]:
    """The synonyms file at ``path`` as {lowercased word: synonyms}; DataError if it is missing or malformed."""
    resolved = synonyms_path(path, spec_dir)
    try:
        return _read_synonyms(str(resolved), resolved.stat().st_mtime)
    except FileNotFoundError:
        where = f"the spec's folder, {spec_dir}" if spec_dir else f"the working directory, {Path.cwd()}"
        raise DataError(
            f"transform 'augment': synonyms file not found: {resolved} (synonyms={path!r}; relative paths are relative to {where})"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"transform 'augment': cannot read synonyms file {resolved}: {exc}") from None


# --- the operations ------------------------------------------------------------------------------


def _key(word: str) -> str:
    return word.strip(_STRIP).lower()


def _with_case_of(word: str, synonym: str) -> str:
    core = word.strip(_STRIP)
    new = synonym.capitalize() if core[:1].isupper() else synonym
    return word.replace(core, new, 1) if core else synonym


def random_swap(words: list[str], n: int, rng: random.Random, synonyms: dict) -> list[str]:
    out = list(words)
    if len(out) > 1:
        for _ in range(n):
            i, j = rng.sample(range(len(out)), 2)
            out[i], out[j] = out[j], out[i]
    return out


def random_delete(words: list[str], n: int, rng: random.Random, synonyms: dict) -> list[str]:
    if len(words) <= 1:
        return list(words)
    gone = set(rng.sample(range(len(words)), min(n, len(words) - 1)))
    return [w for i, w in enumerate(words) if i not in gone]


def random_insert(words: list[str], n: int, rng: random.Random, synonyms: dict) -> list[str]:
    out = list(words)
    having = [w for w in words if _key(w) in synonyms and _key(w) not in STOP_WORDS]
    for _ in range(n if having else 0):
        out.insert(rng.randrange(len(out) + 1), rng.choice(synonyms[_key(rng.choice(having))]))
    return out


def synonym_replace(words: list[str], n: int, rng: random.Random, synonyms: dict) -> list[str]:
    out = list(words)
    having = [i for i, w in enumerate(words) if _key(w) in synonyms and _key(w) not in STOP_WORDS]
    for i in rng.sample(having, min(n, len(having))):
        out[i] = _with_case_of(words[i], rng.choice(synonyms[_key(words[i])]))
    return out


OPERATIONS = {"swap": random_swap, "delete": random_delete, "insert": random_insert, "synonym": synonym_replace}


def eda(text: str, ops: list[str], alpha: float, synonyms: dict, rng: random.Random) -> str:
    """One EDA rewrite of ``text``: one operation drawn from ``ops``, changing about ``alpha`` of its words."""
    words = text.split()
    if not words:
        return text
    n = max(1, round(alpha * len(words)))
    out = OPERATIONS[rng.choice(ops)](words, n, rng, synonyms)
    return text if out == words else " ".join(out)


class Augment(TransformPlugin):
    name = "augment"
    description = (
        "EDA-style augmentation: random swap / deletion / insertion and synonym replacement from your synonyms file"
    )
    Options = AugmentOptions
    applies_to = "train"

    def apply(self, examples: Examples, options: AugmentOptions, ctx: TransformContext) -> Examples:
        synonyms = load_synonyms(options.synonyms, ctx.spec_dir) if options.synonyms else {}
        if options.synonyms and not synonyms:
            raise fail(self.name, ctx, f"synonyms file {options.synonyms!r} defines no synonyms")
        ops = options.resolved_ops()
        return rewrite_examples(
            examples, options, ctx, self.name, lambda text, rng: eda(text, ops, options.alpha, synonyms, rng)
        )

    def inputs(self, options: AugmentOptions, spec_dir: str | None) -> dict[str, str]:
        if not options.synonyms:
            return {}
        table = load_synonyms(options.synonyms, spec_dir)  # the parsed table: comments and order don't matter
        blob = json.dumps(sorted(table.items()), ensure_ascii=False)
        return {"synonyms": hashlib.sha256(blob.encode()).hexdigest()[:16]}


@hookimpl
def register_transforms(register):
    register(Augment())
