"""flowatlas: where a network's traffic goes, by region and remote network type.

Flow archives (NetFlow/IPFIX/sFlow as nfcapd, goflow2 or pmacct write them) become a small
cube of volume, magnitude (bits per unique remote IP) and uniqueness per time bucket, region,
remote network type, direction and IP version, on CPUs and NVIDIA GPUs.

The public API is imported lazily so that ``import flowatlas`` stays cheap and never touches
CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"


def numba_cache_dir(
    env: dict[str, str] | None = None,
    package_dir: str | None = None,
    writable: Callable[[str], bool] | None = None,
) -> str | None:
    """Where compiled kernels are cached when numba would find nowhere to put them.

    Kernels are compiled once and cached (``cache=True``): numba writes beside the package's
    sources (``__pycache__``), or, for a read-only installed package, under the user's cache
    folder (``$XDG_CACHE_HOME`` or ``~/.cache``). Where neither is writable (a system-wide
    install used by a service account without a home, a read-only container), numba would
    refuse to load the kernels at all; this returns a folder in the temporary directory to
    set as ``NUMBA_CACHE_DIR`` then, and None when numba's own choice works or the user set
    ``NUMBA_CACHE_DIR``.
    """
    env = os.environ if env is None else env
    if env.get("NUMBA_CACHE_DIR"):
        return None
    check = writable or _writable
    if check(package_dir or os.path.dirname(os.path.abspath(__file__))):
        return None
    user = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if check(user):
        return None
    import tempfile

    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"flowatlas-numba-cache-{uid}")


def _writable(path: str) -> bool:
    """True if ``path`` (or the nearest folder above it that exists) can be written to."""
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return os.access(path, os.W_OK | os.X_OK)


_cache_dir = numba_cache_dir()
if _cache_dir is not None:  # before numba is imported: it reads the setting once
    os.environ["NUMBA_CACHE_DIR"] = _cache_dir

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
