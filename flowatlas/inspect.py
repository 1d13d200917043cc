"""``flowatlas inspect``: what an archive holds, and what the configuration makes of it.

A network engineer writing the configuration needs to know which routers export, with which
interfaces and sampling rates, which address space is busiest on each side, and how much of
the traffic the current configuration would orient and classify. :func:`inspect_archive`
answers in one pass over the archive's columns, row group by row group on a pool of threads
(Parquet decoding and the kernels release the GIL), with exact integer sums:

- time range and record count; address families;
- exporters with their records, bytes as stored and sampling-corrected volume, their
  sampling rates, and their interfaces (records in and out);
- the busiest IPv4 /24 and IPv6 /48 prefixes on each side (source, destination);
- the share of records the configuration would put in each region, network type and
  direction, counted by the build's own per-record kernels
  (:func:`flowatlas.engine.pipeline.orient_and_cell`), so the numbers are the ones a build
  gives: region Unknown, network type Unknown, transit, quarantined.

:func:`starter_config` (``flowatlas config --init``) turns an inspection into a commented
TOML file to edit: regions from the exporters, local prefixes from the data (busy prefixes
seen as both source and destination that talk to many distinct networks).
:class:`SetupShares` is the short accounting ``import`` and ``build`` end with, and the
warnings they give when the configuration leaves most records Unknown.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import ipaddress
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowatlas.config import Config
from flowatlas.vocab import DIRECTIONS, TRANSIT, UNKNOWN, UNKNOWN_REGION

#: rows per unit of work (whole row groups, as the build cuts them)
CHUNK_ROWS = 1_000_000
#: partial group-by rows held before they are folded together (bounds memory)
COMPACT_ROWS = 4_000_000
#: shares above which import and build warn that the configuration looks wrong
WARN_SHARE = 0.5
#: prefix keys: IPv4 /24 (``lo & ~0xff``, bit 0 clear) or IPv6 /48 (``hi & ~0xffff | 1``)
_V4_TAG = np.uint64(0xFFFF)
_MASK24 = np.uint64(0xFFFF_FFFF_FFFF_FF00)
_MASK48 = np.uint64(0xFFFF_FFFF_FFFF_0000)
_MAX64 = np.uint64(0xFFFF_FFFF_FFFF_FFFF)

Progress = Callable[[int], None]  # records done since the last call


# --------------------------------------------------------------------------- results


@dataclass
class Count:
    """Records and sampling-corrected volume (bytes) of something."""

    records: int = 0
    volume: int = 0


@dataclass
class Interface:
    """One exporter interface: records entering (in_if) and leaving (out_if) through it."""

    index: int
    records_in: int = 0
    records_out: int = 0
    volume_in: int = 0
    volume_out: int = 0


@dataclass
class ExporterInfo:
    """One exporter (router): its records, bytes, sampling rates and interfaces."""

    address: str
    records: int
    bytes: int  # as stored in the archive
    volume: int  # sampling-corrected, as the cube counts it
    region: str  # the region the configuration gives it ("" if none)
    sampling: dict[int, int] = field(default_factory=dict)  # rate -> records
    interfaces: list[Interface] = field(default_factory=list)


@dataclass
class PrefixInfo:
    """A busy prefix on one side of the flows."""

    prefix: str
    records: int
    volume: int


@dataclass
class SetupShares:
    """How a configuration sorts records: the accounting ``import`` and ``build`` print.

    ``records`` counts every record read; ``quarantined`` those set aside (never cubed). The
    shares are of all records read.
    """

    records: int
    quarantined: int
    unknown_region: int
    unknown_type: int
    transit: int
    config_origin: str = "<defaults>"

    def share(self, n: int) -> float:
        return n / self.records if self.records else 0.0

    def line(self) -> str:
        """One line: the share of Unknown region, Unknown type, transit and quarantined."""
        return (
            f"records {self.records:,}: region Unknown {_pct(self.share(self.unknown_region))}, "
            f"type Unknown {_pct(self.share(self.unknown_type))}, transit "
            f"{_pct(self.share(self.transit))}, quarantined {_pct(self.share(self.quarantined))}"
            f" (config {self.config_origin})"
        )

    def warnings(self, archive: str = "ARCHIVE", threshold: float = WARN_SHARE) -> list[str]:
        """What looks wrong with the set-up, each naming the key to set and how to find it."""
        out = []
        where = (
            f"in {self.config_origin}"
            if self.config_origin != "<defaults>"
            else "in a configuration (--config FILE, or ARCHIVE/flowatlas.toml; none was found)"
        )
        if self.share(self.unknown_region) > threshold:
            out.append(
                f"{_pct(self.share(self.unknown_region))} of records have region Unknown: set "
                f"[[regions]] exporters (the routers of each region) or prefixes {where}"
            )
        if self.share(self.transit) > threshold:
            out.append(
                f"{_pct(self.share(self.transit))} of records touch none of our prefixes "
                f"(transit): set [[regions]] prefixes (the address space we announce) {where}"
            )
        if self.share(self.unknown_type) > threshold:
            out.append(
                f"{_pct(self.share(self.unknown_type))} of records have network type Unknown: "
                "set [classify] table (compiled by `flowatlas classify compile`) or "
                f"[[classify.sources]] {where}"
            )
        if self.share(self.quarantined) > threshold:
            out.append(
                f"{_pct(self.share(self.quarantined))} of records were quarantined (reasons "
                "above): check the import's format and options"
            )
        if out:
            out.append(
                f"`flowatlas inspect {archive}` shows the archive's exporters and busiest "
                f"prefixes; `flowatlas config --init {archive} --out flowatlas.toml` writes a "
                "starter configuration from them"
            )
        return out


def _pct(x: float) -> str:
    if 0 < x < 0.001:
        return "<0.1%"
    return f"{100 * x:.1f}%"


@dataclass
class Inspection:
    """What :func:`inspect_archive` found (``to_dict`` for JSON, ``render`` for people)."""

    archive: str
    files: int
    records: int
    first: str | None  # earliest time_start (ISO 8601, UTC)
    last: str | None  # latest time_start
    families: dict[str, int]  # "IPv4" / "IPv6" -> records (by source address)
    exporters: list[ExporterInfo]
    prefixes: dict[str, dict[str, list[PrefixInfo]]]  # side -> "v4"/"v6" -> busiest
    config_origin: str
    regions: dict[str, Count]
    network_types: dict[str, Count]
    directions: dict[str, Count]
    quarantined: dict[str, int]
    # every source and destination prefix key seen, with its records (for config --init)
    _seen: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    #: files per layout (:func:`flowatlas.io.archive.file_layout`: "auto", or the Parquet
    #: codec: "zstd", "lz4", "uncompressed")
    compression: dict[str, int] = field(default_factory=dict)

    @property
    def shares(self) -> SetupShares:
        """The set-up accounting of the configuration inspected."""
        return SetupShares(
            self.records,
            sum(self.quarantined.values()),
            self.regions.get(UNKNOWN_REGION, Count()).records,
            self.network_types.get(UNKNOWN, Count()).records,
            self.directions.get(DIRECTIONS[TRANSIT], Count()).records,
            self.config_origin,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_seen")
        for e in d["exporters"]:
            e["sampling"] = {str(k): v for k, v in e["sampling"].items()}
        d["shares"] = asdict(self.shares)
        return d

    def render(self, top: int = 10) -> str:
        """The report people read: one screen per section."""
        lines = [
            f"archive {self.archive}: {self.records:,} records in {self.files:,} files",
            f"  time      {self.first} .. {self.last}",
            "  layout    " + ", ".join(f"{k} ({v:,} files)" for k, v in self.compression.items()),
            "  families  "
            + ", ".join(f"{k} {_pct(v / max(self.records, 1))}" for k, v in self.families.items()),
            "",
            f"exporters ({len(self.exporters)}): records, bytes as stored, volume "
            "(sampling-corrected), sampling rates, region in the configuration",
        ]
        for e in self.exporters:
            rates = ", ".join(
                f"1:{r if r > 1 else 1} {_pct(n / max(e.records, 1))}"
                for r, n in sorted(e.sampling.items(), key=lambda kv: -kv[1])
            )
            lines.append(
                f"  {e.address:<40} {e.records:>13,} rec {_bytes(e.bytes):>10} "
                f"{_bytes(e.volume):>10}  sampling {rates}  region {e.region or '-'}"
            )
            ifs = sorted(e.interfaces, key=lambda i: -(i.records_in + i.records_out))
            shown = ", ".join(
                f"{i.index} ({i.records_in:,} in / {i.records_out:,} out)" for i in ifs[:top]
            )
            more = f" ... {len(ifs) - top} more" if len(ifs) > top else ""
            lines.append(f"    interfaces {len(ifs)}: {shown}{more}")
        for side in ("src", "dst"):
            for fam, label in (("v4", "IPv4 /24"), ("v6", "IPv6 /48")):
                rows = self.prefixes[side][fam][:top]
                if not rows:
                    continue
                lines += ["", f"busiest {label} as {side} (records, volume):"]
                for p in rows:
                    lines.append(f"  {p.prefix:<24} {p.records:>13,} rec {_bytes(p.volume):>10}")
        lines += ["", f"with the configuration {self.config_origin} (share of records, volume):"]
        for title, counts in (
            ("region", self.regions),
            ("network type", self.network_types),
            ("direction", self.directions),
        ):
            total_v = sum(c.volume for c in counts.values()) or 1
            lines.append(f"  {title}:")
            for name, c in counts.items():
                lines.append(
                    f"    {name:<20} {_pct(c.records / max(self.records, 1)):>7} "
                    f"{_pct(c.volume / total_v):>7}"
                )
        q = sum(self.quarantined.values())
        lines.append(f"  quarantined: {q:,}" + "".join(
            f"; {k} {v:,}" for k, v in sorted(self.quarantined.items())
        ))  # fmt: skip
        lines += ["", self.shares.line()]
        return "\n".join(lines)


def _bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)  # pragma: no cover


# --------------------------------------------------------------------------- one chunk


def volume_of(nbytes: np.ndarray, rate: np.ndarray, raw: bool) -> np.ndarray:
    """Sampling-corrected bytes per record, as the build counts them (0 where it overflows)."""
    nbytes = np.asarray(nbytes, np.uint64)
    if not raw:
        return nbytes
    mult = np.maximum(np.asarray(rate, np.uint64), np.uint64(1))
    vol = nbytes * mult
    vol[nbytes > _MAX64 // mult] = 0  # the build quarantines these (volume_overflow)
    return vol


def prefix_keys(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Each address's /24 (IPv4) or /48 (IPv6) as one uint64 key (see :func:`key_prefix`)."""
    v4 = (hi == 0) & ((lo >> np.uint64(32)) == _V4_TAG)
    return np.where(v4, lo & _MASK24, (hi & _MASK48) | np.uint64(1))


def key_prefix(key: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The prefix a :func:`prefix_keys` key stands for."""
    key = int(key)
    if key & 1:
        return ipaddress.IPv6Network(((key & ~0xFFFF) << 64, 48))
    return ipaddress.IPv4Network((key & 0xFFFF_FFFF, 24))


def _group(table: pa.Table, keys: list[str], sums: Sequence[str] = ("n", "v")) -> pa.Table:
    """The ``sums`` columns summed per ``keys`` (exact integers), named as before."""
    g = table.group_by(keys, use_threads=False).aggregate([(s, "sum") for s in sums])
    return g.select([*keys, *(f"{s}_sum" for s in sums)]).rename_columns([*keys, *sums])


@dataclass
class _Partial:
    """Partial aggregates of some chunks (pyarrow tables with ``n`` and ``v`` columns)."""

    records: int = 0
    t_min: int | None = None
    t_max: int | None = None
    tables: dict[str, list[pa.Table]] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)

    GROUPS: ClassVar[dict[str, list[str]]] = {
        "rate": ["exporter", "sampling_rate"],
        "in": ["exporter", "in_if"],
        "out": ["exporter", "out_if"],
        "src": ["key"],
        "dst": ["key"],
        "dims": ["dims"],
    }

    def add(self, other: _Partial) -> None:
        self.records += other.records
        if other.t_min is not None:
            self.t_min = other.t_min if self.t_min is None else min(self.t_min, other.t_min)
            self.t_max = other.t_max if self.t_max is None else max(self.t_max, other.t_max)
        for k, v in other.quarantined.items():
            self.quarantined[k] = self.quarantined.get(k, 0) + v
        for name, ts in other.tables.items():
            mine = self.tables.setdefault(name, [])
            mine.extend(ts)
            if sum(t.num_rows for t in mine) > COMPACT_ROWS and len(mine) > 1:
                self.tables[name] = [self.folded(name)]

    def folded(self, name: str) -> pa.Table:
        """One table per aggregate: the partial tables grouped again."""
        ts = self.tables.get(name, [])
        if not ts:
            return pa.table({"n": pa.array([], pa.int64()), "v": pa.array([], pa.uint64())})
        t = pa.concat_tables(ts)
        if len(ts) == 1:
            return t
        return _group(
            t, self.GROUPS[name], [c for c in t.column_names if c not in self.GROUPS[name]]
        )


def _scan(table: pa.Table, counts: str, plan: Any) -> _Partial:
    """The aggregates of one chunk of archive rows."""
    from flowatlas.addresses import bytes16_to_hilo
    from flowatlas.engine.pipeline import DIM_MASK15, _null_mask, orient_and_cell
    from flowatlas.schema import COUNTS_RAW

    part = _Partial(records=table.num_rows)
    # what the build makes of these rows: its own kernels, its own quarantine
    rows, stats = orient_and_cell(table, plan, counts)
    part.quarantined = dict(stats.quarantined)
    dims = pa.table({"dims": rows.key & DIM_MASK15, "n": np.ones(rows.key.size, np.int64),
                     "v": rows.vol})  # fmt: skip
    part.tables["dims"] = [_group(dims, ["dims"])]

    bad, _ = _null_mask(table)
    if bad.any():  # the rest describes rows as stored; rows with nulls are left out
        table = table.filter(pa.array(~bad))
    if table.num_rows == 0:
        return part
    t = pc.min_max(table.column("time_start").cast(pa.int64()))
    part.t_min, part.t_max = t["min"].as_py(), t["max"].as_py()
    rate = table.column("sampling_rate").to_numpy()
    nbytes = table.column("bytes").to_numpy()
    vol = volume_of(nbytes, rate, counts == COUNTS_RAW)
    ones = np.ones(table.num_rows, np.int64)
    base = {"n": ones, "v": vol}
    exp = table.column("exporter")
    rates = pa.table({"exporter": exp, "sampling_rate": table.column("sampling_rate"),
                      "n": ones, "v": nbytes, "vol": vol})  # fmt: skip
    part.tables["rate"] = [_group(rates, _Partial.GROUPS["rate"], ("n", "v", "vol"))]
    for side, col in (("in", "in_if"), ("out", "out_if")):
        part.tables[side] = [_group(pa.table({"exporter": exp, col: table.column(col), **base}),
                                    ["exporter", col])]  # fmt: skip
    for side, col in (("src", "src_addr"), ("dst", "dst_addr")):
        hi, lo = bytes16_to_hilo(table.column(col))
        part.tables[side] = [_group(pa.table({"key": prefix_keys(hi, lo), **base}), ["key"])]
    return part


# --------------------------------------------------------------------------- the archive


def _chunks(archive: Any, columns: list[str]) -> Iterator[tuple[Any, Callable[[], pa.Table]]]:
    from flowatlas.io.archive import read_fragment

    for frag in archive.fragments(CHUNK_ROWS):
        yield frag, (lambda f=frag: read_fragment(f, columns))


def _run_chunks(
    archive: Any,
    columns: list[str],
    work: Callable[[pa.Table, str], Any],
    fold: Callable[[Any], None],
    workers: int | None,
    progress: Progress | None,
) -> None:
    """Read the archive chunk by chunk on a thread pool; ``fold`` each result in order."""
    n = max(1, workers or os.cpu_count() or 1)

    def one(frag: Any, read: Callable[[], pa.Table]) -> tuple[Any, int]:
        return work(read(), frag.counts), frag.num_rows

    with cf.ThreadPoolExecutor(max_workers=n) as pool:
        pending: list[cf.Future] = []
        for frag, read in _chunks(archive, columns):
            pending.append(pool.submit(one, frag, read))
            while len(pending) > 2 * n:
                _take(pending.pop(0), fold, progress)
        for fut in pending:
            _take(fut, fold, progress)


def _take(fut: cf.Future, fold: Callable[[Any], None], progress: Progress | None) -> None:
    result, rows = fut.result()
    fold(result)
    if progress:
        progress(rows)


def _plan(cfg: Config, table: Any) -> Any:
    from flowatlas.engine.build import _prefix_table
    from flowatlas.engine.plan import make_plan

    return make_plan(cfg, _prefix_table(table, cfg), partitions=1, backend="cpu")


def inspect_archive(
    archive: str | os.PathLike[str],
    *,
    config: Config | str | os.PathLike[str] | None = None,
    table: Any = None,
    top: int = 10,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Inspection:
    """Inspect ``archive`` (see the module docstring); ``config`` as ``build_cube`` takes it.

    ``top`` busiest prefixes are listed per side and family; ``progress`` is called with the
    records of each chunk as it is done.
    """
    from flowatlas.engine.build import resolve_config
    from flowatlas.engine.pipeline import COLUMNS
    from flowatlas.io.archive import open_archive
    from flowatlas.kernels.orient import DIR_SHIFT, REGION_SHIFT, TYPE_SHIFT

    root = Path(archive)
    arch = open_archive(root)
    cfg = resolve_config(root, config)
    plan = _plan(cfg, table)
    total = _Partial()
    _run_chunks(arch, COLUMNS, lambda t, c: _scan(t, c, plan), total.add, workers, progress)

    exporters = _exporters(total, plan, top)
    prefixes: dict[str, dict[str, list[PrefixInfo]]] = {}
    families = {"IPv4": 0, "IPv6": 0}
    seen = {}
    for side in ("src", "dst"):
        g = total.folded(side)
        keys = g.column("key").to_numpy() if g.num_rows else np.empty(0, np.uint64)
        n = g.column("n").to_numpy() if g.num_rows else np.empty(0, np.int64)
        v = g.column("v").to_numpy() if g.num_rows else np.empty(0, np.uint64)
        order = np.lexsort((keys, -n))  # most records first, then by address
        keys, n, v = keys[order], n[order], v[order]
        seen[side] = (keys, n)
        v6 = (keys & np.uint64(1)).astype(bool)
        prefixes[side] = {
            fam: [
                PrefixInfo(str(key_prefix(k)), int(c), int(b))
                for k, c, b in zip(keys[sel][:top], n[sel][:top], v[sel][:top], strict=True)
            ]
            for fam, sel in (("v4", ~v6), ("v6", v6))
        }
        if side == "src":
            families = {"IPv4": int(n[~v6].sum()), "IPv6": int(n[v6].sum())}

    dims = total.folded("dims")
    codes = dims.column("dims").to_numpy() if dims.num_rows else np.empty(0, np.int64)
    n = dims.column("n").to_numpy() if dims.num_rows else np.empty(0, np.int64)
    v = dims.column("v").to_numpy() if dims.num_rows else np.empty(0, np.uint64)
    by: dict[str, dict[str, Count]] = {}
    for name, values, shift, mask in (
        ("region", plan.regions, REGION_SHIFT, 63),
        ("network_type", plan.network_types, TYPE_SHIFT, 63),
        ("direction", DIRECTIONS, DIR_SHIFT, 3),
    ):
        part = {x: Count() for x in values}
        ids = (codes >> shift) & mask
        for i, c, b in zip(ids.tolist(), n.tolist(), v.tolist(), strict=True):
            part[values[i]].records += c
            part[values[i]].volume += b
        by[name] = {k: c for k, c in part.items() if c.records or name == "region"}

    return Inspection(
        str(root),
        len(arch.files),
        arch.num_rows,
        _iso(total.t_min),
        _iso(total.t_max),
        families,
        exporters,
        prefixes,
        cfg.origin,
        by["region"],
        by["network_type"],
        by["direction"],
        dict(sorted(total.quarantined.items())),
        seen,
        dict(sorted(Counter(f.compression for f in arch.files).items())),
    )


def _iso(us: int | None) -> str | None:
    if us is None:
        return None
    t = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=us)
    return t.isoformat().replace("+00:00", "Z")


def _address(b: bytes) -> str:
    ip = ipaddress.IPv6Address(b)
    return str(ip.ipv4_mapped) if ip.ipv4_mapped else str(ip)


def _exporters(total: _Partial, plan: Any, top: int) -> list[ExporterInfo]:
    """The exporters with their counts, sampling rates and interfaces, busiest first."""
    if not total.tables.get("rate"):
        return []
    t = total.folded("rate")
    info: dict[bytes, ExporterInfo] = {}
    region_of = {k: plan.regions[r] for k, (_, r) in plan.exporters.items() if r > 0}
    for row in t.to_pylist():
        e = row["exporter"]
        if e not in info:
            info[e] = ExporterInfo(_address(e), 0, 0, 0, region_of.get(e, ""))
        x = info[e]
        x.records += row["n"]
        x.bytes += row["v"]
        x.volume += row["vol"]
        rate = max(1, int(row["sampling_rate"]))
        x.sampling[rate] = x.sampling.get(rate, 0) + row["n"]
    for side, col in (("in", "in_if"), ("out", "out_if")):
        g = total.folded(side)
        for row in g.to_pylist():
            x = info[row["exporter"]]
            ifs = {i.index: i for i in x.interfaces}
            i = ifs.get(row[col])
            if i is None:
                i = Interface(row[col])
                x.interfaces.append(i)
            if side == "in":
                i.records_in += row["n"]
                i.volume_in += row["v"]
            else:
                i.records_out += row["n"]
                i.volume_out += row["v"]
    out = sorted(info.values(), key=lambda e: (-e.records, e.address))
    for e in out:
        e.interfaces.sort(key=lambda i: (-(i.records_in + i.records_out), i.index))
        e.sampling = dict(sorted(e.sampling.items()))
    return out


# --------------------------------------------------------------------------- accounting


class SetupCounter:
    """Counts what :class:`SetupShares` reports for tables of flow records under one
    configuration: its plan is made once, then each table is oriented and classified as the
    build will (``import`` counts each batch as it writes it, ``shares_of_files`` each chunk
    of files already written; the counts add up)."""

    def __init__(self, config: Config) -> None:
        self.plan = _plan(config, None)
        self.unknown_type = self.plan.network_types.index(UNKNOWN)

    def __call__(self, table: pa.Table, counts: str) -> list[int]:
        """[records, quarantined, unknown region, unknown type, transit] of ``table``."""
        from flowatlas.engine.pipeline import DIM_MASK15, orient_and_cell
        from flowatlas.kernels.orient import DIR_SHIFT, REGION_SHIFT, TYPE_SHIFT

        rows, stats = orient_and_cell(table, self.plan, counts)
        dims = rows.key & DIM_MASK15
        return [
            stats.records,
            sum(stats.quarantined.values()),
            int((((dims >> REGION_SHIFT) & 63) == 0).sum()),
            int((((dims >> TYPE_SHIFT) & 63) == self.unknown_type).sum()),
            int((((dims >> DIR_SHIFT) & 3) == TRANSIT).sum()),
        ]


def shares_of_files(
    paths: Sequence[str | os.PathLike[str]],
    config: Config,
    *,
    workers: int | None = None,
) -> SetupShares:
    """The set-up accounting of some archive files under ``config`` (read back and counted;
    ``import`` counts its batches as it writes them instead, see :class:`SetupCounter`)."""
    from flowatlas.engine.pipeline import COLUMNS
    from flowatlas.io.archive import Archive, describe_file

    files = [describe_file(Path(p), Path(p).parent) for p in paths]
    arch = Archive(Path("."), files)
    count = SetupCounter(config)
    acc = [0, 0, 0, 0, 0]  # records, quarantined, unknown region, unknown type, transit

    def fold(r: list[int]) -> None:
        for i, x in enumerate(r):
            acc[i] += x

    if files:
        _run_chunks(arch, COLUMNS, count, fold, workers, None)
    return SetupShares(*acc, config_origin=config.origin)


def shares_of_cells(cells: pa.Table, records: int, quarantined: int, origin: str) -> SetupShares:
    """The set-up accounting of a built cube's cells (``flows`` counts records)."""
    flows = cells.column("flows")

    def count(col: str, value: str) -> int:
        mask = pc.equal(cells.column(col).cast(pa.string()), value)
        return int(pc.sum(pc.filter(flows, mask)).as_py() or 0)

    return SetupShares(
        records,
        quarantined,
        count("region", UNKNOWN_REGION),
        count("network_type", UNKNOWN),
        count("direction", DIRECTIONS[TRANSIT]),
        origin,
    )


__all__ = [
    "Count",
    "ExporterInfo",
    "Inspection",
    "Interface",
    "PrefixInfo",
    "SetupCounter",
    "SetupShares",
    "inspect_archive",
    "key_prefix",
    "prefix_keys",
    "shares_of_cells",
    "shares_of_files",
    "volume_of",
]


# --------------------------------------------------------------------------- config --init

#: busiest prefixes per side considered as local candidates by :func:`starter_config`
CANDIDATES = 1024
#: a local prefix talks to at least this many distinct peer networks (/16 or /32) ...
MIN_PEERS = 4
#: ... and to at least this share of the most-connected candidate's peers
PEER_SHARE = 0.1


def _peer_key(keys: np.ndarray) -> np.ndarray:
    """The peer network of prefix keys: IPv4 /16 (< 2^16 + tag) or IPv6 /32 (bit 48 set)."""
    v6 = (keys & np.uint64(1)).astype(bool)
    return np.where(
        v6,
        (keys >> np.uint64(32)) | np.uint64(1 << 48),
        (keys >> np.uint64(16)) & np.uint64(0xFFFF),
    )


@dataclass
class _Peers:
    """Distinct (candidate, peer network) codes and (exporter, candidate) records."""

    codes: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    exporters: list[pa.Table] = field(default_factory=list)

    def add(self, other: _Peers) -> None:
        self.codes = np.union1d(self.codes, other.codes)
        self.exporters.extend(other.exporters)


def _peers_chunk(table: pa.Table, cands: np.ndarray) -> _Peers:
    from flowatlas.addresses import bytes16_to_hilo

    out = _Peers()
    table = table.filter(pc.invert(pc.or_(pc.is_null(table.column("src_addr")),
                                          pc.is_null(table.column("dst_addr")))))  # fmt: skip
    keys = [prefix_keys(*bytes16_to_hilo(table.column(c))) for c in ("src_addr", "dst_addr")]
    codes = []
    exp_rows = []
    for me, peer in ((keys[0], keys[1]), (keys[1], keys[0])):
        idx = np.searchsorted(cands, me)
        idx[idx >= cands.size] = 0
        hit = np.flatnonzero(cands[idx] == me) if cands.size else np.empty(0, np.intp)
        codes.append((idx[hit].astype(np.uint64) << np.uint64(50)) | _peer_key(peer[hit]))
        exp_rows.append(
            pa.table({"exporter": table.column("exporter").take(pa.array(hit)),
                      "cand": idx[hit].astype(np.int64), "n": np.ones(hit.size, np.int64)})
        )  # fmt: skip
    out.codes = np.unique(np.concatenate(codes))
    out.exporters = [_group(pa.concat_tables(exp_rows), ["exporter", "cand"], ("n",))]
    return out


@dataclass
class Suggestion:
    """A starter configuration's content: regions (exporters, prefixes) and the evidence."""

    regions: list[tuple[list[str], list[str], int]]  # (exporters, prefixes, records)
    unplaced_exporters: list[str]
    local: list[tuple[str, int, int, int]]  # (prefix /24 or /48, src rec, dst rec, peers)


def suggest(
    archive: str | os.PathLike[str],
    inspection: Inspection,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Suggestion:
    """Regions and local prefixes for a starter configuration, from the archive's traffic.

    A local prefix (ours) is a busy /24 or /48 seen both as source and as destination that
    talks to many distinct peer networks (/16 or /32): our address space meets the whole
    Internet, a remote network meets only us. Exporters and local prefixes are then grouped
    into regions: each exporter joins the prefix it carries most records of, and each prefix
    the exporter carrying most of its records. Each region's prefixes are aggregated into the
    widest prefixes that hold no address seen outside that region.
    """
    from flowatlas.io.archive import open_archive

    src_keys, src_n = inspection._seen["src"]
    dst_keys, dst_n = inspection._seen["dst"]
    cands = np.intersect1d(src_keys[:CANDIDATES], dst_keys[:CANDIDATES])
    acc = _Peers()
    if cands.size:
        _run_chunks(
            open_archive(archive),
            ["exporter", "src_addr", "dst_addr"],
            lambda t, _c: _peers_chunk(t, cands),
            acc.add,
            workers,
            progress,
        )
    peers = np.bincount((acc.codes >> np.uint64(50)).astype(np.int64), minlength=cands.size)
    need = max(MIN_PEERS, PEER_SHARE * (peers.max() if peers.size else 0))
    local = np.flatnonzero(peers >= need)
    rec_src = dict(zip(src_keys.tolist(), src_n.tolist(), strict=True))
    rec_dst = dict(zip(dst_keys.tolist(), dst_n.tolist(), strict=True))
    evidence = [
        (str(key_prefix(cands[i])), rec_src.get(int(cands[i]), 0),
         rec_dst.get(int(cands[i]), 0), int(peers[i]))
        for i in local
    ]  # fmt: skip

    # exporters <-> local prefixes: records of each pair, then components of "busiest" links
    pairs: dict[tuple[bytes, int], int] = {}
    if acc.exporters:
        g = _group(pa.concat_tables(acc.exporters), ["exporter", "cand"], ("n",))
        for row in g.to_pylist():
            pairs[(row["exporter"], row["cand"])] = row["n"]
    is_local = set(local.tolist())
    parent: dict[Any, Any] = {}

    def find(x: Any) -> Any:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: Any, b: Any) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb, key=repr)] = min(ra, rb, key=repr)

    best_of_exp: dict[bytes, tuple[int, int]] = {}
    best_of_cand: dict[int, tuple[int, bytes]] = {}
    for (e, c), n in sorted(pairs.items()):
        if c not in is_local:
            continue
        if n > best_of_exp.get(e, (0, -1))[0]:
            best_of_exp[e] = (n, c)
        if n > best_of_cand.get(c, (0, b""))[0]:
            best_of_cand[c] = (n, e)
    for e, (_, c) in best_of_exp.items():
        union(("e", e), ("c", c))
    for c, (_, e) in best_of_cand.items():
        union(("c", c), ("e", e))
    for c in local.tolist():
        find(("c", c))
    groups: dict[Any, tuple[list[bytes], list[int]]] = {}
    for node in list(parent):
        es, cs = groups.setdefault(find(node), ([], []))
        (es if node[0] == "e" else cs).append(node[1])
    records_of = {e.address: e.records for e in inspection.exporters}
    seen_all = np.union1d(src_keys, dst_keys)
    regions = []
    for es, cs in groups.values():
        if not cs:
            continue
        mine = cands[np.array(sorted(cs), dtype=np.int64)]
        prefixes = _aggregate(mine, np.setdiff1d(seen_all, mine))
        names = sorted((_address(e) for e in es), key=lambda a: (-records_of.get(a, 0), a))
        rec = sum(records_of.get(a, 0) for a in names)
        regions.append((names, prefixes, rec))
    regions.sort(key=lambda r: (-r[2], r[1]))
    placed = {a for r in regions for a in r[0]}
    unplaced = [e.address for e in inspection.exporters if e.address not in placed]
    return Suggestion(regions, unplaced, evidence)


def _aggregate(mine: np.ndarray, foreign: np.ndarray) -> list[str]:
    """The widest prefixes covering ``mine`` (prefix keys) that hold none of ``foreign``."""
    out: list[str] = []
    for fam, bits, unit in ((0, 32, 24), (1, 128, 48)):
        sel = (mine & np.uint64(1)) == fam
        ints = sorted(int(key_prefix(k).network_address) for k in mine[sel])
        fsel = (foreign & np.uint64(1)) == fam
        others = np.array(
            sorted(int(key_prefix(k).network_address) for k in foreign[fsel]), dtype=object
        )
        _cover(ints, others, bits, unit, out)
    return out


def _cover(ints: list[int], others: np.ndarray, bits: int, unit: int, out: list[str]) -> None:
    """Append to ``out`` the covering prefixes of ``ints`` (sorted network addresses)."""
    if not ints:
        return
    lo, hi = ints[0], ints[-1]
    length = bits - (lo ^ hi).bit_length() if lo != hi else unit
    length = min(length, unit)
    start = lo >> (bits - length) << (bits - length)
    end = start + (1 << (bits - length)) - 1
    i = int(np.searchsorted(others, start)) if others.size else 0
    clean = not (others.size and i < others.size and others[i] <= end)
    if clean or length >= unit:
        net = (ipaddress.IPv4Network if bits == 32 else ipaddress.IPv6Network)((start, length))
        out.append(str(net))
        return
    half = start + (1 << (bits - length - 1))
    _cover([x for x in ints if x < half], others, bits, unit, out)
    _cover([x for x in ints if x >= half], others, bits, unit, out)


def starter_config(
    archive: str | os.PathLike[str],
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> str:
    """A commented starter configuration (TOML) for ``archive``, from its traffic.

    Regions come from the exporters and the local prefixes the data suggests
    (:func:`suggest`); the user names the regions and checks the prefixes. The result passes
    ``flowatlas config --check``.
    """
    from flowatlas.config import Config

    ins = inspect_archive(archive, config=Config(), workers=workers, progress=progress)
    sug = suggest(archive, ins, workers=workers, progress=progress)
    lines = [
        f"# flowatlas starter configuration for {archive}",
        f"# written by `flowatlas config --init` from {ins.records:,} records "
        f"({ins.first} .. {ins.last}).",
        "# Guessed from the traffic: name the regions, check the prefixes against what you",
        "# announce, then `flowatlas config --check` this file and build with --config.",
        "# See docs/configuration.md for every key.",
        "",
        "[cube]",
        'bucket = "1h"                  # time bucket; must divide a day',
        "",
    ]
    if not sug.regions:
        lines += [
            "# No local prefixes stood out (none seen as both source and destination talking",
            "# to many networks). Add a region by hand:",
            "# [[regions]]",
            '# name = "US-West"',
            '# prefixes = ["198.51.100.0/24"]    # the address space you announce there',
            '# exporters = ["192.0.2.1"]          # its routers',
            "",
        ]
    for k, (exporters, prefixes, records) in enumerate(sug.regions, 1):
        lines += [
            "[[regions]]",
            f'name = "region-{k}"                # rename: e.g. "US-West"',
            f"# {records:,} records through these exporters",
            "prefixes = [",
            *(f'  "{p}",' for p in prefixes),
            "]",
            "exporters = [",
            *(f'  "{e}",' for e in exporters),
            "]",
            "",
        ]
    if sug.unplaced_exporters:
        lines.append("# exporters that carry none of the local prefixes found (add them to a")
        lines.append("# region's exporters if they are yours):")
        lines += [f"#   {e}" for e in sug.unplaced_exporters]
        lines.append("")
    if sug.local:
        lines.append("# evidence: local /24 or /48, records as source / as destination, peers")
        lines.append("# (distinct /16 or /32 networks it talks to)")
        shown = sorted(sug.local, key=lambda x: -(x[1] + x[2]))
        lines += [f"#   {p:<22} {s:>12,} {d:>12,} {n:>6,}" for p, s, d, n in shown[:20]]
        if len(shown) > 20:
            lines.append(f"#   ... {len(shown) - 20} more")
        lines.append("")
    lines += [
        "# Private links (e.g. data onboarding fibre) are exporter interfaces; the busiest",
        "# interfaces of each exporter are listed by `flowatlas inspect`.",
        "# [[links]]",
        f'# exporter = "{ins.exporters[0].address if ins.exporters else "192.0.2.1"}"',
        "# interfaces = [501, 502]",
        '# network_type = "Migration"',
        "",
        "[classify]",
        "# Remote network types come from a prefix table; compile one from routing and cloud",
        "# data with `flowatlas classify compile` (docs/classification.md), then:",
        '# table = "tables/prefixes.fatable"',
        "",
    ]
    return "\n".join(lines)
