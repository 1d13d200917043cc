"""CUDA drivers for the kernels' shared per-row bodies.

Imported only when a GPU path is taken (never at package import), so CPU-only machines never
load CUDA. Each driver is a grid-stride loop around a body that is also compiled for the CPU
in its own module; under ``NUMBA_ENABLE_CUDASIM=1`` they run in numba's simulator.
"""

from __future__ import annotations

from numba import cuda

from flowatlas.kernels.lpm import _lpm_body

_lpm_device = cuda.jit(device=True)(_lpm_body)


@cuda.jit
def lpm_kernel(
    hi, lo, out, starts_hi, starts_lo, values, idx4, idx6, nodes, leaf_lo, leaf_hi, shift6
):  # pragma: no cover - compiled
    """out[i] = network id of address (hi[i], lo[i]) (the LPM body in lpm.py)."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < hi.size:
        out[i] = _lpm_device(
            hi[i], lo[i], starts_hi, starts_lo, values, idx4, idx6, nodes, leaf_lo, leaf_hi, shift6
        )
        i += stride
