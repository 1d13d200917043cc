"""numba's kernel cache, kept fresh by every source a kernel's machine code comes from.

flowatlas compiles its CPU kernels once and caches them on disk (``cache=True``). numba
keys each cached kernel on its own source file only (a hash of that file's bytes) and on the
bytecode of the Python function. A kernel's machine code holds more than that: every numba
function it calls from another module is compiled into it (``inline="always"`` or not; a
call links the callee's code into the caller's library), and every global it reads (a
constant imported from another module) is frozen into it as it compiles. So a checkout that
changed ``kernels/lpm.py`` alone kept running the old ``records_cpu``, with the old LPM
lookup inlined, from ``__pycache__``: numba saw ``records.py`` unchanged and loaded it.

:func:`install` makes numba key the cached code of any function defined in a flowatlas
module on a hash of that module's source *and of every flowatlas module it imports, one
module after another* (:func:`sources_stamp`), in place of its own file's hash. A change to
any of them makes the index numba keeps beside the cached code stale: numba then compiles
the kernel afresh and rewrites the index, exactly as it does when the kernel's own file
changes. Which modules count is read from the sources themselves (their import statements,
:func:`flowatlas_imports`), so a new import needs no list kept by hand; an import inside a
function is left out (it binds a name in that Python function, which no kernel can read).

It applies wherever numba puts the cache: beside the sources (``__pycache__``), under the
user's cache folder for a read-only install, or in ``NUMBA_CACHE_DIR`` (numba's three
file-backed cache locators share the stamp this replaces). Every process that imports a
kernel module installs it first, before the module's decorators run (each such module calls
:func:`install` after importing numba): the build, the demo's warm-up process
(flowatlas/warmup.py) and a cluster's worker processes alike. Functions outside the
flowatlas package keep numba's own stamp. A reinstall or a ``git checkout`` that changes
what a kernel is built from therefore recompiles it, and the demo's warm-up sees the cache
as cold (:func:`flowatlas.warmup.cache_is_cold` asks whether the stamp numba would write
matches). What it costs: each source is read and hashed once a process (numba read and
hashed each kernel's own file anyway), about 1 ms for the build's kernels.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Iterable, Iterator

#: the folder of the flowatlas package whose modules' stamps this computes
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
PACKAGE = __name__.rpartition(".")[0]
#: left out of every stamp (it holds no kernel code; :data:`STAMP_KIND` says how stamps are
#: made, and changes when that does)
_THIS_FILE = os.path.abspath(__file__)
#: what this module's stamps start with: never equal to numba's own (a digest of one file),
#: so code cached under numba's stamp (by an older flowatlas) counts as stale once
STAMP_KIND = "flowatlas-sources-v1"

# An import statement from a line's start: ``from X import names`` (names up to the line's
# end, or in parentheses over several lines) or ``import X, Y``, at any indentation.
_IMPORT = re.compile(
    rb"([ \t]*)(?:from[ \t]+([\w.]+)[ \t]+import[ \t]+(\([^)]*\)|[^\n#;]*)"
    rb"|import[ \t]+([\w. \t,]+))",
    re.M,
)
_NAME = re.compile(rb"[A-Za-z_]\w*")

_digests: dict[str, tuple[bytes, tuple[str, ...]]] = {}
_stamps: dict[str, tuple[str, str]] = {}
_files: dict[tuple[str, str], str | None] = {}


def module_file(module: str) -> str | None:
    """The source file of a flowatlas module by its dotted name (``flowatlas.kernels.lpm``:
    ``.../kernels/lpm.py``; a package: its ``__init__.py``), or None where there is none."""
    key = (PACKAGE_DIR, module)
    if key not in _files:
        parts = module.split(".")
        base = os.path.join(PACKAGE_DIR, *parts[1:])
        found = [p for p in (base + ".py", os.path.join(base, "__init__.py")) if os.path.isfile(p)]
        _files[key] = found[0] if found and parts[0] == PACKAGE else None
    return _files[key]


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, PACKAGE_DIR)[: -len(".py")].split(os.sep)
    if rel[-1] == "__init__":
        rel.pop()
    return ".".join([PACKAGE, *rel])


def _in_function(source: bytes, at: int) -> bool:
    """True if the indented line starting at ``at`` lies in a function defined at the
    module's top level, or in an ``if TYPE_CHECKING:`` block there (the nearest unindented
    line above it starts a ``def`` or is that ``if``): code that runs later, or never."""
    start = source.rfind(b"\n", 0, at)
    while start > 0:
        line_start = source.rfind(b"\n", 0, start) + 1
        line = source[line_start:start]
        if line and line[:1] not in b" \t#\r)":  # ")": a signature over several lines
            return line.startswith((b"def ", b"async def ", b"if TYPE_CHECKING"))
        start = line_start - 1
    return False


def _import_statements(source: bytes) -> Iterator[re.Match[bytes]]:
    """Each import statement in ``source``, found from the word ``import`` (a search in C)
    and matched from its line's start: a tenth of the time of a regex tried at every line."""
    pos = source.find(b"import")
    while pos >= 0:
        m = _IMPORT.match(source, source.rfind(b"\n", 0, pos) + 1)
        if m is not None and m.end() > pos:
            yield m
            pos = m.end()
        else:
            pos += 6
        pos = source.find(b"import", pos)


def flowatlas_imports(path: str, source: bytes) -> tuple[str, ...]:
    """The files of the flowatlas modules that the module in ``path`` imports, read from its
    source ``source``: ``import flowatlas.x``, ``from flowatlas.x import y`` (and ``y``
    where it is a module itself) and relative imports, at the module's top level or in a
    block there (``try``, ``if``, a class), not inside a function. Reading more than the
    module runs (a string that looks like an import) only makes a stamp stricter."""
    package = _module_name(path)
    if not path.endswith("__init__.py"):
        package = package.rpartition(".")[0]
    found: set[str] = set()
    for m in _import_statements(source):
        relative = m.group(2) is not None and m.group(2).startswith(b".")
        if not relative and PACKAGE.encode() not in m.group(0):
            continue  # another package's
        if m.group(1) and _in_function(source, m.start()):
            continue
        if m.group(2) is not None:
            module = m.group(2).decode()
            if module.startswith("."):
                dots = len(module) - len(module.lstrip("."))
                anchor = package.split(".")[: len(package.split(".")) - (dots - 1)]
                module = ".".join(anchor + ([module[dots:]] if module[dots:] else []))
            names = [n.decode() for n in _NAME.findall(m.group(3)) if n != b"as"]
            submodules = [f"{module}.{n}" for n in names if module_file(f"{module}.{n}")]
            # the package's own module too, unless every name imported is a module in it
            candidates = submodules + ([module] if len(submodules) < len(names) else [])
        else:
            candidates = [c.strip().split()[0] for c in m.group(4).decode().split(",") if c.strip()]
        for candidate in candidates:
            file = module_file(candidate)
            if file is not None and file not in (path, _THIS_FILE):
                found.add(file)
    return tuple(sorted(found))


def _digest(path: str) -> tuple[bytes, tuple[str, ...]]:
    """The SHA-256 of a source file's bytes and the flowatlas modules it imports (once a
    process: what a kernel is compiled from is the source as this process imported it)."""
    known = _digests.get(path)
    if known is None:
        with open(path, "rb") as f:
            source = f.read()
        known = (hashlib.sha256(source).digest(), flowatlas_imports(path, source))
        _digests[path] = known
    return known


def sources_of(path: str) -> list[str]:
    """``path`` and every flowatlas source it imports, directly or through another one
    (breadth first, each once)."""
    seen = [path]
    for file in seen:
        for dep in _digest(file)[1]:
            if dep not in seen:
                seen.append(dep)
    return seen


def sources_stamp(path: str) -> tuple[str, str]:
    """The stamp numba keeps with the cached code of a function defined in ``path``: a hash
    over the bytes of that file and of every flowatlas module it imports (:func:`sources_of`),
    each named by its place in the package, so that a change to any of them is a change."""
    stamp = _stamps.get(path)  # by the path as given: numba asks with the same one each time
    if stamp is None:
        h = hashlib.sha256()
        for file in sorted(sources_of(os.path.abspath(path))):
            h.update(os.path.relpath(file, PACKAGE_DIR).encode() + b"\0" + _digest(file)[0])
        stamp = _stamps[path] = (STAMP_KIND, h.hexdigest())
    return stamp


def _ours(path: str) -> bool:
    return os.path.abspath(path).startswith(PACKAGE_DIR + os.sep) and path.endswith(".py")


def install() -> bool:
    """Have numba stamp the cached code of every function defined in a flowatlas module with
    :func:`sources_stamp`; True if this call did (False: installed already). Call it before a
    module's ``cache=True`` functions are decorated (numba takes the stamp then)."""
    from numba.core import caching

    mixin = caching._SourceFileBackedLocatorMixin
    original = mixin.get_source_stamp
    if getattr(original, "_flowatlas_sources", False):
        return False

    def get_source_stamp(self):
        path = self._py_file  # ~100 kernels in ~15 files: known after a file's first kernel
        stamp = _stamps.get(path)
        if stamp is None:
            if getattr(sys, "frozen", False) or not _ours(path):
                return original(self)
            stamp = sources_stamp(path)
        return stamp

    get_source_stamp._flowatlas_sources = True  # type: ignore[attr-defined]
    get_source_stamp.__wrapped__ = original  # type: ignore[attr-defined]
    mixin.get_source_stamp = get_source_stamp
    return True


def installed() -> bool:
    """True once :func:`install` has run in this process."""
    from numba.core import caching

    stamp = caching._SourceFileBackedLocatorMixin.get_source_stamp
    return bool(getattr(stamp, "_flowatlas_sources", False))


def stale_or_missing(dispatchers: Iterable[object]) -> bool:
    """True if any of these numba dispatchers has no cached code under its current stamp
    (no index, an index from other sources or another numba, or an empty one)."""
    for d in dispatchers:
        try:
            if not d._cache._cache_file._load_index():  # type: ignore[attr-defined]
                return True
        except Exception:  # numba's cache internals moved: count it as cold
            return True
    return False
