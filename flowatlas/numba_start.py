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
working directory has one).

It also has the CPU kernels loaded from numba's cache without numba's registries
(:func:`load_cached_without_registries`): before its first cached load, numba installs every
typing and lowering declaration it has (importing some sixty modules of them): 50 of the
first load's 77 CPU ms, though loading machine code from the cache declares, types and lowers
nothing. A kernel that is compiled still gets them all first, as always. And it takes
numba's events off llvmlite's calls (:func:`llvm_calls_without_events`): a cached load makes
some 190 calls into LLVM, and numba broadcasts two events around each, a fifth of a load's
CPU, for a timer of compilations.

First of all, NumPy is imported with its BLAS (OpenBLAS) started on one thread
(:func:`numpy_with_one_blas_thread`): starting a pool of BLAS threads was half of NumPy's
import (78 -> 40 ms of CPU and wall), and a build calls no BLAS.

All of this changes numba and NumPy for the whole process, so only a process that runs
nothing but flowatlas calls :func:`start_numba`: the ``flowatlas build`` command, not the
library.
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
#: how many threads OpenBLAS starts with (read once, as NumPy loads it)
OPENBLAS_THREADS = "OPENBLAS_NUM_THREADS"


def start_numba() -> bool:
    """Import numba's array functions without its BLAS probe importing SciPy; True if this
    call did (False: they were imported already, or SciPy's BLAS was, so there is nothing
    to save). Either way numba then loads cached CPU kernels without its registries
    (:func:`load_cached_without_registries`) and calls LLVM without numba's events around
    each call (:func:`llvm_calls_without_events`). Call it while the process has no other
    thread that may import SciPy or call a numba function. NumPy is imported first, with one
    BLAS thread (:func:`numpy_with_one_blas_thread`)."""
    numpy_with_one_blas_thread()
    if PROBING_MODULE in sys.modules or BLAS_MODULE in sys.modules:
        _faster_loads()
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
    _faster_loads()
    return True


def numpy_with_one_blas_thread() -> bool:
    """Import NumPy with its BLAS on one thread; True if this call did (False: NumPy was
    imported already, or ``OPENBLAS_NUM_THREADS`` is set, which is left to rule).

    NumPy's wheels link OpenBLAS, which starts a pool of threads (one per core) and their
    buffers as NumPy is imported: 38 of the import's 78 ms of CPU and wall, all of it ahead of
    a build's first map task. A build makes no BLAS call (no ``np.dot``, ``@`` or
    ``np.linalg`` on its path), so one thread is as fast. ``OPENBLAS_NUM_THREADS=1`` is set
    only for the import: the environment is as it was afterwards, so processes started
    later (a local cluster's workers) start their BLAS as usual.
    """
    if "numpy" in sys.modules or OPENBLAS_THREADS in os.environ:
        return False
    os.environ[OPENBLAS_THREADS] = "1"
    try:
        import numpy  # noqa: F401
    finally:
        os.environ.pop(OPENBLAS_THREADS, None)
    return True


def _faster_loads() -> None:
    load_cached_without_registries()
    llvm_calls_without_events()


def llvm_calls_without_events() -> bool:
    """Take numba's events off every call into LLVM; True if this call did.

    llvmlite runs each call into LLVM under its lock, calling back on taking and releasing
    it; numba's callbacks broadcast a ``numba:llvm_lock`` start and end event, which only a
    compilation's timer listens to (the LLVM time numba reports in a compile event; it reads
    0 without them). Loading a cached kernel makes some 190 such calls (parsing its module,
    listing its symbols): the events were a fifth of the loads' CPU (29 build kernels, 63 ->
    50 ms). Only numba's own callbacks go; any other stays.
    """
    import numba.core.base  # noqa: F401  # registers them, once: before they are looked for
    from llvmlite.binding import ffi

    ours = [
        (acquire, release)
        for acquire, release in list(getattr(getattr(ffi.lib, "_lock", None), "_cblist", ()))
        if getattr(acquire, "__module__", "") == "numba.core.base"
        and getattr(acquire, "__qualname__", "").startswith("_initialize_llvm_lock_event")
    ]
    for acquire, release in ours:
        ffi.unregister_lock_callback(acquire, release)
    return bool(ours)


def load_cached_without_registries() -> bool:
    """Have numba load cached CPU code without first installing its registries; True if this
    call did (False: done already, or this numba's cache differs from the one known here).

    Before loading a function from its cache, numba's ``Cache.load_overload`` calls its target
    context's ``refresh()``: the first call imports every module of typing and lowering
    declarations numba has and installs their registries (77 ms of CPU before a build's first
    kernel runs, holding the GIL and numba's compiler lock, so a second thread's first kernel
    waits for it). Loading cached code uses none of it: it unpickles the function's
    descriptor, links its object code and wraps the entry point. What that code needs at run
    time is numba's runtime (NRT: its C functions and its atomic counters, compiled once a
    process), which is initialised here instead, and the C symbols numba registers as it
    starts (its C helpers, with its context; the hash secret, imported here; parallel kernels
    start their thread pool through their own ``reload_init``). A function that has to be
    compiled still refreshes first (numba's compiler does so itself), and so does any other
    target's cache (CUDA's): only a CPU context's load skips it.
    """
    import numba.cpython.hashing  # noqa: F401  # registers the hash secret's C symbols
    from numba.core import caching
    from numba.core.cpu import CPUContext
    from numba.core.runtime import rtsys

    cache = caching.Cache
    original = cache.load_overload
    if getattr(original, "_without_registries", False):
        return False
    if not (
        hasattr(cache, "_load_overload") and hasattr(cache, "_guard_against_spurious_io_errors")
    ):
        return False  # pragma: no cover - another numba: its loads stay as they are

    def load_overload(self, sig, target_context):
        if type(target_context) is not CPUContext:
            return original(self, sig, target_context)
        rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)

    load_overload._without_registries = True  # type: ignore[attr-defined]
    load_overload.__wrapped__ = original  # type: ignore[attr-defined]
    cache.load_overload = load_overload
    return True
