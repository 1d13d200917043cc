"""A cube's links and the traffic each carries, read once per cube and configuration.

Links and capacities come from the ``[[links]]`` of the configuration the cube was built
with (``cube.json``), or from another configuration file given for planning (new capacities,
new selection links). Interface links are measured at build time, so a configuration that
names interface links the cube was not built with is refused: rebuild the cube. Selection
links and the catch-alls are assigned here, by the rule of docs/configuration.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowatlas.config import (
    ClassifySettings,
    Config,
    Region,
    assign_links,
    catch_all_name,
    link_names,
    load_config,
)
from flowatlas.errors import InputError
from flowatlas.vocab import DIRECTIONS
from flowatlas.whatif.model import Link, ScenarioError, Traffic, traffic_from_frame

if TYPE_CHECKING:
    import pandas as pd

    from flowatlas.engine.cube import Cube


def cube_config(cube: Cube) -> Config:
    """The configuration stored in the cube (what it was built with).

    It was validated when the cube was built, so it is rebuilt here without parsing its
    addresses again (that would load the address kernels: a second on a first call).
    """
    cached = cube._cache.get("whatif:config")
    if cached is not None:
        return cached
    stored = cube.meta.get("config")
    origin = f"{cube.path}/cube.json"
    if not isinstance(stored, dict):
        raise InputError(f"{origin}: no configuration stored")
    try:
        regions = tuple(
            Region(r["name"], tuple(r.get("prefixes", ())), tuple(r.get("exporters", ())))
            for r in stored.get("regions", [])
        )
        links = cube.links
        types = tuple(stored.get("classify", {}).get("network_types", ()))
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{origin}: configuration unreadable ({exc})") from None
    cfg = Config(regions, tuple(links), ClassifySettings(network_types=types), origin=origin)
    cube._cache["whatif:config"] = cfg
    return cfg


def planning_config(path: str | os.PathLike[str], built: Config | None = None) -> Config:
    """A configuration file given for planning, loaded once per version of the file.

    Its regions' addresses are not parsed again where they are those of ``built`` (the
    configuration the cube was built with, checked by the build)."""
    p = Path(path)
    try:
        st = p.stat()
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        return load_config(p)  # says what is wrong with the path
    cached = _CONFIGS.get(key)
    if cached is None:
        cached = _CONFIGS[key] = load_config(p, checked=built)
    return cached


_CONFIGS: dict[tuple, Config] = {}


def planning_links(config: Config) -> dict[str, Link]:
    """Every link a flow can fall to (configured, then catch-alls), with its capacity."""
    links = {lk.name: Link(lk.name, lk.region, lk.capacity_gbps, lk.capacity_mode) for lk in
             config.links}  # fmt: skip
    for region in config.region_names:
        name = catch_all_name(region)
        links[name] = Link(name, region)
    assert list(links) == link_names(config)
    return links


def _check_interface_links(cube: Cube, built: Config, config: Config) -> None:
    """Refuse a configuration whose interface links the cube was not built with."""
    measured = {lk.name: (lk.exporter, lk.interfaces) for lk in built.links if lk.exporter}
    has_links = (cube.path / "links.parquet").exists()
    for i, lk in enumerate(config.links):
        if not lk.exporter:
            continue
        where = f"{config.origin}: links[{i}]"
        if not has_links:
            raise ScenarioError(
                f"{where}: interface link {lk.name!r} is not measured in {cube.path} (built "
                "without the link dimension); rebuild the cube with this configuration"
            )
        if measured.get(lk.name) != (lk.exporter, lk.interfaces):
            raise ScenarioError(
                f"{where}: interface link {lk.name!r} is not one {cube.path} was built with "
                "(rebuild the cube with this configuration)"
            )


def _rows(cube: Cube, config: Config) -> pd.DataFrame:
    """Bytes per bucket per interface link of ``config`` (null: none) and cube dimensions.

    Flows on an interface link the cube measured but ``config`` does not have fall to the
    configuration's rule like any other (its selection links, else the catch-all)."""
    frame = cube.link_cells()
    keep = [lk.name for lk in config.links if lk.exporter]
    frame["link"] = frame["link"].where(frame["link"].isin(keep), None)
    return frame


def cube_traffic(cube: Cube, config: Config | str | os.PathLike[str] | None = None) -> Traffic:
    """The cube's traffic per link, region, network type and direction (cached per cube)."""
    built = cube_config(cube)
    if config is None:
        cfg = built
    elif isinstance(config, Config):
        cfg = config
    else:
        cfg = planning_config(config, built)
    key = ("whatif", cfg.digest())
    cached: Any = cube._cache.get(key)
    if cached is not None:
        return cached
    _check_interface_links(cube, built, cfg)
    links = planning_links(cfg)

    regions = cube.regions
    place = _placement(cfg, regions, cube.network_types)
    for i, lk in enumerate(cfg.links):
        if lk.region not in regions:
            raise ScenarioError(
                f"{cfg.origin}: links[{i}].region: {lk.region!r} is not a region of {cube.path}"
                f" ({', '.join(regions)})"
            )
    bucket = int(cube.meta.get("bucket_seconds") or _bucket_seconds(cube))
    frame = _rows(cube, cfg)
    traffic = traffic_from_frame(
        frame,
        links,
        bucket,
        regions=regions,
        network_types=cube.network_types,
        place=place,
        origin=str(cube.path),
    )
    cube._cache[key] = traffic
    return traffic


def _placement(
    config: Config, regions: list[str], network_types: list[str]
) -> Callable[[str, str, str], str]:
    """The link traffic without an interface link falls to, by the configuration's rule:
    every (region, network type, direction) of the cube placed in one call, up front."""
    combos = [(r, t, d) for r in regions for t in network_types for d in DIRECTIONS]
    names = assign_links(config, [None] * len(combos), *zip(*combos, strict=True)) if combos else []
    table = {c: str(n) for c, n in zip(combos, names, strict=True)}

    def place(region: str, network_type: str, direction: str) -> str:
        name = table.get((region, network_type, direction))
        if name is None:  # not a combination of the cube's vocabulary
            name = str(assign_links(config, [None], [region], [network_type], [direction])[0])
        return name

    return place


def _bucket_seconds(cube: Cube) -> int:
    from flowatlas.config import parse_duration

    bucket = cube.meta.get("bucket")
    if bucket is None:
        raise InputError(f"{cube.path}/cube.json: no bucket")
    if isinstance(bucket, int | float):
        return int(bucket)
    return parse_duration(str(bucket), f"{cube.path}/cube.json: bucket")
