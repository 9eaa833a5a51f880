"""What analyses read and write, as data: a stored run (``RunInfo``) and a result table (``ResultTable``).

The store fills and reads them, the analysis engine and the plugins use them: so they live below all
three. Plugin authors import them from ``specrun.plugins.api``, which re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunInfo:
    """One run an analysis reads, as the store holds it."""

    run_id: str
    experiment: str
    status: str
    seed: int
    method: str
    config: dict[str, Any]
    #: The run's sweep values, e.g. ``{"method.rank": 8}``.
    sweep: dict[str, Any]
    #: The primary evaluation set (the dataset's evaluation split).
    eval_set: str
    #: The configuration (sweep point) without the seed, e.g. ``lora rank=8``: runs that differ only in
    #: their seed share it. Analyses group by it.
    config_label: str
    #: ``run`` for the experiment's own runs; ``source`` for a run they start from (``model.init_from``).
    role: str = "run"
    error: str | None = None
    #: The saved weights file, if any (``adapter_model.safetensors``, ``model.safetensors`` or, for runs saved
    #: before those formats, ``trained.safetensors``); ``specrun.runner.artifacts.read_run(weights)`` reads
    #: any of them, with the trained tensors by parameter name.
    weights: str | None = None
    #: What tells its configuration apart from the experiment's others: {dimension: readable value}, e.g.
    #: ``{"placement": "attn-q", "init_from": "from source"}`` (a stage run: ``{"stage": "source", ...}``);
    #: ``config_label`` is these joined. Keys swept together make one dimension (``specrun.spec.labels``).
    factors: dict[str, str] = field(default_factory=dict)

    def value(self, dotted: str) -> Any:
        """The config value at a dotted key (``method.rank``, ``data.transforms.0.k``); KeyError if absent."""
        return config_value(self.config, dotted)


def config_value(config: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key in a run config, through tables and list indices; KeyError if absent."""
    node: Any = config
    for part in dotted.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(dotted)
    return node


@dataclass(frozen=True)
class ResultTable:
    """A table an analysis writes into the store.

    ``name`` is the analysis's name (``/ . -`` written as ``_``) or that name followed by ``_`` and a
    suffix. specrun adds two leading columns, ``experiment`` and ``analysis`` (the entry's id), and keeps
    one set of rows per experiment and analysis: a recomputation replaces them. ``columns`` maps each
    column to its DuckDB type (``VARCHAR``, ``DOUBLE``, ``INTEGER``, ``BOOLEAN``, ``JSON``...).
    """

    name: str
    columns: dict[str, str]
    description: str = ""
