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
with the probe failing at once, so a process that calls it pays nothing for SciPy; when it
imports numba too, that import goes without SciPy (numba imports it only to check its
version) and without PyYAML (numba reads a ``.numba_config.yaml`` with it; kept where the
working directory has one). It changes the probe's answer for the whole process, so only
a process that runs nothing but flowatlas calls it: the ``flowatlas build`` command, not
the library.
"""

from __future__ import annotations

import os
import sys

#: what numba's probe imports
BLAS_MODULE = "scipy.linalg.cython_blas"
#: the module that probes, once, when it is imported
PROBING_MODULE = "numba.np.arraymath"
#: what numba's own import imports for nothing a build uses: SciPy only to check that its
#: version is at least 1.0 (12 ms), PyYAML only to read a ``.numba_config.yaml`` in the
#: working directory (8-12 ms; kept where there is one)
VERSION_CHECKED = "scipy"
YAML_MODULE = "yaml"
NUMBA_CONFIG_FILE = ".numba_config.yaml"


def start_numba() -> bool:
    """Import numba's array functions without its BLAS probe importing SciPy; True if this
    call did (False: they were imported already, or SciPy's BLAS was, so there is nothing
    to save). Call it while the process has no other thread that may import SciPy."""
    if PROBING_MODULE in sys.modules or BLAS_MODULE in sys.modules:
        return False
    refused = [BLAS_MODULE]
    if "numba" not in sys.modules:  # numba's own import: without SciPy, and PyYAML if unused
        refused += [m for m in (VERSION_CHECKED, YAML_MODULE) if m not in sys.modules]
        if os.path.exists(NUMBA_CONFIG_FILE) and YAML_MODULE in refused:
            refused.remove(YAML_MODULE)
    for name in refused:
        sys.modules[name] = None  # type: ignore[assignment]  # importing it raises
    try:
        __import__(PROBING_MODULE)
    except ImportError:  # another numba: its own start imports what it needs, as usual
        return False
    finally:
        for name in refused:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return True
