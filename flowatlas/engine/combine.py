"""Combining: map sums and partition counts into the cube, one partition at a time.

Sums come from the map side (they add up over tasks). Distinct counts, HHI numerators, top
candidates, (key, ASN) volumes and sketches come from the reducers: they add up, or merge
exactly, over IP partitions, because every address lives in one partition. The
:class:`Combiner` folds one partition's results at a time into arrays sized by the cube's
keys, so memory does not grow with the number of partitions: a billion-record archive has
many partitions but still a small cube.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from flowatlas.engine.pipeline import (
    DIM_MASK15,
    GROUP_MASKS,
    ROLLUP_CHAIN,
    ROLLUP_CODE_SHIFT,
    TOP_K,
    TOP_LIST_ROLLUPS,
    Counts,
    MapResult,
    PartitionResult,
    period_codes_us,
    period_start,
    rollup_key,
    sketch_keys,
)
from flowatlas.engine.plan import BuildPlan
from flowatlas.kernels import hll
from flowatlas.kernels.accumulate import add_rows_at, run_starts, sorted_positions, sum_by_key
from flowatlas.kernels.distinct import add128_at, merge_top
from flowatlas.kernels.orient import DIM_BITS
from flowatlas.kernels.topk import top_k_per_key

#: dense sketch registers are used while they fit in this many bytes; long form beyond
DENSE_SKETCH_BYTES = 1 << 30
#: ... and while they take less than this many bytes per record cubed: a record adds one
#: long-form entry (12 bytes) at most, so a small build's sketches are cheaper as entries
#: than as registers to zero, fill and scan (world 1 M: 64 MB of registers for 0.9 M
#: entries, ~25 ms less CPU beside its reducers; world 5 M, 13 bytes a record, lost 80 ms
#: in the tail sorting its entries)
DENSE_BYTES_PER_RECORD = 32
#: (key, ASN) rows gathered before they are summed again (bounds the combiner's memory)
ASN_COMPACT_ROWS = 4_000_000
#: (key, ASN) rows per share of the top-ASN work, at least, before it is split over cores
ASN_SHARE_ROWS = 100_000


def _index(universe: np.ndarray, keys: np.ndarray, what: str) -> np.ndarray:
    """Where each of ``keys`` sits in the sorted ``universe`` (every key must be there).

    A partition's keys come sorted (its sketch entries with thousands per key), so one
    merge through the universe finds them all (accumulate.sorted_positions): a binary
    search per key took 0.05 CPU s of a world 20 M build's combine.
    """
    try:
        return sorted_positions(universe, keys)
    except KeyError:  # pragma: no cover
        raise AssertionError(f"{what}: a partition has keys without volume") from None


class _Rollup:
    """Running results of one rollup period: keys from the cells, then folded partitions."""

    def __init__(self, rollup: str, code: np.ndarray, dims15: np.ndarray, sums: np.ndarray):
        """Keys and sums of ``rollup`` from rows with their period ``code`` (of this rollup),
        dimensions and sums: the cells, or the previous (finer) level's full-dimension keys."""
        # the level's full-dimension sums first (grouping 0 keeps every dimension): the other
        # groupings sum those, not every input row again
        full, fsums = sum_by_key(rollup_key(code, 0, dims15 & np.int64(GROUP_MASKS[0])), sums)
        fcode, fdims = full >> ROLLUP_CODE_SHIFT, full & DIM_MASK15
        keys = np.concatenate(
            [full] + [rollup_key(fcode, g, fdims & np.int64(m)) for g, m in
                      enumerate(GROUP_MASKS) if g]
        )  # fmt: skip
        self.rollup = rollup
        self.keys, self.sums = sum_by_key(keys, np.concatenate([fsums] * len(GROUP_MASKS)))
        n = self.keys.size
        self.counts = np.zeros((n, 2), np.uint64)
        self.sq_hi = np.zeros(n, np.uint64)
        self.sq_lo = np.zeros(n, np.uint64)
        self.top_v = np.zeros((n, TOP_K), np.uint64)
        self.top_hi = np.zeros((n, TOP_K), np.uint64)
        self.top_lo = np.zeros((n, TOP_K), np.uint64)
        self.top_n = np.zeros(n, np.int64)
        self.asn: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.asn_rows = 0

    def add(self, c: Counts) -> None:
        r = self.rollup
        idx = _index(self.keys, c.rollup_keys[r], f"rollup {r}")
        add_rows_at(self.counts, idx, c.rollup_counts[r])
        if r in c.rollup_sq:
            add128_at(self.sq_hi, self.sq_lo, idx, *c.rollup_sq[r])
        if r in c.top_ips:
            key, vol, hi, lo = c.top_ips[r]
            merge_top(
                self.top_v, self.top_hi, self.top_lo, self.top_n,
                _index(self.keys, key, f"top {r}"), vol, hi, lo,
            )  # fmt: skip
        if r in c.asn_volume:
            self.asn.append(c.asn_volume[r])
            self.asn_rows += c.asn_volume[r][0].size
            if self.asn_rows > ASN_COMPACT_ROWS:
                self.asn = [self._asn_sums()]
                self.asn_rows = self.asn[0][0].size

    def _asn_sums(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _sum_by_key_asn(
            np.concatenate([a[0] for a in self.asn]),
            np.concatenate([a[1] for a in self.asn]).astype(np.int64),
            np.concatenate([a[2] for a in self.asn]),
        )

    def finish(
        self,
        result: PartitionResult,
        top_asns: tuple[np.ndarray, ...] | None = None,
    ) -> None:
        """This rollup's cube arrays into ``result``; ``top_asns``: its top ASNs per key
        (from :meth:`Combiner.top_asns`)."""
        r = self.rollup
        vol = self.sums[:, 0]
        v = vol.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            hhi = (self.sq_hi.astype(np.float64) * 2.0**64 + self.sq_lo.astype(np.float64)) / (
                v * v
            )
        hhi = np.where(vol > 0, hhi, np.nan)
        valid = np.arange(TOP_K)[None, :] < self.top_n[:, None]
        top_bytes = np.where(valid, self.top_v, np.uint64(0)).sum(axis=1, dtype=np.uint64)
        # rollups sort by grouping first, then period and dimensions (as cube files list them)
        g = (self.keys >> DIM_BITS) & 7
        order = np.lexsort((self.keys, g))
        result.rollup_keys[r] = self.keys[order]
        result.rollup_sums[r] = np.concatenate([self.sums, self.counts], axis=1)[order]
        result.rollup_top_bytes[r] = top_bytes[order]
        result.rollup_hhi[r] = hhi[order]
        if r in TOP_LIST_ROLLUPS:
            rows, ranks = np.nonzero(valid)
            result.top_ips[r] = (
                self.keys[rows],
                ranks,
                self.top_v[rows, ranks],
                self.top_hi[rows, ranks],
                self.top_lo[rows, ranks],
            )
            if top_asns is not None and top_asns[0].size:
                result.top_asns[r] = top_asns


def _top_asns_of_share(
    chain: list[str], ak: np.ndarray, aa: np.ndarray, av: np.ndarray
) -> dict[str, tuple[np.ndarray, ...]]:
    """Top ASNs per key of every rollup in ``chain`` (finest first) from (key, ASN, volume)
    rows of the first one's full-dimension keys: :meth:`Combiner.top_asns` for one share of
    the ASNs."""
    base = chain[0]
    ak, aa, av = _sum_by_key_asn(ak, aa.astype(np.int64), av)
    code, dims15 = ak >> ROLLUP_CODE_SHIFT, ak & DIM_MASK15
    rows: dict[str, tuple[np.ndarray, ...]] = {base: (code, dims15, aa, av)}
    same: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}  # rollup -> (finer, codes)
    prev = base
    for r in chain[1:]:
        uc, inv = np.unique(code, return_inverse=True)
        up = period_codes_us(period_start(uc, prev).astype(np.int64), r)
        code = up[inv.reshape(-1)]
        if np.unique(up).size == uc.size:
            # one period of ``r`` per period of ``prev`` here (an archive within one
            # month): the same lists under the new period codes
            same[r] = (prev, uc, up)
        else:
            k, aa, av = _sum_by_key_asn(rollup_key(code, 0, dims15), aa, av)
            code, dims15 = k >> ROLLUP_CODE_SHIFT, k & DIM_MASK15
            rows[r] = (code, dims15, aa, av)
        prev = r
    out: dict[str, tuple[np.ndarray, ...]] = {}
    for r, r_rows in rows.items():
        parts = [_top_asns_of(*r_rows, g) for g in range(len(GROUP_MASKS))]
        key, rank, asn, vol = (np.concatenate([p[i] for p in parts]) for i in range(4))
        order = np.argsort(key, kind="stable")  # key by key; ranks stay in order
        out[r] = (key[order], rank[order], asn[order], vol[order])
    for r, (finer, uc, up) in same.items():
        key, rank, asn, vol = out[finer]
        at = np.searchsorted(uc, key >> ROLLUP_CODE_SHIFT)
        low = key & ((1 << ROLLUP_CODE_SHIFT) - 1)
        out[r] = ((up[at] << ROLLUP_CODE_SHIFT) | low, rank, asn, vol)
    return out


def _merge_top_lists(lists: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """One top list per key from lists over disjoint ASN shares: what ranking all their
    pairs at once gives (volume descending, then ASN ascending), key by key."""
    key, _rank, asn, vol = (np.concatenate([one[i] for one in lists]) for i in range(4))
    order = np.lexsort((asn, ~vol, key))
    key, asn, vol = key[order], asn[order], vol[order]
    start = run_starts(key)
    rank = np.arange(key.size) - np.repeat(start, np.diff(np.r_[start, key.size]))
    keep = rank < TOP_K
    return key[keep], rank[keep], asn[keep], vol[keep]


def _top_asns_of(
    code: np.ndarray, dims15: np.ndarray, aa: np.ndarray, av: np.ndarray, g: int
) -> tuple[np.ndarray, ...]:
    """Top ASNs per key of grouping set ``g`` from full-dimension (key, ASN) volumes sorted
    by key then ASN: (key, rank, ASN, volume), key by key, rank by rank."""
    if g == 0:  # already one row per (key, ASN), in order
        ak = rollup_key(code, 0, dims15)
    else:
        ak, aa, av = _sum_by_key_asn(rollup_key(code, g, dims15 & np.int64(GROUP_MASKS[g])), aa, av)
    keep, rank = top_k_per_key(ak, av, TOP_K)  # pairs come by key, then ASN
    return ak[keep], rank, aa[keep].astype(np.uint32), av[keep]


def _sum_by_key_asn(
    ak: np.ndarray, aa: np.ndarray, av: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Volume per (key, ASN) pair, sorted by key then ASN.

    Keys (less the smallest: a rollup's keys span little, but month and quarter codes put
    them past 2^31) and ASNs fit one int64 together, so the hash group-by of
    kernels/accumulate sums them and only the distinct pairs are sorted: sorting every pair
    (np.lexsort) took 2 of 10 CPU s of a 5 M-record heavy-tailed build. The sums are exact: a
    per-ASN sum never exceeds its cell's volume, whose overflow the build already reports.
    """
    base = int(ak.min()) if ak.size else 0
    if ak.size == 0 or (
        int(ak.max()) - base < 1 << 31 and int(aa.min()) >= 0 and int(aa.max()) < 1 << 32
    ):
        pairs, sums = sum_by_key(((ak.astype(np.int64) - base) << 32) | aa.astype(np.int64), av)
        return (pairs >> 32) + base, pairs & 0xFFFF_FFFF, sums[:, 0]
    order = np.lexsort((aa, ak))  # keys spanning 2^31 or more (no build makes so many)
    ak, aa, av = ak[order], aa[order], av[order]
    start = run_starts(ak, aa)
    return ak[start], aa[start], np.add.reduceat(av, start)


def _rollups(cell_keys: np.ndarray, cell_sums: np.ndarray, plan: BuildPlan) -> list[_Rollup]:
    """The rollups' keys and sums, finest first: the first from the cells, each next one from
    the previous one's full-dimension keys (a day's sums make its month's), so only the first
    level sums as many rows as there are cells. Returned in ``plan.rollups`` order."""
    built: dict[str, _Rollup] = {}
    prev: _Rollup | None = None
    for r in ROLLUP_CHAIN:
        if r not in plan.rollups:
            continue
        if prev is None:
            bucket = cell_keys >> DIM_BITS
            ub, inv = np.unique(bucket, return_inverse=True)
            code = period_codes_us(ub * np.int64(plan.bucket_us), r)[inv.reshape(-1)]
            dims15, sums = cell_keys & DIM_MASK15, cell_sums
        else:
            full = ((prev.keys >> DIM_BITS) & 7) == 0  # grouping 0 keeps every dimension
            pcode = prev.keys[full] >> ROLLUP_CODE_SHIFT
            up, inv = np.unique(pcode, return_inverse=True)
            start_us = period_start(up, prev.rollup).astype(np.int64)
            code = period_codes_us(start_us, r)[inv.reshape(-1)]
            dims15, sums = prev.keys[full] & DIM_MASK15, prev.sums[full]
        built[r] = prev = _Rollup(r, code, dims15, sums)
    return [built[r] for r in plan.rollups]


def _distinct(keys: np.ndarray) -> np.ndarray:
    """``np.unique(keys)`` by one plain sort (vectorised in NumPy) and its runs' starts:
    NumPy's unique hashes first, 3.7 -> 1.3 ms for a world 1 M build's 180 k sketch keys,
    on the main thread while the first reducers run."""
    s = np.sort(keys)
    return s[run_starts(s)]


def _asn_shards(rows: int) -> int:
    """Shares of the top-ASN work for ``rows`` (key, ASN) rows: one per core once every
    share has :data:`ASN_SHARE_ROWS` of them, else 1 (the calling thread)."""
    return max(1, min(os.cpu_count() or 1, rows // ASN_SHARE_ROWS))


def _sum_maps(
    parts: list[tuple[np.ndarray, np.ndarray] | None],
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-key sums over map tasks (links or geography), sorted by key; None if untracked."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return sum_by_key(np.concatenate([k for k, _ in parts]), np.concatenate([v for _, v in parts]))


class Combiner:
    """Fold map results and partition counts, one at a time, into the cube's arrays."""

    def __init__(self, maps: list[MapResult], plan: BuildPlan) -> None:
        self.plan = plan
        self.cell_keys, self.cell_sums = sum_by_key(
            np.concatenate([m.cell_keys for m in maps]),
            np.concatenate([m.cell_sums for m in maps]),
        )
        self.cell_counts = np.zeros((self.cell_keys.size, 2), np.uint64)
        self.link_sums = _sum_maps([m.link_sums for m in maps])
        self.geo_sums = _sum_maps([m.geo_sums for m in maps])
        self.rollups = _rollups(self.cell_keys, self.cell_sums, plan)
        self.sketch_keys = None
        self.registers = None
        self.sketch_long: list[tuple[np.ndarray, np.ndarray]] = []
        self._cells: np.ndarray | None = None  # cell_result's sums, until the next fold
        if plan.sketch_p:
            self.sketch_keys = _distinct(sketch_keys(self.cell_keys, plan))
            dense = self.sketch_keys.size << plan.sketch_p
            records = sum(m.stats.cubed for m in maps)
            if dense <= DENSE_SKETCH_BYTES and dense < DENSE_BYTES_PER_RECORD * records:
                self.registers = np.zeros((self.sketch_keys.size, 1 << plan.sketch_p), np.uint8)

    def add(self, c: Counts) -> None:
        """Fold one IP partition's counts in."""
        self._cells = None
        idx = _index(self.cell_keys, c.cell_keys, "cells")
        add_rows_at(self.cell_counts, idx, c.cell_counts)
        for r in self.rollups:
            r.add(c)
        if c.sketch is not None and self.sketch_keys is not None:
            k = _index(self.sketch_keys, c.sketch[0], "sketches")
            if self.registers is not None:
                hll.max_into(self.registers, k, c.sketch[1])
            else:
                self.sketch_long.append((k, c.sketch[1]))

    def top_asns(self) -> dict[str, tuple[np.ndarray, ...]]:
        """Every top-list rollup's top ASNs: (key, rank, ASN, volume), key by key, rank by
        rank.

        The reducers send (key, ASN) volumes for the finest top-list rollup's
        full-dimension keys only: volumes add up, so every grouping set and every coarser
        rollup sums those (an eighth of the rows, and a third of the rollups, that the
        reducers would otherwise send). This is the build's tail, after the last reducer,
        so the work is split by ASN over the cores (a pair's sum needs only its own ASN's
        rows; the sums and sorts release the GIL) and each share's top lists merge into the
        whole's.
        """
        chain, parts = self._asn_parts()
        if not parts:
            return {}
        ak, aa, av = (np.concatenate([p[i] for p in parts]) for i in range(3))
        n_shards = _asn_shards(ak.size)
        if n_shards == 1:
            return _top_asns_of_share(chain, ak, aa, av)
        shard = aa % np.uint32(n_shards)
        shards = [(ak[m], aa[m], av[m]) for m in (shard == i for i in range(n_shards))]
        with ThreadPoolExecutor(n_shards) as pool:
            lists = list(pool.map(lambda sh: _top_asns_of_share(chain, *sh), shards))
        return {r: _merge_top_lists([one[r] for one in lists]) for r in chain}

    def top_asn_shards(self) -> int:
        """How many shares (threads) :meth:`top_asns` splits its work into."""
        return _asn_shards(sum(p[0].size for p in self._asn_parts()[1]))

    def _asn_parts(self) -> tuple[list[str], list[tuple[np.ndarray, ...]]]:
        """The top-list rollups, finest first, and the (key, ASN) volumes gathered for the
        finest one (those of the others are summed from them)."""
        by_name = {r.rollup: r for r in self.rollups}
        chain = [r for r in ROLLUP_CHAIN if r in by_name and r in TOP_LIST_ROLLUPS]
        return chain, (by_name[chain[0]].asn if chain else [])

    def map_result(self) -> PartitionResult:
        """What the map results alone decide, before any partition is folded in: the cells'
        keys and volume, packets and flows (``cell_sums`` has those three columns), and the
        link and geography sums. ``links.parquet`` and ``geo.parquet`` are made from it, so a
        build writes them while its reducers run instead of after the last one."""
        return self._cells_with(self.cell_sums)

    def result(self, sketches: bool = True) -> PartitionResult:
        """The combined cells, rollups, concentration, top lists and sketches.

        ``sketches=False`` leaves the sketches out (``sketch_keys`` and ``sketches`` None):
        :meth:`sketch_result` encodes them on its own, on another thread if the caller likes
        (it reads nothing this method writes).
        """
        result = self.cell_result()
        top_asns = self.top_asns()
        for r in self.rollups:
            r.finish(result, top_asns.get(r.rollup))
        if sketches:
            sketched = self.sketch_result()
            if sketched is not None:
                result.sketch_keys, result.sketches = sketched
        return result

    def cell_result(self) -> PartitionResult:
        """The combined cells alone (with the link and geography sums): what
        :meth:`result` starts from, so a build can make and write cells.parquet before the
        rollups are finished."""
        if self._cells is None:  # made once after the last fold, whoever asks first
            self._cells = np.concatenate([self.cell_sums, self.cell_counts], axis=1)
        return self._cells_with(self._cells)

    def _cells_with(self, sums: np.ndarray) -> PartitionResult:
        """A result of the cells with these sums (and the link and geography sums), no
        rollups yet."""
        return PartitionResult(
            self.cell_keys, sums, {}, {}, link_sums=self.link_sums, geo_sums=self.geo_sums
        )

    def sketch_result(self) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]] | None:
        """The sketch keys and their HyperLogLog blobs (offsets, data); None without sketches."""
        if self.sketch_keys is None:
            return None
        p = self.plan.sketch_p
        if self.registers is not None:
            return self.sketch_keys, hll.encode_registers(self.registers)
        if self.sketch_long:
            k, e = hll.reduce_sparse(
                np.concatenate([a for a, _ in self.sketch_long]),
                np.concatenate([b for _, b in self.sketch_long]),
                p,
            )
        else:
            k, e = np.empty(0, np.int64), np.empty(0, np.uint32)
        return self.sketch_keys, hll.encode_cells(k, e, self.sketch_keys.size, p)
