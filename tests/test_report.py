"""Reports: one self-contained HTML file whose every figure is the SQL printed under it; a report from
a store with failed runs still builds and says what it left out; charts export to PNG and SVG."""

from __future__ import annotations

import html
import json
import re

import pytest

from specrun import hookimpl
from specrun.plugins import api, set_registry
from specrun.plugins.registry import build_registry, make_plugin_manager

FIGURE = re.compile(
    r"<h4>(?P<title>.*?)</h4>\s*(?P<body>.*?)<details class=\"sql\"><summary>.*?</summary><pre>(?P<sql>.*?)</pre></details>",
    re.S,
)


def figures(page: str) -> list[dict]:
    """Every figure of a report: title, SQL as shown, chart spec (or None), and table header and rows."""
    found = []
    for m in FIGURE.finditer(page):
        body = m["body"]
        spec = re.search(r'<script type="application/json" id="spec-fig-\d+">(.*?)</script>', body, re.S)
        header = re.findall(r"<th>(.*?)</th>", body)
        rows = re.findall(r"<tr>(?:<td[^>]*>.*?</td>)+</tr>", body)
        found.append(
            {
                "title": html.unescape(m["title"]),
                "sql": html.unescape(m["sql"]),
                "spec": json.loads(spec[1]) if spec else None,
                "header": [html.unescape(h) for h in header],
                "rows": len(rows),
            }
        )
    return found


def inline_data(spec):
    """Every list of rows a Vega-Lite spec carries: named datasets and inline ``data.values`` at any depth."""
    if isinstance(spec, dict):
        yield from spec.get("datasets", {}).values()
        if isinstance(spec.get("data"), dict) and "values" in spec["data"]:
            yield spec["data"]["values"]
        for value in spec.values():
            yield from inline_data(value)
    elif isinstance(spec, list):
        for item in spec:
            yield from inline_data(item)


def sql_rows(cli, store, query):
    code, out, err = cli("sql", query, "--store", str(store), "-f", "json")
    assert code == 0, f"{err}\n{query}"
    return json.loads(out)


def same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and a == pytest.approx(b, rel=1e-9, abs=1e-12)
    return a == b or str(a) == str(b)


def test_every_figure_is_reproduced_by_the_sql_shown_under_it(study, cli, tmp_path):
    spec, store = study
    out = tmp_path / "report.html"
    code, _, err = cli("report", str(spec), "--store", str(store), "-o", str(out))
    assert code == 0, err
    assert f"report: {out} (" in err
    page = out.read_text()
    found = figures(page)
    charts = [f for f in found if f["spec"]]
    assert len(charts) >= 12 and len(found) - len(charts) >= 8
    for figure in found:
        rows = sql_rows(cli, store, figure["sql"])
        assert rows, figure["title"]
        if figure["spec"]:
            datasets = list(inline_data(figure["spec"]))
            drawn = next((d for d in datasets if len(d) == len(rows) and set(d[0]) == set(rows[0])), None)
            assert drawn is not None, f"{figure['title']}: no dataset matches its SQL"
            for got, want in zip(drawn, rows):
                assert all(same(got[k], want[k]) for k in want), (figure["title"], got, want)
        else:
            assert figure["header"] == list(rows[0]), figure["title"]
            assert figure["rows"] == min(len(rows), 200), figure["title"]
    # parameters are written in: the SQL runs as shown
    assert all("$experiment" not in f["sql"] and "$analysis" not in f["sql"] for f in found)
    # the Vega libraries are inlined; nothing is fetched from elsewhere
    assert "window.vegaEmbed" in page
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="https?://', page)


def test_report_sections_follow_the_spec_and_name_their_analyses(study, cli, tmp_path):
    _spec, store = study
    out = tmp_path / "r.html"
    code, _, err = cli("report", "study", "--store", str(store), "-o", str(out), "--title", "Toy study", "--no-analyze")
    assert code == 0, err
    page = out.read_text()
    assert "<title>Toy study</title>" in page
    for name in (
        "bootstrap_ci",
        "paired_comparison",
        "efficiency",
        "learning_curves",
        "sensitivity",
        "scaling",
        "lora_svd",
        "correlation",
    ):
        assert f'id="an--study--{name}"' in page
    assert "<strong>4</strong> completed" in page
    assert "[[analyses]]" in html.unescape(page)  # the spec itself is in the report


def test_png_and_svg_export(study, cli, tmp_path):
    spec, store = study
    code, _, err = cli(
        "report", str(spec), "--store", str(store), "-o", str(tmp_path / "r.html"), "--png", str(tmp_path / "png")
    )
    assert code == 0, err
    pngs, svgs = sorted((tmp_path / "png").glob("*.png")), sorted((tmp_path / "png").glob("*.svg"))
    assert len(pngs) == len(svgs) >= 12
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000 for p in pngs)
    assert all("<svg" in s.read_text()[:400] for s in svgs)


class Broken(api.MethodPlugin):
    name = "test-broken"

    def build(self, options, ctx):
        raise RuntimeError("this method always fails")


class MeanLoss(api.AnalysisPlugin):
    """A third party's analysis: its table in the store, its section in the report."""

    name = "test-mean-loss"
    description = "mean evaluation loss per configuration"
    tables = (api.ResultTable("test_mean_loss", {"config": "VARCHAR", "loss": "DOUBLE"}),)

    def run(self, options, ctx):
        loss = ctx.final_metric("loss")
        return {"test_mean_loss": [{"config": r.config_label, "loss": loss[r.run_id]} for r in ctx.runs]}

    def figures(self, options):
        from specrun.report import charts

        return [
            api.Figure(
                "Loss per configuration",
                "SELECT config, loss, loss AS low, loss AS high FROM test_mean_loss WHERE experiment = $experiment",
                lambda rows: charts.interval_dots(rows, "loss", "low", "high", "config", "loss"),
            )
        ]


class Module:
    @hookimpl
    def register_methods(self, register):
        register(Broken())

    @hookimpl
    def register_analyses(self, register):
        register(MeanLoss())


def test_report_of_a_store_with_failed_and_missing_runs_says_what_it_left_out(write_spec, cli, tmp_path):
    pm, errors = make_plugin_manager([Module()], entry_points=False)
    set_registry(build_registry(pm, errors))
    spec = write_spec(
        train="max_steps = 3",
        extra=(
            '[sweep]\n"method" = [{ name = "full" }, { name = "test-broken" }, { name = "bitfit" }]\n\n'
            '[[analyses]]\nname = "bootstrap_ci"\n\n[[analyses]]\nname = "test-mean-loss"\n'
        ),
    )
    code, _, err = cli("apply", str(spec), "--fail-fast")  # the broken run stops the apply: bitfit never starts
    assert code == 1 and "FAILED: RuntimeError: this method always fails" in err
    out = tmp_path / "r.html"
    code, _, err = cli("report", str(spec), "-o", str(out))
    assert code == 0, err
    assert "warning: report: toy: 2 run(s) not completed, left out of the analyses" in err
    page = html.unescape(out.read_text())
    assert "2 run(s) are left out of the analyses below (not completed)." in page
    assert "this method always fails" in page and "not run" in page
    assert "Loss per configuration" in page and "test-mean-loss" in page  # the plugin's own section
    titles = [f["title"] for f in figures(out.read_text())]
    assert "Left out" in titles
    rows = sql_rows(cli, tmp_path / "store.duckdb", "SELECT config FROM test_mean_loss")
    assert rows == [{"config": "full"}]


def test_report_of_an_unknown_experiment_or_store(cli, tmp_path, built_study):
    code, _, err = cli("report", "nosuch", "--store", str(built_study[2]), "-o", str(tmp_path / "r.html"))
    assert code == 2 and "no apply of experiment 'nosuch'" in err and "experiments in it: study" in err
    code, _, err = cli("report", "study", "--store", str(tmp_path / "missing.duckdb"))
    assert code == 2 and "no store at" in err
    assert not (tmp_path / "r.html").exists()


def test_the_inlined_vega_bundle_is_built_once_and_read_from_the_cache(tmp_path, monkeypatch):
    """vl-convert's bundle (~2 CPU-seconds) is kept in specrun's cache under its versions; a damaged
    entry is a miss, rebuilt."""
    import specrun.report.vega as vega

    monkeypatch.setenv("SPECRUN_CACHE_DIR", str(tmp_path / "cache"))
    vega.javascript.cache_clear()
    built = vega.javascript()
    assert "vegaEmbed" in built
    entries = list((tmp_path / "cache" / "vega-js").glob("*.pickle"))
    assert len(entries) == 1
    vega.javascript.cache_clear()
    calls = []
    monkeypatch.setattr("vl_convert.javascript_bundle", lambda **kw: calls.append(kw) or "rebuilt")
    assert vega.javascript() == built and not calls  # from the cache
    entries[0].write_bytes(b"not a pickle")
    vega.javascript.cache_clear()
    assert vega.javascript() == "rebuilt" and len(calls) == 1
    vega.javascript.cache_clear()


def test_a_large_chart_keeps_every_row_of_its_query_and_is_still_validated(tmp_path):
    """Charts over more rows than VALIDATED_ROWS are validated on their first rows only (Altair's schema
    check of every data row cost seconds over a 240-run study); the spec still holds every row of the SQL,
    and a chart whose structure is wrong is still an error, not a broken figure."""
    import altair as alt
    import duckdb

    from specrun.plugins.api import Figure
    from specrun.report import charts
    from specrun.report.build import VALIDATED_ROWS, _Renderer

    n = VALIDATED_ROWS * 3 + 7
    sql = f"SELECT i AS step, i % 7 AS run, (i / 1000)::DOUBLE AS value FROM range({n}) t(i) ORDER BY i"
    db = duckdb.connect()
    renderer = _Renderer(db)
    good = renderer.figure(
        Figure("curve", sql, lambda rows: charts.scatter(rows, "step", "value", "run", "step", "value")), {}
    )
    assert good.kind == "chart"
    spec = good.spec
    values = next(iter(spec["datasets"].values())) if "datasets" in spec else spec["data"]["values"]
    assert [(r["step"], r["value"]) for r in values] == db.execute(f"SELECT step, value FROM ({sql})").fetchall()

    def broken(rows):
        return alt.Chart(alt.Data(values=rows)).mark_point().encode(x=alt.X("step:Q", scale=alt.Scale(type="nonsense")))

    bad = renderer.figure(Figure("broken", sql, broken), {})
    assert bad.kind == "error" and "nonsense" in bad.error
