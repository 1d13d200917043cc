"""Headless Chromium through selenium: PNG export of the report, and the browser tests.

Debian's chromium and chromedriver (/usr/bin/chromium, /usr/bin/chromedriver), started with
flags that keep it from reaching the network. Bokeh 3 draws each view inside a shadow root,
so :func:`deep_query` looks elements up through them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from flowatlas.errors import InputError

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def find_chromium() -> tuple[str, str]:
    """(chromium, chromedriver) paths, or an InputError that says what to install.

    ``FLOWATLAS_CHROMIUM`` and ``FLOWATLAS_CHROMEDRIVER`` name other binaries.
    """

    def first(env: str, candidates: tuple[str, ...]) -> str | None:
        names = (os.environ[env],) if os.environ.get(env) else candidates
        for name in names:
            path = shutil.which(name) if "/" not in name else name
            if path and Path(path).is_file() and os.access(path, os.X_OK):
                return path
        return None

    browser = first("FLOWATLAS_CHROMIUM", ("/usr/bin/chromium", "chromium", "chromium-browser"))
    driver = first("FLOWATLAS_CHROMEDRIVER", ("/usr/bin/chromedriver", "chromedriver"))
    if not browser or not driver:
        missing = " and ".join(n for n, p in (("Chromium", browser), ("chromedriver", driver))
                               if not p)  # fmt: skip
        raise InputError(
            f"PNG export needs {missing} (Debian: apt-get install chromium chromium-driver)"
        )
    return browser, driver


def check_browser() -> None:
    """Fail now, with one line, if PNGs cannot be drawn (before anything is written)."""
    find_chromium()
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise InputError("PNG export needs selenium (pip install selenium)") from None


def chrome(width: int = 1400, height: int = 1000, *, console_log: bool = False):
    """A headless Chromium webdriver (``console_log``: keep the page's console messages)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise InputError("PNG export needs selenium (pip install selenium)") from None
    browser, driver = find_chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--window-size={width},{height}"):
        opts.add_argument(flag)
    if console_log:
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


#: querySelectorAll that also searches every shadow root below ``root``
DEEP_QUERY_JS = """
function deepQueryAll(root, selector) {
  const out = Array.from(root.querySelectorAll(selector));
  for (const el of root.querySelectorAll("*")) {
    if (el.shadowRoot) out.push(...deepQueryAll(el.shadowRoot, selector));
  }
  return out;
}
"""


def deep_query(driver, selector: str) -> list:
    """Elements matching ``selector`` anywhere in the page, shadow roots included."""
    return driver.execute_script(
        DEEP_QUERY_JS + "return deepQueryAll(document, arguments[0]);", selector
    )


def deep_texts(driver, selector: str) -> list[str]:
    """The text of every element matching ``selector``, shadow roots included."""
    return driver.execute_script(
        DEEP_QUERY_JS
        + "return deepQueryAll(document, arguments[0]).map((e) => e.textContent.trim());",
        selector,
    )
