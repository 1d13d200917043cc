"""What Parquet page checksums cost: writing an archive, and building its cube.

Archive files carry a CRC-32 per data page and every reader verifies them (issue 13: one
flipped bit used to build a wrong cube). This times, on the same synthetic records:

- writing the archive through ``ArchiveWriter`` with and without page checksums (in this
  process, the records already in memory: only the encoding and writing are timed);
- reading every column of every file as the build reads them (``open_parquet``, in this
  process): with checksums every page's CRC is verified, without there is nothing to verify;
- ``flowatlas build`` (its own process, as a user runs it) of each copy, the two copies in
  turn, ``--repeat`` times each: the best wall time and the best CPU time (user + system of
  the build's processes), CPU time being what contention from other jobs distorts least.

Both copies hold the same rows in the same files and row groups; the cubes must be equal.
Prints a table and writes nothing into the repository (archives are cached under
``bench/_data``, which git ignores).

Usage::

    python bench/bench_checksums.py --records 5000000 --repeat 5
    python bench/bench_checksums.py --records 50000000 --repeat 3 --workers 2
    python bench/bench_checksums.py --smoke          # 200,000 records, one run: a check
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import best_of, markdown_table, rate, usable_cores
from bench_build import ensure_archive, warm_page_cache

from flowatlas.io.archive import ArchiveWriter, open_parquet
from flowatlas.schema import META_COUNTS, META_SOURCE

DATA = Path(__file__).resolve().parent / "_data"


def rewrite(src: Path, dst: Path, checksums: bool) -> float:
    """Copy the archive at ``src`` to ``dst`` file by file, with or without page checksums;
    return the seconds spent writing (the records are read before the clock starts)."""
    if dst.exists():
        shutil.rmtree(dst)
    seconds = 0.0
    for path in sorted(src.glob("day=*/*.parquet")):
        pf = pq.ParquetFile(path)
        table = pf.read()
        meta = pf.schema_arrow.metadata or {}
        counts = meta.get(META_COUNTS, b"raw").decode()
        source = meta.get(META_SOURCE, b"synth").decode()
        rows_per_group = pf.metadata.row_group(0).num_rows if pf.metadata.num_row_groups else 1
        t0 = time.perf_counter()
        with ArchiveWriter(
            dst,
            counts=counts,
            source=source,
            name=path.stem,
            row_group_size=max(1, rows_per_group),
            page_checksums=checksums,
        ) as w:
            w.write(table)
        seconds += time.perf_counter() - t0
    for extra in ("flowatlas.toml", "prefixes.csv"):
        if (src / extra).exists():
            shutil.copy(src / extra, dst / extra)
    return seconds


def build(archive: Path, out: Path, workers: int) -> tuple[float, float]:
    """Run ``flowatlas build``; (wall seconds, CPU seconds of its processes)."""
    argv = [sys.executable, "-m", "flowatlas", "build", str(archive), "--out", str(out)]
    argv += ["--workers", str(workers), "--overwrite", "-q"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def read_all(archive: Path) -> None:
    """Every column of every row group, as map tasks read them (checksums verified)."""
    for path in sorted(archive.glob("day=*/*.parquet")):
        pf = open_parquet(path)
        for rg in range(pf.num_row_groups):
            pf.read_row_group(rg)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, default=5_000_000)
    p.add_argument("--days", type=int, default=184)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeat", type=int, default=5, help="runs of each build; the best is kept")
    p.add_argument("--workers", type=int, default=usable_cores())
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--smoke", action="store_true", help="200,000 records, one run")
    args = p.parse_args()
    if args.smoke:
        args.records, args.days, args.repeat = 200_000, 10, 1
    data = Path(args.data)
    base = ensure_archive(args.records, args.days, args.seed, data)
    copies = {
        "with page checksums": data / f"{base.name}-crc",
        "without": data / f"{base.name}-nocrc",
    }
    write_s = {name: rewrite(base, path, name != "without") for name, path in copies.items()}
    walls: dict[str, list[float]] = {name: [] for name in copies}
    cpus: dict[str, list[float]] = {name: [] for name in copies}
    for path in copies.values():
        warm_page_cache(path)
    for _ in range(args.repeat):  # in turn, so both meet the same background load
        for name, path in copies.items():
            wall, cpu = build(path, data / f"_cube-{path.name}", args.workers)
            walls[name].append(wall)
            cpus[name].append(cpu)
    rows = []
    cubes = {}
    for name, path in copies.items():
        out = data / f"_cube-{path.name}"
        size = sum(f.stat().st_size for f in path.rglob("*.parquet"))
        cubes[name] = {n: (out / n).read_bytes() for n in ("cells.parquet", "rollups.parquet")}
        read_s = best_of(lambda path=path: read_all(path), args.repeat)
        rows.append(
            [
                name,
                f"{size / 2**20:,.1f}",
                f"{write_s[name]:.2f}",
                f"{read_s:.2f}",
                f"{min(walls[name]):.2f}",
                f"{min(cpus[name]):.2f}",
                rate(args.records, min(walls[name])),
            ]
        )
    if cubes["with page checksums"] != cubes["without"]:
        raise SystemExit("the two archives gave different cubes")
    print(
        f"\n{args.records:,} records, {args.days} days, build --workers {args.workers}, "
        f"best of {args.repeat}\n"
    )
    print(
        markdown_table(
            ["archive", "MiB", "write s", "read s", "build s", "build CPU s", "build records/s"],
            rows,
        )
    )
    w, r, b, c = ([float(row[k]) for row in rows] for k in (2, 3, 4, 5))  # [with, without] each
    print(
        f"\nchecksums cost {100 * (b[0] / b[1] - 1):+.1f}% build wall time, "
        f"{100 * (c[0] / c[1] - 1):+.1f}% build CPU time, {100 * (r[0] / r[1] - 1):+.1f}% on "
        f"reading the archive, {100 * (w[0] / w[1] - 1):+.1f}% on writing it"
    )


if __name__ == "__main__":
    main()
