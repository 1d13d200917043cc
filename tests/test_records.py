"""The fused per-record kernel against the separate kernels it fuses, on hostile records.

``records_cpu`` classifies, orients and buckets each record in one pass. Its oracle is the
composition of the kernels that tests/test_kernels.py and tests/test_lpm.py check against
slow references: ``lookup_cpu`` (both ends in the local table, the remote end in the
classification table), ``orient_cpu``, the precedence of user overrides, private-link rules
and internal traffic, and ``cells_cpu``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from flowatlas.addresses import bytes16_to_hilo, bytes16_words, hilo_to_bytes16
from flowatlas.kernels import records
from flowatlas.kernels.lpm import lookup_cpu
from flowatlas.kernels.orient import INTERNAL, cells_cpu, orient_cpu
from flowatlas.kernels.records import records_cpu, rule_table

HOUR_US = 3_600_000_000


@pytest.fixture(scope="module")
def plan(small_plan):
    return small_plan


def _addresses(rng, plan, n):
    """Ends drawn from our own prefixes, the classification table's starts and ends, random
    IPv4 and IPv6, and the edges of both spaces."""
    ours = plan.local_table
    cls = plan.class_table
    pools = []
    for t in (ours, cls):
        k = rng.integers(0, t.starts_hi.size, n)
        hi, lo = t.starts_hi[k].copy(), t.starts_lo[k].copy()
        step = rng.integers(0, 3, n).astype(np.uint64)  # on the start, or just past it
        lo += step
        pools.append((hi, lo))
        lo2 = lo - np.uint64(1)  # just before a start (wraps at 0 into the previous hi)
        hi2 = hi - (lo == 0).astype(np.uint64)
        pools.append((hi2, lo2))
    v4 = rng.integers(0, 2**32, n, dtype=np.uint64) | np.uint64(0xFFFF << 32)
    pools.append((np.zeros(n, np.uint64), v4))
    pools.append(
        (rng.integers(0, 2**64, n, dtype=np.uint64), rng.integers(0, 2**64, n, dtype=np.uint64))
    )
    edges = np.array(
        [(0, 0), (0, 0xFFFF << 32), (0, (0xFFFF << 32) | 0xFFFFFFFF), (2**64 - 1, 2**64 - 1),
         (0x2001_0DB8 << 32, 0), (0, 1)],
        dtype=np.uint64,
    )  # fmt: skip
    e = edges[rng.integers(0, len(edges), n)]
    pools.append((e[:, 0].copy(), e[:, 1].copy()))
    which = rng.integers(0, len(pools), n)
    hi = np.choose(which, [p[0] for p in pools])
    lo = np.choose(which, [p[1] for p in pools])
    return hi, lo


def _oracle(plan, src_hi, src_lo, dst_hi, dst_lo, code, exp_reg, exp_id, in_if, out_if, t_us,
            nbytes, npk, rate, scaled):  # fmt: skip
    """The map step as it was before the kernels were fused: separate kernels and numpy."""
    local = plan.local_table.index
    src_reg = plan.local_region[lookup_cpu(local, src_hi, src_lo)]
    dst_reg = plan.local_region[lookup_cpu(local, dst_hi, dst_lo)]
    direction, region, remote_is_dst, link_type, link = orient_cpu(
        src_reg, dst_reg, exp_reg[code], exp_id[code], in_if, out_if, plan.rule_keys,
        plan.rule_types, plan.rule_links,
    )  # fmt: skip
    r_hi = np.where(remote_is_dst, dst_hi, src_hi)
    r_lo = np.where(remote_is_dst, dst_lo, src_lo)
    net = lookup_cpu(plan.class_table.index, r_hi, r_lo)
    ntype = plan.type_codes[net]
    ntype = np.where((link_type >= 0) & ~plan.user_override[net], link_type, ntype)
    ntype = np.where(direction == INTERNAL, plan.internal_type, ntype).astype(np.int16)
    is_v6 = ~((r_hi == 0) & ((r_lo >> np.uint64(32)) == np.uint64(0xFFFF)))
    cell, vol, pk, reason = cells_cpu(
        t_us, plan.bucket_us, region, ntype, direction, is_v6.astype(np.uint8), nbytes, npk,
        rate, scaled,
    )  # fmt: skip
    geo = plan.geo_of[net] if plan.geo_of is not None else None
    return cell, r_hi, r_lo, vol, pk, reason, link, geo


@pytest.mark.parametrize("rule_table_max", [records.RULE_TABLE_MAX, 0])
@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("seed", [1, 2])
def test_records_kernel_equals_the_separate_kernels(
    plan, scaled, seed, rule_table_max, monkeypatch
) -> None:
    # the interface rules from rule_table's table, and (no room for one) by binary search;
    # with the binary search, the IPv4 entries prefetched (a hint: the same results)
    monkeypatch.setattr(records, "RULE_TABLE_MAX", rule_table_max)
    if rule_table_max == 0:
        monkeypatch.setattr(records, "PREFETCH_MIN_INTERVALS", 0)
    rng = np.random.default_rng(seed)
    # user rules (which beat private-link rules) on a random third of the networks
    override = rng.random(plan.user_override.size) < 0.33
    override[-1] = False  # the no-match entry
    plan = dataclasses.replace(plan, user_override=override)
    n = 40_000
    src_hi, src_lo = _addresses(rng, plan, n)
    dst_hi, dst_lo = _addresses(rng, plan, n)
    # exporters: the configured ones (with regions), unknown ones
    n_exp = 6
    exp_reg = rng.integers(0, len(plan.regions), n_exp).astype(np.int16)
    exp_reg[0] = 0
    exp_id = rng.integers(-1, 4, n_exp).astype(np.int32)
    rule_exp = (plan.rule_keys >> np.uint64(32)).astype(np.int32)
    rule_if = (plan.rule_keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    if rule_exp.size:
        exp_id[1:3] = rule_exp[rng.integers(0, rule_exp.size, 2)]
    code = rng.integers(0, n_exp, n)
    in_if = rng.integers(0, 40, n).astype(np.uint32)
    out_if = rng.integers(0, 40, n).astype(np.uint32)
    in_if[::89] = np.uint32(2**32 - 1)  # past every rule's interface
    out_if[::83] = np.uint32(2**32 - 1)
    if rule_if.size:  # interfaces of private-link rules, on either side
        hit = rng.random(n) < 0.3
        in_if[hit] = rule_if[rng.integers(0, rule_if.size, hit.sum())]
        hit = rng.random(n) < 0.3
        out_if[hit] = rule_if[rng.integers(0, rule_if.size, hit.sum())]
    rate = rng.choice(np.array([0, 1, 2, 100, 2**31], np.uint32), n)
    t_us = rng.integers(-30 * 24 * HOUR_US, 400 * 24 * HOUR_US, n)  # before 1970 too
    if seed == 2:  # in time order (the kernel keeps the last bucket), bucket edges, extremes
        t_us.sort()
        k = rng.integers(0, n, 600)
        t_us[k] = (t_us[k] // plan.bucket_us) * plan.bucket_us - rng.integers(-1, 2, k.size)
        t_us[:3] = [-(2**63), -(2**63) + 1, -(2**63) + plan.bucket_us]
        t_us[-4:] = [2**63 - plan.bucket_us - 1, 2**63 - 2, 2**63 - 1, -(2**63)]
        # an extreme time between two of one bucket: the second must not take the extreme's
        t_us[n // 3 : n // 3 + 5] = t_us[n // 3]
        t_us[n // 3 + 1] = 2**63 - 1
        t_us[n // 3 + 3] = -(2**63)
        rate[n // 2 :] = np.sort(rate[n // 2 :])  # runs of one rate
    nbytes = rng.integers(0, 2**40, n, dtype=np.uint64)
    nbytes[::97] = np.uint64(2**64 - 1)  # overflows once sampled
    npk = rng.integers(0, 2**30, n, dtype=np.uint64)
    npk[::101] = np.uint64(2**63)

    src = hilo_to_bytes16(src_hi, src_lo)
    dst = hilo_to_bytes16(dst_hi, dst_lo)
    assert [a.tolist() for a in bytes16_to_hilo(src)] == [src_hi.tolist(), src_lo.tolist()]
    out = (
        np.empty(n, np.int64),
        *(np.empty(n, np.uint64) for _ in range(4)),
        np.empty(n, np.uint8),
    )
    link_out = np.empty(n, np.int16)
    geo_out = np.empty(n, np.int32)
    records_cpu(
        bytes16_words(src), bytes16_words(dst), code, exp_reg, exp_id, in_if, out_if, t_us,
        nbytes, npk, rate, scaled, plan.bucket_us, plan.local_table.index, plan.local_region,
        plan.class_table.index, plan.type_codes, plan.user_override, plan.rule_keys,
        plan.rule_types, plan.internal_type, out, rule_links=plan.rule_links, link_out=link_out,
        geo_of=plan.geo_of, geo_out=geo_out,
    )  # fmt: skip
    want = _oracle(plan, src_hi, src_lo, dst_hi, dst_lo, code, exp_reg, exp_id, in_if, out_if,
                   t_us, nbytes, npk, rate, scaled)  # fmt: skip
    names = ("cell", "hi", "lo", "vol", "pk", "reason", "link", "geo")
    for name, got, w in zip(names, (*out, link_out, geo_out), want, strict=True):
        np.testing.assert_array_equal(got, w, err_msg=name)
    assert (want[6] >= 0).any() and (want[6] < 0).any()
    assert np.unique(want[7]).size > 1
    # without link_out and geo_out the same rows (that work is skipped)
    again = tuple(np.empty_like(a) for a in out)
    records_cpu(
        bytes16_words(src), bytes16_words(dst), code, exp_reg, exp_id, in_if, out_if, t_us,
        nbytes, npk, rate, scaled, plan.bucket_us, plan.local_table.index, plan.local_region,
        plan.class_table.index, plan.type_codes, plan.user_override, plan.rule_keys,
        plan.rule_types, plan.internal_type, again,
    )  # fmt: skip
    for name, got, w in zip(names, again, want, strict=False):
        np.testing.assert_array_equal(got, w, err_msg=name)
    reason = want[5]
    assert reason.any() != scaled and not reason.all()  # unscaled: some overflow once sampled
    # the inputs reach every branch: each direction, private links, both address families
    direction = (want[0] >> 1) & 3
    assert set(np.unique(direction[reason == 0]).tolist()) == {0, 1, 2, 3}
    assert plan.rule_keys.size and np.isin((want[0] >> 3) & 63, plan.rule_types).any()
    assert (want[0] & 1).any() and not (want[0] & 1).all()


def _rule_oracle(exp_id, ext_if, rule_keys, rule_types, rule_links):
    """(link_type, link) of the first rule whose key is exporter << 32 | interface, (-1, -1)
    for none: a scan over the rules."""
    if exp_id < 0:
        return -1, -1
    key = (exp_id << 32) | ext_if
    for k, t, lk in zip(rule_keys.tolist(), rule_types.tolist(), rule_links.tolist(), strict=True):
        if k == key:
            return t, lk
    return -1, -1


@pytest.mark.parametrize("seed", range(6))
def test_rule_table_gives_the_first_matching_rule(seed) -> None:
    """``rule_table`` against a scan of the rules: duplicate keys (the first wins, as the
    binary search finds it), interfaces 0 and 2^32 - 1, exporters without rules or unknown
    (-1), types and links of -1, no rules; too wide a table gives no table."""
    rng = np.random.default_rng(seed)
    n_rules = [0, 1, 5, 40, 200, 3][seed]
    ids = rng.integers(0, 6, n_rules).astype(np.uint64)
    ifs = rng.choice(np.array([0, 1, 2, 3, 7, 100, 501], np.uint64), n_rules)
    keys = np.sort((ids << np.uint64(32)) | ifs)
    if n_rules > 3:
        keys[2] = keys[1]  # a duplicate key
    types = rng.integers(-1, 10, n_rules).astype(np.int16)
    links = rng.integers(-1, 30, n_rules).astype(np.int16)
    exp_id = np.array([-1, 0, 1, 2, 3, 4, 5, 6, 2**31 - 1, 3], np.int32)
    table = rule_table(exp_id, keys, types, links)
    assert table.dtype == np.int32 and table.shape[0] == exp_id.size and table.shape[1] >= 1
    w = table.shape[1] - 1
    for c, e in enumerate(exp_id.tolist()):
        for ext_if in (0, 1, 2, 3, 4, 7, 100, 500, 501, 502, 2**32 - 1):
            r = int(table[c, min(ext_if, w)])
            want = _rule_oracle(e, ext_if, keys, types, links)
            link = (r & 0xFFFF) - ((r & 0x8000) << 1)  # the low 16 bits, signed
            assert (r >> 16, link) == want, (c, e, ext_if)
    if n_rules:
        wide = np.sort(np.append(keys, np.uint64(2**32 - 1)))  # exporter 0, the last interface
        assert rule_table(exp_id, wide, np.append(types, 1), np.append(links, 1)).shape[1] == 0


def test_records_kernel_rejects_bad_arrays(plan) -> None:
    words = np.zeros((3, 2), np.uint64)
    small = (
        np.empty(2, np.int64),
        *(np.empty(2, np.uint64) for _ in range(4)),
        np.empty(2, np.uint8),
    )
    args = (np.zeros(3, np.int64), np.zeros(1, np.int16), np.zeros(1, np.int32),
            *(np.zeros(3, np.uint32) for _ in range(2)), np.zeros(3, np.int64),
            *(np.zeros(3, np.uint64) for _ in range(2)), np.zeros(3, np.uint32), False,
            plan.bucket_us, plan.local_table.index, plan.local_region, plan.class_table.index,
            plan.type_codes, plan.user_override, plan.rule_keys, plan.rule_types,
            plan.internal_type)  # fmt: skip
    with pytest.raises(ValueError, match="output arrays"):
        records_cpu(words, words, *args, small)
    with pytest.raises(ValueError, match="addresses"):
        records_cpu(words[:, :1].copy(), words, *args, small)


@pytest.mark.parametrize("n_values", [1, 5, 40, 3_000])
def test_value_codes_number_values_in_first_seen_order(n_values) -> None:
    """``value_codes`` against NumPy: every row's code names its value, codes count up in
    first-seen order; values that share a word, many values (the table grows), no rows."""
    from flowatlas.kernels.records import value_codes

    rng = np.random.default_rng(n_values)
    pool = rng.integers(0, 2**64, (n_values, 2), dtype=np.uint64)
    pool[: n_values // 2, 0] = 7  # the same first word, different second ones
    pool[n_values // 2 :, 1] = pool[0, 1]  # and the other way round
    words = pool[rng.integers(0, n_values, 20_000)]
    codes, first = value_codes(words)
    _, idx, inv = np.unique(words, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(idx)  # distinct values by first row
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    assert first.tolist() == np.sort(idx).tolist()
    assert codes.tolist() == rank[inv.reshape(-1)].tolist()
    assert (words[first[codes]] == words).all()
    codes, first = value_codes(words[:0])
    assert codes.size == 0 and first.size == 0


def _value_codes_oracle(words: np.ndarray) -> tuple[list[int], list[int]]:
    """Codes and first rows of 16-byte values by a dict, row by row."""
    seen: dict[tuple[int, int], int] = {}
    codes, first = [], []
    for i, (h, lw) in enumerate(words.tolist()):
        if (h, lw) not in seen:
            seen[h, lw] = len(first)
            first.append(i)
        codes.append(seen[h, lw])
    return codes, first


@pytest.mark.parametrize("n_values", [1, 31, 32, 33, 127, 128, 129, 600])
def test_value_codes_with_colliding_slots_and_growth(n_values) -> None:
    """``value_codes`` against a dict where every value's first slot (in the tables of 64 and
    256 slots; four slots at 1,024) is the same: long probe chains, the all-zero value
    (the empty slot's words), values one bit apart, and value counts at the table's growth
    points (half of 64, 256, 1,024 slots); also a single row."""
    from flowatlas.kernels.records import _VALUE_MUL, value_codes

    rng = np.random.default_rng(n_values)
    cand = rng.integers(0, 2**64, (200_000, 2), dtype=np.uint64)
    slot = (((cand[:, 0] * _VALUE_MUL) ^ cand[:, 1]) * _VALUE_MUL) >> np.uint64(56)
    pool = cand[slot == slot[0]]  # the same top 8 bits: one slot at 64 and 256, 4 at 1,024
    pool = np.concatenate([np.zeros((1, 2), np.uint64), pool, pool[:1] ^ np.uint64(1)])
    pool = pool[:n_values]
    assert len({tuple(v) for v in pool.tolist()}) == n_values
    words = pool[rng.integers(0, n_values, 5_000)]
    words[:n_values] = pool[rng.permutation(n_values)]  # every value, early and in any order
    codes, first = value_codes(words)
    want_codes, want_first = _value_codes_oracle(words)
    assert codes.tolist() == want_codes
    assert first.tolist() == want_first
    codes, first = value_codes(words[:1])
    assert codes.tolist() == [0] and first.tolist() == [0]


def test_rule_table_by_id_equals_the_table_made_from_the_rules() -> None:
    """``rule_table`` (rows of a table made once per set of rules) against the table made
    from the rules for each call (``_rule_rows``, what every batch made before) and the scan
    of the rules: random rule sets and exporter codes, calls that alternate between rule sets
    of the same size and bytes but one (the cached table must not be reused for other
    rules), exporter ids past the rules' last, unknown (-1) and 2^31 - 1, repeated ids, no
    exporters, a rule set too wide for a table by id (the direct table or none)."""
    from flowatlas.kernels.records import RULE_TABLE_MAX, RULES_BY_ID_MAX, _rule_rows

    rng = np.random.default_rng(11)
    rule_sets = []
    for n_rules in (0, 1, 3, 24, 200):
        ids = rng.integers(0, 9, n_rules).astype(np.uint64)
        ifs = rng.choice(np.array([0, 1, 2, 5, 31, 400], np.uint64), n_rules)
        keys = np.sort((ids << np.uint64(32)) | ifs)
        if n_rules > 3:
            keys[2] = keys[1]  # a duplicate key: the first one wins
        types = rng.integers(-1, 10, n_rules).astype(np.int16)
        links = rng.integers(-1, 30, n_rules).astype(np.int16)
        rule_sets.append((keys, types, links))
        if n_rules:  # the same keys, one type changed: same sizes, other bytes
            other = types.copy()
            other[-1] = other[-1] + 1
            rule_sets.append((keys, other, links))
    # one exporter with an interface too high for a table by id (but not for a batch's)
    wide_if = RULE_TABLE_MAX // 2
    assert 10 * (wide_if + 2) > RULES_BY_ID_MAX and wide_if + 2 <= RULE_TABLE_MAX
    rule_sets.append((np.array([(8 << 32) | wide_if], np.uint64), np.array([3], np.int16),
                      np.array([7], np.int16)))  # fmt: skip
    # a table by id, but too wide a table for a batch of more than three exporters
    mid_if = RULE_TABLE_MAX * 3 // 10
    assert 10 * (mid_if + 2) <= RULES_BY_ID_MAX and 4 * (mid_if + 2) > RULE_TABLE_MAX
    rule_sets.append((np.array([1 << 32, (8 << 32) | mid_if], np.uint64),
                      np.array([3, 4], np.int16), np.array([7, 8], np.int16)))  # fmt: skip
    for _ in range(3):
        for keys, types, links in rule_sets:
            for exp_id in (
                np.array([-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 2**31 - 1, 3, 3], np.int32),
                rng.integers(-1, 12, rng.integers(0, 40)).astype(np.int32),
                np.array([8], np.int32),
                np.empty(0, np.int32),
            ):
                got = rule_table(exp_id, keys, types, links)
                want = _rule_rows(exp_id, keys, types, links, RULE_TABLE_MAX)
                assert got.dtype == want.dtype == np.int32 and got.flags.c_contiguous
                assert got.shape == want.shape and (got == want).all()
                w = got.shape[1] - 1
                for c, e in enumerate(exp_id.tolist()[:6] if w >= 0 else []):
                    for ext_if in (0, 1, 5, 400, 401, mid_if, wide_if, 2**32 - 1):
                        r = int(got[c, min(ext_if, w)])
                        link = (r & 0xFFFF) - ((r & 0x8000) << 1)
                        assert (r >> 16, link) == _rule_oracle(e, ext_if, keys, types, links)
