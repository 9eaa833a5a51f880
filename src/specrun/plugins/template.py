"""``specrun new-plugin KIND NAME``: a plugin package to start from, whose tests pass as written."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from specrun.errors import UsageError
from specrun.plugins.api import table_prefix
from specrun.plugins.registry import HOOK_FOR_KIND, NAME_PATTERN
from specrun.version import __version__

#: What each kind's template does, for the package's description.
DESCRIPTIONS = {
    "method": "trains the classifier head and the top encoder layers; the rest stays frozen",
    "dataset": "reads a folder of <split>.csv files with text and label columns",
    "transform": "drops random words from every text, anew for each seed",
    "analysis": "mean and range of a metric per configuration, over seeds",
    "model_source": "loads models kept in a folder by a short name",
    "task": "sequence classification trained with a label-smoothed loss",
}
#: How a spec uses each kind, for the package's README.
USAGE = {
    "method": '[method]\nname = "__NAME__"\nlayers = 2',
    "dataset": '[data]\ndataset = "__NAME__"\n[data.options]\nfolder = "data/my-task"',
    "transform": '[data]\ndataset = "glue/sst2"\ntransforms = [{ name = "__NAME__", rate = 0.1 }]',
    "analysis": '[[analyses]]\nname = "__NAME__"\nmetric = "f1"',
    "model_source": '[model]\nname = "__NAME__:my-bert"   # $__ENV__/my-bert',
    "task": '[task]\nname = "__NAME__"\nsmoothing = 0.1',
}


@dataclass
class Written:
    """The package ``write_package`` wrote."""

    folder: Path
    module: str
    files: list[Path]


def write_package(kind: str, name: str, folder: Path | None = None) -> Written:
    """Write a plugin package for ``kind`` called ``name`` into ``folder`` (default ``./specrun-<name>``):
    pyproject.toml with the ``specrun`` entry point, README.md, ``src/<module>/plugin.py`` and
    ``tests/test_plugin.py``. A UsageError for a bad kind or name, or a folder that is not empty."""
    if kind not in HOOK_FOR_KIND:
        raise UsageError(f"no plugin kind {kind!r}: use one of {', '.join(HOOK_FOR_KIND)}")
    if not NAME_PATTERN.match(name):
        raise UsageError(f"plugin name {name!r}: use lower-case letters, digits and _ . / - (starting with a letter)")
    words = [w for w in re.split(r"[^a-z0-9]+", name) if w]
    module = "specrun_" + "_".join(words)
    dist = "specrun-" + "-".join(words)
    folder = Path(folder) if folder is not None else Path(dist)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"{folder} already exists and is not an empty folder: give another with --output")
    fills = {
        "__NAME__": name,
        "__MODULE__": module,
        "__DIST__": dist,
        "__CLASS__": "".join(w.capitalize() for w in words),
        "__TABLE__": table_prefix(name),
        "__ENV__": module.upper() + "_DIR",
        "__KIND_TEXT__": kind.replace("_", " "),
        "__DESCRIPTION__": DESCRIPTIONS[kind],
        "__SPECRUN__": ".".join(__version__.split(".")[:2]),
    }
    fills["__SPEC_USAGE__"] = _fill(USAGE[kind], fills)
    files = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        f"src/{module}/__init__.py": None,
        f"src/{module}/plugin.py": f"{kind}.py.tmpl",
        "tests/test_plugin.py": f"test_{kind}.py.tmpl",
    }
    written = []
    for relative, template in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        text = (
            _fill(_template(template), fills)
            if template
            else f'"""{dist}: a specrun {fills["__KIND_TEXT__"]} plugin."""\n'
        )
        path.write_text(text)
        written.append(path)
    return Written(folder, module, written)


def _template(name: str) -> str:
    return resources.files("specrun.plugins").joinpath("templates", name).read_text()


def _fill(text: str, fills: dict[str, str]) -> str:
    for placeholder, value in fills.items():
        text = text.replace(placeholder, value)
    return text
