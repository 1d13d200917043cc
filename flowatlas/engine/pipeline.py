"""The build's two steps, as pure functions of plain data (so any scheduler can run them).

``map_task``: read some archive rows -> orient -> classify -> bucket -> sum volume, packets
and flows per cell -> reduce to distinct (cell, remote IP) rows -> split them by remote-IP
hash (IPv6 by prefix) into the plan's partitions.

``reduce_partition``: one partition's rows from every task -> exact distinct remote IPs per
cell and per rollup key (day, month, quarter, whole range x grouping set), with the HHI
numerators, top-address candidates, (key, ASN) volumes and sketches. Because each remote IP
lives in exactly one partition, the partitions' results add up or merge exactly
(:mod:`flowatlas.engine.combine`).

Same inputs, same outputs, whatever the order or number of workers: sums are integer and
every output is sorted by key.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowatlas.addresses import bytes16_to_hilo, bytes16_words, is_v4
from flowatlas.engine.plan import GROUPINGS, BuildPlan
from flowatlas.io.archive import Fragment, read_fragment_batches
from flowatlas.kernels import hll
from flowatlas.kernels.distinct import (
    cell_ids,
    counting_order,
    ip_ids,
    ip_ids_first,
    map_rows,
    partition_of,
    stamp_counts,
    v6_prefix_of,
    walk,
)
from flowatlas.kernels.orient import (
    DIM_BITS,
    DIR_SHIFT,
    REASONS,
    REGION_SHIFT,
    TYPE_SHIFT,
)
from flowatlas.kernels.tally import tally
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
#: rows a CPU map task decodes and classifies at a time (:func:`read_fragment_batches`): a
#: batch's decoded columns (about 6 MB) are still in cache when the per-record kernel reads
#: them, a whole 2^20-row group's (90 MB) are not; 32 k to 256 k rows measured alike, fewer
#: rows add Python per batch
MAP_BATCH_ROWS = 1 << 16
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
    """One row per record: its packed cell key, remote address, volume and packets; where
    the plan tracks them, its interface link (int16, -1: none) and geography code (int32).

    Host arrays; on the GPU path of ``map_task`` device arrays (``orient_and_cell`` with
    ``on_device``), which only ``engine.gpu.accumulate_gpu`` reads.
    """

    key: np.ndarray
    hi: np.ndarray
    lo: np.ndarray
    vol: np.ndarray
    pk: np.ndarray
    link: np.ndarray | None = None
    geo: np.ndarray | None = None

    @classmethod
    def empty(cls, plan: BuildPlan | None = None) -> Partial:
        return cls.allocate(0, plan)

    @classmethod
    def allocate(cls, n: int, plan: BuildPlan | None = None) -> Partial:
        """Uninitialised host arrays for ``n`` rows (with the columns ``plan`` tracks)."""
        e = np.empty(n, np.uint64)
        return cls(
            np.empty(n, np.int64), e, np.empty_like(e), np.empty_like(e), np.empty_like(e),
            np.empty(n, np.int16) if plan is not None and plan.track_links else None,
            np.empty(n, np.int32) if plan is not None and plan.track_geo else None,
        )  # fmt: skip

    def columns(self) -> list[np.ndarray]:
        """The columns present, in field order."""
        return [c for c in (self.key, self.hi, self.lo, self.vol, self.pk, self.link, self.geo)
                if c is not None]  # fmt: skip

    def with_columns(self, cols: list[np.ndarray]) -> Partial:
        """The same kind of rows (the same columns present) holding ``cols``."""
        it = iter(cols)
        return Partial(
            *(next(it) for _ in range(5)),
            next(it) if self.link is not None else None,
            next(it) if self.geo is not None else None,
        )


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
                counts[f"null_{name}"] = newly
            bad |= null
    return bad, counts


def orient_and_cell(
    table: pa.Table,
    plan: BuildPlan,
    counts: str,
    *,
    on_device: bool = False,
    into: Partial | None = None,
    at: int = 0,
) -> tuple[Partial, FragmentStats]:
    """Oriented, classified, bucketed rows (one per record) and the fragment's accounting.

    On the CPU the rows are written to ``into``'s arrays from row ``at`` on (fresh arrays if
    not given) and the returned rows are views of them, quarantined records left out: a map
    task fills one set of arrays fragment by fragment instead of joining them afterwards.
    With the GPU backend and ``on_device`` the rows' columns stay on the device (for
    ``map_task``'s device accumulation); otherwise they are host arrays.
    """
    stats = FragmentStats(records=table.num_rows)
    # the mask (a pass and an array a batch) only where a column holds a null: an archive's
    # columns mostly hold none (the Parquet schema's fields are required)
    if any(table.column(name).null_count for name in table.column_names):
        bad, null_counts = _null_mask(table)
        stats.quarantined.update(null_counts)
        table = table.filter(pa.array(~bad))
    n = table.num_rows
    if n == 0:
        return Partial.empty(plan), stats

    from flowatlas.kernels.records import records_cpu, value_codes

    # exporters: number the distinct values once, map the few of them in Python
    exp_words = bytes16_words(table.column("exporter"))
    codes, first = value_codes(exp_words)
    raw = exp_words[first].tobytes()  # one slice of bytes per value: no NumPy scalars
    known = [plan.exporters.get(raw[k : k + 16], (-1, 0)) for k in range(0, len(raw), 16)]
    exp_ids = np.array([e[0] for e in known] + [-1], dtype=np.int32)
    exp_regs = np.array([e[1] for e in known] + [0], dtype=np.int16)
    t_col = table.column("time_start")  # timestamp[us]: read its int64s in place (no cast)
    t_us = (t_col.chunk(0) if t_col.num_chunks == 1 else t_col.combine_chunks()).view(pa.int64())
    t_us = t_us.to_numpy()
    scaled = counts == COUNTS_SCALED

    if plan.backend == "gpu":
        from flowatlas.engine.gpu import orient_cells_gpu

        src_hi, src_lo = bytes16_to_hilo(table.column("src_addr"))
        dst_hi, dst_lo = bytes16_to_hilo(table.column("dst_addr"))
        out = orient_cells_gpu(
            plan, src_hi, src_lo, dst_hi, dst_lo, exp_regs[codes], exp_ids[codes],
            table.column("in_if").to_numpy(), table.column("out_if").to_numpy(), t_us,
            table.column("bytes").to_numpy(), table.column("packets").to_numpy(),
            table.column("sampling_rate").to_numpy(), scaled, on_device,
        )  # fmt: skip
        shape = Partial.empty(plan)
        if not on_device:
            return _accept(shape, [*out[:5], *out[6:]], out[5], stats)
        from flowatlas.engine.gpu import accept_on_device

        rows, dropped = accept_on_device(shape, *out)
        stats.quarantined.update({REASONS[c]: k for c, k in dropped.items()})
        stats.cubed = int(rows.key.shape[0])
        return rows, stats

    if into is None:
        into, at = Partial.allocate(n, plan), 0
    reason = np.empty(n, np.uint8)
    part = into.with_columns([c[at : at + n] for c in into.columns()])
    records_cpu(
        bytes16_words(table.column("src_addr")), bytes16_words(table.column("dst_addr")),
        codes, exp_regs, exp_ids,
        table.column("in_if").to_numpy(), table.column("out_if").to_numpy(), t_us,
        table.column("bytes").to_numpy(), table.column("packets").to_numpy(),
        table.column("sampling_rate").to_numpy(), scaled, plan.bucket_us,
        plan.local_table.index, plan.local_region, plan.class_table.index, plan.type_codes,
        plan.user_override, plan.rule_keys, plan.rule_types, plan.internal_type,
        (part.key, part.hi, part.lo, part.vol, part.pk, reason), rule_links=plan.rule_links,
        link_out=part.link, geo_of=plan.geo_of, geo_out=part.geo,
    )  # fmt: skip
    cols = part.columns()
    rows, stats = _accept(part, cols, reason, stats)
    if rows.key.size < n:  # quarantined records: close the gap they leave in ``into``
        for c, kept in zip(cols, rows.columns(), strict=True):
            c[: kept.size] = kept
        rows = part.with_columns([c[: rows.key.size] for c in cols])
    return rows, stats


def _accept(
    shape: Partial, cols: list[np.ndarray], reason: np.ndarray, stats: FragmentStats
) -> tuple[Partial, FragmentStats]:
    """Keep the records without a quarantine reason; count the others by reason.

    ``cols`` are the columns of rows shaped like ``shape`` (:meth:`Partial.columns`).
    """
    if np.count_nonzero(reason):  # one pass, no array, where every record is kept
        ok = reason == 0
        for code, count in zip(*np.unique(reason[~ok], return_counts=True), strict=True):
            stats.quarantined[REASONS[int(code)]] = int(count)
        cols = [c[ok] for c in cols]
    stats.cubed = int(cols[0].size)
    return shape.with_columns(cols), stats


# --------------------------------------------------------------------------- dimensions

#: dimension code of a cell key (its low DIM_BITS bits): region, type, direction, IPv6 flag
DIM_MASK15 = (1 << DIM_BITS) - 1


@dataclass(frozen=True)
class DimTables:
    """Dense numbering of the dimension combinations a plan can produce, per grouping set.

    ``index[code]`` turns a 15-bit dimension code into a dense index (0..D-1), in the same
    order as the codes; ``code[i]`` goes back. ``gmap[g, i]`` is the dense index of
    combination i within grouping g (0..width[g]-1) and ``ginv[g][j]`` the masked code of
    grouped index j.
    """

    index: np.ndarray
    code: np.ndarray
    gmap: np.ndarray
    width: np.ndarray
    ginv: tuple[np.ndarray, ...]


@functools.cache
def dim_tables(n_regions: int, n_types: int) -> DimTables:
    """The dense dimension tables for ``n_regions`` regions and ``n_types`` network types."""
    region, ntype, direction, v6 = np.meshgrid(
        np.arange(n_regions), np.arange(n_types), np.arange(4), np.arange(2), indexing="ij"
    )
    code = (
        (region << REGION_SHIFT) | (ntype << TYPE_SHIFT) | (direction << DIR_SHIFT) | v6
    ).ravel().astype(np.int64)  # fmt: skip
    index = np.full(1 << DIM_BITS, -1, dtype=np.int64)
    index[code] = np.arange(code.size)
    gmap = np.empty((len(GROUPINGS), code.size), dtype=np.int64)
    width = np.empty(len(GROUPINGS), dtype=np.int64)
    ginv = []
    for g, mask in enumerate(GROUP_MASKS):
        masked = code & mask
        uniq, inv = np.unique(masked, return_inverse=True)
        gmap[g] = inv.reshape(-1)
        width[g] = uniq.size
        ginv.append(uniq.astype(np.int64))
    return DimTables(index, code, gmap, width, tuple(ginv))


def _tables(plan: BuildPlan) -> DimTables:
    return dim_tables(len(plan.regions), len(plan.network_types))


# --------------------------------------------------------------------------- map


@dataclass
class Piece:
    """Distinct (cell, remote IP) rows of one task for one IP partition, with their volume."""

    cell: np.ndarray
    hi: np.ndarray
    lo: np.ndarray
    vol: np.ndarray

    @classmethod
    def concat(cls, pieces: list[Piece]) -> Piece:
        if not pieces:
            e = np.empty(0, np.uint64)
            return cls(np.empty(0, np.int64), e, e.copy(), e.copy())
        if len(pieces) == 1:  # nothing to join (a reducer's rows read back in one piece)
            return pieces[0]
        return cls(
            *(np.concatenate([getattr(p, f) for p in pieces]) for f in ("cell", "hi", "lo", "vol"))
        )


@dataclass
class MapResult:
    """What a map task hands on: exact per-cell sums, and per-partition distinct rows."""

    cell_keys: np.ndarray  # distinct packed cell keys
    cell_sums: np.ndarray  # (n, 3) uint64: volume, packets, flows
    pieces: list[Piece]  # per IP partition; views of ``rows`` where that is set
    stats: FragmentStats
    #: all distinct rows in partition order (partition j is rows[bounds[j]:bounds[j + 1]]),
    #: contiguous columns that the work directory writes without copying
    rows: Piece | None = None
    bounds: np.ndarray | None = None
    #: sums per (cell, interface link) and per (day, dimensions, geography): (keys, (m, 3)
    #: sums), sorted keys (:mod:`flowatlas.kernels.tally`); None where the plan tracks none
    link_sums: tuple[np.ndarray, np.ndarray] | None = None
    geo_sums: tuple[np.ndarray, np.ndarray] | None = None

    def head(self) -> MapResult:
        """This result without its distinct rows: what the combiner reads."""
        return MapResult(
            self.cell_keys, self.cell_sums, [], self.stats,
            link_sums=self.link_sums, geo_sums=self.geo_sums,
        )  # fmt: skip


def map_task(fragments: list[Fragment], plan: BuildPlan) -> MapResult:
    """Read some fragments; sum per cell and reduce to (cell, remote IP) rows.

    The rows are split by remote-IP partition (IPv6 by its /64) so that each address, and
    each IPv6 /64, is counted in exactly one reducer. On the CPU, repeats of a (cell, IP) pair
    fold as long as they are near one another (:func:`~flowatlas.kernels.distinct.map_rows`);
    the GPU folds them all. Either way the reducer counts each pair once.
    """
    stats = FragmentStats()
    parts = []
    gpu = plan.backend == "gpu"
    # on the CPU every fragment's rows go into one set of arrays (no join afterwards)
    into = None if gpu else Partial.allocate(sum(f.num_rows for f in fragments), plan)
    at = 0
    for fragment in fragments:
        # on the CPU a batch at a time, classified while its columns are in cache
        for table in read_fragment_batches(fragment, COLUMNS, 0 if gpu else MAP_BATCH_ROWS):
            rows, st = orient_and_cell(table, plan, fragment.counts, on_device=gpu, into=into,
                                       at=at)  # fmt: skip
            at += rows.key.shape[0]
            stats.add(st)
            if gpu:  # device arrays, one set per fragment
                parts.append(rows)
    if gpu:  # the same sums, and the distinct rows, from device hash tables
        from flowatlas.engine.gpu import accumulate_gpu

        cells, sums, hi, lo, cell, uvol, link_sums, geo_sums = accumulate_gpu(parts, plan)
        pid = partition_of(hi, lo, plan.partitions, plan.v6_prefix)
        # a counting sort: rows by partition, in their order within one
        order, bounds = counting_order(pid, plan.partitions)
        out = Piece(cell[order], hi[order], lo[order], uvol[order])
        return _map_result(cells, sums, out, bounds, stats, link_sums, geo_sums)
    rows = into.with_columns([c[:at] for c in into.columns()])
    tables = _tables(plan)
    cells, sums, *cols, bounds = map_rows(
        rows.key, rows.hi, rows.lo, rows.vol, rows.pk, tables.index, tables.code, DIM_BITS,
        plan.partitions, plan.v6_prefix,
    )  # fmt: skip
    link_sums = geo_sums = None
    if plan.track_links or plan.track_geo:
        link_sums, geo_sums = tally(rows.key, rows.vol, rows.pk, plan.bucket_us, rows.link,
                                    rows.geo)  # fmt: skip
    return _map_result(cells, sums, Piece(*cols), bounds, stats, link_sums, geo_sums)


def _map_result(
    cells: np.ndarray,
    sums: np.ndarray,
    out: Piece,
    bounds: np.ndarray,
    stats: FragmentStats,
    link_sums: tuple[np.ndarray, np.ndarray] | None = None,
    geo_sums: tuple[np.ndarray, np.ndarray] | None = None,
) -> MapResult:
    """A map result whose pieces are views of the partition-ordered rows ``out``."""
    pieces = [
        Piece(out.cell[a:b], out.hi[a:b], out.lo[a:b], out.vol[a:b])
        for a, b in itertools.pairwise(bounds)
    ]
    return MapResult(cells, sums, pieces, stats, out, bounds, link_sums, geo_sums)


def pack(
    fragments: list[Fragment], target_rows: int, *, by_file: bool = False
) -> list[list[Fragment]]:
    """Group consecutive fragments into tasks of about ``target_rows`` rows each.

    With ``by_file`` a task never spans two files, so adding files to an archive leaves the
    tasks of the files already there unchanged (what incremental builds reuse).
    """
    tasks: list[list[Fragment]] = []
    rows = 0
    for f in fragments:
        new_file = by_file and tasks and tasks[-1][-1].path != f.path
        if not tasks or new_file or rows + f.num_rows > target_rows:
            tasks.append([])
            rows = 0
        tasks[-1].append(f)
        rows += f.num_rows
    return tasks


#: rows a map task's fixed cost (its files' opening, its kernels' calls) is worth, when
#: :func:`balance` weighs task lists against each other
TASK_COST_ROWS = 10_000
#: :func:`balance` makes no task larger than this times the largest one it was given
BALANCE_SLACK = 1.125


def balance(tasks: list[list[Fragment]], workers: int) -> list[list[Fragment]]:
    """``tasks`` regrouped, in the same fragment order, so that ``workers`` threads running
    them one after another finish together: the reducers start only after the last map task,
    and a last task running alone leaves the other cores idle (world 5 M: 17 tasks of
    300 k rows, the last of them alone, against 18 of 278 k).

    Tries the even splits of the fragments into a multiple of ``workers`` tasks near
    ``len(tasks)``, and keeps the one whose workers would finish first (rows, plus
    :data:`TASK_COST_ROWS` a task, run in order by the first free worker) among those whose
    largest task is at most :data:`BALANCE_SLACK` times the largest of ``tasks`` (a task's
    rows bound its memory); ``tasks`` itself where none does better (already even, or
    fragments too coarse to split evenly).
    """
    if workers < 2 or len(tasks) < 2:
        return tasks
    frags = [f for t in tasks for f in t]
    rows = np.array([f.num_rows for f in frags], np.int64)
    total = int(rows.sum())
    if total == 0:
        return tasks
    sizes = [sum(f.num_rows for f in t) for t in tasks]
    best, best_span = tasks, _makespan(sizes, workers)
    largest = BALANCE_SLACK * max(sizes)
    mid = np.cumsum(rows) - rows / 2
    low = max(workers, len(tasks) // workers * workers)
    for n in range(low, low + 2 * workers + 1, workers):
        group = np.minimum((mid * n / total).astype(np.int64), n - 1)  # where its middle row is
        cuts = np.flatnonzero(np.diff(group)) + 1
        split = [frags[a:b] for a, b in zip([0, *cuts], [*cuts, len(frags)], strict=True)]
        split_sizes = [sum(f.num_rows for f in t) for t in split]
        span = _makespan(split_sizes, workers)
        if span < best_span and max(split_sizes) <= largest:
            best, best_span = split, span
    return best


def _makespan(task_rows: list[int], workers: int) -> int:
    """When the last of ``workers`` threads taking tasks in order (each the next task when it
    is free) would finish, in rows (:data:`TASK_COST_ROWS` added per task)."""
    free = [0] * workers
    for r in task_rows:
        i = free.index(min(free))
        free[i] += r + TASK_COST_ROWS
    return max(free)


# --------------------------------------------------------------------------- reduce


@dataclass
class PartitionResult:
    """Per-cell and per-rollup sums and distinct counts (sorted packed keys)."""

    cell_keys: np.ndarray
    cell_sums: np.ndarray  # (n, 5): volume, packets, flows, uniques, uniques_prefix
    rollup_keys: dict[str, np.ndarray]
    rollup_sums: dict[str, np.ndarray]  # (n, 5) likewise
    #: per rollup, aligned with rollup_keys: volume of the top addresses, HHI
    rollup_top_bytes: dict[str, np.ndarray] = field(default_factory=dict)
    rollup_hhi: dict[str, np.ndarray] = field(default_factory=dict)
    #: per rollup with top lists: (key, rank, volume, hi, lo) and (key, rank, asn, volume)
    top_ips: dict[str, tuple[np.ndarray, ...]] = field(default_factory=dict)
    top_asns: dict[str, tuple[np.ndarray, ...]] = field(default_factory=dict)
    #: HyperLogLog blobs as (offsets, data), one per key of sketch_keys
    sketches: tuple[np.ndarray, np.ndarray] | None = None
    sketch_keys: np.ndarray | None = None
    #: summed over map tasks: per (cell, interface link) and per (day, dims, geography)
    link_sums: tuple[np.ndarray, np.ndarray] | None = None
    geo_sums: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class Counts:
    """Distinct remote IPs of one IP partition, per cell and per rollup key."""

    cell_keys: np.ndarray
    cell_counts: np.ndarray  # (n, 2): distinct addresses, distinct IPv4 + IPv6 prefixes
    rollup_keys: dict[str, np.ndarray]
    rollup_counts: dict[str, np.ndarray]
    #: per rollup, aligned with rollup_keys: sum of squared per-address volumes (hi, lo)
    rollup_sq: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: per rollup: candidate top addresses (key, volume, hi, lo), at most TOP_K per key; of
    #: a rollup outside TOP_LIST_ROLLUPS the volumes only (addresses 0, no volume 0): its
    #: lists are read for the sum of their volumes alone (the cube's top_bytes)
    top_ips: dict[str, tuple[np.ndarray, ...]] = field(default_factory=dict)
    #: per rollup: volume per (key, ASN) of this partition's addresses
    asn_volume: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: HyperLogLog sketches of the cells' addresses, long form: (cell keys, entries)
    sketch: tuple[np.ndarray, np.ndarray] | None = None


#: most dense sketch keys (sketch periods x dimension combinations) a reducer numbers for
#: :func:`hll.sparse_update_dense` whatever its rows, and per row beyond that; with more (a
#: counter each) it radix-sorts the packed keys (:func:`hll.sparse_update`)
SKETCH_DENSE_KEYS_MAX = 1 << 20
SKETCH_DENSE_KEYS_PER_ROW = 2
#: rollup periods from finest to coarsest
ROLLUP_CHAIN = ("day", "month", "quarter", "all")
#: how many top remote addresses (and ASNs) each rollup key remembers
TOP_K = 10
#: rollups whose keys get top-address and top-ASN lists (day would be large and rarely read)
TOP_LIST_ROLLUPS = ("month", "quarter", "all")


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


def rollup_key(code: np.ndarray, grouping: int, masked_dims: np.ndarray) -> np.ndarray:
    """Packed rollup key: period code, grouping set, masked dimension code."""
    return (code << ROLLUP_CODE_SHIFT) | (np.int64(grouping) << DIM_BITS) | masked_dims


def reduce_partition(pieces: list[Piece], plan: BuildPlan) -> Counts:
    """Exact distinct remote IPs and concentration per cell and rollup key (one partition).

    One walk over the rows grouped by address counts every cell and rollup key; rollup keys
    also gather their HHI numerators, top-address candidates and (key, ASN) volumes. A
    second, smaller walk over IPv6 rows counts distinct IPv6 prefixes.
    """
    rows = Piece.concat(pieces)
    tables = _tables(plan)
    d = int(tables.code.size)
    # the cells level walks the partition's distinct cells, not every (bucket, dimensions)
    # pair: few pairs hold rows (a world 1 M reducer: 101 k cells of 1.27 M pairs), and arrays
    # sized by all of them made the walks' fixed cost (counts, stamps, the passes below).
    # As a level of its own "period" (the cell) and a grouping that maps every dimension to
    # 0 (a row of gmap past the grouping sets), its key is the cell's dense id
    cid, dims, c_bucket, c_dim = cell_ids(rows.cell, tables.index, DIM_BITS, d)
    # the distinct buckets, and each cell's among them (cells come in bucket order)
    new_b = np.empty(c_bucket.size, bool)
    new_b[:1] = True
    np.not_equal(c_bucket[1:], c_bucket[:-1], out=new_b[1:])
    bkeys = c_bucket[new_b]
    cell_b = np.cumsum(new_b) - 1
    levels = [r for r in ROLLUP_CHAIN if r in plan.rollups]
    pidx = np.empty((1 + len(levels), bkeys.size), dtype=np.int64)
    pidx[0] = np.arange(bkeys.size)
    codes = [bkeys]
    for li, rollup in enumerate(levels, start=1):
        uniq, inv = np.unique(
            period_codes_us(bkeys * np.int64(plan.bucket_us), rollup), return_inverse=True
        )
        pidx[li] = inv.reshape(-1)
        codes.append(uniq)
    # take, not pidx[:, cell_b]: that fancy index lays the result out column-major, which
    # each walk then copied to rows (1.5 + 2 x 1.4 ms against 0.5 for a world 5 M reducer)
    cpidx = pidx.take(cell_b, axis=1)
    cpidx[0] = np.arange(c_bucket.size)
    gmap = np.concatenate([tables.gmap, np.zeros((1, d), np.int64)])
    # key layout: the cells first, then each rollup level's grouping sets
    segments = [(0, len(GROUPINGS), 0, 1, -1)]
    off = n0 = c_bucket.size
    coff = 0
    # (key, ASN) volumes: of the finest top-list rollup's full-dimension keys only (grouping
    # 0); the combiner sums them into the other groupings and coarser rollups
    asn_from = asn_to = -1
    asn_rollup = None
    for li in range(1, len(levels) + 1):
        if asn_rollup is None and levels[li - 1] in TOP_LIST_ROLLUPS:
            asn_rollup = levels[li - 1]
            asn_from, asn_to = coff, coff + codes[li].size * int(tables.width[0])
        for g in range(len(GROUPINGS)):
            w = int(tables.width[g])
            segments.append((li, g, off, w, coff))
            off += codes[li].size * w
            coff += codes[li].size * w
    table = plan.class_table
    asn_of = np.append(table.networks.column("asn").to_numpy().astype(np.uint32), np.uint32(0))
    row_id, n_addr, first = ip_ids_first(rows.hi, rows.lo)
    ids = (row_id, n_addr)
    # the distinct addresses (one row of each): the prefix table, the IPv6 test and prefix,
    # and the sketches' hash look at each address once, not once per row
    a_hi, a_lo = rows.hi[first], rows.lo[first]
    # each address's ASN, for the walk as is (not spread over the rows for it to read back)
    addr_asn = asn_of[table.lookup(a_hi, a_lo)].astype(np.int64)
    # distinct IPv4 addresses plus distinct IPv6 prefixes (privacy addresses inflate /128s).
    # An IPv6 address alone in its prefix (in this partition: a prefix lives in one) counts
    # as its prefix does, so only addresses that share their prefix ("shared") are counted
    # apart by the walk and again by prefix: each prefix numbered once, not once per row
    v6_at = np.flatnonzero(~is_v4(a_hi, a_lo))
    p_hi, p_lo = v6_prefix_of(a_hi[v6_at], a_lo[v6_at], plan.v6_prefix)
    prefix_id, n_prefixes = ip_ids(p_hi, p_lo)
    shared_at = np.bincount(prefix_id, minlength=n_prefixes)[prefix_id] > 1
    prefix_of = np.full(n_addr, -1, np.int64)
    prefix_of[v6_at[shared_at]] = prefix_id[shared_at]
    # whether an address shares its prefix: one flag per address (the walk's "IPv6" count),
    # not one per row
    addr_shared = prefix_of >= 0
    # the first rollup level's rows (one per address, period and dimensions) are kept for
    # the sketches, where a sketch key is one period of that level. The shared addresses'
    # prefixes are counted from the walk's own levels (a second walk, a run per prefix: no
    # scatter and folds of their rows of its own), unless a prefix's addresses lie in
    # several networks (ASNs): then apart, below
    shared = bool(shared_at.any())
    full, full_shared, sq_hi, sq_lo, top_v, top_r, a_idx, a_asn, a_vol, kept, *by_prefix = walk(
        rows.hi, rows.lo, cid, dims, None, rows.vol, None, cpidx, gmap, segments, off,
        coff, TOP_K, asn_from, asn_to, ids, addr=(first, addr_asn, addr_shared),
        keep_level=1 if levels else 0, groups=prefix_of if shared else None,
        volumes_only=[li for li, r in enumerate(levels, start=1) if r not in TOP_LIST_ROLLUPS],
    )  # fmt: skip
    prefix = full - full_shared
    if by_prefix and by_prefix[0] is not None:
        prefix += by_prefix[0]
    elif shared:
        sel = np.flatnonzero(addr_shared[row_id])
        stamp_segments = [s[:4] for s in segments]
        prefix += stamp_counts(
            None, None, cid[sel], dims[sel], cpidx, gmap, stamp_segments, off,
            ids=(prefix_of[row_id[sel]], n_prefixes),
        )[0]  # fmt: skip

    def counts(at: np.ndarray) -> np.ndarray:
        """(distinct addresses, distinct IPv4 addresses + IPv6 prefixes) of keys ``at``."""
        return np.stack([full[at], prefix[at]], axis=1)

    # back to packed keys, nonzero entries only
    cell_keys = (c_bucket << DIM_BITS) | tables.code[c_dim]
    result = Counts(cell_keys, counts(np.arange(n0)), {}, {})
    seg_keys: list[np.ndarray] = []  # packed rollup key of every concentration index
    for lev, g, _o, w, _co in segments[1:]:
        n = codes[lev].size * w
        j = np.arange(n)
        seg_keys.append(rollup_key(codes[lev][j // w], g, tables.ginv[g][j % w]))
    ckey = np.concatenate(seg_keys) if seg_keys else np.empty(0, np.int64)
    for li, rollup in enumerate(levels, start=1):
        lev_segs = [s for s in segments[1:] if s[0] == li]
        # the level's concentration indices in key order (period, then grouping, then
        # dimensions: a transpose of the (grouping, period, dimensions) layout), so its keys
        # come sorted without a sort
        per = np.arange(codes[li].size)[:, None]
        in_order = np.concatenate(
            [co + per * w + np.arange(w)[None, :] for _l, _g, _o, w, co in lev_segs], axis=1
        ).reshape(-1)
        to_count = lev_segs[0][2] - lev_segs[0][4]  # counts index - concentration index
        cidx = in_order[full[in_order + to_count] != 0]  # keys with addresses
        keys = ckey[cidx]
        result.rollup_keys[rollup] = keys
        result.rollup_counts[rollup] = counts(cidx + to_count)
        result.rollup_sq[rollup] = (sq_hi[cidx], sq_lo[cidx])
        tv = top_v[cidx]
        if rollup in TOP_LIST_ROLLUPS:
            r = top_r[cidx]
            valid = r >= 0
            rr = r[valid]
            t_hi, t_lo = rows.hi[rr], rows.lo[rr]
        else:  # volumes alone (walk's volumes_only)
            valid = tv > 0
            t_hi = t_lo = np.zeros(int(valid.sum()), np.uint64)
        kk = np.repeat(keys, TOP_K).reshape(-1, TOP_K)[valid]
        result.top_ips[rollup] = (kk, tv[valid], t_hi, t_lo)
        if rollup == asn_rollup:
            result.asn_volume[rollup] = (ckey[a_idx], a_asn, a_vol)
    if plan.sketch_p:
        # registers and ranks hashed once per distinct address, not once per row
        idx, rank = hll.slots(a_hi, a_lo, plan.sketch_p)
        # the sketch period (day) of each distinct bucket, numbered densely: a row's sketch
        # key is (its period's number, its dense dimensions), few enough for counting sorts
        s_bucket, s_of_b = np.unique(
            sketch_keys(bkeys << DIM_BITS, plan) >> DIM_BITS, return_inverse=True
        )
        n_keys = s_bucket.size * d
        s_of_b = s_of_b.reshape(-1)
        s_of_c = s_of_b[cell_b]  # each cell's sketch period
        if n_keys <= max(SKETCH_DENSE_KEYS_MAX, SKETCH_DENSE_KEYS_PER_ROW * cid.size):
            # where each period of the first rollup level (a day) lies in one sketch period,
            # that level's rows hold exactly the (sketch key, address) pairs of the rows, once
            # each: the sketch reads them (a few times fewer than the rows) instead
            s_of_p = sketch_period_of(pidx[1], s_of_b) if levels else None
            if s_of_p is not None:
                rep, start, per, dd = kept
                addr = np.repeat(row_id[rep], np.diff(start))
                got = (per, dd, s_of_p, d, addr)
            else:
                got = (cid, dims, s_of_c, d, row_id)
            k, e = hll.sparse_update_dense(*got, (idx, rank), plan.sketch_p)
            key_of = ((s_bucket[:, None] << DIM_BITS) | tables.code[None, :]).reshape(-1)
            result.sketch = (key_of[k], e)
        else:  # sketch keys of fine buckets over a long range: the packed keys, radix-sorted
            base = (s_bucket << DIM_BITS)[s_of_c][cid]
            result.sketch = hll.sparse_update(
                base | (rows.cell & DIM_MASK15), rows.hi, rows.lo, plan.sketch_p,
                row_slots=(idx[row_id], rank[row_id]),
            )  # fmt: skip
    return result


def sketch_period_of(period: np.ndarray, sketch: np.ndarray) -> np.ndarray | None:
    """The sketch period of each period of a rollup level, where every bucket of a period
    has the same one (``period`` and ``sketch``: each bucket's period and sketch period,
    dense); None where some period's buckets differ (sketches finer than the level)."""
    out = np.zeros(int(period.max()) + 1 if period.size else 0, np.int64)
    out[period] = sketch
    return out if np.array_equal(out[period], sketch) else None


def sketch_keys(cell_keys: np.ndarray, plan: BuildPlan) -> np.ndarray:
    """The sketch key of each cell key: the cell itself, or its day (``sketch_period``)."""
    if plan.sketch_period != "day" or plan.bucket_us >= US_PER_DAY:
        return cell_keys
    per_day = US_PER_DAY // plan.bucket_us
    bucket = cell_keys >> DIM_BITS
    return ((bucket // per_day) * per_day << DIM_BITS) | (cell_keys & DIM_MASK15)
