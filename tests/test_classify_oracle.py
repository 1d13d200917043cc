"""Oracle tests on the real, full routing tables: every lookup equals a trivially correct
reference (a sorted scan for ip-location-db's ranges, pytricia for libloc's prefixes) on
random addresses plus every range or prefix boundary.

CI runs ip-location-db at full size (10^6 random addresses and every boundary) and libloc on
a bounded sample; ``--full`` (or FLOWATLAS_FULL=1) runs libloc at full size too.
"""

from __future__ import annotations

import bisect
import ipaddress

import numpy as np
import pytest

from flowatlas.addresses import hilo_to_text, is_v4
from flowatlas.classify.compiler import compile_layers
from flowatlas.classify.sources import read_source
from flowatlas.classify.table import PrefixTable
from flowatlas.testing import need_data

IPLOC = "prefix2asn/ip-location-db_asn"
LIBLOC = "prefix2asn/libloc_ipfire"
M64 = (1 << 64) - 1


def boundaries(s_hi, s_lo, e_hi, e_lo) -> tuple[np.ndarray, np.ndarray]:
    """start - 1, start, end, end + 1 of every range (wrapping at the ends of the space)."""
    hi = np.concatenate([s_hi, s_hi, e_hi, e_hi])
    lo = np.concatenate([s_lo, s_lo, e_lo, e_lo])
    n = s_hi.size
    one = np.uint64(1)
    with np.errstate(over="ignore"):
        lo[:n] = s_lo - one
        hi[:n] = s_hi - (s_lo == 0).astype(np.uint64)
        lo[3 * n :] = e_lo + one
        hi[3 * n :] = e_hi + (e_lo == np.uint64(M64)).astype(np.uint64)
    return hi, lo


def random_addresses(rng: np.random.Generator, n: int, s_hi, s_lo, e_hi, e_lo):
    """A third uniform IPv4, a third uniform in 2000::/3, a third inside random table rows."""
    k = n // 3
    hi = np.zeros(n, np.uint64)
    lo = np.zeros(n, np.uint64)
    lo[:k] = np.uint64(0xFFFF00000000) | rng.integers(0, 2**32, k, dtype=np.uint64)
    hi[k : 2 * k] = np.uint64(0x2000 << 48) | (
        rng.integers(0, 2**61, k, dtype=np.uint64) & np.uint64(0x1FFF_FFFF_FFFF_FFFF)
    )
    lo[k : 2 * k] = rng.integers(0, 2**63, k, dtype=np.uint64)
    pick = rng.integers(0, s_hi.size, n - 2 * k)
    span_hi = e_hi[pick] - s_hi[pick]
    r_hi = rng.integers(0, 2**63, n - 2 * k, dtype=np.uint64)
    r_lo = rng.integers(0, 2**63, n - 2 * k, dtype=np.uint64)
    # a random offset inside the row: keep it simple and exact by clamping to the row's end
    inside_hi = s_hi[pick] + np.where(span_hi > 0, r_hi % np.maximum(span_hi, 1), 0)
    inside_lo = np.where(
        inside_hi == s_hi[pick], s_lo[pick] | (r_lo & (e_lo[pick] ^ s_lo[pick])), r_lo
    )
    over = (inside_hi == e_hi[pick]) & (inside_lo > e_lo[pick])
    inside_lo[over] = e_lo[pick][over]
    hi[2 * k :] = inside_hi
    lo[2 * k :] = inside_lo
    return hi, lo


def sorted_scan_reference(layer, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """ASN of the range holding each address, for ranges that do not nest: the last range that
    starts at or before the address, if it has not ended (a sorted scan by bisection)."""
    s = [(int(a) << 64) | int(b) for a, b in zip(layer.start_hi, layer.start_lo, strict=True)]
    e = [(int(a) << 64) | int(b) for a, b in zip(layer.end_hi, layer.end_lo, strict=True)]
    asn = layer.attrs.column("asn").to_numpy(zero_copy_only=False)
    order = sorted(range(len(s)), key=lambda i: (s[i], i))
    ss = [s[i] for i in order]
    out = np.zeros(hi.size, dtype=np.int64)
    for k, a in enumerate(((int(h) << 64) | int(lw) for h, lw in zip(hi, lo, strict=True))):
        j = bisect.bisect_right(ss, a) - 1
        if j >= 0 and a <= e[order[j]]:
            out[k] = asn[order[j]]
    return out


def asns_of(table: PrefixTable, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    asn = np.append(table.networks.column("asn").to_numpy().astype(np.int64), 0)
    return asn[table.lookup(hi, lo)]


def compiled(layers, bits6: int = 16) -> PrefixTable:
    c = compile_layers(layers)
    return PrefixTable(c.starts_hi, c.starts_lo, c.values, c.networks, {"bits6": bits6})


def test_ip_location_db_full_tables_match_sorted_scan() -> None:
    root = need_data(f"{IPLOC}/asn-ipv4.csv.gz", f"{IPLOC}/asn-ipv6.csv.gz")
    layers = [read_source(root / IPLOC / f)[0] for f in ("asn-ipv4.csv.gz", "asn-ipv6.csv.gz")]
    table = compiled(layers)
    rng = np.random.default_rng(2026)
    for layer in layers:
        # the reference assumes ranges do not nest (true of these files; one partial overlap
        # in the IPv4 file follows the documented rule: the later start wins)
        order = np.lexsort((layer.start_lo, layer.start_hi))
        e = [
            (int(a) << 64) | int(b)
            for a, b in zip(layer.end_hi[order], layer.end_lo[order], strict=True)
        ]
        s = [
            (int(a) << 64) | int(b)
            for a, b in zip(layer.start_hi[order], layer.start_lo[order], strict=True)
        ]
        assert not any(e[i + 1] <= e[i] for i in range(len(s) - 1) if s[i + 1] <= e[i])
        b_hi, b_lo = boundaries(layer.start_hi, layer.start_lo, layer.end_hi, layer.end_lo)
        r_hi, r_lo = random_addresses(
            rng, 500_000, layer.start_hi, layer.start_lo, layer.end_hi, layer.end_lo
        )
        hi = np.concatenate([b_hi, r_hi])
        lo = np.concatenate([b_lo, r_lo])
        got = asns_of(table, hi, lo)
        four = is_v4(hi, lo)
        want = np.zeros(hi.size, dtype=np.int64)
        want[four] = sorted_scan_reference(layers[0], hi[four], lo[four])
        want[~four] = sorted_scan_reference(layers[1], hi[~four], lo[~four])
        assert (want > 0).mean() > 0.3  # the probes do hit the table
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, (
            f"{bad.size} of {hi.size} differ, e.g. {hilo_to_text(hi[bad[:3]], lo[bad[:3]])}"
        )


def _pytricia_asns(layers, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    pytricia = pytest.importorskip("pytricia")
    trie = pytricia.PyTricia(128)
    for layer in layers:
        asn = layer.attrs.column("asn").fill_null(0).to_numpy()
        texts = hilo_to_text(layer.start_hi, layer.start_lo).to_pylist()
        span = [
            ((int(eh) << 64) | int(el)) - ((int(sh) << 64) | int(sl))
            for sh, sl, eh, el in zip(
                layer.start_hi, layer.start_lo, layer.end_hi, layer.end_lo, strict=True
            )
        ]
        v4 = is_v4(layer.start_hi, layer.start_lo)
        for t, sp, a, four in zip(texts, span, asn, v4, strict=True):
            key = f"::ffff:{t}" if four else t
            trie[f"{key}/{128 - sp.bit_length()}"] = int(a)
    out = np.zeros(hi.size, dtype=np.int64)
    for k, a in enumerate(hilo_to_text(hi, lo).to_pylist()):
        out[k] = trie.get(f"::ffff:{a}" if "." in a else a, 0)
    return out


@pytest.mark.parametrize("size", ["bounded", pytest.param("full", marks=pytest.mark.slow)])
def test_libloc_full_tables_match_pytricia(size: str, full_size: bool) -> None:
    if size == "full" and not full_size:
        pytest.skip("full size (10^6 random + every boundary of 1.29 M prefixes): run with --full")
    root = need_data(f"{LIBLOC}/libloc-prefix2as-v4.tsv.gz", f"{LIBLOC}/libloc-prefix2as-v6.tsv.gz")
    layers = [
        read_source(root / LIBLOC / f, "libloc")[0]
        for f in ("libloc-prefix2as-v4.tsv.gz", "libloc-prefix2as-v6.tsv.gz")
    ]
    assert sum(len(x) for x in layers) == 1_290_053
    table = compiled(layers, bits6=24)  # what `classify compile` picks for big IPv6 tables
    rng = np.random.default_rng(7)
    his, los = [], []
    for layer in layers:
        b_hi, b_lo = boundaries(layer.start_hi, layer.start_lo, layer.end_hi, layer.end_lo)
        n_random = 500_000 if size == "full" else 60_000
        if size != "full":
            keep = rng.choice(b_hi.size, 60_000, replace=False)
            b_hi, b_lo = b_hi[keep], b_lo[keep]
        r_hi, r_lo = random_addresses(
            rng, n_random, layer.start_hi, layer.start_lo, layer.end_hi, layer.end_lo
        )
        his += [b_hi, r_hi]
        los += [b_lo, r_lo]
    hi, lo = np.concatenate(his), np.concatenate(los)
    got = asns_of(table, hi, lo)
    want = _pytricia_asns(layers, hi, lo)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (
        f"{bad.size} of {hi.size} differ: {hilo_to_text(hi[bad[:3]], lo[bad[:3]])}"
    )


def test_reference_helpers_agree_on_a_small_case() -> None:
    """The two references agree with each other (and ipaddress) on a hand-made case."""
    from flowatlas.addresses import parse_prefixes, prefix_bounds

    nets = ["10.0.0.0/8", "2001:db8::/32"]
    hi, lo, ln, _ = parse_prefixes(nets)
    s = prefix_bounds(hi, lo, ln)
    b_hi, b_lo = boundaries(*s)
    texts = hilo_to_text(b_hi, b_lo).to_pylist()
    assert texts == [
        "9.255.255.255",
        "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
        "10.0.0.0",
        "2001:db8::",
        "10.255.255.255",
        str(ipaddress.ip_network(nets[1])[-1]),
        "11.0.0.0",
        "2001:db9::",
    ]
