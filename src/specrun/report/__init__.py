"""One-file HTML reports built from SQL over the store (``build``), the chart building blocks analyses
share (``charts``) and the inlined Vega libraries and image export (``vega``)."""
