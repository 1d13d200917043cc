"""Exact distinct counting by remote IP, and dense per-cell sums. Arrays in, arrays out.

The cube needs, for every cell and every rollup (period x grouping set), the number of
distinct remote IPs. Hash sets per key would touch memory at random for every row and key.
Instead rows are first *grouped by IP* (a hash pass gives each address a dense id, a counting
sort brings an address's rows together); then, walking one address's rows, a key is counted
the first time that address reaches it: a "stamp" array per key remembers the last address
counted. Every key lives in a small dense array (periods x dimension combinations), so the
walk stays in cache and costs a few nanoseconds per row and key.

Sums (volume, packets, flows) add up, so they go straight into dense arrays per cell.
"""

from __future__ import annotations

from collections.abc import Collection

import numba
import numpy as np

from flowatlas import kernel_cache
from flowatlas.kernels.accumulate import CounterOverflow, ip_hash, mix64
from flowatlas.kernels.lpm import _prefetch

kernel_cache.install()  # before the cached kernels: keyed on all the sources they import

U64_MAX = np.uint64(0xFFFFFFFFFFFFFFFF)


@numba.njit(inline="always", nogil=True, cache=True)
def _v4_mapped(h, lw):  # pragma: no cover - compiled
    """Whether address (``h``, ``lw``) is IPv4, stored IPv4-mapped (``::ffff:a.b.c.d``)."""
    return h == 0 and (lw >> np.uint64(32)) == np.uint64(0xFFFF)


@numba.njit(nogil=True, cache=True)
def _dense_sums(cell, vol, pk, n_cells):  # pragma: no cover - compiled
    s_vol = np.zeros(n_cells, np.uint64)
    s_pk = np.zeros(n_cells, np.uint64)
    s_fl = np.zeros(n_cells, np.uint64)
    overflow = False
    for i in range(cell.size):
        c = cell[i]
        a = s_vol[c] + vol[i]
        b = s_pk[c] + pk[i]
        if a < s_vol[c] or b < s_pk[c]:
            overflow = True
        s_vol[c] = a
        s_pk[c] = b
        s_fl[c] += np.uint64(1)
    return s_vol, s_pk, s_fl, overflow


def dense_sums(cell: np.ndarray, vol: np.ndarray, pk: np.ndarray, n_cells: int) -> np.ndarray:
    """(n_cells, 3) uint64: volume, packets and flows (rows) per dense cell index."""
    s_vol, s_pk, s_fl, overflow = _dense_sums(
        np.ascontiguousarray(cell, np.int64),
        np.ascontiguousarray(vol, np.uint64),
        np.ascontiguousarray(pk, np.uint64),
        int(n_cells),
    )
    if overflow:
        raise CounterOverflow("a uint64 sum of bytes or packets overflowed")
    return np.stack([s_vol, s_pk, s_fl], axis=1)


@numba.njit(nogil=True, cache=True)
def _ip_ids_run(hi, lo, i, table, bits, ids, first, m):  # pragma: no cover - compiled
    """Rows ``i`` on into ``table`` (2^``bits`` slots) until it is half full or the rows
    end: (next row, addresses so far). The table is fixed for the whole loop: where the
    loop itself grew it (a table variable reassigned inside it), the probe loop ran 2-3x
    slower, 16 -> 7 ns a row on the 10^9 archive's reducers (bench/RESULTS.md, twelfth
    round), though it grew a handful of times."""
    n = hi.size
    shift = np.uint64(64 - bits)
    mask = np.uint64((1 << bits) - 1)
    limit = 1 << (bits - 1)
    while i < n and m < limit:
        h = hi[i]
        lw = lo[i]
        s = ip_hash(h, lw) >> shift
        while True:
            j = table[s, 2]
            if j == 0:
                table[s, 0] = h
                table[s, 1] = lw
                first[m] = i
                m += 1
                table[s, 2] = np.uint64(m)
                ids[i] = m - 1
                break
            if table[s, 0] == h and table[s, 1] == lw:
                ids[i] = np.int64(j) - 1
                break
            s = (s + np.uint64(1)) & mask
        i += 1
    return i, m


@numba.njit(nogil=True, cache=True)
def _ip_ids_grown(old, bits):  # pragma: no cover - compiled
    """The addresses of table ``old`` in a new one of 2^``bits`` slots."""
    shift = np.uint64(64 - bits)
    mask = np.uint64((1 << bits) - 1)
    table = np.zeros((1 << bits, 3), dtype=np.uint64)
    for z in range(old.shape[0]):
        if old[z, 2] != 0:
            s = ip_hash(old[z, 0], old[z, 1]) >> shift
            while table[s, 2] != 0:
                s = (s + np.uint64(1)) & mask
            table[s, 0] = old[z, 0]
            table[s, 1] = old[z, 1]
            table[s, 2] = old[z, 2]
    return table


@numba.njit(nogil=True, cache=True)
def _ip_ids(hi, lo):  # pragma: no cover - compiled
    """Dense id per distinct address, in first-seen order, the number of addresses and the
    row where each first appears.

    Each table slot holds the address and its id side by side (24 bytes), so a probe reads
    one cache line; the table grows with the distinct addresses, not the rows, so it stays
    as small (and as cache-friendly) as the data allows. A slot is the hash's *top* bits:
    a reducer's IPv4 addresses share ``ip_hash % parts`` (their partition), so with a power
    of two of partitions its low bits would leave all but 1 / parts of the slots unused as
    first choices (longer probe runs: 0.11 -> 0.08 CPU s on a world 5 M build's reducers).
    The rows go through in runs of :func:`_ip_ids_run`, the table doubled (kept under half
    full) between them.
    """
    n = hi.size
    # typed, not literal, starting values: a literal first call would compile the run again
    bits = np.int64(10)
    table = np.zeros((1 << bits, 3), dtype=np.uint64)  # hi, lo, id + 1 (0: empty)
    ids = np.empty(n, np.int64)
    first = np.empty(n, np.int64)
    i = np.int64(0)
    m = np.int64(0)
    while i < n:
        i, m = _ip_ids_run(hi, lo, i, table, bits, ids, first, m)
        if 2 * m >= 1 << bits:
            bits += 1
            table = _ip_ids_grown(table, bits)
    return ids, m, first[:m].copy()


@numba.njit(nogil=True, cache=True)
def _counting_order(ids, n_ids):  # pragma: no cover - compiled
    """Row order that groups rows by id (ids ascending, rows in their original order)."""
    start = np.zeros(n_ids + 1, np.int64)
    for i in range(ids.size):
        start[ids[i] + 1] += 1
    for k in range(n_ids):
        start[k + 1] += start[k]
    pos = start[:-1].copy()
    order = np.empty(ids.size, np.int64)
    for i in range(ids.size):
        k = ids[i]
        order[pos[k]] = i
        pos[k] += 1
    return order, start


def counting_order(ids: np.ndarray, n_ids: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, start): rows with id k (0 <= k < n_ids) are order[start[k]:start[k + 1]], in
    their original order."""
    ids = np.ascontiguousarray(ids, np.int64)
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= n_ids):
        raise ValueError(f"ids must lie in [0, {n_ids})")
    return _counting_order(ids, int(n_ids))


def ip_ids(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense id (int64) per row's address, in first-seen order, and how many addresses."""
    ids, m, _ = ip_ids_first(hi, lo)
    return ids, m


def ip_ids_first(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """:func:`ip_ids` and the row where each address first appears (by id): one row per
    distinct address, for work done once per address (its ASN, its sketch register)."""
    ids, m, first = _ip_ids(
        np.ascontiguousarray(hi, np.uint64), np.ascontiguousarray(lo, np.uint64)
    )
    return ids, int(m), first


def group_by_ip(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, start): rows of address k are order[start[k]:start[k + 1]], ids first-seen."""
    ids, m = ip_ids(hi, lo)
    return _counting_order(ids, m)


@numba.njit(nogil=True, cache=True)
def _dedup(order, start, cell, vol, n_cells):  # pragma: no cover - compiled
    """One row per distinct (address, cell), volumes summed; rows grouped by address."""
    n = order.size
    stamp = np.full(n_cells, -1, np.int64)
    slot = np.empty(n_cells, np.int64)
    rep = np.empty(n, np.int64)  # a row of the original input for each output row
    out_cell = np.empty(n, np.int64)
    out_vol = np.empty(n, np.uint64)
    m = 0
    overflow = False
    for k in range(start.size - 1):
        for t in range(start[k], start[k + 1]):
            i = order[t]
            c = cell[i]
            if stamp[c] != k:
                stamp[c] = k
                slot[c] = m
                rep[m] = i
                out_cell[m] = c
                out_vol[m] = vol[i]
                m += 1
            else:
                j = slot[c]
                a = out_vol[j] + vol[i]
                if a < out_vol[j]:
                    overflow = True
                out_vol[j] = a
    return rep[:m], out_cell[:m], out_vol[:m], overflow


def dedup_per_ip(
    hi: np.ndarray, lo: np.ndarray, cell: np.ndarray, vol: np.ndarray, n_cells: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (address, cell) rows with summed volume: (row of a representative, cell, vol).

    ``cell`` must be a dense index below ``n_cells``. Output rows are grouped by address in
    first-seen order, cells in first-seen order within an address (deterministic).
    """
    order, start = group_by_ip(hi, lo)
    rep, out_cell, out_vol, overflow = _dedup(
        order, start, np.ascontiguousarray(cell, np.int64), np.ascontiguousarray(vol, np.uint64),
        int(n_cells),
    )  # fmt: skip
    if overflow:
        raise CounterOverflow("a uint64 sum of bytes overflowed")
    return rep, out_cell, out_vol


@numba.njit(nogil=True, cache=True)
def _partition(hi, lo, parts, v6_shift):  # pragma: no cover - compiled
    """Partition of each address: by the whole IPv4 address, by the top bits of IPv6.

    IPv6 addresses that share their upper (64 - v6_shift) bits (a /64 by default) land in
    the same partition, so distinct prefixes are counted exactly too.
    """
    p = np.uint64(parts)
    out = np.empty(hi.size, np.int32)
    for i in range(hi.size):
        h = hi[i]
        lw = lo[i]
        if _v4_mapped(h, lw):
            out[i] = np.int32(ip_hash(h, lw) % p)
        else:
            out[i] = np.int32(mix64(h >> np.uint64(v6_shift)) % p)
    return out


def partition_of(hi: np.ndarray, lo: np.ndarray, parts: int, v6_prefix: int = 64) -> np.ndarray:
    """Partition id (0..parts-1) of each address; IPv6 by its /``v6_prefix``."""
    if not 1 <= v6_prefix <= 64:
        raise ValueError("v6_prefix must be between 1 and 64")
    return _partition(
        np.ascontiguousarray(hi, np.uint64), np.ascontiguousarray(lo, np.uint64), int(parts),
        np.uint64(64 - v6_prefix),
    )  # fmt: skip


#: most slots of the map step's dedup table (2^16 x 16 bytes = 1 MiB, half an L2 cache) ...
CACHE_BITS = 16
#: ... and how many it starts with (64 KiB), doubled while one bucket's pairs overfill it
CACHE_START_BITS = 12
#: most (bucket, dimensions) slots a map step sums into densely; wider spans hash their keys
DENSE_CELLS_MAX = 1 << 20
#: folding is sampled: a probe of every row of a sample this long (2^14 rows) ...
FOLD_SAMPLE = 1 << 14
#: ... that folded fewer repeats than this (1 in 8) means the next FOLD_SKIP rows go out
#: unprobed: a probe costs about 9 ns a record, and a reducer's extra row less than a probe
#: saves unless an eighth or more of the rows fold (world workload: 3-8% of rows fold, the
#: heavy-tailed one about half; see bench/RESULTS.md, fifth round)
FOLD_MIN = FOLD_SAMPLE // 8
#: rows passed on unprobed after a sample that did not fold enough (then another sample)
FOLD_SKIP = 1 << 17
#: rows ahead whose dedup slot map_rows prefetches (16 and 32 measured the same)
FOLD_PREFETCH = 16
#: a slot's second word: generation << _GEN_SHIFT | output row + 1 (rows below 2^36)
_GEN_SHIFT = 36
_GEN_MAX = (1 << (64 - _GEN_SHIFT)) - 1
_ROW_MASK = np.uint64((1 << _GEN_SHIFT) - 1)
#: an IPv6 pair's tag has its top bit set; an IPv4 pair's (cell id << 32 | address) not
_TAG6 = np.uint64(1 << 63)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
#: cell ids below this pack with an IPv4 address into a tag
_V4_CELLS = 1 << 31


@numba.njit(inline="always", nogil=True, cache=True)
def _pair_tag(c, h, lw, a_hash, v4_cells):  # pragma: no cover - compiled
    """(tag, slot hash) of pair (cell id ``c``, address ``h``, ``lw``; ``a_hash`` its address
    hash): an IPv4 address and a cell id below ``v4_cells`` (at most 2^31) pack into the tag
    exactly; any other pair's tag is a hash with the top bit set, so a slot whose tag matches
    holds that pair only once its row's inputs match too."""
    hv = a_hash ^ (np.uint64(c) * _GOLD)
    if c < v4_cells and _v4_mapped(h, lw):
        return (np.uint64(c) << np.uint64(32)) | (lw & np.uint64(0xFFFFFFFF)), hv
    return hv | _TAG6, hv


@numba.njit(inline="always", nogil=True, cache=True)
def _probe(table, tag, hv, i, key, hi, lo, rep, mask, gen):  # pragma: no cover - compiled
    """(slot, found): where the pair of input row ``i`` (tag ``tag``, slot hash ``hv``; see
    :func:`_pair_tag`) is in the dedup table's current generation ``gen``, or the free slot
    where it goes (linear probing: the table is never more than half full). A slot is two
    words: the tag, and generation << 36 | output row + 1; an IPv6 tag that matches is
    checked against the row it stands for (``rep``: output row -> input row)."""
    s = hv & mask
    while True:
        t = table[s, 1]
        if (t >> np.uint64(_GEN_SHIFT)) != gen:
            return s, False
        if table[s, 0] == tag:
            if tag < _TAG6:
                return s, True
            r = rep[np.int64(t & _ROW_MASK) - 1]
            if key[r] == key[i] and hi[r] == hi[i] and lo[r] == lo[i]:
                return s, True
        s = (s + np.uint64(1)) & mask


@numba.njit(nogil=True, cache=True)
def _next_generation(
    table, cur, gen, gen_max, grow, cid, key, hi, lo, rep, v4_cells
):  # pragma: no cover - compiled
    """(generation, live pairs) after generation ``gen`` of the dedup table's first 2^``cur``
    slots: a new one, empty; with ``grow``, in 2^(``cur`` + 1) slots holding the same pairs
    (each one's tag and slot computed again from its row: ``rep`` maps output rows to the
    input rows ``cid``, ``key``, ``hi``, ``lo``). Past ``gen_max`` the table is wiped and
    generations start again from 1."""
    old = table[: (1 << cur) if grow else 0].copy()
    nxt = gen + np.uint64(1)
    if nxt > gen_max:
        table[:, 1] = 0
        nxt = np.uint64(1)
    mask = np.uint64((2 << cur) - 1)
    live = 0
    for z in range(old.shape[0]):
        t = old[z, 1]
        if (t >> np.uint64(_GEN_SHIFT)) == gen:
            i = rep[np.int64(t & _ROW_MASK) - 1]
            h, lw = hi[i], lo[i]
            tag, hv = _pair_tag(cid[i], h, lw, ip_hash(h, lw), v4_cells)
            s, _ = _probe(table, tag, hv, i, key, hi, lo, rep, mask, nxt)
            table[s, 0] = tag
            table[s, 1] = (nxt << np.uint64(_GEN_SHIFT)) | (t & _ROW_MASK)
            live += 1
    return nxt, live


@numba.njit(nogil=True, cache=True)
def _dense_cell_ids(key, dim_index, dim_bits, b0, n_dims):  # pragma: no cover - compiled
    mask = (np.int64(1) << dim_bits) - 1
    ids = np.empty(key.size, np.int64)
    bad = False
    for i in range(key.size):
        d = dim_index[key[i] & mask]
        if d < 0:
            bad = True
        ids[i] = ((key[i] >> dim_bits) - b0) * n_dims + d
    return ids, bad


@numba.njit(nogil=True, cache=True)
def _split_sum(
    cid,
    n_ids,
    key,
    hi,
    lo,
    vol,
    pk,
    parts,
    v6_shift,
    bits,
    dim_bits,
    gen_max,
    sample,
    skip,
    fold_min,
    v4_cells,
):  # pragma: no cover
    """Per-id sums and partition-ordered rows, repeats folded (see :func:`map_rows`).

    The dedup table is open-addressed (linear probing) and emptied in O(1) by starting a
    new generation: a slot whose generation is not the current one is free. A generation
    ends when the table is half full (so a probe always finds a free slot), or when the
    bucket changes with the table over a quarter full: archives hold records in time order,
    and a (cell, address) pair repeats only within its cell's bucket, so a table that holds
    a whole bucket folds every repeat of it. A table that fills up within one bucket doubles,
    up to 2^``bits`` slots, keeping the pairs it holds; it starts small, so that a bucket's
    pairs stay in L1/L2 where they can. After generation ``gen_max`` (:data:`_GEN_MAX`;
    tests pass less) the table is wiped once.

    A slot is 16 bytes, not the 32 that the cell key, both address words and the row
    took: an IPv4 pair (``cid`` below ``v4_cells``) packs into one word exactly, any other
    pair keeps a 63-bit hash there and is checked against its output row's input row where
    that matches (:func:`_probe`). Half the bytes a probe touches: on the 10^9 archive's
    folding tasks 36-38 -> 31-32 ns a record (bench/RESULTS.md, eleventh round).

    Where folding does not pay it is left out: after every ``sample`` probed rows that
    folded fewer than ``fold_min`` repeats, the next ``skip`` rows go out one row each
    without a probe (then a new generation, and another sample). ``skip`` 0: always probe.
    """
    n = cid.size
    s_vol = np.zeros(n_ids, np.uint64)
    s_pk = np.zeros(n_ids, np.uint64)
    s_fl = np.zeros(n_ids, np.uint64)
    # every slot it may grow to, allocated once (pages never used are never touched)
    table = np.zeros((1 << bits, 2), np.uint64)  # tag, generation << 36 | row + 1
    cur = min(bits, CACHE_START_BITS)
    mask = np.uint64((1 << cur) - 1)
    half = 1 << (cur - 1)
    quarter = half >> 1
    gen = np.uint64(1)
    live = 0
    last_bucket = np.int64(0)
    rep = np.empty(n, np.int64)  # the input row each output row came from first
    acc = np.empty(n, np.uint64)  # its summed volume
    pid = np.empty(n, np.int32)
    bounds = np.zeros(parts + 1, np.int64)
    p = np.uint64(parts)
    m = 0
    overflow = False
    probed = 0  # rows probed in this sample
    folded = 0  # of which repeats
    skipping = 0  # rows left to pass on without a probe
    # the address hashes of the next FOLD_PREFETCH rows, computed as each row's slot is
    # prefetched (a power of two of them)
    ahead = np.empty(FOLD_PREFETCH, np.uint64)
    for i in range(min(FOLD_PREFETCH, n)):
        ahead[i] = ip_hash(hi[i], lo[i])
    flat = table.reshape(-1)  # a view, for the prefetch
    for i in range(n):
        c = cid[i]
        v = vol[i]
        a = s_vol[c] + v
        b = s_pk[c] + pk[i]
        if a < s_vol[c] or b < s_pk[c]:
            overflow = True
        s_vol[c] = a
        s_pk[c] = b
        s_fl[c] += np.uint64(1)
        kk = key[i]
        h = hi[i]
        lw = lo[i]
        a_hash = ahead[i & (FOLD_PREFETCH - 1)]
        f = i + FOLD_PREFETCH
        if f < n:
            # the probe misses L1 (and L2 at 2^16 slots) and its loop's exits mispredict, so
            # a miss is not hidden by the next rows' work: prefetching FOLD_PREFETCH rows
            # ahead takes folding tasks' map_rows from 31-37 to 29-31 ns a record
            hf = ip_hash(hi[f], lo[f])
            ahead[i & (FOLD_PREFETCH - 1)] = hf
            if skipping == 0:
                _prefetch(flat, ((hf ^ (np.uint64(cid[f]) * _GOLD)) & mask) << np.uint64(1))
        if skipping > 0:
            skipping -= 1
            if skipping == 0:  # sample again from an empty table; ``cur > bits`` is a
                # run-time False (a literal one would compile _next_generation once more)
                gen, live = _next_generation(table, cur, gen, gen_max, cur > bits, cid, key, hi,
                                             lo, rep, v4_cells)  # fmt: skip
                last_bucket = kk >> dim_bits
        else:
            bucket = kk >> dim_bits
            new_bucket = bucket != last_bucket
            if new_bucket:
                last_bucket = bucket
            if live >= half or (new_bucket and live > quarter):
                # a new generation; where one bucket's pairs overfill the table, double it
                grow = not new_bucket and cur < bits
                gen, live = _next_generation(table, cur, gen, gen_max, grow, cid, key, hi, lo,
                                             rep, v4_cells)  # fmt: skip
                if grow:
                    cur += 1
                    mask = np.uint64((1 << cur) - 1)
                    half = 1 << (cur - 1)
                    quarter = half >> 1
            tag, hv = _pair_tag(c, h, lw, a_hash, v4_cells)
            s, found = _probe(table, tag, hv, i, key, hi, lo, rep, mask, gen)
            probed += 1
            if probed == sample:
                if skip > 0 and folded + found < fold_min:
                    skipping = skip
                probed = 0
                folded = 0
            if found:
                folded += 1
                j = np.int64(table[s, 1] & _ROW_MASK) - 1
                u = acc[j] + v
                if u < v:
                    overflow = True
                acc[j] = u
                continue
            table[s, 0] = tag
            table[s, 1] = (gen << np.uint64(_GEN_SHIFT)) | np.uint64(m + 1)
            live += 1
        rep[m] = i
        acc[m] = v
        if _v4_mapped(h, lw):
            part = np.int32(a_hash % p)
        else:
            part = np.int32(mix64(h >> v6_shift) % p)
        pid[m] = part
        bounds[part + 1] += 1
        m += 1
    for q in range(parts):
        bounds[q + 1] += bounds[q]
    pos = bounds[:-1].copy()
    o_cell = np.empty(m, np.int64)
    o_hi = np.empty(m, np.uint64)
    o_lo = np.empty(m, np.uint64)
    o_vol = np.empty(m, np.uint64)
    for j in range(m):
        t = pos[pid[j]]
        pos[pid[j]] = t + 1
        i = rep[j]
        o_cell[t] = key[i]
        o_hi[t] = hi[i]
        o_lo[t] = lo[i]
        o_vol[t] = acc[j]
    return s_vol, s_pk, s_fl, o_cell, o_hi, o_lo, o_vol, bounds, overflow


def map_rows(
    key: np.ndarray,
    hi: np.ndarray,
    lo: np.ndarray,
    vol: np.ndarray,
    pk: np.ndarray,
    dim_index: np.ndarray,
    dim_code: np.ndarray,
    dim_bits: int,
    parts: int,
    v6_prefix: int = 64,
    cache_bits: int | None = None,
    fold: tuple[int, int, int] | None = None,
) -> tuple[np.ndarray, ...]:
    """The map step's output from its records' cell keys, remote addresses and counters.

    Returns ``(cell_keys, cell_sums, cell, hi, lo, vol, bounds)``:

    - ``cell_keys`` and ``cell_sums``: each cell's volume, packets and flows (records), as
      ``dense_sums`` gives them. A cell key is ``bucket << dim_bits | dimension code``;
      ``dim_index`` numbers the dimension codes densely (``dim_code`` goes back), so where the
      task's buckets span few enough slots the sums go straight into a dense array and come
      out in key order; otherwise keys are hashed (``key_ids``) and come out first-seen.
    - ``(cell, hi, lo, vol)``: (cell, remote address) rows with summed volume, split by IP
      partition (``partition_of``): partition j is ``bounds[j]:bounds[j + 1]``, its rows in
      first-seen order (deterministic). Repeats of a pair fold into one row while the pair
      stays in a small hash table (at most 2^``cache_bits`` slots, default
      :data:`CACHE_BITS`), emptied when the bucket changes: archives hold records in time
      order, so it folds every repeat of a pair (which lies in one bucket) unless a bucket
      has more pairs than the table holds, and then most. A pair seen again after its table
      was emptied gives a second row; the reducer groups every row by address anyway, so such
      duplicates change nothing but the row count. Where few pairs repeat the probe costs
      more than the reducers' extra rows: ``fold`` = (sample, min, skip), by default
      (:data:`FOLD_SAMPLE`, :data:`FOLD_MIN`, :data:`FOLD_SKIP`): after a sample of
      ``sample`` rows with fewer than ``min`` repeats folded, the next ``skip`` rows go out
      one row each, unprobed (``skip`` 0: always probe). Which rows fold never changes the
      sums nor what the reducers count.

    Raises :class:`CounterOverflow` where a uint64 sum of bytes or packets overflows.
    """
    if not 1 <= v6_prefix <= 64:
        raise ValueError("v6_prefix must be between 1 and 64")
    cache_bits = CACHE_BITS if cache_bits is None else int(cache_bits)
    if not 1 <= cache_bits <= 30:
        raise ValueError("cache_bits must be between 1 and 30")
    sample, fold_min, skip = (FOLD_SAMPLE, FOLD_MIN, FOLD_SKIP) if fold is None else fold
    if sample < 1 or skip < 0:
        raise ValueError("fold needs a sample of at least 1 row and a skip of at least 0")
    key = np.ascontiguousarray(key, np.int64)
    if key.size >= 1 << _GEN_SHIFT:
        raise ValueError(f"at most 2^{_GEN_SHIFT} - 1 rows at once")
    n_dims = int(dim_code.size)
    dense = False
    if key.size:
        b0 = int(key.min()) >> dim_bits
        n_buckets = (int(key.max()) >> dim_bits) - b0 + 1
        dense = n_buckets * n_dims <= DENSE_CELLS_MAX
    if dense:
        cid, bad = _dense_cell_ids(key, np.ascontiguousarray(dim_index, np.int64), dim_bits, b0,
                                   n_dims)  # fmt: skip
        if bad:
            raise ValueError("a cell key has a dimension code outside dim_index")
        n_ids = n_buckets * n_dims
    else:
        cid, uniq = key_ids(key)
        n_ids = uniq.size
    s_vol, s_pk, s_fl, *rows, bounds, overflow = _split_sum(
        cid, int(n_ids), key, np.ascontiguousarray(hi, np.uint64),
        np.ascontiguousarray(lo, np.uint64), np.ascontiguousarray(vol, np.uint64),
        np.ascontiguousarray(pk, np.uint64), int(parts), np.uint64(64 - v6_prefix), cache_bits,
        np.int64(dim_bits), np.uint64(_GEN_MAX), np.int64(sample), np.int64(skip),
        np.int64(fold_min), np.int64(_V4_CELLS),
    )  # fmt: skip
    if overflow:
        raise CounterOverflow("a uint64 sum of bytes or packets overflowed")
    if dense:
        nz = np.flatnonzero(s_fl)
        cell_keys = ((b0 + nz // n_dims) << dim_bits) | np.asarray(dim_code, np.int64)[nz % n_dims]
        sums = np.stack([s_vol[nz], s_pk[nz], s_fl[nz]], axis=1)
    else:
        cell_keys, sums = uniq, np.stack([s_vol, s_pk, s_fl], axis=1)
    return cell_keys, sums, *rows, bounds


def stamp_counts(
    hi: np.ndarray | None,
    lo: np.ndarray | None,
    bucket: np.ndarray,
    dims: np.ndarray,
    pidx: np.ndarray,
    gmap: np.ndarray,
    segments: list[tuple[int, int, int, int]],
    n_total: int,
    v6: np.ndarray | None = None,
    ids: tuple[np.ndarray, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct addresses per key for several (period level, grouping) segments at once.

    ``bucket`` (dense, >= 0) and ``dims`` (dense) describe each row; ``pidx[level, bucket]``
    is the row's period index at a level and ``gmap[group, dims]`` its grouped dimension index.
    ``segments`` lists (level, group, offset, width): key ``pidx * width + gmap`` of that
    segment lives at ``offset + key`` of the returned counts (``n_total`` long). Rows may
    repeat (an address in a cell twice): each address counts once per key. The second array
    counts only rows flagged ``v6`` (the IPv6 share of each count).

    Each key is counted the first time an address reaches it while walking that address's
    rows: a "stamp" per key remembers the last address counted (see the module docstring).
    ``ids``: the rows' dense address ids (:func:`ip_ids`) where the caller knows them
    (``hi`` and ``lo`` may then be None: nothing here reads them but :func:`ip_ids`).
    """
    n = np.asarray(bucket).size
    no_v6 = v6 is None
    if no_v6:
        v6 = np.zeros(n, dtype=np.bool_)
    if hi is None or lo is None:
        if ids is None:
            raise ValueError("stamp_counts needs the addresses or their ids")
        hi = lo = np.empty(0, np.uint64)  # no top lists here: never read
    segs = [(*s[:4], -1) for s in segments]
    # no concentration keys: no top list reads an address's row, nor (key, ASN) volume its
    # ASN, so every address gets row 0 and ASN 0 as is (no pass, and no kernel to load, to
    # find each one's first row); each address's IPv6 flag is its rows' (``v6`` per row is
    # the same for all of an address's rows)
    addr = None
    if ids is not None:
        a_v6 = np.zeros(ids[1], np.bool_)
        if not no_v6:
            a_v6[np.asarray(ids[0])] = v6
        addr = (np.zeros(ids[1], np.int64), np.zeros(ids[1], np.int64), a_v6)
    out = walk(hi, lo, bucket, dims, v6, np.zeros(n, np.uint64), np.zeros(n, np.uint32), pidx,
               gmap, segs, n_total, 0, 1, 0, ids=ids, addr=addr)  # fmt: skip
    return out[0], out[1]


@numba.njit(nogil=True, cache=True)
def _key_ids(key):  # pragma: no cover - compiled
    n = key.size
    cap = 16
    while cap < 2 * n:
        cap <<= 1
    mask = np.uint64(cap - 1)
    slots = np.full(cap, -1, dtype=np.int64)
    uniq = np.empty(n, np.int64)
    ids = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        k = key[i]
        s = mix64(np.uint64(k)) & mask
        while True:
            j = slots[s]
            if j < 0:
                slots[s] = m
                uniq[m] = k
                ids[i] = m
                m += 1
                break
            if uniq[j] == k:
                ids[i] = j
                break
            s = (s + np.uint64(1)) & mask
    return ids, uniq[:m].copy()


def range_ids(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense id of each int64 key in ascending key order, and the distinct keys ascending.

    For keys in a narrow range (hour buckets of a partition: a few thousand values among
    millions of rows) a presence table over the range does it in a few linear passes; wide
    ranges fall back to hashing (:func:`key_ids`) and a sort of the distinct keys only.
    """
    key = np.ascontiguousarray(key, np.int64)
    if key.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    low = int(key.min())
    span = int(key.max()) - low + 1
    if span <= max(1 << 22, 2 * key.size):
        off = key - np.int64(low)
        present = np.zeros(span, np.bool_)
        present[off] = True
        uniq = np.flatnonzero(present).astype(np.int64)
        # each present key's rank written where it is into an uninitialised table, not a
        # running sum over the whole range (which read and wrote every slot: a world 1 M
        # reducer's 101 k cells among 1.27 M (bucket, dimensions) pairs, 5 -> 2 ms)
        rank = np.empty(span, np.int64)
        rank[uniq] = np.arange(uniq.size)
        return rank[off], uniq + np.int64(low)
    ids, uniq = key_ids(key)
    order = np.argsort(uniq, kind="stable")
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    return rank[ids], uniq[order]


#: most (bucket, dimensions) slots :func:`cell_ids` numbers through a dense table (or twice
#: the rows, where more); wider spans number buckets, then cells, by :func:`range_ids`
CELL_IDS_DENSE_MAX = 1 << 22


@numba.njit(nogil=True, cache=True)
def _cell_ids(cell, dim_index, dim_bits, low, n_dims, span):  # pragma: no cover - compiled
    """:func:`cell_ids` through a table of every (bucket, dimensions) slot from bucket
    ``low`` on (``span`` slots): one pass marks the rows' slots, one numbers the marked
    ones, one reads each row's number back. False (and nothing) if a row's dimension code
    is not in ``dim_index``."""
    n = cell.size
    mask = (np.int64(1) << dim_bits) - 1
    rank = np.zeros(span, np.int32)  # 1 where a row's cell is, then each one's number
    slot = np.empty(n, np.int32)
    dims = np.empty(n, np.int64)
    for i in range(n):
        c = cell[i]
        d = dim_index[c & mask]
        if d < 0:
            return dims[:0], dims[:0], dims[:0], dims[:0], False
        o = ((c >> dim_bits) - low) * n_dims + d
        slot[i] = o
        dims[i] = d
        rank[o] = 1
    m = 0
    for j in range(span):
        if rank[j]:
            m += 1
    c_bucket = np.empty(m, np.int64)
    c_dims = np.empty(m, np.int64)
    m = 0
    for j in range(span):
        if rank[j]:
            b = j // n_dims
            c_bucket[m] = low + b
            c_dims[m] = j - b * n_dims
            rank[j] = m
            m += 1
    cid = np.empty(n, np.int64)
    for i in range(n):
        cid[i] = rank[slot[i]]
    return cid, dims, c_bucket, c_dims, True


def cell_ids(
    cell: np.ndarray, dim_index: np.ndarray, dim_bits: int, n_dims: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dense id of each packed cell key (``bucket << dim_bits | dimension code``) in
    ascending key order, each row's dense dimension index (``dim_index[code]``, below
    ``n_dims``), and the distinct cells as (bucket, dense dimension index), ascending.

    A reducer's cells span a few thousand hour buckets: a table over every (bucket,
    dimensions) slot of that span numbers them in three passes of one kernel, where
    numbering buckets and then (bucket id, dimensions) pairs (:func:`range_ids` twice, and
    the NumPy passes between) cost a dozen passes over the rows. Wider spans do just that.
    Raises ValueError if a dimension code is not in ``dim_index``.
    """
    cell = np.ascontiguousarray(cell, np.int64)
    dim_index = np.ascontiguousarray(dim_index, np.int64)
    n_dims = int(n_dims)
    if cell.size:
        low = int(cell.min()) >> dim_bits
        span = ((int(cell.max()) >> dim_bits) - low + 1) * n_dims
        if span <= max(CELL_IDS_DENSE_MAX, 2 * cell.size) and span < 1 << 31:
            cid, dims, c_bucket, c_dims, ok = _cell_ids(
                cell, dim_index, np.int64(dim_bits), np.int64(low), np.int64(n_dims),
                np.int64(span),
            )  # fmt: skip
            if not ok:
                raise ValueError("a cell key has a dimension code outside dim_index")
            return cid, dims, c_bucket, c_dims
    dims = dim_index[cell & np.int64((1 << dim_bits) - 1)]
    if dims.size and int(dims.min()) < 0:
        raise ValueError("a cell key has a dimension code outside dim_index")
    bid, bkeys = range_ids(cell >> np.int64(dim_bits))
    cid, cells = range_ids(bid * np.int64(n_dims) + dims)
    return cid, dims, bkeys[cells // n_dims], cells % n_dims


def key_ids(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense id of each int64 key (first-seen order) and the distinct keys by id."""
    return _key_ids(np.ascontiguousarray(key, np.int64))


def v6_prefix_of(hi: np.ndarray, lo: np.ndarray, prefix: int) -> tuple[np.ndarray, np.ndarray]:
    """IPv6 addresses cut to their /``prefix`` (at most 64); IPv4-mapped ones unchanged."""
    if not 1 <= prefix <= 64:
        raise ValueError("the IPv6 uniqueness prefix must be between 1 and 64")
    hi = np.asarray(hi, np.uint64)
    lo = np.asarray(lo, np.uint64)
    v4 = (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
    mask = (
        np.uint64(0xFFFF_FFFF_FFFF_FFFF) << np.uint64(64 - prefix)
        if prefix < 64
        else np.uint64(0xFFFF_FFFF_FFFF_FFFF)
    )
    return np.where(v4, hi, hi & mask), np.where(v4, lo, np.uint64(0))


@numba.njit(inline="always", nogil=True, cache=True)
def _mul128(a, b):  # pragma: no cover - compiled
    """Full 128-bit product of two uint64 as (hi, lo)."""
    m32 = np.uint64(0xFFFFFFFF)
    a_lo = a & m32
    a_hi = a >> np.uint64(32)
    b_lo = b & m32
    b_hi = b >> np.uint64(32)
    p0 = a_lo * b_lo
    p1 = a_lo * b_hi
    p2 = a_hi * b_lo
    p3 = a_hi * b_hi
    mid = (p0 >> np.uint64(32)) + (p1 & m32) + (p2 & m32)
    lo = (p0 & m32) | (mid << np.uint64(32))
    hi = p3 + (p1 >> np.uint64(32)) + (p2 >> np.uint64(32)) + (mid >> np.uint64(32))
    return hi, lo


@numba.njit(nogil=True, cache=True)
def _ip_less(hi, lo, a, b):  # pragma: no cover - compiled
    return hi[a] < hi[b] or (hi[a] == hi[b] and lo[a] < lo[b])


@numba.njit(nogil=True, cache=True)
def _fold(run_start, r_p, r_d, r_v, up, n_up, d_all):  # pragma: no cover - compiled
    """Fold each address's rows to one per (coarser period ``up[r_p]``, dimensions), volumes
    summed: rows of address k are ``run_start[k]:run_start[k + 1]`` in and out."""
    n_runs = run_start.size - 1
    n = r_p.size
    stamp = np.full(n_up * d_all, -1, np.int64)
    slot = np.empty(n_up * d_all, np.int64)
    o_p = np.empty(n, np.int32)
    o_d = np.empty(n, np.int32)
    o_v = np.empty(n, np.uint64)
    o_start = np.zeros(n_runs + 1, np.int64)
    m = 0
    for k in range(n_runs):
        o_start[k] = m
        for t in range(run_start[k], run_start[k + 1]):
            per = up[r_p[t]]
            key = per * d_all + r_d[t]
            if stamp[key] != k:
                stamp[key] = k
                slot[key] = m
                o_p[m] = per
                o_d[m] = r_d[t]
                o_v[m] = r_v[t]
                m += 1
            else:
                o_v[slot[key]] += r_v[t]
    o_start[n_runs] = m
    # views, not copies: the level's rows are read by the walk and dropped with it, and the
    # copies were a pass of their own (a world 5 M reducer's folds about 25 -> 21.5 ms)
    return o_start, o_p[:m], o_d[:m], o_v[:m]


@numba.njit(nogil=True, cache=True)
def _first_rows(ids, n_ids, asn):  # pragma: no cover - compiled
    """Each address's first row (dense ``ids``) and the ASN of that row."""
    n = ids.size
    first = np.full(n_ids, -1, np.int64)
    for i in range(n):
        if first[ids[i]] < 0:
            first[ids[i]] = i
    id_asn = np.empty(n_ids, np.int64)
    for k in range(n_ids):
        id_asn[k] = asn[first[k]]
    return first, id_asn


def _by_asn(ids, n_ids, bucket, dims, v6, vol, asn, addr, tie=None):
    """Rows grouped by address (dense ``ids``), addresses in ASN order, then first-seen.

    Returns, per address in that order, its ASN, one of its input rows and whether it is
    IPv6 (``v6``: the same for all of an address's rows, so read at its first row); where
    its rows start; and the rows' columns. A counting sort scatters the columns straight
    to their places (:func:`_scatter_by_asn`): random writes, where gathering them through
    a row order read them at random. The ASN order is NumPy's stable sort, outside the
    kernels: numba's own sort would add about a second to the first compile after an
    install, for a sort of distinct addresses only. ``addr``: each address's first row and
    ASN (int64), where the caller has them (``asn`` is then not read), and optionally its
    IPv6 flag (bool; ``v6`` is then not read). ``tie``: addresses of one ASN in the order of
    these values (each in [0, n_ids)), then first-seen, instead of first-seen alone.
    """
    first, id_asn = _first_rows(ids, n_ids, asn) if addr is None else addr[:2]
    id_v6 = addr[2] if addr is not None and len(addr) > 2 else v6[first]
    by_asn = _asn_order(id_asn, tie)  # position -> address id
    id_v6 = np.ascontiguousarray(id_v6, np.bool_)
    shift = _scatter_shift(n_ids)
    return _scatter_by_asn(ids, first, id_asn, id_v6, by_asn, bucket, dims, vol, shift)


#: :func:`_scatter_by_asn`'s first pass writes to about 2^8 groups of addresses once a
#: reducer has more addresses than this ...
SCATTER_TWO_PASS_IDS = 1 << 12
SCATTER_GROUP_BITS = 8
#: ... and to about 2^5 below it: the 10^9-record build's reducers hold about 900 addresses
#: each (2.2 M rows), where one group (a copy, then a scatter to every address's write
#: heads) cost 12-13 ns a row and 2^5 groups 10 (bench/RESULTS.md, twelfth round)
SCATTER_FEW_GROUP_BITS = 5


def _scatter_shift(n_ids: int) -> int:
    """How many low bits of an address's ASN rank :func:`_scatter_by_asn`'s second pass
    orders by, so that the first pass writes to few groups (few write heads) and the second
    within a group of a few hundred addresses at most (a region that stays in cache)."""
    bits = max(0, (n_ids - 1).bit_length())
    if n_ids <= SCATTER_TWO_PASS_IDS:
        return max(1, bits - SCATTER_FEW_GROUP_BITS)
    return max(1, bits - SCATTER_GROUP_BITS)


def _asn_order(id_asn: np.ndarray, tie: np.ndarray | None = None) -> np.ndarray:
    """The address ids in ASN order, ties by id: NumPy's stable argsort of ``id_asn``;
    with ``tie`` (one value per address), ties by ``tie`` and then by id.

    ASNs are 32-bit, so (ASN, id) packs into one uint64 whose plain sort (vectorised in
    NumPy) gives that order: a world reducer's 52 k addresses 3.1 -> 0.3 ms.
    """
    if tie is not None:  # stable sorts compose: by (tie, id), then that order by ASN
        inner = _asn_order(np.asarray(tie, np.int64))
        return inner[_asn_order(np.asarray(id_asn)[inner])]
    n = id_asn.size
    if n >= 1 << 32 or (n and (id_asn.min() < 0 or id_asn.max() >= 1 << 32)):
        return np.argsort(id_asn, kind="stable")
    key = (id_asn.astype(np.uint64) << np.uint64(32)) | np.arange(n, dtype=np.uint64)
    key.sort()
    return (key & np.uint64(0xFFFF_FFFF)).astype(np.int64)


@numba.njit(nogil=True, cache=True)
def _scatter_by_asn(
    ids, first, id_asn, id_v6, by_asn, bucket, dims, vol, shift
):  # pragma: no cover
    """:func:`_by_asn` once the addresses' ASN order ``by_asn`` is known. Buckets and
    dimensions leave as int32 (dense indices, far below 2^31), as :func:`_fold` keeps them:
    half the bytes to scatter, fold and walk (a world 5 M reducer's levels 50 -> 42 ms).
    Whether an address is IPv6 is one flag per address (``id_v6``), not a column per row.

    The random writes are the cost (each column's write head at every address: 61 k
    addresses x 3 columns of a world 5 M reducer's cache lines), so the rows go first to
    the group of their rank's bits above the low ``shift`` ones (few write heads), with
    their rank, then within each group (a region that stays in cache) to their place: two
    cheap passes instead of one dear one. Both passes are stable, so any ``shift`` gives the
    same order (31: one group, a copy then the scatter).
    """
    n = ids.size
    n_ids = by_asn.size
    rank = np.empty(n_ids, np.int32)
    kk_asn = np.empty(n_ids, np.int64)
    kk_rep = np.empty(n_ids, np.int64)
    kk_six = np.empty(n_ids, np.bool_)
    for kk in range(n_ids):
        k = by_asn[kk]
        rank[k] = kk
        kk_asn[kk] = id_asn[k]
        kk_rep[kk] = first[k]
        kk_six[kk] = id_v6[k]
    rstart = np.zeros(n_ids + 1, np.int64)
    for i in range(n):
        rstart[rank[ids[i]] + 1] += 1
    for kk in range(n_ids):
        rstart[kk + 1] += rstart[kk]
    b_g = np.empty(n, np.int32)
    d_g = np.empty(n, np.int32)
    v_g = np.empty(n, np.uint64)
    # a group's rows lie where its addresses' rows will: from the start of its first one
    n_grp = ((n_ids - 1) >> shift) + 1
    gpos = np.empty(n_grp, np.int64)
    for g in range(n_grp):
        gpos[g] = rstart[g << shift]
    # a row's rank and bucket packed in one word: three write heads a group, not four
    # (a world 5 M reducer's scatter 13.5 -> 12.6 ms)
    t_rb = np.empty(n, np.int64)
    t_d = np.empty(n, np.int32)
    t_v = np.empty(n, np.uint64)
    low = np.int64(0xFFFF_FFFF)
    for i in range(n):
        kk = rank[ids[i]]
        g = kk >> shift
        t = gpos[g]
        gpos[g] = t + 1
        t_rb[t] = (np.int64(kk) << 32) | (np.int64(bucket[i]) & low)
        t_d[t] = dims[i]
        t_v[t] = vol[i]
    pos = rstart[:-1].copy()
    for u in range(n):
        x = t_rb[u]
        kk = x >> 32
        t = pos[kk]
        pos[kk] = t + 1
        b_g[t] = np.int32(x & low)
        d_g[t] = t_d[u]
        v_g[t] = t_v[u]
    return kk_asn, kk_rep, kk_six, rstart, b_g, d_g, v_g


def _levels(ids, n_ids, bucket, dims, v6, vol, asn, pidx, d_all, addr, tie=None):
    """The rows of every level, one array each, addresses in ASN order.

    Rollup levels nest (day in month in quarter in the whole range), so each level's rows fold
    into the next one's: one row per address, period of the level and dimensions (an address
    seen in many hours of a day walks the day level once, the month level once a month...).
    Level 0 is the rows themselves (period: the bucket). Rows of address ``kk`` (in ASN
    order) at level ``lv`` are ``f_start[lv, kk]:f_start[lv, kk + 1]`` of that level's
    arrays. ``addr`` and ``tie``: as in :func:`_by_asn`.
    """
    kk_asn, kk_rep, kk_six, rstart, *cols = _by_asn(
        ids, n_ids, bucket, dims, v6, vol, asn, addr, tie
    )
    n_lev = pidx.shape[0]
    starts = [rstart]
    levels = [cols]
    for lv in range(1, n_lev):
        if pidx.shape[1] == 0:  # no rows
            starts.append(rstart)
            levels.append(cols)
            continue
        up = np.zeros(int(pidx[lv - 1].max()) + 1, np.int64)
        up[pidx[lv - 1]] = pidx[lv]
        st, *folded = _fold(starts[-1], *levels[-1], up, int(pidx[lv].max()) + 1, int(d_all))
        starts.append(st)
        levels.append(folded)
    # one tuple per column, a level each (numba indexes a tuple of like arrays at run time):
    # no copy into one array, so a reducer holds each level's rows once
    f_start = np.stack(starts)
    f_cols = [tuple(lv[c] for lv in levels) for c in range(3)]
    return kk_asn, kk_rep, kk_six, f_start, *f_cols


#: most (period, dimensions) pairs of a level that the walk sums its lone rows into before it
#: spreads them over the level's grouping sets (:func:`_walk`); larger levels walk every key.
#: Their top lists take 160 bytes each: 2^18 of them (two years of days at the seed's 288
#: dimension combinations) are 40 MiB per reducer
FINE_KEYS_MAX = 1 << 18


@numba.njit(nogil=True, cache=True)
def _fine_keys(seg_level, seg_width, seg_keys, seg_coff, run_end, d_all):  # pragma: no cover
    """Which runs (by their first segment) sum their lone rows per (period, dimensions) key
    (see :func:`_walk`), how many such keys the largest of them needs, and how many of them
    with concentration: the one place that decides, so the walk's arrays fit its runs."""
    fine = np.zeros(seg_level.size, np.bool_)
    most = 0
    most_c = 0
    s = 0
    while s < seg_level.size:
        e = run_end[s]
        n_fine = (seg_keys[s] // seg_width[s]) * d_all
        if e - s > 1 and n_fine <= FINE_KEYS_MAX:
            fine[s] = True
            most = max(most, n_fine)
            if seg_coff[s] >= 0:
                most_c = max(most_c, n_fine)
        s = e
    return fine, most, most_c


@numba.njit(nogil=True, cache=True)
def _walk(kk_asn, kk_rep, kk_six, f_start, f_end, f_p, f_d, f_v, hi, lo, pidx, gmap,
          seg_level, seg_group, seg_off, seg_width, seg_coff, seg_keys, seg_addr, n_total,
          n_conc, k_top, asn_from, asn_to):  # fmt: skip
    """Distinct counts for every key and, for keys of concentration segments, squared
    volumes, top addresses and (for concentration keys in [asn_from, asn_to)) (key, ASN)
    volumes.

    A concentration segment with ``seg_addr`` 0 keeps the top volumes only: its lists hold
    the ``k_top`` largest volumes of its addresses (descending, 0 for an empty slot, an
    address of volume 0 never entering) and its ``top_r`` stays -1. Which of several
    addresses of one volume a list holds is then nobody's business: a day key's list is
    read for the sum of its volumes (the cube's ``top_bytes``) and nothing else, and the
    address order, its tie compares and its row shifts were half of the day level's cost.

    Level by level over the rows of that level (see :func:`_levels`), all its segments in
    one pass: a row is read once for the level's grouping sets, whose keys sit side by side
    (consecutive segments of one level whose keys follow each other form one run; the
    pipeline lays them out so). Addresses come in ASN order, so an ASN's volume per key
    gathers in a dense array and leaves once per (ASN, key); nothing else depends on the
    order of addresses.

    A row alone in its (address, period) (most rows of the day level: an address seen in
    one cell of the day) reaches each of its keys once, with its own volume, in every
    grouping set: such rows add up per (period, dimensions) first (count, squares, top list:
    a "fine" key), and the fine keys are spread over the run's grouping sets once, at its
    end, so a lone row costs one key instead of one per grouping set. The other rows gather
    their volume per key (a stamp per key remembers the last address counted) and conclude
    it once their address is done.
    """
    n_runs = kk_asn.size
    n_seg = seg_off.size
    d_all = gmap.shape[1]
    # runs of segments walked together: same level, keys (and concentration keys) adjacent
    run_end = np.empty(n_seg, np.int64)
    max_w = 0
    s = 0
    while s < n_seg:
        e = s + 1
        width = seg_keys[s]
        while (
            e < n_seg
            and seg_level[e] == seg_level[s]
            and seg_off[e] == seg_off[s] + width
            and (seg_coff[e] < 0) == (seg_coff[s] < 0)
            and (seg_coff[s] < 0 or seg_coff[e] == seg_coff[s] + width)
            and seg_addr[e] == seg_addr[s]
        ):
            width += seg_keys[e]
            e += 1
        run_end[s] = e
        max_w = max(max_w, width)
        s = e
    run_fine, n_fine, n_fine_c = _fine_keys(
        seg_level, seg_width, seg_keys, seg_coff, run_end, d_all
    )
    counts = np.zeros(n_total, np.int64)
    counts6 = np.zeros(n_total, np.int64)
    # per fine key: lone addresses, and those of them IPv6
    f_cnt = np.zeros(n_fine, np.int64)
    f_cnt6 = np.zeros(n_fine, np.int64)
    f_list = np.empty(n_fine, np.int64)
    # per concentration key, then per fine key (from n_conc on): the current address's
    # volume, the sum of squares (hi, lo), the volume a newcomer must reach to enter the top
    # list (its k-th best while it is full, else 0), and the top list
    n_c = n_conc + n_fine_c
    acc = np.zeros(n_c, np.uint64)
    sq_hi = np.zeros(n_c, np.uint64)
    sq_lo = np.zeros(n_c, np.uint64)
    thresh = np.zeros(n_c, np.uint64)
    top_v = np.zeros((n_c, k_top), np.uint64)
    top_r = np.full((n_c, k_top), -1, np.int64)
    # the current ASN's volume per key, and which keys it has touched
    a_acc = np.zeros(n_conc, np.uint64)
    a_mark = np.full(n_conc, -1, np.int64)
    a_list = np.empty(n_conc, np.int64)
    cap = 1 << 12
    a_key = np.empty(cap, np.int64)
    a_asn = np.empty(cap, np.uint32)
    a_vol = np.empty(cap, np.uint64)
    a_n = 0
    stamp = np.full(max_w, -1, np.int64)
    touched = np.empty(max_w + n_fine_c, np.int64)  # concentration keys of this address
    # per period (level 0 has the most): which address last had a row in it, and how many
    p_stamp = np.full(pidx.shape[1], -1, np.int64)
    p_rows = np.zeros(pidx.shape[1], np.int64)
    r_base = np.empty(n_seg, np.int64)  # a segment's first key within its run
    r_width = np.empty(n_seg, np.int64)
    r_grow = np.empty(n_seg, np.int64)
    r_asn = np.empty(n_seg, np.bool_)  # whether a segment has keys in [asn_from, asn_to)

    s = 0
    while s < n_seg:
        e = run_end[s]
        n_in = e - s
        width = 0
        co = seg_coff[s]
        any_asn = False  # whether the run gathers (key, ASN) volumes (one level of four does)
        for j in range(n_in):
            r_base[j] = width
            r_width[j] = seg_width[s + j]
            r_grow[j] = seg_group[s + j]
            r_asn[j] = co >= 0 and co + width < asn_to and co + width + seg_keys[s + j] > asn_from
            any_asn = any_asn or r_asn[j]
            width += seg_keys[s + j]
        lev = seg_level[s]
        off = seg_off[s]
        rstart = f_start[lev]
        rend = f_end[lev]
        l_p = f_p[lev]
        l_d = f_d[lev]
        l_v = f_v[lev]
        stamp[:width] = -1  # only the run's keys: coarse levels have few
        if n_in == 1 and co < 0 and r_width[0] == 1:
            # one grouping of one dimension value (the cells level: a key per cell), no
            # concentration: a row's key is its period, and counting is all there is. Its
            # own loop, without the general one's per-row grouping, fine-key and
            # concentration tests: a world 5 M reducer's cells level 13 -> 4 ms
            for kk in range(n_runs):
                six = kk_six[kk]
                for t in range(rstart[kk], rend[kk]):
                    p = l_p[t]
                    if stamp[p] != kk:
                        stamp[p] = kk
                        counts[off + p] += 1
                        if six:
                            counts6[off + p] += 1
            s = e
            continue
        p_stamp[:] = -1
        fine = run_fine[s]
        by_addr = seg_addr[s] != 0  # top lists of addresses, not of volumes alone
        # fine keys dimensions-major (dims * periods + period): an address's lone rows of
        # successive days in one cell type sit near one another in the fine keys' state
        # (counts, squares, top lists), where period-major put them a day's 288 keys apart
        # (a world 5 M reducer's day level about 43 -> 38 ms; bench/RESULTS.md, 13th round)
        n_per = seg_keys[s] // seg_width[s]
        n_fl = 0
        a_cur = np.int64(-1)
        n_list = 0
        for kk in range(n_runs + 1):
            # the ASN's keys leave when its last address is done
            if n_list and (kk == n_runs or kk_asn[kk] != a_cur):
                if a_n + n_list > cap:
                    while a_n + n_list > cap:
                        cap *= 2
                    g_key = np.empty(cap, np.int64)
                    g_asn = np.empty(cap, np.uint32)
                    g_vol = np.empty(cap, np.uint64)
                    # a loop, not slices: a slice copy makes numba compile its shape-check
                    # error message (seconds of a cold start)
                    for q in range(a_n):
                        g_key[q] = a_key[q]
                        g_asn[q] = a_asn[q]
                        g_vol[q] = a_vol[q]
                    a_key, a_asn, a_vol = g_key, g_asn, g_vol
                for q in range(n_list):
                    cidx = a_list[q]
                    a_key[a_n] = cidx
                    a_asn[a_n] = np.uint32(a_cur)
                    a_vol[a_n] = a_acc[cidx]
                    a_acc[cidx] = 0
                    a_mark[cidx] = -1
                    a_n += 1
                n_list = 0
            if kk == n_runs:
                break
            a_cur = kk_asn[kk]
            r0 = rstart[kk]
            r1 = rend[kk]
            if fine and r1 - r0 > 1:  # how many of the address's rows each period has
                for t in range(r0, r1):
                    p = l_p[t]
                    if p_stamp[p] != kk:
                        p_stamp[p] = kk
                        p_rows[p] = 1
                    else:
                        p_rows[p] += 1
            nt = 0
            six = kk_six[kk]
            for t in range(r0, r1):
                p = l_p[t]
                dd = l_d[t]
                vt = l_v[t]
                if fine and (r1 - r0 == 1 or p_rows[p] == 1):
                    # the address's only row in this period: no other row of it reaches
                    # these keys (they hold the period), so they count it once, with this
                    # row's volume: gathered on the fine key (dimensions, period)
                    f = dd * n_per + p
                    if f_cnt[f] == 0:
                        f_list[n_fl] = f
                        n_fl += 1
                    f_cnt[f] += 1
                    if six:
                        f_cnt6[f] += 1
                    if co < 0:
                        continue
                    touched[nt] = n_conc + f
                    nt += 1
                    acc[n_conc + f] = vt
                    if not any_asn:
                        continue
                    for j in range(n_in):  # its ASN's volume, on the keys that gather it
                        if r_asn[j]:
                            cidx = co + r_base[j] + p * r_width[j] + gmap[r_grow[j], dd]
                            if asn_from <= cidx < asn_to:
                                if a_mark[cidx] < 0:
                                    a_mark[cidx] = 1
                                    a_list[n_list] = cidx
                                    n_list += 1
                                a_acc[cidx] += vt
                    continue
                for j in range(n_in):
                    key = r_base[j] + p * r_width[j] + gmap[r_grow[j], dd]
                    if stamp[key] != kk:
                        stamp[key] = kk
                        counts[off + key] += 1
                        if six:
                            counts6[off + key] += 1
                        if co >= 0:
                            touched[nt] = co + key
                            nt += 1
                    if co >= 0:
                        acc[co + key] += vt
            # the address's volume on each key it reached (a fine key: its lone row's)
            rep = kk_rep[kk]
            for q in range(nt):
                cidx = touched[q]
                v = acc[cidx]
                acc[cidx] = 0
                ph, pl = _mul128(v, v)
                new_lo = sq_lo[cidx] + pl
                sq_hi[cidx] += ph + (np.uint64(1) if new_lo < pl else np.uint64(0))
                sq_lo[cidx] = new_lo
                # the key's top list: volume descending, then address ascending. Its place
                # is the number of entries better than it, and entries after it move down
                # by a select per slot: no loop that stops at a data-dependent place, whose
                # mispredicted exits cost more than the compares (most day-level lists never
                # fill, so most offers insert: 54 -> 47 ms for a world 5 M reducer's day
                # level). Empty slots (volume 0, row -1) are never better
                # Ties (an entry of the same volume) are rare: the count of larger volumes
                # and of equal ones first, in a loop without a branch, then the equal ones'
                # addresses only where there are any (a world 5 M reducer's main walk
                # 77 -> 74.5 ms)
                if not by_addr:
                    # volumes alone: the list's last slot is its threshold (0 while it is
                    # not full), and a volume goes after the equal ones
                    if v > top_v[cidx, k_top - 1]:
                        pos = 0
                        for z in range(k_top):
                            pos += np.int64(top_v[cidx, z] >= v)
                        for z in range(k_top - 1, 0, -1):
                            top_v[cidx, z] = top_v[cidx, z - 1] if z > pos else top_v[cidx, z]
                        top_v[cidx, pos] = v
                elif v >= thresh[cidx]:
                    pos = 0
                    eq = 0
                    for z in range(k_top):
                        tv = top_v[cidx, z]
                        pos += np.int64(tv > v)
                        eq += np.int64(tv == v)
                    if eq:
                        for z in range(k_top):
                            r = top_r[cidx, z]
                            if top_v[cidx, z] == v and r >= 0 and _ip_less(hi, lo, r, rep):
                                pos += 1
                    if pos < k_top:
                        for z in range(k_top - 1, 0, -1):
                            mv = z > pos
                            top_v[cidx, z] = top_v[cidx, z - 1] if mv else top_v[cidx, z]
                            top_r[cidx, z] = top_r[cidx, z - 1] if mv else top_r[cidx, z]
                        top_v[cidx, pos] = v
                        top_r[cidx, pos] = rep
                        if top_r[cidx, k_top - 1] >= 0:
                            thresh[cidx] = top_v[cidx, k_top - 1]
                if asn_from <= cidx < asn_to:
                    if a_mark[cidx] < 0:
                        a_mark[cidx] = 1
                        a_list[n_list] = cidx
                        n_list += 1
                    a_acc[cidx] += v
        # the fine keys, spread over the run's grouping sets (and cleared for the next run):
        # counts and squares add up, and a lone address sits in one fine key of a key, so
        # the key's best lone addresses are among the best of its fine keys
        for q in range(n_fl):
            f = f_list[q]
            dd = f // n_per
            p = f - dd * n_per
            fc = n_conc + f
            for j in range(n_in):
                key = r_base[j] + p * r_width[j] + gmap[r_grow[j], dd]
                counts[off + key] += f_cnt[f]
                counts6[off + key] += f_cnt6[f]
                if co >= 0 and by_addr:
                    _spread_top(sq_hi, sq_lo, thresh, top_v, top_r, co + key, fc, hi, lo)
                elif co >= 0:
                    _spread_volumes(sq_hi, sq_lo, top_v, co + key, fc)
            f_cnt[f] = 0
            f_cnt6[f] = 0
            if co >= 0:
                sq_hi[fc] = 0
                sq_lo[fc] = 0
                thresh[fc] = 0
                for z in range(k_top):
                    top_v[fc, z] = 0
                    top_r[fc, z] = -1
        s = e
    # views, not copies: the fine keys' tail past n_conc stays allocated with them, where
    # copying the concentration keys' state (12 MB for a world reducer, most keys empty) cost
    # a pass of its own; the caller reads only the keys it keeps
    return (counts, counts6, sq_hi[:n_conc], sq_lo[:n_conc], top_v[:n_conc], top_r[:n_conc],
            a_key[:a_n], a_asn[:a_n], a_vol[:a_n])  # fmt: skip


@numba.njit(inline="always", nogil=True, cache=True)
def _add_squares(sq_hi, sq_lo, cidx, fc):  # pragma: no cover - compiled
    """Key ``fc``'s sum of squares (128 bits as hi, lo words) added to key ``cidx``'s."""
    new_lo = sq_lo[cidx] + sq_lo[fc]
    sq_hi[cidx] += sq_hi[fc] + (np.uint64(1) if new_lo < sq_lo[fc] else np.uint64(0))
    sq_lo[cidx] = new_lo


@numba.njit(nogil=True, cache=True)
def _spread_top(sq_hi, sq_lo, thresh, top_v, top_r, cidx, fc, hi, lo):  # pragma: no cover
    """Fold fine key ``fc``'s sum of squares and top list into key ``cidx``'s (a call per
    (fine key, grouping set): few, unlike the walk's per-address offers, which stay inline
    in :func:`_walk`, since a call that passes arrays costs more than the work here)."""
    _add_squares(sq_hi, sq_lo, cidx, fc)
    k_top = top_v.shape[1]
    for y in range(k_top):
        rep = top_r[fc, y]
        v = top_v[fc, y]
        if rep < 0 or v < thresh[cidx]:
            break  # the list is volume descending: nothing after it enters either
        pos = k_top
        while pos > 0:
            r = top_r[cidx, pos - 1]
            if r >= 0 and (
                top_v[cidx, pos - 1] > v or (top_v[cidx, pos - 1] == v and _ip_less(hi, lo, r, rep))
            ):
                break
            pos -= 1
        if pos < k_top:
            for z in range(k_top - 1, pos, -1):
                top_v[cidx, z] = top_v[cidx, z - 1]
                top_r[cidx, z] = top_r[cidx, z - 1]
            top_v[cidx, pos] = v
            top_r[cidx, pos] = rep
            if top_r[cidx, k_top - 1] >= 0:
                thresh[cidx] = top_v[cidx, k_top - 1]


@numba.njit(nogil=True, cache=True)
def _spread_volumes(sq_hi, sq_lo, top_v, cidx, fc):  # pragma: no cover - compiled
    """:func:`_spread_top` for a list of volumes alone (``seg_addr`` 0 in :func:`_walk`):
    fine key ``fc``'s squares and volumes into key ``cidx``'s."""
    _add_squares(sq_hi, sq_lo, cidx, fc)
    k_top = top_v.shape[1]
    for y in range(k_top):
        v = top_v[fc, y]
        if v <= top_v[cidx, k_top - 1]:
            break  # descending: nothing after it enters either (nor an empty slot's 0)
        pos = k_top - 1
        while pos > 0 and top_v[cidx, pos - 1] < v:
            top_v[cidx, pos] = top_v[cidx, pos - 1]
            pos -= 1
        top_v[cidx, pos] = v


def walk(
    hi: np.ndarray,
    lo: np.ndarray,
    bucket: np.ndarray,
    dims: np.ndarray,
    v6: np.ndarray | None,
    vol: np.ndarray,
    asn: np.ndarray | None,
    pidx: np.ndarray,
    gmap: np.ndarray,
    segments: list[tuple[int, int, int, int, int]],
    n_total: int,
    n_conc: int,
    k_top: int,
    asn_from: int,
    asn_to: int | None = None,
    ids: tuple[np.ndarray, int] | None = None,
    addr: tuple[np.ndarray, ...] | None = None,
    keep_level: int | None = None,
    groups: np.ndarray | None = None,
    volumes_only: Collection[int] = (),
) -> tuple[np.ndarray, ...]:
    """Distinct counts and concentration for one IP partition, in one walk.

    ``segments`` lists (level, group, offset, width, conc_offset) as in :func:`stamp_counts`
    plus where the segment's keys sit in the concentration arrays (-1: no concentration).
    Returns counts and their IPv6 share (``n_total`` long); per concentration key the sum of
    squared per-address volumes as (hi, lo) words and the ``k_top`` heaviest addresses (volume
    descending, address ascending, as input row numbers; -1 where fewer); and, for
    concentration keys in [``asn_from``, ``asn_to``) (``asn_to`` None: to the last), volume
    per (key, ASN). All of it adds up or merges exactly across IP partitions. ``ids``: the
    rows' :func:`ip_ids`, where the caller has them already; ``addr``: with them, each
    address's first row (:func:`ip_ids_first`) and its ASN, so that ``asn`` (per row) may
    be None: the walk needs one ASN per address, and a caller that looks ASNs up per
    address need not spread them over the rows for the walk to read them back. Likewise
    ``v6`` (per row, the same for all of an address's rows: it marks IPv6 addresses) may
    be None where ``addr`` has a third array, each address's flag.

    ``keep_level``: also return, as a tenth item, that level's rows as the walk had them
    (:func:`_levels`): ``(rep, start, period, dims)``, the rows of the k-th address (in the
    walk's order; ``rep[k]`` one of its input rows) at ``start[k]:start[k + 1]``, one row
    per (address, period of the level, dimensions). A caller that needs the distinct
    (address, period, dimensions) triples (the reducers' sketches) reads them there
    instead of folding the rows again.

    ``groups`` (with ``ids``): a group label per address (>= 0, or -1 for none; the
    reducers' IPv6 prefixes of several addresses). Also return, as the last item, the
    number of distinct groups per key (``n_total`` long): what :func:`stamp_counts` gives
    with the group labels as ids over the grouped addresses' rows, but from this walk's
    levels, not a scatter and folds of those rows of its own. Within an ASN the walk then
    orders a group's addresses together (at its first address), so each group is one run of
    addresses and a second walk over those runs counts it once per key; where a group's
    addresses have different ASNs (a prefix split between networks) its runs are not one,
    and the last item is None (the caller counts the groups apart).

    ``volumes_only``: levels whose top lists keep the volumes alone (the ``k_top`` largest
    per key, descending, 0 where fewer; ``top_r`` -1): for a reducer's rollups whose top
    addresses nobody reads, only the sum of their volumes (see :func:`_walk`).
    """
    asn_to = int(n_conc) if asn_to is None else asn_to
    if addr is not None:
        if ids is None:
            raise ValueError("walk's addr needs the ids it numbers")
        a_v6 = (np.ascontiguousarray(addr[2], np.bool_),) if len(addr) > 2 else ()
        addr = (
            np.ascontiguousarray(addr[0], np.int64), np.ascontiguousarray(addr[1], np.int64),
            *a_v6,
        )  # fmt: skip
        asn = np.empty(0, np.uint32)  # not read
        if a_v6:
            v6 = np.empty(0, np.bool_)  # not read
    elif asn is None:
        raise ValueError("walk needs the rows' ASNs or addr")
    if v6 is None:
        raise ValueError("walk needs the rows' IPv6 flags or addr's")
    tie = None
    if groups is not None:
        if ids is None:
            raise ValueError("walk's groups need the ids they label")
        groups = np.ascontiguousarray(groups, np.int64)
        tie = _group_ties(groups)
    ids, n_ids = ip_ids(hi, lo) if ids is None else ids
    seg = np.asarray(segments, dtype=np.int64).reshape(-1, 5)
    pidx = np.ascontiguousarray(pidx, np.int64)
    gmap = np.ascontiguousarray(gmap, np.int64)
    levels = _levels(
        ids, n_ids, np.ascontiguousarray(bucket, np.int64),
        np.ascontiguousarray(dims, np.int64), np.ascontiguousarray(v6, np.bool_),
        np.ascontiguousarray(vol, np.uint64), np.ascontiguousarray(asn, np.uint32), pidx,
        gmap.shape[1], addr, tie,
    )  # fmt: skip
    # keys of each segment: its level's periods times its grouping's width (NumPy's max
    # here, not numba's in the kernel: one compile fewer on the first run after an install)
    periods = pidx.max(axis=1) + 1 if pidx.shape[1] else np.zeros(pidx.shape[0], np.int64)
    seg_keys = np.ascontiguousarray(periods[seg[:, 0]] * seg[:, 3], np.int64)
    copies = _copied_segments(seg, pidx, asn_from, asn_to, volumes_only)
    walked = np.ones(len(seg), bool)
    walked[[c for c, _ in copies]] = False
    seg_addr = (~np.isin(seg[walked, 0], np.asarray(list(volumes_only), np.int64))).astype(np.int64)
    f_start = levels[3]
    out = _walk(
        *levels[:3],
        np.ascontiguousarray(f_start[:, :-1]),
        np.ascontiguousarray(f_start[:, 1:]),
        *levels[4:],
        np.ascontiguousarray(hi, np.uint64),
        np.ascontiguousarray(lo, np.uint64),
        pidx,
        gmap,
        *(seg[walked, c].copy() for c in range(5)),
        seg_keys[walked],
        seg_addr,
        int(n_total),
        int(n_conc),
        int(k_top),
        int(asn_from),
        int(asn_to),
    )
    kept = ()
    if keep_level is not None:
        lv = int(keep_level)
        kept = ((levels[1], levels[3][lv], levels[4][lv], levels[5][lv]),)
    if groups is not None:
        g_counts = _group_walk(levels, ids[levels[1]], groups, hi, lo, pidx, gmap, seg,
                               seg_keys, walked, n_total)  # fmt: skip
        if g_counts is not None:
            _copy_counts(g_counts, copies, seg, seg_keys)
        kept = (*kept, g_counts)
    if not copies:
        return (*out, *kept)
    counts, counts6, sq_hi, sq_lo, top_v, top_r, a_key, a_asn, a_vol = out
    root = _copy_counts(counts, copies, seg, seg_keys, counts6)
    asn_ranges: dict[tuple[int, int], list[int]] = {}  # (level, shift) -> copies with ASNs
    for c, _src in copies:
        r = root[c]
        n = int(seg_keys[c])
        if seg[c, 4] >= 0:
            to, fr = slice(seg[c, 4], seg[c, 4] + n), slice(seg[r, 4], seg[r, 4] + n)
            sq_hi[to], sq_lo[to], top_v[to], top_r[to] = sq_hi[fr], sq_lo[fr], top_v[fr], top_r[fr]
            if asn_from <= seg[c, 4] < asn_to:
                asn_ranges.setdefault((int(seg[c, 0]), int(seg[c, 4] - seg[r, 4])), []).append(r)
    extra = [(a_key, a_asn, a_vol)]
    for (_lev, shift), roots in asn_ranges.items():
        # one pass over the (key, ASN) volumes per copied level: its sources' keys are
        # adjacent, so one range finds them, unless it would take in other segments' keys
        spans = sorted((int(seg[r, 4]), int(seg[r, 4] + seg_keys[r])) for r in roots)
        merged = [list(spans[0])]
        for lo_k, hi_k in spans[1:]:
            if lo_k == merged[-1][1]:
                merged[-1][1] = hi_k
            else:
                merged.append([lo_k, hi_k])
        for lo_k, hi_k in merged:
            sel = np.flatnonzero((a_key >= lo_k) & (a_key < hi_k))
            extra.append((a_key[sel] + shift, a_asn[sel], a_vol[sel]))
    a_key, a_asn, a_vol = (np.concatenate([e[i] for e in extra]) for i in range(3))
    return counts, counts6, sq_hi, sq_lo, top_v, top_r, a_key, a_asn, a_vol, *kept


def _copy_counts(
    counts: np.ndarray,
    copies: list[tuple[int, int]],
    seg: np.ndarray,
    seg_keys: np.ndarray,
    counts6: np.ndarray | None = None,
) -> dict[int, int]:
    """The copied segments' counts (and IPv6 shares) from their walked sources
    (:func:`_copied_segments`), in place; returns each copy's walked segment."""
    root: dict[int, int] = {}
    for c, src in copies:  # in segment order: a copy's source is filled before it is read
        root[c] = r = root.get(src, src)
        n = int(seg_keys[c])
        to, fr = slice(seg[c, 2], seg[c, 2] + n), slice(seg[r, 2], seg[r, 2] + n)
        counts[to] = counts[fr]
        if counts6 is not None:
            counts6[to] = counts6[fr]
    return root


def _group_ties(groups: np.ndarray) -> np.ndarray:
    """Each address's place among its ASN's addresses for :func:`walk`'s ``groups``: its
    group's first (smallest) id where it has a group, else its own id; ties by id."""
    tie = np.arange(groups.size, dtype=np.int64)
    member = np.flatnonzero(groups >= 0)
    if member.size:
        # members in id order: a group's first occurrence is its smallest id
        labels, at = np.unique(groups[member], return_index=True)
        first = member[at]
        tie[member] = first[np.searchsorted(labels, groups[member])]
    return tie


def _group_walk(levels, pos_id, groups, hi, lo, pidx, gmap, seg, seg_keys, walked, n_total):
    """Distinct groups per key for :func:`walk`'s ``groups``: its levels' rows walked again,
    a run per group (its addresses, adjacent in the walk's order), no concentration. None
    where some group's addresses are not adjacent (they have different ASNs)."""
    g_pos = groups[pos_id]  # each walked address's group
    member = g_pos >= 0
    n = g_pos.size
    edge = np.ones(n + 1, bool)  # a group run starts or ends between positions i-1 and i
    np.not_equal(g_pos[1:], g_pos[:-1], out=edge[1:n])
    starts = np.flatnonzero(edge[:n] & member)
    ends = np.flatnonzero(edge[1:] & member) + 1
    if starts.size != np.unique(g_pos[member]).size:
        return None  # a group split into several runs: it would count more than once
    f_start = levels[3]
    zeros = np.zeros(starts.size, np.int64)
    sub = seg[walked]
    return _walk(
        zeros, zeros, np.zeros(starts.size, np.bool_),
        np.ascontiguousarray(f_start[:, starts]), np.ascontiguousarray(f_start[:, ends]),
        *levels[4:], np.ascontiguousarray(hi, np.uint64), np.ascontiguousarray(lo, np.uint64),
        pidx, gmap, *(sub[:, c].copy() for c in range(4)), np.full(len(sub), -1, np.int64),
        seg_keys[walked], np.ones(len(sub), np.int64), int(n_total), 0, 1, 0, 0,
    )[0]  # fmt: skip


def _copied_segments(
    seg: np.ndarray,
    pidx: np.ndarray,
    asn_from: int,
    asn_to: int,
    volumes_only: Collection[int] = (),
) -> list[tuple[int, int]]:
    """(segment, source segment) pairs whose results are a copy of the source's.

    Where a level has exactly the periods of the level below it (an archive within one month
    has one month, one quarter and one whole range), each of its rows is a row of the level
    below, so its keys count, sum and rank exactly as that level's keys of the same grouping
    set: walked once, copied to the others. A source qualifies if its keys lie in the same
    order and, where the copy gathers (key, ASN) volumes, it gathers them too, and where
    the copy keeps top addresses (its level not in ``volumes_only``), it keeps them too.
    """
    pairs = []
    # once per level, not per segment (eight a level): pidx has a column per cell or bucket
    same = [lev > 0 and np.array_equal(pidx[lev], pidx[lev - 1]) for lev in range(len(pidx))]
    for c in range(len(seg)):
        lev, grp, _off, width, co = seg[c]
        if not same[lev]:
            continue
        for src in range(c):
            s_lev, s_grp, _s_off, s_width, s_co = seg[src]
            if (s_lev, s_grp, s_width) != (lev - 1, grp, width) or (s_co < 0) != (co < 0):
                continue
            if asn_from <= co < asn_to and not asn_from <= s_co < asn_to:
                continue
            if co >= 0 and s_lev in volumes_only and lev not in volumes_only:
                continue
            pairs.append((c, src))
            break
    return pairs


@numba.njit(nogil=True, cache=True)
def _sum128_sorted(key, s_hi, s_lo):  # pragma: no cover - compiled
    n = key.size
    out_k = np.empty(n, np.int64)
    out_hi = np.zeros(n, np.uint64)
    out_lo = np.zeros(n, np.uint64)
    m = -1
    for i in range(n):
        if m < 0 or key[i] != out_k[m]:
            m += 1
            out_k[m] = key[i]
        new_lo = out_lo[m] + s_lo[i]
        out_hi[m] += s_hi[i] + (np.uint64(1) if new_lo < s_lo[i] else np.uint64(0))
        out_lo[m] = new_lo
    return out_k[: m + 1], out_hi[: m + 1], out_lo[: m + 1]


def sum128_by_key(key: np.ndarray, s_hi: np.ndarray, s_lo: np.ndarray):
    """Exact sums of 128-bit values (hi, lo words) per key; keys come out sorted."""
    order = np.argsort(key, kind="stable")
    return _sum128_sorted(
        np.ascontiguousarray(key[order], np.int64),
        np.ascontiguousarray(s_hi[order], np.uint64),
        np.ascontiguousarray(s_lo[order], np.uint64),
    )


@numba.njit(nogil=True, cache=True)
def _add128_at(acc_hi, acc_lo, idx, v_hi, v_lo):  # pragma: no cover - compiled
    for i in range(idx.size):
        j = idx[i]
        new_lo = acc_lo[j] + v_lo[i]
        acc_hi[j] += v_hi[i] + (np.uint64(1) if new_lo < v_lo[i] else np.uint64(0))
        acc_lo[j] = new_lo


def add128_at(acc_hi: np.ndarray, acc_lo: np.ndarray, idx: np.ndarray, v_hi, v_lo) -> None:
    """acc[idx] += v for 128-bit values held as (hi, lo) uint64 words, in place."""
    _add128_at(
        acc_hi, acc_lo, np.ascontiguousarray(idx, np.int64),
        np.ascontiguousarray(v_hi, np.uint64), np.ascontiguousarray(v_lo, np.uint64),
    )  # fmt: skip


@numba.njit(nogil=True, cache=True)
def _merge_top(top_v, top_hi, top_lo, top_n, idx, v, hi, lo):  # pragma: no cover - compiled
    k_top = top_v.shape[1]
    for i in range(idx.size):
        j = idx[i]
        n = top_n[j]
        pos = n
        while pos > 0:
            pv = top_v[j, pos - 1]
            if pv > v[i] or (
                pv == v[i]
                and (
                    top_hi[j, pos - 1] < hi[i]
                    or (top_hi[j, pos - 1] == hi[i] and top_lo[j, pos - 1] < lo[i])
                )
            ):
                break
            pos -= 1
        if pos >= k_top:
            continue
        last = min(n, k_top - 1)
        for z in range(last, pos, -1):
            top_v[j, z] = top_v[j, z - 1]
            top_hi[j, z] = top_hi[j, z - 1]
            top_lo[j, z] = top_lo[j, z - 1]
        top_v[j, pos] = v[i]
        top_hi[j, pos] = hi[i]
        top_lo[j, pos] = lo[i]
        if n < k_top:
            top_n[j] = n + 1


def merge_top(top_v, top_hi, top_lo, top_n, idx, v, hi, lo) -> None:
    """Fold candidates (key index, volume, address) into per-key top lists, in place.

    Lists are ordered by volume descending, then address ascending, and hold at most
    ``top_v.shape[1]`` entries (``top_n`` per key): merging partitions' lists one at a time
    gives exactly the top list of all their candidates.
    """
    _merge_top(
        top_v, top_hi, top_lo, top_n, np.ascontiguousarray(idx, np.int64),
        np.ascontiguousarray(v, np.uint64), np.ascontiguousarray(hi, np.uint64),
        np.ascontiguousarray(lo, np.uint64),
    )  # fmt: skip
