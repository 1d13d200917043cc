"""The charts, shared by the report page and the server: figures built once from a source.

Each chart is two functions: ``*_figure(source, ...)`` builds the figure around a
``ColumnDataSource`` once; ``*_data(table, ...)`` turns a view's table (from
:mod:`flowatlas.viz.query`) into that source's columns. The report fills the source once; the
server replaces ``source.data`` on every filter change and never rebuilds a figure. Every
number on an axis, a cell or a tooltip goes through :mod:`flowatlas.viz.units`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import pandas as pd
from bokeh.models import (
    BasicTicker,
    ColorBar,
    ColumnDataSource,
    CustomJS,
    Div,
    FactorRange,
    HoverTool,
    Legend,
    LegendItem,
    LinearColorMapper,
    LogColorMapper,
    LogTicker,
    Range1d,
    TapTool,
)
from bokeh.palettes import Category20, Viridis256
from bokeh.plotting import figure

from flowatlas.viz import units
from flowatlas.viz.query import OTHER_CLOUDS

WIDTH = 1100
NAN_COLOR = "#eeeeee"

#: one colour per network type, the same in every chart
TYPE_COLORS = {
    "CDN": "#1f77b4",
    "Hosting": "#ff7f0e",
    "Hyperscaler": "#2ca02c",
    "ISP Regional": "#d62728",
    "ISP Tier1": "#9467bd",
    "Neocloud": "#8c564b",
    "Migration": "#e377c2",
    "Unknown": "#7f7f7f",
    OTHER_CLOUDS: "#17becf",
}
_EXTRA = [c for c in Category20[20] if c not in TYPE_COLORS.values()]


def type_color(t: str) -> str:
    """The colour of network type ``t`` (configured extras get the spare palette colours)."""
    if t in TYPE_COLORS:
        return TYPE_COLORS[t]
    return _EXTRA[sum(map(ord, t)) % len(_EXTRA)]


def _clean(values) -> list[float]:
    return [float(v) if v is not None and np.isfinite(v) else float("nan") for v in values]


def html_table(header: Sequence[str], rows: Sequence[Sequence[object]], cls: str = "") -> str:
    """A small HTML table (cells escaped; numeric columns right-aligned by the page's CSS)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return (
        f'<table class="fa-table {cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def metro_rows(df: pd.DataFrame) -> list[list[str]]:
    """Rows (metro, country, volume, share) of a top-metros table."""
    return [
        [str(r.metro), str(getattr(r, "country", "") or ""),
         units.fmt(float(r.bytes), "volume"), units.share(float(getattr(r, "share", np.nan)))]
        for r in df.itertuples()
    ]  # fmt: skip


#: the tables' and notes' style; every Div carries it, since Bokeh 3 draws each Div in its
#: own shadow root, where a page-level <style> does not reach
CSS = """
.fa-table { border-collapse: collapse; font: 12px sans-serif; margin: 4px 0 10px 0; }
.fa-table th { text-align: left; border-bottom: 1px solid #999; padding: 2px 8px; }
.fa-table td { padding: 2px 8px; border-bottom: 1px solid #eee; }
.fa-table td:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; }
.fa-note { font: 12px sans-serif; color: #555; margin: 2px 0 8px 0; }
"""


def div(text: str = "", **kwargs) -> Div:
    """A Div with flowatlas's table and note style."""
    return Div(text=text, stylesheets=[CSS], **kwargs)


# --------------------------------------------------------------------------- stacked area

#: rebuilds the stack when a legend click hides or shows a series: the page's own copy of
#: :func:`stack`, so the static report restacks too (the server recomputes the same)
_RESTACK = """
const d = points.data;
const n = d.t.length;
const runs = [];
for (let j = 0; j < n; ) {
  if (!isFinite(d.v0[j])) { j++; continue; }
  let k = j;
  while (k + 1 < n && isFinite(d.v0[k + 1])) k++;
  runs.push([j, k]);
  j = k + 1;
}
let acc = new Float64Array(n);
const b = {...bands.data};
for (let i = 0; i < renderers.length; i++) {
  const v = d["v" + i];
  const lo = Float64Array.from(acc);
  for (let j = 0; j < n; j++) if (renderers[i].visible) acc[j] += v[j];
  const ys = [];
  runs.forEach(([a, z], r) => {
    if (r > 0) ys.push(NaN);
    for (let j = a; j <= z; j++) ys.push(acc[j]);
    for (let j = z; j >= a; j--) ys.push(lo[j]);
  });
  b["y" + i] = ys;
}
d.top = Float64Array.from(acc, (x, j) => isFinite(d.v0[j]) ? x : NaN);
bands.data = b;
points.change.emit();
"""


def _runs(missing: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of points with data."""
    out, j, n = [], 0, len(missing)
    while j < n:
        if missing[j]:
            j += 1
            continue
        k = j
        while k + 1 < n and not missing[k + 1]:
            k += 1
        out.append((j, k))
        j = k + 1
    return out


def stack(
    table: pd.DataFrame, types: Sequence[str], shown: Sequence[str], visible: Sequence[bool]
) -> tuple[dict, dict, dict]:
    """The stacked area's columns: per time point, and each type's band as one polygon; and
    each band's lower and upper edge per time point (``lo{i}``, ``hi{i}``: kept on the server
    for clicks, never sent).

    ``table`` is a view's time x type frame in bits/s. A time without data (NaN: a day with
    no record in the cube) is a gap: each band is one polygon per run of days with data,
    runs separated by NaN, so nothing is drawn across missing days. Types not ``shown`` are
    zero-height; types not ``visible`` (hidden from the legend) do not raise the stack.
    """
    n = len(table)
    t = table.index
    missing = table.isna().all(axis=1).to_numpy() if n else np.zeros(0, bool)
    times = t.to_numpy() if n else np.array([], "datetime64[ns]")
    pts: dict[str, object] = {"t": times}
    runs = _runs(missing)
    ms = times.astype("datetime64[ms]").astype(np.int64).astype(np.float64)  # a datetime axis
    xs: list[float] = []
    for r, (a, z) in enumerate(runs):
        if r:
            xs.append(np.nan)  # NaT would not survive serialisation as a gap; NaN does
        xs += list(ms[a : z + 1]) + list(ms[a : z + 1][::-1])
    bands: dict[str, object] = {}
    edges: dict[str, np.ndarray] = {}
    acc = np.where(missing, np.nan, 0.0)
    total = acc.copy()
    for i, name in enumerate(types):
        v = table[name].to_numpy(dtype=np.float64) if name in shown and name in table else None
        v = np.where(missing, np.nan, 0.0) if v is None else np.where(missing, np.nan, v)
        lo = acc.copy()
        if visible[i]:
            acc = acc + v
        ys: list[float] = []
        for r, (a, z) in enumerate(runs):
            if r:
                ys.append(np.nan)
            ys += list(acc[a : z + 1]) + list(lo[a : z + 1][::-1])
        pts[f"v{i}"] = v
        edges[f"lo{i}"] = lo
        edges[f"hi{i}"] = acc.copy()
        bands[f"x{i}"] = np.array(xs, dtype=np.float64)
        bands[f"y{i}"] = np.array(ys, dtype=np.float64)
        total = total + np.nan_to_num(v)
    pts["top"] = acc
    pts["total"] = np.where(missing, np.nan, total)
    return pts, bands, edges


class StackedArea:
    """Traffic by network type over time, stacked: hover for a time's values, legend outside
    the plot that hides a series on click (the stack closes up), gaps where data is missing.
    """

    def __init__(self, types: Sequence[str], title: str, name: str = "area") -> None:
        self.types = list(types)
        empty = pd.DataFrame(columns=self.types, index=pd.DatetimeIndex([]), dtype=float)
        pts, bands, self.edges = stack(empty, self.types, [], [True] * len(self.types))
        self.points = ColumnDataSource(pts, name=f"{name}-points")
        self.bands = ColumnDataSource(bands, name=f"{name}-bands")
        p = figure(
            title=title,
            x_axis_type="datetime",
            width=WIDTH,
            height=400,
            tools="pan,xwheel_zoom,box_zoom,reset,save",
            name=name,
        )
        self.renderers = [
            p.patch(x=f"x{i}", y=f"y{i}", source=self.bands, fill_color=type_color(t),
                    fill_alpha=0.85, line_color=None, name=f"area-{t}")
            for i, t in enumerate(self.types)
        ]  # fmt: skip
        top = p.line(x="t", y="top", source=self.points, line_alpha=0, name=f"{name}-top")
        rate = units.hover_formatter("rate")  # values formatted in the page: no label columns
        self.hover = HoverTool(
            renderers=[top],
            mode="vline",
            tooltips=area_tooltips(types, types),
            formatters={
                "@t": "datetime",
                **{f"@{c}": rate for c in ["total", *[f"v{i}" for i in range(len(types))]]},
            },
        )
        p.add_tools(self.hover)
        # one item per type, made once: an update shows or hides items, never makes models
        # (a new model makes Bokeh walk the whole document)
        self.items = [LegendItem(label=t, renderers=[r])
                      for t, r in zip(self.types, self.renderers, strict=True)]  # fmt: skip
        self.legend = Legend(items=self.items, click_policy="hide", location="top_left")
        p.add_layout(self.legend, "right")
        restack = CustomJS(
            args={"points": self.points, "bands": self.bands, "renderers": self.renderers},
            code=_RESTACK,
        )
        for r in self.renderers:
            r.js_on_change("visible", restack)
        p.yaxis.formatter = units.tick_formatter("rate")
        p.y_range.start = 0
        p.yaxis.axis_label = "bits per second"
        self.figure = p

    def band_at(self, x_ms: float, y: float) -> str | None:
        """The type whose band holds the point (x in ms since 1970, y in bits/s), if any."""
        t = np.asarray(self.points.data["t"])
        if not len(t):
            return None
        i = int(np.argmin(np.abs(t.astype("datetime64[ms]").astype(np.int64) - x_ms)))
        for k, name in enumerate(self.types):
            lo, hi = self.edges[f"lo{k}"][i], self.edges[f"hi{k}"][i]
            if np.isfinite(lo) and np.isfinite(hi) and lo <= y < hi:
                return name
        return None

    def update(self, table: pd.DataFrame, shown: Sequence[str]) -> None:
        """Show ``table`` (time x type, bits/s); only ``shown`` types get legend entries."""
        visible = [bool(r.visible) for r in self.renderers]
        pts, bands, self.edges = stack(table, self.types, shown, visible)
        self.hover.tooltips = area_tooltips(self.types, shown)
        for t, item in zip(self.types, self.items, strict=True):
            item.visible = t in shown
        self.bands.data = bands
        self.points.data = pts


def area_tooltips(types: Sequence[str], shown: Sequence[str]) -> list[tuple[str, str]]:
    """The area's hover lines: the time, the total, then each shown type, top of stack first."""
    rows = [(t, f"@v{i}{{custom}}") for i, t in enumerate(types) if t in shown]
    return [("time", "@t{%F %H:%M}"), ("total", "@total{custom}"), *reversed(rows)]


# --------------------------------------------------------------------------- heatmaps


def _text_colors(pos: np.ndarray) -> list[str]:
    return ["#222222" if np.isfinite(x) and x > 0.6 else "#ffffff" for x in pos]


def heatmap_data(m: pd.DataFrame, kind: str, *, log: bool) -> dict:
    """Cells of a region x network type heatmap, with each cell's value written in its unit."""
    regions = [str(r) for r in m.index]
    types = [str(c) for c in m.columns]
    vals = np.array([[m.loc[r, t] for t in types] for r in regions], dtype=np.float64).ravel()
    vals = np.where(np.isfinite(vals), vals, np.nan)
    plot = np.where(vals > 0, vals, np.nan) if log else vals
    finite = plot[np.isfinite(plot)]
    if log and len(finite):
        lo, hi = np.log(finite.min()), np.log(finite.max())
        pos = (np.log(plot) - lo) / max(hi - lo, 1e-12)
    elif len(finite):
        lo, hi = min(0.0, finite.min()), finite.max()
        pos = (plot - lo) / max(hi - lo, 1e-300)
    else:
        pos = np.full(vals.shape, np.nan)
    return {
        "region": [r for r in regions for _ in types],
        "network_type": types * len(regions),
        "value": vals,
        "value_plot": plot,
        "label": [units.fmt(v, kind) for v in vals],
        "text_color": _text_colors(pos),
    }


def color_range(data: dict, *, log: bool) -> tuple[float, float]:
    """low and high of the colour mapper for a heatmap's cells."""
    v = np.asarray(data["value_plot"], dtype=np.float64)
    v = v[np.isfinite(v)]
    if log:
        v = v[v > 0]
        if not len(v):
            return 1.0, 10.0
        lo, hi = float(v.min()), float(v.max())
        return lo, hi if hi > lo else lo * 10
    if not len(v):
        return 0.0, 1.0
    lo, hi = min(0.0, float(v.min())), float(v.max())
    return lo, hi if hi > lo else lo + 1.0


class Heatmap:
    """A region x network type heatmap whose cells can be selected (tap) and re-scaled."""

    def __init__(self, title: str, kind: str, name: str, *, log: bool = True) -> None:
        self.kind = kind
        self.source = ColumnDataSource(heatmap_data(pd.DataFrame(), kind, log=log), name=name)
        self.log_mapper = LogColorMapper(palette=Viridis256, low=1, high=10, nan_color=NAN_COLOR)
        self.lin_mapper = LinearColorMapper(palette=Viridis256, low=0, high=1, nan_color=NAN_COLOR)
        p = figure(
            title=title,
            x_range=FactorRange(),
            y_range=FactorRange(),
            width=WIDTH,
            height=300,
            tools="tap,save",
            toolbar_location="right",
            name=f"{name}-figure",
        )
        self.rect = p.rect(
            x="network_type",
            y="region",
            width=0.96,
            height=0.92,
            source=self.source,
            fill_color={"field": "value_plot", "transform": self.log_mapper},
            line_color=None,
            nonselection_fill_alpha=0.6,
            selection_line_color="#ff3333",
            selection_line_width=3,
        )
        p.text(
            x="network_type",
            y="region",
            text="label",
            source=self.source,
            text_align="center",
            text_baseline="middle",
            text_color="text_color",
            text_font_size="12px",
            nonselection_text_alpha=1.0,
        )
        p.add_tools(
            HoverTool(
                renderers=[self.rect],
                tooltips=[("region", "@region"), ("network type", "@network_type"),
                          (title.split(":")[0].lower(), "@label")],
            )
        )  # fmt: skip
        p.select_one(TapTool).renderers = [self.rect]
        self.tickers = {True: LogTicker(), False: BasicTicker()}
        self.formatters = {log: units.tick_formatter(kind, log=log) for log in (True, False)}
        self.bar = ColorBar(color_mapper=self.log_mapper, width=12, ticker=self.tickers[True],
                            formatter=self.formatters[True])  # fmt: skip
        p.add_layout(self.bar, "right")
        p.grid.grid_line_color = None
        p.axis.axis_line_color = None
        p.axis.major_tick_line_color = None
        p.axis.major_label_text_font_size = "12px"
        self.figure = p
        self.log = log
        self.set_scale(log)

    def set_scale(self, log: bool) -> None:
        """Switch the colour scale between log and linear."""
        self.log = log
        mapper = self.log_mapper if log else self.lin_mapper
        self.rect.glyph.fill_color = {"field": "value_plot", "transform": mapper}
        self.bar.color_mapper = mapper
        self.bar.ticker = self.tickers[log]
        self.bar.formatter = self.formatters[log]

    def update(self, m: pd.DataFrame) -> None:
        """Show matrix ``m`` (regions x network types)."""
        data = heatmap_data(m, self.kind, log=self.log)
        self.figure.x_range.factors = [str(c) for c in m.columns]
        self.figure.y_range.factors = [str(r) for r in reversed(m.index)]
        self.figure.height = 110 + 60 * max(1, len(m.index))
        lo, hi = color_range(data, log=self.log)
        mapper = self.log_mapper if self.log else self.lin_mapper
        mapper.update(low=lo, high=hi)
        self.source.data = data


# --------------------------------------------------------------------------- bars


def log_range(data: dict) -> tuple[float, float]:
    """A log axis's extent for bars from ``bottom`` to ``value`` (a decade of room above)."""
    v = [x for x in data["value"] if np.isfinite(x) and x > 0]
    if not v:
        return 1.0, 10.0
    return float(data["bottom"][0]) if data["bottom"] else min(v) / 10, max(v) * 3


def magnitude_data(by_type: pd.DataFrame, *, log: bool) -> dict:
    """Bars of magnitude (bits per unique remote IP) by network type."""
    mt = by_type["magnitude"].astype(float)
    mt = mt[np.isfinite(mt) & (mt > 0)] if log else mt.fillna(0)
    vals = _clean(mt.to_numpy())
    finite = [v for v in vals if np.isfinite(v) and v > 0]
    bottom = min(finite) / 10 if log and finite else 0.0
    return {
        "network_type": [str(t) for t in mt.index],
        "value": vals,
        "bottom": [bottom] * len(vals),
        "label": [units.fmt(v, "magnitude") for v in vals],
        "uniques": [units.fmt(v, "count") for v in by_type["uniques"].reindex(mt.index)],
        "color": [type_color(str(t)) for t in mt.index],
    }


def magnitude_figure(source: ColumnDataSource, *, log: bool, name: str) -> figure:
    """Magnitude by network type on a log or linear scale."""
    scale = "log" if log else "linear"
    p = figure(
        title=f"Magnitude by network type, {scale} scale",
        x_range=FactorRange(),
        y_axis_type=scale,
        width=WIDTH // 2 - 10,
        height=380,
        tools="save",
        name=name,
    )
    r = p.vbar(x="network_type", top="value", bottom="bottom", width=0.8, color="color",
               source=source)  # fmt: skip
    p.add_tools(
        HoverTool(
            renderers=[r],
            tooltips=[("network type", "@network_type"), ("magnitude", "@label per IP"),
                      ("distinct remote IPs", "@uniques")],
        )
    )  # fmt: skip
    if log:  # explicit: an empty log axis would make Bokeh guess (and warn)
        p.y_range = Range1d(1, 10)
    p.yaxis.formatter = units.tick_formatter("magnitude", log=log)
    p.yaxis.axis_label = "bits per unique remote IP"
    p.xaxis.major_label_orientation = 0.6
    p.xgrid.grid_line_color = None
    if not log:
        p.y_range.start = 0
    return p


def shares_data(table: pd.DataFrame, categories: Sequence[str]) -> dict:
    """Grouped bars: each category's share of all traffic, one bar per period (row)."""
    periods = [str(q) for q in table.index]
    cats = [c for c in categories if c in table.columns]
    palette = ["#9ecae1", "#3182bd", "#08519c", "#6baed6", "#c6dbef", "#2171b5"]
    xs, vals, colors, per = [], [], [], []
    for c in cats:
        for i, q in enumerate(periods):
            xs.append((c, q))
            vals.append(float(table.loc[table.index[i], c]))
            colors.append(palette[i % len(palette)])
            per.append(q)
    vals = _clean(vals)
    return {
        "x": xs,
        "value": vals,
        "label": [units.share(v) for v in vals],
        "color": colors,
        "period": per,
    }


def shares_figure(source: ColumnDataSource, name: str) -> figure:
    """Share of all traffic by destination category, period over period."""
    p = figure(
        title="Share of all traffic by destination category, quarter over quarter",
        x_range=FactorRange(),
        width=WIDTH,
        height=400,
        tools="save",
        name=name,
    )
    r = p.vbar(x="x", top="value", width=0.85, color="color", legend_field="period", source=source)
    p.add_tools(HoverTool(renderers=[r], tooltips=[("category, period", "@x"),
                                                    ("share", "@label")]))  # fmt: skip
    p.yaxis.formatter = units.tick_formatter("share")
    p.y_range.start = 0
    p.xaxis.major_label_orientation = 0.9
    p.xaxis.group_label_orientation = 0.9
    p.x_range.range_padding = 0.05
    p.xgrid.grid_line_color = None
    legend = p.legend[0]
    p.add_layout(legend, "right")
    legend.location = "top_left"
    return p


def ipv_data(table: pd.DataFrame) -> dict:
    """Distinct addresses per IP version; for IPv6, /128 addresses beside /64 prefixes."""
    xs, vals, labels, colors = [], [], [], []
    for v in table.index:
        bars = [("uniques", "addresses", "#3182bd")]
        if int(v) == 6:
            bars = [("uniques", "/128 addresses", "#3182bd"),
                    ("uniques_prefix", "/64 prefixes", "#9ecae1")]  # fmt: skip
        for col, what, color in bars:
            xs.append((f"IPv{int(v)}", what))
            x = float(table.loc[v, col])
            vals.append(x if np.isfinite(x) else float("nan"))
            labels.append(units.fmt(x, "count"))
            colors.append(color)
    return {"x": xs, "value": vals, "label": labels, "color": colors}


def bar_figure(source: ColumnDataSource, title: str, kind: str, what: str, name: str) -> figure:
    """Bars of ``value`` over categorical ``x``; axis in ``kind`` units, hover shows ``label``."""
    p = figure(
        title=title,
        x_range=FactorRange(),
        width=WIDTH // 2 - 10,
        height=360,
        tools="save",
        name=name,
    )
    r = p.vbar(x="x", top="value", width=0.7, color="color", source=source)
    p.add_tools(HoverTool(renderers=[r], tooltips=[("", "@x"), (what, "@label")]))
    p.yaxis.formatter = units.tick_formatter(kind)
    p.y_range.start = 0
    p.xgrid.grid_line_color = None
    return p


def ipv_figure(source: ColumnDataSource, name: str) -> figure:
    """IPv4 vs IPv6 uniqueness: distinct addresses (/128) and prefixes (/64)."""
    title = "Distinct remote addresses by IP version (IPv6: /128 and /64)"
    return bar_figure(source, title, "count", "distinct", name)


def ipv_volume_data(table: pd.DataFrame) -> dict:
    """Volume per IP version, with its share."""
    vals = _clean(table["bytes"].to_numpy())
    return {
        "x": [f"IPv{int(v)}" for v in table.index],
        "value": vals,
        "label": [
            f"{units.fmt(b, 'volume')} ({units.share(s)})"
            for b, s in zip(vals, table["share"], strict=True)
        ],
        "color": ["#3182bd", "#e6550d"][: len(vals)],
    }


def ipv_volume_figure(source: ColumnDataSource, name: str) -> figure:
    """Volume by IP version."""
    return bar_figure(source, "Volume by IP version", "volume", "volume", name)


def metro_data(df: pd.DataFrame) -> dict:
    """Horizontal bars: each top metro's share of the selection's volume."""
    names = [f"{r.metro} ({r.country})" if getattr(r, "country", None) else str(r.metro)
             for r in df.itertuples()]  # fmt: skip
    shares = _clean(df["share"].to_numpy()) if len(df) else []
    return {
        "metro": names,
        "value": shares,
        "label": [f"{units.share(s)} ({units.fmt(float(b), 'volume')})"
                  for s, b in zip(shares, df["bytes"] if len(df) else [], strict=True)],
        "color": ["#8c564b"] * len(names),
    }  # fmt: skip


def metro_figure(source: ColumnDataSource, title: str, name: str) -> figure:
    """Top metros of the remote endpoints, heaviest at the top."""
    metros = list(source.data["metro"])
    p = figure(
        title=title,
        y_range=FactorRange(*reversed(metros)) if metros else FactorRange(),
        width=WIDTH // 2 + 100,
        height=80 + 28 * max(3, len(metros)),
        tools="save",
        name=name,
    )
    r = p.hbar(y="metro", right="value", height=0.7, color="color", source=source)
    p.add_tools(HoverTool(renderers=[r], tooltips=[("metro", "@metro"), ("share", "@label")]))
    p.xaxis.formatter = units.tick_formatter("share")
    p.x_range.start = 0
    p.ygrid.grid_line_color = None
    return p


# --------------------------------------------------------------------------- drill-down


def series_data(series: pd.DataFrame) -> dict:
    """A selection's daily mean and peak rate (NaN on days without data: a gap in the line)."""
    return {
        "t": series.index.to_numpy() if len(series) else np.array([], "datetime64[ns]"),
        "t_label": [f"{x:%Y-%m-%d}" for x in series.index],
        "mean": _clean(series["mean"].to_numpy()) if len(series) else [],
        "peak": _clean(series["peak"].to_numpy()) if len(series) else [],
        "mean_label": [units.fmt(v, "rate") for v in series.get("mean", [])],
        "peak_label": [units.fmt(v, "rate") for v in series.get("peak", [])],
    }


def series_figure(source: ColumnDataSource, name: str, title: str = "") -> figure:
    """The drill-down's time series: daily mean and peak (of the buckets) in bits/s."""
    p = figure(
        title=title or "Selection over time",
        x_axis_type="datetime",
        width=WIDTH,
        height=280,
        tools="pan,xwheel_zoom,box_zoom,reset,save",
        name=name,
    )
    peak = p.line(x="t", y="peak", source=source, color="#e6550d", line_width=1.5,
                  legend_label="daily peak")  # fmt: skip
    mean = p.line(x="t", y="mean", source=source, color="#3182bd", line_width=2,
                  legend_label="daily mean")  # fmt: skip
    p.scatter(x="t", y="mean", source=source, color="#3182bd", size=3)
    p.add_tools(
        HoverTool(
            renderers=[mean, peak],
            mode="vline",
            tooltips=[("day", "@t_label"), ("mean", "@mean_label"), ("peak", "@peak_label")],
        )
    )
    legend = p.legend[0]
    legend.click_policy = "hide"
    p.add_layout(legend, "right")
    p.yaxis.formatter = units.tick_formatter("rate")
    p.y_range.start = 0
    return p
