"""LPM kernel and prefix-table compiler against trusted references (pytricia, a naive scan)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

from flowatlas.addresses import hilo_to_text, parse_prefixes, prefix_bounds
from flowatlas.classify.compiler import Layer, compile_layers
from flowatlas.classify.table import PrefixTable

pytricia = pytest.importorskip("pytricia")

MASK64 = (1 << 64) - 1


def random_prefixes(rng: np.random.Generator, n: int) -> list[str]:
    """Nested, overlapping, edge-case IPv4 and IPv6 prefixes (as text, unique)."""
    out: set[str] = {"0.0.0.0/0", "::/0", "255.255.255.255/32", "0.0.0.0/32", "::ffff:0:0/96"}
    out |= {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "::/128", "::1/128", "2001:db8::/32"}
    nets: list[ipaddress._BaseNetwork] = [ipaddress.ip_network(p) for p in out]
    while len(out) < n:
        r = rng.random()
        if r < 0.45 and nets:  # nest inside an existing prefix
            parent = nets[int(rng.integers(len(nets)))]
            maxlen = parent.max_prefixlen
            if parent.prefixlen == maxlen:
                continue
            newlen = int(rng.integers(parent.prefixlen + 1, maxlen + 1))
            span = 1 << (maxlen - parent.prefixlen)
            offset = int(rng.integers(0, min(span, 1 << 62))) if span > 1 else 0
            addr = int(parent.network_address) + (offset << 0) % span
            net = ipaddress.ip_network((addr, newlen), strict=False)
        elif r < 0.8:
            length = int(rng.choice([8, 12, 16, 20, 22, 23, 24, 25, 28, 30, 31, 32]))
            net = ipaddress.ip_network((int(rng.integers(0, 2**32)), length), strict=False)
        else:
            length = int(
                rng.choice([16, 19, 29, 32, 36, 40, 44, 48, 56, 64, 80, 96, 120, 127, 128])
            )
            top = 0x2000 if rng.random() < 0.8 else int(rng.integers(0, 0x10000))
            addr = (top << 112) | (int(rng.integers(0, 2**62)) << 50) | int(rng.integers(0, 2**50))
            net = ipaddress.ip_network((addr, length), strict=False)
        s = str(net)
        if s not in out:
            out.add(s)
            nets.append(net)
    return sorted(out)


#: every IPv4 root size the index has (flowatlas.kernels.lpm.V4_BITS: 16 and 24 are chosen
#: by default_bits4, 8 only asked for)
ROOTS4 = [8, 16, 24]


def compile_prefixes(
    prefixes: list[str], bits4: int | None = None
) -> tuple[PrefixTable, np.ndarray]:
    """Table whose network for prefix i carries asn = i + 1; returns it and the asn per id.
    ``bits4``: its index's IPv4 root size (None: the default rule's)."""
    hi, lo, ln, _ = parse_prefixes(prefixes)
    s_hi, s_lo, e_hi, e_lo = prefix_bounds(hi, lo, ln)
    attrs = pa.table({"asn": pa.array(np.arange(1, len(prefixes) + 1), pa.uint32())})
    c = compile_layers([Layer("test", s_hi, s_lo, e_hi, e_lo, attrs)])
    table = PrefixTable(
        c.starts_hi, c.starts_lo, c.values, c.networks, {"bits6": 16, "bits4": bits4}
    )
    asn_of = np.append(c.networks.column("asn").to_numpy().astype(np.int64), 0)
    return table, asn_of


def to_int(hi: np.ndarray, lo: np.ndarray) -> list[int]:
    return [(int(h) << 64) | int(l) for h, l in zip(hi, lo, strict=True)]


def probe_addresses(prefixes: list[str], rng: np.random.Generator, n_random: int):
    """Every prefix boundary (first-1, first, last, last+1) and random addresses."""
    hi, lo, ln, _ = parse_prefixes(prefixes)
    s_hi, s_lo, e_hi, e_lo = prefix_bounds(hi, lo, ln)
    pts: list[int] = []
    for a in to_int(s_hi, s_lo) + to_int(e_hi, e_lo):
        pts.extend([a - 1, a, a + 1])
    pts = [p for p in pts if 0 <= p < 2**128]
    r_hi = rng.integers(0, 2**63, size=n_random, dtype=np.uint64) << np.uint64(1)
    r_lo = rng.integers(0, 2**63, size=n_random, dtype=np.uint64) * np.uint64(3)
    # a third of them IPv4-mapped, a third under 2000::/3
    third = n_random // 3
    r_hi[:third] = 0
    r_lo[:third] = np.uint64(0xFFFF00000000) | (r_lo[:third] & np.uint64(0xFFFFFFFF))
    r_hi[third : 2 * third] = np.uint64(0x2000_0000_0000_0000) | (
        r_hi[third : 2 * third] & np.uint64(0x1FFF_FFFF_FFFF_FFFF)
    )
    hi_all = np.concatenate([np.array([p >> 64 for p in pts], np.uint64), r_hi])
    lo_all = np.concatenate([np.array([p & MASK64 for p in pts], np.uint64), r_lo])
    return hi_all, lo_all


def pytricia_reference(prefixes: list[str], hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """asn (prefix index + 1) of the longest match, via pytricia over the 128-bit space."""
    trie = pytricia.PyTricia(128)
    for i, p in enumerate(prefixes):
        net = ipaddress.ip_network(p)
        if net.version == 4:
            net = ipaddress.ip_network(f"::ffff:{net.network_address}/{net.prefixlen + 96}")
        trie[str(net)] = i + 1
    out = np.zeros(hi.size, dtype=np.int64)
    for k, text in enumerate(hilo_to_text(hi, lo).to_pylist()):
        if "." in text:
            text = f"::ffff:{text}"
        out[k] = trie.get(text, 0)
    return out


def naive_reference(prefixes: list[str], hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The obvious answer: scan every prefix, keep the longest that contains the address."""
    nets = []
    for i, p in enumerate(prefixes):
        net = ipaddress.ip_network(p)
        if net.version == 4:
            net = ipaddress.ip_network(f"::ffff:{net.network_address}/{net.prefixlen + 96}")
        nets.append((int(net.network_address), int(net.broadcast_address), net.prefixlen, i + 1))
    out = np.zeros(hi.size, dtype=np.int64)
    for k, a in enumerate(to_int(hi, lo)):
        best = -1
        for s, e, ln, v in nets:
            if s <= a <= e and ln >= best:  # identical ranges: the later row wins
                best, out[k] = ln, v
    return out


@pytest.mark.parametrize("bits4", ROOTS4)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lpm_matches_pytricia_on_random_nested_prefixes(seed: int, bits4: int) -> None:
    rng = np.random.default_rng(seed)
    prefixes = random_prefixes(rng, 3000)
    table, asn_of = compile_prefixes(prefixes, bits4)
    assert table.index.stats()["bits4"] == bits4
    hi, lo = probe_addresses(prefixes, rng, 60_000)
    got = asn_of[table.lookup(hi, lo)]
    want = pytricia_reference(prefixes, hi, lo)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (
        f"{bad.size} mismatches, first at {hilo_to_text(hi[bad[:3]], lo[bad[:3]]).to_pylist()}"
    )


@pytest.mark.parametrize("bits4", ROOTS4)
def test_lpm_matches_naive_scan_small(bits4: int) -> None:
    rng = np.random.default_rng(7)
    prefixes = random_prefixes(rng, 120)
    table, asn_of = compile_prefixes(prefixes, bits4)
    hi, lo = probe_addresses(prefixes, rng, 3000)
    np.testing.assert_array_equal(asn_of[table.lookup(hi, lo)], naive_reference(prefixes, hi, lo))


@pytest.mark.parametrize("bits4", ROOTS4)
def test_runs_of_ipv4_root_blocks_end_where_the_next_interval_starts(bits4: int) -> None:
    """The index fills runs of root blocks inside one interval at once: intervals that
    start on a /16 or /24 boundary, one address into a block, in the last block, and end at
    the top of the IPv4 space, each probed at its edges, for each IPv4 root size."""
    prefixes = [
        "0.0.0.0/0", "10.0.0.0/8", "10.0.1.0/24", "10.0.2.1/32", "10.0.3.128/25",
        "11.255.255.0/24", "192.168.0.0/16", "192.168.255.255/32", "223.255.255.0/24",
        "255.255.255.0/24", "255.255.255.255/32", "::ffff:0:0/96", "2001:db8::/32",
        "172.16.0.0/15", "172.18.0.0/17", "100.64.0.1/32", "100.65.255.255/32",
    ]  # fmt: skip
    table, asn_of = compile_prefixes(prefixes, bits4)
    edges = []
    for p in prefixes:
        net = ipaddress.ip_network(p)
        for a in (int(net.network_address), int(net.broadcast_address)):
            for d in (-65537, -65536, -65535, -257, -256, -255, -1, 0, 1, 255, 256, 257,
                      65535, 65536, 65537):  # fmt: skip
                edges.append(a + d)
    v4 = sorted({e for e in edges if 0 <= e < 1 << 32})
    mapped = [(0xFFFF << 32) | e for e in v4]
    hi = np.zeros(len(mapped), np.uint64)
    lo = np.array(mapped, np.uint64)
    got = asn_of[table.lookup(hi, lo)]
    np.testing.assert_array_equal(got, naive_reference(prefixes, hi, lo))


def block_edge_probes(rng: np.random.Generator, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Addresses at the edges of IPv4 /8, /16 and /24 blocks (the first and last address of a
    block and their neighbours, across block boundaries) and around ``::ffff:0:0/96``'s own
    edges (``::fffe:ffff:ffff``, ``::ffff:0.0.0.0``, ``::ffff:255.255.255.255``,
    ``::1:0:0:0``), as (hi, lo)."""
    v4: set[int] = {0, 1, 0xFFFFFFFE, 0xFFFFFFFF}
    for bits in (8, 16, 24):
        size = 1 << (32 - bits)
        for b in rng.integers(0, 1 << bits, size=n_blocks):
            first = int(b) * size
            v4 |= {a for a in (first - 1, first, first + 1, first + size - 1, first + size)}
    mapped = [(0xFFFF << 32) | a for a in sorted(v4) if 0 <= a < 1 << 32]
    outside = [(0xFFFF << 32) - 1, (0xFFFF << 32) - 2, 0x1_0000 << 32, (0x1_0000 << 32) + 1]
    lo = np.array(mapped + outside + [0, MASK64], np.uint64)
    hi = np.zeros(lo.size, np.uint64)
    hi[-1] = 1  # ::1:ffff:ffff:ffff:ffff, past the low word
    return hi, lo


@pytest.mark.parametrize("seed", range(4))
def test_ipv4_roots_at_block_edges_match_the_naive_scan(seed: int) -> None:
    """Prefixes shorter and longer than each root's blocks (/7 to /32), nested, many in a few
    /16s (nodes and leaves under a /16 entry) and one alone in its /16 (a direct entry or a
    leaf), IPv4-mapped ones written as IPv6 (up to the /96 and past it): every IPv4 root
    size gives the naive scan's answer at every /8, /16 and /24 block edge."""
    rng = np.random.default_rng(50 + seed)
    prefixes: set[str] = {"::ffff:0:0/96", "::ffff:0:0/97", "::fffe:0:0/95", "::/80"}
    crowded = [int(x) << 16 for x in rng.integers(0, 1 << 16, size=3)]
    for _ in range(400):
        length = int(rng.choice([7, 8, 12, 15, 16, 17, 20, 23, 24, 25, 28, 31, 32]))
        if rng.random() < 0.5:
            addr = crowded[int(rng.integers(3))] | int(rng.integers(0, 1 << 16))
        else:
            addr = int(rng.integers(0, 1 << 32))
        prefixes.add(str(ipaddress.ip_network((addr, length), strict=False)))
    prefixes = sorted(prefixes)
    hi, lo = block_edge_probes(rng, 300)
    extra_hi, extra_lo = probe_addresses(prefixes, rng, 3000)
    hi, lo = np.concatenate([hi, extra_hi]), np.concatenate([lo, extra_lo])
    want = naive_reference(prefixes, hi, lo)
    for bits4 in ROOTS4:
        table, asn_of = compile_prefixes(prefixes, bits4)
        assert table.index.idx4.size == 1 << bits4
        if bits4 < 24:  # blocks bigger than a /24 are never leaves: direct entries or nodes
            assert (table.index.idx4 & np.uint32(0xC0000000) != 0).all()
        got = asn_of[table.lookup(hi, lo)]
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, (bits4, hilo_to_text(hi[bad[:3]], lo[bad[:3]]).to_pylist())


def test_default_ipv4_root_size_follows_the_table() -> None:
    """Few IPv4 intervals: the 2^16 root; many: the 2^24 one. IPv6 intervals do not count."""
    from flowatlas.kernels.lpm import SMALL_V4_INTERVALS, ipv4_intervals

    table, _ = compile_prefixes(["10.0.0.0/8", "2001:db8::/32"])
    assert ipv4_intervals(table.starts_hi, table.starts_lo) == 2
    assert table.index.stats()["bits4"] == 16
    n = SMALL_V4_INTERVALS // 2 + 1  # a /32 every 256 addresses: two intervals each
    many = [f"10.{i >> 8 & 255}.{i & 255}.1/32" for i in range(n)]
    table, _ = compile_prefixes(many)
    assert ipv4_intervals(table.starts_hi, table.starts_lo) > SMALL_V4_INTERVALS
    assert table.index.stats()["bits4"] == 24
    v6 = [str(ipaddress.ip_network((0x2001 << 112 | i << 64, 64))) for i in range(n)]
    table, _ = compile_prefixes(v6)
    assert ipv4_intervals(table.starts_hi, table.starts_lo) == 0
    assert table.index.stats()["bits4"] == 16


def test_empty_and_default_route_tables() -> None:
    table, asn_of = compile_prefixes(["0.0.0.0/0"])
    hi = np.array([0, 0, 0x2001 << 48], np.uint64)
    lo = np.array([0xFFFF_0A00_0001, 1, 0], np.uint64)
    assert asn_of[table.lookup(hi, lo)].tolist() == [1, 0, 0]
    table, asn_of = compile_prefixes(["::/0"])
    assert asn_of[table.lookup(hi, lo)].tolist() == [1, 1, 1]


@pytest.mark.parametrize("bits4", [16, 24])
def test_deep_nesting_and_crowded_blocks_walk_every_index_level(bits4: int) -> None:
    """A chain ::/0 > /1 > ... > /128 and 2^12 /64s in one /52 use nodes down to the last
    level, leaves of every size, and the IPv4 /24 index with sub-/24 detail."""
    base = 0x2001_0DB8_0000_0000
    chain = [
        str(ipaddress.ip_network(((base << 64) | 0xABCD, n), strict=False)) for n in range(129)
    ]
    crowd = [str(ipaddress.ip_network(((base | i) << 64, 64))) for i in range(4096)]
    v4 = [f"10.0.0.{i}/32" for i in range(0, 256, 3)] + ["10.0.0.0/24", "10.0.0.128/25"]
    prefixes = sorted(set(chain + crowd + v4))
    table, asn_of = compile_prefixes(prefixes, bits4)
    assert table.index.stats()["nodes"] >= 6
    rng = np.random.default_rng(4)
    hi, lo = probe_addresses(prefixes, rng, 20_000)
    np.testing.assert_array_equal(
        asn_of[table.lookup(hi, lo)], pytricia_reference(prefixes, hi, lo)
    )


def test_sparse_host_routes_split_into_compressed_nodes_of_bounded_size() -> None:
    """Scattered IPv6 /128s and /64s split every block above a /64 into nodes (no leaves
    there); compressed, each costs a head line and a few runs, and lookups stay exact."""
    rng = np.random.default_rng(7)
    hosts = {
        str(
            ipaddress.ip_network(
                (int(rng.integers(1, 2**62)) << 66 | int(rng.integers(0, 2**62)), 128)
            )
        )
        for _ in range(3000)
    }
    nets = {
        str(ipaddress.ip_network((0x2A00 << 112 | int(rng.integers(0, 2**40)) << 64, 64)))
        for _ in range(3000)
    }
    prefixes = sorted(hosts | nets | {"2000::/3", "::/0"})
    table, asn_of = compile_prefixes(prefixes)
    index = table.index
    node_bytes = index.heads.nbytes + index.runs.nbytes
    assert index.stats()["nodes"] > len(prefixes)  # a path of nodes down to each /64
    assert node_bytes < 1024 * len(prefixes)
    assert index.heads.ctypes.data % 64 == 0  # one cache line per head
    hi, lo = probe_addresses(prefixes, rng, 20_000)
    np.testing.assert_array_equal(
        asn_of[table.lookup(hi, lo)], pytricia_reference(prefixes, hi, lo)
    )


#: prefixes whose IPv6 root entries lead to chains of one-path nodes (skips, see
#: flowatlas.kernels.lpm.skip_chains): alone under a root entry, as local prefixes are (a
#: chain, then a node), nested (the rest changes along the chain: it stops), the one path at
#: entry 0 and 255 and inside, chains down to the top 64 bits' end and past it (a /80, a
#: /128: nodes in the low word), the IPv4-mapped space as an IPv6 prefix (zero bytes)
CHAIN_PREFIXES = [
    "2001:db8:1::/48",
    "2620:a0::/46", "2620:a0:4::/46", "2620:a0:8::/46",
    "2a00::/16", "2a00:1450::/32", "2a00:1450:4000::/36", "2a00:1450:4000:800::/56",
    "2c0f::/24", "2d00:ff00::/24", "2e00:1f00::/24",
    "3fff:ffff:ffff:ffff::/64", "3ffe::/63", "3ffd:0:0:1::/64",
    "5000::1/128", "7000:1:2:3:4::/80", "::ffff:0:0/96", "::1/128",
    "10.0.0.0/8", "10.1.2.0/24", "192.0.2.1/32",
]  # fmt: skip


def skip_count(index) -> int:
    """Root entries of an index that are skips (bits 27-31 clear)."""
    return int((index.idx6 < np.uint32(0x08000000)).sum())


def chain_probes(prefixes: list[str], rng: np.random.Generator, n_random: int):
    """probe_addresses, plus each IPv6 prefix's first address with one byte of its top 64
    bits changed (a path that leaves the chain at every depth) and random ones inside it."""
    hi, lo = probe_addresses(prefixes, rng, n_random)
    more_hi, more_lo = [], []
    for p in prefixes:
        net = ipaddress.ip_network(p)
        if net.version != 6:
            continue
        first = int(net.network_address)
        for byte in range(8):
            for change in (0x01, 0x80, 0xFF):
                a = first ^ (change << (120 - 8 * byte))
                more_hi.append(a >> 64)
                more_lo.append(a & MASK64)
        for _ in range(8):
            a = first | (int(rng.integers(0, 2**62)) << 64 | int(rng.integers(0, 2**62))) % (
                1 << (128 - net.prefixlen)
            )
            more_hi.append(a >> 64)
            more_lo.append(a & MASK64)
    return (
        np.concatenate([hi, np.array(more_hi, np.uint64)]),
        np.concatenate([lo, np.array(more_lo, np.uint64)]),
    )


def random_chain_prefixes(rng: np.random.Generator, n_tops: int) -> list[str]:
    """A few IPv6 prefixes under each of ``n_tops`` random /16s (chains, nested ones, deep
    ones), a default route at times, and IPv4 ones."""
    out: set[str] = set()
    for _ in range(n_tops):
        top = int(rng.integers(0, 0x10000))
        base = (top << 112) | (int(rng.integers(0, 2**62)) << 48) | int(rng.integers(0, 2**48))
        for _ in range(int(rng.integers(1, 4))):
            length = int(rng.choice([17, 20, 24, 31, 32, 40, 44, 48, 56, 63, 64, 72, 96, 128]))
            if rng.random() < 0.3:  # next to the others: the chain's one path splits
                base ^= 1 << (128 - length)
            out.add(str(ipaddress.ip_network((base, length), strict=False)))
    if rng.random() < 0.5:
        out.add("::/0")
    out |= {"10.0.0.0/8", "192.168.1.0/24"}
    return sorted(out)


@pytest.mark.parametrize("bits4", [16, 24])
@pytest.mark.parametrize("bits6", [8, 16, 24])
def test_skips_against_the_naive_scan(bits6: int, bits4: int) -> None:
    """Chains of one-path nodes under IPv6 root entries become skips, for each root size;
    lookups equal a scan of the prefixes, on and off every chain's path."""
    from flowatlas.kernels.lpm import build_index, lookup_cpu, skip_chains

    rng = np.random.default_rng(bits6)
    for extra in ([], ["::/0"], ["0.0.0.0/0", "2000::/3"]):
        prefixes = sorted(set(CHAIN_PREFIXES + extra))
        table, asn_of = compile_prefixes(prefixes)
        index = build_index(table.starts_hi, table.starts_lo, table.values, bits6, bits4)
        assert skip_count(index) >= 8
        assert skip_chains(index) == 0  # none left to make
        hi, lo = chain_probes(prefixes, rng, 2000)
        got = asn_of[lookup_cpu(index, hi, lo, parallel=False)]
        np.testing.assert_array_equal(got, naive_reference(prefixes, hi, lo))


@pytest.mark.parametrize("seed", range(6))
def test_skips_on_random_chains_match_pytricia(seed: int) -> None:
    from flowatlas.kernels.lpm import build_index, lookup_cpu

    rng = np.random.default_rng(100 + seed)
    prefixes = random_chain_prefixes(rng, 60)
    table, asn_of = compile_prefixes(prefixes)
    hi, lo = chain_probes(prefixes, rng, 5000)
    want = pytricia_reference(prefixes, hi, lo)
    for bits6 in (8, 16, 24):
        index = build_index(table.starts_hi, table.starts_lo, table.values, bits6)
        assert skip_count(index) > 0
        got = asn_of[lookup_cpu(index, hi, lo, parallel=False)]
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, (bits6, hilo_to_text(hi[bad[:3]], lo[bad[:3]]).to_pylist())


def test_tables_without_chains_get_no_skips() -> None:
    """An empty table, a default route, one /16: nothing to skip. An IPv4 prefix splits the
    IPv4-mapped /96 out of ::/16, a chain of zero bytes: one skip, from root entry 0."""
    from flowatlas.kernels.lpm import build_index, lookup_cpu, skip_chains

    rng = np.random.default_rng(8)
    for prefixes, skips in (
        ([], 0), (["::/0"], 0), (["2001::/16"], 0), (["0.0.0.0/0"], 1), (["192.0.2.0/24"], 1),
    ):  # fmt: skip
        if prefixes:
            table, asn_of = compile_prefixes(prefixes)
            steps = table.starts_hi, table.starts_lo, table.values
        else:
            steps = np.zeros(1, np.uint64), np.zeros(1, np.uint64), np.full(1, -1, np.int32)
        index = build_index(*steps, 16)
        assert skip_count(index) == skips
        assert skips == 0 or index.idx6[0] < np.uint32(0x08000000)
        assert skip_chains(index) == 0
        if prefixes:
            hi, lo = chain_probes([*prefixes, "::1/128"], rng, 3000)
            got = asn_of[lookup_cpu(index, hi, lo)]
            np.testing.assert_array_equal(got, naive_reference(prefixes, hi, lo))


def test_one_prefix_is_one_skip_and_its_edges_are_exact() -> None:
    """One /48: a 32-bit skip from its /16 root entry straight to its answer."""
    from flowatlas.kernels.lpm import build_index, lookup_cpu

    table, asn_of = compile_prefixes(["2001:db8:1::/48"])
    index = build_index(table.starts_hi, table.starts_lo, table.values, 16)
    assert skip_count(index) == 1
    head = index.heads[8 * int(index.idx6[0x2001]) : 8 * int(index.idx6[0x2001]) + 4]
    assert int(head[0]) == 0x0DB80001 and int(head[1]) == 32
    inside, below, above = 0x20010DB8_0001_0000, 0x20010DB8_0000_FFFF, 0x20010DB8_0002_0000
    hi = np.array([inside, inside | 0xFFFF, below, above, inside ^ (1 << 40)], np.uint64)
    lo = np.array([0, MASK64, MASK64, 0, 0], np.uint64)
    assert asn_of[lookup_cpu(index, hi, lo)].tolist() == [1, 1, 0, 0, 0]


@pytest.mark.parametrize("bits4", [16, 24])
def test_serial_and_parallel_drivers_agree(bits4: int) -> None:
    """The two CPU drivers (each with its prefetch of the IPv4 root entries ahead)."""
    from flowatlas.kernels.lpm import lookup_cpu

    rng = np.random.default_rng(11)
    prefixes = random_prefixes(rng, 2000)
    table, _ = compile_prefixes(prefixes, bits4)
    hi, lo = probe_addresses(prefixes, rng, 200_000)
    np.testing.assert_array_equal(
        lookup_cpu(table.index, hi, lo, parallel=True),
        lookup_cpu(table.index, hi, lo, parallel=False),
    )


def test_table_bytes_are_deterministic_and_roundtrip(tmp_path) -> None:
    rng = np.random.default_rng(5)
    prefixes = random_prefixes(rng, 500)
    a, _ = compile_prefixes(prefixes)
    b, _ = compile_prefixes(list(reversed(prefixes)))  # order of rows must not matter...
    # ...except through the asn labels, which follow row order: compare the step positions
    np.testing.assert_array_equal(a.starts_hi, b.starts_hi)
    np.testing.assert_array_equal(a.starts_lo, b.starts_lo)
    a.save(tmp_path / "a.fatable")
    a.save(tmp_path / "a2.fatable")
    assert (tmp_path / "a.fatable").read_bytes() == (tmp_path / "a2.fatable").read_bytes()
    loaded = PrefixTable.load(tmp_path / "a.fatable")
    assert loaded.digest == a.digest
    hi, lo = probe_addresses(prefixes, rng, 1000)
    np.testing.assert_array_equal(loaded.lookup(hi, lo), a.lookup(hi, lo))


def test_corrupt_table_file_is_a_clear_error(tmp_path) -> None:
    from flowatlas.errors import InputError

    bad = tmp_path / "bad.fatable"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"bad\.fatable: not a flowatlas prefix table"):
        PrefixTable.load(bad)


CUDASIM_SCRIPT = textwrap.dedent(
    """
    import numpy as np, sys
    sys.path.insert(0, {tests!r})
    from test_lpm import compile_prefixes, probe_addresses, random_prefixes
    from numba import cuda
    from flowatlas.kernels.lpm import lookup_cpu, lookup_cuda
    rng = np.random.default_rng(3)
    from test_lpm import CHAIN_PREFIXES, chain_probes, skip_count
    prefixes = sorted(set(random_prefixes(rng, 300)) | set(CHAIN_PREFIXES))
    table, _ = compile_prefixes(prefixes)
    hi, lo = chain_probes(prefixes, rng, 400)
    keep = rng.permutation(hi.size)[:1500]  # random ones, boundaries, chains' paths
    hi, lo = hi[keep], lo[keep]
    from flowatlas.kernels.lpm import build_index
    for bits6, bits4 in ((16, 16), (24, 24), (16, 24)):  # the root sizes the compiler picks
        index = build_index(table.starts_hi, table.starts_lo, table.values, bits6, bits4)
        assert index.stats()["nodes"] > 0 and skip_count(index) > 0
        dev = index.to_device()
        got = lookup_cuda(dev, cuda.to_device(hi), cuda.to_device(lo), threads=64, blocks=4)
        got = got.copy_to_host()
        want = lookup_cpu(index, hi, lo)
        assert (got == want).all(), int((got != want).sum())
    print("OK", hi.size)
    """
)


def test_cuda_kernel_under_simulator() -> None:
    """The CUDA driver runs the same body: equal answers under NUMBA_ENABLE_CUDASIM=1."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    script = CUDASIM_SCRIPT.format(tests=os.path.dirname(__file__))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("OK")


@pytest.mark.gpu
def test_cuda_kernel_on_gpu() -> None:
    from numba import cuda

    from flowatlas.kernels.lpm import lookup_cuda

    rng = np.random.default_rng(9)
    prefixes = random_prefixes(rng, 5000)
    table, _ = compile_prefixes(prefixes)
    hi, lo = probe_addresses(prefixes, rng, 2_000_000)
    got = lookup_cuda(table.index.to_device(), cuda.to_device(hi), cuda.to_device(lo))
    np.testing.assert_array_equal(got.copy_to_host(), table.lookup(hi, lo))


def test_benchmark_smoke_run(tmp_path) -> None:
    """bench/bench_lpm.py keeps working (quick sizes, its own results file)."""
    from flowatlas.testing import REPO_ROOT, need_data

    need_data("prefix2asn/libloc_ipfire/libloc-prefix2as-v6.tsv.gz")
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "bench_lpm.py"),
            "--quick",
            "--n",
            "50000",
            "--results",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "## LPM lookups and prefix-table compile" in text and "| IPv6 skewed |" in text


#: run in a fresh process: a test before it in the same worker may have advised the whole
#: malloc heap for huge pages (allocator.huge_page_heap), which would flag the control too
_ADVICE_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from flowatlas.engine import allocator
    from flowatlas.kernels.lpm import index_empty

    def vm_flags(address):
        inside = False
        with open("/proc/self/smaps") as f:
            for line in f:
                head = line.split(maxsplit=1)[0]
                if "-" in head and not head.endswith(":"):
                    lo, hi = (int(x, 16) for x in head.split("-"))
                    inside = lo <= address < hi
                elif inside and head == "VmFlags:":
                    return line.split()[1:]
        return []

    allocator.numpy_huge_pages(False)
    plain = np.empty(64 << 20, np.uint8)
    root = index_empty(1 << 24, np.uint32)
    small = index_empty(1 << 10, np.uint32)  # below two huge pages: left alone
    print("hg" in vm_flags(root.ctypes.data + root.nbytes // 2),
          "hg" in vm_flags(plain.ctypes.data + plain.nbytes // 2), small.size)
    """
)


@pytest.mark.skipif(
    not os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"),
    reason="no transparent huge pages here (Linux with THP only)",
)
def test_index_arrays_are_advised_for_huge_pages_even_with_numpys_advice_off() -> None:
    """A small build turns NumPy's huge-page advice off (allocator.choose_pages); the lookup
    index's big arrays ask for huge pages themselves: a 64 MiB root on 4 KiB pages misses
    the TLB on nearly every lookup. madvise marks the mapping ``hg`` in smaps; a plain array
    of the same process (the control) stays unmarked."""
    out = subprocess.run(
        [sys.executable, "-c", _ADVICE_SCRIPT], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["True", "False", str(1 << 10)]
