"""Precedence, written down in docs/classification.md, tested tier by tier and against a
naive reference on random overlapping sources of different precedence."""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa
import pytest

from flowatlas.addresses import parse_addresses, parse_prefixes, prefix_bounds
from flowatlas.classify import build_table
from flowatlas.classify.compiler import AsnTable, Layer, compile_layers
from flowatlas.classify.table import PrefixTable
from flowatlas.config import SourceSpec


def layer(name: str, rows: list[tuple], tier: str = "prefix") -> Layer:
    """rows: (prefix, network_type, asn, org)."""
    hi, lo, ln, _ = parse_prefixes([r[0] for r in rows])
    attrs = pa.table(
        {
            "network_type": pa.array([r[1] for r in rows], pa.string()),
            "asn": pa.array([r[2] for r in rows], pa.uint32()),
            "org": pa.array([r[3] for r in rows], pa.string()),
        }
    )
    return Layer(name, *prefix_bounds(hi, lo, ln), attrs, tier=tier)


def asn_table(name: str, rows: dict[int, str], tier: str = "asn") -> AsnTable:
    keys = sorted(rows)
    return AsnTable(
        name,
        np.array(keys),
        pa.table({"network_type": pa.array([rows[k] for k in keys])}),
        tier=tier,
    )


def classify(layers, tables, *addresses):
    c = compile_layers(layers, asn_tables=tables)
    t = PrefixTable(c.starts_hi, c.starts_lo, c.values, c.networks)
    hi, lo, _ = parse_addresses(list(addresses))
    return t, [t.describe(int(i)) for i in t.lookup(hi, lo)]


def test_each_tier_beats_the_next() -> None:
    routing = layer("routing", [("10.0.0.0/8", None, 64500, "Routed Org")], "routing")
    cloud = layer("cloud", [("10.1.0.0/16", "Hyperscaler", None, "Cloud")])
    user = layer("user", [("10.1.1.0/24", "Neocloud", None, None)], "override")
    asn_user = asn_table("user-asn", {64500: "Hosting"}, "override")
    asn_tab = asn_table("asns", {64500: "ISP Regional"})
    addrs = ("10.1.1.1", "10.1.2.1", "10.2.0.1", "11.0.0.1")

    _, got = classify([routing], [], *addrs)
    assert [g["network_type"] for g in got] == ["Unknown"] * 4  # no type anywhere
    _, got = classify([routing], [asn_tab], *addrs)
    assert [g["tier"] for g in got] == ["asn", "asn", "asn", "none"]
    assert got[0]["network_type"] == "ISP Regional"
    _, got = classify([cloud, routing], [asn_tab], *addrs)
    assert [g["network_type"] for g in got[:3]] == ["Hyperscaler", "Hyperscaler", "ISP Regional"]
    assert got[0]["asn"] == 64500 and got[0]["org"] == "Cloud"  # ASN from routing, org from cloud
    _, got = classify([cloud, routing], [asn_user, asn_tab], *addrs)
    assert [g["network_type"] for g in got[:3]] == ["Hosting"] * 3  # user ASN rule > prefix list
    assert got[0]["tier"] == "override-asn"
    t, got = classify([user, cloud, routing], [asn_user, asn_tab], *addrs)
    assert [g["network_type"] for g in got[:3]] == ["Neocloud", "Hosting", "Hosting"]
    assert [g["tier"] for g in got] == ["override", "override-asn", "override-asn", "none"]
    assert got[0]["prefix"] == "10.1.1.0/24" and got[0]["source"] == "user"
    mask = t.user_override_mask()
    hi, lo, _ = parse_addresses(list(addrs))
    assert mask[t.lookup(hi, lo)].tolist() == [True, True, True, False]


def test_most_specific_wins_within_a_source_not_across() -> None:
    a = layer("a", [("10.0.0.0/8", "CDN", None, None), ("10.1.0.0/16", "Hosting", None, None)])
    b = layer("b", [("10.1.1.0/24", "Neocloud", None, None)])
    _, got = classify([a, b], [], "10.1.1.1", "10.1.2.1", "10.2.0.1")
    # b's /24 is more specific but a comes first in precedence: a wins everywhere it speaks
    assert [g["network_type"] for g in got] == ["Hosting", "Hosting", "CDN"]
    _, got = classify([b, a], [], "10.1.1.1", "10.1.2.1")
    assert [g["network_type"] for g in got] == ["Neocloud", "Hosting"]


def test_build_table_orders_layers_by_tier_not_by_config_order(tmp_path) -> None:
    routes = tmp_path / "routes.csv"
    routes.write_text("prefix,asn,org,network_type\n10.0.0.0/8,64500,R,ISP Tier1\n")
    cloud = tmp_path / "cloud.txt"
    cloud.write_text("10.1.0.0/16\n")
    over = tmp_path / "over.toml"
    over.write_text('[[prefix]]\nprefix = "10.1.1.0/24"\nnetwork_type = "CDN"\n')
    specs = [
        SourceSpec(str(routes), "prefix-csv", "", (("tier", "routing"),)),
        SourceSpec(str(cloud), "cidr-list", "", (("network_type", "Hyperscaler"),)),
        SourceSpec(str(over), "overrides"),
    ]
    t = build_table(specs)
    hi, lo, _ = parse_addresses(["10.1.1.1", "10.1.2.1", "10.2.0.1"])
    got = [t.describe(int(i)) for i in t.lookup(hi, lo)]
    assert [g["network_type"] for g in got] == ["CDN", "Hyperscaler", "ISP Tier1"]
    assert [g["asn"] for g in got] == [64500] * 3
    assert [s["tier"] for s in t.sources] == ["override", "prefix", "routing"]


def _random_net(rng: np.random.Generator) -> str:
    if rng.random() < 0.6:
        base = int(rng.integers(0, 2**10)) << 22  # a crowded IPv4 corner
        net = ipaddress.ip_network(
            (base | int(rng.integers(0, 2**22)), int(rng.integers(6, 33))), strict=False
        )
    else:
        addr = (0x2001_0DB8 << 96) | (int(rng.integers(0, 2**20)) << 76)
        net = ipaddress.ip_network((addr, int(rng.integers(24, 129))), strict=False)
    return str(net)


def _as128(p: str) -> ipaddress.IPv6Network:
    net = ipaddress.ip_network(p)
    if net.version == 4:
        return ipaddress.ip_network(f"::ffff:{net.network_address}/{net.prefixlen + 96}")
    return net


@pytest.mark.parametrize("seed", [0, 1])
def test_random_overlapping_sources_match_naive_reference(seed: int) -> None:
    """Three layers (override, prefix, routing) and two ASN tables, random and overlapping."""
    rng = np.random.default_rng(seed)
    types = ["CDN", "Hosting", "Hyperscaler", None]
    layers, specs = [], []
    for name, tier, n in (
        ("user", "override", 40),
        ("cloud", "prefix", 150),
        ("bgp", "routing", 300),
    ):
        rows = []
        for _ in range(n):
            t = types[int(rng.integers(0, 4))] if name != "bgp" else None
            asn = int(rng.integers(1, 20)) if rng.random() < 0.5 or name == "bgp" else None
            rows.append((_random_net(rng), t, asn, f"{name}-org{int(rng.integers(0, 5))}"))
        layers.append(layer(name, rows, tier))
        specs.append((tier, rows))
    user_asn = {int(a): "Neocloud" for a in rng.integers(1, 20, 3)}
    asn_types = {int(a): types[int(rng.integers(0, 3))] for a in rng.integers(1, 20, 10)}
    tables = [asn_table("user-asn", user_asn, "override"), asn_table("asns", asn_types)]
    c = compile_layers(layers, asn_tables=tables)
    table = PrefixTable(c.starts_hi, c.starts_lo, c.values, c.networks)

    # probes: every boundary and random points in the crowded spaces
    probes: set[int] = set()
    for _, rows in specs:
        for r in rows:
            net = _as128(r[0])
            for a in (int(net.network_address), int(net.broadcast_address)):
                probes.update(x for x in (a - 1, a, a + 1) if 0 <= x < 2**128)
    for _ in range(3000):
        probes.add(
            (0xFFFF << 32) | (int(rng.integers(0, 2**10)) << 22) | int(rng.integers(0, 2**22))
        )
    probes_l = sorted(probes)
    hi = np.array([p >> 64 for p in probes_l], np.uint64)
    lo = np.array([p & (2**64 - 1) for p in probes_l], np.uint64)
    got = [table.describe(int(i)) for i in table.lookup(hi, lo)]

    pytricia = pytest.importorskip("pytricia")
    tries = []
    for _, rows in specs:
        trie = pytricia.PyTricia(128)
        for i, r in enumerate(rows):  # the later of identical prefixes wins, as in the compiler
            trie[str(_as128(r[0]))] = i
        tries.append((trie, rows))

    def lpm(trie_rows, a):  # most specific row of one layer holding address a
        trie, rows = trie_rows
        i = trie.get(str(ipaddress.IPv6Address(a)))
        return None if i is None else rows[i]

    for a, g in zip(probes_l, got, strict=True):
        hits = [lpm(tr, a) for tr in tries]
        asn = next((h[2] for h in hits if h is not None and h[2] is not None), 0)
        org = next((h[3] for h in hits if h is not None and h[3] is not None), None)
        if hits[0] is not None and hits[0][1] is not None:
            want = hits[0][1]
        elif asn in user_asn:
            want = user_asn[asn]
        elif any(h is not None and h[1] is not None for h in hits[1:]):
            want = next(h[1] for h in hits[1:] if h is not None and h[1] is not None)
        elif asn_types.get(asn) is not None:
            want = asn_types[asn]
        else:
            want = "Unknown"
        assert (g["network_type"], g["asn"], g["org"]) == (want, asn, org), hex(a)
