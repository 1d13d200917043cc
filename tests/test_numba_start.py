"""numba's start without its BLAS probe (flowatlas/numba_start.py), as `flowatlas build` does.

Each check runs in a fresh interpreter: what it is about happens once per process.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

HAVE_SCIPY = importlib.util.find_spec("scipy") is not None


def _run(script: str) -> str:
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout.strip()


def test_start_numba_skips_scipy_and_leaves_it_importable() -> None:
    """numba starts without importing scipy.linalg; afterwards SciPy imports as usual, and
    numba code that needs BLAS (np.dot) still compiles and finds it."""
    out = _run(
        """
import sys
from flowatlas.numba_start import start_numba, BLAS_MODULE
assert start_numba()
assert not start_numba()  # once per process
assert "scipy.linalg" not in sys.modules and BLAS_MODULE not in sys.modules
import numba, numpy as np
from numba.np import arraymath
@numba.njit(cache=False)
def total(a):
    return a.sum()
assert total(np.arange(10.0)) == 45.0
assert "scipy.linalg" not in sys.modules
print(arraymath._HAVE_BLAS)
try:
    import scipy.linalg.cython_blas  # noqa: F401
except ImportError:
    print("no scipy")
    raise SystemExit(0)
@numba.njit(cache=False)
def dot(a, b):
    return np.dot(a, b)
assert dot(np.arange(3.0), np.arange(3.0)) == 5.0
print("dot ok")
"""
    )
    if HAVE_SCIPY:
        assert out.splitlines() == ["False", "dot ok"]
    else:
        assert out.splitlines()[-1] == "no scipy"


@pytest.mark.skipif(not HAVE_SCIPY, reason="without SciPy there is no probe to skip")
def test_start_numba_does_nothing_once_scipy_blas_is_loaded() -> None:
    out = _run(
        """
import scipy.linalg.cython_blas  # noqa: F401
from flowatlas.numba_start import start_numba
print(start_numba())
from numba.np import arraymath
print(arraymath._HAVE_BLAS)
"""
    )
    assert out.splitlines() == ["False", "True"]


def test_flowatlas_kernels_use_no_inner_product_the_probe_decides() -> None:
    """The probe's answer only picks np.correlate / np.convolve's inner product in numba
    code; the build command may skip it while no flowatlas module calls them."""
    from pathlib import Path

    import flowatlas

    root = Path(flowatlas.__file__).parent
    users = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name != "numba_start.py"
        and ("np.correlate" in p.read_text() or "np.convolve" in p.read_text())
    ]
    assert users == []


def test_build_command_starts_numba_and_skips_the_last_trim(tmp_path, monkeypatch) -> None:
    """`flowatlas build` (its process ends after the build) chooses its pages for the archive
    first, starts numba without the probe and asks the build not to trim the heap; the
    library's build_cube trims by default."""
    import inspect

    from click.testing import CliRunner

    from flowatlas import commands
    from flowatlas.engine import allocator
    from flowatlas.engine.build import build_cube

    assert inspect.signature(build_cube).parameters["trim_memory"].default is True
    seen: dict[str, object] = {}
    monkeypatch.setattr(
        allocator, "choose_pages", lambda a: seen.setdefault("pages", (len(seen), a))
    )
    monkeypatch.setattr(commands, "start_numba", lambda: seen.setdefault("started", len(seen)))

    def fake_run_build(archive, out, **kwargs):
        seen["trim_memory"] = kwargs.get("trim_memory", True)
        raise commands.ConfigError("stop here")

    monkeypatch.setattr(commands, "_run_build", fake_run_build)
    result = CliRunner().invoke(commands.build, [str(tmp_path), "-o", str(tmp_path / "c")])
    assert isinstance(result.exception, commands.ConfigError)
    assert seen == {"pages": (0, tmp_path), "started": 1, "trim_memory": False}


def test_start_numba_gives_up_quietly_where_numba_differs(monkeypatch) -> None:
    """A numba whose probing module is elsewhere (or fails without SciPy's BLAS) is left to
    start as it always does: nothing raised, nothing left blocked."""
    import flowatlas.numba_start as ns

    monkeypatch.setattr(ns, "PROBING_MODULE", "flowatlas._no_such_module_")
    assert ns.start_numba() is False
    assert ns.BLAS_MODULE not in sys.modules or sys.modules[ns.BLAS_MODULE] is not None


def test_start_numba_imports_numba_without_scipy_or_yaml(tmp_path) -> None:
    """numba's own import goes without SciPy (a version check) and PyYAML (for a
    .numba_config.yaml that is not there); both import as usual afterwards."""
    out = _run(
        f"""
import os, sys
os.chdir({str(tmp_path)!r})
from flowatlas.numba_start import start_numba
assert start_numba()
print([m for m in ("scipy", "yaml") if m in sys.modules])
import numba.core.config
print(numba.core.config._HAVE_YAML)
import importlib.util
for m in ("scipy", "yaml"):
    if importlib.util.find_spec(m) is not None:
        __import__(m)
        assert sys.modules[m] is not None
print("ok")
"""
    )
    assert out.splitlines() == ["[]", "False", "ok"]


def test_start_numba_keeps_yaml_for_a_numba_config_file(tmp_path) -> None:
    """Where the working directory holds a .numba_config.yaml, numba reads it as always."""
    pytest.importorskip("yaml")
    (tmp_path / ".numba_config.yaml").write_text("DEBUG_CACHE: 0\n")
    out = _run(
        f"""
import os
os.chdir({str(tmp_path)!r})
from flowatlas.numba_start import start_numba
assert start_numba()
import numba.core.config
print(numba.core.config._HAVE_YAML)
"""
    )
    assert out == "True"


_CACHED_MODULE = """
import numpy as np
import numba


@numba.njit(cache=True)
def spread(a, k):
    out = np.empty(a.size * k, a.dtype)  # allocates: needs numba's runtime
    for i in range(a.size):
        for j in range(k):
            out[i * k + j] = a[i] + j
    return out


@numba.njit(cache=True, parallel=True)
def doubled(a):
    out = np.empty_like(a)
    for i in numba.prange(a.size):
        out[i] = 2 * a[i]
    return out
"""

_LOAD_CACHED = """
import sys
sys.path.insert(0, {where!r})
{start}
import numpy as np
import cachedmod
a = np.arange(5, dtype=np.int64)
print(cachedmod.spread(a, 3).tolist() == [v + j for v in range(5) for j in range(3)])
print(cachedmod.doubled(a).tolist() == [0, 2, 4, 6, 8])
print(sum(cachedmod.spread._cache_hits.values()), sum(cachedmod.doubled._cache_hits.values()))
print("numba.typed.typeddict" in sys.modules, "numba.np.npdatetime" in sys.modules)
import numba
@numba.njit(cache=False)
def fresh(a):
    return np.sort(a)[::-1].copy()
print(fresh(a).tolist() == [4, 3, 2, 1, 0])
print("numba.typed.typeddict" in sys.modules)
"""


def test_cached_kernels_load_without_numba_registries(tmp_path) -> None:
    """After start_numba, cached CPU kernels (one allocating through numba's runtime, one
    parallel) load and give the same answers without numba's registries being installed;
    a kernel compiled afterwards installs them as usual and works."""
    (tmp_path / "cachedmod.py").write_text(_CACHED_MODULE)
    start = "from flowatlas.numba_start import start_numba; start_numba()"
    compiled = _run(_LOAD_CACHED.format(where=str(tmp_path), start=""))  # compiles, caches
    assert compiled.splitlines()[:3] == ["True", "True", "0 0"]
    loaded = _run(_LOAD_CACHED.format(where=str(tmp_path), start=start)).splitlines()
    assert loaded == ["True", "True", "1 1", "False False", "True", "True"]
    plain = _run(_LOAD_CACHED.format(where=str(tmp_path), start="")).splitlines()
    assert plain[2:4] == ["1 1", "True True"]  # numba's own load installs them all


def test_loads_without_registries_only_for_the_cpu_target() -> None:
    """Installed once; another target's context (CUDA's) loads through numba's own method."""
    out = _run(
        """
from numba.core import caching
seen = []
caching.Cache.load_overload = lambda self, sig, ctx: seen.append(ctx) or "numba's"
from flowatlas.numba_start import load_cached_without_registries
assert load_cached_without_registries()
assert not load_cached_without_registries()
other = object()
print(caching.Cache.load_overload(None, (), other), seen == [other])
"""
    )
    assert out == "numba's True"


def test_llvm_calls_without_numba_events() -> None:
    """start_numba takes numba's LLVM-lock callbacks off llvmlite's calls and leaves any
    other; numba still compiles, and its compile events still come."""
    out = _run(
        """
from llvmlite.binding import ffi
import numba.core.base
other = (lambda: None, lambda: None)
ffi.register_lock_callback(*other)
print(len(ffi.lib._lock._cblist))
from flowatlas.numba_start import start_numba, llvm_calls_without_events
start_numba()
print(ffi.lib._lock._cblist == [other], llvm_calls_without_events())
import numba
from numba.core import event
seen = []
class Listener(event.Listener):
    def on_start(self, ev): seen.append(ev.kind)
    def on_end(self, ev): pass
with event.install_listener("numba:compile", Listener()):
    print(numba.njit(cache=False)(lambda x: x + 1)(41))
print(seen)
"""
    )
    assert out.splitlines() == ["2", "True False", "42", "['numba:compile']"]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS starts no pool on one core")
def test_start_numba_imports_numpy_with_one_blas_thread() -> None:
    """NumPy comes in with OpenBLAS on one thread (no pool: the process has one thread);
    the environment is as it was afterwards; a value the user set is left to rule."""
    script = """
import os
from flowatlas.numba_start import start_numba, numpy_with_one_blas_thread
start_numba()
print(len(os.listdir("/proc/self/task")), os.environ.get("OPENBLAS_NUM_THREADS"),
      numpy_with_one_blas_thread())
"""
    # what OpenBLAS reads (an earlier test's Dask cluster may have left them set)
    blas = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
    unset = {k: v for k, v in os.environ.items() if k not in blas}

    def run(code: str, env: dict[str, str]) -> list[str]:
        p = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
        )
        assert p.returncode == 0, p.stderr[-3000:]
        return p.stdout.split()

    assert run(script, unset) == ["1", "None", "False"]
    plain = run("import os, numpy; print(len(os.listdir('/proc/self/task')))", unset)
    assert int(plain[0]) > 1  # numpy's own import starts the pool
    assert run(script, {**unset, "OPENBLAS_NUM_THREADS": "2"}) == ["2", "2", "False"]
