"""One browser session's page: the filters, the tabs, the drill-down, and their wiring.

Every widget writes into the page's :class:`State`; :meth:`Page.refresh` then updates the
visible tab and the drill-down from the cube's cached views (other tabs update when shown).
A callback that fails shows its error on the page and leaves the session running.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import (
    CheckboxGroup,
    CustomJS,
    DatePicker,
    RadioButtonGroup,
    Select,
)

from flowatlas.viz.app.cubes import CubeSet
from flowatlas.viz.app.drilldown import DrillDown
from flowatlas.viz.app.state import BASELINE, SCALES, Choices, encode, parse_args
from flowatlas.viz.charts import WIDTH, div
from flowatlas.viz.query import RESOLUTIONS, STATS, CubeQuery, Filters

if TYPE_CHECKING:
    from flowatlas.whatif import Scenario

log = logging.getLogger(__name__)

IP_CHOICES = ("all", "IPv4", "IPv6")
_URL_JS = """
const q = (typeof state !== "undefined" ? state : cb_obj).text;
window.history.replaceState(null, "", q ? "?" + q : window.location.pathname);
"""


def _periods(q: CubeQuery) -> list[tuple[str, str]]:
    """(value, label) of the period menu: whole range, quarters, months of the cube."""
    out = [("all", "whole range")]
    if q.first_day is None:
        return out
    for freq in ("Q", "M"):  # 2025Q3, then 2025-07
        out += [(f"{freq}:{p}", str(p)) for p in q.days.to_period(freq).unique()]
    return out


def _period_days(q: CubeQuery, value: str) -> tuple[dt.date | None, dt.date | None]:
    if value == "all" or ":" not in value:
        return q.first_day, q.last_day
    import pandas as pd

    freq, p = value.split(":", 1)
    period = pd.Period(p, freq=freq)
    return (
        max(period.start_time.date(), q.first_day),
        min(period.end_time.date(), q.last_day),
    )


class Page:
    """The page of one session."""

    def __init__(
        self,
        doc: Document,
        cubes: CubeSet,
        tabs: list,
        scenarios: Mapping[str, Scenario] | None = None,
    ) -> None:
        if scenarios is None:
            from flowatlas.viz.app.whatif import scenario_catalogue

            scenarios = scenario_catalogue()
        self.doc = doc
        self.cubes = cubes
        #: the what-if tab's scenarios by the name its picker and the URL use
        self.scenarios = dict(scenarios)
        self.generation = 0
        self._busy = False
        all_types: list[str] = []
        all_regions: list[str] = []
        all_dirs: list[str] = []
        for name in cubes.names:
            q, _ = cubes.get(name)
            all_types += [t for t in q.types if t not in all_types]
            all_regions += [r for r in q.regions if r not in all_regions]
            all_dirs += [d for d in q.directions if d not in all_dirs]
        self.all_types = all_types
        self.choices = Choices(
            cubes=tuple(cubes.names),
            regions=tuple(all_regions),
            directions=tuple(all_dirs),
            types=tuple(all_types),
            tabs=tuple(m.NAME for m in tabs),
            scenarios=(BASELINE, *self.scenarios),
        )
        args = {}
        ctx = doc.session_context
        if ctx is not None and ctx.request is not None:
            args = ctx.request.arguments or {}
        self.state, self.url_messages = parse_args(args, self.choices)
        self.notice = div(text="", name="notice", width=WIDTH)
        self.status = div(text="", name="status", styles={"color": "#666", "font-size": "11px"})
        self.url = div(text="", visible=False, name="url-state")
        self.url.js_on_change("text", CustomJS(code=_URL_JS))
        self._build_filters()
        # tabs are built when first shown: a new session pays for the one it shows
        self.modules = list(tabs)
        self.views: list = [None] * len(tabs)
        self.slots = [column(div(""), name=f"tab-{m.NAME}") for m in tabs]  # filled when shown
        # a button bar rather than Tabs: Tabs keeps the height of its tallest panel
        self.tabs = RadioButtonGroup(
            labels=[m.TITLE for m in tabs],
            active=self.choices.tabs.index(self.state.tab),
            name="tabs",
        )
        self.tabs.on_change("active", self._on_tab)
        self._show_tab(self.tabs.active)
        self.drill = DrillDown(self)
        self._dirty = set(range(len(self.views)))
        self._last_query: CubeQuery | None = None
        header = div(
            text="<h2 style='margin:4px 0'>flowatlas: where the traffic goes</h2>",
            width=WIDTH,
        )
        main = column(
            header,
            self.notice,
            self.tabs,
            *self.slots,
            self.drill.layout,
            self.status,
            self.url,
        )
        doc.add_root(row(self.filter_panel, main, name="page"))
        doc.title = "flowatlas"
        doc.js_on_event("document_ready", CustomJS(args={"state": self.url}, code=_URL_JS))
        doc.add_periodic_callback(self._check_stale, 3000)
        self.refresh()

    # ------------------------------------------------------------------ cube and filters
    def query(self) -> tuple[CubeQuery, str | None]:
        """The selected cube's views (reloaded if the cube changed on disk) and its stale note."""
        return self.cubes.get(self.state.cube)

    def previous(self) -> CubeQuery | None:
        q, _ = self.cubes.previous()
        return q

    @property
    def filters(self) -> Filters:
        return self.state.filters

    def _build_filters(self) -> None:
        q, _ = self.query()
        f = q.normalize(self.state.filters)
        self.w_cube = Select(title="Cube", options=list(self.choices.cubes), value=self.state.cube,
                             name="filter-cube", visible=len(self.choices.cubes) > 1)  # fmt: skip
        self.w_period = Select(title="Period", name="filter-period")
        self.w_start = DatePicker(title="From", name="filter-start", width=130)
        self.w_end = DatePicker(title="To", name="filter-end", width=130)
        self.w_regions = CheckboxGroup(name="filter-regions")
        self.w_dirs = CheckboxGroup(name="filter-directions")
        self.w_types = CheckboxGroup(name="filter-types")
        self.w_ip = RadioButtonGroup(labels=list(IP_CHOICES), name="filter-ip")
        self.w_stat = RadioButtonGroup(labels=list(STATS), name="filter-stat")
        self.w_res = RadioButtonGroup(labels=list(RESOLUTIONS), name="filter-res")
        self.w_scale = RadioButtonGroup(labels=list(SCALES), name="filter-scale")
        self._set_widgets(q, f)

        label = "<b style='font:12px sans-serif'>{}</b>".format
        groups = (
            ("Regions", self.w_regions),
            ("Directions", self.w_dirs),
            ("IP version", self.w_ip),
            ("Network types", self.w_types),
            ("Rate per day", self.w_stat),
            ("Time step", self.w_res),
            ("Heatmap colour scale", self.w_scale),
        )
        self.filter_panel = column(
            self.w_cube,
            self.w_period,
            row(self.w_start, self.w_end),
            *[x for title, w in groups for x in (div(text=label(title)), w)],
            width=280,
            name="filters",
        )
        for w in (self.w_cube, self.w_period, self.w_start, self.w_end):
            w.on_change("value", lambda attr, old, new, w=w: self._on_filter(w))
        for w in (self.w_regions, self.w_dirs, self.w_types, self.w_ip, self.w_stat, self.w_res,
                  self.w_scale):  # fmt: skip
            w.on_change("active", lambda attr, old, new, w=w: self._on_filter(w))

    def _set_widgets(self, q: CubeQuery, f: Filters) -> None:
        """Show ``f`` (normalised for ``q``) in the widgets, without firing their callbacks."""
        self._busy = True
        try:
            self.w_cube.value = self.state.cube
            periods = _periods(q)
            self.w_period.options = periods
            chosen = next(
                (v for v, _ in periods if _period_days(q, v) == (f.start, f.end)), "custom"
            )
            if chosen == "custom":
                self.w_period.options = [*periods, ("custom", "custom range")]
            self.w_period.value = chosen
            for w in (self.w_start, self.w_end):
                w.min_date, w.max_date = q.first_day, q.last_day
            self.w_start.value = f.start
            self.w_end.value = f.end
            self.w_regions.labels = list(q.regions)
            self.w_regions.active = [i for i, r in enumerate(q.regions) if r in f.regions]
            self.w_dirs.labels = list(q.directions)
            self.w_dirs.active = [i for i, d in enumerate(q.directions) if d in f.directions]
            self.w_types.labels = list(q.types)
            self.w_types.active = [i for i, t in enumerate(q.types) if t in f.types]
            self.w_ip.active = 0 if len(f.ip_versions) != 1 else (1 if f.ip_versions[0] == 4 else 2)
            self.w_stat.active = STATS.index(self.state.stat)
            self.w_res.active = RESOLUTIONS.index(self.state.resolution)
            self.w_scale.active = SCALES.index(self.state.scale)
        finally:
            self._busy = False

    def _read_widgets(self, q: CubeQuery, changed) -> None:
        """Update the state from the widgets (the period menu sets the dates)."""
        s = self.state
        if changed is self.w_cube and self.w_cube.value != s.cube:
            s.cube = self.w_cube.value
            s.filters = Filters()
            s.cell = None
            return
        start, end = _as_date(self.w_start.value), _as_date(self.w_end.value)
        if changed is self.w_period and self.w_period.value != "custom":
            start, end = _period_days(q, self.w_period.value)
        if start and end and start > end:
            start, end = end, start
        pick = lambda w, values: tuple(values[i] for i in sorted(w.active))  # noqa: E731
        ip = {1: (4,), 2: (6,)}.get(self.w_ip.active, ())
        s.filters = Filters(
            start=start,
            end=end,
            regions=pick(self.w_regions, q.regions),
            directions=pick(self.w_dirs, q.directions),
            ip_versions=ip,
            types=pick(self.w_types, q.types),
        )
        s.stat = STATS[self.w_stat.active or 0]
        s.resolution = RESOLUTIONS[self.w_res.active or 0]
        s.scale = SCALES[self.w_scale.active or 0]

    # ------------------------------------------------------------------ callbacks
    def _on_filter(self, changed) -> None:
        if self._busy:
            return
        q, _ = self.query()
        self._read_widgets(q, changed)
        self._dirty = set(range(len(self.views)))
        self.refresh()

    def _on_tab(self, attr, old, new) -> None:
        if new is None:
            return
        self.state.tab = self.modules[new].NAME
        self._show_tab(new)
        self.refresh()

    def _show_tab(self, i: int) -> None:
        """Make tab ``i`` the visible one, building its view the first time."""
        if self.views[i] is None:
            self.views[i] = self.modules[i].View(self)
            self.slots[i].children = [self.views[i].layout]
        for k, slot in enumerate(self.slots):
            slot.visible = k == i

    def select(self, cell: tuple[str | None, str] | None) -> None:
        """Drill into a cell (region, network type) or a whole type (None, network type)."""
        if cell == self.state.cell:
            return
        self.state.cell = cell
        for v in self.views:
            show = getattr(v, "show_selection", None) if v is not None else None
            if show is not None:
                show(self)
        self.refresh(tabs=False)

    def _check_stale(self) -> None:
        q, stale = self.query()
        if q is not self._last_query or (stale or "") not in self.notice.text:
            self._dirty = set(range(len(self.views)))
            self.refresh()

    # ------------------------------------------------------------------ drawing
    def refresh(self, tabs: bool = True) -> None:
        """Redraw what the state changed: the visible tab (if ``tabs``) and the drill-down.

        Changes are held until the refresh ends, so a property set twice is sent once.
        """
        self.doc.hold("combine")
        try:
            self._refresh(tabs)
        finally:
            self.doc.unhold()

    def _refresh(self, tabs: bool) -> None:
        t0 = time.perf_counter()
        self.generation += 1
        try:
            q, stale = self.query()
            if q is not self._last_query:  # first refresh, another cube, or reloaded from disk
                self._dirty = set(range(len(self.views)))
                self._last_query = q
            f = q.normalize(self.state.filters)
            self.state.filters = q.sparse(f)
            self._set_widgets(q, f)
            for i in [self.tabs.active] if tabs else []:
                if i in self._dirty and self.views[i] is not None:
                    self.views[i].update(self)
                    self._dirty.discard(i)
            self.drill.update(self)
            self.url.text = encode(self.state, self.choices.cubes[0])
            notes = [html.escape(m) for m in self.url_messages]
            if stale:
                notes.append(html.escape(stale))
            self.notice.text = (
                "<div class='fa-notice' style='color:#a33;font:12px sans-serif'>"
                + "<br>".join(notes)
                + "</div>"
                if notes
                else ""
            )
            ms = 1000 * (time.perf_counter() - t0)
            self.status.text = (
                f"generation {self.generation}: updated in {ms:.0f} ms; {q.name} loaded "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(q.loaded_at))}"
            )
        except Exception as exc:  # a bug must not end the session: show it, log it
            log.exception("page refresh failed")
            self.status.text = (
                f"generation {self.generation}: error: {html.escape(type(exc).__name__)}: "
                f"{html.escape(str(exc))}"
            )


def _as_date(value) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def make_document(
    doc: Document,
    cubes: CubeSet,
    tabs: list | None = None,
    scenarios: Mapping[str, Scenario] | None = None,
) -> None:
    """Bokeh's entry point for a new session: build its page (``scenarios``: the what-if
    tab's, by name; default: the shipped examples)."""
    from flowatlas.viz.app import TABS

    try:
        Page(doc, cubes, list(TABS if tabs is None else tabs), scenarios)
    except Exception as exc:  # a bug: show it on the page instead of an HTTP 500
        log.exception("cannot build the page")
        doc.clear()
        doc.add_root(
            div(
                text=f"<p style='color:#a33'>flowatlas: cannot build this page: "
                f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</p>",
                name="page-error",
            )
        )
