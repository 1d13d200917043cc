"""Build speed against the simple matrix (issue 15): the whole ``flowatlas build`` process,
computing the full cube, next to DuckDB and Polars computing only the simple matrix.

The simple matrix is what a user who wants only the seed's picture would write: one GROUP BY
of time bucket x region x network type with SUM(bytes) and COUNT(DISTINCT remote address),
after an ASOF join of the remote address on the prefix table's intervals. Each engine runs
as its own process from the archive's Parquet files on disk, start-up and imports included
(what a user waits for); wall time, CPU seconds (user + system of the process tree) and the
peak summed RSS come from ``_common.run_measured``. Every answer is checked against the
cube's cells, row for row.

Two workloads, each at every ``--records`` size:

- ``world``: ``flowatlas synth`` (about 500 prefixes; ingress, egress and internal flows,
  IPv4 and IPv6, private links). Its simple matrix must orient each flow first (which
  address is ours, which region, which direction), as the cube does, so the competitors'
  GROUP BY also keeps direction and IP version: the cube's finest cells;
- ``heavy``: ``bench/_heavy.py`` (about 900 k prefixes; ingress IPv4 flows only, whose remote
  addresses follow a Zipf law). Its simple matrix is the issue's query verbatim: region from
  the exporter (a hash join), the remote address is the source, then the ASOF join and one
  GROUP BY bucket, region, network type.

Prepared once per archive, untimed, as a user would: flowatlas's compiled prefix table
(``flowatlas classify compile``, a ``.fatable`` beside the archive, passed with ``--table``)
and, for DuckDB and Polars, the same table's disjoint intervals (start address, network
type) as ``bounds.parquet``, the flattened form an ASOF join needs. Caches are warm: the page
cache holds the archive, numba's kernel cache is filled by one untimed build.

Usage::

    python bench/bench_simple_matrix.py                      # 5 M and 20 M, both workloads
    python bench/bench_simple_matrix.py --records 5000000 --workload heavy --repeat 3
    python bench/bench_simple_matrix.py --smoke              # tiny sizes; writes nothing
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tomllib
from _common import (
    check_layout,
    load_average,
    markdown_table,
    mib,
    provenance,
    run_measured,
    usable_cores,
    write_section,
)
from bench_build import (
    V4_FIRST,
    V4_LAST,
    _address,
    _blob,
    archive_files,
    count_records,
    ensure_archive,
    load_world,
    polars_oriented,
    polars_records,
    read_regions,
    warm_page_cache,
)

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
RESULTS = HERE / "RESULTS.md"
HEADING = "Build speed against the simple matrix (issue 15)"
US_PER_HOUR = 3_600_000_000
SYNTH_DAYS = 184
ENGINES = ("flowatlas", "duckdb", "polars")
DIRECTIONS = ("ingress", "egress", "internal", "transit")
#: the network type codes the competitors compute (names from flowatlas's vocabulary)
TYPES = ("Unknown", "CDN", "Hosting", "Hyperscaler", "ISP Regional", "ISP Tier1", "Neocloud",
         "Migration", "Internal")  # fmt: skip
KEYS = ("bucket", "region", "network_type", "direction", "ip_version")


# --------------------------------------------------------------------------- workloads


def heavy_archive(records: int, seed: int, data: Path, prefixes: int = 900_000) -> Path:
    """The heavy-tailed archive for these settings, generated once under ``data``."""
    path = data / (f"heavy-r{records}-s{seed}" + ("" if prefixes == 900_000 else f"-p{prefixes}"))
    if not (path / "flowatlas.toml").exists() or count_records(path) != records:
        shutil.rmtree(path, ignore_errors=True)
        print(f"generating {records:,} heavy-tailed records into {path} ...", flush=True)
        subprocess.run(
            [sys.executable, str(HERE / "_heavy.py"), "--records", str(records),
             "--seed", str(seed), "--prefixes", str(prefixes), "-o", str(path)],
            check=True,
        )  # fmt: skip
    return path


def prepared(archive: Path) -> tuple[Path, Path]:
    """The archive's compiled table (for flowatlas) and its intervals (for the others)."""
    table_path = archive.with_name(archive.name + ".fatable")
    bounds_path = archive.with_name(archive.name + ".bounds.parquet")
    if not table_path.exists():
        subprocess.run(
            [sys.executable, "-m", "flowatlas", "classify", "compile",
             "--config", str(archive / "flowatlas.toml"), "-o", str(table_path)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    if not bounds_path.exists():
        from flowatlas.classify.table import PrefixTable

        table = PrefixTable.load(table_path)
        names = table.network_type_names
        code = np.array([TYPES.index(n) for n in names] + [0], np.uint8)
        starts = np.empty((table.starts_hi.size, 2), ">u8")
        starts[:, 0], starts[:, 1] = table.starts_hi, table.starts_lo
        start = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(16), len(starts), [None, pa.py_buffer(starts.tobytes())]
        )
        pq.write_table(
            pa.table({"start": start.cast(pa.binary()), "ptype": code[table.values]}),
            bounds_path,
        )
    return table_path, bounds_path


@dataclass
class Setup:
    """Regions, exporters and private links of an archive's configuration."""

    region_names: list[str]  # index 0: Unknown
    region_ranges: list[tuple[int, int, int]]  # (first, last, region code)
    exporters: dict[bytes, int]  # exporter address -> region code
    links: list[tuple[bytes, int, int]]  # (exporter, ifindex, type code)


def read_setup(archive: Path) -> Setup:
    """What the competitors need from ``flowatlas.toml`` (as bench_build reads it)."""
    cfg = tomllib.loads((archive / "flowatlas.toml").read_text())
    names, ranges, exporters = read_regions(cfg)
    links = []
    for rule in cfg.get("links", []):
        ntype = rule.get("network_type", None if "name" in rule else "Migration")
        if "exporter" in rule and ntype is not None:
            links += [(_address(rule["exporter"]), int(i), TYPES.index(ntype))
                      for i in rule["interfaces"]]  # fmt: skip
    return Setup(names, ranges, exporters, links)


# --------------------------------------------------------------------------- competitors


def duckdb_matrix(archive: Path, bounds: Path, out: Path, threads: int, workload: str) -> None:
    """The simple matrix in DuckDB SQL, written to ``out``."""
    import duckdb

    setup = read_setup(archive)
    con = duckdb.connect(config={"threads": threads})
    con.execute("SET TimeZone = 'UTC'")
    con.register("exporters", pa.table({
        "addr": pa.array(list(setup.exporters), pa.binary(16)),
        "ex_region": pa.array(list(setup.exporters.values()), pa.uint8()),
    }))  # fmt: skip
    con.execute(f"CREATE TEMP TABLE bounds AS SELECT * FROM read_parquet('{bounds}')")
    files = {"files": archive_files(archive)}
    # raw counts are scaled by the sampling rate (both workloads' archives hold raw counts)
    mult = "CASE WHEN sampling_rate > 1 THEN sampling_rate ELSE 1 END"
    if workload == "heavy":
        sql = f"""
            WITH r AS (
                SELECT epoch_us(time_start) // {US_PER_HOUR} AS bucket, e.ex_region AS region,
                       src_addr AS remote, bytes * {mult} AS vol
                FROM read_parquet($files) d JOIN exporters e ON d.exporter = e.addr
            ), typed AS (
                SELECT r.*, b.ptype FROM r ASOF LEFT JOIN bounds b ON r.remote >= b.start
            )
            SELECT bucket, region, coalesce(ptype, 0) AS ntype, 0 AS dir, 4 AS ipv,
                   sum(vol)::UBIGINT AS bytes, count(DISTINCT remote) AS uniques
            FROM typed GROUP BY ALL
        """
    else:
        con.register("links", pa.table({
            "exporter": pa.array([lk[0] for lk in setup.links], pa.binary(16)),
            "ifindex": pa.array([lk[1] for lk in setup.links], pa.uint32()),
            "ltype": pa.array([lk[2] for lk in setup.links], pa.uint8()),
        }))  # fmt: skip

        def region_of(col: str) -> str:
            whens = " ".join(f"WHEN {col} BETWEEN {_blob(a)} AND {_blob(b)} THEN {c}"
                             for a, b, c in setup.region_ranges)  # fmt: skip
            return f"CASE {whens} ELSE 0 END"

        sql = f"""
            WITH located AS (
                SELECT time_start, exporter, in_if, out_if, src_addr, dst_addr, bytes,
                       sampling_rate, {region_of("src_addr")} AS src_r,
                       {region_of("dst_addr")} AS dst_r
                FROM read_parquet($files)
            ), directed AS (
                SELECT *, CASE WHEN dst_r > 0 AND src_r = 0 THEN 0
                               WHEN src_r > 0 AND dst_r = 0 THEN 1
                               WHEN src_r > 0 THEN 2 ELSE 3 END AS dir
                FROM located
            ), oriented AS (
                SELECT epoch_us(time_start) // {US_PER_HOUR} AS bucket,
                    coalesce(e.ex_region,
                             CASE dir WHEN 0 THEN dst_r WHEN 3 THEN 0 ELSE src_r END) AS region,
                    dir, CASE WHEN dir IN (1, 2) THEN dst_addr ELSE src_addr END AS remote,
                    l.ltype, bytes * {mult} AS vol
                FROM directed d
                LEFT JOIN exporters e ON d.exporter = e.addr
                LEFT JOIN links l ON d.exporter = l.exporter
                    AND l.ifindex = CASE WHEN dir = 1 THEN d.out_if ELSE d.in_if END
            ), typed AS (
                SELECT o.*, b.ptype FROM oriented o ASOF LEFT JOIN bounds b ON o.remote >= b.start
            )
            SELECT bucket, region,
                CASE WHEN dir = 2 THEN {TYPES.index("Internal")}
                     ELSE coalesce(ltype, ptype, 0) END AS ntype,
                dir,
                CASE WHEN remote BETWEEN {_blob(V4_FIRST)} AND {_blob(V4_LAST)} THEN 4 ELSE 6 END
                    AS ipv,
                sum(vol)::UBIGINT AS bytes, count(DISTINCT remote) AS uniques
            FROM typed GROUP BY ALL
        """
    result = con.sql(sql, params=files).to_arrow_table()
    con.close()
    write_matrix(result, setup, out)


def polars_matrix(archive: Path, bounds: Path, out: Path, threads: int, workload: str) -> None:
    """The simple matrix as one Polars lazy query, written to ``out``."""
    del threads  # Polars sizes its pool from POLARS_MAX_THREADS, set before import
    import polars as pl

    setup = read_setup(archive)
    u128 = pl.UInt128
    exporters = pl.LazyFrame(
        {"exporter": list(setup.exporters), "ex_region": list(setup.exporters.values())},
        schema={"exporter": pl.Binary, "ex_region": pl.UInt8},
    )
    ranges = pl.scan_parquet(bounds).select(
        start=pl.col("start").bin.reinterpret(dtype=u128, endianness="big"), ptype="ptype"
    )
    mult = (
        pl.when(pl.col("sampling_rate") > 1)
        .then(pl.col("sampling_rate").cast(pl.UInt64))
        .otherwise(pl.lit(1, pl.UInt64))
    )
    if workload == "heavy":
        q = (
            pl.scan_parquet(archive_files(archive))
            .select("time_start", "exporter", "src_addr", "bytes", "sampling_rate")
            .join(exporters, on="exporter", how="inner")
            .select(
                bucket=pl.col("time_start").dt.epoch("us") // US_PER_HOUR,
                region="ex_region",
                remote=pl.col("src_addr").bin.reinterpret(dtype=u128, endianness="big"),
                vol=pl.col("bytes") * mult,
            )
            .sort("remote")
            .join_asof(ranges, left_on="remote", right_on="start", strategy="backward")
            .group_by("bucket", "region", ntype=pl.col("ptype").fill_null(0))
            .agg(bytes=pl.col("vol").sum(), uniques=pl.col("remote").n_unique())
            .with_columns(dir=pl.lit(0, pl.UInt8), ipv=pl.lit(4, pl.UInt8))
        )
        write_matrix(q.collect().to_arrow(), setup, out)
        return
    # the world: the orientation the cube does, as bench_build writes it (with the intervals
    # it flattens from the prefix CSV, the same as the table's), then one GROUP BY
    world = load_world(archive)
    q = (
        polars_oriented(polars_records(archive), world)
        .group_by("bucket", "region", "ntype", "dir", "ipv")
        .agg(bytes=pl.col("vol").sum(), uniques=pl.col("remote").n_unique())
    )
    write_matrix(q.collect().to_arrow(), setup, out, world.types)


def write_matrix(
    result: pa.Table, setup: Setup, out: Path, type_names: Sequence[str] = TYPES
) -> None:
    """The competitor's codes as the cube's names, in the comparison's layout."""
    out.mkdir(parents=True, exist_ok=True)

    def names(col: str, vocab) -> pa.Array:
        codes = result.column(col).to_numpy().astype(np.int64)
        return pa.array(np.asarray(vocab, dtype=object)[codes], pa.string())

    table = pa.table({
        "bucket": pa.array(result.column("bucket").to_numpy().astype(np.int64)),
        "region": names("region", setup.region_names),
        "network_type": names("ntype", type_names),
        "direction": names("dir", DIRECTIONS),
        "ip_version": pa.array(result.column("ipv").to_numpy().astype(np.uint8)),
        "bytes": pa.array(result.column("bytes").to_numpy().astype(np.uint64)),
        "uniques": pa.array(result.column("uniques").to_numpy().astype(np.uint64)),
    })  # fmt: skip
    pq.write_table(table, out / "matrix.parquet")


# --------------------------------------------------------------------------- checking


def cube_matrix(cube: Path) -> pa.Table:
    """The cube's finest cells in the comparison's layout."""
    cells = pq.read_table(cube / "cells.parquet")
    bucket = pc.divide(cells.column("bucket_start").cast(pa.int64()), US_PER_HOUR)
    return pa.table({
        "bucket": bucket, **{k: cells.column(k) for k in KEYS[1:]},
        "bytes": cells.column("bytes"), "uniques": cells.column("uniques"),
    })  # fmt: skip


def compare(cube: Path, candidate: Path) -> str | None:
    """None if the candidate's matrix equals the cube's cells row for row, else why not."""
    want = cube_matrix(cube).sort_by([(k, "ascending") for k in KEYS])
    got = pq.read_table(candidate / "matrix.parquet").sort_by([(k, "ascending") for k in KEYS])
    if want.num_rows != got.num_rows:
        return f"{got.num_rows} rows, the cube has {want.num_rows}"
    for col in want.column_names:
        a, b = want.column(col), got.column(col).cast(want.schema.field(col).type)
        if not a.equals(b):
            bad = int(pc.sum(pc.not_equal(a, b).cast(pa.int64())).as_py())
            return f"column {col}: {bad} rows differ"
    return None


# --------------------------------------------------------------------------- running


@dataclass
class Row:
    workload: str
    records: int
    engine: str
    seconds: float
    cpu: float
    peak: int
    check: str
    #: the archive files' column layout (``flowatlas inspect``'s name for it)
    layout: str = ""


def child(args: argparse.Namespace) -> int:
    fn = duckdb_matrix if args.child == "duckdb" else polars_matrix
    fn(args.archive, args.bounds, args.out, args.threads, args.workload)
    return 0


def measure(args: argparse.Namespace, workload: str, records: int, work: Path) -> list[Row]:
    if workload == "heavy":
        archive = heavy_archive(records, args.seed, args.data, args.prefixes)
    else:
        archive = ensure_archive(records, SYNTH_DAYS, args.seed, args.data)
    layout = check_layout(archive)
    table, bounds = prepared(archive)
    warm_page_cache(archive)
    threads = args.threads
    env = {"POLARS_MAX_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads)}
    argv = {
        "flowatlas": [sys.executable, "-m", "flowatlas", "build", str(archive), "--out",
                      str(work / "flowatlas"), "--table", str(table), "--overwrite", "-q"],
        **{e: [sys.executable, str(Path(__file__).resolve()), "--child", e, "--workload",
               workload, "--archive", str(archive), "--bounds", str(bounds), "--out",
               str(work / e), "--threads", str(threads)] for e in ENGINES[1:]},
    }  # fmt: skip
    run_measured(argv["flowatlas"], env=env).check("flowatlas warm-up")
    rows = []
    for engine in ENGINES:
        runs = [run_measured(argv[engine], env=env).check(engine) for _ in range(args.repeat)]
        best = min(runs, key=lambda m: m.seconds)
        why = None if engine == "flowatlas" else compare(work / "flowatlas", work / engine)
        if why is not None:
            raise SystemExit(f"{engine} on {workload} {records:,}: answer differs: {why}")
        check = "the cube" if engine == "flowatlas" else "equal to the cube"
        rows.append(Row(workload, records, engine, best.seconds, best.cpu_seconds,
                        best.peak_rss, check, layout))  # fmt: skip
        print(f"{workload} {records:,} {engine}: {best.seconds:.2f} s wall, "
              f"{best.cpu_seconds:.1f} CPU s, {mib(best.peak_rss)}", flush=True)  # fmt: skip
    return rows


def report(rows: list[Row], args: argparse.Namespace, load_before: str) -> str:
    table_rows = []
    for r in rows:
        fa = next(x for x in rows if (x.workload, x.records, x.engine)
                  == (r.workload, r.records, "flowatlas"))  # fmt: skip
        table_rows.append([
            r.workload, f"{r.records:,}", r.engine, f"{r.seconds:.2f}", f"{r.cpu:.1f}",
            f"{r.cpu / r.seconds:.2f}", f"{r.records / r.seconds / 1e6:.2f}", mib(r.peak),
            "1.00" if r.engine == "flowatlas" else f"{r.seconds / fa.seconds:.2f}", r.check,
        ])  # fmt: skip
    body = [
        "flowatlas: `flowatlas build ARCHIVE --table T.fatable` (the full cube, default local "
        "threads); DuckDB and Polars: only the simple matrix (see "
        "bench/bench_simple_matrix.py's docstring). Whole processes from Parquet on disk, "
        f"start-up included, {args.threads} threads each, warm caches, best of {args.repeat}. "
        '"their wall / ours" above 1 means flowatlas is faster.',
        "",
        markdown_table(
            [
                "workload",
                "records",
                "engine",
                "wall s",
                "CPU s",
                "cores busy",
                "M records/s",
                "peak RSS MiB",
                "their wall / ours",
                "answer",
            ],
            table_rows,
        ),
        "",
        "Archives' column layout: "
        + "; ".join(dict.fromkeys(f"{r.workload} {r.records:,} {r.layout}" for r in rows))
        + ".",
        "",
        *provenance(
            ["numba", "numpy", "pyarrow", "duckdb", "polars"],
            load_before,
            "python bench/bench_simple_matrix.py " + " ".join(sys.argv[1:]),
        ),
    ]
    return "\n".join(body) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, nargs="+", default=[5_000_000, 20_000_000])
    p.add_argument("--workload", choices=("world", "heavy"), nargs="+",
                   default=["world", "heavy"])  # fmt: skip
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--threads", type=int, default=usable_cores())
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--prefixes", type=int, default=900_000, help="heavy workload's table size")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--smoke", action="store_true", help="tiny sizes; writes no results")
    p.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    # a child process computing one competitor's matrix
    p.add_argument("--child", choices=ENGINES[1:], help=argparse.SUPPRESS)
    p.add_argument("--archive", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--bounds", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    if args.smoke:
        args.records, args.repeat, args.prefixes = [20_000], 1, 20_000
    load_before = load_average()
    work = args.data / "simple-matrix-work"
    rows = []
    for records in args.records:
        for workload in args.workload:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            rows += measure(args, workload, records, work)
    shutil.rmtree(work, ignore_errors=True)
    text = report(rows, args, load_before)
    print(text)
    if not (args.smoke or args.no_write):
        write_section(RESULTS, HEADING, text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
