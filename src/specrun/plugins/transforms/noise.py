"""Built-in ``noise`` transform: character, word, emoji and keyboard-typo noise, for augmentation or test-time corruption."""

from __future__ import annotations

import random
import re
import string
from typing import Literal

from pydantic import Field, model_validator

from specrun.examples import Examples
from specrun.hookspecs import hookimpl
from specrun.plugins.api import TransformContext, TransformPlugin
from specrun.plugins.transforms.common import CopyOptions, rewrite_examples

CharOp = Literal["substitute", "insert", "delete", "swap"]
WordOp = Literal["delete", "swap", "repeat"]

_ROWS = ["1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm"]
_OFFSETS = [0.0, 0.5, 0.75, 1.25]  # how far each row is shifted right on a real keyboard


def _qwerty_neighbours() -> dict[str, str]:
    """Each key -> the keys physically adjacent to it on a QWERTY keyboard (same row and the rows above/below)."""
    pos = {ch: (r, c + _OFFSETS[r]) for r, row in enumerate(_ROWS) for c, ch in enumerate(row)}
    return {
        ch: "".join(o for o, (r2, x2) in pos.items() if o != ch and abs(r2 - r) <= 1 and abs(x2 - x) <= 1.0)
        for ch, (r, x) in pos.items()
    }


QWERTY = _qwerty_neighbours()
EMOJIS = [
    "😀",
    "😂",
    "😍",
    "😊",
    "😢",
    "😡",
    "👍",
    "👎",
    "🔥",
    "🎉",
    "💯",
    "🙄",
    "😱",
    "🤔",
    "❤️",
    "✨",
    "😎",
    "🙏",
    "👀",
    "💀",
]
LETTERS = string.ascii_lowercase
_WHITESPACE = re.compile(r"(\s+)")


class NoiseOptions(CopyOptions):
    char_rate: float = Field(
        0.0, ge=0, le=1, description="probability of a character edit, per character or per word (char_unit)"
    )
    char_ops: list[CharOp] = Field(
        ["substitute", "insert", "delete", "swap"],
        min_length=1,
        description="character edits to draw from, uniformly: substitute, insert, delete, swap (adjacent)",
    )
    char_unit: Literal["char", "word"] = Field(
        "char",
        description="char: each non-space character is edited with probability char_rate; "
        "word: each word gets one character edit with probability char_rate",
    )
    word_rate: float = Field(0.0, ge=0, le=1, description="probability of a word-level edit, per word")
    word_ops: list[WordOp] = Field(
        ["delete", "swap", "repeat"],
        min_length=1,
        description="word edits to draw from, uniformly: delete, swap (with the next word), repeat",
    )
    typo_rate: float = Field(
        0.0, ge=0, le=1, description="probability, per letter or digit, of hitting a QWERTY neighbour instead"
    )
    emoji_rate: float = Field(0.0, ge=0, le=1, description="probability, per word, of inserting an emoji after it")

    @model_validator(mode="after")
    def _some_noise(self):
        if not any((self.char_rate, self.word_rate, self.typo_rate, self.emoji_rate)):
            raise ValueError("set at least one of char_rate, word_rate, typo_rate, emoji_rate above 0")
        for name in ("char_ops", "word_ops"):
            ops = getattr(self, name)
            if len(set(ops)) != len(ops):
                raise ValueError(f"{name} lists an operation twice: {ops}")
        return self


# --- the edits -----------------------------------------------------------------------------------


def _other_letter(ch: str, rng: random.Random) -> str:
    """A random letter different from ``ch``, in ``ch``'s case."""
    choice = rng.choice(LETTERS.replace(ch.lower(), "")) if ch.lower() in LETTERS else rng.choice(LETTERS)
    return choice.upper() if ch.isupper() else choice


def _edit(chars: list[str], i: int, op: str, rng: random.Random) -> tuple[list[str], int]:
    """One character edit at ``chars[i]``: (what replaces it, how many characters it consumed)."""
    ch = chars[i]
    if op == "substitute":
        return [_other_letter(ch, rng)], 1
    if op == "insert":
        return [ch, _other_letter(ch, rng)], 1
    if op == "delete":
        return [], 1
    if i + 1 < len(chars) and not chars[i + 1].isspace():  # swap with the next character of the word
        return [chars[i + 1], ch], 2
    return [ch], 1  # swap at a word's end: nothing to swap with


def char_noise(text: str, rate: float, ops: list[str], rng: random.Random) -> str:
    """Edit each non-space character with probability ``rate`` (a swap consumes the next character too)."""
    chars = list(text)
    out: list[str] = []
    i = 0
    while i < len(chars):
        if chars[i].isspace() or rng.random() >= rate:
            out.append(chars[i])
            i += 1
            continue
        edited, used = _edit(chars, i, rng.choice(ops), rng)
        out += edited
        i += used
    return "".join(out)


def char_noise_per_word(text: str, rate: float, ops: list[str], rng: random.Random) -> str:
    """With probability ``rate`` per word, one character edit at a random position of that word."""
    pieces = _WHITESPACE.split(text)  # words at even positions, the whitespace between them at odd ones
    for w in range(0, len(pieces), 2):
        if pieces[w] and rng.random() < rate:
            chars = list(pieces[w])
            k = rng.randrange(len(chars))
            edited, used = _edit(chars, k, rng.choice(ops), rng)
            pieces[w] = "".join(chars[:k] + edited + chars[k + used :])
    return "".join(pieces)


def word_noise(text: str, rate: float, ops: list[str], rng: random.Random) -> str:
    """Delete, swap (with the next word) or repeat each word with probability ``rate``; at least one word stays."""
    words = text.split()
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if rng.random() >= rate:
            out.append(word)
        else:
            op = rng.choice(ops)
            if op == "repeat":
                out += [word, word]
            elif op == "swap" and i + 1 < len(words):
                out += [words[i + 1], word]
                i += 1
            elif op == "swap" or (op == "delete" and not out and i == len(words) - 1):
                out.append(word)  # no next word to swap with / the last word left
        i += 1
    return text if out == words else " ".join(out)


def emoji_noise(text: str, rate: float, rng: random.Random) -> str:
    """Insert a random emoji after each word with probability ``rate``."""
    words = text.split()
    out: list[str] = []
    for word in words:
        out.append(word)
        if rng.random() < rate:
            out.append(rng.choice(EMOJIS))
    return text if len(out) == len(words) else " ".join(out)


def typo_noise(text: str, rate: float, rng: random.Random) -> str:
    """Replace each letter or digit, with probability ``rate``, by a neighbouring QWERTY key (case kept)."""
    out = []
    for ch in text:
        near = QWERTY.get(ch.lower())
        if near and rng.random() < rate:
            hit = rng.choice(near)
            out.append(hit.upper() if ch.isupper() else hit)
        else:
            out.append(ch)
    return "".join(out)


def make_noisy(text: str, options: NoiseOptions, rng: random.Random) -> str:
    """``text`` with the configured noise: word edits, then emojis, then character edits, then typos."""
    noisy = text
    if options.word_rate:
        noisy = word_noise(noisy, options.word_rate, options.word_ops, rng)
    if options.emoji_rate:
        noisy = emoji_noise(noisy, options.emoji_rate, rng)
    if options.char_rate:
        per = char_noise if options.char_unit == "char" else char_noise_per_word
        noisy = per(noisy, options.char_rate, options.char_ops, rng)
    if options.typo_rate:
        noisy = typo_noise(noisy, options.typo_rate, rng)
    return noisy if noisy.strip() or not text.strip() else text  # never erase a text completely


class Noise(TransformPlugin):
    name = "noise"
    description = "character / word / emoji / keyboard-typo noise: augmented copies on train, corruption on eval sets"
    Options = NoiseOptions
    applies_to = "train"

    def apply(self, examples: Examples, options: NoiseOptions, ctx: TransformContext) -> Examples:
        return rewrite_examples(examples, options, ctx, self.name, lambda text, rng: make_noisy(text, options, rng))


@hookimpl
def register_transforms(register):
    register(Noise())
