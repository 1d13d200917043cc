"""The fixed cost of a small build (issue 15, goal 3): process wall and CPU of whole builds.

Goal 3 asks a 1 M-record build to finish in at most 1 s of process wall time with warm
caches. This runs ``flowatlas build ARCHIVE --table ARCHIVE.fatable`` (default threads) in
fresh processes, from a directory outside every checkout, after one warm-up run per
checkout, alternating the checkouts given with ``--checkout`` (each on ``PYTHONPATH``, so
one environment times several versions and a shared machine's noise falls on all of them),
and prints the best and median wall and CPU seconds (user + system of the child) per
archive and checkout, with the load average. Bytecode is cached as for an installed
package (``PYTHONDONTWRITEBYTECODE`` unset). It writes nothing but a scratch cube.

    .venv/bin/python bench/bench_fixed_cost.py bench/_data/heavy-r1000000-s1 \\
        --checkout /work/main --checkout . --repeat 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import git_revision, load_average, run_measured, usable_cores


def run_once(archive: Path, out: Path, checkout: Path, cwd: str) -> tuple[float, float]:
    """One build in a fresh process with ``checkout`` first on the path: (wall, CPU) s."""
    table = archive.with_name(archive.name + ".fatable")
    args = ["build", str(archive), "--table", str(table), "-o", str(out), "-q", "--overwrite"]
    m = run_measured(
        [sys.executable, "-m", "flowatlas", *args], env={"PYTHONPATH": str(checkout)}, cwd=cwd
    ).check("flowatlas build")
    return m.seconds, m.cpu_seconds


def summary(label: str, runs: list[tuple[float, float]]) -> str:
    """Best and median wall and CPU seconds of ``runs``."""
    walls = [w for w, _ in runs]
    cpus = [c for _, c in runs]
    return (
        f"{label}: wall best {min(walls):.2f} s median {statistics.median(walls):.2f} s, "
        f"CPU best {min(cpus):.2f} s median {statistics.median(cpus):.2f} s ({len(runs)} runs)"
    )


def main(argv: list[str] | None = None) -> int:
    """Time the builds and print a summary per archive and checkout."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archives", nargs="+", type=Path)
    ap.add_argument(
        "--checkout", action="append", type=Path, default=None,
        help="a flowatlas checkout to time (repeat to alternate several) [this one]",
    )  # fmt: skip
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    here = Path(__file__).resolve().parent.parent
    checkouts = [c.resolve() for c in (args.checkout or [here])]
    print(f"{usable_cores()} cores, load before {load_average()}")
    for c in checkouts:
        print(f"  {c}: {git_revision(c)}")
    with tempfile.TemporaryDirectory() as tmp:
        for archive in args.archives:
            archive = archive.resolve()
            out = Path(tmp) / "cube"
            runs: dict[Path, list[tuple[float, float]]] = {c: [] for c in checkouts}
            for c in checkouts:
                run_once(archive, out, c, tmp)  # warm: numba cache, bytecode, OS cache
            for _ in range(args.repeat):
                for c in checkouts:
                    runs[c].append(run_once(archive, out, c, tmp))
            for c in checkouts:
                print(summary(f"{archive.name} @ {c.name}", runs[c]))
    print(f"load after {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
