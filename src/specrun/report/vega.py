"""The Vega libraries, inlined into reports so that they open with no network, and chart export to
PNG and SVG — both through vl-convert, which bundles Vega, Vega-Lite and Vega-Embed."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any


@functools.cache
def vegalite_version() -> str:
    """The Vega-Lite version Altair writes specs for, as vl-convert names it (e.g. '6.4')."""
    import altair as alt
    import vl_convert as vlc

    wanted = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    available = vlc.get_vegalite_versions()
    return wanted if wanted in available else available[-1]


@functools.cache
def javascript() -> str:
    """Vega-Embed, Vega-Lite and Vega in one script that defines ``window.vegaEmbed`` (about 0.9 MB).
    vl-convert bundles it in about 2 CPU-seconds, the same bytes every time for one vl-convert and
    Vega-Lite version: it is kept in specrun's on-disk cache (``specrun.cache``) under those versions."""
    from importlib.metadata import version

    import vl_convert as vlc

    from specrun import cache

    key = {"vl_convert": version("vl-convert-python"), "vega_lite": vegalite_version()}
    bundle = cache.get("vega-js", key)
    if isinstance(bundle, str) and bundle:
        return bundle
    bundle = vlc.javascript_bundle(vl_version=key["vega_lite"])
    cache.put("vega-js", key, bundle)
    return bundle


def export(spec: dict[str, Any], stem: Path) -> list[Path]:
    """Write ``stem``.png (2× scale) and ``stem``.svg of a Vega-Lite spec; returns the paths."""
    import vl_convert as vlc

    stem.parent.mkdir(parents=True, exist_ok=True)
    png, svg = stem.with_suffix(".png"), stem.with_suffix(".svg")
    png.write_bytes(vlc.vegalite_to_png(spec, vl_version=vegalite_version(), scale=2))
    svg.write_text(vlc.vegalite_to_svg(spec, vl_version=vegalite_version()), encoding="utf-8")
    return [png, svg]
