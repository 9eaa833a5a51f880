"""Building one self-contained HTML report from the store.

A report shows, per experiment: its runs (with their status, and what was left out), one section per
analysis with the figures its plugin defines, and the spec and environment. Every figure is one SQL
query over the store, run here, drawn from its rows and printed under it with its parameters filled
in, so ``specrun sql`` gives back exactly the numbers drawn. Vega's libraries are inlined: the file
opens with no network.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from specrun.analysis.engine import AnalysisEntry
from specrun.analysis.targets import Target
from specrun.errors import UsageError
from specrun.plugins.api import Figure
from specrun.plugins.registry import Registry
from specrun.store import analyses as store_analyses
from specrun.store.db import Store
from specrun.version import __version__

#: Rows a table figure shows; the SQL under it gives them all.
MAX_TABLE_ROWS = 200


#: A chart with more data rows than this is validated on this many (see ``_Renderer.figure``).
VALIDATED_ROWS = 200


def run_table(columns: list[tuple[str, str]], metrics: tuple[str, ...] = ("accuracy", "f1")) -> Figure:
    """The runs table: each swept key (``store.analyses.sweep_columns``) as a column of its own, then the
    headline ``metrics`` (``run_summary`` columns: ``exact_match`` and ``f1`` for extractive QA)."""
    swept = "".join(f'{expression} AS "{name}", ' for name, expression in columns)
    # a sweep over the method shows it as a swept column: once, not again as `method_1`
    method = "" if any(name == "method" for name, _ in columns) else "s.method, "
    shown = "".join(f"round(s.{metric}, 4) AS {metric}, " for metric in metrics)
    return Figure(
        "Runs",
        f"SELECT s.run_id, {swept}s.seed, s.status, {method}{shown}\n"
        "       round(coalesce(s.train_seconds, r.train_seconds), 1) AS train_seconds, regexp_extract(r.error, '^[^\\n]*') AS error\n"
        "FROM run_summary s JOIN runs r USING (run_id)\n"
        "WHERE s.run_id IN (SELECT run_id FROM current_runs WHERE experiment = $experiment)\n"
        "ORDER BY r.created_at, s.run_id",
        caption=f"{' and '.join(metrics)} on the primary evaluation set, final weights; one column per key the sweep varies.",
    )


def headline_metrics(db, experiment: str) -> tuple[str, ...]:
    """The runs table's metrics: accuracy and f1, and exact_match where the experiment has runs that record
    it (extractive QA; without accuracy when none records that)."""
    accuracy, exact_match = db.execute(
        "SELECT count(accuracy), count(exact_match) FROM run_summary "
        "WHERE run_id IN (SELECT run_id FROM current_runs WHERE experiment = ?)",
        [experiment],
    ).fetchall()[0]  # fetched whole: a connection with an unfinished result serves no other query
    if exact_match and not accuracy:
        return ("exact_match", "f1")
    return ("accuracy", "f1", "exact_match") if exact_match else ("accuracy", "f1")


LEFT_OUT = Figure(
    "Left out",
    "SELECT c.run_id, coalesce(r.status, 'not run') AS status, r.method, r.seed, regexp_extract(r.error, '^[^\\n]*') AS error\n"
    "FROM current_runs c LEFT JOIN runs r USING (run_id)\n"
    "WHERE c.experiment = $experiment AND coalesce(r.status, '') NOT IN ('completed', 'pruned')\nORDER BY status, c.run_id",
)


@dataclass
class Cell:
    text: str
    num: bool = False


@dataclass
class RenderedFigure:
    id: str
    title: str
    sql: str
    caption: str = ""
    kind: str = "table"  # chart | table | empty | error
    spec: dict[str, Any] | None = None
    columns: list[str] = field(default_factory=list)
    rows: list[list[Cell]] = field(default_factory=list)
    total_rows: int = 0
    error: str | None = None

    @property
    def spec_json(self) -> str:
        return json.dumps(self.spec, default=str).replace("</", "<\\/")


@dataclass
class ReportSummary:
    path: Path
    charts: int = 0
    tables: int = 0
    problems: list[str] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)


def sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    return "'" + str(value).replace("'", "''") + "'"


def substitute(sql: str, params: dict[str, Any]) -> str:
    """``sql`` with ``$name`` parameters written in as SQL literals: the query a reader can rerun as shown."""
    return re.sub(
        r"\$([a-z_]+)\b", lambda m: sql_literal(params[m.group(1)]) if m.group(1) in params else m.group(0), sql
    )


class _Renderer:
    def __init__(self, db):
        self.db = db
        self.count = 0
        self.summary_charts = 0
        self.summary_tables = 0

    def figure(self, figure: Figure, params: dict[str, Any]) -> RenderedFigure:
        self.count += 1
        sql = substitute(figure.sql, params)
        out = RenderedFigure(f"fig-{self.count}", figure.title, sql, figure.caption)
        try:
            frame = store_analyses.query_frame(self.db, sql)
        except Exception as exc:
            out.kind, out.error = "error", f"its query failed: {str(exc).splitlines()[0]}"
            return out
        rows = [{k: _jsonable(v) for k, v in row.items()} for row in frame.to_dicts()]
        if not rows:
            out.kind = "empty"
            return out
        if figure.chart is None:
            out.columns = list(frame.columns)
            out.rows = [[_cell(row[c]) for c in out.columns] for row in rows[:MAX_TABLE_ROWS]]
            out.total_rows = len(rows)
            self.summary_tables += 1
            return out
        try:
            # Altair validates a whole spec against Vega-Lite's JSON schema, every inline data row included:
            # thousands of rows (a 240-run study's learning curves) cost seconds. The chart is validated
            # with its first VALIDATED_ROWS rows (what the schema checks is the spec's structure), and
            # serialised with all of them unvalidated.
            if len(rows) > VALIDATED_ROWS:
                figure.chart(rows[:VALIDATED_ROWS]).to_dict()
                out.spec = figure.chart(rows).to_dict(validate=False)
            else:
                out.spec = figure.chart(rows).to_dict()
            out.kind = "chart"
            self.summary_charts += 1
        except Exception as exc:
            out.kind, out.error = "error", f"{type(exc).__name__}: {exc}"
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, float) and value != value:  # NaN
        return None
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    if value is not None and not isinstance(value, str | int | float | bool):
        return str(value)
    return value


def _cell(value: Any) -> Cell:
    if value is None:
        return Cell("")
    if isinstance(value, bool):
        return Cell("yes" if value else "no")
    if isinstance(value, float):
        return Cell(f"{value:.4g}", True)
    if isinstance(value, int):
        return Cell(str(value), True)
    return Cell(str(value))


def _anchor(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", "--".join(parts)).strip("-")


def build_report(
    store: Store,
    registry: Registry,
    targets: list[Target],
    out: Path,
    title: str | None = None,
    png_dir: Path | None = None,
) -> ReportSummary:
    """Write the report of ``targets`` to ``out``; returns what it holds and what it could not show."""
    import jinja2

    from specrun.report import vega

    summary = ReportSummary(out)
    parts = []
    with store.read() as db:
        renderer = _Renderer(db)
        for target in targets:
            parts.append(_experiment(db, registry, target, renderer, summary))
    summary.charts, summary.tables = renderer.summary_charts, renderer.summary_tables
    summary.problems = list(dict.fromkeys(summary.problems))  # a headline's problem is its section's
    env = jinja2.Environment(loader=jinja2.PackageLoader("specrun.report", "templates"), autoescape=True)
    html = env.get_template("report.html.j2").render(
        title=title or "specrun report: " + ", ".join(t.experiment for t in targets),
        version=__version__,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        store=str(store.path),
        parts=parts,
        vega_js=jinja2.utils.markupsafe.Markup(vega.javascript()),
    )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        raise UsageError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    if png_dir is not None:
        for part in parts:
            for section in part["sections"]:
                for n, fig in enumerate((f for f in section["figures"] if f.kind == "chart"), start=1):
                    summary.images += vega.export(fig.spec, png_dir / _anchor(part["name"], section["id"], str(n)))
    return summary


def _experiment(db, registry: Registry, target: Target, renderer: _Renderer, summary: ReportSummary) -> dict[str, Any]:
    params = {"experiment": target.experiment}
    counts = store_analyses.status_counts(db, target.experiment)
    # a search's pruned trials are part of its record (counted, in the runs table), not a problem: the
    # analyses compare completed runs only, as they leave out every run that did not complete
    pruned = sum(n for status, n in counts if status == "pruned")
    left_out = sum(n for status, n in counts if status not in ("completed", "pruned"))
    if left_out:
        summary.problems.append(f"{target.experiment}: {left_out} run(s) not completed, left out of the analyses")
    environment = store_analyses.latest_environment(db, target.experiment)
    records = store_analyses.records_in(db, target.experiment)
    entries = {e.id: e for e in target.entries}
    wanted = target.sections if target.sections is not None else list(entries)
    headline_id = target.report.headline if target.report else None
    headline = None
    if headline_id in entries:
        headline = _section(
            registry,
            entries[headline_id],
            records.get(headline_id),
            params,
            renderer,
            summary,
            target.experiment,
            headline=True,
        )
    sections = [
        _section(registry, entries[i], records.get(i), params, renderer, summary, target.experiment)
        for i in wanted
        if i in entries
    ]
    return {
        "name": target.experiment,
        "anchor": _anchor("exp", target.experiment),
        "description": target.description,
        "spec_path": target.spec_path,
        "spec_text": target.spec_text,
        "applied_at": target.applied_at,
        "counts": counts,
        "notes": target.notes + _selection_notes(db, target.experiment),
        "headline": headline,
        "run_table": renderer.figure(
            run_table(store_analyses.sweep_columns(db, target.experiment), headline_metrics(db, target.experiment)),
            params,
        ),
        "left_out": renderer.figure(LEFT_OUT, params) if left_out else None,
        "left_out_count": left_out,
        "search": store_analyses.search_summary(db, target.experiment),
        "pruned_count": pruned,
        "environment": json.dumps(environment, indent=2) if environment else "(no completed run)",
        "sections": sections,
    }


def _selection_notes(db, experiment: str) -> list[str]:
    """A warning when some of the experiment's numbers were selected on the split they report."""
    n = store_analyses.selected_on_reported(db, experiment)
    if not n:
        return []
    return [
        f"Selected-on numbers: {n} run(s) picked their weights (early stopping) on the evaluation split they report "
        "(or a search's objective read it), so their "
        "reported numbers are optimistic (train.allow_selection_on_reported, or run before specrun carved a selection set "
        "from the training split)."
    ]


def _section(
    registry: Registry,
    entry: AnalysisEntry,
    record,
    params: dict,
    renderer: _Renderer,
    summary: ReportSummary,
    experiment: str,
    headline: bool = False,
) -> dict[str, Any]:
    """One analysis's figures; the ``headline`` (the spec's ``report.headline``) is its first table and its
    first chart, shown before everything else."""
    plugin = registry.get("analysis", entry.name)
    section = {
        "id": entry.id,
        "name": entry.name,
        "description": plugin.description,
        "anchor": _anchor("an", experiment, entry.id),
        "figures": [],
        "error": None,
    }
    if record is None:
        section |= {
            "status": "not computed",
            "note": "",
            "error": f"not computed yet: run `specrun analyze {experiment} --only {entry.id}`, or build the report without --no-analyze",
        }
        summary.problems.append(f"{experiment}: analysis {entry.id!r} not computed")
        return section
    runs = len(record.run_ids)
    section["note"] = (
        f"{record.status} {record.computed_at:%Y-%m-%d %H:%M} UTC over {runs} completed run(s) in {record.seconds:.1f} s"
    )
    section["status"] = record.status
    if record.status != "completed":
        section["error"] = (record.error or "").splitlines()[0] if record.error else "unknown error"
        summary.problems.append(f"{experiment}: analysis {entry.id!r} failed: {section['error']}")
        return section
    options = plugin.Options.model_validate(entry.options)
    figures = plugin.figures(options)
    if headline:
        section["full_anchor"], section["anchor"] = section["anchor"], _anchor("headline", experiment, entry.id)
        figures = [
            f
            for f in (next((f for f in figures if f.chart is None), None), next((f for f in figures if f.chart), None))
            if f
        ]
    for figure in figures:
        rendered = renderer.figure(figure, {**params, "analysis": entry.id})
        if rendered.kind == "error":
            summary.problems.append(f"{experiment}: analysis {entry.id!r}, figure {figure.title!r}: {rendered.error}")
        section["figures"].append(rendered)
    return section
