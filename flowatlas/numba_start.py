"""numba's start without its BLAS probe: for a process that runs flowatlas's kernels only.

The first numba function a process calls (compiled or loaded from the cache) starts numba's
CPU target, which imports ``numba.np.arraymath``; that module asks once, at import, whether
SciPy's BLAS is there (``_HAVE_BLAS``), by importing ``scipy.linalg.cython_blas``. Where
SciPy is installed, that import is all of ``scipy.linalg`` and, through SciPy's array API
layer cloning NumPy's namespace, ``numpy.f2py`` and ``numpy.testing``: 0.12 CPU s, three
quarters of numba's start, in Python that holds the GIL, ahead of a build's first map task
(a 1 M-record build takes about 1 s).

The answer is used by one thing only: the inner product of ``np.correlate`` and
``np.convolve`` in numba code (BLAS's dot product, or else a loop). No flowatlas kernel calls
them, and the probe's answer changes nothing else: ``np.dot``, ``np.linalg`` and the like
look for BLAS themselves when they are compiled. :func:`start_numba` imports that module
with the probe failing at once, so a process that calls it pays nothing for SciPy. It
changes the answer for the whole process, so only a process that runs nothing but
flowatlas calls it: the ``flowatlas build`` command, not the library.
"""

from __future__ import annotations

import sys

#: what numba's probe imports
BLAS_MODULE = "scipy.linalg.cython_blas"
#: the module that probes, once, when it is imported
PROBING_MODULE = "numba.np.arraymath"


def start_numba() -> bool:
    """Import numba's array functions without its BLAS probe importing SciPy; True if this
    call did (False: they were imported already, or SciPy's BLAS was, so there is nothing
    to save). Call it while the process has no other thread that may import SciPy."""
    if PROBING_MODULE in sys.modules or BLAS_MODULE in sys.modules:
        return False
    sys.modules[BLAS_MODULE] = None  # type: ignore[assignment]  # importing it raises
    try:
        __import__(PROBING_MODULE)
    except ImportError:  # another numba: its own start imports what it needs, as usual
        return False
    finally:
        if BLAS_MODULE in sys.modules and sys.modules[BLAS_MODULE] is None:
            del sys.modules[BLAS_MODULE]
    return True
