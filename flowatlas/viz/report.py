"""The report as one self-contained HTML page of Bokeh charts (no network needed to view it).

Charts: traffic by network type over time (stacked area), the three region x network type
heatmaps (volume, magnitude, uniqueness), magnitude by network type on log and linear scales,
and each network type's share of all traffic by quarter.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import pandas as pd
from bokeh.embed import file_html
from bokeh.layouts import column, gridplot
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    Div,
    FactorRange,
    HoverTool,
    LinearColorMapper,
    LogColorMapper,
    NumeralTickFormatter,
)
from bokeh.palettes import Category10, Viridis256
from bokeh.plotting import figure
from bokeh.resources import INLINE

from flowatlas.errors import OutputError
from flowatlas.viz.views import Views, si

WIDTH = 1100


def _colors(types: list[str]) -> dict[str, str]:
    palette = list(Category10[10])
    return {t: palette[i % len(palette)] for i, t in enumerate(types)}


def stacked_area(views: Views) -> figure:
    """Average daily traffic (Gbps) by network type, stacked."""
    df = views.daily.reset_index().rename(columns={"day": "t"})
    types = [t for t in views.types if t in df.columns]
    colors = _colors(views.types)
    p = figure(
        title="Traffic by network type (daily average, Gbps)",
        x_axis_type="datetime",
        width=WIDTH,
        height=380,
        tools="pan,wheel_zoom,box_zoom,reset,save",
    )
    src = ColumnDataSource(df.rename(columns={t: f"c{i}" for i, t in enumerate(types)}))
    stackers = [f"c{i}" for i in range(len(types))]
    p.varea_stack(
        stackers=stackers,
        x="t",
        color=[colors[t] for t in types],
        legend_label=types,
        source=src,
    )
    p.legend.location = "top_left"
    p.legend.orientation = "horizontal"
    p.yaxis.axis_label = "Gbps"
    p.yaxis.formatter = NumeralTickFormatter(format="0,0")
    return p


def heatmap(title: str, m: pd.DataFrame, unit: str, *, log: bool) -> figure:
    """A region x network type heatmap with the values written in the cells."""
    regions = [str(r) for r in m.index]
    types = [str(c) for c in m.columns]
    rows = []
    for r in regions:
        for t in types:
            v = m.loc[r, t]
            v = float(v) if v is not None and np.isfinite(v) else np.nan
            label = si(v, unit) if unit != "#" else ("-" if np.isnan(v) else f"{int(v):,}")
            rows.append({"region": r, "network_type": t, "value": v, "label": label})
    df = pd.DataFrame(rows)
    finite = df["value"][np.isfinite(df["value"]) & (df["value"] > 0)]
    lo = float(finite.min()) if len(finite) else 1.0
    hi = float(finite.max()) if len(finite) else 10.0
    palette = Viridis256
    mapper = (
        LogColorMapper(palette=palette, low=lo, high=max(hi, lo * 1.0001), nan_color="#eeeeee")
        if log
        else LinearColorMapper(palette=palette, low=0, high=max(hi, 1e-9), nan_color="#eeeeee")
    )
    df["value_plot"] = df["value"].where(df["value"] > 0) if log else df["value"]
    # dark text on the bright end of the palette, white on the dark end
    if log:
        pos = (np.log(df["value_plot"]) - np.log(lo)) / max(np.log(hi) - np.log(lo), 1e-9)
    else:
        pos = df["value"] / max(hi, 1e-9)
    df["text_color"] = np.where(pos.fillna(0) > 0.6, "#222222", "#ffffff")
    p = figure(
        title=title,
        x_range=types,
        y_range=list(reversed(regions)),
        width=WIDTH,
        height=110 + 70 * len(regions),
        tools="hover,save",
        toolbar_location="right",
    )
    src = ColumnDataSource(df)
    p.rect(
        x="network_type",
        y="region",
        width=0.96,
        height=0.92,
        source=src,
        fill_color={"field": "value_plot", "transform": mapper},
        line_color=None,
    )
    p.text(
        x="network_type",
        y="region",
        text="label",
        source=src,
        text_align="center",
        text_baseline="middle",
        text_color="text_color",
        text_font_size="11px",
    )
    p.select_one(HoverTool).tooltips = [
        ("region", "@region"),
        ("network type", "@network_type"),
        ("value", "@label"),
    ]
    p.add_layout(ColorBar(color_mapper=mapper, width=10), "right")
    p.grid.grid_line_color = None
    p.axis.axis_line_color = None
    p.axis.major_tick_line_color = None
    return p


def magnitude_bars(views: Views, *, log: bool) -> figure:
    """Magnitude (bits per unique remote IP) by network type, log or linear scale."""
    mt = views.magnitude_by_type.dropna(subset=["magnitude"])
    types = [str(t) for t in mt.index]
    colors = _colors(views.types)
    scale_div = 1.0 if log else 1e15  # the linear chart reads in Pbit per IP
    src = ColumnDataSource(
        {
            "network_type": types,
            "magnitude": (mt["magnitude"].astype(float) / scale_div).to_list(),
            "label": [si(float(v), "b") for v in mt["magnitude"]],
            "color": [colors[t] for t in types],
        }
    )
    scale = "log" if log else "linear"
    p = figure(
        title=f"Magnitude by network type ({scale} scale): bits per unique remote IP",
        x_range=types,
        y_axis_type=scale,
        width=WIDTH // 2 - 10,
        height=360,
        tools="hover,save",
    )
    bottom = float(mt["magnitude"].min()) / 10 if log and len(mt) else 0
    p.yaxis.axis_label = "bits per unique remote IP" if log else "Pbit per unique remote IP"
    p.vbar(x="network_type", top="magnitude", bottom=bottom, width=0.8, color="color", source=src)
    p.select_one(HoverTool).tooltips = [("network type", "@network_type"), ("magnitude", "@label")]
    p.xaxis.major_label_orientation = 0.6
    return p


def quarterly_share_bars(views: Views) -> figure:
    """Each network type's share of all traffic, one bar per quarter (quarter over quarter)."""
    qs = views.quarterly_share
    quarters = [str(q) for q in qs.index]
    cats = [c for c in [*views.types, "Other clouds"] if c in qs.columns]
    factors = [(c, q) for c in cats for q in quarters]
    values = [float(qs.loc[qs.index[quarters.index(q)], c]) for c, q in factors]
    palette = list(Category10[10])[: max(3, len(quarters))]
    colors = [palette[quarters.index(q) % len(palette)] for _, q in factors]
    src = ColumnDataSource(
        {
            "x": factors,
            "share": values,
            "label": [f"{100 * v:.1f}%" for v in values],
            "color": colors,
            "quarter": [q for _, q in factors],
        }
    )
    p = figure(
        title="Share of all traffic by destination category, quarter over quarter",
        x_range=FactorRange(*factors),
        width=WIDTH,
        height=380,
        tools="hover,save",
    )
    p.vbar(x="x", top="share", width=0.85, color="color", legend_field="quarter", source=src)
    p.select_one(HoverTool).tooltips = [("category, quarter", "@x"), ("share", "@label")]
    p.yaxis.formatter = NumeralTickFormatter(format="0%")
    p.xaxis.major_label_orientation = 1.0
    p.x_range.range_padding = 0.05
    p.xgrid.grid_line_color = None
    p.legend.location = "top_left"
    return p


def report_layout(views: Views, title: str):
    """All charts in one column layout."""
    span = ""
    if views.first is not None:
        span = f"{views.first:%Y-%m-%d} to {views.last:%Y-%m-%d}"
    header = Div(
        text=f"<h1>{html.escape(title)}</h1><p>{html.escape(span)}. Volume is sampling-corrected; "
        "magnitude is bits per unique remote IP over the whole range; uniqueness counts "
        "distinct remote IPs exactly.</p>",
        width=WIDTH,
    )
    return column(
        header,
        stacked_area(views),
        heatmap("Volume: region x network type", views.volume, "B", log=True),
        heatmap("Magnitude: bits per unique remote IP", views.magnitude, "b", log=True),
        heatmap("Uniqueness: distinct remote IPs", views.uniqueness, "#", log=True),
        gridplot([[magnitude_bars(views, log=True), magnitude_bars(views, log=False)]]),
        quarterly_share_bars(views),
    )


def write_html(
    views: Views, path: str | os.PathLike[str], *, title: str = "flowatlas network report"
) -> Path:
    """Write the self-contained HTML report (Bokeh's JavaScript inlined)."""
    path = Path(path)
    page = file_html(report_layout(views, title), INLINE, title)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write report: {exc.strerror or exc}") from None
    return path
