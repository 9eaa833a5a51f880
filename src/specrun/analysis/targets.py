"""What ``specrun analyze`` and ``specrun report`` take: a spec file or an experiment's name, resolved
into the experiment, the analyses its spec declares, and the spec's ``[report]`` settings.

A spec file is read as it is now (analyses added after the runs trained count); an experiment name
uses the spec its latest apply recorded. Either way the runs analysed are the experiment's current
runs (``current_runs``): analyses never train.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from specrun.analysis.engine import AnalysisEntry
from specrun.errors import SpecError, StoreError
from specrun.plugins.registry import Registry
from specrun.spec.load import LoadedSpec, load_spec, load_spec_text, load_tree
from specrun.spec.schema import ReportSpec
from specrun.store import analyses as store_analyses
from specrun.store.db import Store

#: Spec sections that do not change which runs an experiment has.
_NOT_RUNS = ("analyses", "report")


@dataclass
class Target:
    experiment: str
    entries: list[AnalysisEntry]
    spec_path: str
    spec_text: str
    description: str = ""
    report: ReportSpec | None = None
    applied_at: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def sections(self) -> list[str] | None:
        """The analysis ids its report shows, in order (None: all)."""
        return self.report.sections if self.report else None


def looks_like_spec(text: str) -> bool:
    return text.endswith(".toml") or Path(text).is_file()


def resolve(
    text: str, store: Store, registry: Registry, overrides: list[str] = (), profile: str | None = None
) -> Target:
    """The experiment ``text`` names (a spec file, with ``profile`` applied, or an experiment in the
    store) with its analyses."""
    store_analyses.check_readable(store)
    if looks_like_spec(text):
        return from_spec(load_spec(text, overrides, registry, profile), store)
    if overrides or profile:
        raise StoreError(
            "--set and --profile apply to a spec file, not to an experiment name (it is analysed as it was applied)"
        )
    applied = store_analyses.require_experiment(store, text)
    try:
        loaded = _recorded_spec(applied, registry)
    except SpecError as exc:
        raise StoreError(f"the spec that experiment {text!r} was applied with no longer validates:\n{exc}") from None
    return _target(loaded, applied, [])


def _recorded_spec(applied: store_analyses.ApplyInfo, registry: Registry) -> LoadedSpec:
    """The spec an apply recorded: its effective tree (m008 on), else its text, else its file."""
    if applied.spec_tree is not None:
        return load_tree(
            json.loads(applied.spec_tree), applied.spec_text or "", applied.spec_path, registry, applied.profile
        )
    spec_text = applied.spec_text
    if spec_text is None:  # applied before the store kept spec texts
        path = Path(applied.spec_path)
        if not path.is_file():
            raise StoreError(
                f"the latest apply of {applied.experiment!r} recorded no spec and {applied.spec_path} is gone: pass the spec file instead"
            )
        spec_text = path.read_text(encoding="utf-8")
    return load_spec_text(spec_text, applied.spec_path, (), registry)


def from_spec(loaded: LoadedSpec, store: Store) -> Target:
    """The target of a loaded spec (as read now), with a note when its runs differ from its latest apply's."""
    applied = store_analyses.require_experiment(store, loaded.experiment)
    return _target(loaded, applied, _drift(loaded, applied))


def _target(loaded: LoadedSpec, applied: store_analyses.ApplyInfo, notes: list[str]) -> Target:
    return Target(
        experiment=loaded.experiment,
        entries=[AnalysisEntry(e["id"], e["name"], e["options"]) for e in loaded.analyses],
        spec_path=str(loaded.path),
        spec_text=loaded.text,
        description=loaded.spec.experiment.description,
        report=loaded.spec.report,
        applied_at=f"{applied.started_at:%Y-%m-%d %H:%M} UTC",
        notes=notes,
    )


def _drift(loaded: LoadedSpec, applied: store_analyses.ApplyInfo) -> list[str]:
    """A note when the spec now defines other runs than its latest apply did (edited, not re-applied)."""
    if applied.spec_tree is not None:
        then = json.loads(applied.spec_tree)
    elif applied.spec_text is not None:
        try:
            then = tomllib.loads(applied.spec_text)
        except tomllib.TOMLDecodeError:
            return []
    else:
        return []
    now = dict(loaded.tree)
    for key in _NOT_RUNS:
        now.pop(key, None)
        then.pop(key, None)
    for tree in (now, then):
        for key in ("extends", "profiles"):
            tree.pop(key, None)
    if now == then:
        return []
    return [
        f"{applied.spec_path}'s runs changed after its latest apply ({applied.started_at:%Y-%m-%d %H:%M} UTC): the analyses cover "
        "the runs that apply planned; run `specrun apply` to train the new ones."
    ]
