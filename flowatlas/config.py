"""flowatlas configuration: one TOML file describing *our* network and how to build cubes.

It says which prefixes and exporters belong to which region (orientation), which exporter
interfaces are private links (Migration), where classification data comes from, and the
cube's time bucket and rollups. Every key has a default (``flowatlas config --dump`` prints
them); an unknown key or a wrong value is an error naming the file and the key, never ignored.
See docs/configuration.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowatlas.errors import ConfigError
from flowatlas.vocab import DIRECTIONS, INTERNAL, MIGRATION, NETWORK_TYPES, UNKNOWN_REGION

if TYPE_CHECKING:
    import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROLLUPS = ("day", "month", "quarter", "all")
_BUCKET = re.compile(r"^(\d+)\s*(s|m|min|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Region:
    """One of our regions: the prefixes it announces and the exporters (routers) in it."""

    name: str
    prefixes: tuple[str, ...] = ()
    exporters: tuple[str, ...] = ()


#: how a link's capacity applies: each direction has it (full duplex), or both share it
CAPACITY_MODES = ("per-direction", "shared")
#: directions a selection link can select (internal flows always go to the catch-all)
SELECTABLE_DIRECTIONS = ("ingress", "egress", "transit")
#: the catch-all link of a region: what no interface or selection link claims
CATCH_ALL = "{region}/other"


@dataclass(frozen=True)
class LinkRule:
    """A link of ours: what it carries, its region and (optionally) its capacity.

    Interface links are an exporter and its interfaces (transit ports, IX ports, private
    interconnects, migration fibre); the cube measures their traffic (``links.parquet``).
    ``network_type``, where set, is the type of the flows over them (Migration for the
    private fibre: the form without a name, which defaults to it). Selection links have no
    exporter: they claim the flows of their region whose network type and direction match
    ``select_network_types`` and ``select_directions`` (empty: all). See
    docs/configuration.md for the rule that puts every flow on exactly one link.
    """

    exporter: str = ""
    interfaces: tuple[int, ...] = ()
    network_type: str | None = MIGRATION
    description: str = ""
    name: str = ""  # empty: derived from exporter and interfaces (the unnamed form)
    region: str = ""  # empty: the exporter's configured region (see Config)
    capacity_gbps: float | None = None
    capacity_mode: str = "per-direction"
    select_network_types: tuple[str, ...] = ()
    select_directions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name and self.exporter:
            object.__setattr__(self, "name", derived_link_name(self.exporter, self.interfaces))

    @property
    def is_interface_link(self) -> bool:
        """Whether an exporter's interfaces define the link (else a selection does)."""
        return bool(self.exporter)

    @property
    def is_selection_link(self) -> bool:
        return not self.exporter

    def selects(self, network_type: str, direction: str) -> bool:
        """Whether this selection link claims flows of this type and direction (its region
        aside); internal flows never, they go to the region's catch-all."""
        if self.is_interface_link or direction not in SELECTABLE_DIRECTIONS:
            return False
        types_ok = not self.select_network_types or network_type in self.select_network_types
        dirs_ok = not self.select_directions or direction in self.select_directions
        return types_ok and dirs_ok

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinkRule:
        """A link from :meth:`to_dict`'s plain data (as cube.json records it), unchecked.

        The original form's keys (exporter, interfaces, network_type, description) suffice.
        """
        select = d.get("select") or {}
        cap = d.get("capacity_gbps")
        return cls(
            d.get("exporter") or "",
            tuple(d.get("interfaces") or ()),
            d.get("network_type", MIGRATION if "name" not in d else None),
            d.get("description") or "",
            d.get("name") or "",
            d.get("region") or "",
            None if cap is None else float(cap),
            d.get("capacity_mode") or CAPACITY_MODES[0],
            tuple(select.get("network_types") or ()),
            tuple(select.get("directions") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        """The link as plain data, every key present (``None`` where a value is unset)."""
        d: dict[str, Any] = {
            "name": self.name,
            "region": self.region,
            "capacity_gbps": self.capacity_gbps,
            "capacity_mode": self.capacity_mode,
            "description": self.description,
        }
        if self.is_interface_link:
            d.update(
                exporter=self.exporter,
                interfaces=list(self.interfaces),
                network_type=self.network_type,
            )
        else:
            d["select"] = {
                "network_types": list(self.select_network_types),
                "directions": list(self.select_directions),
            }
        return d


def derived_link_name(exporter: str, interfaces: Sequence[int]) -> str:
    """The name of an unnamed interface link: ``10.10.0.9:501,502`` (IPv6 in brackets)."""
    host = f"[{exporter}]" if ":" in exporter else exporter
    return f"{host}:{','.join(str(i) for i in interfaces)}"


def catch_all_name(region: str) -> str:
    """The catch-all link of ``region``: ``US-West/other``."""
    return CATCH_ALL.format(region=region)


@dataclass(frozen=True)
class SourceSpec:
    """A classification source: a file and the reader for its format."""

    path: str
    format: str
    name: str = ""
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class ClassifySettings:
    """Where remote network types come from: a compiled table or sources to compile."""

    table: str | None = None
    sources: tuple[SourceSpec, ...] = ()
    network_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class CubeSettings:
    """The cube's time bucket and exact-distinct rollups."""

    bucket: str = "1h"
    rollups: tuple[str, ...] = ROLLUPS
    ipv6_prefix: int = 64
    sketch_precision: int = 12  # HyperLogLog p per sketch (0: no sketches)
    sketch_period: str = "day"  # one sketch per "day" x dimensions, or per "bucket" (cell)

    @property
    def bucket_seconds(self) -> int:
        return parse_duration(self.bucket, "cube.bucket")


#: the ``[import] max_line_rate_gbps`` default: faster than any one link today
DEFAULT_MAX_LINE_RATE_GBPS = 1_600.0


@dataclass(frozen=True)
class ImportSettings:
    """What ``flowatlas import`` takes for a true record (``[import]``).

    A record whose bytes x 8 / duration exceeds ``max_line_rate_gbps`` is quarantined: no
    link carries it, so it is corruption (bit rot, a broken exporter), not traffic.
    """

    max_line_rate_gbps: float = DEFAULT_MAX_LINE_RATE_GBPS


@dataclass(frozen=True)
class Config:
    """The whole configuration; paths inside are relative to ``base_dir``."""

    regions: tuple[Region, ...] = ()
    links: tuple[LinkRule, ...] = ()
    classify: ClassifySettings = field(default_factory=ClassifySettings)
    cube: CubeSettings = field(default_factory=CubeSettings)
    base_dir: str = "."
    origin: str = "<defaults>"
    importing: ImportSettings = field(default_factory=ImportSettings)

    def __post_init__(self) -> None:
        # an interface link without a region is in its exporter's region (else Unknown)
        if any(lk.is_interface_link and not lk.region for lk in self.links):
            where = exporter_regions(self)
            links = tuple(
                replace(lk, region=where.get(_address_key(lk.exporter), UNKNOWN_REGION))
                if lk.is_interface_link and not lk.region
                else lk
                for lk in self.links
            )
            object.__setattr__(self, "links", links)

    @property
    def network_types(self) -> tuple[str, ...]:
        extra = [t for t in self.classify.network_types if t not in NETWORK_TYPES]
        for rule in self.links:
            t = rule.network_type
            if t is not None and t not in NETWORK_TYPES and t not in extra:
                extra.append(t)
        return NETWORK_TYPES + tuple(extra)

    @property
    def region_names(self) -> tuple[str, ...]:
        """Every region a flow can have: Unknown, then the configured ones (cube order)."""
        return (UNKNOWN_REGION, *(r.name for r in self.regions))

    def resolve(self, path: str) -> Path:
        """A path from the configuration, relative to the configuration file's folder."""
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else Path(self.base_dir) / p

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data (what ``--dump`` prints), without location info."""
        d: dict[str, Any] = {
            "cube": {
                "bucket": self.cube.bucket,
                "rollups": list(self.cube.rollups),
                "ipv6_prefix": self.cube.ipv6_prefix,
                "sketch_precision": self.cube.sketch_precision,
                "sketch_period": self.cube.sketch_period,
            },
            "regions": [
                {"name": r.name, "prefixes": list(r.prefixes), "exporters": list(r.exporters)}
                for r in self.regions
            ],
            "links": [lk.to_dict() for lk in self.links],
            "classify": {
                "network_types": list(self.classify.network_types),
                "sources": [
                    {"path": s.path, "format": s.format, "name": s.name, **dict(s.options)}
                    for s in self.classify.sources
                ],
            },
        }
        if self.classify.table is not None:
            d["classify"]["table"] = self.classify.table
        d["import"] = {"max_line_rate_gbps": self.importing.max_line_rate_gbps}
        return d

    def digest(self) -> str:
        """A content hash of what affects results (cubes record it; ``[import]`` does not)."""
        d = self.to_dict()
        d.pop("import")
        blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def parse_duration(text: str, key: str) -> int:
    """'1h', '15m', '1d', '30s' -> seconds (a divisor or multiple of a day)."""
    m = _BUCKET.match(str(text).strip())
    if not m:
        raise ConfigError(f"{key}: {text!r} is not a duration like '1h', '15m' or '1d'")
    seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds <= 0 or (86400 % seconds and seconds % 86400):
        raise ConfigError(f"{key}: {text!r} must divide a day evenly (or be whole days)")
    return seconds


# --------------------------------------------------------------------------- loading

_TOP_KEYS = {"cube", "regions", "links", "classify", "import"}


def _expect(value: Any, typ: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(value, typ):
        names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise ConfigError(f"{where}: expected {names}, got {type(value).__name__} {value!r}")
    return value


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    _expect(value, list, where)
    for i, v in enumerate(value):
        _expect(v, str, f"{where}[{i}]")
    return tuple(value)


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
        )


def config_from_dict(
    data: dict[str, Any],
    *,
    origin: str = "<dict>",
    base_dir: str = ".",
    checked: Config | None = None,
) -> Config:
    """Validate plain data (as parsed from TOML) into a :class:`Config`.

    ``checked``: a configuration whose addresses were validated already (the one a cube was
    built with). Where this one's regions and interface-link exporters are the same text,
    they are not parsed again: the answer would be the same, and parsing loads the address
    kernels (~0.6 s at start-up, most of a ``flowatlas whatif --config`` call).
    """
    _check_keys(data, _TOP_KEYS, origin)
    cube_d = _expect(data.get("cube", {}), dict, f"{origin}: cube")
    _check_keys(
        cube_d,
        {"bucket", "rollups", "ipv6_prefix", "sketch_precision", "sketch_period"},
        f"{origin}: [cube]",
    )
    cube = CubeSettings(
        bucket=_expect(cube_d.get("bucket", "1h"), str, f"{origin}: cube.bucket"),
        rollups=_str_list(cube_d.get("rollups", list(ROLLUPS)), f"{origin}: cube.rollups"),
        ipv6_prefix=_expect(cube_d.get("ipv6_prefix", 64), int, f"{origin}: cube.ipv6_prefix"),
        sketch_precision=_expect(
            cube_d.get("sketch_precision", 12), int, f"{origin}: cube.sketch_precision"
        ),
        sketch_period=_expect(
            cube_d.get("sketch_period", "day"), str, f"{origin}: cube.sketch_period"
        ),
    )
    if cube.sketch_period not in ("day", "bucket"):
        raise ConfigError(
            f"{origin}: cube.sketch_period: {cube.sketch_period!r} is not 'day' or 'bucket'"
        )
    sp = cube.sketch_precision
    if isinstance(sp, bool) or not (sp == 0 or 4 <= sp <= 16):
        raise ConfigError(f"{origin}: cube.sketch_precision: {sp!r} is not 0 (off) or 4 to 16")
    if isinstance(cube.ipv6_prefix, bool) or not 1 <= cube.ipv6_prefix <= 64:
        raise ConfigError(f"{origin}: cube.ipv6_prefix: {cube.ipv6_prefix!r} is not 1 to 64")
    parse_duration(cube.bucket, f"{origin}: cube.bucket")
    for r in cube.rollups:
        if r not in ROLLUPS:
            raise ConfigError(f"{origin}: cube.rollups: unknown rollup {r!r} (use {ROLLUPS})")

    regions = []
    names: set[str] = set()
    for i, rd in enumerate(_expect(data.get("regions", []), list, f"{origin}: regions")):
        where = f"{origin}: regions[{i}]"
        _expect(rd, dict, where)
        _check_keys(rd, {"name", "prefixes", "exporters"}, where)
        name = _expect(rd.get("name"), str, f"{where}.name")
        if name in names or name == "Unknown":
            raise ConfigError(f"{where}.name: region {name!r} is defined twice or reserved")
        names.add(name)
        regions.append(
            Region(
                name,
                _str_list(rd.get("prefixes", []), f"{where}.prefixes"),
                _str_list(rd.get("exporters", []), f"{where}.exporters"),
            )
        )

    cd = _expect(data.get("classify", {}), dict, f"{origin}: classify")
    _check_keys(cd, {"table", "sources", "network_types"}, f"{origin}: [classify]")
    sources = []
    for i, sd in enumerate(_expect(cd.get("sources", []), list, f"{origin}: classify.sources")):
        where = f"{origin}: classify.sources[{i}]"
        _expect(sd, dict, where)
        sd = dict(sd)
        path = _expect(sd.pop("path", None), str, f"{where}.path")
        fmt = _expect(sd.pop("format", "auto"), str, f"{where}.format")
        name = _expect(sd.pop("name", ""), str, f"{where}.name")
        sources.append(SourceSpec(path, fmt, name, tuple(sorted(sd.items()))))
    table = cd.get("table")
    if table is not None:
        _expect(table, str, f"{origin}: classify.table")
    classify = ClassifySettings(
        table=table,
        sources=tuple(sources),
        network_types=_str_list(cd.get("network_types", []), f"{origin}: classify.network_types"),
    )
    links = _parse_links(data, origin, tuple(regions), classify)
    config = Config(
        tuple(regions), links, classify, cube, base_dir, origin, _import_settings(data, origin)
    )
    if checked is None or not _same_addresses(config, checked):
        _validate_addresses(config)
        check_regions(config)
    _check_links(config)
    return config


def _same_addresses(config: Config, checked: Config) -> bool:
    """Whether every address ``config`` holds is one ``checked`` holds in the same place."""
    exporters = {lk.exporter for lk in checked.links if lk.is_interface_link}
    return [(r.name, r.prefixes, r.exporters) for r in config.regions] == [
        (r.name, r.prefixes, r.exporters) for r in checked.regions
    ] and all(lk.exporter in exporters for lk in config.links if lk.is_interface_link)


# --------------------------------------------------------------------------- links

_LINK_KEYS = {
    "name", "region", "capacity_gbps", "capacity_mode", "description", "exporter",
    "interfaces", "network_type", "select",
}  # fmt: skip
_SELECT_KEYS = {"network_types", "directions"}


def _address_key(text: str) -> str | None:
    """One spelling per address (IPv4-mapped IPv6 as IPv4), or None if it is not one."""
    import ipaddress

    try:
        a = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return str(a)


def exporter_regions(config: Config) -> dict[str, str]:
    """Each configured exporter (normalised address text) -> its region's name."""
    return {
        key: r.name
        for r in config.regions
        for e in r.exporters
        if (key := _address_key(e)) is not None
    }


def _parse_links(
    data: dict[str, Any], origin: str, regions: tuple[Region, ...], classify: ClassifySettings
) -> tuple[LinkRule, ...]:
    """The [[links]] tables, each checked on its own (cross-link rules: :func:`_check_links`)."""
    known_regions = {UNKNOWN_REGION, *(r.name for r in regions)}
    known_types = set(NETWORK_TYPES) | set(classify.network_types)

    def known_type(t: str, where: str) -> str:
        if t not in known_types:
            raise ConfigError(
                f"{where}: unknown network type {t!r} (declare it in [classify] network_types "
                f"or use one of: {', '.join(NETWORK_TYPES)})"
            )
        return t

    links = []
    for i, ld in enumerate(_expect(data.get("links", []), list, f"{origin}: links")):
        where = f"{origin}: links[{i}]"
        _expect(ld, dict, where)
        _check_keys(ld, _LINK_KEYS, where)
        named = "name" in ld
        name = _expect(ld.get("name", ""), str, f"{where}.name")
        if named and not name.strip():
            raise ConfigError(f"{where}.name: a link's name cannot be empty")
        region = _expect(ld.get("region", ""), str, f"{where}.region")
        if "region" in ld and region not in known_regions:
            raise ConfigError(
                f"{where}.region: unknown region {region!r} "
                f"(configured: {', '.join(sorted(known_regions))})"
            )
        cap = ld.get("capacity_gbps")
        if cap is not None:
            if isinstance(cap, bool) or not isinstance(cap, int | float):
                raise ConfigError(f"{where}.capacity_gbps: expected a number, got {cap!r}")
            if not cap > 0 or cap != cap or cap == float("inf"):
                raise ConfigError(f"{where}.capacity_gbps: {cap!r} is not a positive capacity")
            cap = float(cap)
        mode = _expect(ld.get("capacity_mode", CAPACITY_MODES[0]), str, f"{where}.capacity_mode")
        if mode not in CAPACITY_MODES:
            raise ConfigError(
                f"{where}.capacity_mode: {mode!r} is not one of {', '.join(CAPACITY_MODES)}"
            )
        description = _expect(ld.get("description", ""), str, f"{where}.description")
        if "exporter" in ld or "interfaces" in ld:
            if "select" in ld:
                raise ConfigError(
                    f"{where}.select: a link is defined by exporter + interfaces or by select, "
                    "not both"
                )
            exporter = _expect(ld.get("exporter"), str, f"{where}.exporter")
            ifs = _expect(ld.get("interfaces"), list, f"{where}.interfaces")
            for j, v in enumerate(ifs):
                if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**32:
                    raise ConfigError(f"{where}.interfaces[{j}]: {v!r} is not an interface index")
            if len(set(ifs)) != len(ifs):
                raise ConfigError(f"{where}.interfaces: an interface is listed twice")
            # the unnamed (original) form marks private fibre: Migration unless it says
            ntype = ld.get("network_type", None if named else MIGRATION)
            if ntype is not None:
                known_type(_expect(ntype, str, f"{where}.network_type"), f"{where}.network_type")
            links.append(
                LinkRule(exporter, tuple(ifs), ntype, description, name, region, cap, mode)
            )
            continue
        if not named:
            raise ConfigError(
                f"{where}: a link needs exporter + interfaces, or a name, a region and select"
            )
        if "network_type" in ld:
            raise ConfigError(
                f"{where}.network_type: only interface links set a network type "
                "(a selection link measures the types it selects)"
            )
        if "region" not in ld:
            raise ConfigError(f"{where}.region: a selection link needs its region")
        sel = _expect(ld.get("select", {}), dict, f"{where}.select")
        _check_keys(sel, _SELECT_KEYS, f"{where}.select")
        types = _str_list(sel.get("network_types", []), f"{where}.select.network_types")
        for j, t in enumerate(types):
            known_type(t, f"{where}.select.network_types[{j}]")
        dirs = _str_list(sel.get("directions", []), f"{where}.select.directions")
        for j, d in enumerate(dirs):
            if d not in SELECTABLE_DIRECTIONS:
                why = " (internal flows go to the catch-all)" if d in DIRECTIONS else ""
                raise ConfigError(
                    f"{where}.select.directions[{j}]: {d!r} is not one of "
                    f"{', '.join(SELECTABLE_DIRECTIONS)}{why}"
                )
        if INTERNAL in types:
            raise ConfigError(
                f"{where}.select.network_types: 'Internal' flows go to the catch-all link"
            )
        links.append(
            LinkRule(
                "", (), None, description, name, region, cap, mode,
                tuple(dict.fromkeys(types)), tuple(dict.fromkeys(dirs)),
            )
        )  # fmt: skip
    return tuple(links)


def _check_links(config: Config) -> None:
    """Rules between links: unique names, one link per exporter interface, a link's region
    agreeing with its exporter's, selections of one region that do not intersect."""
    origin = config.origin
    seen: dict[str, str] = {}
    for i, r in enumerate(config.regions):
        for e in r.exporters:
            key = _address_key(e) or e
            if seen.setdefault(key, r.name) != r.name:
                raise ConfigError(
                    f"{origin}: regions[{i}].exporters: exporter {e} is also in region "
                    f"{seen[key]!r} (an exporter belongs to one region)"
                )
    reserved = {catch_all_name(r): r for r in config.region_names}
    names: dict[str, int] = {}
    claimed: dict[tuple[str, int], int] = {}
    where_exp = exporter_regions(config)
    for i, lk in enumerate(config.links):
        where = f"{origin}: links[{i}]"
        if lk.name in reserved:
            raise ConfigError(
                f"{where}.name: {lk.name!r} is the catch-all link of region {reserved[lk.name]!r} "
                "(what no other link claims); choose another name"
            )
        if lk.name in names:
            raise ConfigError(
                f"{where}.name: {lk.name!r} is also the name of links[{names[lk.name]}]"
            )
        names[lk.name] = i
        if not lk.is_interface_link:
            continue
        key = _address_key(lk.exporter) or lk.exporter
        configured = where_exp.get(key)
        if configured is not None and lk.region != configured:
            raise ConfigError(
                f"{where}.region: link {lk.name!r} says {lk.region!r} but its exporter "
                f"{lk.exporter} is in region {configured!r}"
            )
        for ifindex in lk.interfaces:
            j = claimed.setdefault((key, ifindex), i)
            if j != i:
                raise ConfigError(
                    f"{where}: links[{j}] ({config.links[j].name!r}) and links[{i}] "
                    f"({lk.name!r}) both claim exporter {lk.exporter} interface {ifindex}"
                )
    selections = [(i, lk) for i, lk in enumerate(config.links) if lk.is_selection_link]
    for a, (i, x) in enumerate(selections):
        for j, y in selections[a + 1 :]:
            if x.region != y.region:
                continue
            types = _intersect(x.select_network_types, y.select_network_types)
            dirs = _intersect(x.select_directions, y.select_directions, SELECTABLE_DIRECTIONS)
            if types and dirs:
                raise ConfigError(
                    f"{origin}: links[{i}] ({x.name!r}) and links[{j}] ({y.name!r}) both "
                    f"select {x.region} flows of type {types[0]} going {dirs[0]}: make their "
                    "selections disjoint"
                )


def _intersect(
    a: tuple[str, ...], b: tuple[str, ...], everything: Sequence[str] = ("any",)
) -> list[str]:
    """What two selections (empty: everything) have in common."""
    if not a and not b:
        return list(everything)
    if not a or not b:
        return list(a or b)
    return [t for t in a if t in b]


def link_names(config: Config) -> list[str]:
    """Every link a flow can fall to, in order: the configured links as written, then each
    region's catch-all (Unknown first, then the configured regions)."""
    return [lk.name for lk in config.links] + [catch_all_name(r) for r in config.region_names]


def assign_links(
    config: Config,
    iface_link: Sequence[str | None],
    region: Sequence[str],
    network_type: Sequence[str],
    direction: Sequence[str],
) -> np.ndarray:
    """The link each row falls to (an object array of names), by the rule of
    docs/configuration.md: its interface link (``iface_link``, None/NaN where none), else
    the first selection link of its region that selects its network type and direction,
    else its region's catch-all. Internal flows always go to the catch-all. An interface link
    that ``config`` does not define (a plan with other links than the cube was built with)
    claims nothing: its rows fall to the selection links and catch-alls like any other.

    The rows are cube cells (``Cube.link_cells()``); columns may be lists, arrays or pandas
    Series of equal length.
    """
    import numpy as np

    region = np.asarray(region, dtype=object)
    ntype = np.asarray(network_type, dtype=object)
    dirs = np.asarray(direction, dtype=object)
    iface = np.asarray(iface_link, dtype=object)
    out = np.array([catch_all_name(str(r)) for r in region], dtype=object)
    defined = {lk.name for lk in config.links if lk.is_interface_link}
    has_iface = np.array([isinstance(v, str) and v in defined for v in iface], dtype=bool)
    internal = dirs == "internal"
    free = ~has_iface & ~internal
    for lk in config.links:
        if not lk.is_selection_link:
            continue
        m = free & (region == lk.region)
        m &= np.isin(dirs, lk.select_directions or SELECTABLE_DIRECTIONS)
        if lk.select_network_types:
            m &= np.isin(ntype, lk.select_network_types)
        out[m] = lk.name
        free &= ~m
    take = has_iface & ~internal
    out[take] = iface[take]
    return out


def _import_settings(data: dict[str, Any], origin: str) -> ImportSettings:
    """The ``[import]`` table."""
    d = _expect(data.get("import", {}), dict, f"{origin}: import")
    _check_keys(d, {"max_line_rate_gbps"}, f"{origin}: [import]")
    rate = d.get("max_line_rate_gbps", DEFAULT_MAX_LINE_RATE_GBPS)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < 1e9:
        raise ConfigError(
            f"{origin}: import.max_line_rate_gbps: {rate!r} is not a positive number of Gbit/s"
        )
    return ImportSettings(float(rate))


def check_regions(config: Config) -> None:
    """One prefix or exporter belongs to one region: the same one in two is an error.

    (Nested prefixes in two regions are fine: the more specific one wins, as everywhere.)
    The build makes the same check, so ``config --check`` and ``build`` never disagree.
    """
    from flowatlas.addresses import parse_addresses, parse_prefixes

    seen: dict[tuple[int, int, int], str] = {}
    for i, r in enumerate(config.regions):
        if not r.prefixes:
            continue
        hi, lo, length, _ = parse_prefixes(
            list(r.prefixes), source=f"{config.origin}: regions[{i}].prefixes"
        )
        for h, lw, n, text in zip(
            hi.tolist(), lo.tolist(), length.tolist(), r.prefixes, strict=True
        ):
            other = seen.setdefault((h, lw, n), r.name)
            if other != r.name:
                raise ConfigError(
                    f"{config.origin}: prefix {text} is listed in two regions, "
                    f"{other!r} and {r.name!r}"
                )
    owners: dict[tuple[int, int], str] = {}
    for i, r in enumerate(config.regions):
        if not r.exporters:
            continue
        hi, lo, _ = parse_addresses(
            list(r.exporters), source=f"{config.origin}: regions[{i}].exporters"
        )
        for h, lw, text in zip(hi.tolist(), lo.tolist(), r.exporters, strict=True):
            other = owners.setdefault((h, lw), r.name)
            if other != r.name:
                raise ConfigError(
                    f"{config.origin}: exporter {text} is listed in two regions, "
                    f"{other!r} and {r.name!r}"
                )


def _validate_addresses(config: Config) -> None:
    from flowatlas.addresses import AddressError, parse_addresses, parse_prefixes

    for i, r in enumerate(config.regions):
        if r.prefixes:
            try:
                parse_prefixes(list(r.prefixes), source=f"{config.origin}: regions[{i}].prefixes")
            except AddressError as exc:
                raise ConfigError(str(exc)) from None
        if r.exporters:
            try:
                parse_addresses(
                    list(r.exporters), source=f"{config.origin}: regions[{i}].exporters"
                )
            except AddressError as exc:
                raise ConfigError(str(exc)) from None
    for i, lk in enumerate(config.links):
        if lk.is_interface_link:
            try:
                parse_addresses([lk.exporter], source=f"{config.origin}: links[{i}].exporter")
            except AddressError as exc:
                raise ConfigError(str(exc)) from None


def load_config(
    path: str | os.PathLike[str] | None = None, *, checked: Config | None = None
) -> Config:
    """Load a TOML configuration file; ``None`` gives the defaults. ``checked``: see
    :func:`config_from_dict`."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        text = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return config_from_dict(data, origin=str(p), base_dir=str(p.resolve().parent), checked=checked)


def dump_config(config: Config) -> str:
    """The configuration as TOML text (``flowatlas config --dump``)."""
    import tomli_w

    d = config.to_dict()
    # TOML cannot hold an empty array of tables meaningfully; drop empty lists of tables
    for key in ("regions", "links"):
        if not d[key]:
            d.pop(key)
    if not d["classify"]["sources"]:
        d["classify"].pop("sources")
    for link in d.get("links", []):  # TOML has no null: an unset value is an absent key
        for k in [k for k, v in link.items() if v is None]:
            del link[k]
    text = tomli_w.dumps(d)
    return text if config.links else text + LINKS_FORM


#: what ``--dump`` says of [[links]] when none is configured: every key, no example values
LINKS_FORM = """
# [[links]]: none configured. Each link has these keys (docs/configuration.md):
#   name            unique among links; without it, "<exporter>:<interfaces>" and
#                   network_type defaults to "Migration" (the original private-link form)
#   region          a configured region or "Unknown" (interface links: their exporter's)
#   capacity_gbps   port speed in Gbps, > 0; absent: the link is measured, not planned
#   capacity_mode   "per-direction" (default: each direction has capacity_gbps) or "shared"
#   description     free text
# and either exporter + interfaces (an interface link):
#   exporter        the router's address
#   interfaces      its interface indexes (the side facing the remote end)
#   network_type    optional: the type of the flows over these interfaces
# or a selection within its region (a selection link):
#   select          { network_types = [...], directions = [...] }; empty or absent: all
"""


__all__ = [
    "CAPACITY_MODES",
    "ROLLUPS",
    "SELECTABLE_DIRECTIONS",
    "ClassifySettings",
    "Config",
    "CubeSettings",
    "ImportSettings",
    "LinkRule",
    "Region",
    "SourceSpec",
    "assign_links",
    "catch_all_name",
    "check_regions",
    "config_from_dict",
    "derived_link_name",
    "dump_config",
    "exporter_regions",
    "link_names",
    "load_config",
    "parse_duration",
]
