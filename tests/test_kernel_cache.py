"""numba's kernel cache is keyed on every source a kernel is built from (flowatlas/kernel_cache.py).

numba alone checks a cached kernel against its own file only; a kernel that inlines a
function (or reads a constant) from another module kept running the old code after that
module changed. The end-to-end checks change a module in a copy of the package and run the
kernel that inlines from it in fresh interpreters, wherever numba puts the cache.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import flowatlas
from flowatlas import kernel_cache

PACKAGE = Path(flowatlas.__file__).parent

# hll._hash_all inlines accumulate.ip_hash (and through it mix64 and the constant _GOLD);
# it prints the kernel's hashes, the same hashes computed in Python from the constants the
# copy's accumulate.py holds now, whether numba found its cache stale, and its cache hits
_SCRIPT = """
import numpy as np
from flowatlas import kernel_cache
from flowatlas.kernels import accumulate, hll

MASK = (1 << 64) - 1
M1, M2, GOLD = int(accumulate._M1), int(accumulate._M2), int(accumulate._GOLD)

def mix(x):
    x = ((x ^ (x >> 30)) * M1) & MASK
    x = ((x ^ (x >> 27)) * M2) & MASK
    return x ^ (x >> 31)

hi = np.array([0, 1, 0xFFFF, 2**63 + 5, 2**64 - 1], np.uint64)
lo = np.array([0, 7, 0x0A000001, 3, 2**64 - 1], np.uint64)
stale = kernel_cache.stale_or_missing([hll._hash_all])
got = [int(v) for v in hll._hash_all(hi, lo)]
want = [mix(int(h) ^ mix((int(l) + GOLD) & MASK)) for h, l in zip(hi, lo)]
print(got == want, stale, hll._hash_all.stats.cache_hits.get(hll._hash_all.signatures[0], 0))
print(got)
"""


def _copy_package(dest: Path) -> Path:
    """The package's sources (no compiled or cached files) in ``dest/flowatlas``."""
    target = dest / "flowatlas"
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__", "*.nb[ic]"))
    return target


def _run(root: Path, env: dict[str, str]) -> tuple[str, str]:
    p = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        env={**env, "PYTHONPATH": str(root)},
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    first, second = p.stdout.strip().splitlines()[-2:]
    return first, second


@pytest.mark.parametrize("where", ["beside-sources", "NUMBA_CACHE_DIR", "user-cache"])
def test_a_change_to_an_inlined_module_recompiles_the_kernel(tmp_path, where):
    """Change accumulate.py's hash constant in a copy of the package: the kernel in hll.py
    that inlines it, cached before the change, must not run its old code afterwards,
    wherever the cache lies (beside the sources, NUMBA_CACHE_DIR, the user's cache folder
    of a package whose own folder cannot hold one); unchanged sources still load from the
    cache."""
    root = tmp_path / "src"
    pkg = _copy_package(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "PYTHON"))}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    cache = {"beside-sources": pkg / "kernels" / "__pycache__"}.get(where)
    if where == "NUMBA_CACHE_DIR":
        cache = tmp_path / "numba-cache"
        env["NUMBA_CACHE_DIR"] = str(cache)
    elif where == "user-cache":
        # a file where numba would put its folder beside the sources: as for a read-only
        # install (which a test run as root cannot make), numba falls back to the user's
        (pkg / "kernels" / "__pycache__").write_text("not a folder")
        cache = tmp_path / "xdg" / "numba"

    assert _run(root, env)[0] == "True True 0"  # compiled: nothing was cached
    assert _run(root, env)[0] == "True False 1", "unchanged sources load from the cache"
    assert cache is not None and any(cache.rglob("hll._hash_all-*.nbi")), "cached elsewhere"
    before = _run(root, env)[1]

    source = pkg / "kernels" / "accumulate.py"
    text = source.read_text()
    changed = text.replace("0x9E3779B97F4A7C15", "0x9E3779B97F4A7C17")
    assert changed != text
    source.write_text(changed)  # (a new time: Python's own bytecode cache goes by it)

    first, after = _run(root, env)
    assert first == "True True 0", "the kernel ran the code cached before the change"
    assert after != before
    assert _run(root, env)[0] == "True False 1"  # and the new code is cached in turn


def test_every_module_with_cached_kernels_installs_the_stamp_before_them():
    """A module whose ``cache=True`` kernels are decorated before :func:`install` runs (in a
    process that imports it first) would cache them under numba's own stamp."""
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        first = re.search(r"^\s*(@|\w+\s*=\s*).*cache=True", text, re.M)
        if first is None:
            continue
        call = text.find("\nkernel_cache.install()")
        if call < 0 or call > first.start():
            missing.append(str(path.relative_to(PACKAGE)))
    assert missing == []


def test_loaded_kernels_carry_the_stamp_of_their_sources():
    """Every cached dispatcher of the loaded kernel modules holds :func:`sources_stamp` of
    its file, which covers the modules it inlines from."""
    from numba.core.caching import FunctionCache
    from numba.core.registry import CPUDispatcher

    from flowatlas.kernels import distinct, hll, records, tally  # noqa: F401

    assert kernel_cache.installed()
    seen = 0
    for name, mod in list(sys.modules.items()):
        if not name.startswith("flowatlas.") or mod is None:
            continue
        for value in vars(mod).values():
            if isinstance(value, CPUDispatcher) and isinstance(value._cache, FunctionCache):
                file = value.py_func.__code__.co_filename
                stamp = value._cache._cache_file._source_stamp
                assert stamp == kernel_cache.sources_stamp(file), (name, value)
                seen += 1
    assert seen > 30
    records_sources = {Path(p).name for p in kernel_cache.sources_of(records.__file__)}
    # records.py inlines lpm's lookup and orient's bodies (and imports no accumulate since
    # value_codes hashes by itself); hll inlines accumulate's ip_hash
    assert {"records.py", "lpm.py", "orient.py", "__init__.py"} <= records_sources
    assert "accumulate.py" in {Path(p).name for p in kernel_cache.sources_of(hll.__file__)}


def test_a_function_outside_the_package_keeps_numbas_stamp(tmp_path):
    code = (
        "import numba\nfrom flowatlas import kernel_cache\nkernel_cache.install()\n"
        "@numba.njit(cache=True)\ndef f(x):\n    return x + 1\n"
        "print(type(f._cache._cache_file._source_stamp).__name__, f(1))\n"
    )
    (tmp_path / "user_mod.py").write_text(code)
    p = subprocess.run(
        [sys.executable, "-c", "import user_mod"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["bytes", "2"]


def _imports(rel: str, source: str) -> list[str]:
    path = str(PACKAGE / rel)
    return [
        os.path.relpath(f, PACKAGE) for f in kernel_cache.flowatlas_imports(path, source.encode())
    ]


def test_imports_read_from_a_source():
    """Which modules count: top-level imports in every form, in blocks at the top level;
    not imports inside a function (however its signature is written) or for type checkers
    only; a module of the package that the names are, not the package itself."""
    source = """
import os
import flowatlas.kernels.lpm as lpm, numpy
from flowatlas.kernels.accumulate import (
    mix64,
    ip_hash,
)
from . import orient
from .. import errors
from flowatlas.kernels import parallel_allowed
from flowatlas import schema
try:
    from flowatlas.kernels.topk import top_k
except ImportError:
    pass
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from flowatlas.config import Config

def f():
    from flowatlas.kernels.cuda import lpm_kernel

def g(
    a,
) -> None:
    from flowatlas.kernels.cuda_check import record_launches

class K:
    from flowatlas.vocab import REGIONS
"""
    got = _imports("kernels/example.py", source)
    assert got == sorted(
        [
            "kernels/lpm.py",
            "kernels/accumulate.py",
            "kernels/orient.py",
            "errors.py",
            "kernels/__init__.py",
            "schema.py",
            "kernels/topk.py",
            "vocab.py",
        ]
    )
    # a module's own file and this module are never among them; others' names are ignored
    assert _imports("kernels/lpm.py", "from flowatlas.kernels import lpm\nimport numba\n") == []
    assert _imports("x.py", "from flowatlas import kernel_cache\nfrom numbax import y\n") == []


def test_stamp_changes_with_any_source_imported_and_only_then(tmp_path, monkeypatch):
    """The stamp of a file follows the bytes of every module it imports, one after another,
    and not a module it does not import."""
    pkg = _copy_package(tmp_path)
    monkeypatch.setattr(kernel_cache, "PACKAGE_DIR", str(pkg))
    monkeypatch.setattr(kernel_cache, "_digests", {})
    monkeypatch.setattr(kernel_cache, "_stamps", {})
    records, hll = str(pkg / "kernels" / "records.py"), str(pkg / "kernels" / "hll.py")
    base = kernel_cache.sources_stamp(records), kernel_cache.sources_stamp(hll)
    assert base[0] != base[1] and base[0][0] == kernel_cache.STAMP_KIND

    def stamps_after(rel: str, edit: bytes) -> tuple[tuple[str, str], tuple[str, str]]:
        f = pkg / rel
        original = f.read_bytes()
        f.write_bytes(original + edit)
        monkeypatch.setattr(kernel_cache, "_digests", {})
        monkeypatch.setattr(kernel_cache, "_stamps", {})
        out = kernel_cache.sources_stamp(records), kernel_cache.sources_stamp(hll)
        f.write_bytes(original)
        return out

    # kernels/__init__.py: imported by lpm, which records imports; and by hll itself
    changed = stamps_after("kernels/__init__.py", b"\n# changed\n")
    assert changed[0] != base[0] and changed[1] != base[1]
    changed = stamps_after("kernels/lpm.py", b"\n# changed\n")  # records -> lpm; not hll
    assert changed[0] != base[0] and changed[1] == base[1]
    changed = stamps_after("kernels/topk.py", b"\n# changed\n")  # neither imports topk
    assert changed == base
