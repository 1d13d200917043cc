"""A synthetic half-year of flow records from the world of the seed report.

``flowatlas synth`` writes a real flow archive (schema v1, day-partitioned Parquet) together
with the configuration (regions, exporters, private links) and the prefix table of its world,
so that ``flowatlas build`` runs the real pipeline on it. Everything is deterministic from the
seed: the same arguments give the same bytes, whatever the number of worker processes.

The world (see docs/synth.md):

- three regions: US-West (largest, most distinct remote IPs), US-East (nearest the
  neoclouds), CA-East (newest, smallest), each with border routers, some sampling 1:1000 and
  some unsampled, and a router with private fibre links (Migration);
- remote networks of each type with their own IPv4 and IPv6 address space, nested where the
  real Internet nests (CDN caches inside ISPs, hosting customers inside Tier1 aggregates);
- traffic with daily and weekly cycles; neocloud traffic rising sharply in July to an October
  peak, staying up through November, with a higher baseline at year end; migration
  concentrated in August to October; hyperscaler traffic quiet in the summer and heavy from
  October; the seed's quarter-over-quarter shares (docs/synth.md);
- remote networks placed in metros and countries: neoclouds and hyperscalers in the seed's
  metros, skewed to the East Coast by bytes; regional ISPs near each region's people;
- few remote IPs with very heavy, long transfers for Neocloud and Hyperscaler, many IPs with
  light flows for the ISP types.

Records are generated a day at a time in chunks, so memory stays bounded for any size.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import json
import math
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from flowatlas import __version__
from flowatlas.addresses import bytes16_to_hilo, hilo_to_bytes16, parse_prefixes, prefix_bounds
from flowatlas.config import ClassifySettings as _ClassifySettings
from flowatlas.config import Config, LinkRule, Region, SourceSpec, dump_config
from flowatlas.errors import ConfigError, OutputError
from flowatlas.io.archive import (
    DEFAULT_COMPRESSION,
    ArchiveWriter,
    _ensure_writable_dir,
    check_compression,
)
from flowatlas.io.swap import output_lock, partial_path, recover_output, swap_into_place
from flowatlas.schema import COUNTS_RAW, TIMESTAMP

US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR
CHUNK_ROWS = 1 << 20
OUR_ASN = 4_200_000_001
#: the file that marks a folder as a synthetic archive (and holds its parameters)
SYNTH_MARKER = "_synth.json"

# --------------------------------------------------------------------------- the world's shape

REGIONS = ("US-West", "US-East", "CA-East")
#: UTC offset of each region's people, for the daily cycle (hours)
REGION_UTC_OFFSET = {"US-West": -8, "US-East": -5, "CA-East": -5}

TYPES = ("CDN", "Hosting", "Hyperscaler", "ISP Regional", "ISP Tier1", "Neocloud", "Unknown")

#: baseline traffic (Gbps, both directions) per type and region; with the trends below these
#: give the seed's shares of all traffic over the demo's half-year: Q3 2025 (its "previous
#: report") -> Q4 2025: other clouds 36.2 -> 49.6 %, Neocloud 19.8 -> 18.4 %, Hyperscaler
#: 3.5 -> 18 % (tests/test_findings.py; docs/synth.md says how they were solved for)
BASE_GBPS = {
    "ISP Regional": (900.0, 330.0, 110.0),
    "ISP Tier1": (240.0, 150.0, 55.0),
    "CDN": (280.0, 170.0, 40.0),
    "Hosting": (286.0, 225.5, 67.6),
    "Hyperscaler": (64.6, 76.4, 14.7),
    "Neocloud": (75.0, 283.1, 20.0),
    "Unknown": (35.0, 22.0, 8.0),
    "Migration": (13.1, 19.7, 8.8),
}
#: share of a type's traffic that is egress (out of our network)
EGRESS_SHARE = {
    "ISP Regional": 0.78,
    "ISP Tier1": 0.62,
    "CDN": 0.92,
    "Hosting": 0.5,
    "Hyperscaler": 0.55,
    "Neocloud": 0.6,
    "Unknown": 0.5,
    "Migration": 0.06,
}
#: distinct remote IPs each region talks to, per type
POOL_SIZE = {
    "ISP Regional": (120_000, 45_000, 16_000),
    "ISP Tier1": (16_000, 10_000, 3_500),
    "CDN": (1_500, 1_100, 300),
    "Hosting": (4_000, 3_500, 1_000),
    "Hyperscaler": (120, 140, 40),
    "Neocloud": (24, 48, 8),
    "Unknown": (1_200, 800, 250),
    "Migration": (300, 400, 150),
}
#: records per unit of volume, relative: many light flows for ISPs, few heavy ones for clouds
RECORD_DENSITY = {
    "ISP Regional": 6.0,
    "ISP Tier1": 4.0,
    "CDN": 1.0,
    "Hosting": 2.0,
    "Hyperscaler": 0.15,
    "Neocloud": 0.05,
    "Unknown": 1.5,
    "Migration": 0.25,
    "Internal": 0.5,
}
#: Zipf exponent of remote-IP popularity: how concentrated a type's traffic is
ZIPF = {
    "ISP Regional": 0.6,
    "ISP Tier1": 0.8,
    "CDN": 1.0,
    "Hosting": 0.9,
    "Hyperscaler": 1.1,
    "Neocloud": 1.3,
    "Unknown": 0.5,
    "Migration": 1.0,
}
#: share of a type's remote IPs that are IPv6
V6_SHARE = {
    "ISP Regional": 0.38,
    "ISP Tier1": 0.2,
    "CDN": 0.3,
    "Hosting": 0.12,
    "Hyperscaler": 0.15,
    "Neocloud": 0.06,
    "Unknown": 0.1,
    "Migration": 0.0,
}
#: eyeball networks whose IPv6 clients use privacy addresses (several /128s per /64)
PRIVACY_ADDRESS_TYPES = ("ISP Regional",)
#: flow duration (seconds, median) and mean packet size (bytes)
DURATION_S = {"Neocloud": 300, "Hyperscaler": 240, "Migration": 300, "CDN": 60}
PACKET_BYTES = {"Neocloud": 1400, "Hyperscaler": 1300, "Migration": 1450, "CDN": 1200}
INTERNAL_GBPS = (60.0, 45.0, 15.0)  # cross-region replication, by source region
TRANSIT_SHARE_OF_RECORDS = 0.0005  # stray flows touching none of our prefixes

# organisations per type: (count, v4 prefix lengths, v6 prefix lengths)
ORG_SHAPE = {
    "ISP Tier1": (8, (12, 13, 14), (29, 30, 32)),
    "ISP Regional": (90, (15, 16, 17, 18, 19), (32, 32, 36)),
    "Hyperscaler": (4, (13, 14, 15, 16), (28, 30, 32)),
    "CDN": (6, (19, 20, 21, 22), (32, 36, 40)),
    "Hosting": (30, (18, 19, 20, 21, 22), (32, 36, 40, 44)),
    "Neocloud": (8, (20, 21, 22, 23), (36, 40, 44)),
}
ORG_NAMES = {
    "ISP Tier1": [
        "Meridian Backbone",
        "Atlas Transit",
        "Polar Carrier",
        "Crestline Global",
        "Northway Networks",
        "Sable Transit",
        "Vector Longhaul",
        "Helix Backbone",
    ],
    "Hyperscaler": ["Nimbus Cloud", "Stratos Compute", "Azimuth Cloud", "Oakline Cloud"],
    "CDN": [
        "Swiftedge CDN",
        "Lumen Cache",
        "Parcel Delivery Net",
        "Quickstream CDN",
        "Edgewise",
        "Relay CDN",
    ],
    "Neocloud": [
        "Tensorline",
        "GPU Forge",
        "Lattice Compute",
        "Kernelworks AI",
        "Voltfield Cloud",
        "Parallax GPU",
        "Hyperion Labs",
        "Cinder Compute",
    ],
}
#: where the seed found neocloud endpoints (Northern Virginia: Reston/Ashburn)
NEOCLOUD_METROS = (
    "Chicago",
    "Dallas-Houston",
    "Denver",
    "New York",
    "Northern Virginia",
    "Atlanta",
)
EAST_COAST_METROS = ("New York", "Northern Virginia", "Atlanta")
#: share of each cloud type's bytes to place in each of the seed's metros, skewed to the East
#: Coast (prefixes are given metros by their expected volume, so these hold by bytes)
CLOUD_METRO_SHARE = {
    "Neocloud": (0.17, 0.14, 0.09, 0.18, 0.27, 0.15),
    "Hyperscaler": (0.14, 0.15, 0.06, 0.14, 0.38, 0.13),
}
#: where each region's people are: the home metros of the regional ISPs that region serves
REGION_METROS = {
    "US-West": (
        "Los Angeles",
        "San Francisco Bay Area",
        "Seattle",
        "Portland",
        "Phoenix",
        "Sacramento",
        "San Diego",
        "Las Vegas",
        "Salt Lake City",
    ),
    "US-East": (
        "New York",
        "Boston",
        "Philadelphia",
        "Washington",
        "Atlanta",
        "Miami",
        "Charlotte",
        "Pittsburgh",
    ),
    "CA-East": ("Toronto", "Montreal", "Boston", "Ottawa", "Quebec City", "Buffalo"),
}
#: share of each region's regional-ISP organisations (the rest serve the other regions' people)
REGION_ISP_SHARE = (3, 2, 1)  # of every 6: US-West, US-East, CA-East
#: popularity of an out-of-region ISP's blocks relative to a home one, when drawing remote IPs
AWAY_ISP_WEIGHT = 0.03
#: interconnection hubs, where carriers and CDNs have their points of presence
HUB_METROS = (
    "Northern Virginia",
    "New York",
    "Chicago",
    "Dallas-Houston",
    "Los Angeles",
    "San Jose",
    "Seattle",
    "Atlanta",
    "Miami",
    "Toronto",
)
HOSTING_METROS = (
    "Dallas-Houston",
    "Phoenix",
    "Northern Virginia",
    "Los Angeles",
    "Chicago",
    "New York",
    "Montreal",
    "San Jose",
    "Atlanta",
    "Miami",
    "Seattle",
    "Toronto",
)
METRO_COUNTRY = {"Toronto": "CA", "Montreal": "CA", "Ottawa": "CA", "Quebec City": "CA"}

# a plausible spread of first octets for public IPv4 space in the synthetic world
V4_SLASH8 = (
    23,
    24,
    31,
    37,
    45,
    62,
    64,
    66,
    67,
    68,
    69,
    70,
    71,
    72,
    73,
    74,
    75,
    76,
    80,
    81,
    82,
    84,
    85,
    86,
    87,
    88,
    89,
    90,
    91,
    92,
    93,
    94,
    95,
    96,
    97,
    98,
    99,
    100,
    104,
    107,
    108,
    109,
    136,
    137,
    138,
    139,
    142,
    143,
    144,
    146,
    147,
    148,
    149,
    150,
    151,
    152,
    154,
    155,
    157,
    158,
    159,
    160,
    161,
    162,
    163,
    164,
    165,
    166,
    167,
    168,
    170,
    171,
    173,
    174,
    176,
    177,
    178,
    179,
    180,
    181,
    183,
    184,
    185,
    186,
    187,
    188,
    189,
    190,
    193,
    194,
    195,
    199,
    200,
    201,
    202,
    203,
    204,
    205,
    206,
    207,
    208,
    209,
    210,
    211,
    212,
    213,
    216,
    217,
)
V4_UNALLOCATED = (5, 41, 46, 78, 79, 101, 102, 105, 106)  # never given to an org: "Unknown"
V6_SLASH12 = (0x2600, 0x2610, 0x2620, 0x2800, 0x2A00, 0x2A10, 0x2C00, 0x2400, 0x2406)
V6_UNALLOCATED = 0x2C0F

# our own address space, one block per region (documentation-like but routable-looking)
LOCAL_V4 = {
    "US-West": ("198.18.0.0/17", "45.144.0.0/20"),
    "US-East": ("198.18.128.0/18", "45.144.16.0/20"),
    "CA-East": ("198.18.192.0/18", "45.144.32.0/21"),
}
LOCAL_V6 = {
    "US-West": ("2620:a0::/44",),
    "US-East": ("2620:a0:10::/44",),
    "CA-East": ("2620:a0:20::/44",),
}


@dataclass(frozen=True)
class Exporter:
    """A router exporting flow records."""

    address: str
    region: str
    sampling: int  # 1 in N; 1 = unsampled
    role: str  # "border" or "migration"
    weight: float = 1.0


EXPORTERS = (
    Exporter("10.10.0.1", "US-West", 1000, "border", 0.55),
    Exporter("10.10.0.2", "US-West", 1000, "border", 0.45),
    Exporter("10.10.0.9", "US-West", 1, "migration"),
    Exporter("10.20.0.1", "US-East", 1000, "border", 0.7),
    Exporter("10.20.0.2", "US-East", 1, "border", 0.3),
    Exporter("10.20.0.9", "US-East", 1, "migration"),
    Exporter("10.30.0.1", "CA-East", 1, "border", 1.0),
    Exporter("10.30.0.9", "CA-East", 1, "migration"),
)
MIGRATION_IFS = (501, 502)
#: the border routers' external interfaces, by what they connect to (each a pair of ports)
TRANSIT_IFS = (1, 2)  # IP transit, on every border router
IX_IFS = (3, 4)  # the internet exchange at US-West
PNI_IFS = (5, 6)  # private interconnects from US-East to the neoclouds
UNLINKED_IFS = (7, 8)  # small private peerings no link names: the regions' catch-alls
BORDER_EXTERNAL_IFS = TRANSIT_IFS + IX_IFS + PNI_IFS + UNLINKED_IFS
BORDER_INTERNAL_IFS = (101, 102, 103, 104)
#: share of a type's US-West traffic that goes over the IX (peering), the rest transit
IX_SHARE = {"CDN": 0.55, "Hosting": 0.4, "ISP Regional": 0.45, "ISP Tier1": 0.15}
#: share of US-East neocloud traffic over the private interconnects
PNI_SHARE = 0.85
#: share of other border traffic over the unnamed private peerings
UNLINKED_SHARE = 0.04
#: the p95 utilisation each link's capacity is sized for: most links mid-range, the US-East
#: neocloud interconnects close to the 80% planning threshold (the what-if demo's run-outs)
TARGET_UTILISATION = 0.5
TIGHT_LINKS = {"use-neocloud-pni-1": 0.76, "use-neocloud-pni-2": 0.74}
REGION_ABBR = {"US-West": "usw", "US-East": "use", "CA-East": "cae"}


@dataclass
class Org:
    """A remote organisation: a type, an ASN and its prefixes."""

    name: str
    asn: int
    network_type: str
    prefixes: list[str] = field(default_factory=list)
    country: str = "US"
    metro: str = ""
    home: str = ""  # ISP Regional: the region whose people it serves
    #: prefix -> (country, metro) where a prefix is elsewhere than the organisation's default
    places: dict[str, tuple[str, str]] = field(default_factory=dict)

    def place(self, prefix: str) -> tuple[str, str]:
        """(country, metro) of one of the organisation's prefixes."""
        return self.places.get(prefix, (self.country, self.metro))


@dataclass
class Pool:
    """The remote IPs one region talks to for one type, with their popularity."""

    hi: np.ndarray
    lo: np.ndarray
    asn: np.ndarray
    cum: np.ndarray  # cumulative popularity, last = 1
    weight: np.ndarray  # popularity of each IP


@dataclass
class World:
    """Everything about the synthetic network that does not change from day to day."""

    seed: int
    orgs: list[Org]
    pools: dict[tuple[str, str], Pool]
    local: dict[str, tuple[list[tuple[int, int]], list[tuple[int, int]]]]  # region -> v4, v6

    def prefix_rows(self) -> list[tuple[str, str, int, str, str]]:
        """(prefix, network_type, asn, org, country) for the demo prefix table."""
        return [row[:5] for row in self.prefix_table_rows()]

    def prefix_table_rows(self) -> list[tuple[str, str, int, str, str, str]]:
        """(prefix, network_type, asn, org, country, metro): the rows of prefixes.csv."""
        rows = []
        for org in self.orgs:
            for p in org.prefixes:
                rows.append((p, org.network_type, org.asn, org.name, *org.place(p)))
        return rows

    def write_prefix_table(self, path: str | os.PathLike[str]) -> Path:
        """Write the world's prefix table as a ``prefix-csv`` source (with country and metro)."""
        path = Path(path)
        with open(path, "w") as fh:
            fh.write("prefix,network_type,asn,org,country,metro\n")
            for row in self.prefix_table_rows():
                fh.write(",".join(str(v) for v in row) + "\n")
        return path

    def config(self, capacities: dict[str, float] | None = None) -> Config:
        """The configuration the archive was made for (regions, exporters, links).

        ``capacities`` (Gbps per link name, :func:`link_capacities`) sizes the links; without
        it they have none (measured, not planned).
        """
        regions = tuple(
            Region(
                name,
                LOCAL_V4[name] + LOCAL_V6[name],
                tuple(e.address for e in EXPORTERS if e.region == name),
            )
            for name in REGIONS
        )
        links = world_links(capacities)
        classify = _ClassifySettings(
            sources=(SourceSpec("prefixes.csv", "prefix-csv", "synthetic world"),)
        )
        return Config(regions=regions, links=links, classify=classify)


# --------------------------------------------------------------------------- building the world


class _Allocator:
    """Hands out non-overlapping aligned blocks of address space, deterministically."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.taken: list[tuple[int, int]] = []

    def _free(self, start: int, end: int) -> bool:
        return all(end < s or start > e for s, e in self.taken)

    def v4(self, length: int, slash8s: tuple[int, ...] = V4_SLASH8) -> str:
        for _ in range(10_000):
            first = int(self.rng.choice(slash8s))
            size = 1 << (32 - length)
            offset = int(self.rng.integers(0, (1 << 24) // size)) * size
            start = (first << 24) + offset
            if self._free(start, start + size - 1):
                self.taken.append((start, start + size - 1))
                return f"{ipaddress.IPv4Address(start)}/{length}"
        raise RuntimeError("synthetic IPv4 space exhausted")  # pragma: no cover

    def v6(self, length: int) -> str:
        for _ in range(10_000):
            top = int(self.rng.choice(V6_SLASH12))
            size_bits = 128 - length
            span = 1 << (128 - 12 - size_bits)
            offset = int(self.rng.integers(0, min(span, 2**62)))
            start = (top >> 4 << 116) | (offset << size_bits)
            start |= (top & 0xF) << 112
            end = start + (1 << size_bits) - 1
            v6start, v6end = start + (1 << 129), end + (1 << 129)  # keep v4 and v6 apart
            if self._free(v6start, v6end):
                self.taken.append((v6start, v6end))
                return f"{ipaddress.IPv6Address(start)}/{length}"
        raise RuntimeError("synthetic IPv6 space exhausted")  # pragma: no cover


def _nested(parent: str, length: int, rng: np.random.Generator) -> str:
    net = ipaddress.ip_network(parent)
    span = 1 << (length - net.prefixlen)
    k = int(rng.integers(1, span)) if span > 1 else 0
    start = int(net.network_address) + k * (1 << (net.max_prefixlen - length))
    return str(ipaddress.ip_network((start, length)))


def _org_names(network_type: str, count: int) -> list[str]:
    names = ORG_NAMES.get(network_type, [])
    if network_type == "ISP Regional":
        towns = [
            "Cascade",
            "Prairie",
            "Harbor",
            "Summit",
            "Valley",
            "Lakeshore",
            "Pinecrest",
            "Redwood",
            "Granite",
            "Riverbend",
            "Bayview",
            "Highland",
            "Maple",
            "Coastal",
            "Frontier",
        ]
        kinds = ["Broadband", "Fiber", "Telecom", "Cable", "Net", "Internet"]
        names = [
            f"{towns[i % len(towns)]} {kinds[(i // len(towns)) % len(kinds)]}" for i in range(count)
        ]
    elif network_type == "Hosting":
        stems = [
            "Bluehost",
            "Ironrack",
            "Keystone",
            "Nova",
            "Orbit",
            "Pulse",
            "Quarry",
            "Rook",
            "Spruce",
            "Tandem",
        ]
        kinds = ["Hosting", "Servers", "Datacenter"]
        names = [
            f"{stems[i % len(stems)]} {kinds[(i // len(stems)) % len(kinds)]}" for i in range(count)
        ]
    return names[:count]


def build_world(seed: int) -> World:
    """The synthetic world for ``seed``: organisations, prefixes, and remote IP pools."""
    rng = np.random.default_rng([seed, 0x5EED_0001])
    alloc = _Allocator(rng)
    # our own space is taken first so no remote prefix overlaps it
    for region in REGIONS:
        for p in LOCAL_V4[region]:
            net = ipaddress.ip_network(p)
            alloc.taken.append((int(net.network_address), int(net.broadcast_address)))
        for p in LOCAL_V6[region]:
            net = ipaddress.ip_network(p)
            alloc.taken.append(
                (int(net.network_address) + (1 << 129), int(net.broadcast_address) + (1 << 129))
            )
    for first in V4_UNALLOCATED:
        alloc.taken.append((first << 24, (first << 24) + (1 << 24) - 1))

    orgs: list[Org] = []
    asn = 4_200_010_000
    for network_type, (count, v4_lens, v6_lens) in ORG_SHAPE.items():
        for i, name in enumerate(_org_names(network_type, count)):
            asn += 1 + int(rng.integers(0, 50))
            org = Org(name, asn, network_type)
            n4 = 1 + int(rng.integers(0, 3 if network_type != "ISP Tier1" else 2))
            for _ in range(n4):
                org.prefixes.append(alloc.v4(int(rng.choice(v4_lens))))
            org.prefixes.append(alloc.v6(int(rng.choice(v6_lens))))
            _place_org(org, i)
            orgs.append(org)

    # nesting, as on the real Internet: CDN caches inside ISPs, hosting inside Tier1 aggregates
    by_type: dict[str, list[Org]] = {}
    for org in orgs:
        by_type.setdefault(org.network_type, []).append(org)
    for k, isp in enumerate(by_type["ISP Regional"][:30]):
        cdn = by_type["CDN"][k % len(by_type["CDN"])]
        v4_parent = next(p for p in isp.prefixes if ":" not in p)
        cdn.prefixes.append(_nested(v4_parent, 24, rng))
        cdn.places[cdn.prefixes[-1]] = isp.place(v4_parent)  # the cache is where the ISP is
        if k % 3 == 0:
            v6_parent = next(p for p in isp.prefixes if ":" in p)
            cdn.prefixes.append(_nested(v6_parent, 48, rng))
            cdn.places[cdn.prefixes[-1]] = isp.place(v6_parent)
    for k, host in enumerate(by_type["Hosting"][:10]):
        t1 = by_type["ISP Tier1"][k % len(by_type["ISP Tier1"])]
        v4_parent = next(p for p in t1.prefixes if ":" not in p)
        host.prefixes.append(_nested(v4_parent, 22, rng))

    world = World(seed, orgs, {}, {})
    for region in REGIONS:
        world.local[region] = (
            [_net_bounds(p) for p in LOCAL_V4[region]],
            [_net_bounds(p) for p in LOCAL_V6[region]],
        )
    _build_pools(world, rng)
    _place_clouds(world)
    return world


def _place_org(org: Org, i: int) -> None:
    """Where the ``i``-th organisation of its type is: regional ISPs near the people of the
    region they serve, carriers and CDNs at the hubs (a point of presence per prefix), hosting
    in data-centre metros. Clouds are placed later, prefix by prefix, by volume."""
    t = org.network_type
    if t == "ISP Regional":
        slots = [r for r, k in zip(REGIONS, REGION_ISP_SHARE, strict=True) for _ in range(k)]
        j = i % len(slots)
        org.home = slots[j]
        nth = (i // len(slots)) * slots.count(org.home) + j - slots.index(org.home)
        metros = REGION_METROS[org.home]
        org.metro = metros[nth % len(metros)]
    elif t == "Hosting":
        org.metro = HOSTING_METROS[i % len(HOSTING_METROS)]
    elif t in ("ISP Tier1", "CDN"):
        org.metro = HUB_METROS[i % len(HUB_METROS)]
        for k, p in enumerate(org.prefixes):
            metro = HUB_METROS[(i + 3 * k) % len(HUB_METROS)]
            org.places[p] = (METRO_COUNTRY.get(metro, "US"), metro)
    org.country = METRO_COUNTRY.get(org.metro, "US")


def _place_clouds(world: World) -> None:
    """Give each neocloud and hyperscaler prefix one of the seed's metros so that each metro's
    share of the type's expected bytes comes near CLOUD_METRO_SHARE: the heaviest prefixes
    first, each to the metro furthest below its share (prefixes that carry nothing go round
    the metros, so every metro has some)."""
    for t, shares in CLOUD_METRO_SHARE.items():
        rows = [(org, p) for org in world.orgs if org.network_type == t for p in org.prefixes]
        bounds = [_net_bounds(p) for _, p in rows]
        starts = np.array([b[0] for b in bounds], dtype=object)
        order = np.argsort(starts)
        load = np.zeros(len(rows))
        for ri, region in enumerate(REGIONS):
            pool = world.pools[(region, t)]
            for h, low, w in zip(pool.hi.tolist(), pool.lo.tolist(), pool.weight, strict=True):
                addr = (h << 64) | low
                k = int(order[np.searchsorted(starts[order], addr, side="right") - 1])
                assert bounds[k][0] <= addr <= bounds[k][1]
                load[k] += w * BASE_GBPS[t][ri]
        target = np.array(shares) * load.sum()
        placed = np.zeros(len(shares))
        idle = 0
        for k in np.argsort(-load, kind="stable"):
            if load[k] > 0:
                m = int(np.argmax(target - placed))
            else:
                m, idle = idle % len(shares), idle + 1
            placed[m] += load[k]
            org, p = rows[k]
            org.places[p] = ("US", NEOCLOUD_METROS[m])


def _net_bounds(prefix: str) -> tuple[int, int]:
    hi, lo, ln, _ = parse_prefixes([prefix])
    s_hi, s_lo, e_hi, e_lo = prefix_bounds(hi, lo, ln)
    return (int(s_hi[0]) << 64) | int(s_lo[0]), (int(e_hi[0]) << 64) | int(e_lo[0])


def _build_pools(world: World, rng: np.random.Generator) -> None:
    """Choose each region's remote IPs per type, checking each against the world's table."""
    from flowatlas.classify.compiler import Layer, compile_layers
    from flowatlas.classify.table import PrefixTable

    rows = world.prefix_rows()
    hi, lo, ln, _ = parse_prefixes([r[0] for r in rows])
    s_hi, s_lo, e_hi, e_lo = prefix_bounds(hi, lo, ln)
    types = np.array([r[1] for r in rows], dtype=object)
    attrs = pa.table(
        {"network_type": types.tolist(), "asn": pa.array([r[2] for r in rows], pa.uint32())}
    )
    compiled = compile_layers([Layer("world", s_hi, s_lo, e_hi, e_lo, attrs)])
    table = PrefixTable(compiled.starts_hi, compiled.starts_lo, compiled.values, compiled.networks)
    net_type = np.array(
        [*compiled.networks.column("network_type").to_pylist(), "Unknown"], dtype=object
    )
    net_asn = np.append(compiled.networks.column("asn").to_numpy().astype(np.uint32), 0)

    homes = np.array([org.home for org in world.orgs for _ in org.prefixes], dtype=object)
    for t in (*TYPES, "Migration"):
        sel = np.flatnonzero(types == t)
        blocks = (s_hi[sel], s_lo[sel], e_hi[sel], e_lo[sel])
        want_type = "Unknown" if t in ("Unknown", "Migration") else t
        for ri, region in enumerate(REGIONS):
            size = POOL_SIZE[t][ri]
            n6 = round(size * V6_SHARE[t])
            # a region's regional-ISP customers are mostly at the ISPs near its people
            near = np.where((homes[sel] == region) | (homes[sel] == ""), 1.0, AWAY_ISP_WEIGHT)
            parts = []
            for fam, want in ((False, size - n6), (True, n6)):
                if want:
                    parts.append(
                        _draw_addresses(
                            t, fam, want, (*blocks, near), table, net_type, want_type, rng
                        )
                    )
            a_hi = np.concatenate([p[0] for p in parts])
            a_lo = np.concatenate([p[1] for p in parts])
            order = rng.permutation(a_hi.size)
            a_hi, a_lo = a_hi[order], a_lo[order]
            ids = _lookup(table, a_hi, a_lo)
            rank = np.arange(1, a_hi.size + 1, dtype=np.float64)
            weight = rank ** (-ZIPF[t])
            weight /= weight.sum()
            world.pools[(region, t)] = Pool(a_hi, a_lo, net_asn[ids], np.cumsum(weight), weight)


def _first_of_each(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each distinct (hi, lo) pair, ascending: what
    ``np.unique(pairs, axis=0, return_index=True)`` gives, sorted, without its slow sort of
    rows as bytes (a stable lexsort keeps equal pairs in their order)."""
    order = np.lexsort((lo, hi))
    h, low = hi[order], lo[order]
    new = np.ones(order.size, bool)
    new[1:] = (h[1:] != h[:-1]) | (low[1:] != low[:-1])
    return np.sort(order[new])


def _lookup(table, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """``table.lookup`` on one thread: the world's pools are small, and the multi-threaded
    kernel costs the first run after an install a second compile (about a second)."""
    from flowatlas.kernels.lpm import lookup_cpu

    return lookup_cpu(table.index, hi, lo, parallel=False)


def _draw_addresses(t, v6, want, blocks, table, net_type, want_type, rng):
    """``want`` distinct addresses of one family that the world's table classifies as
    ``want_type``, drawn from the type's blocks (or from unlisted space for Unknown); blocks
    are (starts hi, lo, ends hi, lo, a popularity weight per block)."""
    got_hi: list[np.ndarray] = []
    got_lo: list[np.ndarray] = []
    seen = 0
    for _ in range(50):
        m = max(64, int((want - seen) * 1.5))
        if t in ("Unknown", "Migration"):
            if v6:
                hi = (np.uint64(V6_UNALLOCATED) << np.uint64(48)) | rng.integers(
                    0, 2**48, size=m, dtype=np.uint64
                )
                lo = rng.integers(1, 2**32, size=m, dtype=np.uint64)
            else:
                first = rng.choice(np.array(V4_UNALLOCATED, dtype=np.uint64), size=m)
                hi = np.zeros(m, np.uint64)
                lo = (
                    np.uint64(0xFFFF_0000_0000)
                    | (first << np.uint64(24))
                    | rng.integers(1, 1 << 24, size=m, dtype=np.uint64)
                )
        else:
            s_hi, s_lo, e_hi, e_lo, near = blocks
            fam = (s_hi != 0) if v6 else (s_hi == 0)
            idx = np.flatnonzero(fam)
            if v6:
                span = (e_hi[idx] - s_hi[idx]).astype(np.float64) + 1.0
            else:
                span = (e_lo[idx] - s_lo[idx]).astype(np.float64) + 1.0
            p = np.sqrt(span) * near[idx]  # big blocks get more hosts, not in proportion
            pick = idx[rng.choice(idx.size, size=m, p=p / p.sum())]
            u = rng.random(m)
            if v6:
                hi = s_hi[pick] + np.floor(
                    u * ((e_hi[pick] - s_hi[pick]).astype(np.float64) + 1)
                ).astype(np.uint64)
                hi = np.minimum(hi, e_hi[pick])
                lo = rng.integers(1, 2**40, size=m, dtype=np.uint64)
                if t in PRIVACY_ADDRESS_TYPES:
                    # households: a /64 each, several privacy addresses (random IIDs) in it
                    home = rng.integers(0, max(1, m // 3), size=m)
                    hi = hi[home]
                    lo = rng.integers(1, 2**63, size=m, dtype=np.uint64) << np.uint64(1)
            else:
                width = (e_lo[pick] - s_lo[pick]).astype(np.float64)
                lo = (
                    s_lo[pick]
                    + np.uint64(1)
                    + np.floor(u * np.maximum(width - 1, 1)).astype(np.uint64)
                )
                lo = np.minimum(lo, e_lo[pick])
                hi = np.zeros(m, np.uint64)
        ok = net_type[_lookup(table, hi, lo)] == want_type
        got_hi.append(hi[ok])
        got_lo.append(lo[ok])
        all_hi = np.concatenate(got_hi)
        all_lo = np.concatenate(got_lo)
        first_idx = _first_of_each(all_hi, all_lo)
        seen = first_idx.size
        if seen >= want:
            keep = first_idx[:want]
            return all_hi[keep], all_lo[keep]
        got_hi, got_lo = [all_hi[first_idx]], [all_lo[first_idx]]
    raise RuntimeError(f"could not draw {want} addresses of type {t}")  # pragma: no cover


# --------------------------------------------------------------------------- the timeline


def _day_of_year(d: dt.date) -> int:
    """Day of 2025's year (2026-01-01 is 366): the timeline's clock."""
    return (d - dt.date(2024, 12, 31)).days


def _levels(*points: tuple[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Anchor dates and levels of a piecewise-linear trend (flat before the first and after the
    last)."""
    days = [_day_of_year(dt.date.fromisoformat(p)) for p, _ in points]
    return np.array(days, dtype=np.float64), np.array([v for _, v in points])


#: neocloud: a sharp rise in July, high through November with the peak in October, and a new
#: normal at year end well above the baseline before July
NEOCLOUD_TREND = _levels(
    ("2025-07-01", 1.0),
    ("2025-07-31", 2.1),
    ("2025-08-15", 2.9),
    ("2025-09-20", 3.0),
    ("2025-10-15", 3.6),
    ("2025-11-10", 2.3),
    ("2025-12-01", 1.7),
)
#: hyperscaler: quiet in the summer, heavy from late September through November, easing after
HYPERSCALER_TREND = _levels(
    ("2025-09-20", 1.0),
    ("2025-10-01", 1.8),
    ("2025-10-12", 6.0),
    ("2025-11-05", 7.0),
    ("2025-11-25", 6.5),
    ("2025-12-10", 5.0),
    ("2025-12-31", 4.5),
)
#: hosting: steady growth (new customers), 2.5 % of its baseline a month
HOSTING_GROWTH_PER_DAY = 0.15 / 184


def trend(network_type: str, day: np.datetime64) -> float:
    """Multiplier on a type's baseline for one day: the seed report's shapes."""
    doy = _day_of_year(dt.date.fromisoformat(str(day)))
    seasonal = 1.0 + 0.04 * math.sin(doy / 9.0)
    if network_type == "Neocloud":
        return float(np.interp(doy, *NEOCLOUD_TREND))
    if network_type == "Hyperscaler":
        return float(np.interp(doy, *HYPERSCALER_TREND))
    if network_type == "Migration":
        # a large onboarding, concentrated in August to October
        level = 1.0 + 30.0 * math.exp(-0.5 * ((doy - 250) / 20) ** 2)
        return level if 213 <= doy <= 305 else min(level, 1.3)
    if network_type == "Hosting":
        return seasonal + HOSTING_GROWTH_PER_DAY * min(max(doy - 182, 0), 184)
    return seasonal


def diurnal(network_type: str, local_hour: np.ndarray) -> np.ndarray:
    """Daily cycle by local hour: strong for people-driven types, flat for machine traffic."""
    depth = {
        "ISP Regional": 0.55,
        "ISP Tier1": 0.4,
        "CDN": 0.35,
        "Hosting": 0.25,
        "Unknown": 0.3,
    }.get(network_type, 0.08)
    return 1.0 + depth * np.cos(2 * np.pi * (local_hour - 20.5) / 24.0)


def weekly(network_type: str, weekday: int) -> float:
    """Weekly cycle: people stream more at weekends, businesses and jobs less."""
    weekend = weekday >= 5
    if network_type in ("ISP Regional", "CDN"):
        return 1.08 if weekend else 0.97
    if network_type in ("Hosting", "Hyperscaler", "Neocloud", "Migration", "Internal"):
        return 0.85 if weekend else 1.06
    return 1.0


# --------------------------------------------------------------------------- generating records


@dataclass(frozen=True)
class Cell:
    """One (region, type, direction) stream of the generator."""

    region: int
    network_type: str
    direction: int  # 0 ingress, 1 egress, 2 internal, 3 transit
    gbps: float


def _cells() -> list[Cell]:
    cells = []
    for t, base in BASE_GBPS.items():
        for ri in range(len(REGIONS)):
            eg = EGRESS_SHARE[t]
            cells.append(Cell(ri, t, 0, base[ri] * (1 - eg)))
            cells.append(Cell(ri, t, 1, base[ri] * eg))
    for ri in range(len(REGIONS)):
        cells.append(Cell(ri, "Internal", 2, INTERNAL_GBPS[ri]))
    return cells


CELLS = _cells()


def records_per_day(records: int, days: int) -> list[int]:
    """Split ``records`` over ``days`` as evenly as integers allow."""
    base, extra = divmod(records, days)
    return [base + (1 if i < extra else 0) for i in range(days)]


def _pick(pool: Pool, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(pool.cum, u, side="right"), pool.hi.size - 1)


def _local_addresses(
    world: World, region_idx: np.ndarray, v6: np.ndarray, rng
) -> tuple[np.ndarray, np.ndarray]:
    hi = np.zeros(region_idx.size, dtype=np.uint64)
    lo = np.zeros(region_idx.size, dtype=np.uint64)
    for ri, region in enumerate(REGIONS):
        v4_blocks, v6_blocks = world.local[region]
        for fam, blocks in ((False, v4_blocks), (True, v6_blocks)):
            sel = np.flatnonzero((region_idx == ri) & (v6 == fam))
            if sel.size == 0:
                continue
            which = rng.integers(0, len(blocks), size=sel.size)
            for b, (start, end) in enumerate(blocks):
                s = sel[which == b]
                span = min(end - start, 2**32 - 2)
                host = rng.integers(1, span, size=s.size, dtype=np.uint64)
                hi[s] = np.uint64(start >> 64)
                lo[s] = np.uint64(start & 0xFFFF_FFFF_FFFF_FFFF) + host
    return hi, lo


def generate_day(world: World, day: np.datetime64, n: int, seed: int) -> list[pa.Table]:
    """The records of one day, as tables of at most CHUNK_ROWS rows (deterministic)."""
    day_index = int((day - np.datetime64("2000-01-01")).astype(np.int64))
    rng = np.random.default_rng([seed, 0x5EED_0002, day_index])
    day_us = int(day.astype("datetime64[us]").astype(np.int64))
    weekday = (day_index + 5) % 7  # 2000-01-01 was a Saturday

    # expected bytes per cell and hour, and record weights
    hours = np.arange(24)
    vol = np.zeros((len(CELLS), 24))
    dens = np.zeros(len(CELLS))
    for ci, c in enumerate(CELLS):
        region = REGIONS[c.region]
        t = c.network_type
        local_hour = (hours + REGION_UTC_OFFSET[region]) % 24
        shape = diurnal(t, local_hour) * weekly(t, weekday) * trend(t, day)
        vol[ci] = c.gbps * 1e9 / 8 * 3600 * shape
        dens[ci] = RECORD_DENSITY.get(t, 0.5)
    vol_day = vol.sum(axis=1)
    n_transit = int(rng.binomial(n, TRANSIT_SHARE_OF_RECORDS)) if n > 100 else 0
    n_main = n - n_transit
    # every stream gets a few records a day (so its volume is there), the rest by weight
    k_min = min(3, n_main // len(CELLS))
    weights = vol_day * dens
    counts = k_min + rng.multinomial(n_main - k_min * len(CELLS), weights / weights.sum())
    cell_of = np.repeat(np.arange(len(CELLS)), counts)
    # each record's hour follows its stream's daily shape
    cum = np.cumsum(vol / vol_day[:, None], axis=1)
    u = rng.random(n_main)
    hour = np.empty(n_main, dtype=np.int64)
    for s0 in range(0, n_main, CHUNK_ROWS):
        sl = slice(s0, s0 + CHUNK_ROWS)
        hour[sl] = np.minimum((cum[cell_of[sl]] < u[sl, None]).sum(axis=1), 23)
    # the stream's bytes of the day, shared among its records with heavy-tailed noise
    share = rng.lognormal(0.0, 0.8, size=n_main)
    totals = np.bincount(cell_of, weights=share, minlength=len(CELLS))
    volume = vol_day[cell_of] * share / totals[cell_of]
    if n_transit:
        cell_of = np.concatenate([cell_of, np.full(n_transit, -1)])
        hour = np.concatenate([hour, rng.integers(0, 24, size=n_transit)])
        volume = np.concatenate([volume, np.full(n_transit, 1.5e6)])

    tables = []
    for start in range(0, cell_of.size, CHUNK_ROWS):
        sl = slice(start, start + CHUNK_ROWS)
        tables.append(_make_records(world, cell_of[sl], hour[sl], volume[sl], day_us, rng))
    return tables


def _make_records(world: World, cell: np.ndarray, hour: np.ndarray, volume: np.ndarray,
                  day_us: int, rng) -> pa.Table:  # fmt: skip
    n = cell.size
    transit = cell < 0
    ci = np.where(transit, 0, cell)
    region = np.array([c.region for c in CELLS], dtype=np.int64)[ci]
    direction = np.array([c.direction for c in CELLS], dtype=np.int64)[ci]
    types = np.array([c.network_type for c in CELLS], dtype=object)[ci]

    r_hi = np.zeros(n, np.uint64)
    r_lo = np.zeros(n, np.uint64)
    r_asn = np.zeros(n, np.uint32)
    for c_idx in np.unique(ci[~transit]):
        c = CELLS[int(c_idx)]
        sel = np.flatnonzero((ci == c_idx) & ~transit)
        if c.network_type == "Internal":
            # the other end is another of our regions
            other = (c.region + 1 + rng.integers(0, len(REGIONS) - 1, size=sel.size)) % len(REGIONS)
            h, low = _local_addresses(world, other, np.zeros(sel.size, bool), rng)
            r_hi[sel], r_lo[sel], r_asn[sel] = h, low, OUR_ASN
            continue
        pool = world.pools[(REGIONS[c.region], c.network_type)]
        idx = _pick(pool, rng.random(sel.size))
        r_hi[sel], r_lo[sel], r_asn[sel] = pool.hi[idx], pool.lo[idx], pool.asn[idx]
    if transit.any():
        sel = np.flatnonzero(transit)
        pool = world.pools[("US-West", "Unknown")]
        idx = _pick(pool, rng.random(sel.size))
        r_hi[sel], r_lo[sel] = pool.hi[idx], pool.lo[idx]
    v6 = ~((r_hi == 0) & ((r_lo >> np.uint64(32)) == np.uint64(0xFFFF)))
    l_hi, l_lo = _local_addresses(world, region, v6, rng)
    if transit.any():  # neither end ours: a second unknown address instead of a local one
        sel = np.flatnonzero(transit)
        pool = world.pools[("US-East", "Unknown")]
        idx = _pick(pool, rng.random(sel.size))
        l_hi[sel], l_lo[sel] = pool.hi[idx], pool.lo[idx]

    # exporter, sampling, interfaces
    exporter_ix = np.zeros(n, dtype=np.int64)
    in_if = np.zeros(n, np.uint32)
    out_if = np.zeros(n, np.uint32)
    is_mig = types == "Migration"
    for ri, rname in enumerate(REGIONS):
        border = [i for i, e in enumerate(EXPORTERS) if e.region == rname and e.role == "border"]
        mig = next(
            i for i, e in enumerate(EXPORTERS) if e.region == rname and e.role == "migration"
        )
        w = np.array([EXPORTERS[i].weight for i in border])
        sel = np.flatnonzero((region == ri) & ~is_mig)
        exporter_ix[sel] = np.array(border)[rng.choice(len(border), size=sel.size, p=w / w.sum())]
        sel_m = np.flatnonzero((region == ri) & is_mig)
        exporter_ix[sel_m] = mig
    ext = _external_interfaces(region, ci, is_mig, rng)
    internal_if = rng.choice(BORDER_INTERNAL_IFS, size=n)
    ingress = (direction == 0) | transit
    in_if[:] = np.where(ingress, ext, internal_if)
    out_if[:] = np.where(ingress, internal_if, ext)
    internal = direction == 2
    in_if[internal] = internal_if[internal]
    out_if[internal] = rng.choice(BORDER_INTERNAL_IFS, size=int(internal.sum()))
    sampling = np.array([e.sampling for e in EXPORTERS], dtype=np.uint32)[exporter_ix]

    pkt_size = np.array([PACKET_BYTES.get(str(t), 900) for t in types], dtype=np.float64)
    exported_bytes = np.maximum(np.rint(volume / sampling), 64).astype(np.uint64)
    exported_pkts = np.maximum(np.rint(volume / pkt_size / sampling), 1).astype(np.uint64)
    exported_pkts = np.minimum(exported_pkts, np.maximum(exported_bytes // np.uint64(40), 1))

    # times: start uniform in the hour, duration by type, capped at the hour's end
    t0 = day_us + hour * US_PER_HOUR + rng.integers(0, US_PER_HOUR, size=n)
    med = np.array([DURATION_S.get(str(t), 8) for t in types], dtype=np.float64)
    dur = np.minimum(med * rng.lognormal(0, 0.7, size=n), 300.0) * 1e6
    t1 = np.minimum(t0 + dur.astype(np.int64), day_us + (hour + 1) * US_PER_HOUR - 1)

    # ports and protocol: mostly HTTPS, some QUIC for eyeballs, bulk TCP for clouds
    proto = np.where(
        rng.random(n) < np.where(np.isin(types, ["ISP Regional", "CDN"]), 0.18, 0.03), 17, 6
    )
    remote_port = rng.integers(32768, 61000, size=n)
    local_port = np.where(proto == 17, 443, np.where(rng.random(n) < 0.9, 443, 80))

    egress = direction == 1
    src_hi = np.where(egress, l_hi, r_hi)
    src_lo = np.where(egress, l_lo, r_lo)
    dst_hi = np.where(egress, r_hi, l_hi)
    dst_lo = np.where(egress, r_lo, l_lo)
    exp_hi = np.zeros(n, np.uint64)
    exp_lo = np.array([_v4_mapped(e.address) for e in EXPORTERS], dtype=np.uint64)[exporter_ix]
    exports_as = exporter_ix % 3 != 2  # some routers do not export AS numbers
    src_as = np.where(exports_as, np.where(egress, OUR_ASN, r_asn), 0).astype(np.uint32)
    dst_as = np.where(exports_as, np.where(egress, r_asn, OUR_ASN), 0).astype(np.uint32)

    order = np.argsort(t0, kind="stable")
    cols = {
        "time_start": pa.array(t0[order], pa.int64()).cast(TIMESTAMP),
        "time_end": pa.array(t1[order], pa.int64()).cast(TIMESTAMP),
        "exporter": hilo_to_bytes16(exp_hi[order], exp_lo[order]),
        "in_if": pa.array(in_if[order], pa.uint32()),
        "out_if": pa.array(out_if[order], pa.uint32()),
        "src_addr": hilo_to_bytes16(src_hi[order], src_lo[order]),
        "dst_addr": hilo_to_bytes16(dst_hi[order], dst_lo[order]),
        "src_port": pa.array(np.where(egress, local_port, remote_port)[order].astype(np.uint16)),
        "dst_port": pa.array(np.where(egress, remote_port, local_port)[order].astype(np.uint16)),
        "proto": pa.array(proto[order].astype(np.uint8)),
        "bytes": pa.array(exported_bytes[order]),
        "packets": pa.array(exported_pkts[order]),
        "sampling_rate": pa.array(sampling[order]),
        "src_as": pa.array(src_as[order]),
        "dst_as": pa.array(dst_as[order]),
    }
    return pa.table(cols)


def _v4_mapped(text: str) -> int:
    return 0xFFFF_0000_0000 | int(ipaddress.IPv4Address(text))


# --------------------------------------------------------------------------- links and capacities


def _link_layout() -> list[tuple[str, Exporter, tuple[int, ...], str | None, str]]:
    """(name, exporter, interfaces, network type, description) of every link of the world."""
    layout = []
    for region in REGIONS:
        abbr = REGION_ABBR[region]
        border = [e for e in EXPORTERS if e.region == region and e.role == "border"]
        for k, e in enumerate(border, start=1):
            suffix = f"-{k}" if len(border) > 1 else ""
            layout.append((f"{abbr}-transit{suffix}", e, TRANSIT_IFS, None, "IP transit"))
            if region == "US-West":
                layout.append((f"{abbr}-ix{suffix}", e, IX_IFS, None, "internet exchange"))
            if region == "US-East":
                layout.append((f"{abbr}-neocloud-pni{suffix}", e, PNI_IFS, None,
                               "private interconnects to neoclouds"))  # fmt: skip
        for e in EXPORTERS:
            if e.region == region and e.role == "migration":
                layout.append((f"{abbr}-migration", e, MIGRATION_IFS, "Migration",
                               f"{region} private fibre (data onboarding)"))  # fmt: skip
    return layout


def world_links(capacities: dict[str, float] | None = None) -> tuple[LinkRule, ...]:
    """The world's links: transit on every border router, the US-West IX, the US-East
    private interconnects to neoclouds and each region's migration fibre."""
    caps = capacities or {}
    return tuple(
        LinkRule(e.address, ifs, ntype, desc, name, e.region, caps.get(name))
        for name, e, ifs, ntype, desc in _link_layout()
    )


def _external_interfaces(region: np.ndarray, ci: np.ndarray, is_mig: np.ndarray, rng):
    """The external interface of each record (``ci``: its stream in CELLS): migration fibre,
    the US-West IX for part of its peering traffic, the US-East private interconnects for
    most neocloud traffic, a few unnamed peerings, transit for the rest; one port of the
    pair at random."""
    n = region.size
    pick = rng.integers(0, 2, size=n)
    u = rng.random(n)
    ext = np.asarray(TRANSIT_IFS, np.uint32)[pick]
    west, east = REGIONS.index("US-West"), REGIONS.index("US-East")
    ix_share = np.array([IX_SHARE.get(c.network_type, 0.0) for c in CELLS])[ci]
    pni_share = np.array([PNI_SHARE * (c.network_type == "Neocloud") for c in CELLS])[ci]
    ix = (region == west) & (u < ix_share)
    pni = (region == east) & (u < pni_share)
    unlinked = ~ix & ~pni & (u > 1 - UNLINKED_SHARE)
    ports = ((ix, IX_IFS), (pni, PNI_IFS), (unlinked, UNLINKED_IFS), (is_mig, MIGRATION_IFS))
    for mask, ifs in ports:
        ext[mask] = np.asarray(ifs, np.uint32)[pick[mask]]
    return ext


#: a link's per-direction volume per hour of a day: (links, 2 directions, 24 hours)
LINK_HOURS_SHAPE = (len(_link_layout()), 2, 24)


@functools.cache
def _link_of_port() -> tuple[np.ndarray, np.ndarray]:
    """Exporters (IPv4-mapped low words, sorted) and the link index of each (exporter,
    interface) pair (-1: none), for :func:`_link_hours`."""
    layout = _link_layout()
    exporters = np.unique([_v4_mapped(e.address) for e in EXPORTERS]).astype(np.uint64)
    top = max(BORDER_EXTERNAL_IFS + MIGRATION_IFS + BORDER_INTERNAL_IFS) + 1
    link_of = np.full((exporters.size, top), -1, np.int64)
    for li, (_name, e, ifs, _t, _d) in enumerate(layout):
        link_of[np.searchsorted(exporters, np.uint64(_v4_mapped(e.address))), list(ifs)] = li
    return exporters, link_of


def _link_hours(table: pa.Table) -> np.ndarray:
    """Sampling-corrected bytes per (link, direction, hour of day) of one day's records."""
    exporters, link_of = _link_of_port()
    exp = np.searchsorted(exporters, bytes16_to_hilo(table.column("exporter"))[1])
    in_if = table.column("in_if").to_numpy()
    out_if = table.column("out_if").to_numpy()
    # inbound: the external interface is in_if (ingress and transit records)
    inbound = link_of[exp, in_if] >= 0
    link = np.where(inbound, link_of[exp, in_if], link_of[exp, out_if])
    vol = table.column("bytes").to_numpy() * table.column("sampling_rate").to_numpy().astype(
        np.uint64
    )
    hour = (table.column("time_start").cast(pa.int64()).to_numpy() // US_PER_HOUR) % 24
    on = link >= 0
    slot = (link[on] * 2 + (~inbound[on]).astype(np.int64)) * 24 + hour[on]
    size = int(np.prod(LINK_HOURS_SHAPE))
    # exact integer sums from float bincounts: 32-bit halves, each summed below 2^53
    v = vol[on]
    lo = np.bincount(slot, weights=v & np.uint64(0xFFFFFFFF), minlength=size).astype(np.uint64)
    hi = np.bincount(slot, weights=v >> np.uint64(32), minlength=size).astype(np.uint64)
    return ((hi << np.uint64(32)) + lo).reshape(LINK_HOURS_SHAPE)


def link_capacities(hours: np.ndarray) -> dict[str, float]:
    """Each link's capacity (Gbps), sized so its p95 hourly rate in its busier direction is
    about its target utilisation, rounded up to whole ports (10 G below 100 G, 50 G below
    400 G, 100 G above). ``hours``: (days, links, 2, 24) bytes."""
    caps = {}
    for li, (name, *_rest) in enumerate(_link_layout()):
        gbps = hours[:, li].astype(np.float64) * 8 / 3600 / 1e9  # (days, 2, 24)
        per_dir = gbps.transpose(1, 0, 2).reshape(2, -1)
        p95 = max(float(np.sort(r)[max(0, int(np.ceil(0.95 * r.size)) - 1)]) for r in per_dir)
        want = max(p95, 1.0) / TIGHT_LINKS.get(name, TARGET_UTILISATION)
        step = 10 if want < 100 else 50 if want < 400 else 100
        caps[name] = float(step * np.ceil(want / step))
    return caps


# --------------------------------------------------------------------------- the command


@dataclass
class SynthSummary:
    """What ``synthesize`` wrote."""

    out: Path
    records: int
    days: int
    files: int
    config_path: Path
    prefixes_path: Path


def _write_day(args: tuple[str, int, str, int, int, str]) -> tuple[str, int, np.ndarray]:
    out, seed, day, n, _i, compression = args
    world = _world_cached(seed)
    writer = ArchiveWriter(
        out,
        counts=COUNTS_RAW,
        source=f"flowatlas synth {__version__} seed={seed}",
        compression=compression,
    )
    hours = np.zeros(LINK_HOURS_SHAPE, np.uint64)
    try:
        for table in generate_day(world, np.datetime64(day), n, seed):
            writer.write(table)
            hours += _link_hours(table)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return day, writer.rows_written, hours


_WORLD_CACHE: dict[int, World] = {}


def _world_cached(seed: int) -> World:
    if seed not in _WORLD_CACHE:
        _WORLD_CACHE[seed] = build_world(seed)
    return _WORLD_CACHE[seed]


def synthesize(
    out: str | os.PathLike[str],
    *,
    records: int = 2_000_000,
    start: str = "2025-07-01",
    days: int = 184,
    seed: int = 1,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    overwrite: bool = False,
    compression: str = DEFAULT_COMPRESSION,
) -> SynthSummary:
    """Write a synthetic archive of ``records`` flow records over ``days`` days from ``start``.

    Deterministic from (records, start, days, seed); ``workers`` processes generate days in
    parallel without changing a byte. ``progress`` is called with records written so far.
    ``compression``: the files' column layout (:data:`~flowatlas.io.archive.COMPRESSIONS`);
    the records are the same whichever it is.
    """
    check_compression(compression)
    if records < 0:
        raise ConfigError(f"--records must be >= 0, not {records}")
    if days < 1:
        raise ConfigError(f"--days must be >= 1, not {days}")
    try:
        start_day = np.datetime64(dt.date.fromisoformat(start), "D")
    except ValueError:
        raise ConfigError(f"--start: {start!r} is not a date like 2025-07-01") from None
    out = Path(out)
    with output_lock(out, what="synth"):
        recover_output(out, marker=SYNTH_MARKER, what="archive")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            if not overwrite:
                raise OutputError(
                    f"{out}: output directory exists and is not empty (use --overwrite)"
                )
            if not (out / SYNTH_MARKER).exists():
                raise OutputError(f"{out}: not a flowatlas synth archive; refusing to overwrite it")
        # written beside --out and swapped into place: whenever the process dies, --out holds
        # the old archive or the new one, complete (flowatlas/io/swap.py)
        tmp = partial_path(out)
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            _ensure_writable_dir(tmp)
            written = _write_archive(
                tmp, start_day, records, days, seed, workers, progress, compression
            )
            swap_into_place(tmp, out)
        except OutputError as exc:  # name the folder the user asked for, not the hidden one
            raise OutputError(str(exc).replace(str(tmp), str(out))) from None
        except OSError as exc:
            raise OutputError(f"{out}: cannot write archive: {exc.strerror or exc}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    files = sum(1 for _ in out.glob("day=*/*.parquet"))
    return SynthSummary(out, written, days, files, out / "flowatlas.toml", out / "prefixes.csv")


def _write_archive(
    out: Path,
    start_day: np.datetime64,
    records: int,
    days: int,
    seed: int,
    workers: int | None,
    progress: Callable[[int], None] | None,
    compression: str = DEFAULT_COMPRESSION,
) -> int:
    """Write the days, flowatlas.toml, prefixes.csv and the marker into ``out``; return rows."""
    world = _world_cached(seed)
    per_day = records_per_day(records, days)
    jobs = [(str(out), seed, str(start_day + i), per_day[i], i, compression)
            for i in range(days) if per_day[i]]  # fmt: skip
    workers = workers or min(os.cpu_count() or 1, 8)
    written = 0
    # each day's link volumes per hour, in day order: they size the links' capacities
    hours = np.zeros((days, *LINK_HOURS_SHAPE), np.uint64)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for job, (_day, n, h) in zip(jobs, pool.map(_write_day, jobs), strict=True):
                written += n
                hours[job[4]] = h
                if progress:
                    progress(n)
    else:
        for job in jobs:
            _day, n, h = _write_day(job)
            written += n
            hours[job[4]] = h
            if progress:
                progress(n)

    config_path = out / "flowatlas.toml"
    header = (
        "# flowatlas configuration for a synthetic archive (flowatlas synth)\n"
        f"# seed={seed} records={records} start={start_day} days={days}\n"
    )
    config_path.write_text(header + dump_config(world.config(link_capacities(hours))))
    world.write_prefix_table(out / "prefixes.csv")
    (out / SYNTH_MARKER).write_text(
        json.dumps(
            {
                "generator": f"flowatlas {__version__}",
                "seed": seed,
                "records": records,
                "start": str(start_day),
                "days": days,
                # always: an archive cached by an older flowatlas (whose default was zstd
                # and whose marker named only other codecs) must not pass for one in the
                # layout asked for (bench caches compare it)
                "compression": compression,
            },
            indent=1,
        )
    )
    return written
