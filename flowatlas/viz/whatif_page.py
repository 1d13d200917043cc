"""A what-if answer as one self-contained HTML page (Bokeh; no network needed to view it).

Utilisation per month of the links that run out soonest (scenario solid, baseline dashed),
the capacity (100 %) and threshold lines, and the run-out table.
"""

from __future__ import annotations

import html
import math
import os

from bokeh.embed import file_html
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, Div, HoverTool, Legend, LegendItem, Span
from bokeh.palettes import Category10
from bokeh.plotting import figure
from bokeh.resources import INLINE

from flowatlas.whatif.projection import WhatIf

WIDTH = 1100
MAX_LINES = 10


def utilisation_figure(result: WhatIf, max_links: int = MAX_LINES) -> figure:
    """Utilisation (%) per month of the soonest-to-run-out link sides with a capacity."""
    s = result.settings
    summary = result.summary[result.summary["capacity_gbps"].notna()].head(max_links)
    months = [m for m in result.projection["month"].drop_duplicates()]
    p = figure(
        title=f"Utilisation ({s['percentile']} of bucket rates) by month: scenario solid, "
        "baseline dashed",
        x_range=months,
        width=WIDTH,
        height=420,
        tools="pan,wheel_zoom,box_zoom,reset,save",
    )
    palette = list(Category10[10])
    items = []
    proj = result.projection
    for i, r in enumerate(summary.itertuples(index=False)):
        color = palette[i % len(palette)]
        label = f"{r.link} {r.direction}"
        renderers = []
        for case, dash in (("scenario", "solid"), ("baseline", "dashed")):
            rows = proj[
                (proj.case == case) & (proj.link == r.link) & (proj.direction == r.direction)
            ]
            src = ColumnDataSource(
                {
                    "month": rows["month"].tolist(),
                    "util": (rows["utilisation"] * 100).tolist(),
                    "rate": rows["rate_gbps"].tolist(),
                    "link": [label] * len(rows),
                    "case": [case] * len(rows),
                }
            )
            renderers.append(
                p.line("month", "util", source=src, color=color, line_dash=dash, line_width=2)
            )
        items.append(LegendItem(label=label, renderers=renderers))
    p.add_layout(Span(location=100, dimension="width", line_color="#cc0000", line_width=2))
    p.add_layout(
        Span(
            location=s["threshold_percent"],
            dimension="width",
            line_color="#ff9900",
            line_dash="dotted",
            line_width=2,
        )
    )
    p.add_tools(
        HoverTool(
            tooltips=[
                ("link", "@link"),
                ("", "@case @month"),
                ("util", "@util{0.0}%"),
                ("rate", "@rate{0.00} Gbps"),
            ]
        )
    )
    p.add_layout(Legend(items=items, location="top_left"), "right")
    p.yaxis.axis_label = "% of capacity (red: capacity, orange: threshold)"
    return p


def runout_table_html(result: WhatIf) -> str:
    """The run-out table as an HTML table (baseline and scenario side by side)."""
    s = result.settings

    def pct(v: float) -> str:
        return "-" if v is None or not math.isfinite(v) else f"{100 * v:.0f}%"

    def date(v) -> str:
        return "-" if v is None or v != v else v.strftime("%Y-%m-%d")

    def label(v) -> str:
        return v if isinstance(v, str) else "-"

    head = (
        "<tr><th>#</th><th>link</th><th>dir</th><th>capacity (Gbps)</th>"
        f"<th>baseline now</th><th>baseline {s['last_month']}</th><th>baseline run-out</th>"
        f"<th>scenario now</th><th>scenario {s['last_month']}</th>"
        f"<th>scenario &gt;{s['threshold_percent']:g}%</th><th>scenario run-out</th></tr>"
    )
    rows = []
    for r in result.summary.itertuples(index=False):
        cap = "-" if not math.isfinite(r.capacity_gbps) else f"{r.capacity_gbps:g}"
        cells = [
            str(r.rank),
            html.escape(r.link),
            r.direction,
            cap,
            pct(r.baseline_util_now),
            pct(r.baseline_util_end),
            "now" if r.baseline_runout_months == 0 else date(r.baseline_runout),
            pct(r.scenario_util_now),
            pct(r.scenario_util_end),
            label(r.scenario_over_threshold),
            "now" if r.scenario_runout_months == 0 else date(r.scenario_runout),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (
        '<table class="runout" style="border-collapse:collapse" border="1" cellpadding="4">'
        f"{head}{''.join(rows)}</table>"
    )


def write_page(result: WhatIf, out: str | os.PathLike[str]) -> None:
    """Write the chart page (self-contained: Bokeh's JS inlined)."""
    s = result.settings
    title = f"flowatlas what-if: {s['scenario'] or 'baseline'}"
    intro = (
        f"<h2>{html.escape(title)}</h2><p>{html.escape(s['description'])}</p>"
        f"<p>{s['percentile']} of {s['bucket_seconds'] // 60}-minute rates over "
        f"{s['window_start'][:10]} .. {s['window_end'][:10]}, replayed; horizon "
        f"{s['first_month']} .. {s['last_month']}; threshold {s['threshold_percent']:g}%.</p>"
    )
    warn = "".join(f"<p><b>warning:</b> {html.escape(w)}</p>" for w in result.warnings)
    steps = "".join(
        f"<li>{html.escape(st.what)} (from {st.start})</li>"
        for st in result.steps.itertuples(index=False)
    )
    layout = column(
        Div(text=intro + warn + (f"<ol>{steps}</ol>" if steps else ""), width=WIDTH),
        utilisation_figure(result),
        Div(text="<h3>Links, soonest run-out first</h3>" + runout_table_html(result), width=WIDTH),
    )
    page = file_html(layout, INLINE, title=title)
    with open(out, "w", encoding="utf-8") as f:
        f.write(page)
