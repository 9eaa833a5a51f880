"""Errors a user can cause. The CLI turns each into one clean message and exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SpecrunError(Exception):
    """Base of every error caused by user input (spec, data, CLI, plugin, store)."""

    exit_code = 2


class SpecError(SpecrunError):
    """A spec that cannot be read or does not validate.

    ``problems`` is a list of ``(dotted_key, line, message)``, or ``(dotted_key, line, message, file)``
    for a problem in another file than ``path`` (a base the spec extends); ``line`` may be None.
    """

    def __init__(self, path: str, problems: list[tuple]):
        self.path = path
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = []
        for key, line, message, *file in self.problems:
            path = file[0] if file and file[0] else self.path
            where = f"{path}:{line}" if line else str(path)
            lines.append(f"{where}: {key}: {message}" if key else f"{where}: {message}")
        return "\n".join(lines)


class KeyedError(SpecrunError):
    """An error about a valid spec; ``key``, when known, is the dotted spec key it comes from
    (e.g. ``data.transforms.0``), and prefixes the message."""

    def __init__(self, message: str, key: str | None = None):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)
        self.message = message


class DataError(KeyedError):
    """A dataset that is missing, malformed, or does not fit what the spec asks of it."""


class ConfigError(KeyedError):
    """A spec that validates but cannot run as configured, e.g. method options that do not fit the model."""


class PluginError(SpecrunError):
    """A plugin that is unknown, duplicated, malformed or failed to load."""


class StoreError(SpecrunError):
    """A store that cannot be opened, is locked for too long, or lacks what was asked for."""


class UsageError(SpecrunError):
    """A command-line usage mistake not caught by the argument parser."""


class TrainingError(SpecrunError):
    """Training that cannot give an honest result, e.g. a loss that became NaN or infinite. Recorded as a failed run."""


class MethodUnavailable(SpecrunError):
    """A method that cannot run on this machine (missing hardware or library). Recorded as a failed run."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' suffix for the closest choice, or ''."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


class AnalysisError(SpecrunError):
    """An analysis that cannot answer its question from the runs the store holds (e.g. a metric no run
    recorded). Reported by the analysis's name; the other analyses and the report still complete."""


class SpecrunDeprecationWarning(DeprecationWarning):
    """A form specrun still accepts but will stop accepting (a plugin written against an older plugin API,
    an old call): the message names the form, what to write instead and the release that removes it.
    specrun shows it once per plugin as a ``warning:`` line; ``specrun.testing.registry_with`` issues it
    as a Python warning in the plugin's own tests. Policy: docs/plugins.md#the-plugin-api-and-its-versions."""
