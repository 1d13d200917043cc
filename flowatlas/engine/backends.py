"""Which backend runs the kernels: the one place that decides whether a GPU is used.

Every GPU library (numba.cuda, CuPy, cuDF, dask-cuda) is imported only here or behind a
function that this module says may run, and each import is guarded with ``except
Exception``: a missing or broken GPU stack means "no GPU", never a crash. A GPU counts as
present only after a small allocation on it succeeds. On a machine without NVIDIA device
nodes nothing is imported at all, so CPU-only machines never load CUDA.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

BACKENDS = ("auto", "cpu", "gpu")


class GpuFallbackWarning(UserWarning):
    """A GPU was asked for but is not usable; the build runs on the CPU."""


def _simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _no_device_nodes() -> bool:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return True
    return not (Path("/dev/nvidiactl").exists() or Path("/dev/nvidia0").exists())


@functools.cache
def gpu_status() -> tuple[bool, str]:
    """(usable, why): whether the CUDA kernels can run here, and a one-line reason."""
    if _simulated():
        return True, "numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
    if _no_device_nodes():
        return False, "no NVIDIA GPU on this machine"
    try:
        from numba import cuda

        if not cuda.is_available():
            return False, "numba finds no usable CUDA driver or GPU"
        cuda.device_array(16)  # a GPU counts only once an allocation works
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        return True, name
    except Exception as exc:  # any failure of the GPU stack means: no GPU
        return False, f"CUDA unusable: {type(exc).__name__}: {exc}"


def resolve_backend(requested: str) -> str:
    """'cpu' or 'gpu' for a request of 'auto', 'cpu' or 'gpu'.

    'gpu' without a usable GPU warns (:class:`GpuFallbackWarning`) and falls back to the CPU:
    the result is the same cube either way, only slower.
    """
    if requested not in BACKENDS:
        from flowatlas.errors import ConfigError

        raise ConfigError(f"--backend {requested!r}: use one of {', '.join(BACKENDS)}")
    if requested == "cpu":
        return "cpu"
    usable, why = gpu_status()
    if usable:
        return "gpu"
    if requested == "gpu":
        warnings.warn(
            f"GPU backend asked for, but {why}: building on the CPU instead",
            GpuFallbackWarning,
            stacklevel=2,
        )
    return "cpu"
