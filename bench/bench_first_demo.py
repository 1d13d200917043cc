"""The first ``flowatlas demo`` after an install (cold kernel cache) and the next ones (warm).

numba compiles the CPU kernels on first use and caches them on disk; only the first run after
an install pays for compiling. Each round copies the package's sources (``flowatlas/``, no
``__pycache__``) into a new folder and runs the demo from there (``PYTHONPATH``): no
bytecode and no compiled kernel is cached yet, as in a fresh clone right after
``pip install -e .``, and numba caches beside those sources, as it would there (Python's
bytecode too: ``PYTHONDONTWRITEBYTECODE`` is dropped for the demo). The demo runs
once (cold), then again from the same copy (warm). Wall time and CPU time (user + system
of the demo and every process it started) are reported; on a shared machine CPU time moves
less than wall time. Each round runs the demo as it ships (on a cold cache a second process
compiles the build's kernels while the archive is synthesized: flowatlas/warmup.py) and,
interleaved, with that warm-up turned off (``FLOWATLAS_WARMUP=0``), the reference. Usage::

    python bench/bench_first_demo.py [--records N] [--rounds R] [--warmup on|off|both]

Writes nothing but temporary folders (removed at the end).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine, markdown_table, run_measured

from flowatlas.commands import DEMO_RECORDS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=DEMO_RECORDS)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument(
        "--warmup",
        choices=["on", "off", "both"],
        default="both",
        help="the demo's warm-up process (on: as shipped; off: FLOWATLAS_WARMUP=0)",
    )
    args = ap.parse_args()
    os.environ.pop("NUMBA_CACHE_DIR", None)  # numba's own choice: beside the copied sources
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # Python's default: bytecode cached too
    package = Path(__file__).resolve().parent.parent / "flowatlas"
    modes = ["on", "off"] if args.warmup == "both" else [args.warmup]
    cmd = [sys.executable, "-m", "flowatlas", "demo", "--records", str(args.records)]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {
        (mode, kind): [] for mode in modes for kind in ("cold", "warm")
    }
    for _ in range(args.rounds):
        for mode in modes:
            tmp = Path(tempfile.mkdtemp(prefix="flowatlas-first-demo-"))
            try:
                src = tmp / "src"
                shutil.copytree(package, src / "flowatlas",
                                ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
                env = {"PYTHONPATH": str(src), "FLOWATLAS_WARMUP": "1" if mode == "on" else "0"}
                for kind in ("cold", "warm"):
                    out = tmp / f"demo-{kind}"
                    m = run_measured([*cmd, "--out", str(out), "-q"], env=env, cwd=tmp)
                    m.check(f"demo ({kind}, warm-up {mode})")
                    if kind == "cold":  # it ran the copy, and numba cached beside it
                        assert list(src.rglob("records._records_loop*.nbi")), "cache elsewhere"
                    runs[mode, kind].append((m.seconds, m.cpu_seconds))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        (
            mode,
            kind,
            f"{statistics.median(w for w, _ in r):.1f}",
            f"{statistics.median(c for _, c in r):.1f}",
            len(r),
        )
        for (mode, kind), r in runs.items()
    ]
    print(f"flowatlas demo --records {args.records:,}: {machine()}; load {load_average()}")
    print(markdown_table(["warm-up", "kernel cache", "wall s", "CPU s", "runs"], rows))


if __name__ == "__main__":
    main()
