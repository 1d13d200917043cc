"""The build plan: everything a worker needs to turn archive rows into partial cubes.

A plan is made once on the client from the configuration and the prefix table, then shipped
to every worker (Dask scatters it once per worker). It holds only plain data: lookup tables,
vocabularies, the time bucket. Its ``digest`` says what a cube depends on besides its input.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from flowatlas.addresses import parse_addresses, parse_prefixes, prefix_bounds
from flowatlas.classify.table import PrefixTable
from flowatlas.config import Config
from flowatlas.errors import ConfigError
from flowatlas.kernels.orient import MAX_REGIONS, MAX_TYPES
from flowatlas.kernels.tally import MAX_GEO, MAX_LINKS
from flowatlas.vocab import INTERNAL, UNKNOWN_REGION

#: the exact-distinct grouping sets of the rollups (kept dimensions)
GROUPINGS: tuple[tuple[str, ...], ...] = (
    ("region", "network_type", "direction", "ip_version"),
    ("region", "network_type"),
    ("region", "direction"),
    ("region",),
    ("network_type",),
    ("network_type", "direction"),
    ("ip_version",),
    (),
)


@dataclass
class BuildPlan:
    """What every partition of a build needs (picklable, shipped once per worker).

    Its prefix tables pickle without their lookup index (see ``PrefixTable.__reduce_ex__``):
    a worker maps the table's file again where it can, else builds the index once.
    """

    regions: tuple[str, ...]
    network_types: tuple[str, ...]
    local_table: PrefixTable
    local_region: np.ndarray  # network id of local_table -> region index (last entry: -1)
    class_table: PrefixTable
    type_codes: np.ndarray  # network id of class_table -> network type index (last: Unknown)
    user_override: np.ndarray  # network id -> True if a user rule set its type (last: False)
    exporters: dict[bytes, tuple[int, int]]  # 16-byte address -> (exporter id, region index)
    rule_keys: np.ndarray
    rule_types: np.ndarray
    bucket_us: int
    rollups: tuple[str, ...]
    partitions: int
    v6_prefix: int
    sketch_p: int
    sketch_period: str
    backend: str = "cpu"  # where the per-record kernels run: "cpu" or "gpu" (not in digest)
    config: dict[str, Any] = field(default_factory=dict)
    #: per rule of rule_keys: the index (in ``link_names``) of its interface link
    rule_links: np.ndarray = field(default_factory=lambda: np.empty(0, np.int16))
    #: the configured links' names, by index (interface links are measured, see track_links)
    link_names: tuple[str, ...] = ()
    #: network id of class_table -> (country, metro) code (last entry: no match), or None
    #: where the table names no country or metro (the geography table is then skipped)
    geo_of: np.ndarray | None = None
    geo_names: tuple[tuple[str | None, str | None], ...] = ()

    @property
    def internal_type(self) -> int:
        return self.network_types.index(INTERNAL)

    @property
    def track_links(self) -> bool:
        """Whether the map step records which interface link carries each record."""
        return bool(self.rule_keys.size)

    @property
    def track_geo(self) -> bool:
        """Whether the map step sums volume by the remote network's country and metro."""
        return self.geo_of is not None

    def digest(self) -> str:
        """Hash of what the cube's values depend on besides the archive."""
        blob = json.dumps(
            {
                "config": self.config,
                "table": self.class_table.digest,
                "regions": self.regions,
                "network_types": self.network_types,
                "bucket_us": self.bucket_us,
                "rollups": self.rollups,
                "v6_prefix": self.v6_prefix,
                "sketch_p": self.sketch_p,
                "sketch_period": self.sketch_period,
            },
            sort_keys=True,
        ).encode()
        return hashlib.sha256(blob).hexdigest()


def _local_table(config: Config) -> tuple[PrefixTable, np.ndarray]:
    """A prefix table of our own prefixes whose networks map to region indexes (1-based).

    Network i is region i + 1 (``networks`` has its name as ``org``); an address outside
    every prefix has no network (-1). The most specific prefix holding an address decides
    (:func:`~flowatlas.config.check_regions` has refused one prefix in two regions).

    A sweep over the prefixes' edges in Python: a configuration lists a few prefixes, and the
    compiler (:func:`~flowatlas.classify.compiler.compile_layers`, which a table of sources
    needs) loaded four numba kernels for them, 0.1-0.4 s of a build's start before its first
    map task (tests/test_plan.py checks the two against each other).
    """
    prefixes: list[str] = []
    region_of: list[int] = []
    for ri, region in enumerate(config.regions):
        prefixes.extend(region.prefixes)
        region_of.extend([ri] * len(region.prefixes))
    hi, lo, ln, _ = parse_prefixes(prefixes, source=f"{config.origin}: region prefixes")
    s_hi, s_lo, e_hi, e_lo = prefix_bounds(hi, lo, ln)
    starts = [(int(h) << 64) | int(lw) for h, lw in zip(s_hi.tolist(), s_lo.tolist(), strict=True)]
    ends = [(int(h) << 64) | int(lw) for h, lw in zip(e_hi.tolist(), e_lo.tolist(), strict=True)]
    # prefixes nest or are disjoint: by start, then the widest first, each one opens inside
    # the ones still open before it; the innermost open one decides
    order = sorted(range(len(starts)), key=lambda i: (starts[i], -ends[i]))
    edges = sorted({0, *starts, *(e + 1 for e in ends if e + 1 < 1 << 128)})
    out_at: list[int] = []
    out_value: list[int] = []
    open_: list[int] = []  # prefixes holding the current edge, innermost last
    k = 0
    for at in edges:
        while open_ and ends[open_[-1]] < at:
            open_.pop()
        while k < len(order) and starts[order[k]] == at:
            open_.append(order[k])
            k += 1
        value = region_of[open_[-1]] if open_ else -1
        if not out_value or out_value[-1] != value:
            out_at.append(at)
            out_value.append(value)
    mask = (1 << 64) - 1
    table = PrefixTable(
        np.array([a >> 64 for a in out_at], np.uint64),
        np.array([a & mask for a in out_at], np.uint64),
        np.array(out_value, np.int32),
        pa.table({"org": pa.array([r.name for r in config.regions], pa.string())}),
    )
    local_region = np.arange(1, len(config.regions) + 2, dtype=np.int32)
    local_region[-1] = -1
    return table, local_region


def make_plan(
    config: Config, table: PrefixTable, *, partitions: int = 8, backend: str = "cpu"
) -> BuildPlan:
    """Check the configuration against the table and build the plan."""
    regions = (UNKNOWN_REGION, *(r.name for r in config.regions))
    if len(regions) > MAX_REGIONS:
        raise ConfigError(f"{config.origin}: at most {MAX_REGIONS - 1} regions are supported")
    network_types = config.network_types
    for t in table.network_types_used:
        if t not in network_types:
            network_types = (*network_types, t)
    if len(network_types) > MAX_TYPES:
        raise ConfigError(f"{config.origin}: at most {MAX_TYPES} network types are supported")
    type_codes = table.type_codes(network_types)
    local_table, local_region = _local_table(config)

    exporters: dict[bytes, tuple[int, int]] = {}
    for ri, region in enumerate(config.regions, start=1):
        if not region.exporters:
            continue
        hi, lo, _ = parse_addresses(list(region.exporters), source=f"{config.origin}: exporters")
        for h, lw, text in zip(hi, lo, region.exporters, strict=True):
            key = int(h).to_bytes(8, "big") + int(lw).to_bytes(8, "big")
            if key in exporters and exporters[key][1] != ri:
                raise ConfigError(f"{config.origin}: exporter {text} is listed in two regions")
            exporters[key] = (len(exporters), ri)
    keys: list[int] = []
    kinds: list[int] = []
    links: list[int] = []
    if len(config.links) > MAX_LINKS:
        raise ConfigError(f"{config.origin}: at most {MAX_LINKS} links are supported")
    for li, rule in enumerate(config.links):
        if not rule.is_interface_link:
            continue
        h, lw, _ = parse_addresses([rule.exporter], source=f"{config.origin}: links")
        key = int(h[0]).to_bytes(8, "big") + int(lw[0]).to_bytes(8, "big")
        if key not in exporters:
            exporters[key] = (len(exporters), 0)
        ex_id = exporters[key][0]
        for ifindex in rule.interfaces:
            keys.append((ex_id << 32) | ifindex)
            # -1: the link measures its flows without setting their type
            kinds.append(
                -1 if rule.network_type is None else network_types.index(rule.network_type)
            )
            links.append(li)
    order = np.argsort(np.array(keys, dtype=np.uint64), kind="stable")
    rule_keys = np.array(keys, dtype=np.uint64)[order]
    rule_types = np.array(kinds, dtype=np.int16)[order]
    rule_links = np.array(links, dtype=np.int16)[order]
    if rule_keys.size and (np.diff(rule_keys) == 0).any():
        raise ConfigError(
            f"{config.origin}: an exporter interface is claimed by two [[links]] rules"
        )

    return BuildPlan(
        regions=regions,
        network_types=network_types,
        local_table=local_table,
        local_region=local_region,
        class_table=table,
        type_codes=type_codes.astype(np.int16),
        user_override=table.user_override_mask().astype(np.bool_),
        exporters=exporters,
        rule_keys=rule_keys,
        rule_types=rule_types,
        bucket_us=config.cube.bucket_seconds * 1_000_000,
        rollups=tuple(config.cube.rollups),
        partitions=max(1, int(partitions)),
        v6_prefix=config.cube.ipv6_prefix,
        sketch_p=config.cube.sketch_precision,
        sketch_period=config.cube.sketch_period,
        backend=backend,
        config=config.to_dict(),
        rule_links=rule_links,
        link_names=tuple(lk.name for lk in config.links),
        **_geography(table, config),
    )


def _geography(table: PrefixTable, config: Config) -> dict[str, Any]:
    """Each network's (country, metro) code and the codes' pairs (see
    :attr:`PrefixTable.geography`); nothing where the table has no country or metro at all."""
    geo = table.geography
    if geo is None:
        return {}
    code, names = geo
    if len(names) > MAX_GEO:
        raise ConfigError(
            f"{config.origin}: the prefix table has {len(names)} (country, metro) pairs; "
            f"at most {MAX_GEO} are supported"
        )
    return {"geo_of": code.copy(), "geo_names": names}


__all__ = ["GROUPINGS", "BuildPlan", "make_plan"]
