"""Chart building blocks for report figures (Altair). Each takes the figure's rows (a list of dicts, as
its SQL returned them) and the names of the columns to draw, so an analysis's figure stays one SQL query
and one call."""

from __future__ import annotations

from typing import Any

WIDTH = 560


def _alt():
    import altair as alt

    return alt


def _data(rows: list[dict[str, Any]]):
    return _alt().Data(values=rows)


def tips(rows: list[dict[str, Any]], fields: list[str]) -> list[str]:
    """Tooltip fields typed from the rows (``:Q`` for numbers, ``:N`` otherwise): Altair cannot infer
    types from inline values."""

    def kind(field: str) -> str:
        values = [r.get(field) for r in rows if r.get(field) is not None]
        numeric = values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        return "Q" if numeric else "N"

    return [f"{f}:{kind(f)}" for f in fields]


def _height(rows: list[dict[str, Any]], field: str) -> int:
    return max(60, 26 * len({r.get(field) for r in rows}))


def interval_dots(
    rows: list[dict],
    value: str,
    low: str,
    high: str,
    category: str,
    title: str,
    color: str | None = None,
    tooltip: list[str] | None = None,
    reference: float | None = None,
):
    """A point per row at ``value`` with a bar from ``low`` to ``high``, one line per ``category``
    (sorted by value): means with confidence intervals; ``reference`` draws a vertical rule (e.g. 0)."""
    alt = _alt()
    base = alt.Chart(_data(rows)).encode(
        y=alt.Y(
            f"{category}:N",
            sort=alt.EncodingSortField(field=value, order="descending"),
            title=None,
            axis=alt.Axis(labelLimit=420),
        ),  # a longer label ends in "…": its full text is in the tooltip and the table below
    )
    encode_color = (
        {
            "color": alt.Color(f"{color}:N", scale=alt.Scale(domain=[True, False], range=["#d62728", "#1f77b4"]))
            if color and all(isinstance(r.get(color), bool) for r in rows)
            else alt.Color(f"{color}:N")
        }
        if color
        else {}
    )
    bars = base.mark_rule(strokeWidth=2).encode(
        x=alt.X(f"{low}:Q", title=title, scale=alt.Scale(zero=False)), x2=f"{high}:Q", **encode_color
    )
    points = base.mark_point(filled=True, size=70).encode(
        x=alt.X(f"{value}:Q", scale=alt.Scale(zero=False)),
        tooltip=tips(rows, tooltip or [category, value, low, high]),
        **encode_color,
    )
    layers = [bars, points]
    if reference is not None:
        layers.insert(
            0, alt.Chart(alt.Data(values=[{"x": reference}])).mark_rule(color="#999", strokeDash=[4, 4]).encode(x="x:Q")
        )
    return alt.layer(*layers).properties(width=WIDTH, height=_height(rows, category))


def line_with_band(
    rows: list[dict],
    x: str,
    y: str,
    low: str | None,
    high: str | None,
    color: str | None,
    x_title: str,
    y_title: str,
    x_scale: str = "linear",
    tooltip: list[str] | None = None,
):
    """A line through ``y`` over ``x`` per ``color`` group, with a shaded band from ``low`` to ``high``; on a
    log or symlog axis the ticks are the x values themselves."""
    alt = _alt()
    scale = alt.Scale(type=x_scale) if x_scale != "linear" else alt.Scale(zero=False)
    axis = alt.Axis(values=sorted({r[x] for r in rows if r.get(x) is not None})) if x_scale != "linear" else alt.Axis()
    enc_color = (
        {"color": alt.Color(f"{color}:N", legend=alt.Legend(labelLimit=360, orient="bottom", columns=1))}
        if color
        else {}
    )
    base = alt.Chart(_data(rows)).encode(x=alt.X(f"{x}:Q", title=x_title, scale=scale, axis=axis), **enc_color)
    line = base.mark_line(point=True).encode(
        y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(zero=False)), tooltip=tips(rows, tooltip or [x, y])
    )
    layers = [line]
    if low and high:
        layers.insert(0, base.mark_area(opacity=0.18).encode(y=f"{low}:Q", y2=f"{high}:Q"))
    return alt.layer(*layers).properties(width=WIDTH, height=300)


def heatmap(
    rows: list[dict],
    x: str,
    y: str,
    value: str,
    text: str,
    x_title: str,
    y_title: str,
    value_title: str,
    x_sort: str | None = None,
    y_sort: str | None = None,
):
    """A cell per (``x``, ``y``) coloured by ``value`` and labelled with ``text``; ``x_sort``/``y_sort``
    name numeric columns that order the axes (sweep values such as 1e-05 < 0.0001)."""
    alt = _alt()

    def axis(field, sort, title, channel):
        order = alt.EncodingSortField(field=sort, op="min", order="ascending") if sort else "ascending"
        return channel(f"{field}:O", title=title, sort=order)

    base = alt.Chart(_data(rows)).encode(x=axis(x, x_sort, x_title, alt.X), y=axis(y, y_sort, y_title, alt.Y))
    cells = base.mark_rect().encode(
        color=alt.Color(f"{value}:Q", title=value_title, scale=alt.Scale(scheme="blues")),
        tooltip=tips(rows, [x, y, value, text]),
    )
    labels = base.mark_text(fontSize=11, color="black").encode(text=f"{text}:N")
    n_x, n_y = len({r[x] for r in rows}), len({r[y] for r in rows})
    return (cells + labels).properties(width=min(WIDTH, max(120, 100 * n_x)), height=max(60, 40 * n_y))


def scatter(
    rows: list[dict],
    x: str,
    y: str,
    label: str,
    x_title: str,
    y_title: str,
    x_scale: str = "linear",
    highlight: str | None = None,
    connect: str | None = None,
    tooltip: list[str] | None = None,
):
    """A point per row (labelled), optionally highlighting rows where ``highlight`` is true and joining
    those with a step line ordered by ``x`` (a Pareto front)."""
    alt = _alt()
    scale = alt.Scale(type=x_scale) if x_scale != "linear" else alt.Scale(zero=False)
    base = alt.Chart(_data(rows)).encode(
        x=alt.X(f"{x}:Q", title=x_title, scale=scale),
        y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(zero=False)),
    )
    color = (
        alt.Color(
            f"{highlight}:N",
            title=highlight.replace("_", " "),
            scale=alt.Scale(domain=[True, False], range=["#d62728", "#7f7f7f"]),
        )
        if highlight
        else alt.value("#1f77b4")
    )
    points = base.mark_point(filled=True, size=80).encode(color=color, tooltip=tips(rows, tooltip or [label, x, y]))
    text = base.mark_text(align="left", dx=7, dy=-6, fontSize=10).encode(text=f"{label}:N")
    layers = [points, text]
    if connect:
        front = base.transform_filter(f"datum.{connect}").mark_line(
            interpolate="step-after", color="#d62728", strokeDash=[4, 3]
        )
        layers.insert(0, front)
    return alt.layer(*layers).properties(width=WIDTH, height=340)


#: More categories than this are not told apart by colour: they get panels of their own (small multiples).
MAX_COLORS = 8


def _columns(panels: int) -> int:
    return 2 if panels <= 4 else 3 if panels <= 9 else 4


def _header(width: int) -> Any:
    """Panel titles that break at ", " into lines (a label of several keys stays whole, not cut mid-word)."""
    return _alt().Header(labelLimit=width, labelFontSize=11, labelExpr="split(datum.label, ', ')")


def _legend() -> Any:
    return _alt().Legend(labelLimit=360, orient="bottom", columns=1)


def curves(
    rows: list[dict],
    x: str,
    y: str,
    color: str | None,
    dash: str | None,
    facet: str | None,
    x_title: str,
    tooltip: list[str] | None = None,
    x_type: str = "Q",
):
    """Lines of ``y`` over ``x``, one per ``color`` (× ``dash``) group, in one panel per ``facet`` value
    with its own y scale: learning curves, train (dashed) against evaluation. With more than
    ``MAX_COLORS`` colour groups, colour no longer tells them apart: each group gets a panel of its own
    (small multiples, titled by its full name), within one block per ``facet`` value, and ``dash`` takes
    the colour."""
    alt = _alt()
    tooltip = tips(rows, tooltip or [c for c in (color, x, y) if c])
    if color and len({r.get(color) for r in rows}) > MAX_COLORS:
        panels = len({r.get(color) for r in rows})
        columns = _columns(panels)
        width = max(150, (WIDTH + 200) // columns - 30)

        def panel(where: str | None):
            enc = {
                "x": alt.X(f"{x}:{x_type}", title=x_title),
                "y": alt.Y(f"{y}:Q", title=None, scale=alt.Scale(zero=False)),
                "tooltip": tooltip,
            }
            if dash:
                enc["color"] = alt.Color(f"{dash}:N", title=dash.replace("_", " "), legend=_legend())
            chart = (
                alt.Chart()
                .mark_line(point=alt.OverlayMarkDef(size=14))
                .encode(**enc)
                .properties(width=width, height=130)
            )
            block = chart.facet(
                facet=alt.Facet(f"{color}:N", title=None, sort=None, header=_header(width)),
                columns=columns,
                data=_data(rows),
            )
            return (
                block.transform_filter(alt.FieldEqualPredicate(field=facet, equal=where))
                if where is not None
                else block
            )

        if facet:
            values = list(dict.fromkeys(r.get(facet) for r in rows))
            blocks = [panel(v).properties(title=alt.TitleParams(f"{facet}: {v}", anchor="start")) for v in values]
            return alt.vconcat(*blocks)
        return (
            alt.Chart(_data(rows))
            .mark_line(point=alt.OverlayMarkDef(size=14))
            .encode(
                x=alt.X(f"{x}:{x_type}", title=x_title),
                y=alt.Y(f"{y}:Q", title=None, scale=alt.Scale(zero=False)),
                tooltip=tooltip,
                **({"color": alt.Color(f"{dash}:N", legend=_legend())} if dash else {}),
            )
            .properties(width=width, height=130)
            .facet(facet=alt.Facet(f"{color}:N", title=None, sort=None, header=_header(width)), columns=columns)
        )
    enc = {
        "x": alt.X(f"{x}:{x_type}", title=x_title),
        "y": alt.Y(f"{y}:Q", title=None, scale=alt.Scale(zero=False)),
        "tooltip": tooltip,
    }
    if color:
        enc["color"] = alt.Color(f"{color}:N", sort=None, legend=_legend())
    if dash:
        enc["strokeDash"] = alt.StrokeDash(
            f"{dash}:N",
            title=dash.replace("_", " "),
            legend=alt.Legend(symbolType="stroke", symbolStrokeWidth=2, symbolSize=400, symbolStrokeColor="#555"),
        )
    chart = alt.Chart(_data(rows)).mark_line(point=alt.OverlayMarkDef(size=20)).encode(**enc)
    if facet:
        panels = len({r.get(facet) for r in rows})
        columns = min(_columns(panels), 3)
        width = 340 if columns == 2 else 240
        return (
            chart.properties(width=width, height=200 if columns > 2 else 240)
            .facet(facet=alt.Facet(f"{facet}:N", title=None, sort=None, header=_header(width)), columns=columns)
            .resolve_scale(y="independent")
        )
    return chart.properties(width=WIDTH, height=300)


def interval_scatter(
    rows: list[dict],
    x: str,
    y: str,
    low: str,
    high: str,
    label: str,
    x_title: str,
    y_title: str,
    reference: float | None = None,
    tooltip: list[str] | None = None,
):
    """A point per row at (``x``, ``y``) with a vertical bar from ``low`` to ``high`` and its ``label``
    beside it (full text on hover): e.g. a transfer gain with its CI against the source's stable rank."""
    alt = _alt()
    base = alt.Chart(_data(rows)).encode(x=alt.X(f"{x}:Q", title=x_title, scale=alt.Scale(zero=False)))
    bars = base.mark_rule(strokeWidth=2, color="#1f77b4").encode(
        y=alt.Y(f"{low}:Q", title=y_title, scale=alt.Scale(zero=False)), y2=f"{high}:Q"
    )
    points = base.mark_point(filled=True, size=80, color="#1f77b4").encode(
        y=f"{y}:Q", tooltip=tips(rows, tooltip or [label, x, y, low, high])
    )
    text = base.mark_text(align="left", dx=7, dy=-6, fontSize=10, limit=220).encode(y=f"{y}:Q", text=f"{label}:N")
    layers = [bars, points, text]
    if reference is not None:
        layers.insert(
            0, alt.Chart(alt.Data(values=[{"y": reference}])).mark_rule(color="#999", strokeDash=[4, 4]).encode(y="y:Q")
        )
    return alt.layer(*layers).properties(width=WIDTH, height=340)
