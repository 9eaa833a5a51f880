"""Running a spec's analyses over what the store holds: which runs each covers, whether its cached
results are still current, computing it, and writing its result tables.

An analysis's results are cached by its inputs: the plugin's version, its options, and for every run
it covers the run's status, when it finished and when it was last evaluated (plus the inputs of the
analyses listed before it, which it may read). Anything else changes nothing, so ``analyze`` and
``report`` are cheap to repeat.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from specrun.errors import AnalysisError, PluginError, SpecrunError, did_you_mean
from specrun.plugins.api import AnalysisContext, AnalysisPlugin, ResultTable
from specrun.plugins.registry import Registry, is_legacy_analysis, module_version
from specrun.store import analyses as store_analyses
from specrun.store.db import Store

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True)
class AnalysisEntry:
    """One entry of a spec's ``analyses``: its id (the plugin's name unless the spec gives one), the
    plugin and its validated options."""

    id: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class AnalysisOutcome:
    entry: AnalysisEntry
    status: str  # computed | cached | failed
    error: str | None = None
    seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    runs: int = 0
    left_out: int = 0


def select(entries: list[AnalysisEntry], only: list[str] | None, registry: Registry) -> list[AnalysisEntry]:
    """The entries ``--only`` names (by id or plugin name); a registered analysis the spec does not
    declare runs with its default options."""
    if not only:
        return entries
    chosen = []
    for wanted in only:
        matches = [e for e in entries if wanted in (e.id, e.name)]
        if not matches:
            if wanted not in registry.names("analysis"):
                declared = [e.id for e in entries]
                known = sorted(set(declared) | set(registry.names("analysis")))
                raise PluginError(
                    f"--only: no analysis {wanted!r}{did_you_mean(wanted, known)}; the spec declares: "
                    f"{', '.join(declared) or 'none'}; installed: {', '.join(registry.names('analysis'))}"
                )
            plugin = registry.get("analysis", wanted)
            matches = [AnalysisEntry(wanted, wanted, plugin.Options().model_dump(mode="json"))]
        chosen += [m for m in matches if m not in chosen]
    return chosen


def inputs_sha256(plugin: AnalysisPlugin, entry: AnalysisEntry, stamps: list[tuple], earlier: list[str]) -> str:
    blob = json.dumps(
        {
            "plugin": entry.name,
            "version": f"{module_version(plugin)}/{plugin.version}",
            "options": entry.options,
            "runs": stamps,
            "earlier": earlier,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def run_analyses(
    store: Store,
    registry: Registry,
    experiment: str,
    entries: list[AnalysisEntry],
    force: bool = False,
    on_done=None,
    declared: list[AnalysisEntry] | None = None,
) -> list[AnalysisOutcome]:
    """Compute each entry in order (cached ones are skipped unless ``force``); one failing entry does
    not stop the others. ``on_done(outcome)`` is called after each.

    ``declared``: all the spec's entries, when ``entries`` is a selection of them (``--only``). An
    entry's inputs include those of the entries declared before it, whether or not they run now, so
    that ``--only X`` and a plain ``analyze`` agree on whether X is current."""
    store_analyses.require_experiment(store, experiment)
    cached = store_analyses.records(store, experiment)
    outcomes, earlier = [], []
    declared = list(declared) if declared else list(entries)
    last = max((i for i, e in enumerate(declared) if e in entries), default=-1)
    sequence = declared[: last + 1] + [e for e in entries if e not in declared]
    for entry in sequence:
        if entry not in entries:  # declared before one that runs: its inputs count for those after it
            earlier.append(_inputs(store, registry, experiment, entry, earlier)[0])
            continue
        outcome, sha = _run_one(store, registry, experiment, entry, cached.get(entry.id), earlier, force)
        earlier.append(sha)
        outcomes.append(outcome)
        if on_done:
            on_done(outcome)
    return outcomes


def _inputs(store, registry, experiment, entry, earlier) -> tuple[str, list, list]:
    """An entry's inputs hash (with those of the entries before it, ``earlier``), its runs and left-out runs."""
    plugin = registry.get("analysis", entry.name)
    runs, left_out = store_analyses.scope(store, experiment, plugin.include_sources)
    stamps = store_analyses.input_stamps(store, [r.run_id for r in runs + left_out])
    stamps += [(r.run_id, r.status) for r in left_out if r.status == "not run"]
    return inputs_sha256(plugin, entry, stamps, earlier), runs, left_out


def _run_one(store, registry, experiment, entry, record, earlier, force) -> tuple[AnalysisOutcome, str]:
    start = time.perf_counter()
    plugin = registry.get("analysis", entry.name)
    sha, runs, left_out = _inputs(store, registry, experiment, entry, earlier)
    counts = {"runs": len(runs), "left_out": len(left_out)}
    tables = list(plugin.tables)
    if (
        record
        and record.status == "completed"
        and record.inputs_sha256 == sha
        and not force
        and store_analyses.tables_current(store, tables)
    ):
        return AnalysisOutcome(entry, "cached", **counts), sha
    try:
        options = plugin.Options.model_validate(entry.options)
        if not runs:
            raise AnalysisError(
                f"experiment {experiment!r} has no completed runs to analyse ({len(left_out)} left out)"
            )
        with store.read() as db:
            result = plugin.run(options, AnalysisContext(db, experiment, runs, left_out, entry.id))
        frames = _frames(plugin, result)
    except Exception as exc:
        seconds = time.perf_counter() - start
        message = str(exc) if isinstance(exc, SpecrunError) else f"{type(exc).__name__}: {exc}"
        stored = message if isinstance(exc, SpecrunError) else f"{message}\n{''.join(traceback.format_exception(exc))}"
        store_analyses.write_failure(
            store,
            store_analyses.new_record(
                experiment,
                entry.id,
                entry.name,
                entry.options,
                [r.run_id for r in runs],
                sha,
                "failed",
                stored,
                tables,
                seconds,
            ),
            tables,
        )
        return AnalysisOutcome(entry, "failed", message, seconds, **counts), sha
    seconds = time.perf_counter() - start
    store_analyses.write_results(
        store,
        store_analyses.new_record(
            experiment,
            entry.id,
            entry.name,
            entry.options,
            [r.run_id for r in runs],
            sha,
            "completed",
            None,
            tables,
            seconds,
        ),
        tables,
        frames,
    )
    return AnalysisOutcome(entry, "computed", None, seconds, {k: v.height for k, v in frames.items()}, **counts), sha


def _frames(plugin: AnalysisPlugin, result: dict[str, Any]) -> dict[str, pl.DataFrame]:
    """The plugin's result as one DataFrame per declared table, checked against the declaration."""
    import polars as pl

    declared: dict[str, ResultTable] = {t.name: t for t in plugin.tables}
    if not isinstance(result, dict):
        raise PluginError(f"analysis {plugin.name!r} returned {type(result).__name__}; expected {{table name: rows}}")
    if is_legacy_analysis(plugin):  # plugin API 0.1: any dict, kept as JSON in the one table it was given
        [table] = plugin.tables
        return {
            table.name: pl.DataFrame(legacy_rows(result), schema={"key": pl.Utf8, "item": pl.Int64, "value": pl.Utf8})
        }
    frames = {}
    for name, rows in result.items():
        if name not in declared:
            raise PluginError(
                f"analysis {plugin.name!r} returned table {name!r}, which it does not declare; declared: {', '.join(declared)}"
            )
        frame = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(list(rows), infer_schema_length=None)
        if frame.height:
            missing = [c for c in declared[name].columns if c not in frame.columns]
            extra = [c for c in frame.columns if c not in declared[name].columns]
            if missing or extra:
                raise PluginError(
                    f"analysis {plugin.name!r}, table {name!r}: "
                    + "; ".join(
                        filter(
                            None, [missing and f"missing columns {missing}", extra and f"undeclared columns {extra}"]
                        )
                    )
                )
        frames[name] = frame
    return frames


def legacy_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """What a plugin API 0.1 analysis returned, as rows of ``LEGACY_RESULT_COLUMNS``: one per item of each
    key's value (a list's items, a DataFrame's rows; a single value is item 0), the item as JSON (non-finite
    numbers as null)."""
    import polars as pl

    rows = []
    for key, value in result.items():
        if isinstance(value, pl.DataFrame):
            value = value.to_dicts()
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        for index, item in enumerate(items):
            rows.append(
                {"key": str(key), "item": index, "value": json.dumps(_plain(item), default=str, allow_nan=False)}
            )
    return rows


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and non-finite floats as None, for JSON."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
