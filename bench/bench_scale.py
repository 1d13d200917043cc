"""Scale benchmark: a very large synthetic archive built out of core, with peak memory.

Synthesizes ``--records`` flow records (10^9 by default: about 40 GB of Parquet) under
``--data`` (git-ignored, reused across runs), then runs ``flowatlas build`` on it in a child
process and records wall time, CPU time, records/s and the peak resident memory of the whole
process tree, next to the archive's and the work directory's size on disk. The work directory
bounds memory: each reducer holds 1/P of the distinct rows, P growing with the archive.

    python bench/bench_scale.py                      # 10^9 records (about an hour on 2 cores)
    python bench/bench_scale.py --records 20000000   # quicker
    python bench/bench_scale.py --smoke              # seconds, for CI
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    check_layout,
    load_average,
    markdown_table,
    mib,
    provenance,
    run_measured,
    write_section,
)

HEADING = "Scale: out-of-core build"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
DEFAULT_DATA = Path(__file__).resolve().parent / "_data"


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def synth(out: Path, records: int, days: int) -> float:
    """Write the archive unless a complete one is already there; return seconds spent."""
    if (out / "_synth.json").exists() and f'"records": {records}' in (
        out / "_synth.json"
    ).read_text():
        check_layout(out)  # an older cache keeps its layout: say so, do not pass it off
        return 0.0
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    m = run_measured(
        [sys.executable, "-m", "flowatlas", "synth", "--records", str(records), "--days",
         str(days), "-o", str(out), "-q"],
    ).check("flowatlas synth")  # fmt: skip
    print(f"  synth: {records:,} records in {m.seconds:.0f} s, peak {mib(m.peak_rss)} MiB")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000_000)
    ap.add_argument("--days", type=int, default=184)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="where the archive lives")
    ap.add_argument("--results", type=Path, default=None, help=f"results file [{RESULTS}]")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, no results file")
    ap.add_argument("--keep", action="store_true", help="keep the archive afterwards")
    args = ap.parse_args(argv)
    if args.smoke:
        args.records, args.days = 20_000, 5
    archive = args.data / f"scale-{args.records}"
    cube = args.data / f"scale-{args.records}.cube"
    args.data.mkdir(parents=True, exist_ok=True)
    print(f"archive {archive}")
    synth(archive, args.records, args.days)
    shutil.rmtree(cube, ignore_errors=True)

    work = cube.parent / f".{cube.name}.work"
    peak_work = [0]
    stop = threading.Event()

    def watch_work() -> None:  # the shuffle's size on disk, at its largest
        while not stop.wait(5.0):
            if work.exists():
                try:
                    peak_work[0] = max(peak_work[0], dir_size(work))
                except OSError:
                    pass

    watcher = threading.Thread(target=watch_work, daemon=True)
    watcher.start()
    load_before = load_average()
    m = run_measured(
        [sys.executable, "-m", "flowatlas", "build", str(archive), "-o", str(cube), "-q"]
    ).check("flowatlas build")
    stop.set()
    watcher.join()
    archive_bytes = dir_size(archive)
    rows = [
        [
            f"{args.records:,}",
            f"{archive_bytes / 2**30:.1f} GiB",
            f"{m.seconds:,.0f}",
            f"{m.cpu_seconds:,.0f}",
            f"{args.records / m.seconds:,.0f}",
            mib(m.peak_rss),
            f"{peak_work[0] / 2**30:.1f} GiB",
            f"{dir_size(cube) / 2**20:.0f} MiB",
        ]
    ]
    table = markdown_table(
        ["records", "archive", "build s", "CPU s", "records/s", "peak RSS MiB",
         "work dir (peak)", "cube"],
        rows,
    )  # fmt: skip
    body = "\n".join(
        [
            f"One `flowatlas build` (default: threaded, {psutil.cpu_count()} cores, on-disk "
            "shuffle) of a synthetic archive, in a child process; peak RSS summed over its "
            "process tree, polled.",
            "",
            table,
            "",
            *provenance(
                ("flowatlas", "numba", "pyarrow"),
                load_before,
                f"python bench/bench_scale.py --records {args.records}",
            ),
        ]
    )
    print(body)
    if not args.smoke:
        write_section(args.results or RESULTS, HEADING, body)
    if not args.keep or args.smoke:
        shutil.rmtree(cube, ignore_errors=True)
        if args.smoke:
            shutil.rmtree(archive, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
