"""The built cube equals an independent oracle, cell by cell and rollup row by rollup row.

Two oracles recompute the cube from the archive's Parquet files, its flowatlas.toml and its
prefixes.csv, from the written contract alone (none of flowatlas's engine, kernel or classify
code is imported here):

- a slow, obvious one: one Python loop over the records with :mod:`ipaddress`, a longest
  prefix match by dictionaries per prefix length, and pandas groupbys over exact Python ints;
- DuckDB SQL over the same files: range joins on the 16-byte addresses (byte order is address
  order), ``QUALIFY`` for the most specific prefix, ``GROUPING SETS`` for the rollups.

Both run on a small synthetic archive (crossing a month and a quarter) and on a hand-made
archive of adversarial rows (IPv6 remotes, nested and repeated prefixes, internal and transit
flows, private-link interfaces, unlisted and IPv6 exporters, sampling 0/1/2/1000, a file whose
counts are already scaled, a file without the counts key, 64-bit-sized volumes, records one
microsecond either side of hour, day, month, quarter and year boundaries, a non-default IPv6
uniqueness prefix). Every cube is built eagerly and on two-worker Dask clusters (threads and
processes); every cell and every rollup row must match exactly: bytes, packets, flows, distinct
remote addresses, and distinct IPv4 addresses plus IPv6 /N prefixes (``uniques_prefix``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowatlas.engine.build import build_cube
from flowatlas.engine.cube import magnitude, open_cube
from flowatlas.schema import FLOW_SCHEMA_V1, META_COUNTS, META_VERSION, file_metadata
from flowatlas.synth import synthesize

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

UTC = dt.timezone.utc
DIMS = ("region", "network_type", "direction", "ip_version")
ROLLUPS = ("day", "month", "quarter", "all")
#: the grouping sets the cube stores (kept dimensions); see docs/cube.md
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
V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")

Key = tuple[Any, ...]
MEASURES = ("bytes", "packets", "flows", "uniques", "uniques_prefix")
Measures = tuple[int, int, int, int, int]


def grouping_name(dims: Iterable[str]) -> str:
    """The stored name of a grouping set ("region,network_type"; "total" for none)."""
    kept = set(dims)
    return ",".join(d for d in DIMS if d in kept) or "total"


# --------------------------------------------------------------------------- the contract


def to_v6(text: str) -> ipaddress.IPv6Network:
    """A configured prefix in the one 128-bit space (IPv4 a.b.c.d/n -> ::ffff:a.b.c.d/96+n)."""
    net = ipaddress.ip_network(text.strip(), strict=True)
    if net.version == 4:
        return ipaddress.IPv6Network(f"::ffff:{net.network_address}/{96 + net.prefixlen}")
    return net


def address_bytes(text: str) -> bytes:
    """An address as the archive stores it: 16 bytes, IPv4 mapped."""
    addr = ipaddress.ip_address(text)
    if addr.version == 4:
        addr = ipaddress.IPv6Address(f"::ffff:{addr}")
    return addr.packed


@dataclass
class World:
    """What the oracles read besides the records: regions, exporters, links, prefixes."""

    regions: list[tuple[ipaddress.IPv6Network, str]]  # our prefixes -> region
    exporters: dict[bytes, str]  # exporter address -> region
    links: dict[tuple[bytes, int], str]  # (exporter, interface) -> network type
    prefixes: list[tuple[ipaddress.IPv6Network, str]]  # prefixes.csv rows in file order
    rollups: tuple[str, ...]
    v6_prefix: int  # IPv6 remotes count once per /v6_prefix in uniques_prefix


def read_world(archive: Path) -> World:
    """Parse the archive's flowatlas.toml and its prefix CSV (plain tomllib and csv)."""
    import csv

    cfg = tomllib.loads((archive / "flowatlas.toml").read_text())
    assert cfg.get("cube", {}).get("bucket", "1h") == "1h", "the oracle knows hourly buckets"
    regions, exporters, links = [], {}, {}
    for region in cfg.get("regions", []):
        for p in region.get("prefixes", []):
            regions.append((to_v6(p), region["name"]))
        for e in region.get("exporters", []):
            exporters[address_bytes(e)] = region["name"]
    for rule in cfg.get("links", []):
        # links that set a type: the unnamed form (Migration by default) or a network_type;
        # named links without one only measure, and selection links have no interfaces
        ntype = rule.get("network_type", None if "name" in rule else "Migration")
        if "exporter" not in rule or ntype is None:
            continue
        for ifindex in rule["interfaces"]:
            links[(address_bytes(rule["exporter"]), int(ifindex))] = ntype
    [source] = cfg["classify"]["sources"]
    with open(archive / source["path"], newline="") as fh:
        prefixes = [(to_v6(row["prefix"]), row["network_type"]) for row in csv.DictReader(fh)]
    cube = cfg.get("cube", {})
    return World(
        regions,
        exporters,
        links,
        prefixes,
        tuple(cube.get("rollups", ROLLUPS)),
        int(cube.get("ipv6_prefix", 64)),
    )


def archive_files(archive: Path) -> list[Path]:
    """The archive's Parquet files (hidden and underscore names skipped, as Hive does)."""
    return sorted(
        p
        for p in archive.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(archive).parts)
    )


def file_counts(path: Path) -> str:
    """The file's ``flowatlas.counts`` mode ("raw" when the key is absent)."""
    meta = pq.read_metadata(path).metadata or {}
    return meta.get(META_COUNTS, b"raw").decode()


# --------------------------------------------------------------------------- oracle 1: Python


class PythonOracle:
    """The contract, record by record, in plain Python; pandas only to group the results."""

    def __init__(self, world: World) -> None:
        self.world = world
        # longest-prefix match: one dict per prefix length, later rows overwrite earlier ones
        self.by_length: dict[int, dict[int, str]] = {}
        for net, ntype in world.prefixes:
            shift = 128 - net.prefixlen
            self.by_length.setdefault(net.prefixlen, {})[int(net.network_address) >> shift] = ntype
        self.lengths = sorted(self.by_length, reverse=True)
        self._region_cache: dict[bytes, str | None] = {}

    def region_of(self, addr: bytes) -> str | None:
        if addr not in self._region_cache:
            ip = ipaddress.IPv6Address(addr)
            found = [name for net, name in self.world.regions if ip in net]
            assert len(found) <= 1, f"{ip} is in two regions' prefixes"
            self._region_cache[addr] = found[0] if found else None
        return self._region_cache[addr]

    def prefix_type(self, addr: bytes) -> str:
        value = int.from_bytes(addr, "big")
        for length in self.lengths:
            hit = self.by_length[length].get(value >> (128 - length))
            if hit is not None:
                return hit
        return "Unknown"

    def record(self, r: dict[str, Any], counts: str) -> dict[str, Any]:
        """One archive record -> its cell, remote address and measures."""
        src_region, dst_region = self.region_of(r["src_addr"]), self.region_of(r["dst_addr"])
        if dst_region and not src_region:
            direction, remote, region, ext_if = "ingress", r["src_addr"], dst_region, r["in_if"]
        elif src_region and not dst_region:
            direction, remote, region, ext_if = "egress", r["dst_addr"], src_region, r["out_if"]
        elif src_region and dst_region:
            direction, remote, region, ext_if = "internal", r["dst_addr"], src_region, r["in_if"]
        else:
            direction, remote, region, ext_if = "transit", r["src_addr"], "Unknown", r["in_if"]
        region = self.world.exporters.get(r["exporter"], region)
        if direction == "internal":
            ntype = "Internal"
        elif (r["exporter"], ext_if) in self.world.links:
            ntype = self.world.links[(r["exporter"], ext_if)]
        else:
            ntype = self.prefix_type(remote)
        rate = r["sampling_rate"]
        mult = rate if counts == "raw" and rate > 1 else 1
        start: dt.datetime = r["time_start"]
        value = int.from_bytes(remote, "big")
        is_v4 = ipaddress.IPv6Address(remote) in V4_MAPPED
        return {
            "src_port": r["src_port"],
            "bucket_start": start.replace(minute=0, second=0, microsecond=0),
            "region": region,
            "network_type": ntype,
            "direction": direction,
            "ip_version": 4 if is_v4 else 6,
            "remote": value,
            # uniques_prefix counts IPv4 addresses and IPv6 /N prefixes
            "prefix_key": f"4:{value}" if is_v4 else f"6:{value >> (128 - self.world.v6_prefix)}",
            "bytes": r["bytes"] * mult,
            "packets": r["packets"] * mult,
            "flows": 1,
        }

    def records(self, archive: Path) -> pd.DataFrame:
        """Every record of the archive, oriented and classified (exact ints as objects)."""
        rows = []
        for path in archive_files(archive):
            counts = file_counts(path)
            for r in pq.read_table(path).to_pylist():
                rows.append(self.record(r, counts))
        df = pd.DataFrame(rows)
        for col in ("remote", "bytes", "packets"):
            df[col] = pd.Series(df[col].tolist(), dtype=object, index=df.index)
        return df


def _period(ts: dt.datetime, rollup: str) -> dt.datetime | None:
    """Start of the UTC day, month or quarter holding ``ts``; None for the whole range."""
    if rollup == "all":
        return None
    if rollup == "day":
        return ts.replace(hour=0)
    month = ts.month if rollup == "month" else 3 * ((ts.month - 1) // 3) + 1
    return ts.replace(month=month, day=1, hour=0)


def _group(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sums and exact distinct counts of ``df`` grouped by ``by`` (one row when ``by`` is empty)."""
    agg = {
        "bytes": ("bytes", "sum"),
        "packets": ("packets", "sum"),
        "flows": ("flows", "sum"),
        "uniques": ("remote", "nunique"),
        "uniques_prefix": ("prefix_key", "nunique"),
    }
    if not by:
        return pd.DataFrame({k: [df[c].agg(f)] for k, (c, f) in agg.items()})
    return df.groupby(by, sort=False).agg(**agg).reset_index()


def _as_dict(df: pd.DataFrame, key_cols: list[str], fixed: Key = ()) -> dict[Key, Measures]:
    """Grouped rows keyed by ``fixed`` + their key columns, as plain Python values."""
    out = {}
    for row in df.to_dict("records"):
        key = fixed + tuple(_plain(row[c]) for c in key_cols)
        out[key] = tuple(int(row[m]) for m in MEASURES)
    return out


def _plain(v: Any) -> Any:
    """A pandas/NumPy scalar as the plain Python value pyarrow gives for the cube."""
    if isinstance(v, pd.Timestamp):
        return v.to_pydatetime()
    if isinstance(v, np.integer):
        return int(v)
    return v


def python_cube(records: pd.DataFrame, rollups: Iterable[str]) -> tuple[dict, dict]:
    """(cells, rollups) of the oracle's records, keyed like :func:`cube_rows`."""
    cells = _as_dict(_group(records, ["bucket_start", *DIMS]), ["bucket_start", *DIMS])
    rows: dict[Key, Measures] = {}
    for rollup in rollups:
        df = records.assign(period=[_period(t, rollup) for t in records["bucket_start"]])
        for dims in GROUPINGS:
            by = ([] if rollup == "all" else ["period"]) + list(dims)
            got = _as_dict(_group(df, by), by, (rollup,) if rollup != "all" else (rollup, None))
            for key, value in got.items():
                rollup_, period, *kept = key
                named = dict(zip(dims, kept, strict=True))
                full = (rollup_, period, grouping_name(dims), *(named.get(d) for d in DIMS))
                rows[full] = value
    return cells, rows


# --------------------------------------------------------------------------- oracle 2: DuckDB


def _ranges(nets: Iterable[tuple[ipaddress.IPv6Network, str]]) -> pa.Table:
    """Prefixes as first/last 16-byte address (byte order is address order), length, row."""
    nets = list(nets)
    return pa.table(
        {
            "first": pa.array([n.network_address.packed for n, _ in nets], pa.binary(16)),
            "last": pa.array([n.broadcast_address.packed for n, _ in nets], pa.binary(16)),
            "length": pa.array([n.prefixlen for n, _ in nets], pa.int32()),
            "row": pa.array(range(len(nets)), pa.int32()),
            "name": pa.array([name for _, name in nets], pa.string()),
        }
    )


DUCKDB_ORIENT = """
CREATE TABLE oriented AS
WITH kv AS (
    SELECT file_name, decode(value) AS counts FROM parquet_kv_metadata($files)
    WHERE decode(key) = 'flowatlas.counts'
),
rec AS (
    SELECT r.*, row_number() OVER () AS rid, coalesce(kv.counts, 'raw') AS counts
    FROM read_parquet($files, filename = true, hive_partitioning = false) r
    LEFT JOIN kv ON r.filename = kv.file_name
),
located AS (
    SELECT rec.*, s.name AS src_region, d.name AS dst_region
    FROM rec
    LEFT JOIN regions s ON rec.src_addr BETWEEN s.first AND s.last
    LEFT JOIN regions d ON rec.dst_addr BETWEEN d.first AND d.last
),
directed AS (
    SELECT *,
        CASE WHEN dst_region IS NOT NULL AND src_region IS NULL THEN 'ingress'
             WHEN src_region IS NOT NULL AND dst_region IS NULL THEN 'egress'
             WHEN src_region IS NOT NULL THEN 'internal'
             ELSE 'transit' END AS direction
    FROM located
),
sided AS (
    SELECT d.*,
        CASE WHEN direction IN ('egress', 'internal') THEN dst_addr ELSE src_addr END AS remote,
        CASE WHEN direction = 'egress' THEN out_if ELSE in_if END AS ext_if,
        coalesce(e.region,
                 CASE direction WHEN 'ingress' THEN dst_region
                                WHEN 'transit' THEN 'Unknown'
                                ELSE src_region END) AS region
    FROM directed d LEFT JOIN exporters e ON d.exporter = e.addr
),
matched AS (
    SELECT s.rid, p.name AS prefix_type
    FROM sided s JOIN prefixes p ON s.remote BETWEEN p.first AND p.last
    QUALIFY row_number() OVER (PARTITION BY s.rid ORDER BY p.length DESC, p.row DESC) = 1
)
SELECT
    date_trunc('hour', s.time_start) AS bucket_start,
    s.region,
    CASE WHEN s.direction = 'internal' THEN 'Internal'
         ELSE coalesce(l.network_type, m.prefix_type, 'Unknown') END AS network_type,
    s.direction,
    CASE WHEN s.remote BETWEEN $v4_first AND $v4_last THEN 4 ELSE 6 END AS ip_version,
    s.remote,
    CASE WHEN s.remote BETWEEN $v4_first AND $v4_last THEN ('0x' || hex(s.remote))::UHUGEINT
         ELSE (('0x' || hex(s.remote))::UHUGEINT >> $shift::UHUGEINT) << $shift::UHUGEINT
         END AS prefix_key,
    CAST(s.bytes AS HUGEINT) * CASE WHEN s.counts = 'raw' AND s.sampling_rate > 1
                                    THEN s.sampling_rate ELSE 1 END AS vol,
    CAST(s.packets AS HUGEINT) * CASE WHEN s.counts = 'raw' AND s.sampling_rate > 1
                                      THEN s.sampling_rate ELSE 1 END AS pk
FROM sided s
LEFT JOIN links l ON s.exporter = l.exporter AND s.ext_if = l.ifindex
LEFT JOIN matched m ON s.rid = m.rid
"""

MEASURES_SQL = "sum(vol) AS bytes, sum(pk) AS packets, count(*) AS flows, "
MEASURES_SQL += "count(DISTINCT remote) AS uniques, count(DISTINCT prefix_key) AS uniques_prefix"
PERIOD_SQL = {
    "day": "date_trunc('day', bucket_start)",
    "month": "date_trunc('month', bucket_start)",
    "quarter": "date_trunc('quarter', bucket_start)",
    "all": "CAST(NULL AS TIMESTAMPTZ)",
}


def duckdb_cube(archive: Path, world: World) -> tuple[dict, dict]:
    """(cells, rollups) computed by DuckDB SQL straight from the archive's files."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("regions", _ranges(world.regions))
    con.register("prefixes", _ranges(world.prefixes))
    con.register(
        "exporters",
        pa.table(
            {
                "addr": pa.array(list(world.exporters), pa.binary(16)),
                "region": list(world.exporters.values()),
            }
        ),
    )
    con.register(
        "links",
        pa.table(
            {
                "exporter": pa.array([k[0] for k in world.links], pa.binary(16)),
                "ifindex": pa.array([k[1] for k in world.links], pa.uint32()),
                "network_type": list(world.links.values()),
            }
        ),
    )
    con.execute(
        DUCKDB_ORIENT,
        {
            "files": [str(p) for p in archive_files(archive)],
            "v4_first": V4_MAPPED.network_address.packed,
            "v4_last": V4_MAPPED.broadcast_address.packed,
            "shift": 128 - world.v6_prefix,
        },
    )
    dims = ", ".join(DIMS)
    cells = {}
    for row in con.execute(
        f"SELECT bucket_start, {dims}, {MEASURES_SQL} FROM oriented GROUP BY ALL"
    ).fetchall():
        cells[tuple(row[:5])] = tuple(int(v) for v in row[5:])
    assert all(len(v) == len(MEASURES) for v in cells.values())
    rows = {}
    for rollup in world.rollups:
        sets = ", ".join("(" + ", ".join(["period", *g]) + ")" for g in GROUPINGS)
        sql = f"""
            SELECT grouping_id({dims}) AS gid, period, {dims}, {MEASURES_SQL}
            FROM (SELECT *, {PERIOD_SQL[rollup]} AS period FROM oriented)
            GROUP BY GROUPING SETS ({sets})
        """
        for gid, period, *rest in con.execute(sql).fetchall():
            # grouping_id: bit 3 = region ... bit 0 = ip_version, set where not grouped
            kept = [d for i, d in enumerate(DIMS) if not gid & (1 << (3 - i))]
            key = (rollup, period, grouping_name(kept), *rest[:4])
            rows[key] = tuple(int(v) for v in rest[4:])
    con.close()
    return cells, rows


# --------------------------------------------------------------------------- the cube


def cube_rows(cube_dir: Path) -> tuple[dict, dict]:
    """(cells, rollups) of a built cube, read with pyarrow as plain Python values."""
    cells = {}
    for r in pq.read_table(cube_dir / "cells.parquet").to_pylist():
        key = (r["bucket_start"], *(r[d] for d in DIMS))
        assert key not in cells, f"cell {key} appears twice"
        cells[key] = tuple(r[m] for m in MEASURES)
    rows = {}
    for r in pq.read_table(cube_dir / "rollups.parquet").to_pylist():
        key = (r["rollup"], r["period_start"], r["grouping"], *(r[d] for d in DIMS))
        assert key not in rows, f"rollup row {key} appears twice"
        rows[key] = tuple(r[m] for m in MEASURES)
    return cells, rows


def assert_same(got: dict, want: dict, what: str) -> None:
    """Equal keys and equal measures, with the first differences named."""
    missing = sorted(set(want) - set(got), key=repr)[:5]
    extra = sorted(set(got) - set(want), key=repr)[:5]
    wrong = [(k, got[k], want[k]) for k in sorted(want, key=repr) if k in got and got[k] != want[k]]
    assert not (missing or extra or wrong), (
        f"{what}: {len(set(want) - set(got))} missing, {len(set(got) - set(want))} extra, "
        f"{len(wrong)} wrong {MEASURES}\n"
        f"missing: {missing}\nextra: {extra}\nwrong (got, want): {wrong[:5]}"
    )


def oracle_magnitude(nbytes: int, uniques: int) -> float:
    """Magnitude as the contract defines it, in float64: bytes * 8 / uniques."""
    return float(nbytes) * 8.0 / float(uniques)


# --------------------------------------------------------------------------- archives

HAND_CONFIG = """
[cube]
bucket = "1h"
rollups = ["day", "month", "quarter", "all"]
ipv6_prefix = 47

[[regions]]
name = "West"
prefixes = ["198.18.0.0/17", "2001:db8:100::/40"]
exporters = ["10.0.0.1"]

[[regions]]
name = "East"
prefixes = ["198.18.128.0/17", "2001:db8:200::/40"]
exporters = ["10.0.0.2", "2001:db8:ffff::2"]

[[links]]
exporter = "10.0.0.1"
interfaces = [501, 502]
network_type = "Migration"

[[links]]
exporter = "10.0.0.3"
interfaces = [7]
network_type = "Migration"

[[links]]
exporter = "2001:db8:ffff::2"
interfaces = [502]
network_type = "Satellite"

[classify]
network_types = ["Satellite"]
sources = [{ path = "prefixes.csv", format = "prefix-csv", name = "hand-made" }]
"""

# nested prefixes (a child listed before its parent), an identical prefix listed three times
# (the last row wins), a /32 and a /128 host route, a configured extra type (Satellite), IPv6
# prefixes around IPv4-compatible space and at the very top of the address space, prefixes
# covering our own space
HAND_PREFIXES = """prefix,network_type,asn,org,country
20.0.0.0/8,ISP Tier1,64501,Tier One,US
20.1.0.0/16,Hosting,64502,Host Co,US
20.1.2.128/25,Neocloud,64503,GPU Cloud,US
20.1.2.0/24,CDN,64504,Edge CDN,US
20.1.2.200/32,Hyperscaler,64505,Big Cloud,US
30.0.0.0/8,CDN,64506,First Listing,US
30.0.0.0/8,Hosting,64507,Second Listing,US
30.0.0.0/8,ISP Regional,64508,Last Listing,US
198.16.0.0/12,ISP Tier1,64509,Covers Us,US
255.255.255.0/24,ISP Tier1,64510,Top Of Four,US
40.0.0.0/8,Satellite,64519,Sky Link,US
2600::/12,ISP Regional,64511,Regional Six,US
2600:1::/32,Hyperscaler,64512,Big Cloud Six,US
2600:1:2::/48,Neocloud,64513,GPU Six,US
2600:1:2:3::/64,CDN,64514,Edge Six,US
2600:1:2:3::1/128,Hosting,64515,One Host,US
::/96,Hosting,64516,Compat Space,ZZ
2001:db8::/32,ISP Tier1,64517,Doc Space,ZZ
ffff::/16,CDN,64518,Top Of Six,ZZ
"""

OURS = {
    "West": ["198.18.0.0", "198.18.0.10", "198.18.127.255", "2001:db8:100::5",
             "2001:db8:1ff:ffff:ffff:ffff:ffff:ffff"],
    "East": ["198.18.128.0", "198.18.200.7", "198.18.255.255", "2001:db8:200::9"],
}  # fmt: skip
REMOTES = [
    "20.0.0.1", "20.1.0.1", "20.1.2.3", "20.1.2.127", "20.1.2.128", "20.1.2.129",
    "20.1.2.200", "20.1.2.201", "20.1.2.255", "20.1.3.1", "20.255.255.255", "21.0.0.0",
    "19.255.255.255", "30.0.0.5", "30.255.255.255", "198.20.0.1", "198.17.255.255",
    "255.255.255.255", "0.0.0.0", "8.8.8.8", "40.1.1.1",
    "2600::1", "260f:ffff::1", "2610::1", "2600:1:ffff::1", "2600:1:2:ffff::1",
    "2600:1:2:3::2", "2600:1:2:3::1", "2600:1:2:3:ffff:ffff:ffff:ffff", "::1.2.3.4", "::",
    "64:ff9b::1402:304", "fe80::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "2001:db8:300::1", "2001:db8:ff::1",
]  # fmt: skip
EXPORTERS = ["10.0.0.1", "10.0.0.2", "2001:db8:ffff::2", "10.0.0.3", "10.0.0.4"]
INTERFACES = [1, 2, 7, 101, 501, 502]
SAMPLING = [0, 1, 2, 1000]


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


BOUNDARIES = [
    _t("2025-09-30T23:00:00"),  # last hour of a quarter
    _t("2025-10-01T00:00:00"),  # first instant of a day, month and quarter
    _t("2025-10-01T01:00:00"),
    _t("2025-11-01T00:00:00"),
    _t("2026-01-01T00:00:00"),  # a new year
]
US = dt.timedelta(microseconds=1)

# hand-checked rows, tagged by src_port (random rows have src_port 0):
# (tag, time, exporter, src, dst, in_if, out_if, bytes, packets, sampling,
#  expected (region, network_type, direction, ip_version, volume))
SPOT = [
    (1, _t("2025-09-30T23:59:59.999999"), "10.0.0.2", "198.18.128.0", "20.1.2.200", 101, 2,
     5, 1, 1000, ("East", "Hyperscaler", "egress", 4, 5000)),
    (2, _t("2025-10-01T00:00:00"), "10.0.0.4", "2600:1:2:3::1", "198.18.0.10", 1, 101,
     2**60 + 1, 3, 1, ("West", "Hosting", "ingress", 6, 2**60 + 1)),
    (3, _t("2025-10-01T00:00:00"), "10.0.0.1", "20.1.2.3", "198.18.0.10", 501, 101,
     7, 1, 0, ("West", "Migration", "ingress", 4, 7)),
    (4, _t("2025-10-01T00:00:00"), "10.0.0.1", "20.1.2.3", "198.18.0.10", 1, 501,
     7, 1, 2, ("West", "CDN", "ingress", 4, 14)),
    (5, _t("2025-10-01T00:59:59.999999"), "10.0.0.1", "198.18.0.10", "20.1.2.129", 501, 501,
     11, 1, 1, ("West", "Migration", "egress", 4, 11)),
    (6, _t("2025-10-01T01:00:00"), "10.0.0.3", "30.0.0.5", "8.8.8.8", 7, 1,
     13, 1, 1, ("Unknown", "Migration", "transit", 4, 13)),
    (7, _t("2025-10-01T01:00:00"), "10.0.0.1", "198.18.0.10", "2001:db8:200::9", 501, 1,
     17, 1, 1, ("West", "Internal", "internal", 6, 17)),
    (8, _t("2025-10-31T23:59:59.999999"), "2001:db8:ffff::2", "198.18.0.10", "30.0.0.5",
     1, 2, 19, 1, 1, ("East", "ISP Regional", "egress", 4, 19)),
    (9, _t("2025-11-01T00:00:00"), "10.0.0.4", "198.18.200.7", "198.18.0.10", 1, 1,
     23, 1, 1, ("East", "Internal", "internal", 4, 23)),
    (10, _t("2025-12-31T23:59:59.999999"), "10.0.0.4", "::1.2.3.4", "64:ff9b::1402:304",
     1, 1, 29, 1, 1, ("Unknown", "Hosting", "transit", 6, 29)),
    (11, _t("2026-01-01T00:00:00"), "10.0.0.4", "2001:db8:200::9",
     "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1, 1, 31, 1, 1,
     ("East", "CDN", "egress", 6, 31)),
    (12, _t("2026-01-01T00:00:00"), "10.0.0.4", "198.20.0.1",
     "2001:db8:1ff:ffff:ffff:ffff:ffff:ffff", 1, 1, 37, 1, 1000,
     ("West", "ISP Tier1", "ingress", 4, 37000)),
    (13, _t("2025-10-01T00:00:00"), "10.0.0.4", "21.0.0.0", "198.18.127.255", 1, 1,
     41, 1, 1, ("West", "Unknown", "ingress", 4, 41)),
    (14, _t("2025-10-01T00:00:00"), "10.0.0.2", "fe80::1", "2600:1:2:3:ffff:ffff:ffff:ffff",
     1, 1, 43, 1, 1, ("East", "Unknown", "transit", 6, 43)),
    (15, _t("2025-10-01T00:00:00"), "2001:db8:ffff::2", "20.1.2.3", "198.18.0.10",
     502, 1, 47, 1, 1, ("East", "Satellite", "ingress", 4, 47)),
    (16, _t("2025-10-01T00:00:00"), "10.0.0.4", "40.1.1.1", "198.18.200.7",
     1, 1, 53, 1, 1, ("East", "Satellite", "ingress", 4, 53)),
]  # fmt: skip
SCALED_TAG = 100  # rows in the file whose counts are already scaled


def _table(rows: list[dict[str, Any]], counts: str | None) -> pa.Table:
    """Rows as a flow schema v1 table; ``counts=None`` leaves the counts key out entirely."""
    meta = file_metadata(counts) if counts else {META_VERSION: b"1"}
    schema = FLOW_SCHEMA_V1.with_metadata(meta)
    return pa.Table.from_pylist(rows, schema=schema)


def _row(tag, t, exporter, src, dst, in_if, out_if, nbytes, packets, rate) -> dict[str, Any]:
    """One archive record from text addresses (``tag`` rides in src_port)."""
    return {
        "time_start": t,
        "time_end": t + dt.timedelta(seconds=1),
        "exporter": address_bytes(exporter),
        "in_if": in_if,
        "out_if": out_if,
        "src_addr": address_bytes(src),
        "dst_addr": address_bytes(dst),
        "src_port": tag,
        "dst_port": 443,
        "proto": 6,
        "bytes": nbytes,
        "packets": packets,
        "sampling_rate": rate,
        "src_as": 0,
        "dst_as": 0,
    }


def write_hand_archive(root: Path, random_rows: int = 3000, seed: int = 2025) -> None:
    """The adversarial archive: spot rows, random rows near boundaries, odd file metadata."""
    rng = np.random.default_rng(seed)
    pool = [a for addrs in OURS.values() for a in addrs] + REMOTES
    rows = [_row(*spot[:10]) for spot in SPOT]
    for _ in range(random_rows):
        t = BOUNDARIES[rng.integers(len(BOUNDARIES))]
        offsets = (-US, 0 * US, US, dt.timedelta(seconds=int(rng.integers(-5400, 5400))))
        t += offsets[rng.integers(len(offsets))]
        rows.append(
            _row(
                0,
                t,
                EXPORTERS[rng.integers(len(EXPORTERS))],
                pool[rng.integers(len(pool))],
                pool[rng.integers(len(pool))],
                INTERFACES[rng.integers(len(INTERFACES))],
                INTERFACES[rng.integers(len(INTERFACES))],
                int(rng.integers(1, 2**36)),
                int(rng.integers(1, 2**24)),
                SAMPLING[rng.integers(len(SAMPLING))],
            )
        )
    by_day: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_day.setdefault(r["time_start"].date().isoformat(), []).append(r)
    for day, day_rows in by_day.items():
        (root / f"day={day}").mkdir(parents=True)
        # the last day's file carries no flowatlas.counts key at all: it means raw
        counts = None if day == max(by_day) else "raw"
        pq.write_table(_table(day_rows, counts), root / f"day={day}" / "part-00000.parquet")
    # already-scaled counts (as nfdump writes them): sampling_rate must not multiply again
    scaled = [
        _row(SCALED_TAG, _t("2025-10-01T00:30:00"), "10.0.0.2", "20.1.2.3", "198.18.128.0",
             1, 101, 1000 * (i + 1), 1000, 1000)
        for i in range(20)
    ]  # fmt: skip
    pq.write_table(_table(scaled, "scaled"), root / "day=2025-10-01" / "part-00001.parquet")
    (root / "flowatlas.toml").write_text(HAND_CONFIG)
    (root / "prefixes.csv").write_text(HAND_PREFIXES)


# --------------------------------------------------------------------------- fixtures


@dataclass
class Expected:
    """One archive with both oracles' answers."""

    archive: Path
    records: pd.DataFrame
    python: tuple[dict, dict]
    duckdb: tuple[dict, dict]


def _expected(archive: Path) -> Expected:
    """Both oracles' answers for one archive."""
    world = read_world(archive)
    records = PythonOracle(world).records(archive)
    return Expected(
        archive,
        records,
        python_cube(records, world.rollups),
        duckdb_cube(archive, world),
    )


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> Expected:
    """The adversarial archive and what the oracles make of it."""
    root = tmp_path_factory.mktemp("hand") / "archive"
    write_hand_archive(root)
    return _expected(root)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Expected:
    """A small synthetic archive and what the oracles make of it."""
    root = tmp_path_factory.mktemp("synth") / "archive"
    # eight days across the end of September: a month and a quarter boundary
    synthesize(root, records=30_000, start="2025-09-27", days=8, seed=7, workers=1)
    return _expected(root)


@pytest.fixture(scope="module", params=["hand", "synthetic"])
def expected(request: pytest.FixtureRequest) -> Expected:
    """Each archive in turn."""
    return request.getfixturevalue(request.param)


@pytest.fixture(
    scope="module",
    params=[(0, False), (2, False), (2, True)],
    ids=["eager", "dask2-threads", "dask2-processes"],
)
def built(
    request: pytest.FixtureRequest, expected: Expected, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Expected, Path]:
    """The archive's cube built eagerly or on a local Dask cluster, with nothing quarantined."""
    out = tmp_path_factory.mktemp("cube") / "cube"
    workers, processes = request.param
    summary = build_cube(expected.archive, out, workers=workers, processes=processes)
    assert summary.records == summary.cubed == len(expected.records)
    return expected, out


# --------------------------------------------------------------------------- tests


def test_spot_rows_follow_the_contract(hand: Expected) -> None:
    """The oracle itself, on rows whose answers were worked out by hand."""
    recs = hand.records.set_index("src_port")
    for tag, *_, (region, ntype, direction, version, volume) in SPOT:
        r = recs.loc[tag]
        got = (r["region"], r["network_type"], r["direction"], r["ip_version"], r["bytes"])
        assert got == (region, ntype, direction, version, volume), f"spot row {tag}"
    scaled = recs.loc[SCALED_TAG]
    assert scaled["bytes"].tolist() == [1000 * (i + 1) for i in range(20)]


def test_hand_archive_covers_the_cases(hand: Expected) -> None:
    """Guard against a vacuous pass: the adversarial archive holds every kind of row."""
    recs = hand.records
    assert set(recs["direction"]) == {"ingress", "egress", "internal", "transit"}
    assert set(recs["ip_version"]) == {4, 6}
    assert {"Migration", "Internal", "Unknown", "Neocloud", "Hyperscaler", "Satellite"} <= set(
        recs["network_type"]
    )
    assert set(recs["region"]) == {"West", "East", "Unknown"}
    months = {t.month for t in recs["bucket_start"]}
    assert {9, 10, 11, 12, 1} <= months
    assert max(recs["bytes"]) > 2**60  # beyond float64's exact integers
    cells, rows = hand.python
    assert any(m[3] > 1 for m in cells.values())
    # IPv6 addresses that share a /47: uniques_prefix really differs from uniques
    assert any(m[4] < m[3] for k, m in rows.items() if k[0] == "all")


def test_oracles_agree(expected: Expected) -> None:
    """Two independent implementations of the contract give the same cube."""
    py_cells, py_rows = expected.python
    db_cells, db_rows = expected.duckdb
    assert_same(db_cells, py_cells, "DuckDB cells vs Python cells")
    assert_same(db_rows, py_rows, "DuckDB rollups vs Python rollups")


def test_cells_equal_oracle(built: tuple[Expected, Path]) -> None:
    """Every cell: bytes, packets, flows, distinct remote IPs and prefixes, exactly."""
    expected, cube_dir = built
    cells, _ = cube_rows(cube_dir)
    assert_same(cells, expected.python[0], "cube cells vs oracle")
    assert sum(v[2] for v in cells.values()) == len(expected.records)


@pytest.mark.parametrize("rollup", ROLLUPS)
def test_rollups_equal_oracle(built: tuple[Expected, Path], rollup: str) -> None:
    """Every rollup row of every grouping set: sums and exact distinct counts."""
    expected, cube_dir = built
    _, rows = cube_rows(cube_dir)
    got = {k: v for k, v in rows.items() if k[0] == rollup}
    want = {k: v for k, v in expected.python[1].items() if k[0] == rollup}
    assert {k[2] for k in want} == {grouping_name(g) for g in GROUPINGS}
    assert_same(got, want, f"cube rollup {rollup!r} vs oracle")


def test_magnitude_equals_oracle(built: tuple[Expected, Path]) -> None:
    """Magnitude read through the cube API is bytes * 8 / uniques of the oracle's numbers."""
    expected, cube_dir = built
    cube = open_cube(cube_dir)
    want_cells, want_rows = expected.python
    cells = cube.cells
    mags = magnitude(cells["bytes"], cells["uniques"]).tolist()
    for row, mag in zip(cells[["bucket_start", *DIMS]].to_dict("records"), mags, strict=True):
        key = tuple(_plain(row[c]) for c in ["bucket_start", *DIMS])
        b, _, _, u, _ = want_cells[key]
        assert mag == oracle_magnitude(b, u), key
        assert abs(mag - b * 8 / u) <= math.ulp(mag), key  # within an ulp of the exact ratio
    for rollup in ("all", "month"):
        for dims in GROUPINGS:
            df = cube.rollup(by=dims, period=rollup)
            keep = (["period_start"] if rollup != "all" else []) + list(dims)
            assert len(df) == sum(
                1 for k in want_rows if k[0] == rollup and k[2] == grouping_name(dims)
            )
            for row in df.to_dict("records"):
                named = {d: _plain(row[d]) for d in dims}
                period = _plain(row["period_start"]) if "period_start" in keep else None
                key = (rollup, period, grouping_name(dims), *(named.get(d) for d in DIMS))
                b, _, _, u, _ = want_rows[key]
                assert (row["bytes"], row["uniques"]) == (b, u), key
                assert row["magnitude"] == oracle_magnitude(b, u), key
