"""The HTML report renders its charts in a real browser (headless Chromium).

A screenshot of the page must be full of chart colours; the same page with its scripts
removed (a control) must not, which shows the test sees Bokeh's drawing, not the page text.
And the content: the numbers BokehJS holds for its charts, read in the browser, are the
cube's (every matrix cell and every quarterly share).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from serve_support import need_browser

from flowatlas.engine.build import build_cube
from flowatlas.engine.cube import open_cube
from flowatlas.synth import synthesize
from flowatlas.viz.report import write_html
from flowatlas.viz.views import compute_views

Image = pytest.importorskip("PIL.Image")


def chromium() -> str:
    need_browser()  # skips without Chromium, fails in CI (CI=true)
    from flowatlas.viz.browser import find_chromium

    return find_chromium()[0]


def screenshot(page: Path, png: Path, profile: Path) -> None:
    cmd = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--window-size=1200,2300",
        "--virtual-time-budget=10000", f"--screenshot={png}", page.as_uri(),
    ]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.exists(), p.stderr[-2000:]


def colourful(png: Path) -> tuple[int, float]:
    """(distinct colours, share of pixels that are not near-white) of a screenshot."""
    img = Image.open(png).convert("RGB").resize((300, 575))
    raw = img.tobytes()
    pixels = [tuple(raw[i : i + 3]) for i in range(0, len(raw), 3)]
    busy = sum(1 for r, g, b in pixels if min(r, g, b) < 230) / len(pixels)
    return len(set(pixels)), busy


@pytest.mark.tools
def test_report_renders_its_charts(tmp_path) -> None:
    chromium()
    synthesize(tmp_path / "a", records=20_000, seed=2)
    build_cube(tmp_path / "a", tmp_path / "c", workers=0)
    page = write_html(compute_views(open_cube(tmp_path / "c")), tmp_path / "report.html")
    screenshot(page, tmp_path / "report.png", tmp_path / "profile")
    colours, busy = colourful(tmp_path / "report.png")
    # control: the same page without its scripts shows only the title and its sentence
    bare = re.sub(r"<script\b.*?</script>", "", page.read_text(), flags=re.S)
    (tmp_path / "bare.html").write_text(bare)
    screenshot(tmp_path / "bare.html", tmp_path / "bare.png", tmp_path / "profile2")
    bare_colours, bare_busy = colourful(tmp_path / "bare.png")
    assert bare_colours < colours
    assert busy > 0.25 and colours > 300, (busy, colours)
    assert bare_busy < 0.05, bare_busy


#: every number the page's chart data holds, read from BokehJS's own models in the browser
CHART_NUMBERS = """
const out = [];
for (const doc of Bokeh.documents) {
  for (const m of doc.all_models) {
    if (m.type !== 'ColumnDataSource') continue;
    const data = m.data instanceof Map ? [...m.data.entries()] : Object.entries(m.data);
    for (const [name, col] of data) {
      if (col == null || typeof col[Symbol.iterator] !== 'function') continue;
      for (const v of col) if (typeof v === 'number' && isFinite(v)) out.push(v);
    }
  }
}
return out;
"""


@pytest.mark.tools
def test_report_charts_hold_the_cubes_numbers(tmp_path) -> None:
    """Content, not colour: the numbers BokehJS draws in the page (its data sources, read
    in the browser) include every cell of the volume, magnitude and uniqueness matrices and
    every type's share of each quarter, as the cube gives them."""
    need_browser()
    import numpy as np
    from selenium.webdriver.support.ui import WebDriverWait

    from flowatlas.viz.browser import chrome

    synthesize(tmp_path / "a", records=20_000, seed=2)
    build_cube(tmp_path / "a", tmp_path / "c", workers=0)
    views = compute_views(open_cube(tmp_path / "c"))
    page = write_html(views, tmp_path / "report.html")
    d = chrome(1200, 1000, console_log=True)
    try:
        d.get(page.as_uri())
        WebDriverWait(d, 60, poll_frequency=0.1).until(
            lambda _: d.execute_script("return window.Bokeh && Bokeh.documents.length > 0"),
            message="BokehJS to load the page's documents",
        )
        drawn = np.sort(np.array(d.execute_script(CHART_NUMBERS), dtype=np.float64))
        severe = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    finally:
        d.quit()
    assert not severe, severe
    assert drawn.size > 100

    def shown(value: float) -> bool:
        i = np.searchsorted(drawn, value)
        near = drawn[max(0, i - 1) : i + 1]
        return bool(np.any(np.isclose(near, value, rtol=1e-9, atol=0)))

    expected = {
        "volume": views.volume.to_numpy(dtype=float).ravel(),
        "magnitude": views.magnitude.to_numpy(dtype=float).ravel(),
        "uniqueness": views.uniqueness.to_numpy(dtype=float).ravel(),
        "quarterly share": views.quarterly_share.to_numpy(dtype=float).ravel(),
    }
    for name, values in expected.items():
        values = values[np.isfinite(values) & (values > 0)]
        assert values.size, name
        # shares may be drawn as fractions or in percent
        missing = [v for v in values if not (shown(v) or shown(100 * v))]
        assert not missing, (name, missing[:5], len(missing))
