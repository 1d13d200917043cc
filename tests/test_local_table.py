"""The configuration's own prefixes as a lookup table (engine.plan._local_table): the region
of every address against the prefix compiler's answer and a naive scan, on random nested
prefixes and on the edges of the address space."""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa
import pytest
from test_lpm import naive_reference, probe_addresses, random_prefixes

from flowatlas.addresses import parse_prefixes, prefix_bounds
from flowatlas.classify.compiler import Layer, compile_layers
from flowatlas.classify.table import PrefixTable
from flowatlas.config import Config, Region, check_regions
from flowatlas.engine.plan import _local_table


def compiled_regions(config: Config, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Region index (1-based, -1 for none) of each address by the prefix compiler, as the
    local table was made before it had a sweep of its own."""
    prefixes: list[str] = []
    names: list[str] = []
    for region in config.regions:
        prefixes.extend(region.prefixes)
        names.extend([region.name] * len(region.prefixes))
    p_hi, p_lo, ln, _ = parse_prefixes(prefixes)
    layer = Layer("regions", *prefix_bounds(p_hi, p_lo, ln), pa.table({"org": pa.array(names)}))
    c = compile_layers([layer])
    table = PrefixTable(c.starts_hi, c.starts_lo, c.values, c.networks)
    index = {r.name: i + 1 for i, r in enumerate(config.regions)}
    region = np.array([index[o] for o in c.networks.column("org").to_pylist()] + [-1], np.int32)
    return region[table.lookup(hi, lo)]


def regions_of(config: Config, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    table, local_region = _local_table(config)
    return local_region[table.lookup(hi, lo)]


def random_config(rng: np.random.Generator, n: int, n_regions: int) -> Config:
    """Random nested IPv4 and IPv6 prefixes dealt to regions, a prefix to one region only
    (listed twice in it now and then)."""
    prefixes = random_prefixes(rng, n)
    p_hi, p_lo, ln, _ = parse_prefixes(prefixes)  # one of each prefix however written
    keys = list(zip(p_hi.tolist(), p_lo.tolist(), ln.tolist(), strict=True))
    prefixes = [p for i, p in enumerate(prefixes) if keys[i] not in keys[:i]]
    owner = rng.integers(0, n_regions, size=len(prefixes))
    lists: list[list[str]] = [[] for _ in range(n_regions)]
    for p, r in zip(prefixes, owner.tolist(), strict=True):
        lists[r].append(p)
        if rng.random() < 0.05:
            lists[r].append(p)
    for one in lists:
        rng.shuffle(one)
    regions = tuple(Region(f"R{i}", tuple(one)) for i, one in enumerate(lists))
    return Config(regions=regions)


@pytest.mark.parametrize("seed", range(5))
def test_local_table_matches_the_compiler_and_a_scan(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    config = random_config(rng, [5, 40, 300, 1500, 60][seed], [1, 3, 7, 20, 2][seed])
    check_regions(config)
    every = [p for r in config.regions for p in r.prefixes]
    hi, lo = probe_addresses(every, rng, 5000)
    got = regions_of(config, hi, lo)
    np.testing.assert_array_equal(got, compiled_regions(config, hi, lo))
    # the scan's answer is the 1-based index of the longest prefix in `every`; map it to its
    # region (a prefix listed twice is in one region, so either copy gives it)
    region_of = np.array(
        [-1] + [i + 1 for i, r in enumerate(config.regions) for _ in r.prefixes], np.int32
    )
    np.testing.assert_array_equal(got, region_of[naive_reference(every, hi, lo)])


def test_local_table_edges_of_the_address_space() -> None:
    """Prefixes at both ends of the space, the whole space, nested at one start, one region
    without prefixes, and a configuration without any prefix (no address is ours)."""
    regions = (
        Region("A", ("::/0", "255.255.255.255/32", "0.0.0.0/32")),
        Region("B", ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "::/128", "10.0.0.0/8")),
        Region("C", ()),
        Region("D", ("10.0.0.0/9", "10.0.0.0/16", "::ffff:0:0/96")),
    )
    config = Config(regions=regions)
    every = [p for r in regions for p in r.prefixes]
    rng = np.random.default_rng(4)
    hi, lo = probe_addresses(every, rng, 3000)
    np.testing.assert_array_equal(regions_of(config, hi, lo), compiled_regions(config, hi, lo))
    ten = int(ipaddress.ip_address("::ffff:10.128.0.0"))
    got = regions_of(config, np.zeros(3, np.uint64), np.array([ten, ten - 1, 1], np.uint64))
    assert got.tolist() == [2, 4, 1]  # B's /8 past D's /9; D's /16 inside it; A's ::/0
    empty = Config(regions=(Region("A"), Region("B")))
    assert (regions_of(empty, hi, lo) == -1).all()
