"""Stages: runs that a spec's runs start from, declared in the spec itself.

```toml
[model]
init_from = "stage:source"          # each run starts from its own source run

[stages.source]                     # the source: this spec, with these tables merged over it
data = { dataset = "glue/sst2", max_train_examples = 2000 }
method = { train = "all" }
```

A stage is the spec's own tree (without its sweep, stages, analyses, report and constraints, and
without ``model.init_from``) with the stage's tables deep-merged over it, resolved for each run that
refers to it: with that run's sweep values and seed, so a sweep over ``method.placement`` trains one
source per placement. A stage that sets ``experiment.seeds`` trains with its first seed for every run
(one source shared across seeds). Stage runs are content-hashed like any run: a stored one is not
retrained, and runs that share a source train it once. ``stage:NAME`` also works where a transform
takes a ``teacher``.
"""

from __future__ import annotations

import copy
from typing import Any

from specrun.spec.compose import deep_merge

PREFIX = "stage:"
#: Spec keys a stage does not inherit from the spec that declares it.
NOT_INHERITED = ("stages", "sweep", "analyses", "report", "constraints", "search")


def transform_entries(config: dict) -> list[tuple[str, dict]]:
    """Every transform entry of a run's config with its dotted location: ``data.transforms.<i>`` and
    ``data.eval_sets.<name>.transforms.<i>``."""
    data = config["data"]
    entries = [(f"data.transforms.{i}", t) for i, t in enumerate(data["transforms"])]
    for name, es in data["eval_sets"].items():
        entries += [(f"data.eval_sets.{name}.transforms.{i}", t) for i, t in enumerate(es["transforms"])]
    return entries


def dependency_refs(config: dict) -> list[tuple[dict, str, str, str]]:
    """Every place a run's config names another run it needs first, as (the table holding it, its key,
    what it is, its dotted key): ``model.init_from`` (transfer) and any transform's ``teacher``."""
    refs = [(config["model"], "init_from", "init_from", "model.init_from")]
    refs += [(entry, "teacher", "teacher", f"{where}.teacher") for where, entry in transform_entries(config)]
    return refs


def stage_name(ref: Any) -> str | None:
    """The stage a reference names (``"stage:source"`` -> ``"source"``), or None."""
    return ref[len(PREFIX) :] if isinstance(ref, str) and ref.startswith(PREFIX) else None


def stage_tree(tree: dict, name: str) -> dict:
    """The spec tree of stage ``name``: ``tree`` without what stages do not inherit, the stage's own
    tables merged over it, and the experiment named ``<experiment>.<stage>``."""
    base = {key: copy.deepcopy(value) for key, value in tree.items() if key not in NOT_INHERITED}
    if isinstance(base.get("model"), dict):
        base["model"].pop("init_from", None)
        base["model"].pop("init_partial", None)
    own = tree["stages"][name]
    merged = deep_merge(base, own)
    experiment = merged.get("experiment")
    names_itself = isinstance(own.get("experiment"), dict) and "name" in own["experiment"]
    if isinstance(experiment, dict) and isinstance(experiment.get("name"), str) and not names_itself:
        experiment["name"] = f"{experiment['name']}.{name}"
    return merged


def fixed_seed(tree: dict, name: str) -> int | None:
    """The seed a stage trains with for every run, when its own table sets ``experiment.seeds``."""
    own = tree["stages"][name].get("experiment")
    seeds = own.get("seeds") if isinstance(own, dict) else None
    return seeds[0] if isinstance(seeds, list) and seeds and isinstance(seeds[0], int) else None


def sets_key(tree: dict, name: str, loc: tuple) -> bool:
    """Whether stage ``name``'s own table sets the key at ``loc`` (or a table above it)."""
    node: Any = tree["stages"][name]
    for part in loc:
        if isinstance(node, dict) and str(part) in node:
            node = node[str(part)]
            if not isinstance(node, dict | list):
                return True
        elif isinstance(node, list) and str(part).isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True
