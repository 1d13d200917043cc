"""Classification: remote addresses -> network type, ASN, organisation, country, metro.

Sources (routing tables, cloud ranges, ASN classes, user overrides, MaxMind DBs) are read into
layers and ASN tables (:mod:`flowatlas.classify.sources`), compiled with the precedence written
down in docs/classification.md into one immutable :class:`PrefixTable`
(:mod:`flowatlas.classify.compiler`), and looked up by the LPM kernel in
:mod:`flowatlas.kernels.lpm`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from flowatlas.classify.compiler import AsnTable, Layer
    from flowatlas.classify.table import PrefixTable
    from flowatlas.config import Config, SourceSpec

#: layer tiers in precedence order (user overrides first); sources of one tier keep their order
_TIER_ORDER = {"override": 0, "prefix": 1, "routing": 2, "geo": 3}


#: ``progress(stage, done, total)``: bytes of sources read, of all of them
Progress = Callable[[str, int, int], None]


def read_sources(
    sources: Sequence[SourceSpec], base_dir: str | Path = ".", progress: Progress | None = None
) -> tuple[list[Layer], list[AsnTable]]:
    """Read sources into layers and ASN tables, each sorted into precedence order.

    ``progress`` is told the bytes read so far after each source (stage: the source's name).
    """
    from flowatlas.classify.sources import read_source

    layers: list[Layer] = []
    tables: list[AsnTable] = []
    paths = []
    for spec in sources:
        path = Path(spec.path).expanduser()
        paths.append(path if path.is_absolute() else Path(base_dir) / path)
    sizes = [p.stat().st_size if p.is_file() else 0 for p in paths]
    done = 0
    for spec, path, size in zip(sources, paths, sizes, strict=True):
        if progress:
            progress(spec.name or path.name, done, sum(sizes))
        done += size
        for item in read_source(path, spec.format, spec.name or None, dict(spec.options)):
            if hasattr(item, "start_hi"):
                layers.append(item)  # type: ignore[arg-type]
            else:
                tables.append(item)  # type: ignore[arg-type]
    if progress:
        progress("read", done, sum(sizes))
    layers.sort(key=lambda layer: _TIER_ORDER.get(layer.tier, 9))
    tables.sort(key=lambda t: 0 if t.tier == "override" else 1)
    return layers, tables


def check_types(layers: Sequence[Layer], tables: Sequence[AsnTable], known: Sequence[str]) -> None:
    """Every network type a source names must be configured; else an error naming its line."""
    import numpy as np

    from flowatlas.errors import InputError

    for src in [*layers, *tables]:
        if "network_type" not in src.attrs.column_names:
            continue
        col = src.attrs.column("network_type").to_numpy(zero_copy_only=False)
        bad = np.flatnonzero([v is not None and v not in known for v in col])
        if bad.size:
            r = int(bad[0])
            raise InputError(
                f"{src.where(r)}: unknown network type {col[r]!r} (configured: "
                f"{', '.join(known)}; add new ones under [classify] network_types)"
            )


def build_table(
    sources: Sequence[SourceSpec],
    *,
    base_dir: str | Path = ".",
    network_types: Sequence[str] | None = None,
    strict: bool = False,
    bits6: int | None = None,
    progress: Progress | None = None,
) -> PrefixTable:
    """Compile sources into a prefix table (the `classify compile` command's Python form).

    ``network_types`` (default: the seed's) lists the types sources may name; override files
    may declare more. With ``strict`` a conflict inside a source is an error, not a warning.
    ``bits6`` (8, 16 or 24) sizes the IPv6 root index; by default 24 for big IPv6 tables.
    ``progress(stage, done, total)`` follows the reading in bytes of source files.
    """
    from flowatlas.classify.compiler import compile_layers
    from flowatlas.classify.sources.overrides import declared_types
    from flowatlas.classify.table import PrefixTable, default_bits6
    from flowatlas.vocab import NETWORK_TYPES

    layers, tables = read_sources(sources, base_dir, progress)
    known = list(network_types or NETWORK_TYPES)
    for spec in sources:
        if spec.format == "overrides" or str(spec.path).endswith(".toml"):
            p = Path(spec.path) if Path(spec.path).is_absolute() else Path(base_dir) / spec.path
            known += [t for t in declared_types(p) if t not in known]
    check_types(layers, tables, known)
    compiled = compile_layers(layers, asn_tables=tables, strict=strict)
    provenance: list[dict[str, Any]] = [
        {**src.provenance, "tier": src.tier, "kind": "layer" if hasattr(src, "start_hi") else "asn"}
        for src in [*layers, *tables]
    ]
    meta = {"sources": provenance, "network_types": known}
    if bits6 is None:
        bits6 = default_bits6(compiled.starts_hi, compiled.starts_lo)
    return PrefixTable.from_compiled(compiled, meta, bits6=bits6)


def load_table(config: Config) -> PrefixTable:
    """The prefix table a configuration asks for: a compiled file, or its sources compiled.

    With neither, an empty table: every remote address is Unknown.
    """
    from flowatlas.classify.table import PrefixTable

    settings = config.classify
    if settings.table:
        return PrefixTable.load(config.resolve(settings.table))
    return build_table(
        settings.sources, base_dir=config.base_dir, network_types=config.network_types
    )


__all__ = ["build_table", "check_types", "load_table", "read_sources"]
