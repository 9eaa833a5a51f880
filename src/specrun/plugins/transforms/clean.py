"""Built-in ``clean`` transform: strip HTML, normalise unicode punctuation and whitespace, optionally lowercase."""

from __future__ import annotations

import html
import re
import unicodedata

from pydantic import Field

from specrun.examples import Examples
from specrun.hookspecs import hookimpl
from specrun.plugins.api import PluginOptions, TransformContext, TransformPlugin

_TAG = re.compile(r"<!--.*?-->|<[/!?]?[A-Za-z][^<>]{0,2000}>", re.DOTALL)  # not "a < b > c"
_BREAK_TAG = re.compile(r"<\s*(br|/?p|/?div|/?li|/?tr|/?h[1-6])\b[^<>]*>", re.IGNORECASE)
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:%)\]}])")
_SPACES = re.compile(r"\s+")
PUNCTUATION = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u00b4": "'",
        "`": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u2212": "-",
        "\u2026": "...",
        "\u00a0": " ",
        "\u200b": "",
        "\ufeff": "",
    }
)


class CleanOptions(PluginOptions):
    strip_html: bool = Field(
        True, description="remove HTML tags (line-breaking tags become spaces) and unescape entities (&amp; -> &)"
    )
    normalize_unicode: bool = Field(True, description="unicode NFKC normal form (e.g. full-width letters, ligatures)")
    normalize_punctuation: bool = Field(True, description="curly quotes -> straight, dashes -> '-', '…' -> '...'")
    space_before_punctuation: bool = Field(True, description="remove spaces before . , ! ? ; : % and closing brackets")
    normalize_whitespace: bool = Field(True, description="collapse runs of whitespace to one space and trim")
    lowercase: bool = Field(False, description="lowercase every text")


def clean_text(text: str, options: CleanOptions) -> str:
    if options.strip_html:
        text = html.unescape(_TAG.sub("", _BREAK_TAG.sub(" ", text)))
    if options.normalize_unicode:
        text = unicodedata.normalize("NFKC", text)
    if options.normalize_punctuation:
        text = text.translate(PUNCTUATION)
    if options.space_before_punctuation:
        text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    if options.normalize_whitespace:
        text = _SPACES.sub(" ", text).strip()
    if options.lowercase:
        text = text.lower()
    return text


class Clean(TransformPlugin):
    name = "clean"
    description = "strip HTML tags, normalise unicode, quotes, dashes and whitespace, optionally lowercase (ids kept)"
    Options = CleanOptions
    applies_to = "both"

    def apply(self, examples: Examples, options: CleanOptions, ctx: TransformContext) -> Examples:
        pairs = examples.text_pair
        return examples.replace(
            text=[clean_text(t, options) for t in examples.text],
            text_pair=None if pairs is None else [clean_text(t, options) for t in pairs],
        )


@hookimpl
def register_transforms(register):
    register(Clean())
