"""`flowatlas serve` in a real browser (Debian's chromium + chromedriver through selenium).

The server runs from the CLI as a subprocess on a free port. Every wait is on a state (the
page's status line counts server refreshes; the status is written last), never a sleep.
Screenshots go to the test's tmp dir and, with FLOWATLAS_ARTEFACTS set, to that folder.
"""

from __future__ import annotations

import pytest
from serve_support import (
    WAIT,
    Served,
    colourful,
    keep_artefact,
    make_cube,
    need_browser,
)

from flowatlas.engine.cube import open_cube
from flowatlas.viz import units
from flowatlas.viz.query import CubeQuery, Filters

pytestmark = pytest.mark.tools


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    need_browser()
    return make_cube(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def server(cube, tmp_path_factory):
    srv = Served([cube], tmp_path_factory.mktemp("log") / "serve.log")
    yield srv
    srv.stop()
    out = srv.output()
    assert "Traceback" not in out and "bokeh.core.validation" not in out, out


def status(d) -> str:
    return d.execute_script(
        "const m = window.Bokeh && Bokeh.documents.length && "
        "Bokeh.documents[0].get_model_by_name('status'); return m ? m.text : '';"
    )


def generation(d) -> int:
    text = status(d)
    return int(text.split()[1].rstrip(":")) if text.startswith("generation") else 0


def until(d, pred, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(d, WAIT, poll_frequency=0.1).until(lambda _: pred(), message=what)


def load(d, url: str) -> None:
    d.get(url)
    until(d, lambda: generation(d) >= 1, "the page's first refresh")
    until(d, lambda: d.execute_script(
        "return Bokeh.documents[0].is_idle === undefined || Bokeh.documents[0].is_idle"),
        "the document to be idle")  # fmt: skip


def after(d, action, what: str) -> None:
    """Run ``action`` and wait until the server has answered it (a new generation)."""
    g = generation(d)
    action()
    until(d, lambda: generation(d) > g, what)
    assert "error" not in status(d), status(d)


def texts(d, selector: str) -> list[str]:
    from flowatlas.viz.browser import deep_texts

    return deep_texts(d, selector)


def click_button(d, label: str) -> None:
    from flowatlas.viz.browser import deep_query

    [b] = [b for b in deep_query(d, "button") if b.text == label]
    b.click()


def click_checkbox(d, label: str) -> None:
    from flowatlas.viz.browser import deep_query

    [box] = [x for x in deep_query(d, "label") if x.text.strip() == label]
    box.click()


def click_at(d, figure: str, x, y) -> None:
    """A real mouse click at data coordinates (x, y) of the named figure."""
    pos = d.execute_script(
        """
        const fig = Bokeh.documents[0].get_model_by_name(arguments[0]);
        const view = Bokeh.index.find_one(fig);
        view.el.scrollIntoView({block: "center"});
        const conv = (range, scale, v) => scale.compute(
            typeof v === "string" ? range.synthetic(v) : v);
        const sx = conv(fig.x_range, view.frame.x_scale, arguments[1]);
        const sy = conv(fig.y_range, view.frame.y_scale, arguments[2]);
        const r = view.canvas_view.el.getBoundingClientRect();
        return [r.left + sx, r.top + sy];
        """,
        figure, x, y,
    )  # fmt: skip
    for kind in ("mousePressed", "mouseReleased"):
        event = {"type": kind, "x": pos[0], "y": pos[1], "button": "left", "clickCount": 1}
        d.execute_cdp_cmd("Input.dispatchMouseEvent", event)


def shot(d, tmp_path, name: str) -> None:
    """A screenshot of the whole page (the window grown to the page's height, then back)."""
    d.execute_script("window.scrollTo(0, 0)")
    png = tmp_path / f"serve-{name}.png"
    size = d.get_window_size()
    height = d.execute_script("return document.documentElement.scrollHeight")
    d.set_window_size(size["width"], max(size["height"], min(int(height) + 120, 4000)))
    try:
        d.save_screenshot(str(png))
    finally:
        d.set_window_size(size["width"], size["height"])
    keep_artefact(png)
    colours, busy = colourful(png)
    assert colours > 50 and busy > 0.05, (name, colours, busy)


def severe(d) -> list[dict]:
    return [e for e in d.get_log("browser") if e["level"] == "SEVERE"]


FIGURES = {
    "Heatmaps": ["heatmap-volume-figure", "heatmap-magnitude-figure",
                 "heatmap-uniqueness-figure", "heatmap-top10-figure", "heatmap-hhi-figure"],
    "Shares": ["shares-figure"],
    "Magnitude": ["magnitude-log-figure", "magnitude-lin-figure"],
    "IPv4 / IPv6": ["ipv-volume-figure", "ipv-uniques-figure"],
    "Overview": ["area"],
}  # fmt: skip


def frames(d) -> dict[str, tuple[float, float]]:
    """Each drawn figure's plotting area (width, height) in pixels, by name."""
    return dict(
        (name, (w, h))
        for name, w, h in d.execute_script(
            "return [...Bokeh.index.all_views()].filter(v => v.frame)"
            ".map(v => [v.model.name, v.frame.bbox.width, v.frame.bbox.height])"
        )
    )


def test_every_view_renders_without_console_errors(server, browser, tmp_path) -> None:
    load(browser, server.url)
    for tab, names in FIGURES.items():
        after(browser, lambda tab=tab: click_button(browser, tab), f"the {tab} tab")
        drawn = frames(browser)
        for name in names:
            w, h = drawn[name]
            assert w > 150 and h > 50, (tab, name, w, h)
        shot(browser, tmp_path, tab.replace(" / ", "-").lower())
    assert severe(browser) == []


def test_filter_change_and_cell_selection_run_server_callbacks(cube, server, browser,
                                                                tmp_path) -> None:  # fmt: skip
    load(browser, server.url)
    q = CubeQuery(open_cube(cube))
    # a filter: untick CA-East; the overview's total is recomputed for the other regions
    after(browser, lambda: click_checkbox(browser, "CA-East"), "the region filter")
    want = q.volume(Filters(regions=("US-West", "US-East")), ()).iloc[0]
    note = " ".join(texts(browser, ".fa-overview-note"))
    assert note.startswith(units.fmt(want, "volume") + " over"), note
    assert "regions=US-West,US-East" in browser.current_url

    # a heatmap cell: US-East x Neocloud, clicked with the mouse
    after(browser, lambda: click_button(browser, "Heatmaps"), "the heatmaps tab")
    after(browser, lambda: click_at(browser, "heatmap-volume-figure", "Neocloud", "US-East"),
          "the cell selection")  # fmt: skip
    [title] = texts(browser, ".fa-drill-title")
    assert "US-East x Neocloud" in title
    want = open_cube(cube).top_asns(
        by=("region", "network_type"), where={"region": "US-East", "network_type": "Neocloud"}
    )
    first = want.sort_values("rank").iloc[0]
    rows = texts(browser, ".fa-asns tbody tr td:nth-child(2)")
    assert rows[0] == f"AS{int(first['asn'])}"
    ips = texts(browser, ".fa-ips tbody tr td:nth-child(2)")
    top_ip = open_cube(cube).top_ips(
        by=("region", "network_type"), where={"region": "US-East", "network_type": "Neocloud"}
    )
    assert ips[0] == top_ip.sort_values("rank").iloc[0]["remote_ip"]
    assert "cell=US-East|Neocloud" in browser.current_url.replace("%7C", "|")
    metros = texts(browser, ".fa-metros tbody tr td:nth-child(1)")
    want = open_cube(cube).top_metros(
        by=("region", "network_type"), where={"region": "US-East", "network_type": "Neocloud"}
    )
    assert metros == list(want["metro"]) and metros
    shot(browser, tmp_path, "drilldown")

    # a period that is not stored: uniqueness becomes a labelled estimate
    def pick_days():
        browser.execute_script(
            "const d = Bokeh.documents[0];"
            "d.get_model_by_name('filter-start').value = '2025-08-03';"
            "d.get_model_by_name('filter-end').value = '2025-08-17';"
        )

    after(browser, pick_days, "a custom date range")
    until(browser, lambda: "estimate" in " ".join(texts(browser, ".fa-drill-uniques")),
          "the estimate label")  # fmt: skip
    assert severe(browser) == []


def test_area_series_click_drills_into_its_type(cube, server, browser) -> None:
    load(browser, server.url)
    q = CubeQuery(open_cube(cube))
    area = q.area(Filters())
    day = area.index[len(area) // 2]
    types = list(area.columns)
    i = types.index("Neocloud")
    lo = float(area.iloc[len(area) // 2, :i].sum())
    y = lo + float(area.iloc[len(area) // 2, i]) / 2
    x = day.value / 1e6  # Bokeh's datetime axis is in milliseconds since 1970
    after(browser, lambda: click_at(browser, "area", x, y), "the area click")
    [title] = texts(browser, ".fa-drill-title")
    assert "Neocloud (selected regions)" in title


def test_malformed_url_is_ignored_with_a_message(server, browser) -> None:
    load(browser, server.url + "?start=2025-13-45&regions=Mars&ip=6&bogus=1")
    notice = " ".join(texts(browser, ".fa-notice"))
    assert "start='2025-13-45'" in notice and "regions='Mars'" in notice and "bogus" in notice
    # the valid argument applied, the others dropped from the address
    assert "ip=6" in browser.current_url and "Mars" not in browser.current_url
    assert severe(browser) == []


def test_browser_tick_formatter_matches_python(browser, server) -> None:
    load(browser, server.url)
    cases = [
        ([0, 5e11, 1e12, 1.5e12], "rate", False),
        ([2_000_000, 2_020_000, 2_040_000], "count", False),
        ([1e3, 1e6, 1e9, 1e12, 1e15], "magnitude", True),
        ([0, 0.025, 0.05], "share", False),
        ([0, 2e-10, 4e-10], "magnitude", False),
        ([-2e9, 0, 2e9], "volume", False),
        ([0.1, 0.2, 0.3], "index", False),
        ([0, 2_000, 4_000], "count", False),
        ([999.7, 1000, 1001], "volume", False),
    ]
    for k in range(-2, 19):
        cases.append(([j * 2.5 * 10.0**k for j in range(6)], "volume", False))
    got = browser.execute_script(
        units.JS + "return arguments[0].map(([t, k, l]) => tick_labels(t, k, l));",
        [[t, k, lg] for t, k, lg in cases],
    )
    want = [units.tick_labels(t, k, lg) for t, k, lg in cases]
    assert got == want
    values = [0, 1, 999, 999.7, 1000, 12_345, 2_039_250, 8.8e17, 1.234e12, 1.47e17, -3e9,
              float("nan"), 0.4961]  # fmt: skip
    kinds = ["volume", "magnitude", "rate", "count", "share", "index"]
    got = browser.execute_script(
        units.JS + "return arguments[0].map(([v, k]) => fmt(v, k));",
        [[v if v == v else None, k] for v in values for k in kinds],
    )
    assert got == [units.fmt(v, k) for v in values for k in kinds]


def test_legend_click_hides_a_series_and_the_stack_closes_up(server, browser) -> None:
    load(browser, server.url)
    js_band = (
        "const d = Bokeh.documents[0].get_model_by_name('area-bands').data;"
        "return [Array.from(d.y0).slice(0, 2), Array.from(d.y1).slice(0, 2)];"
    )
    (cdn_top, hosting_top) = browser.execute_script(js_band)
    # Bokeh 3 draws the legend in the DOM: click the first entry's element with the mouse
    x, y, label = browser.execute_script(
        """
        const fig = Bokeh.documents[0].get_model_by_name('area');
        const legend = fig.right.find((m) => m.click_policy !== undefined);
        const entry = Bokeh.index.find_one(legend).entries[0];
        const r = entry.el.getBoundingClientRect();
        return [r.left + r.width / 2, r.top + r.height / 2, entry.el.textContent];
        """
    )
    assert label == "CDN"
    for kind in ("mousePressed", "mouseReleased"):
        event = {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}
        browser.execute_cdp_cmd("Input.dispatchMouseEvent", event)
    until(browser, lambda: browser.execute_script(
        "return !Bokeh.documents[0].get_model_by_name('area-CDN').visible"),
        "CDN hidden by the legend click")  # fmt: skip
    # the band above CDN now starts at zero: its top is its own value, not CDN's plus its own
    (_, hosting_after) = browser.execute_script(js_band)
    assert hosting_after[0] == pytest.approx(hosting_top[0] - cdn_top[0], rel=1e-9)
    assert severe(browser) == []


def test_statistic_time_step_and_scale_choices(server, browser, tmp_path) -> None:
    load(browser, server.url)

    def title() -> str:
        return browser.execute_script(
            "return Bokeh.documents[0].get_model_by_name('area').title.text")  # fmt: skip

    after(browser, lambda: click_button(browser, "p95"), "the p95 statistic")
    assert title() == "Traffic by network type (daily 95th percentile, bits per second)"
    after(browser, lambda: click_button(browser, "bucket"), "the bucket time step")
    assert title() == "Traffic by network type (every bucket, bits per second)"
    n = browser.execute_script(
        "return Bokeh.documents[0].get_model_by_name('area-points').data.t.length"
    )
    assert n == 184 * 24  # half a year of hourly buckets, gaps included
    assert "stat=p95" in browser.current_url and "res=bucket" in browser.current_url
    after(browser, lambda: click_button(browser, "Heatmaps"), "the heatmaps tab")
    after(browser, lambda: click_button(browser, "linear"), "the linear colour scale")
    mapper = browser.execute_script(
        "const r = Bokeh.documents[0].get_model_by_name('heatmap-volume-figure').renderers[0];"
        "return r.glyph.fill_color.transform.type || r.glyph.fill_color.transform.constructor.name;"
    )
    assert "Linear" in mapper
    shot(browser, tmp_path, "linear")
    assert severe(browser) == []
