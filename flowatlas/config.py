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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowatlas.errors import ConfigError
from flowatlas.vocab import MIGRATION, NETWORK_TYPES

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


@dataclass(frozen=True)
class LinkRule:
    """Exporter interfaces that are a private link; flows over them get ``network_type``."""

    exporter: str
    interfaces: tuple[int, ...]
    network_type: str = MIGRATION
    description: str = ""


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

    @property
    def network_types(self) -> tuple[str, ...]:
        extra = [t for t in self.classify.network_types if t not in NETWORK_TYPES]
        for rule in self.links:
            if rule.network_type not in NETWORK_TYPES and rule.network_type not in extra:
                extra.append(rule.network_type)
        return NETWORK_TYPES + tuple(extra)

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
            "links": [
                {
                    "exporter": lk.exporter,
                    "interfaces": list(lk.interfaces),
                    "network_type": lk.network_type,
                    "description": lk.description,
                }
                for lk in self.links
            ],
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
    data: dict[str, Any], *, origin: str = "<dict>", base_dir: str = "."
) -> Config:
    """Validate plain data (as parsed from TOML) into a :class:`Config`."""
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

    links = []
    for i, ld in enumerate(_expect(data.get("links", []), list, f"{origin}: links")):
        where = f"{origin}: links[{i}]"
        _expect(ld, dict, where)
        _check_keys(ld, {"exporter", "interfaces", "network_type", "description"}, where)
        ifs = _expect(ld.get("interfaces"), list, f"{where}.interfaces")
        for j, v in enumerate(ifs):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**32:
                raise ConfigError(f"{where}.interfaces[{j}]: {v!r} is not an interface index")
        links.append(
            LinkRule(
                _expect(ld.get("exporter"), str, f"{where}.exporter"),
                tuple(ifs),
                _expect(ld.get("network_type", MIGRATION), str, f"{where}.network_type"),
                _expect(ld.get("description", ""), str, f"{where}.description"),
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
    config = Config(
        tuple(regions),
        tuple(links),
        classify,
        cube,
        base_dir,
        origin,
        _import_settings(data, origin),
    )
    _validate_addresses(config)
    check_regions(config)
    return config


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
    if config.links:
        try:
            parse_addresses(
                [lk.exporter for lk in config.links], source=f"{config.origin}: links (exporter)"
            )
        except AddressError as exc:
            raise ConfigError(str(exc)) from None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load a TOML configuration file; ``None`` gives the defaults."""
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
    return config_from_dict(data, origin=str(p), base_dir=str(p.resolve().parent))


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
    return tomli_w.dumps(d)


__all__ = [
    "ROLLUPS",
    "ClassifySettings",
    "Config",
    "CubeSettings",
    "ImportSettings",
    "LinkRule",
    "Region",
    "SourceSpec",
    "check_regions",
    "config_from_dict",
    "dump_config",
    "load_config",
    "parse_duration",
]
