"""numba kernels: arrays in, arrays out (no pandas, cuDF or Dask in here).

Each kernel's per-row body is compiled for the CPU in its module and for CUDA in
:mod:`flowatlas.kernels.cuda` (imported only on the GPU path).

CPU drivers use numba's parallel loops for large inputs. When several tasks already run at
once in threads of one process (the default local cluster), :func:`serial_kernels` switches
them to their serial twins so the machine is not oversubscribed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_serial_everywhere = [0]


def parallel_allowed() -> bool:
    """False inside :func:`serial_kernels` (in any thread of this process)."""
    return _serial_everywhere[0] == 0


@contextlib.contextmanager
def serial_kernels() -> Iterator[None]:
    """Within this block, CPU kernels use one thread each (tasks supply the parallelism)."""
    _serial_everywhere[0] += 1
    try:
        yield
    finally:
        _serial_everywhere[0] -= 1
