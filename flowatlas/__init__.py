"""flowatlas: where a network's traffic goes, by region and remote network type.

Flow archives (NetFlow/IPFIX/sFlow as nfcapd, goflow2 or pmacct write them) become a small
cube of volume, magnitude (bits per unique remote IP) and uniqueness per time bucket, region,
remote network type, direction and IP version, on CPUs and NVIDIA GPUs.

The public API is imported lazily so that ``import flowatlas`` stays cheap and never touches
CUDA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "build_cube": ("flowatlas.engine.build", "build_cube"),
    "build_cube_from_table": ("flowatlas.engine.build", "build_cube_from_table"),
    "open_cube": ("flowatlas.engine.cube", "open_cube"),
    "Cube": ("flowatlas.engine.cube", "Cube"),
    "synthesize": ("flowatlas.synth", "synthesize"),
    "load_config": ("flowatlas.config", "load_config"),
    "FlowatlasError": ("flowatlas.errors", "FlowatlasError"),
}

if TYPE_CHECKING:  # pragma: no cover
    from flowatlas.config import load_config
    from flowatlas.engine.build import build_cube, build_cube_from_table
    from flowatlas.engine.cube import Cube, open_cube
    from flowatlas.errors import FlowatlasError
    from flowatlas.synth import synthesize

__all__ = [
    "Cube",
    "FlowatlasError",
    "__version__",
    "build_cube",
    "build_cube_from_table",
    "load_config",
    "open_cube",
    "synthesize",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'flowatlas' has no attribute {name!r}")
