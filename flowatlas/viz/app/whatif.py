"""What-if tab: a scenario, growth sliders, each link's projected utilisation and run-out.

The scenario picked (the baseline, a shipped example or a file given to ``flowatlas serve
--scenario``) is followed by one compound monthly :class:`~flowatlas.whatif.Grow` step per
slider not at zero: one slider per network type and one per region of the cube's traffic;
the statistic of bucket rates is the scenario's unless picked. The projection is
:func:`flowatlas.whatif.whatif` on the session's cube (its traffic is cached per cube, so a
slider costs only the projection); sliders act on release (``value_throttled``). The page's
date and region filters do not apply here: capacity planning replays the cube's whole period
over every link. The tab's choices live in the page URL with the filters (viz/app/state.py),
so a copied link reopens the same what-if view. docs/whatif.md describes the model,
docs/serve.md the tab.
"""

from __future__ import annotations

import html
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from bokeh.layouts import column, row
from bokeh.models import (
    ColumnDataSource,
    CustomJS,
    DataTable,
    Div,
    FactorRange,
    HoverTool,
    MultiChoice,
    Range1d,
    Select,
    Slider,
    Span,
    TableColumn,
)
from bokeh.palettes import Category10
from bokeh.plotting import figure

from flowatlas.viz import units
from flowatlas.viz.app.state import BASELINE, GROWTH_RANGE, PERCENTILES, WhatIfState
from flowatlas.viz.charts import WIDTH
from flowatlas.whatif import (
    Grow,
    Scenario,
    ScenarioError,
    WhatIfWarning,
    example_scenario,
    load_scenario,
    whatif,
)
from flowatlas.whatif.cubes import cube_traffic

if TYPE_CHECKING:
    from flowatlas.viz.app.cubes import CubeSet

NAME = "whatif"
TITLE = "What-if"

#: the scenarios offered besides the baseline and those given to ``flowatlas serve``:
#: shipped examples, by name
EXAMPLES = ("neocloud-migration",)
#: link sides drawn when none is chosen: the soonest to run out
DEFAULT_LINES = 5
SLIDER = {"start": GROWTH_RANGE[0], "end": GROWTH_RANGE[1], "step": 0.5}
#: the statistic of bucket rates: value in the URL -> label; "" = the scenario's own
PERCENTILE_LABELS = {"": "the scenario's (p95 unless it says)", "95": "p95", "99": "p99",
                     "max": "max", "mean": "mean"}  # fmt: skip
CONTROLS_WIDTH = 270

#: the run-out table's columns: (field, title)
TABLE_FIELDS = (
    ("rank", "#"),
    ("link", "link"),
    ("direction", "dir"),
    ("capacity", "capacity"),
    ("baseline_now", "base now"),
    ("baseline_end", "base end"),
    ("baseline_over", "base >thr"),
    ("baseline_runout", "base run-out"),
    ("scenario_now", "scen now"),
    ("scenario_end", "scen end"),
    ("scenario_over", "scen >thr"),
    ("scenario_runout", "scen run-out"),
)


def slider_name(kind: str, value: str) -> str:
    """The Bokeh name of a growth slider ('type' or 'region'), for tests and scripts."""
    return f"whatif-grow-{kind}-" + "".join(c if c.isalnum() else "_" for c in value)


def scenario_catalogue(paths: Sequence[str | os.PathLike[str]] = ()) -> dict[str, Scenario]:
    """The scenarios the tab offers besides the baseline, by the name its picker and the URL
    use: the shipped examples, then each file of ``paths`` by its name without the suffix
    (made unique with -2, -3 ...). A file that cannot be read raises ScenarioError naming it.
    """
    out = {name: load_scenario(example_scenario(name)) for name in EXAMPLES}
    for path in paths:
        stem = Path(path).stem or "scenario"
        name, i = stem, 2
        while name in out or name == BASELINE:
            name, i = f"{stem}-{i}", i + 1
        out[name] = load_scenario(path)
    return out


def check_scenarios(cubes: CubeSet, scenarios: Mapping[str, Scenario]) -> None:
    """Project each scenario on each served cube once, so that one the tab could not show
    (a region, network type or link the cube lacks) fails before the server starts."""
    for name in cubes.names:
        q, _ = cubes.get(name)
        for scenario in scenarios.values():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", WhatIfWarning)
                try:
                    whatif(q.cube, scenario)
                except ScenarioError as exc:
                    raise ScenarioError(f"{exc} (on cube {q.cube.path})") from None


def with_growth(base: Scenario, types: dict[str, float], regions: dict[str, float]) -> Scenario:
    """``base`` followed by one Grow step per non-zero monthly percent (types, then regions)."""
    steps = list(base.steps)
    steps += [Grow(monthly_percent=v, network_types=[t]) for t, v in types.items() if v]
    steps += [Grow(monthly_percent=v, regions=[r]) for r, v in regions.items() if v]
    return Scenario(
        steps,
        name=base.name or BASELINE,
        description=base.description,
        horizon=base.horizon,
        percentile=base.percentile,
        threshold=base.threshold,
        origin=base.origin,
    )


def _pct(u) -> str:
    return units.fmt(u, "share") if u is not None and math.isfinite(u) else units.MISSING


def _date(v, months) -> str:
    if months == 0:
        return "now"
    return units.MISSING if v is None or pd.isna(v) else v.strftime("%Y-%m-%d")


def table_data(summary: pd.DataFrame) -> dict[str, list]:
    """The run-out table's columns, formatted (rates and capacity in bits per second)."""
    out: dict[str, list] = {f: [] for f, _ in TABLE_FIELDS}
    for r in summary.itertuples(index=False):
        out["rank"].append(str(r.rank))
        out["link"].append(r.link)
        out["direction"].append(r.direction)
        out["capacity"].append(units.fmt(r.capacity_gbps * 1e9, "rate"))
        for case in ("baseline", "scenario"):
            now = getattr(r, f"{case}_now_gbps")
            out[f"{case}_now"].append(
                f"{units.fmt(now * 1e9, 'rate')} {_pct(getattr(r, f'{case}_util_now'))}"
            )
            out[f"{case}_end"].append(_pct(getattr(r, f"{case}_util_end")))
            over = getattr(r, f"{case}_over_threshold")
            out[f"{case}_over"].append(over if isinstance(over, str) else units.MISSING)
            out[f"{case}_runout"].append(
                _date(getattr(r, f"{case}_runout"), getattr(r, f"{case}_runout_months"))
            )
    return out


class View:
    TITLE = TITLE
    NAME = NAME

    def __init__(self, page) -> None:
        q, _ = page.query()
        traffic = cube_traffic(q.cube)
        self.types = list(traffic.network_types)
        self.regions = list(traffic.regions)
        state = page.state.whatif  # from the URL: the tab opens as the link showed it
        self.w_scenario = Select(
            title="Scenario",
            options=list(page.choices.scenarios),
            value=state.scenario,
            name="whatif-scenario",
            width=CONTROLS_WIDTH - 20,
        )
        self.w_percentile = Select(
            title="Statistic of bucket rates",
            options=[(v, PERCENTILE_LABELS[v]) for v in PERCENTILES],
            value=state.percentile,
            name="whatif-percentile",
            width=CONTROLS_WIDTH - 20,
        )
        self.w_links = MultiChoice(
            title=f"Links drawn (none: the {DEFAULT_LINES} soonest to run out)",
            options=list(state.links),
            value=list(state.links),
            name="whatif-links",
            width=CONTROLS_WIDTH - 20,
        )
        self.type_sliders = {
            t: self._slider("type", t, state.grow_types.get(t, 0.0)) for t in self.types
        }
        self.region_sliders = {
            r: self._slider("region", r, state.grow_regions.get(r, 0.0)) for r in self.regions
        }
        for w in (self.w_scenario, self.w_percentile, self.w_links):
            w.on_change("value", lambda attr, old, new: self._changed(page))
        for s in [*self.type_sliders.values(), *self.region_sliders.values()]:
            s.on_change("value_throttled", lambda attr, old, new: self._changed(page))

        self.lines = {
            case: ColumnDataSource(
                {"xs": [], "ys": [], "label": [], "link": [], "color": []},
                name=f"whatif-{case}-lines",
            )
            for case in ("scenario", "baseline")
        }
        self.figure = figure(
            title="Utilisation by month: scenario solid, baseline dashed",
            x_range=FactorRange(factors=["now"]),
            y_range=Range1d(0, 1.1),
            width=WIDTH - CONTROLS_WIDTH,
            height=380,
            tools="pan,wheel_zoom,box_zoom,reset,save",
            name="whatif-figure",
        )
        for case, dash in (("scenario", "solid"), ("baseline", "dashed")):
            extra = {"legend_field": "link"} if case == "scenario" else {}
            self.figure.multi_line("xs", "ys", source=self.lines[case], line_color="color",
                                   line_dash=dash, line_width=2, **extra)  # fmt: skip
        self.figure.legend.location = "bottom_right"
        self.figure.legend.label_text_font_size = "10px"
        self.figure.yaxis.formatter = units.tick_formatter("share")
        self.figure.yaxis.axis_label = "utilisation (of capacity)"
        self.figure.add_tools(HoverTool(tooltips=[("link", "@label")], line_policy="nearest"))
        self.capacity = Span(location=1.0, dimension="width", line_color="#a33", line_width=2)
        self.threshold = Span(
            location=0.8, dimension="width", line_color="#d80", line_dash="dotted", line_width=2
        )
        self.figure.renderers.extend([self.capacity, self.threshold])
        self.source = ColumnDataSource({f: [] for f, _ in TABLE_FIELDS}, name="whatif-source")
        widths = {"rank": 30, "link": 130, "direction": 40, "capacity": 75}
        widths |= {
            f"{c}_{k}": w
            for c in ("baseline", "scenario")
            for k, w in (("now", 125), ("end", 65), ("over", 70), ("runout", 95))
        }
        self.table = DataTable(
            source=self.source,
            columns=[TableColumn(field=f, title=t, width=widths[f]) for f, t in TABLE_FIELDS],
            width=WIDTH,
            height=300,
            index_position=None,
            autosize_mode="none",
            sortable=False,
            name="whatif-table",
        )
        # BokehJS redraws a DataTable when its view's rows change, not when only the values
        # do (same number of rows): tell the view that the data changed
        self.source.js_on_change(
            "data", CustomJS(args={"table": self.table}, code="table.view.change.emit()")
        )
        self.note = Div(text="", name="whatif-note", width=WIDTH)
        label = "<b style='font:12px sans-serif'>{}</b>".format
        controls = column(
            self.w_scenario,
            self.w_percentile,
            Div(text=label("Growth by network type, % a month")),
            *self.type_sliders.values(),
            Div(text=label("Growth by region, % a month")),
            *self.region_sliders.values(),
            self.w_links,
            width=CONTROLS_WIDTH,
        )
        self.layout = column(row(controls, self.figure), self.note, self.table)

    def _slider(self, kind: str, value: str, percent: float) -> Slider:
        return Slider(
            title=value,
            name=slider_name(kind, value),
            width=CONTROLS_WIDTH - 20,
            format="0[.]0",
            value=percent,
            **SLIDER,
        )

    def _changed(self, page) -> None:
        """Keep the tab's choices in the page's state (so in its URL) and recompute this
        tab (a widget of its own changed; the page's filters did not)."""
        page.state.whatif = WhatIfState(
            scenario=self.w_scenario.value,
            grow_types={t: float(s.value) for t, s in self.type_sliders.items() if s.value},
            grow_regions={r: float(s.value) for r, s in self.region_sliders.items() if s.value},
            percentile=self.w_percentile.value,
            links=tuple(self.w_links.value),
        )
        page._dirty.add(page.views.index(self))
        page.refresh()

    def scenario(self, page) -> Scenario:
        """The picked scenario plus the sliders' growth."""
        pick = self.w_scenario.value
        base = page.scenarios.get(pick) or Scenario(name=BASELINE)
        return with_growth(
            base,
            {t: float(s.value) for t, s in self.type_sliders.items()},
            {r: float(s.value) for r, s in self.region_sliders.items()},
        )

    def update(self, page) -> None:
        q, _ = page.query()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", WhatIfWarning)
            result = whatif(q.cube, self.scenario(page), percentile=self.w_percentile.value or None)
        summary = result.summary[result.summary["capacity_gbps"].notna()]
        keys = [f"{r.link} {r.direction}" for r in summary.itertuples(index=False)]
        self.w_links.options = keys
        chosen = [k for k in self.w_links.value if k in keys] or keys[:DEFAULT_LINES]
        proj = result.projection
        months = list(proj["month"].drop_duplicates())
        self.figure.x_range.factors = months
        palette = list(Category10[10])
        top = 1.0  # the capacity line is always in view
        for case, src in self.lines.items():
            data: dict[str, list] = {"xs": [], "ys": [], "label": [], "link": [], "color": []}
            rows = proj[proj["case"] == case]
            for i, key in enumerate(chosen):
                link, direction = key.rsplit(" ", 1)
                one = rows[(rows["link"] == link) & (rows["direction"] == direction)]
                data["xs"].append(one["month"].tolist())
                data["ys"].append(one["utilisation"].tolist())
                data["label"].append(f"{key} ({case})")
                data["link"].append(key)
                top = max([top, *one["utilisation"].dropna()])
                data["color"].append(palette[i % len(palette)])
            src.data = data
        self.figure.y_range.end = 1.08 * top
        s = result.settings
        self.threshold.location = s["threshold_percent"] / 100
        self.source.data = table_data(summary)
        notes = [
            f"{s['scenario']}: {s['percentile']} of {s['bucket_seconds'] // 60}-minute rates over "
            f"{s['window_start'][:10]} .. {s['window_end'][:10]} (replayed), horizon "
            f"{s['first_month']} .. {s['last_month']}, threshold {s['threshold_percent']:g}%; "
            f"{len(result.steps)} step(s); the page's filters do not apply here",
            *[str(w.message) for w in caught],
        ]
        self.note.text = (
            "<p class='fa-note fa-whatif-note'>"
            + "<br>".join(html.escape(n) for n in notes)
            + "</p>"
        )
