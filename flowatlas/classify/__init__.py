"""Classification: remote addresses -> network type, ASN, organisation.

Sources (routing tables, cloud ranges, ASN classes, user overrides) are read into layers,
compiled with an explicit precedence into one immutable :class:`PrefixTable`, and looked up by
the LPM kernel in :mod:`flowatlas.kernels.lpm`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from flowatlas.classify.table import PrefixTable
    from flowatlas.config import Config


def load_table(config: Config) -> PrefixTable:
    """The prefix table a configuration asks for: a compiled file, or its sources compiled.

    With neither, an empty table: every remote address is Unknown.
    """
    from flowatlas.classify.compiler import compile_layers
    from flowatlas.classify.sources import READERS
    from flowatlas.classify.table import PrefixTable
    from flowatlas.errors import ConfigError

    settings = config.classify
    if settings.table:
        return PrefixTable.load(config.resolve(settings.table))
    layers = []
    for i, spec in enumerate(settings.sources):
        reader = READERS.get(spec.format)
        if reader is None:
            raise ConfigError(
                f"{config.origin}: classify.sources[{i}].format: unknown format {spec.format!r} "
                f"(known: {', '.join(sorted(READERS))})"
            )
        layers.append(reader(config.resolve(spec.path), spec.name or None))
    compiled = compile_layers(layers)
    meta = {"sources": [layer.provenance for layer in layers], "bits6": 20}
    return PrefixTable(
        compiled.starts_hi, compiled.starts_lo, compiled.values, compiled.networks, meta
    )
