"""Find the line of a dotted key in TOML source text, for error messages (tomllib keeps no positions)."""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def split_key(key: str) -> list[str]:
    """``a."b.c".d`` -> ``['a', 'b.c', 'd']``."""
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([^.\s]+)', key)
    return [a or b or c for a, b, c in parts]


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Every table header and key in ``text`` mapped to its 1-based line number."""
    found: dict[tuple[str, ...], int] = {}
    table: list[str] = []
    array_counts: dict[tuple[str, ...], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            path = tuple(split_key(header.group(2)))
            if header.group(1) == "[[":
                index = array_counts.get(path, -1) + 1
                array_counts[path] = index
                found.setdefault(path, number)
                table = [*path, str(index)]
            else:
                table = list(path)
            found.setdefault(tuple(table), number)
            continue
        key = _KEY.match(line)
        if key:
            found.setdefault((*table, *split_key(key.group(1))), number)
    return found


def locate(text: str, dotted: tuple[str, ...] | list[str]) -> int | None:
    """The line where ``dotted`` (a path of keys and list indices) is set, or its closest parent."""
    lines = key_lines(text)
    path = tuple(str(p) for p in dotted)
    for cut in range(len(path), 0, -1):
        line = lines.get(path[:cut])
        if line is None:
            continue
        rest = [p for p in path[cut:] if not p.isdigit()]
        if rest:
            # the key sits inside an inline table or array on or after the parent's line
            pattern = re.compile(rf"(^|[{{,\s]){re.escape(rest[-1])}\s*=")
            source = text.splitlines()
            for offset, candidate in enumerate(source[line - 1 : line + 40]):
                if offset and _HEADER.match(candidate):
                    break  # the next table: the key is not set in this one
                if pattern.search(candidate):
                    return line + offset
        return line
    return None
