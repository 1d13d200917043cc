"""The server's what-if tab in a real browser: a scenario and a growth slider change the
utilisation chart and the run-out table, whose numbers equal ``cube.whatif`` in process.

The server runs from the CLI as a subprocess (tests/serve_support.py); every wait is on a
state (the status line's generation, the table's text), never a sleep.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from serve_support import (
    Served,
    make_cube,
    need_browser,
)
from test_serve_browser import after, click_button, load, severe, shot, until

from flowatlas.engine.cube import open_cube
from flowatlas.viz import units
from flowatlas.viz.app.whatif import slider_name, table_data, with_growth
from flowatlas.whatif import Grow, Scenario, WhatIfWarning, example_scenario, load_scenario

pytestmark = pytest.mark.tools

ROWS_JS = """
return deepQueryAll(document, '.slick-row')
    .map((r) => [parseFloat(r.style.top) || 0,
                 [...r.querySelectorAll('.slick-cell')].map((c) => c.textContent.trim())])
    .sort((a, b) => a[0] - b[0]).map((r) => r[1]);
"""


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    return make_cube(tmp_path_factory.mktemp("whatif"), records=6_000, metros=False)


MINE = """
name = "us-east-neocloud-x3"
description = "US-East neocloud egress x3"
percentile = 99

[[steps]]
op = "scale"
factor = 3
regions = ["US-East"]
network_types = ["Neocloud"]
directions = ["egress"]
"""


@pytest.fixture(scope="module")
def mine(tmp_path_factory) -> Path:
    """A scenario file of our own, as ``flowatlas serve --scenario`` takes it."""
    path = tmp_path_factory.mktemp("scenarios") / "mine.toml"
    path.write_text(MINE)
    return path


@pytest.fixture(scope="module")
def server(cube, mine, tmp_path_factory):
    need_browser()
    srv = Served([cube], tmp_path_factory.mktemp("log") / "serve.log", "--scenario", str(mine))
    yield srv
    srv.stop()
    assert "Traceback" not in srv.output(), srv.output()


def table_rows(d) -> list[list[str]]:
    """The run-out table's rows as the page shows them, top to bottom."""
    from flowatlas.viz.browser import DEEP_QUERY_JS

    return d.execute_script(DEEP_QUERY_JS + ROWS_JS)


def set_model(d, name: str, **values) -> None:
    """Set properties of a named Bokeh model in the browser (synced to the server)."""
    d.execute_script(
        "Bokeh.documents[0].get_model_by_name(arguments[0]).setv(arguments[1]);", name, values
    )


def expected(cube, scenario: Scenario, **options) -> dict[str, list]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WhatIfWarning)
        summary = open_cube(cube).whatif(scenario, **options).summary
    return table_data(summary[summary["capacity_gbps"].notna()])


def shown(want: dict[str, list], n: int) -> list[list[str]]:
    """The first ``n`` rows of a table_data dict, as the page's cells read."""
    return [[want[f][i] for f in want] for i in range(n)]


def test_slider_updates_chart_and_runout_table(cube, server, browser, tmp_path) -> None:
    load(browser, server.url)
    after(browser, lambda: click_button(browser, "What-if"), "the what-if tab")
    until(browser, lambda: len(table_rows(browser)) >= 3, "the run-out table")
    n = 3
    base = expected(cube, Scenario())
    assert table_rows(browser)[:n] == shown(base, n)

    # the shipped example scenario, then 5 % a month of growth in US-East on top of it
    after(browser, lambda: set_model(browser, "whatif-scenario", value="neocloud-migration"),
          "the scenario picker")  # fmt: skip
    example = load_scenario(example_scenario("neocloud-migration"))
    want = expected(cube, example)
    until(browser, lambda: table_rows(browser)[:n] == shown(want, n), "the example's table")
    before = table_rows(browser)[:n]
    lines_js = (
        "const d = Bokeh.documents[0].get_model_by_name('whatif-scenario-lines').data;"
        "return [d.label, d.ys.map((y) => Array.from(y))];"
    )
    lines_before = browser.execute_script(lines_js)

    name = slider_name("region", "US-East")
    after(browser, lambda: set_model(browser, name, value=5, value_throttled=5), "the slider")
    grown = Scenario([*example.steps, Grow(monthly_percent=5, regions=["US-East"])])
    want = expected(cube, grown)
    until(browser, lambda: table_rows(browser)[:n] != before, "the table to change")
    rows = table_rows(browser)[:n]
    assert rows == shown(want, n)
    # the tab's own composition is the same scenario
    assert expected(cube, with_growth(example, {}, {"US-East": 5})) == want
    # the first row's scenario utilisation at the horizon's end, computed here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WhatIfWarning)
        summary = open_cube(cube).whatif(grown).summary
    first = summary[summary["capacity_gbps"].notna()].iloc[0]
    assert rows[0][1] == first["link"]
    assert rows[0][9] == units.fmt(first["scenario_util_end"], "share")

    # the chart: the same link sides drawn, their scenario lines raised by the growth
    labels, ys = browser.execute_script(lines_js)
    assert labels[0] == f"{first['link']} {first['direction']} (scenario)"
    assert ys[0][-1] == pytest.approx(first["scenario_util_end"], rel=1e-9)
    assert ys != lines_before[1]
    shot(browser, tmp_path, "whatif")
    assert severe(browser) == []

    # the URL holds the tab's choices: opened again, it shows the same view
    url = browser.current_url
    assert "scenario=neocloud-migration" in url and "grow_regions=US-East:5" in url, url
    load(browser, url)
    until(browser, lambda: len(table_rows(browser)) >= n, "the reopened run-out table")
    assert table_rows(browser)[:n] == rows
    assert browser.execute_script(lines_js)[1] == ys


def test_a_scenario_file_given_to_serve_is_offered_and_opens_from_its_url(
    cube, mine, server, browser
) -> None:
    load(browser, server.url + "?tab=whatif&scenario=mine&pct=max")
    options = browser.execute_script(
        "return Bokeh.documents[0].get_model_by_name('whatif-scenario').options;"
    )
    assert options == ["baseline", "neocloud-migration", "mine"]
    want = expected(cube, load_scenario(mine), percentile="max")
    until(browser, lambda: table_rows(browser)[:3] == shown(want, 3), "the file's table")
    assert severe(browser) == []


def test_the_whatif_view_lives_in_the_url(cube, mine) -> None:
    """The tab's choices go into the page URL; a page opened on it shows the same view."""
    from urllib.parse import parse_qsl

    from test_serve import _page

    from flowatlas.viz.app import TABS, whatif
    from flowatlas.viz.app.cubes import CubeSet
    from flowatlas.viz.app.whatif import scenario_catalogue

    catalogue = scenario_catalogue([mine])
    assert list(catalogue) == ["neocloud-migration", "mine"]
    page = _page(CubeSet([cube]), "whatif", {}, catalogue)
    view = page.views[TABS.index(whatif)]
    assert view.w_scenario.options == ["baseline", "neocloud-migration", "mine"]
    view.w_scenario.value = "mine"
    view.type_sliders["CDN"].value = 1.5
    view.region_sliders["US-East"].value = 2.5
    view.w_percentile.value = "mean"
    view._changed(page)  # what the widgets' callbacks run
    url = page.url.text
    for part in ("tab=whatif", "scenario=mine", "grow_types=CDN:1.5", "grow_regions=US-East:2.5",
                 "pct=mean"):  # fmt: skip
        assert part in url, url
    want = expected(cube, with_growth(load_scenario(mine), {"CDN": 1.5}, {"US-East": 2.5}),
                    percentile="mean")  # fmt: skip
    assert view.source.data == want

    again = _page(CubeSet([cube]), "whatif", dict(parse_qsl(url)), catalogue)
    assert again.url_messages == []
    other = again.views[TABS.index(whatif)]
    assert other.w_scenario.value == "mine" and other.w_percentile.value == "mean"
    assert other.region_sliders["US-East"].value == 2.5 and other.type_sliders["CDN"].value == 1.5
    assert other.source.data == want
    assert again.url.text == url and "error" not in again.status.text


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('name = "x"\ncolour = 2\n', "bad.toml: unknown key 'colour'"),
        ('[[steps]]\nop = "scale"\nfactor = 2\nregions = ["Mars"]\n',
         "bad.toml: steps[0].regions[0]: unknown region 'Mars'"),
        (None, "bad.toml: scenario file not found"),
    ],
)  # fmt: skip
def test_serve_refuses_a_bad_scenario_file_before_it_starts(cube, tmp_path, text, needle) -> None:
    import subprocess
    import sys

    from serve_support import free_port

    bad = tmp_path / "bad.toml"
    if text is not None:
        bad.write_text(text)
    cmd = [sys.executable, "-m", "flowatlas", "serve", str(cube), "--port", str(free_port()),
           "--scenario", str(bad)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowatlas: error: ") and needle in lines[0]
    assert "Ctrl-C" not in r.stderr  # it never started


def test_tab_in_process_follows_picker_and_sliders(cube) -> None:
    """The tab's widgets drive the projection (no browser: runs wherever the suite runs)."""
    from bokeh.document import Document

    from flowatlas.viz.app import TABS, whatif
    from flowatlas.viz.app.cubes import CubeSet
    from flowatlas.viz.app.page import Page

    page = Page(Document(), CubeSet([cube]), TABS)
    page.tabs.active = TABS.index(whatif)
    view = page.views[TABS.index(whatif)]
    assert view.source.data == expected(cube, Scenario())
    view.w_scenario.value = "neocloud-migration"
    view.type_sliders["Hyperscaler"].value = 3.0
    view.region_sliders["US-West"].value = -1.5
    view._changed(page)  # what the sliders' value_throttled callback runs
    example = load_scenario(example_scenario("neocloud-migration"))
    steps = [*example.steps, Grow(monthly_percent=3.0, network_types=["Hyperscaler"]),
             Grow(monthly_percent=-1.5, regions=["US-West"])]  # fmt: skip
    assert view.source.data == expected(cube, Scenario(steps))
    assert "error" not in page.status.text
    # the chart draws the table's first link sides, the scenario's utilisation month by month
    first = view.source.data["link"][0], view.source.data["direction"][0]
    assert view.lines["scenario"].data["link"][0] == " ".join(first)
    assert view.lines["scenario"].data["ys"][0][-1] == pytest.approx(
        float(view.source.data["scenario_end"][0].rstrip("%")) / 100, abs=0.0006
    )
