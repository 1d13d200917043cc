"""Benchmark: what single passes over the records cost here, next to the whole cube from memory.

Issue 4 asks for at least 3x10^7 records/s from memory on 2 cores. This puts that number
beside the cheapest operations any build of the cube needs, each timed on the same records in
memory and in the same run:

- DuckDB and Polars (2 threads): a scan (``SUM(bytes)``) and one exact distinct count of one
  address column (``COUNT(DISTINCT dst_addr)``, Polars ``n_unique``), from their own
  in-memory tables;
- flowatlas's stages on one thread: the map step (the fused per-record kernel: both ends'
  prefix lookups, orientation, classification, cells; then the cell sums and the partition
  split) and the reduce step (exact distinct counts for every cell and rollup, concentration,
  top lists, sketches), each as archive records per second of that one thread;
- the whole cube from memory (``build_cube_from_table``, 2 threads), as bench_build times it.

The cube needs the prefix lookups and about 70 exact distinct counts (33 key sets, by address
and by IPv6 prefix) on top of what the single passes do.

    python bench/bench_floor.py                  # 5 M synthetic records (bench_build's archive)
    python bench/bench_floor.py --records 200000 --no-results   # smoke run (tests run one)

Writes the "Floors: single passes against the target" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, load_average, markdown_table, provenance, rate, write_section
from bench_build import DATA, WARM_ROWS, ensure_archive, load_records

HEADING = "Floors: single passes against the target"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TARGET = 30_000_000  # issue 4: records/s from memory on 2 cores


def measure(archive: Path, repeat: int) -> tuple[list[tuple[str, str, int, float]], int]:
    """(engine, pass, threads, seconds) for each measured pass, and the number of records."""
    import duckdb
    import polars as pl

    from flowatlas.classify import load_table
    from flowatlas.engine.build import build_cube_from_table, resolve_config
    from flowatlas.engine.pipeline import map_task, pack, reduce_partition
    from flowatlas.engine.plan import make_plan
    from flowatlas.io.archive import memory_records
    from flowatlas.kernels import serial_kernels

    table, counts = load_records(archive)
    n = table.num_rows
    out: list[tuple[str, str, int, float]] = []

    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.register("arrow_records", table)
    con.execute("CREATE TABLE records AS SELECT * FROM arrow_records")
    con.unregister("arrow_records")
    for what, sql in (
        ("scan: SUM(bytes)", "SELECT sum(bytes) FROM records"),
        ("COUNT(DISTINCT dst_addr)", "SELECT count(DISTINCT dst_addr) FROM records"),
    ):
        out.append(("duckdb", what, 2, best_of(lambda q=sql: con.execute(q).fetchall(), repeat)))
    con.close()

    df = pl.from_arrow(table)
    out.append(("polars", "scan: sum(bytes)", 2, best_of(lambda: df["bytes"].sum(), repeat)))
    out.append(
        ("polars", "n_unique(dst_addr)", 2, best_of(lambda: df["dst_addr"].n_unique(), repeat))
    )

    cfg = resolve_config(archive, None)
    source = memory_records(table, counts=counts, name=archive.name)
    rows_per_task = 1_000_000
    tasks = pack(source.fragments(rows_per_task), rows_per_task)
    parts = 4
    plan = make_plan(cfg, load_table(cfg), partitions=parts)
    with serial_kernels():
        map_task(tasks[0], plan)  # numba's cached code loaded before the clock
        maps: list = []

        def run_maps() -> None:
            maps.clear()
            maps.extend(map_task(t, plan) for t in tasks)

        out.append(("flowatlas", "map step (per-record kernel, cell sums, split)", 1,
                    best_of(run_maps, repeat, time.thread_time)))  # fmt: skip
        reduce_partition([m.pieces[0] for m in maps], plan)

        def run_reduces() -> None:
            for j in range(parts):
                reduce_partition([m.pieces[j] for m in maps], plan)

        out.append(("flowatlas", f"reduce step ({parts} partitions: every distinct count)", 1,
                    best_of(run_reduces, repeat, time.thread_time)))  # fmt: skip

    work = Path(tempfile.mkdtemp(prefix="flowatlas-floor-"))
    try:
        cube = work / "cube"

        def build(t=table) -> None:
            build_cube_from_table(t, cube, config=archive / "flowatlas.toml", counts=counts,
                                  workers=2, overwrite=True)  # fmt: skip

        build(table.slice(0, WARM_ROWS))
        out.append(("flowatlas", "the whole cube from memory", 2, best_of(build, repeat)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=5_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", type=Path, default=DATA, help="where synthetic archives are cached")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--no-results", action="store_true", help="print only")
    args = ap.parse_args(argv)
    load_before = load_average()
    archive = ensure_archive(args.records, 184, 1, args.data)
    rows, n = measure(archive, args.repeat)
    table_rows = []
    for engine, what, threads, secs in rows:
        per_core = n / secs / threads
        table_rows.append(
            [
                engine,
                what,
                threads,
                f"{secs:.3f}",
                rate(n, secs),
                rate(per_core, 1.0),
                f"{TARGET / (per_core * 2):.2f}",
            ]
        )
    body = "\n\n".join(
        [
            f"{n:,} synthetic records (bench_build's archive, seed 1) in memory. Issue 4's "
            f"target is {TARGET:,} records/s from memory on 2 cores, so {TARGET // 2:,} per "
            "core. Each row is one pass, timed alone (best of "
            f"{args.repeat}); flowatlas's stages run on one thread and count archive records "
            "per CPU second of it; the last column, the target over the pass's rate on 2 "
            "cores (per core x 2), says how many times faster that pass would have to run to "
            "meet the target by itself.",
            markdown_table(
                [
                    "engine",
                    "pass",
                    "threads",
                    "seconds",
                    "records/s",
                    "records/s per core",
                    "target / this pass",
                ],
                table_rows,
            ),
        ]
    )
    body += "\n\n" + "\n".join(
        provenance(
            ["duckdb", "polars", "numba", "pyarrow"],
            load_before,
            "python bench/bench_floor.py"
            + (f" --records {args.records}" if args.records != 5_000_000 else ""),
        )
    )
    print(body)
    if not args.no_results:
        write_section(args.results, HEADING, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
