"""The build's two steps, as pure functions of plain data (so any scheduler can run them).

``map_task``: read some archive rows -> orient -> classify -> bucket -> accumulate per
(cell, remote IP) -> split by remote-IP hash into the plan's partitions.

``reduce_partition``: merge one partition's pieces from every fragment -> exact per-cell
sums and distinct remote IPs, and the exact rollups (day, month, quarter, whole range) for
each grouping set. Because each remote IP lives in exactly one partition, the partitions'
results simply add up (``combine``).

Same inputs, same outputs, whatever the order or number of workers: sums are integer and
every output is sorted by key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowatlas.addresses import bytes16_to_hilo
from flowatlas.engine.plan import GROUPINGS, BuildPlan
from flowatlas.io.archive import Fragment, read_fragment
from flowatlas.kernels.accumulate import aggregate, group_by_key, ip_partition, sum_by_key
from flowatlas.kernels.orient import (
    DIM_BITS,
    DIR_SHIFT,
    INTERNAL,
    REASONS,
    REGION_SHIFT,
    TYPE_SHIFT,
    cells_cpu,
    orient_cpu,
)
from flowatlas.schema import COUNTS_SCALED

COLUMNS = [
    "time_start",
    "exporter",
    "in_if",
    "out_if",
    "src_addr",
    "dst_addr",
    "bytes",
    "packets",
    "sampling_rate",
]
US_PER_DAY = 86_400_000_000
DAY_OFFSET = 1 << 20  # keeps day codes positive for pre-1970 times

_DIM_MASK = {
    "region": 63 << REGION_SHIFT,
    "network_type": 63 << TYPE_SHIFT,
    "direction": 3 << DIR_SHIFT,
    "ip_version": 1,
}
GROUP_MASKS = tuple(sum(_DIM_MASK[d] for d in g) for g in GROUPINGS)
ROLLUP_CODE_SHIFT = 18  # key = period_code << 18 | grouping << 15 | masked dims


@dataclass
class Partial:
    """Rows of (key, remote IP) with their sums: what fragments hand to partitions."""

    key: np.ndarray
    hi: np.ndarray
    lo: np.ndarray
    vol: np.ndarray
    pk: np.ndarray
    fl: np.ndarray

    @classmethod
    def empty(cls) -> Partial:
        return cls(
            np.empty(0, np.int64),
            np.empty(0, np.uint64),
            np.empty(0, np.uint64),
            np.empty(0, np.uint64),
            np.empty(0, np.uint64),
            np.empty(0, np.uint64),
        )

    @classmethod
    def concat(cls, parts: list[Partial]) -> Partial:
        if not parts:
            return cls.empty()
        return cls(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__)
        )

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f).nbytes for f in self.__dataclass_fields__)


@dataclass
class FragmentStats:
    """Accounting for one fragment: records in = records cubed + records quarantined."""

    records: int = 0
    cubed: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)

    def add(self, other: FragmentStats) -> None:
        self.records += other.records
        self.cubed += other.cubed
        for k, v in other.quarantined.items():
            self.quarantined[k] = self.quarantined.get(k, 0) + v


def _null_mask(table: pa.Table) -> tuple[np.ndarray, dict[str, int]]:
    """Rows with a null in any used column; each counted once, under its first null column."""
    bad = np.zeros(table.num_rows, dtype=bool)
    counts: dict[str, int] = {}
    for name in table.column_names:
        col = table.column(name)
        if col.null_count:
            null = np.asarray(pc.is_null(col).to_numpy(zero_copy_only=False), dtype=bool)
            newly = int((null & ~bad).sum())
            if newly:
                counts[f"null {name}"] = newly
            bad |= null
    return bad, counts


def orient_and_cell(table: pa.Table, plan: BuildPlan, counts: str) -> tuple[Partial, FragmentStats]:
    """Oriented, classified, bucketed rows (one per record) and the fragment's accounting."""
    stats = FragmentStats(records=table.num_rows)
    bad, null_counts = _null_mask(table)
    if bad.any():
        stats.quarantined.update(null_counts)
        table = table.filter(pa.array(~bad))
    n = table.num_rows
    if n == 0:
        return Partial.empty(), stats

    src_hi, src_lo = bytes16_to_hilo(table.column("src_addr"))
    dst_hi, dst_lo = bytes16_to_hilo(table.column("dst_addr"))
    local_idx = plan.local_table.index
    from flowatlas.kernels.lpm import lookup_cpu

    src_reg = plan.local_region[lookup_cpu(local_idx, src_hi, src_lo)]
    dst_reg = plan.local_region[lookup_cpu(local_idx, dst_hi, dst_lo)]

    # exporters: dictionary-encode once, map the few distinct values in Python
    exp = table.column("exporter").combine_chunks().dictionary_encode()
    exp_ids = np.full(len(exp.dictionary) + 1, -1, dtype=np.int32)
    exp_regs = np.zeros(len(exp.dictionary) + 1, dtype=np.int16)
    for k, value in enumerate(exp.dictionary.to_pylist()):
        ex_id, reg = plan.exporters.get(value, (-1, 0))
        exp_ids[k], exp_regs[k] = ex_id, reg
    codes = exp.indices.to_numpy()

    direction, region, remote_is_dst, link_type = orient_cpu(
        src_reg,
        dst_reg,
        exp_regs[codes],
        exp_ids[codes],
        table.column("in_if").to_numpy(),
        table.column("out_if").to_numpy(),
        plan.rule_keys,
        plan.rule_types,
    )
    r_hi = np.where(remote_is_dst, dst_hi, src_hi)
    r_lo = np.where(remote_is_dst, dst_lo, src_lo)
    ntype = plan.type_codes[plan.class_table.lookup(r_hi, r_lo)]
    ntype = np.where(link_type >= 0, link_type, ntype)
    ntype = np.where(direction == INTERNAL, plan.internal_type, ntype).astype(np.int16)
    is_v6 = ~((r_hi == 0) & ((r_lo >> np.uint64(32)) == np.uint64(0xFFFF)))

    t_us = table.column("time_start").combine_chunks().cast(pa.int64()).to_numpy()
    cell, vol, pk, reason = cells_cpu(
        t_us,
        plan.bucket_us,
        region,
        ntype,
        direction,
        is_v6.astype(np.uint8),
        table.column("bytes").to_numpy(),
        table.column("packets").to_numpy(),
        table.column("sampling_rate").to_numpy(),
        counts == COUNTS_SCALED,
    )
    ok = reason == 0
    if not ok.all():
        for code, count in zip(*np.unique(reason[~ok], return_counts=True), strict=True):
            stats.quarantined[REASONS[int(code)]] = int(count)
        cell, r_hi, r_lo, vol, pk = cell[ok], r_hi[ok], r_lo[ok], vol[ok], pk[ok]
    stats.cubed = int(cell.size)
    return Partial(cell, r_hi, r_lo, vol, pk, np.ones(cell.size, np.uint64)), stats


def split_by_ip(partial: Partial, parts: int) -> list[Partial]:
    """Split rows into ``parts`` partitions by a hash of the remote IP alone."""
    if parts == 1:
        return [partial]
    pid = ip_partition(partial.hi, partial.lo, parts)
    order = np.argsort(pid, kind="stable")
    bounds = np.searchsorted(pid[order], np.arange(parts + 1))
    out = []
    for j in range(parts):
        sel = order[bounds[j] : bounds[j + 1]]
        out.append(Partial(*(getattr(partial, f)[sel] for f in Partial.__dataclass_fields__)))
    return out


def map_task(fragments: list[Fragment], plan: BuildPlan) -> tuple[list[Partial], FragmentStats]:
    """Read some fragments and return their per-partition (cell, remote IP) partials."""
    stats = FragmentStats()
    parts = []
    for fragment in fragments:
        table = read_fragment(fragment, COLUMNS)
        rows, st = orient_and_cell(table, plan, fragment.counts)
        stats.add(st)
        parts.append(rows)
    rows = Partial.concat(parts)
    merged = Partial(*aggregate(rows.key, rows.hi, rows.lo, rows.vol, rows.pk, rows.fl))
    return split_by_ip(merged, plan.partitions), stats


def pack(fragments: list[Fragment], target_rows: int) -> list[list[Fragment]]:
    """Group consecutive fragments into tasks of about ``target_rows`` rows each."""
    tasks: list[list[Fragment]] = []
    rows = 0
    for f in fragments:
        if not tasks or rows + f.num_rows > target_rows:
            tasks.append([])
            rows = 0
        tasks[-1].append(f)
        rows += f.num_rows
    return tasks


# --------------------------------------------------------------------------- reduce


@dataclass
class PartitionResult:
    """Per-cell and per-rollup sums and distinct counts of one IP partition (sorted keys)."""

    cell_keys: np.ndarray
    cell_sums: np.ndarray  # (n, 4): volume, packets, flows, uniques
    rollup_keys: dict[str, np.ndarray]
    rollup_sums: dict[str, np.ndarray]


#: rollup periods from finest to coarsest; each is derived from the one before it
ROLLUP_CHAIN = ("day", "month", "quarter", "all")
#: grouping set -> the grouping whose (period, dims, IP) rows it is cheapest to derive from
GROUPING_PARENT = {0: None, 1: 0, 2: 0, 3: 1, 4: 1, 5: 0, 6: 0, 7: 3}
assert all(p is None or set(GROUPINGS[g]) <= set(GROUPINGS[p]) for g, p in GROUPING_PARENT.items())


def period_codes_us(start_us: np.ndarray, rollup: str) -> np.ndarray:
    """The period code (day, month, quarter, all) of instants given in microseconds."""
    start_us = np.asarray(start_us, dtype=np.int64)
    if rollup == "all":
        return np.zeros(start_us.size, dtype=np.int64)
    if rollup == "day":
        return np.floor_divide(start_us, US_PER_DAY) + DAY_OFFSET
    months = start_us.astype("datetime64[us]").astype("datetime64[M]").astype(np.int64)
    months = months + 1970 * 12  # months since year 0
    if rollup == "month":
        return months
    if rollup == "quarter":
        return months // 3
    raise ValueError(f"unknown rollup {rollup!r}")


def period_start(code: np.ndarray, rollup: str) -> np.ndarray:
    """Start (datetime64[us]) of each period code."""
    code = np.asarray(code, dtype=np.int64)
    if rollup == "all":
        return np.full(code.size, np.datetime64("NaT"), dtype="datetime64[us]")
    if rollup == "day":
        return ((code - DAY_OFFSET) * US_PER_DAY).astype("datetime64[us]")
    months = code * 3 if rollup == "quarter" else code
    return (months - 1970 * 12).astype("datetime64[M]").astype("datetime64[us]")


def _map_codes(codes: np.ndarray, fn) -> np.ndarray:
    """fn applied to each value of an int64 array, computed once per distinct value.

    Period codes span a small range, so a dense table replaces sorting when it can.
    """
    if codes.size == 0:
        return codes.copy()
    lo, hi = int(codes.min()), int(codes.max())
    if hi - lo < (1 << 22):
        table = fn(np.arange(lo, hi + 1, dtype=np.int64))
        return table[codes - lo]
    uniq, inv = np.unique(codes, return_inverse=True)
    return fn(uniq)[inv.reshape(-1)]


def _to_period(codes: np.ndarray, level: str, rollup: str, bucket_us: int) -> np.ndarray:
    """Convert period codes of ``level`` (or bucket indexes) into codes of ``rollup``."""

    def fn(c: np.ndarray) -> np.ndarray:
        if level == "bucket":
            start = c * np.int64(bucket_us)
        else:
            start = period_start(c, level).astype(np.int64)
        return period_codes_us(start, rollup)

    return _map_codes(codes, fn)


def _rollup_groups(rows: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Exact sums and distinct IPs of every grouping set for one period level.

    ``rows`` are distinct (period, dims, IP) rows: (key, hi, lo, vol, pk, fl) with key =
    period code << DIM_BITS | dims. Coarser groupings are derived from finer ones.
    """
    keys_out, sums_out = [], []
    derived: dict[int, tuple[np.ndarray, ...]] = {}
    for g in range(len(GROUPINGS)):
        parent = GROUPING_PARENT[g]
        src = rows if parent is None else derived[parent]
        code = src[0] >> DIM_BITS
        dims = src[0] & np.int64(GROUP_MASKS[g])
        gkey = (code << DIM_BITS) | dims
        grouped = src if g == 0 else aggregate(gkey, *src[1:])
        derived[g] = grouped
        k, sums, counts = group_by_key(grouped[0], np.stack(grouped[3:6], axis=1))
        rk = ((k >> DIM_BITS) << ROLLUP_CODE_SHIFT) | (np.int64(g) << DIM_BITS) | (k & 0x7FFF)
        keys_out.append(rk)
        sums_out.append(np.concatenate([sums, counts[:, None]], axis=1))
    return np.concatenate(keys_out), np.concatenate(sums_out)


def reduce_partition(pieces: list[Partial], plan: BuildPlan) -> PartitionResult:
    """Merge one IP partition's pieces and compute its exact sums and distinct counts.

    Period levels are derived in turn (bucket -> day -> month -> quarter -> all), each from
    the distinct (period, dims, IP) rows of the level before, so every step works on fewer
    rows than the last.
    """
    allp = Partial.concat(pieces)
    rows = aggregate(allp.key, allp.hi, allp.lo, allp.vol, allp.pk, allp.fl)
    cell_keys, cell_sums, cell_uniques = group_by_key(rows[0], np.stack(rows[3:6], axis=1))
    r_keys: dict[str, np.ndarray] = {}
    r_sums: dict[str, np.ndarray] = {}
    wanted = [r for r in ROLLUP_CHAIN if r in plan.rollups]
    coarsest = ROLLUP_CHAIN.index(wanted[-1]) if wanted else -1
    level = "bucket"
    for rollup in ROLLUP_CHAIN[: coarsest + 1]:
        key = rows[0]
        codes = _to_period(key >> DIM_BITS, level, rollup, plan.bucket_us)
        lkey = (codes << DIM_BITS) | (key & np.int64((1 << DIM_BITS) - 1))
        rows = aggregate(lkey, *rows[1:])
        level = rollup
        if rollup in plan.rollups:
            r_keys[rollup], r_sums[rollup] = _rollup_groups(rows)
    return PartitionResult(
        cell_keys, np.concatenate([cell_sums, cell_uniques[:, None]], axis=1), r_keys, r_sums
    )


def combine(results: list[PartitionResult], rollups: tuple[str, ...]) -> PartitionResult:
    """Add up partition results: sums and distinct counts both add (IPs never repeat)."""
    cell_keys, cell_sums = sum_by_key(
        np.concatenate([r.cell_keys for r in results]),
        np.concatenate([r.cell_sums for r in results]),
    )
    r_keys, r_sums = {}, {}
    for rollup in rollups:
        r_keys[rollup], r_sums[rollup] = sum_by_key(
            np.concatenate([r.rollup_keys[rollup] for r in results]),
            np.concatenate([r.rollup_sums[rollup] for r in results]),
        )
    return PartitionResult(cell_keys, cell_sums, r_keys, r_sums)
