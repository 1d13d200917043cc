"""Helpers for the server and report tests: small cubes, a served CLI, a browser, artefacts."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flowatlas.engine.build import build_cube
from flowatlas.synth import synthesize

#: metros given to the synthetic world's neocloud and hyperscaler prefixes (the seed's list,
#: East Coast first: a prefix's metro is picked by its row number, so the East comes up more)
METROS = {
    "Neocloud": [("Northern Virginia", "US"), ("New York", "US"), ("Atlanta", "US"),
                 ("Chicago", "US"), ("Northern Virginia", "US"), ("Dallas-Houston", "US"),
                 ("Denver", "US"), ("New York", "US")],
    "Hyperscaler": [("Northern Virginia", "US"), ("Oregon", "US"), ("Ohio", "US"),
                    ("Montreal", "CA")],
}  # fmt: skip


def add_metros(prefixes: Path) -> None:
    """Give the synthetic prefix table a metro column (neocloud and hyperscaler rows)."""
    import csv

    with open(prefixes, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i, row in enumerate(rows):
        choices = METROS.get(row["network_type"])
        row["metro"] = choices[i % len(choices)][0] if choices else ""
    with open(prefixes, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[*rows[0].keys()])
        w.writeheader()
        w.writerows(rows)


def make_cube(where: Path, *, records: int = 20_000, seed: int = 2, metros: bool = True) -> Path:
    """A demo-like cube: half a year of the synthetic world (a few seconds to build), its
    neocloud and hyperscaler prefixes placed in metros."""
    synthesize(where / "archive", records=records, seed=seed)
    if metros:
        add_metros(where / "archive" / "prefixes.csv")
    return build_cube(where / "archive", where / "cube", workers=0).out


def make_sparse_cube(where: Path) -> Path:
    """A tiny real-import-like cube: 400 records over 40 days, two runs of days missing."""
    synthesize(where / "archive", records=400, days=40, seed=3)
    days = sorted(p for p in (where / "archive").iterdir() if p.name.startswith("day="))
    for p in days[5:14] + days[20:27]:
        shutil.rmtree(p)
    return build_cube(where / "archive", where / "cube", workers=0).out


def need_browser() -> None:
    """Skip without chromium + chromedriver, except in CI (CI=true), where that is a failure."""
    from flowatlas.errors import InputError
    from flowatlas.viz.browser import find_chromium

    try:
        find_chromium()
        import selenium  # noqa: F401
    except (InputError, ImportError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser tests: {exc}")
        pytest.skip(str(exc))


#: seconds: the longest any state may take to appear in a browser on a loaded CI machine
WAIT = 60


def browser_session():
    """Headless Chromium through selenium (the ``browser`` fixture of tests/conftest.py)."""
    need_browser()
    from flowatlas.viz.browser import chrome

    d = chrome(1500, 1300, console_log=True)
    d.set_page_load_timeout(WAIT)
    yield d
    d.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """``flowatlas serve`` started from the CLI as a subprocess on a free port."""

    def __init__(self, cubes: list[Path], log: Path, *extra: str, timeout: float = 90) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log
        cmd = [sys.executable, "-m", "flowatlas", "serve", *map(str, cubes),
               "--port", str(self.port), *extra]  # fmt: skip
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.output()}")
            try:
                with urllib.request.urlopen(self.url, timeout=10) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"server did not answer in {timeout} s: {self.output()}")
            time.sleep(0.2)

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


def keep_artefact(path: Path) -> Path:
    """Copy a screenshot or PNG to $FLOWATLAS_ARTEFACTS (when set), where CI keeps it."""
    target = os.environ.get("FLOWATLAS_ARTEFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(target) / path.name)
    return path


def colourful(png: Path) -> tuple[int, float]:
    """(distinct colours, share of pixels that are not near-white) of an image."""
    from PIL import Image

    img = Image.open(png).convert("RGB")
    img = img.resize((max(1, img.width // 4), max(1, img.height // 4)))
    raw = img.tobytes()
    pixels = [tuple(raw[i : i + 3]) for i in range(0, len(raw), 3)]
    busy = sum(1 for r, g, b in pixels if min(r, g, b) < 230) / len(pixels)
    return len(set(pixels)), busy
