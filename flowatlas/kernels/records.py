"""The map step's per-record work on the CPU in one pass: classify, orient, bucket.

For each flow record: longest-prefix match of both addresses in the local table (is either end
ours, and in which region? A local IPv6 end is one skip and one node below its root entry:
:func:`~flowatlas.kernels.lpm.skip_chains`), orientation
(:func:`~flowatlas.kernels.orient._orient_body`), the remote address, its network in the
classification table and the network type by precedence, then the cell key and the
sampling-corrected counters (:func:`~flowatlas.kernels.orient._cell_body`); where asked,
also the interface link carrying the record and the remote network's (country, metro) code,
for the cube's link and geography tables. The same bodies the separate kernels use
(:func:`~flowatlas.kernels.lpm.lookup_cpu`, :func:`~flowatlas.kernels.orient.orient_cpu`,
:func:`~flowatlas.kernels.orient.cells_cpu`), fused so that the intermediate columns
(regions, direction, network ids, types) never reach memory: one pass instead of nine, and no
temporary arrays. The GPU path keeps the separate kernels (:mod:`flowatlas.engine.gpu`).
"""

from __future__ import annotations

import sys

import numpy as np

from flowatlas import kernel_cache
from flowatlas.kernels.lpm import PREFETCH_DISTANCE, LpmArrays, _jit_no_nrt, _prefetch, lpm_one
from flowatlas.kernels.orient import (
    EGRESS,
    INTERNAL,
    cell_key_one,
    counters_one,
    limit_one,
    multiplier_one,
    orient_one,
)

kernel_cache.install()  # before the cached kernels: keyed on all the sources they import

_V4_TAG = np.uint64(0xFFFF)


@_jit_no_nrt(inline="always", nogil=True, cache=True)
def _prefetch_v4(h, lw, idx_a, shift_a, idx_b, shift_b):  # pragma: no cover - compiled
    """Prefetch an IPv4 address's entries in two IPv4 roots (each with its own block size)."""
    if (h | ((lw >> np.uint64(32)) ^ _V4_TAG)) == np.uint64(0):
        v4 = lw & np.uint64(0xFFFFFFFF)
        _prefetch(idx_a, v4 >> shift_a)
        _prefetch(idx_b, v4 >> shift_b)


@_jit_no_nrt(inline="always", nogil=True, cache=True)
def _word(w, swap):  # pragma: no cover - compiled
    """A 64-bit half of an address from its network-order bytes (LLVM emits one BSWAP)."""
    if not swap:
        return w
    w = ((w & np.uint64(0x00FF00FF00FF00FF)) << np.uint64(8)) | (
        (w >> np.uint64(8)) & np.uint64(0x00FF00FF00FF00FF)
    )
    w = ((w & np.uint64(0x0000FFFF0000FFFF)) << np.uint64(16)) | (
        (w >> np.uint64(16)) & np.uint64(0x0000FFFF0000FFFF)
    )
    return (w << np.uint64(32)) | (w >> np.uint64(32))


def _records_loop(
    src, dst, swap, prefetch, exp_code, exp_reg, exp_id, in_if, out_if, t_us, nbytes,
    npackets, rate, scaled, bucket_us,
    l_sh, l_sl, l_val, l_i4, l_i6, l_heads, l_runs, l_shift6, l_shift4, local_region,
    c_sh, c_sl, c_val, c_i4, c_i6, c_heads, c_runs, c_shift6, c_shift4, type_codes,
    user_override,
    rule_keys, rule_types, rule_links, rule_at, internal_type, geo_of, want_link, want_geo,
    o_cell, o_hi, o_lo, o_vol, o_pk, o_reason, o_link, o_geo,
):  # fmt: skip  # pragma: no cover - compiled
    n = src.shape[0]
    # the last record's time bucket [b_lo, b_hi) and sampling rate's overflow limit: records
    # come in time order with a few rates, so the two 64-bit divisions of _cell_body (3-4 ns
    # a record) are mostly not needed. A bucket within bucket_us of the int64 range's ends is
    # never kept (its bounds could wrap)
    t_min = np.int64(-0x8000000000000000) + bucket_us
    t_max = np.int64(0x7FFFFFFFFFFFFFFF) - bucket_us
    b = np.int64(0)
    b_lo = np.int64(1)
    b_hi = np.int64(0)
    last_mult = np.uint64(1)
    limit = limit_one(last_mult)
    for i in range(n):
        j = i + PREFETCH_DISTANCE  # the IPv4 root entries of a later record's addresses
        if prefetch and j < n:
            _prefetch_v4(
                _word(src[j, 0], swap), _word(src[j, 1], swap), l_i4, l_shift4, c_i4, c_shift4
            )
            _prefetch_v4(
                _word(dst[j, 0], swap), _word(dst[j, 1], swap), l_i4, l_shift4, c_i4, c_shift4
            )
        sh = _word(src[i, 0], swap)
        sl = _word(src[i, 1], swap)
        dh = _word(dst[i, 0], swap)
        dl = _word(dst[i, 1], swap)
        s_reg = local_region[lpm_one(sh, sl, l_sh, l_sl, l_val, l_i4, l_i6, l_heads, l_runs,
                                     l_shift6, l_shift4)]  # fmt: skip
        d_reg = local_region[lpm_one(dh, dl, l_sh, l_sl, l_val, l_i4, l_i6, l_heads, l_runs,
                                     l_shift6, l_shift4)]  # fmt: skip
        c = exp_code[i]
        if rule_at.shape[1] == 0:  # no table: orient_one's binary search over the rules
            direction, region, remote_is_dst, link_type, link = orient_one(
                s_reg, d_reg, exp_reg[c], exp_id[c], in_if[i], out_if[i], rule_keys,
                rule_types, rule_links,
            )  # fmt: skip
        else:  # the interface rule from the table; orient_one only orients (exporter -1)
            direction, region, remote_is_dst, link_type, link = orient_one(
                s_reg, d_reg, exp_reg[c], -1, in_if[i], out_if[i], rule_keys, rule_types,
                rule_links,
            )  # fmt: skip
            ext_if = out_if[i] if direction == EGRESS else in_if[i]
            r = rule_at[c, min(ext_if, np.uint32(rule_at.shape[1] - 1))]
            link_type = np.int16(r >> 16)
            if direction != INTERNAL:
                link = np.int16(r & 0xFFFF)
        rh = dh if remote_is_dst else sh
        rl = dl if remote_is_dst else sl
        net = lpm_one(rh, rl, c_sh, c_sl, c_val, c_i4, c_i6, c_heads, c_runs, c_shift6, c_shift4)
        # precedence: user overrides > private-link rules > everything else
        ntype = type_codes[net]
        if link_type >= 0 and not user_override[net]:
            ntype = np.int16(link_type)
        if direction == INTERNAL:
            ntype = np.int16(internal_type)
        is_v6 = np.uint8(0 if rh == 0 and (rl >> np.uint64(32)) == _V4_TAG else 1)
        t = t_us[i]
        if t < b_lo or t >= b_hi:
            b = t // bucket_us  # floor division, also for times before 1970
            if t_min <= t <= t_max:
                b_lo = b * bucket_us
                b_hi = b_lo + bucket_us
            else:  # nothing kept: the next record divides again
                b_lo = np.int64(1)
                b_hi = np.int64(0)
        cell = cell_key_one(b, region, ntype, direction, is_v6)
        # the sampling-corrected counters as _cell_body gives them, the limit kept per rate
        mult = multiplier_one(rate[i], scaled)
        if mult != last_mult:
            last_mult = mult
            limit = limit_one(mult)
        vol, pk, reason = counters_one(nbytes[i], npackets[i], mult, limit)
        o_cell[i] = cell
        o_hi[i] = rh
        o_lo[i] = rl
        o_vol[i] = vol
        o_pk[i] = pk
        o_reason[i] = reason
        if want_link:
            o_link[i] = link
        if want_geo:
            o_geo[i] = geo_of[net] if net >= 0 else geo_of[geo_of.size - 1]


# serial only: measured slower with numba's thread pool on a fragment (272 k records, 2
# cores); map tasks supply the parallelism
_records = _jit_no_nrt(nogil=True, cache=True)(_records_loop)


def records_cpu(
    src: np.ndarray,
    dst: np.ndarray,
    exp_code: np.ndarray,
    exp_reg: np.ndarray,
    exp_id: np.ndarray,
    in_if: np.ndarray,
    out_if: np.ndarray,
    t_us: np.ndarray,
    nbytes: np.ndarray,
    npackets: np.ndarray,
    rate: np.ndarray,
    scaled: bool,
    bucket_us: int,
    local: LpmArrays,
    local_region: np.ndarray,
    classes: LpmArrays,
    type_codes: np.ndarray,
    user_override: np.ndarray,
    rule_keys: np.ndarray,
    rule_types: np.ndarray,
    internal_type: int,
    out: tuple[np.ndarray, ...],
    *,
    rule_links: np.ndarray | None = None,
    link_out: np.ndarray | None = None,
    geo_of: np.ndarray | None = None,
    geo_out: np.ndarray | None = None,
) -> None:
    """Classify, orient and bucket records, writing record i's results to ``out[k][i]``.

    ``src`` and ``dst`` are the addresses' 16 network-order bytes each, as (n, 2) uint64 words
    (:func:`flowatlas.addresses.bytes16_words`: a view of the Arrow buffer, no copy). ``out``
    is (cell int64, remote hi uint64, remote lo uint64, volume uint64, packets uint64,
    quarantine reason uint8), contiguous and ``n`` long. Exporters come as a code per record
    (``exp_code``) into the per-exporter ``exp_reg`` (region, 0 = none) and ``exp_id`` (-1 =
    unknown). ``local_region`` maps a local network id to its region and has a last entry,
    -1, for addresses outside the local table; ``type_codes`` and ``user_override`` likewise
    map a network id of the classification table (last entry: no match). Per record, the
    result equals :func:`~flowatlas.kernels.lpm.lookup_cpu`,
    :func:`~flowatlas.kernels.orient.orient_cpu` and
    :func:`~flowatlas.kernels.orient.cells_cpu` composed (tests/test_records.py checks it).

    With ``link_out`` (int16, n long) record i's interface link goes to ``link_out[i]``: the
    ``rule_links`` entry of the rule matching its exporter interface, -1 for none (as
    ``orient_cpu`` gives it). With ``geo_out`` (int32) its remote network's geography code
    ``geo_of[network id]`` (last entry: no match). Without them that work is skipped.
    """
    n = src.shape[0]
    for a in (src, dst):
        if a.dtype != np.uint64 or a.shape != (n, 2) or not a.flags.c_contiguous:
            raise ValueError("addresses must be C-contiguous (n, 2) uint64 words")
    extra = [o for o in (link_out, geo_out) if o is not None]
    if any(o.size != n or not o.flags.c_contiguous for o in (*out, *extra)):
        raise ValueError(f"output arrays must be contiguous and {n} long")
    if link_out is not None and link_out.dtype != np.int16:
        raise ValueError("link_out must be int16")
    if geo_out is not None and (geo_out.dtype != np.int32 or geo_of is None or not geo_of.size):
        raise ValueError("geo_out must be int32, with a non-empty geo_of")
    if rule_links is None:
        rule_links = np.arange(np.asarray(rule_keys).size, dtype=np.int16)
    rule_keys = np.ascontiguousarray(rule_keys, np.uint64)
    rule_types = np.ascontiguousarray(rule_types, np.int16)
    rule_links = np.ascontiguousarray(rule_links, np.int16)
    exp_id = np.ascontiguousarray(exp_id, np.int32)
    rule_at = rule_table(exp_id, rule_keys, rule_types, rule_links)
    # read-only views, always: the words are a view of Arrow's (read-only) buffer when it is
    # 8-byte aligned and a (writable) copy when not, and numba compiles a kernel once per
    # argument type, read-only or not (each compile of this kernel costs seconds)
    src, dst = src.view(), dst.view()
    src.flags.writeable = dst.flags.writeable = False
    u64 = np.uint64
    _records(
        src, dst, sys.byteorder == "little", classes.starts_hi.size >= PREFETCH_MIN_INTERVALS,
        np.ascontiguousarray(exp_code, np.int64),
        np.ascontiguousarray(exp_reg, np.int16), exp_id, np.ascontiguousarray(in_if, np.uint32),
        np.ascontiguousarray(out_if, np.uint32), np.ascontiguousarray(t_us, np.int64),
        np.ascontiguousarray(nbytes, u64), np.ascontiguousarray(npackets, u64),
        np.ascontiguousarray(rate, np.uint32), bool(scaled), np.int64(bucket_us),
        *local.arrays(), np.ascontiguousarray(local_region, np.int32),
        *classes.arrays(), np.ascontiguousarray(type_codes, np.int16),
        np.ascontiguousarray(user_override, np.bool_), rule_keys, rule_types, rule_links,
        rule_at, np.int16(internal_type),
        np.ascontiguousarray(geo_of if geo_of is not None else _NO_GEO, np.int32),
        link_out is not None, geo_out is not None, *out,
        link_out if link_out is not None else _NO_LINK_OUT,
        geo_out if geo_out is not None else _NO_GEO,
    )  # fmt: skip


#: from this many intervals in the classification table the kernel prefetches the IPv4 root
#: entries of both tables' lookups 24 records ahead. With a big table (a routing table: the
#: heavy workload's 877 k networks) remote addresses spread over its 64 MiB root and the
#: prefetch takes 6-9 of 31-40 ns a record off; with a small one (the world's 494 networks)
#: the entries the lookups read stay in cache and the prefetch costs 3-4 of 30 ns a record
#: (captured batches of the slice of the 10^9 archive and of world 20 M)
PREFETCH_MIN_INTERVALS = 1 << 16

#: the most entries :func:`rule_table` makes (int32 each: 256 KiB, within a core's L2)
RULE_TABLE_MAX = 1 << 16


def rule_table(
    exp_id: np.ndarray, rule_keys: np.ndarray, rule_types: np.ndarray, rule_links: np.ndarray
) -> np.ndarray:
    """The interface rules as a table by exporter code and interface, for :func:`records_cpu`.

    Row c, column k: the rule for interface k of exporter ``exp_id[c]`` packed as
    ``link_type << 16 | link & 0xFFFF`` (int32), -1 where no rule matches; the last column is
    -1 for every interface past the rules' largest one. What ``orient_one``'s binary search
    over ``rule_keys`` finds (the first of equal keys), in one load instead of five
    unpredictable branches: 13 of the kernel's 45 ns a record on the slice of the 10^9
    archive. A (rows, 0) table where it would exceed :data:`RULE_TABLE_MAX` entries (many
    exporters, interface numbers in the thousands): the kernel searches instead.

    Rows are taken from a table of every exporter id's rules, made once for a set of rules
    (:func:`_rules_by_id`) where it is small: a batch's table was remade from the rules
    each batch (1.9 ns a record on world 5 M's 27 k-record batches).
    """
    by_id = _rules_by_id(rule_keys, rule_types, rule_links)
    if by_id is None:
        return _rule_rows(exp_id, rule_keys, rule_types, rule_links, RULE_TABLE_MAX)
    table, widths = by_id
    exp_id = np.asarray(exp_id, np.int64)
    rows = exp_id.size
    # row 0: the rules of no exporter (unknown ones, -1, and ids past the rules' last)
    at = np.where((exp_id >= 0) & (exp_id < table.shape[0] - 1), exp_id + 1, 0)
    width = int(widths[at].max()) if rows else 0
    if width == 0:
        return np.full((rows, 1), -1, np.int32)
    if rows * width > RULE_TABLE_MAX:
        return np.empty((rows, 0), np.int32)
    return np.ascontiguousarray(table[at, :width])


#: the most entries of :func:`_rules_by_id`'s table (int32 each: 1 MiB)
RULES_BY_ID_MAX = 1 << 18
#: the last rules :func:`_rules_by_id` made a table of: (their bytes, (table, widths) or None)
_BY_ID: list[tuple[bytes, tuple[np.ndarray, np.ndarray] | None]] = []


def _rules_by_id(
    rule_keys: np.ndarray, rule_types: np.ndarray, rule_links: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """(table, widths) of the rules: ``table`` row e + 1 is :func:`rule_table`'s row of
    exporter id e and row 0 one of no rules, ``widths[r]`` the columns row r needs (its
    largest interface + 2; 0 where it has no rules). None where there are no rules or the
    table would exceed :data:`RULES_BY_ID_MAX` entries. Made once for the rules of the last
    call (a build's rules are its plan's): the key is the rules' bytes, a few microseconds
    to compare against the tens that the table takes to make."""
    sig = rule_keys.tobytes() + rule_types.tobytes() + rule_links.tobytes()
    last = _BY_ID[-1] if _BY_ID else None
    if last is not None and last[0] == sig:
        return last[1]
    made = None
    if rule_keys.size:
        ids = (rule_keys >> np.uint64(32)).astype(np.int64)
        ifs = (rule_keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
        rows = int(ids.max()) + 2
        if rows * (int(ifs.max()) + 2) <= RULES_BY_ID_MAX:
            exporters = np.arange(-1, rows - 1, dtype=np.int32)
            table = _rule_rows(exporters, rule_keys, rule_types, rule_links, RULES_BY_ID_MAX)
            widths = np.zeros(rows, np.int64)
            np.maximum.at(widths, ids + 1, ifs + 2)
            made = (table, widths)
    _BY_ID[:] = [(sig, made)]
    return made


def _rule_rows(
    exp_id: np.ndarray,
    rule_keys: np.ndarray,
    rule_types: np.ndarray,
    rule_links: np.ndarray,
    most: int,
) -> np.ndarray:
    """:func:`rule_table` made from the rules for these exporters (a (rows, 0) table where
    it would exceed ``most`` entries)."""
    rows = exp_id.size
    keys = rule_keys
    if keys.size == 0:
        return np.full((rows, 1), -1, np.int32)
    ids = (keys >> np.uint64(32)).astype(np.int64)
    ifs = (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
    # each exporter's rules: a range of the sorted keys
    starts = np.searchsorted(ids, exp_id, side="left")
    stops = np.searchsorted(ids, exp_id, side="right")
    lens = stops - starts
    total = int(lens.sum())
    if total == 0:
        return np.full((rows, 1), -1, np.int32)
    row = np.repeat(np.arange(rows), lens)
    rule = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(total)
    width = int(ifs[rule].max()) + 2
    if rows * width > most:
        return np.empty((rows, 0), np.int32)
    # the first of equal keys, as the binary search finds it
    first = np.ones(keys.size, bool)
    first[1:] = keys[1:] != keys[:-1]
    keep = first[rule]
    row, rule = row[keep], rule[keep]
    packed = (rule_types.astype(np.int32) << 16) | (rule_links.astype(np.int32) & 0xFFFF)
    table = np.full((rows, width), -1, np.int32)
    table[row, ifs[rule]] = packed[rule]
    return table


#: multiplier of :func:`_value_codes`' hash (a multiply-shift: the top bits of the product)
_VALUE_MUL = np.uint64(0x9E3779B97F4A7C15)


@_jit_no_nrt(nogil=True, cache=True)
def _value_codes(words, codes, first, keys, slot_code, bits):  # pragma: no cover - compiled
    """Number the distinct 16-byte values in first-seen order: ``codes[i]`` is row i's, and
    ``first[c]`` the first row holding value c. The table has 2^``bits`` slots, probed
    linearly: ``slot_code`` (-1 filled) holds a slot's code and ``keys`` its value's two
    words, so a probe compares in place (not through ``first`` into ``words``: two loads
    that wait on the first). Returns the number of values, or -1 once they fill half the
    table (the caller retries with a bigger one)."""
    mask = np.uint64((1 << bits) - 1)
    shift = np.uint64(64 - bits)
    size = 1 << bits
    m = 0
    for i in range(words.shape[0]):
        h = words[i, 0]
        lw = words[i, 1]
        # multiply-shift (one multiply more for the second word): 2.4 -> 1.2 ns a record
        # against two splitmix64 finalisers on a world task's few exporters
        s = (((h * _VALUE_MUL) ^ lw) * _VALUE_MUL) >> shift
        while True:
            c = slot_code[s]
            if c < 0:
                if 2 * (m + 1) > size:
                    return -1
                slot_code[s] = m
                keys[s, 0] = h
                keys[s, 1] = lw
                first[m] = i
                codes[i] = m
                m += 1
                break
            if keys[s, 0] == h and keys[s, 1] == lw:
                codes[i] = c
                break
            s = (s + np.uint64(1)) & mask
    return m


def value_codes(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, first rows) of 16-byte values, given as (n, 2) uint64 words (as
    :func:`flowatlas.addresses.bytes16_words` gives them): row i holds the value of row
    ``first[codes[i]]``; codes count from 0 in first-seen order.

    What ``dictionary_encode`` gives for the exporter column, in a fraction of its time: the
    map step reads a few exporters over and over (2.5-3 ns a record on the world and heavy
    workloads' batches with the values compared through their first rows, 1.1-1.3 with
    them in the table; bench/RESULTS.md, thirteenth round). Not
    :func:`flowatlas.kernels.distinct.ip_ids_first`, which numbers addresses the same
    way: its table starts at 1,024 slots for the reducers' many addresses, and it takes
    the two words as separate arrays (two strided copies here): 14.4 against 2.7 ns a
    record on a world task's exporter column.
    """
    words = np.ascontiguousarray(words, np.uint64)
    codes = np.empty(words.shape[0], np.int64)
    bits = 6
    while True:
        # fewer than half the slots hold a value: ``first`` needs no more rows than that
        first = np.empty(1 << (bits - 1), np.int64)
        keys = np.empty((1 << bits, 2), np.uint64)
        m = _value_codes(words, codes, first, keys, np.full(1 << bits, -1, np.int64), bits)
        if m >= 0:
            return codes, first[:m]
        bits += 2


#: stand-ins for the outputs a call does not ask for (the kernel never writes them)
_NO_LINK_OUT = np.full(1, -1, np.int16)
_NO_GEO = np.zeros(1, np.int32)
