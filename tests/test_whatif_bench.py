"""bench/bench_whatif.py still runs end to end, and its pandas competitor agrees with flowatlas.

Nothing here asserts a speed: ``--quick`` runs the whole benchmark on a tiny archive, and
the benchmark exits non-zero when the plain-pandas projection differs from flowatlas's.
"""

from __future__ import annotations

import subprocess
import sys

from flowatlas.testing import REPO_ROOT


def test_bench_whatif_quick(tmp_path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n\n## Other\n\nkept\n")
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "bench_whatif.py"), "--quick",
         "--data", str(tmp_path / "data"), "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = results.read_text()
    assert "## Other\n\nkept\n" in text and text.count("## What-if") == 1
    assert "equal to pandas: equal" in text and "flowatlas CLI" in text
