"""Build benchmark: ``flowatlas build`` next to DuckDB and Polars computing the same cube.

One run synthesizes (or reuses) an archive, then times five ways of turning it into the cube,
each in its own process, and checks that all five produced the same numbers:

- ``flowatlas build --workers 0`` (eager, one process; numba kernels use every core),
  ``flowatlas build --workers N`` (N threads of one process, the default) and
  ``flowatlas build --workers N --processes`` (N single-threaded worker processes);
- DuckDB SQL and a Polars lazy query over the same Parquet files, prefix CSV and
  configuration, producing the cube's cells and every rollup the configuration asks for (day,
  month, quarter, all) for every grouping set, each with bytes, packets, flows, exact distinct
  remote addresses and exact distinct IPv4 addresses + IPv6 /N prefixes: the work
  ``flowatlas build`` does.

How the competitors do what flowatlas's kernels do:

- addresses: DuckDB keeps the 16-byte address as a BLOB (bytes compare in address order);
  Polars reinterprets it as a big-endian ``UInt128``;
- our regions: a CASE / when-then chain of range tests over the few configured prefixes;
  exporters and private-link rules: hash joins against small tables;
- longest-prefix match: the prefix CSV is flattened on the host (Python, a stack sweep over
  the sorted prefixes, a few milliseconds for the synthetic world's ~500 prefixes) into
  disjoint intervals labelled with their most specific prefix, then each engine does an ASOF
  join of the remote address against the interval starts (DuckDB ``ASOF LEFT JOIN`` on BLOB,
  Polars ``join_asof`` on UInt128). A range join on nested prefixes (BETWEEN + pick the
  longest) is the obvious alternative; it is what tests/test_build_oracle.py does, and it is
  quadratic-ish, so it is not what either engine is benchmarked with;
- counts: exact, per (cell, remote IP) first, then ``count(DISTINCT)`` / ``n_unique`` per
  rollup grouping (DuckDB ``GROUPING SETS`` over dense integer ids of the addresses and
  prefixes; Polars one ``group_by`` per set, all collected together).

Times are wall-clock from process start to exit (interpreter start-up and imports
included: that is what a user waits for); peak memory is the summed RSS of the process tree.

``--from-memory`` times the same cube from records already in memory instead (section "Build
benchmark from memory" of the results file). Each engine runs in its own child process
(``--child ENGINE --from-memory``) that first loads the whole archive, every column, untimed:
flowatlas as one ``pyarrow.Table`` passed to ``flowatlas.build_cube_from_table`` (eagerly,
and on threads unless ``--no-dask``; process clusters cannot take
in-memory records), DuckDB as a table of its in-memory database created from that Arrow
table, Polars as a DataFrame made from it. Then only the computation is timed, from those
records to the cube's cells and rollups written: the same DuckDB SQL (``duckdb_compute``) and
Polars query (``polars_compute``) as on disk, over the in-memory relation instead of the
Parquet files. Each child reports to the parent the computation's seconds, CPU seconds and
peak RSS (the records included; see ``_common.PeakRSS``) and its RSS once loaded; outputs
are checked against flowatlas's eager cube as on disk. flowatlas's child first builds the
first ``WARM_ROWS`` records once, untimed, so numba's cached kernels are loaded, as the other
engines' code is by their imports.

Usage::

    python bench/bench_build.py                 # default size, writes bench/RESULTS.md
    python bench/bench_build.py --records 20000000 --repeat 3
    python bench/bench_build.py --from-memory   # from memory, its own section of RESULTS.md
    python bench/bench_build.py --smoke         # tiny sizes, seconds; writes nothing
    python bench/bench_build.py --smoke --from-memory
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Measurement,
    PeakRSS,
    check_layout,
    load_average,
    markdown_table,
    mib,
    provenance,
    rate,
    run_measured,
    usable_cores,
    versions,
    write_section,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = HERE / "_data"
RESULTS = HERE / "RESULTS.md"
HEADING = "Build benchmark"
HEADING_MEMORY = "Build benchmark from memory"
DEFAULT_RECORDS = 5_000_000
SMOKE_RECORDS = 20_000

DIMS = ("region", "network_type", "direction", "ip_version")
MEASURES = ("bytes", "packets", "flows", "uniques", "uniques_prefix")
DIRECTIONS = ("ingress", "egress", "internal", "transit")
GROUPINGS: tuple[tuple[str, ...], ...] = (
    ("region", "network_type", "direction", "ip_version"),
    ("region", "network_type"),
    ("region", "direction"),
    ("region",),
    ("network_type",),
    ("network_type", "direction"),
    ("ip_version",),
    (),
)
TIMESTAMP = pa.timestamp("us", tz="UTC")
V4_FIRST = int(ipaddress.IPv6Address("::ffff:0:0"))
V4_LAST = int(ipaddress.IPv6Address("::ffff:ffff:ffff"))
TOP = (1 << 128) - 1
US_PER_HOUR = 3_600_000_000


def grouping_name(dims: Sequence[str]) -> str:
    """The cube's name for a grouping set ("total" for the empty one)."""
    return ",".join(d for d in DIMS if d in dims) or "total"


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    """Configuration and prefix table as plain codes, shared by both competitors.

    Region code 0 is "Unknown" (transit, or not ours); type codes index ``types``.
    """

    regions: list[str]
    region_ranges: list[tuple[int, int, int]]  # (first, last, region code)
    exporters: dict[bytes, int]  # exporter address -> region code
    links: list[tuple[bytes, int, int]]  # (exporter, ifindex, type code)
    types: list[str]
    bounds: list[tuple[int, int | None]]  # disjoint intervals: (start, type code or None)
    rollups: tuple[str, ...]
    bucket_us: int
    v6_prefix: int  # uniques_prefix counts IPv6 remotes once per /v6_prefix

    @property
    def unknown(self) -> int:
        return self.types.index("Unknown")

    @property
    def internal(self) -> int:
        return self.types.index("Internal")


def _net(text: str) -> tuple[int, int, int]:
    """(first, last, length) of a prefix in the one 128-bit space (IPv4 mapped)."""
    net = ipaddress.ip_network(text.strip(), strict=False)
    if net.version == 4:
        net = ipaddress.IPv6Network(f"::ffff:{net.network_address}/{96 + net.prefixlen}")
    return int(net.network_address), int(net.broadcast_address), net.prefixlen


def _address(text: str) -> bytes:
    addr = ipaddress.ip_address(text)
    if addr.version == 4:
        addr = ipaddress.IPv6Address(f"::ffff:{addr}")
    return addr.packed


def flatten(prefixes: Sequence[tuple[int, int, int]]) -> list[tuple[int, int | None]]:
    """Nested prefixes (first, last, code) -> disjoint intervals (start, code of the winner).

    The most specific prefix wins; among identical prefixes the later one. An interval runs
    from its start to the next one's; ``None`` marks gaps no prefix covers. CIDR prefixes nest
    or are disjoint, so one sweep with a stack of the prefixes covering the current point is
    enough: the top of the stack is the winner.
    """
    order = sorted(range(len(prefixes)), key=lambda i: (prefixes[i][0], -prefixes[i][1], i))
    points = sorted({p[0] for p in prefixes} | {p[1] + 1 for p in prefixes if p[1] < TOP})
    out: list[tuple[int, int | None]] = []
    stack: list[int] = []
    j = 0
    for point in points:
        while stack and prefixes[stack[-1]][1] < point:
            stack.pop()
        while j < len(order) and prefixes[order[j]][0] == point:
            stack.append(order[j])
            j += 1
        code = prefixes[stack[-1]][2] if stack else None
        if not out or out[-1][1] != code:
            out.append((point, code))
    return out


def read_regions(
    cfg: dict[str, Any],
) -> tuple[list[str], list[tuple[int, int, int]], dict[bytes, int]]:
    """A parsed flowatlas.toml's region names (code 0: Unknown), their address ranges
    (first, last, code) and the exporters' regions (address -> code)."""
    regions = ["Unknown"]
    region_ranges, exporters = [], {}
    for r in cfg.get("regions", []):
        regions.append(r["name"])
        for p in r.get("prefixes", []):
            first, last, _ = _net(p)
            region_ranges.append((first, last, len(regions) - 1))
        for e in r.get("exporters", []):
            exporters[_address(e)] = len(regions) - 1
    return regions, region_ranges, exporters


def load_world(archive: Path) -> World:
    """Read ARCHIVE/flowatlas.toml and its prefix CSV into a :class:`World`."""
    cfg = tomllib.loads((archive / "flowatlas.toml").read_text())
    bucket = cfg.get("cube", {}).get("bucket", "1h")
    if bucket != "1h":
        raise SystemExit(f"bench_build: only 1h buckets are implemented here, not {bucket!r}")
    regions, region_ranges, exporters = read_regions(cfg)
    types = ["Unknown", "Internal"]

    def code(name: str) -> int:
        if name not in types:
            types.append(name)
        return types.index(name)

    # links that set a type: the unnamed form (Migration by default) or a network_type;
    # named links without one only measure, and selection links have no interfaces
    typed = [
        (rule, rule.get("network_type", None if "name" in rule else "Migration"))
        for rule in cfg.get("links", [])
        if "exporter" in rule
    ]
    links = [
        (_address(rule["exporter"]), int(i), code(ntype))
        for rule, ntype in typed
        if ntype is not None
        for i in rule["interfaces"]
    ]
    prefixes = []
    for source in cfg.get("classify", {}).get("sources", []):
        if source.get("format") != "prefix-csv":
            raise SystemExit(f"bench_build: source format {source.get('format')!r} not handled")
        table = pacsv.read_csv(archive / source["path"])
        for text, name in zip(
            table.column("prefix").to_pylist(),
            table.column("network_type").to_pylist(),
            strict=True,
        ):
            first, last, _ = _net(text)
            prefixes.append((first, last, code(name)))
    return World(
        regions,
        region_ranges,
        exporters,
        links,
        types,
        flatten(prefixes),
        tuple(cfg.get("cube", {}).get("rollups", ["day", "month", "quarter", "all"])),
        US_PER_HOUR,
        int(cfg.get("cube", {}).get("ipv6_prefix", 64)),
    )


def archive_files(archive: Path) -> list[str]:
    """The archive's Parquet files (hidden and underscore names skipped)."""
    return sorted(
        str(p)
        for p in archive.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(archive).parts)
    )


# --------------------------------------------------------------------------- output


def _named(codes: pa.Array, names: Sequence[str]) -> pa.Array:
    """Dimension codes -> their names (nulls stay null)."""
    return pc.take(pa.array(list(names), pa.string()), codes.cast(pa.int32()))


def to_cube_tables(cells: pa.Table, rollups: pa.Table, world: World) -> tuple[pa.Table, pa.Table]:
    """Competitor results with integer codes -> the cube's columns, names and types.

    ``cells`` has bucket (hours since 1970), region, ntype, dir, ipv and the measures;
    ``rollups`` has rollup, period_start, grouping, the same codes and the measures.
    """
    names = {"region": world.regions, "ntype": world.types, "dir": DIRECTIONS}

    def dims(t: pa.Table) -> dict[str, pa.Array]:
        return {
            "region": _named(t.column("region"), names["region"]),
            "network_type": _named(t.column("ntype"), names["ntype"]),
            "direction": _named(t.column("dir"), names["dir"]),
            "ip_version": t.column("ipv").cast(pa.uint8()),
        }

    def measures(t: pa.Table) -> dict[str, pa.Array]:
        return {m: t.column(m).cast(pa.uint64()) for m in MEASURES}

    hours = cells.column("bucket").cast(pa.int64())
    start = pc.multiply(hours, pa.scalar(US_PER_HOUR, pa.int64())).cast(TIMESTAMP)
    out_cells = pa.table({"bucket_start": start, **dims(cells), **measures(cells)})
    out_rollups = pa.table(
        {
            "rollup": rollups.column("rollup").cast(pa.string()),
            "period_start": rollups.column("period_start").cast(pa.int64()).cast(TIMESTAMP),
            "grouping": rollups.column("grouping").cast(pa.string()),
            **dims(rollups),
            **measures(rollups),
        }
    )
    return out_cells, out_rollups


def write_tables(out: Path, cells: pa.Table, rollups: pa.Table) -> None:
    """Write a competitor's result where a cube keeps it, so one comparison reads both."""
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(cells, out / "cells.parquet")
    pq.write_table(rollups, out / "rollups.parquet")


# --------------------------------------------------------------------------- DuckDB


def _blob(value: int) -> str:
    """A 128-bit address as a DuckDB BLOB literal (16 bytes, big-endian)."""
    return f"unhex('{value:032x}')"


def _arrow(con, sql: str) -> pa.Table:
    """A query's result as an Arrow table (through a relation: no extra copy)."""
    return con.sql(sql).to_arrow_table()


@dataclass(frozen=True)
class DuckSource:
    """Where DuckDB's records come from: SQL pieces spliced into the one cube query.

    ``relation`` is the FROM of the records (with ``columns`` selected besides the used flow
    columns), ``ctes`` and ``joins`` add what ``scaled`` (is this row's counter already
    sampling-corrected?) needs.
    """

    relation: str
    scaled: str
    columns: str = ""
    ctes: str = ""
    joins: str = ""


#: the archive's Parquet files ($files), the counts mode of each from its key-value metadata
PARQUET_SOURCE = DuckSource(
    relation="read_parquet($files, filename = true, hive_partitioning = false)",
    columns=", filename",
    ctes="""kv AS (
            SELECT file_name, decode(value) = 'scaled' AS scaled
            FROM parquet_kv_metadata($files) WHERE decode(key) = 'flowatlas.counts'
        ),""",
    joins="LEFT JOIN kv ON d.filename = kv.file_name",
    scaled="coalesce(kv.scaled, false)",
)


def duckdb_connect(threads: int):
    """A DuckDB in-memory database using ``threads`` threads, in UTC."""
    import duckdb

    con = duckdb.connect(config={"threads": threads})
    con.execute("SET TimeZone = 'UTC'")
    return con


def duckdb_cube(archive: Path, out: Path, threads: int) -> None:
    """The cube in DuckDB SQL, from the archive's Parquet files (see the module docstring)."""
    con = duckdb_connect(threads)
    duckdb_compute(con, load_world(archive), out, PARQUET_SOURCE, {"files": archive_files(archive)})


def duckdb_compute(
    con, world: World, out: Path, source: DuckSource, params: dict | None = None
) -> None:
    """The cube's cells and rollups in DuckDB SQL over ``source``, written to ``out``.

    Closes ``con`` when done.
    """
    con.register(
        "exporters",
        pa.table(
            {
                "addr": pa.array(list(world.exporters), pa.binary(16)),
                "ex_region": pa.array(list(world.exporters.values()), pa.uint8()),
            }
        ),
    )
    con.register(
        "links",
        pa.table(
            {
                "exporter": pa.array([lk[0] for lk in world.links], pa.binary(16)),
                "ifindex": pa.array([lk[1] for lk in world.links], pa.uint32()),
                "ltype": pa.array([lk[2] for lk in world.links], pa.uint8()),
            }
        ),
    )
    con.register(
        "bounds",
        pa.table(
            {
                "start": pa.array([b.to_bytes(16, "big") for b, _ in world.bounds], pa.binary(16)),
                "ptype": pa.array([c for _, c in world.bounds], pa.uint8()),
            }
        ),
    )

    def region_of(col: str) -> str:
        whens = " ".join(
            f"WHEN {col} BETWEEN {_blob(a)} AND {_blob(b)} THEN {c}"
            for a, b, c in world.region_ranges
        )
        return f"CASE {whens} ELSE 0 END" if whens else "0"

    con.execute(
        f"""
        CREATE TEMP TABLE per_ip AS
        WITH {source.ctes}
        located AS (
            SELECT time_start, exporter, in_if, out_if, src_addr, dst_addr, bytes, packets,
                   sampling_rate{source.columns},
                   {region_of("src_addr")} AS src_r, {region_of("dst_addr")} AS dst_r
            FROM {source.relation}
        ),
        directed AS (
            SELECT *,
                CASE WHEN dst_r > 0 AND src_r = 0 THEN 0 WHEN src_r > 0 AND dst_r = 0 THEN 1
                     WHEN src_r > 0 THEN 2 ELSE 3 END AS dir
            FROM located
        ),
        oriented AS (
            SELECT
                epoch_us(time_start) // {world.bucket_us} AS bucket,
                coalesce(e.ex_region, CASE dir WHEN 0 THEN dst_r WHEN 3 THEN 0 ELSE src_r END)
                    AS region,
                dir,
                CASE WHEN dir IN (1, 2) THEN dst_addr ELSE src_addr END AS remote,
                l.ltype,
                CASE WHEN NOT {source.scaled} AND sampling_rate > 1
                     THEN sampling_rate ELSE 1 END AS mult,
                bytes * mult AS vol,
                packets * mult AS pk
            FROM directed d
            {source.joins}
            LEFT JOIN exporters e ON d.exporter = e.addr
            LEFT JOIN links l ON d.exporter = l.exporter
                AND l.ifindex = CASE WHEN dir = 1 THEN d.out_if ELSE d.in_if END
        ),
        typed AS (
            SELECT o.*, b.ptype FROM oriented o ASOF LEFT JOIN bounds b ON o.remote >= b.start
        )
        SELECT bucket, region,
            CASE WHEN dir = 2 THEN {world.internal}
                 ELSE coalesce(ltype, ptype, {world.unknown}) END AS ntype,
            dir,
            CASE WHEN remote BETWEEN {_blob(V4_FIRST)} AND {_blob(V4_LAST)} THEN 4 ELSE 6 END
                AS ipv,
            remote, sum(vol)::UBIGINT AS vol, sum(pk)::UBIGINT AS pk, count(*) AS fl
        FROM typed
        GROUP BY ALL
        """,
        params or {},
    )
    # distinct counts run on dense integer ids (cheaper to hash than a 16-byte BLOB): rid per
    # remote address, prid per IPv4 address or IPv6 /N prefix (the masked 128-bit value; an
    # IPv4-mapped address never equals a masked IPv6 prefix, whose low 64 bits are zero); and
    # period starts are computed once per distinct bucket
    shift = 128 - world.v6_prefix
    con.execute(
        f"""
        CREATE TEMP TABLE ids AS
            SELECT remote, row_number() OVER () AS rid, dense_rank() OVER (ORDER BY pkey) AS prid
            FROM (
                SELECT remote,
                       CASE WHEN remote BETWEEN {_blob(V4_FIRST)} AND {_blob(V4_LAST)} THEN u
                            ELSE (u >> {shift}::UHUGEINT) << {shift}::UHUGEINT END AS pkey
                FROM (SELECT remote, ('0x' || hex(remote))::UHUGEINT AS u
                      FROM (SELECT DISTINCT remote FROM per_ip))
            );
        CREATE TEMP TABLE periods AS
            SELECT bucket, epoch_us(date_trunc('day', ts)) AS day,
                   epoch_us(date_trunc('month', ts)) AS month,
                   epoch_us(date_trunc('quarter', ts)) AS quarter, NULL::BIGINT AS "all"
            FROM (SELECT DISTINCT bucket, make_timestamp(bucket * {world.bucket_us}) AS ts
                  FROM per_ip);
        CREATE TEMP TABLE by_id AS
            SELECT p.* EXCLUDE (remote), i.rid, i.prid, t.day, t.month, t.quarter, t."all"
            FROM per_ip p JOIN ids i USING (remote) JOIN periods t USING (bucket);
        """
    )
    cells = _arrow(
        con,
        """
        SELECT bucket, region, ntype, dir, ipv, sum(vol)::UBIGINT AS bytes,
               sum(pk)::UBIGINT AS packets, sum(fl)::UBIGINT AS flows, count(*) AS uniques,
               count(DISTINCT prid) AS uniques_prefix
        FROM by_id GROUP BY ALL
        """,
    )
    cols = {"region": "region", "network_type": "ntype", "direction": "dir", "ip_version": "ipv"}
    # grouping_id(region, ntype, dir, ipv): bit 3 .. bit 0 set where the column is not kept
    gid_names = {
        sum(1 << (3 - i) for i, d in enumerate(DIMS) if d not in g): grouping_name(g)
        for g in GROUPINGS
    }
    gid_case = " ".join(f"WHEN {k} THEN '{v}'" for k, v in gid_names.items())
    parts = []
    for rollup in world.rollups:
        period = f'"{rollup}"'
        sets = ", ".join("(" + ", ".join([period, *(cols[d] for d in g)]) + ")" for g in GROUPINGS)
        parts.append(
            _arrow(
                con,
                f"""
                SELECT '{rollup}' AS rollup, {period} AS period_start,
                       CASE grouping_id(region, ntype, dir, ipv) {gid_case} END AS grouping,
                       region, ntype, dir, ipv,
                       sum(vol)::UBIGINT AS bytes, sum(pk)::UBIGINT AS packets,
                       sum(fl)::UBIGINT AS flows, count(DISTINCT rid) AS uniques,
                       count(DISTINCT prid) AS uniques_prefix
                FROM by_id
                GROUP BY GROUPING SETS ({sets})
                """,
            )
        )
    con.close()
    write_tables(out, *to_cube_tables(cells, pa.concat_tables(parts), world))


# --------------------------------------------------------------------------- Polars


#: the flow columns every competitor reads
USED_COLUMNS = ["time_start", "exporter", "in_if", "out_if", "src_addr", "dst_addr"]
USED_COLUMNS += ["bytes", "packets", "sampling_rate"]


def polars_records(archive: Path):
    """The archive's used flow columns plus ``scaled`` (from each file's counts mode), as one
    Polars LazyFrame over its Parquet files."""
    import polars as pl

    frames = []
    for path in archive_files(archive):
        counts = pl.read_parquet_metadata(path).get("flowatlas.counts", "raw")
        frames.append(
            pl.scan_parquet(path).select(USED_COLUMNS).with_columns(scaled=counts == "scaled")
        )
    return pl.concat(frames)


def polars_cube(archive: Path, out: Path, threads: int) -> None:
    """The cube as Polars lazy queries over the archive's Parquet files (see the docstring)."""
    del threads  # Polars sizes its pool from POLARS_MAX_THREADS, set before import
    polars_compute(polars_records(archive), load_world(archive), out)


def polars_oriented(recs, world: World):
    """Each record oriented and classified, as a Polars LazyFrame of bucket, region, ntype,
    dir, ipv (codes), remote (UInt128), vol and pk (sampling-corrected counters).

    ``recs``: a LazyFrame of the used flow columns plus ``scaled`` (is this row's counter
    already sampling-corrected?).
    """
    import polars as pl

    u128 = pl.UInt128

    def lit(v: int) -> pl.Expr:
        return pl.lit(v, dtype=u128)

    def region_of(col: str) -> pl.Expr:
        expr: pl.Expr | pl.When | pl.Then = pl
        for a, b, c in world.region_ranges:
            expr = expr.when(pl.col(col).is_between(lit(a), lit(b))).then(pl.lit(c, pl.UInt8))
        return expr.otherwise(pl.lit(0, pl.UInt8)) if world.region_ranges else pl.lit(0, pl.UInt8)

    exporters = pl.LazyFrame(
        {"exporter": list(world.exporters), "ex_region": list(world.exporters.values())},
        schema={"exporter": pl.Binary, "ex_region": pl.UInt8},
    )
    links = pl.LazyFrame(
        {
            "exporter": [lk[0] for lk in world.links],
            "ext_if": [lk[1] for lk in world.links],
            "ltype": [lk[2] for lk in world.links],
        },
        schema={"exporter": pl.Binary, "ext_if": pl.UInt32, "ltype": pl.UInt8},
    )
    bounds = pl.LazyFrame(
        {"start": [b for b, _ in world.bounds], "ptype": [c for _, c in world.bounds]},
        schema={"start": u128, "ptype": pl.UInt8},
    )
    src_r, dst_r = pl.col("src_r"), pl.col("dst_r")
    direction = (
        pl.when((dst_r > 0) & (src_r == 0))
        .then(0)
        .when((src_r > 0) & (dst_r == 0))
        .then(1)
        .when(src_r > 0)
        .then(2)
        .otherwise(3)
        .cast(pl.UInt8)
    )
    mult = (
        pl.when(~pl.col("scaled") & (pl.col("sampling_rate") > 1))
        .then(pl.col("sampling_rate").cast(pl.UInt64))
        .otherwise(pl.lit(1, pl.UInt64))
    )
    dir_ = pl.col("dir")
    return (
        recs.with_columns(
            src=pl.col("src_addr").bin.reinterpret(dtype=u128, endianness="big"),
            dst=pl.col("dst_addr").bin.reinterpret(dtype=u128, endianness="big"),
        )
        .with_columns(src_r=region_of("src"), dst_r=region_of("dst"))
        .with_columns(dir=direction)
        .join(exporters, on="exporter", how="left")
        .with_columns(
            bucket=pl.col("time_start").dt.epoch("us") // world.bucket_us,
            region=pl.coalesce(
                "ex_region",
                pl.when(dir_ == 0).then(dst_r).when(dir_ == 3).then(0).otherwise(src_r),
            ).cast(pl.UInt8),
            remote=pl.when(dir_.is_in([1, 2])).then("dst").otherwise("src"),
            ext_if=pl.when(dir_ == 1).then("out_if").otherwise("in_if"),
            vol=pl.col("bytes") * mult,
            pk=pl.col("packets") * mult,
        )
        .join(links, on=["exporter", "ext_if"], how="left")
        .select("bucket", "region", "dir", "remote", "ltype", "vol", "pk")
        .sort("remote")
        .join_asof(bounds, left_on="remote", right_on="start", strategy="backward")
        .with_columns(
            ntype=pl.when(dir_ == 2)
            .then(world.internal)
            .otherwise(pl.coalesce("ltype", "ptype", pl.lit(world.unknown)))
            .cast(pl.UInt8),
            ipv=pl.when(pl.col("remote").is_between(lit(V4_FIRST), lit(V4_LAST)))
            .then(4)
            .otherwise(6)
            .cast(pl.UInt8),
        )
    )


def polars_compute(recs, world: World, out: Path) -> None:
    """The cube's cells and rollups as one Polars lazy query per output, written to ``out``.

    ``recs``: as for :func:`polars_oriented`.
    """
    import polars as pl

    u128 = pl.UInt128

    def lit(v: int) -> pl.Expr:
        return pl.lit(v, dtype=u128)

    oriented = polars_oriented(recs, world)
    keys = ["bucket", "region", "ntype", "dir", "ipv"]
    # uniques_prefix: IPv4 addresses as they are, IPv6 ones masked to their /N (an IPv4-mapped
    # address never equals a masked IPv6 prefix, whose low 64 bits are zero)
    mask = TOP ^ ((1 << (128 - world.v6_prefix)) - 1)
    per_ip = (
        oriented.group_by([*keys, "remote"])
        .agg(pl.col("vol").sum(), pl.col("pk").sum(), fl=pl.len())
        .with_columns(
            pkey=pl.when(pl.col("ipv") == 4)
            .then(pl.col("remote"))
            .otherwise(pl.col("remote") & lit(mask))
        )
        .collect()
        .lazy()
    )
    measures = [
        pl.col("vol").sum().alias("bytes"),
        pl.col("pk").sum().alias("packets"),
        pl.col("fl").sum().cast(pl.UInt64).alias("flows"),
    ]
    queries = [
        per_ip.group_by(keys).agg(
            *measures, uniques=pl.len(), uniques_prefix=pl.col("pkey").n_unique()
        )
    ]
    cols = {"region": "region", "network_type": "ntype", "direction": "dir", "ip_version": "ipv"}
    period = {
        "day": "1d",
        "month": "1mo",
        "quarter": "1q",
    }
    labels = []
    for rollup in world.rollups:
        if rollup == "all":
            with_period = per_ip.with_columns(period_start=pl.lit(None, pl.Int64))
        else:
            start = pl.from_epoch(pl.col("bucket") * world.bucket_us, time_unit="us")
            with_period = per_ip.with_columns(
                period_start=start.dt.truncate(period[rollup]).dt.epoch("us")
            )
        for g in GROUPINGS:
            by = ["period_start", *(cols[d] for d in g)]
            queries.append(
                with_period.group_by(by).agg(
                    *measures,
                    uniques=pl.col("remote").n_unique(),
                    uniques_prefix=pl.col("pkey").n_unique(),
                )
            )
            labels.append((rollup, g))
    results = pl.collect_all(queries)
    cells = results[0].to_arrow()
    parts = []
    for (rollup, g), df in zip(labels, results[1:], strict=True):
        df = df.with_columns(
            rollup=pl.lit(rollup),
            grouping=pl.lit(grouping_name(g)),
            **{c: pl.lit(None, pl.UInt8) for d, c in cols.items() if d not in g},
        )
        parts.append(df.to_arrow())
    order = ["rollup", "period_start", "grouping", *cols.values()]
    order += list(MEASURES)
    rollups = pa.concat_tables([p.select(order) for p in parts], promote_options="permissive")
    write_tables(out, *to_cube_tables(cells, rollups, world))


# --------------------------------------------------------------------------- from memory


def load_records(archive: Path) -> tuple[pa.Table, str]:
    """The whole archive as one Arrow table (every column, file order) and its counts mode."""
    tables = [pq.read_table(f) for f in archive_files(archive)]
    modes = {(t.schema.metadata or {}).get(b"flowatlas.counts", b"raw") for t in tables}
    if len(modes) != 1:
        raise SystemExit("bench_build: --from-memory needs one flowatlas.counts mode per archive")
    meta = tables[0].schema.metadata
    return pa.concat_tables([t.replace_schema_metadata(meta) for t in tables]), modes.pop().decode()


@dataclass(frozen=True)
class MemoryEngine:
    """One engine from memory: ``load`` (untimed) puts the archive into the engine's own
    in-memory form, ``compute`` (timed) writes the cube's cells and rollups to ``out``;
    ``warm`` (untimed, optional) runs once in between on a few rows."""

    load: Callable[[Path, int], Any]  # (archive, threads) -> data
    compute: Callable[[Any, Path, Path, int], None]  # (data, archive, out, threads)
    warm: Callable[[Any, Path, Path, int], None] | None = None


def _flowatlas_load(archive: Path, threads: int) -> tuple[pa.Table, str]:
    return load_records(archive)


def _flowatlas_compute(data: tuple[pa.Table, str], archive: Path, out: Path, threads: int) -> None:
    from flowatlas.engine.build import build_cube_from_table

    table, counts = data
    build_cube_from_table(
        table,
        out,
        config=archive / "flowatlas.toml",
        counts=counts,
        name=archive.name,
        workers=threads,
        overwrite=True,
    )


#: rows of flowatlas's untimed warm-up build: enough for the kernels' parallel variants
WARM_ROWS = 250_000


def _flowatlas_warm(data: tuple[pa.Table, str], archive: Path, out: Path, threads: int) -> None:
    """Build the first ``WARM_ROWS`` records once, so numba's cached machine code (serial and
    parallel variants) is loaded before the clock starts, as DuckDB's and Polars' code is
    loaded by their imports."""
    table, counts = data
    _flowatlas_compute((table.slice(0, WARM_ROWS), counts), archive, out, threads)
    shutil.rmtree(out, ignore_errors=True)


def _duckdb_load(archive: Path, threads: int) -> tuple[Any, str]:
    """A DuckDB table (DuckDB's own storage, in memory) created from the Arrow table."""
    con = duckdb_connect(threads)
    table, counts = load_records(archive)
    con.register("arrow_records", table)
    con.execute("CREATE TABLE records AS SELECT * FROM arrow_records")
    con.unregister("arrow_records")
    return con, counts


def _duckdb_compute(data: tuple[Any, str], archive: Path, out: Path, threads: int) -> None:
    con, counts = data
    source = DuckSource(relation="records", scaled="true" if counts == "scaled" else "false")
    duckdb_compute(con, load_world(archive), out, source)


def _polars_load(archive: Path, threads: int) -> tuple[Any, str]:
    """A Polars DataFrame of the Arrow table (addresses become Binary)."""
    import polars as pl

    table, counts = load_records(archive)
    return pl.from_arrow(table), counts


def _polars_compute(data: tuple[Any, str], archive: Path, out: Path, threads: int) -> None:
    import polars as pl

    df, counts = data
    recs = df.lazy().select(USED_COLUMNS).with_columns(scaled=pl.lit(counts == "scaled"))
    polars_compute(recs, load_world(archive), out)


MEMORY_ENGINES: dict[str, MemoryEngine] = {
    "flowatlas": MemoryEngine(_flowatlas_load, _flowatlas_compute, _flowatlas_warm),
    "duckdb": MemoryEngine(_duckdb_load, _duckdb_compute),
    "polars": MemoryEngine(_polars_load, _polars_compute),
}


def memory_child(engine: str, archive: Path, out: Path, threads: int) -> dict[str, float]:
    """Load the archive into ``engine``'s memory, then time only the cube's computation.

    Returns compute seconds, their CPU seconds (every thread), the RSS once the records are
    loaded and the peak RSS while computing (this process; the records included).
    """
    import gc

    import psutil

    spec = MEMORY_ENGINES[engine]
    data = spec.load(archive, threads)
    if spec.warm is not None:
        spec.warm(data, archive, out.with_name(out.name + "-warm"), threads)
    gc.collect()
    loaded = psutil.Process().memory_info().rss
    with PeakRSS() as peak:
        t0, c0 = time.perf_counter(), time.process_time()
        spec.compute(data, archive, out, threads)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "loaded_rss": loaded, "peak_rss": peak.peak}


# --------------------------------------------------------------------------- checking


def _sorted(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys])


def compare(reference: Path, candidate: Path) -> tuple[list[str], list[str]]:
    """Differences between two cubes' cells and rollups, and the reference's extra columns.

    Every column of the candidate must equal the reference's, row for row (after sorting by
    key), and the candidate must hold every key column and every measure in ``MEASURES``.
    Columns only the reference holds (flowatlas's concentration measures, for instance) are
    returned as "table.column": the candidate did less work than the reference there.
    """
    problems: list[str] = []
    extra: list[str] = []
    for name, keys in (
        ("cells", ["bucket_start", *DIMS]),
        ("rollups", ["rollup", "grouping", "period_start", *DIMS]),
    ):
        ref = pq.read_table(reference / f"{name}.parquet")
        got = pq.read_table(candidate / f"{name}.parquet")
        missing = [c for c in (*keys, *MEASURES) if c not in got.column_names]
        if missing:
            problems.append(f"{name}: no column(s) {', '.join(missing)}")
            continue
        extra += [f"{name}.{c}" for c in ref.column_names if c not in got.column_names]
        ref = ref.select([c for c in ref.column_names if c in got.column_names])
        try:
            got = got.select(ref.column_names).cast(ref.schema)
        except (KeyError, pa.ArrowInvalid, ValueError) as exc:
            problems.append(f"{name}: columns or types differ: {exc}")
            continue
        ref, got = _sorted(ref, keys), _sorted(got, keys)
        if ref.num_rows != got.num_rows:
            problems.append(f"{name}: {got.num_rows} rows, flowatlas has {ref.num_rows}")
            continue
        if not ref.equals(got):
            for i in range(ref.num_rows):
                a, b = ref.slice(i, 1).to_pylist()[0], got.slice(i, 1).to_pylist()[0]
                if a != b:
                    problems.append(f"{name}: first difference at row {i}: {b} != {a}")
                    break
    return problems, extra


# --------------------------------------------------------------------------- the run


@dataclass
class Result:
    """One engine's best run."""

    engine: str
    mode: str
    measurement: Measurement
    verified: str
    not_computed: tuple[str, ...] = ()  # reference columns this engine does not produce
    loaded_rss: int = 0  # --from-memory: RSS once the records are loaded, before the clock


ENGINES: dict[str, Callable[[Path, Path, int], None]] = {
    "duckdb": duckdb_cube,
    "polars": polars_cube,
}


def archive_path(records: int, days: int, seed: int, data: Path) -> Path:
    """Where the synthetic archive for these settings is cached."""
    return data / f"synth-r{records}-d{days}-s{seed}"


def ensure_archive(records: int, days: int, seed: int, data: Path) -> Path:
    """The synthetic archive for these settings, generated once and cached under ``data``."""
    from flowatlas.synth import synthesize

    path = archive_path(records, days, seed, data)
    marker = path / "_synth.json"
    if marker.exists():
        meta = json.loads(marker.read_text())
        if (meta.get("records"), meta.get("days"), meta.get("seed")) == (records, days, seed):
            check_layout(path)  # an older cache keeps its layout: say so, do not pass it off
            return path
    if path.exists():
        shutil.rmtree(path)
    t0 = time.perf_counter()
    print(f"synthesizing {records:,} records over {days} days into {path} ...", flush=True)
    synthesize(path, records=records, days=days, seed=seed)
    print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def count_records(archive: Path) -> int:
    """Records in the archive, from the Parquet footers."""
    return sum(pq.read_metadata(f).num_rows for f in archive_files(archive))


def warm_page_cache(archive: Path) -> None:
    """Read every file once so no engine pays for the first cold read."""
    for p in archive.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                while fh.read(1 << 22):
                    pass


def flowatlas_argv(archive: Path, out: Path, workers: int, *extra: str) -> list[str]:
    """The ``flowatlas build`` command line, exactly as a user would run it."""
    return [
        sys.executable, "-m", "flowatlas", "build", str(archive),
        "--out", str(out), "--workers", str(workers), "--overwrite", "-q", *extra,
    ]  # fmt: skip


def child_argv(
    engine: str, archive: Path, out: Path, threads: int, *, from_memory: bool = False
) -> list[str]:
    """This script, re-run in a child process that computes one engine's cube."""
    return [
        sys.executable, str(Path(__file__).resolve()), "--child", engine,
        "--archive", str(archive), "--out", str(out), "--threads", str(threads),
        *(["--from-memory"] if from_memory else []),
    ]  # fmt: skip


def measure_best(argv: list[str], repeat: int, what: str, env: dict[str, str]) -> Measurement:
    """The fastest of ``repeat`` runs (its peak memory is reported with it)."""
    runs = [run_measured(argv, env=env).check(what) for _ in range(repeat)]
    return min(runs, key=lambda m: m.seconds)


def measure_memory(
    engine: str, archive: Path, out: Path, threads: int, repeat: int, env: dict[str, str]
) -> tuple[Measurement, int]:
    """``engine`` from memory in a child process: the fastest of ``repeat`` computations, with
    their peak RSS while computing, and the RSS once the records were loaded."""
    runs = []
    for _ in range(repeat):
        argv = child_argv(engine, archive, out, threads, from_memory=True)
        m = run_measured(argv, env=env).check(f"{engine} from memory")
        got = json.loads(m.stdout.strip().splitlines()[-1])
        inner = Measurement(
            got["seconds"], got["peak_rss"], 0, m.stdout, m.stderr, got["cpu_seconds"]
        )
        runs.append((inner, int(got["loaded_rss"])))
    return min(runs, key=lambda r: r[0].seconds)


def _prepare(args: argparse.Namespace) -> tuple[Path, int, Path, int, dict[str, str]]:
    """The archive (synthesized if not cached), its records, a scratch directory, threads and
    the children's environment; notes the load average before the timed runs."""
    args.load = [load_average()]
    data = Path(args.data)
    archive = ensure_archive(args.records, args.days, args.seed, data)
    work = data / f"out-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    threads = args.workers
    env = {"POLARS_MAX_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads)}
    return archive, count_records(archive), work, threads, env


def _warm_up(args: argparse.Namespace, work: Path, env: dict[str, str]) -> None:
    """One untimed build of a tiny archive: numba's on-disk cache and imports get loaded."""
    warm = ensure_archive(2_000, 2, args.seed, Path(args.data))
    run_measured(flowatlas_argv(warm, work / "warm", 0), env=env).check("warm-up build")


def run_memory(args: argparse.Namespace) -> list[Result]:
    """--from-memory: every engine loads the archive, then only its computation is timed."""
    archive, records, work, threads, env = _prepare(args)
    try:
        # warm-up: numba's on-disk cache and imports (the children's loads are not timed)
        _warm_up(args, work, env)
        ref = work / "flowatlas-eager"
        print(f"timing {records:,} records from memory, best of {args.repeat} ...", flush=True)
        runs = [("flowatlas", "eager (workers=0)", 0, ref)]
        if not args.no_dask:
            runs.append(("flowatlas", f"{threads} threads", threads, work / "flowatlas-dask"))
        labels = {"duckdb": f"{threads} threads, DuckDB table", "polars": f"{threads} threads"}
        runs += [(e, labels[e], threads, work / e) for e in args.engines]
        results = []
        for engine, mode, n, out in runs:
            m, loaded = measure_memory(engine, archive, out, n, args.repeat, env)
            if out == ref:
                verdict, extra = "reference", []
            else:
                problems, extra = compare(ref, out)
                verdict = "; ".join(problems) or "equal"
            results.append(Result(engine, mode, m, verdict, tuple(extra), loaded))
            print(f"  {engine} {mode}: {m.seconds:.2f} s", flush=True)
        args.load.append(load_average())
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return results


def run(args: argparse.Namespace) -> list[Result]:
    """Synthesize, warm up, time every engine, verify every output against flowatlas."""
    archive, records, work, threads, env = _prepare(args)
    try:
        # warm-up: numba's on-disk cache, imports, the archive in the page cache
        _warm_up(args, work, env)
        warm_page_cache(archive)

        results = []
        ref = work / "flowatlas-eager"
        print(f"timing {records:,} records, best of {args.repeat} ...", flush=True)
        m = measure_best(flowatlas_argv(archive, ref, 0), args.repeat, "flowatlas eager", env)
        results.append(Result("flowatlas", "eager (--workers 0)", m, "reference"))
        print(f"  flowatlas eager: {m.seconds:.2f} s", flush=True)
        dask_modes = [] if args.no_dask else [
            (f"{threads} threads", ()),
            (f"Dask, {threads} processes", ("--processes",)),
        ]  # fmt: skip
        for mode, extra in dask_modes:
            out = work / "flowatlas-dask"
            argv = flowatlas_argv(archive, out, threads, *extra)
            m = measure_best(argv, args.repeat, f"flowatlas {mode}", env)
            problems, _ = compare(ref, out)
            results.append(Result("flowatlas", mode, m, "; ".join(problems) or "equal"))
            print(f"  flowatlas {mode}: {m.seconds:.2f} s", flush=True)
        for engine in args.engines:
            out = work / engine
            m = measure_best(child_argv(engine, archive, out, threads), args.repeat, engine, env)
            problems, extra = compare(ref, out)
            verdict = "; ".join(problems) or "equal"
            results.append(Result(engine, f"{threads} threads", m, verdict, tuple(extra)))
            print(f"  {engine}: {m.seconds:.2f} s", flush=True)
        args.load.append(load_average())
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return results


def report(results: list[Result], records: int, args: argparse.Namespace) -> str:
    """The results table with the machine, versions and the command that reproduces it."""
    memory = bool(getattr(args, "from_memory", False))
    base = results[0].measurement
    rows = []
    for r in results:
        m = r.measurement
        rows.append(
            [
                r.engine,
                r.mode,
                f"{m.seconds:.2f}",
                f"{m.cpu_seconds:.1f}",
                rate(records, m.seconds),
                *([mib(r.loaded_rss)] if memory else []),
                mib(m.peak_rss),
                f"{base.seconds / m.seconds:.2f}",
                f"{base.peak_rss / m.peak_rss:.2f}",
                r.verified,
            ]
        )
    table = markdown_table(
        [
            "engine",
            "mode",
            "seconds",
            "CPU s",
            "records/s",
            *(["RSS loaded MiB"] if memory else []),
            "peak RSS MiB",
            "time flowatlas-eager/this",
            "RSS flowatlas-eager/this",
            "output vs flowatlas",
        ],
        rows,
    )
    vers = versions("flowatlas", "duckdb", "polars", "numba", "dask", "pyarrow")
    command = "python bench/bench_build.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:] if a != "--smoke"
    )
    extra = sorted({c for r in results for c in r.not_computed})
    not_computed = (
        [
            "Not reproduced by the competitors (flowatlas computes them too, so it does more "
            f"work than they do): {', '.join(extra)}.",
            "",
        ]
        if extra
        else []
    )
    if memory:
        how = [
            "From memory: each engine, in its own process, first loads the whole archive (every "
            "column) into memory, untimed: flowatlas as one pyarrow Table "
            "(`build_cube_from_table`), DuckDB into a table of its own in-memory database "
            "created from that Arrow table, Polars as a DataFrame made from it. Then only the "
            "computation is timed, from those records to the cube's files written.",
            "",
            table,
            "",
            *not_computed,
            f"Seconds: wall time of the computation alone, best of {args.repeat} (imports, "
            "loading and, for flowatlas, one untimed build of the first "
            f"{WARM_ROWS:,} records that loads numba's cached kernels come before the clock "
            "starts). CPU s: user + system time of the process "
            "over the same span. RSS loaded: the process once its records are in memory. Peak "
            "RSS: the process's peak while computing, the records in memory included (kernel "
            "high-water mark, reset when the computation starts). Ratios above 1 mean "
            "flowatlas eager takes longer (or more memory) than that engine.",
            "",
        ]
    else:
        how = [
            table,
            "",
            *not_computed,
            "Seconds: wall time from process start to exit, best of "
            f"{args.repeat} (start-up and imports included). CPU s: user + system time of the "
            "process tree (less disturbed than wall time when other work shares the machine). "
            "Peak RSS: summed over the process "
            "tree (Dask scheduler, nanny and workers included). Ratios above 1 mean flowatlas "
            "eager takes longer (or more memory) than that engine.",
            "",
        ]
    lines = [
        f"Archive: {records:,} synthetic records over {args.days} days (seed {args.seed}). "
        "Each engine orients and classifies (longest-prefix match) every record and computes "
        "the cells and the rollups day, month, quarter and all for all 8 grouping sets, with "
        "bytes, packets, flows, exact distinct remote addresses and exact distinct IPv4 "
        "addresses + IPv6 prefixes; its output is checked equal to flowatlas's cube.",
        "",
        *how,
        *provenance(tuple(vers), args.load[0], command.strip(), load_after=args.load[1]),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; --smoke changes the defaults to tiny sizes and no results file."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=None, help=f"[{DEFAULT_RECORDS:,}]")
    p.add_argument("--days", type=int, default=None, help="days the archive spans [184]")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1, help="runs per engine; the best is kept")
    p.add_argument("--workers", type=int, default=usable_cores(), help="Dask workers/threads")
    p.add_argument("--engines", nargs="*", default=list(ENGINES), choices=list(ENGINES))
    p.add_argument("--no-dask", action="store_true", help="skip the threaded flowatlas run")
    p.add_argument("--data", default=str(DATA), help="where archives are cached")
    p.add_argument("--results", default=None, help=f"results file [{RESULTS}; none for --smoke]")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for CI: seconds, no file")
    p.add_argument("--keep", action="store_true", help="keep the cubes each engine wrote")
    p.add_argument(
        "--from-memory",
        action="store_true",
        help="load the archive into each engine's memory first; time only the computation",
    )
    p.add_argument("--child", choices=list(MEMORY_ENGINES), help=argparse.SUPPRESS)
    p.add_argument("--archive", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=usable_cores(), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.records is None:
        args.records = SMOKE_RECORDS if args.smoke else DEFAULT_RECORDS
    if args.days is None:
        args.days = 3 if args.smoke else 184
    if args.results is None and not args.smoke:
        args.results = str(RESULTS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with the hidden --child, one competitor); 1 if outputs differ."""
    args = parse_args(argv)
    if args.child and args.from_memory:
        got = memory_child(args.child, Path(args.archive), Path(args.out), args.threads)
        print(json.dumps(got))
        return 0
    if args.child:
        if args.child not in ENGINES:
            raise SystemExit(f"bench_build: --child {args.child} needs --from-memory")
        ENGINES[args.child](Path(args.archive), Path(args.out), args.threads)
        return 0
    results = run_memory(args) if args.from_memory else run(args)
    archive = archive_path(args.records, args.days, args.seed, Path(args.data))
    records = count_records(archive)
    text = report(results, records, args)
    print()
    print(text)
    heading = HEADING_MEMORY if args.from_memory else HEADING
    if args.records != DEFAULT_RECORDS:  # one section per archive size
        heading += f" at {args.records / 1e6:g} M records"
    if args.results:
        write_section(args.results, heading, text)
        print(f"\nwrote section {heading!r} of {args.results}")
    failed = [r for r in results if r.verified not in ("reference", "equal")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
