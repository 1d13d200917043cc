"""Compiling the build's kernels in a second process while the demo synthesizes its archive.

The CPU kernels are compiled by numba on first use and cached on disk (``cache=True``), so
only the first run after an install pays for compiling them: about 15 s of one core for the
demo, half of it the build's kernels. ``flowatlas demo`` therefore starts
:func:`compile_build_kernels` in a second process when the cache is cold; it compiles the
build's kernels, each for the exact signature the build will call it with, while the parent
synthesizes the archive on the other core, and the build then loads them from the cache.
When the archive is done first, the demo process joins in from the other end of the list
(:func:`finish`).

The two processes compile disjoint sets of kernels. The list of the build's kernels and
their signatures (:data:`flowatlas._kernel_list.BUILD`) is recorded from a real demo run by
``python -m flowatlas.warmup --record``, which also names the synthesizer's kernels
(:data:`~flowatlas._kernel_list.SYNTH`); those stay out of the warm-up, because compiling
them in both processes at once is what made an earlier warm-up (a whole tiny build) cost CPU
and save no time. tests/test_warmup.py fails when the recorded list is stale: after the
warm-up, a cold demo must compile no kernel outside the synthesizer's list.

``FLOWATLAS_WARMUP=0`` turns it off; nothing starts when the cache is already warm or numba's
JIT is disabled.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_LIST_PATH = Path(__file__).with_name("_kernel_list.py")


def numba_types() -> dict[str, Any]:
    """The names a recorded signature may use (numba's type constructors and instances)."""
    from numba.core import types

    names = {k: v for k, v in vars(types).items() if not k.startswith("_")}
    names["bool"] = types.boolean  # repr(types.boolean) is 'bool'
    return names


def parse_signature(text: str, names: dict[str, Any] | None = None) -> tuple[Any, ...]:
    """A signature as recorded (``repr`` of numba's argument types) back to numba types."""
    return eval(text, {"__builtins__": {}}, names if names is not None else numba_types())


def compile_build_kernels(kernels: Iterable[tuple[str, str, str]] | None = None) -> int:
    """Compile (or load from the cache) every ``(module, attribute, signature)``, in order;
    return how many. Defaults to the recorded build kernels."""
    if kernels is None:
        from flowatlas._kernel_list import BUILD as kernels
    names = numba_types()
    done = 0
    for module, attr, sig in kernels:
        getattr(importlib.import_module(module), attr).compile(parse_signature(sig, names))
        done += 1
    return done


def cache_is_cold() -> bool:
    """True when the build's main kernel has no compiled code cached on disk for the
    sources installed now: no cache index, or one written from other sources (after an
    upgrade or a checkout: flowatlas/kernel_cache.py) or by another numba.

    (Reads that kernel's cache index; any doubt counts as cold.)
    """
    try:
        from flowatlas.kernel_cache import stale_or_missing
        from flowatlas.kernels.records import _records

        return stale_or_missing([_records])
    except Exception:  # numba's cache internals moved: warm up, which is always safe
        return True


def _child() -> None:
    try:
        compile_build_kernels()
    except Exception as exc:  # a failed warm-up only means the build compiles for itself
        print(f"flowatlas: kernel warm-up stopped: {exc}", file=sys.stderr)


class _Done:
    """What :func:`start` returns when there is nothing to warm up."""

    exitcode = 0  # what finish() asks: nothing is running

    def join(self, timeout: float | None = None) -> None:
        return None


def finish(proc: Any) -> None:
    """Help a running warm-up to its end, then wait for it: walk its list from the other
    end, compiling what is not yet cached and loading what the warm-up has cached, so the
    two processes meet in the middle (at most the kernel the warm-up is on is compiled
    twice) and this one ends with every build kernel loaded."""
    if proc.exitcode is None:
        from flowatlas._kernel_list import BUILD

        try:
            compile_build_kernels(reversed(BUILD))
        except Exception:  # the build compiles what is missing, as without a warm-up
            pass
    proc.join()


def start() -> Any:
    """Start :func:`compile_build_kernels` in another process when the kernel cache is cold
    (unless ``FLOWATLAS_WARMUP=0``); ``join()`` the result before the build."""
    if os.environ.get("FLOWATLAS_WARMUP") == "0" or os.environ.get("NUMBA_DISABLE_JIT") == "1":
        return _Done()
    if not cache_is_cold():
        return _Done()
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_child, daemon=True, name="flowatlas-warmup")
    proc.start()
    return proc


# ----------------------------------------------------------------------- recording the list


def _dispatchers() -> dict[int, tuple[str, str, Any]]:
    """Every numba CPU dispatcher a loaded flowatlas module holds, by identity:
    ``(module, attribute, dispatcher)``, named where the module defines it."""
    from numba.core.registry import CPUDispatcher

    found: dict[int, tuple[str, str, Any]] = {}
    for name, mod in sorted(sys.modules.items()):
        if not name.startswith("flowatlas") or mod is None:
            continue
        for attr, value in sorted(vars(mod).items()):
            if not isinstance(value, CPUDispatcher):
                continue
            home = getattr(value.py_func, "__module__", None) == name
            if id(value) not in found or home:
                found[id(value)] = (name, attr, value)
    return found


def _signatures() -> set[tuple[str, str, str]]:
    """``(module, attribute, signature)`` of every signature loaded so far."""
    return {
        (mod, attr, repr(tuple(sig)))
        for mod, attr, disp in _dispatchers().values()
        for sig in disp.signatures
    }


Kernels = list[tuple[str, str, str]]


class _CompileTimes:
    """Seconds numba spends compiling each (dispatcher, signature), nested kernels included
    in their callers' time too."""

    def __init__(self) -> None:
        import time

        from numba.core import event

        self.seconds: dict[tuple[int, str], float] = {}
        starts: dict[int, float] = {}

        class Listener(event.Listener):
            def on_start(_, ev: event.Event) -> None:
                starts[id(ev.data["dispatcher"])] = time.perf_counter()

            def on_end(_, ev: event.Event) -> None:
                disp = ev.data["dispatcher"]
                key = (id(disp), repr(tuple(ev.data["args"])))
                self.seconds[key] = time.perf_counter() - starts.pop(id(disp))

        event.register("numba:compile", Listener())

    def of(self, kernel: tuple[str, str, str]) -> float:
        module, attr, sig = kernel
        return self.seconds.get((id(getattr(sys.modules[module], attr)), sig), 0.0)


def ends_first(kernels: Kernels, seconds: dict[tuple[str, str, str], float]) -> Kernels:
    """The kernels ordered for two walks from opposite ends: the slowest to compile at the
    two ends, the quickest in the middle, where the walks meet and one may be compiled
    twice."""
    ranked = sorted(kernels, key=lambda k: (-seconds.get(k, 0.0), k))
    return ranked[0::2] + ranked[1::2][::-1]


def record(
    sizes: Iterable[int] | None = None,
) -> tuple[Kernels, Kernels, dict[tuple[str, str, str], float]]:
    """Run the demo's synthesizer and build on archives of each size (default: the demo's;
    some kernels are chosen by size, such as distinct's dense or hashed cell ids, and a
    kernel the demo does not call would only cost the warm-up time), in this (fresh)
    process; return ``(module, attribute, signature)`` of the build's kernels (those it
    loaded or compiled that the synthesizer had not, ordered by :func:`ends_first`), of the
    synthesizer's, and the seconds each took to compile here (0 where it was cached)."""
    from flowatlas.commands import DEMO_RECORDS, _run_build, _run_synth

    times = _CompileTimes()
    synth: set[tuple[str, str, str]] = set()
    build: set[tuple[str, str, str]] = set()
    for records in sizes or (DEMO_RECORDS,):
        with tempfile.TemporaryDirectory(prefix="flowatlas-record-") as tmp:
            archive, cube = Path(tmp) / "archive", Path(tmp) / "cube"
            _run_synth(archive, records, "2025-07-01", 184, 1, None, True, True)
            synth |= _signatures() - build
            _run_build(archive, cube, overwrite=True, quiet=True)
            build |= _signatures() - synth
    seconds = {k: times.of(k) for k in build | synth}
    return ends_first(sorted(build), seconds), sorted(synth), seconds


def write_list(
    build: Kernels,
    synth: Kernels,
    seconds: dict[tuple[str, str, str], float],
    path: Path = _LIST_PATH,
) -> None:
    """Write the recorded lists as the Python module :mod:`flowatlas._kernel_list`."""

    def rows(kernels: Kernels) -> list[str]:
        return [
            f"    ({mod!r}, {attr!r}, {sig!r}),  # {seconds.get((mod, attr, sig), 0.0):.2f} s"
            for mod, attr, sig in kernels
        ]

    lines = [
        '"""The kernels the demo\'s build and its synthesizer call, with their signatures.',
        "",
        "Written by ``python -m flowatlas.warmup --record`` (flowatlas/warmup.py); do not edit.",
        "The comments give each kernel's compile time when it was recorded.",
        '"""',
        "",
        "#: (module, attribute, argument types) of every kernel the build needs beyond the",
        "#: synthesizer's: what the demo's warm-up process compiles, in this order (and the",
        "#: demo process from the other end once its archive is written: the slowest at the ends)",
        "BUILD = (",
        *rows(build),
        ")",
        "",
        "#: the synthesizer's kernels, which the demo process compiles itself",
        "SYNTH = (",
        *rows(synth),
        ")",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """``python -m flowatlas.warmup --record`` rewrites flowatlas/_kernel_list.py (in a
    child process with an empty kernel cache, so compile times are measured); with no
    argument, compiles the recorded build kernels here (and caches them)."""
    import argparse
    import subprocess

    ap = argparse.ArgumentParser(prog="python -m flowatlas.warmup", description=__doc__)
    ap.add_argument("--record", action="store_true", help="record the kernel lists anew")
    ap.add_argument("--record-here", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.record:
        with tempfile.TemporaryDirectory(prefix="flowatlas-record-cache-") as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache)
            cmd = [sys.executable, "-m", "flowatlas.warmup", "--record-here"]
            return subprocess.run(cmd, env=env, check=False).returncode
    if args.record_here:
        build, synth, seconds = record()
        write_list(build, synth, seconds)
        total = sum(seconds.get(k, 0.0) for k in build)
        print(f"{_LIST_PATH.name}: {len(build)} build signatures ({total:.1f} s to compile, "
              f"nested kernels counted twice) and {len(synth)} synthesizer's")  # fmt: skip
    else:
        print(f"{compile_build_kernels()} build kernels compiled or loaded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
