"""Compile the CUDA kernels for real GPUs on a machine without one: PTX, then a cubin.

numba's simulator runs kernels as Python and never types them, so a kernel that only a real
GPU would reject (a uint64/int64 mix that numba types as float64, an unsupported function, a
register blow-up) passes every simulator test. This module closes that gap, for tests and
benchmarks only (the build never imports it):

- :func:`record_launches`: while the simulator tests run with ``FLOWATLAS_CUDA_LAUNCH_LOG``
  set (tests/conftest.py sets it), every kernel launch appends the numba types of its
  arguments to a file in that folder: the exact signatures the GPU path launches with.
- :func:`find_kernels`: every CUDA dispatcher in the package, found by importing each module
  whose source mentions CUDA, so a new kernel cannot be left out.
- :func:`compile_kernel`: NVVM (the nvidia-nvvm wheel, through numba-cuda) compiles a kernel
  to PTX for a compute capability; nvJitLink (the nvidia-nvjitlink wheel, through
  cuda-bindings) assembles that PTX into a cubin for the same architecture and reports
  registers, spills, stack, shared and local memory. Neither needs a driver. Device functions
  ask the *current device* for its capability while they compile; :func:`target` answers for
  the target instead.
- :func:`occupancy_sm90`: the resident warps per SM that those resources allow on sm_90.

Only the recorder runs in the simulator's environment (it needs numba and NumPy alone); the
rest needs the ``gpu`` extra (numba-cuda[cu13]).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import os
import pkgutil
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: folder the launch recorder writes to (one JSON-lines file per process)
LOG_ENV = "FLOWATLAS_CUDA_LAUNCH_LOG"
#: the architectures every kernel must compile and assemble for (A100, H100/H200)
TARGETS = ((8, 0), (9, 0))
#: a test session's recorded launches, merged (tests/conftest.py writes it)
LAUNCHES_ENV = "FLOWATLAS_CUDA_LAUNCHES"


def launches_file() -> Path:
    """Where a test session leaves its recorded launches: ``$FLOWATLAS_CUDA_LAUNCHES``, or
    ``.cuda-launches.jsonl`` in the repository root."""
    env = os.environ.get(LAUNCHES_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".cuda-launches.jsonl"


def stack_missing() -> str | None:
    """Why this environment cannot run the compile check (no numba-cuda, NVVM or nvJitLink),
    or None when it can. Loads the libraries (no driver needed) but touches no device."""
    try:
        import numba_cuda  # noqa: F401
        from cuda.bindings import nvjitlink
        from numba.cuda.cudadrv.nvvm import NVVM

        NVVM()
        nvjitlink.version()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# --------------------------------------------------------------------------- launch recording


@functools.cache
def _module_digest(module_name: str) -> str:
    """sha256 of a module's source file: a recorded signature is stale once it changes."""
    import sys

    path = getattr(sys.modules.get(module_name), "__file__", None)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path else ""


def _layout(ary: Any) -> str:
    """numba's layout letter for a NumPy array (as ``numba.typeof`` gives it)."""
    if ary.flags.c_contiguous:
        return "C"
    if ary.flags.f_contiguous:
        return "F"
    return "A"


def arg_type(arg: Any) -> dict[str, Any]:
    """The numba type a real launch gives ``arg``, as JSON: arrays by dtype, dims, layout.

    Device arrays (the simulator's, which wrap a NumPy array, and numba's real ones) are
    writable arrays; host arrays keep their read-only flag; scalars are typed by
    ``numba.typeof`` (a Python int is int64, a bool is boolean), as the CUDA dispatcher
    types them.
    """
    import numba
    import numpy as np
    from numba.np.numpy_support import as_dtype

    ary = getattr(arg, "_ary", None)  # the simulator's FakeCUDAArray
    if isinstance(ary, np.ndarray):
        return {"dtype": str(ary.dtype), "ndim": ary.ndim, "layout": _layout(ary)}
    if isinstance(arg, np.ndarray):
        out = {"dtype": str(arg.dtype), "ndim": arg.ndim, "layout": _layout(arg)}
        if not arg.flags.writeable:
            out["readonly"] = True
        return out
    t = numba.typeof(arg)
    if isinstance(t, numba.types.Array):  # a real device array
        return {"dtype": str(as_dtype(t.dtype)), "ndim": t.ndim, "layout": t.layout}
    return {"scalar": str(as_dtype(t))}


def numba_type(spec: dict[str, Any]) -> Any:
    """The numba type of one recorded argument (the inverse of :func:`arg_type`)."""
    import numpy as np
    from numba import types
    from numba.np.numpy_support import from_dtype

    if "scalar" in spec:
        return from_dtype(np.dtype(spec["scalar"]))
    return types.Array(
        from_dtype(np.dtype(spec["dtype"])),
        spec["ndim"],
        spec["layout"],
        readonly=bool(spec.get("readonly", False)),
    )


def kernel_name(py_func: Any) -> str:
    """``module.qualname`` of a kernel's Python function: its name in logs and reports."""
    return f"{py_func.__module__}.{py_func.__qualname__}"


class _Recorder:
    """Appends each new (kernel, argument types) of this process to its log file."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"launches-{os.getpid()}.jsonl"
        self.seen: set[str] = set()
        self.lock = threading.Lock()  # tasks launch from several threads of one process

    def __call__(self, py_func: Any, args: tuple) -> None:
        name = kernel_name(py_func)
        line = json.dumps(
            {
                "kernel": name,
                "args": [arg_type(a) for a in args],
                "source": _module_digest(py_func.__module__),
            },
            sort_keys=True,
        )
        with self.lock:
            if line not in self.seen:
                self.seen.add(line)
                with self.path.open("a") as f:
                    f.write(line + "\n")


_installed: list[_Recorder] = []


def record_launches(folder: str | os.PathLike[str]) -> None:
    """Record every kernel launch's argument types under ``folder`` (tests only).

    Wraps the launch of numba's simulated kernels (and, on a real GPU, of its CUDA
    dispatcher) once per process; device functions are not recorded, they are compiled
    through the kernels that call them.
    """
    if _installed:
        return
    from numba import config

    rec = _Recorder(Path(folder))
    _installed.append(rec)
    if config.ENABLE_CUDASIM:
        from numba.cuda.simulator.kernel import FakeCUDAKernel

        launch = FakeCUDAKernel.__call__

        def simulated(self: Any, *args: Any) -> Any:
            if not self._device:
                rec(self.fn, args)
            return launch(self, *args)

        FakeCUDAKernel.__call__ = simulated
    else:  # pragma: no cover - real GPUs only
        from numba.cuda.dispatcher import CUDADispatcher

        call = getattr(CUDADispatcher, "call", None)
        if call is None:  # a numba-cuda that launches another way: record nothing
            return

        def real(self: Any, args: Any, *rest: Any, **kw: Any) -> Any:
            rec(self.py_func, tuple(args))
            return call(self, args, *rest, **kw)

        CUDADispatcher.call = real


def read_launches(folder: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """{kernel name: distinct recorded launches} from a recorder folder (or a merged file)."""
    path = Path(folder)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    out: dict[str, list[dict[str, Any]]] = {}
    for f in files:
        for line in f.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                known = out.setdefault(entry["kernel"], [])
                if entry not in known:
                    known.append(entry)
    return out


# --------------------------------------------------------------------------- kernel discovery


@functools.cache
def find_dispatchers(package: str = "flowatlas") -> dict[str, Any]:
    """{name: CUDA dispatcher} of every kernel and device function the package defines.

    Every module whose source mentions ``cuda`` is imported (any import error is raised:
    a module the check cannot import could hide a kernel), and its globals are searched.
    """
    from numba.cuda.dispatcher import CUDADispatcher

    pkg = importlib.import_module(package)
    found: dict[str, Any] = {}
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        spec = importlib.util.find_spec(info.name)
        origin = getattr(spec, "origin", None)
        if not origin or not origin.endswith(".py"):
            continue
        if "cuda" not in Path(origin).read_text():
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if isinstance(obj, CUDADispatcher):
                found.setdefault(f"{kernel_name(obj.py_func)}@{id(obj):x}", obj)
    return {_short(k, found): v for k, v in found.items()}


def _short(key: str, found: dict[str, Any]) -> str:
    """The dispatcher's name without the id suffix, unless two share a Python function."""
    name = key.rsplit("@", 1)[0]
    twins = [k for k in found if k.rsplit("@", 1)[0] == name]
    return name if len(twins) == 1 else key


def find_kernels(package: str = "flowatlas") -> dict[str, Any]:
    """{name: dispatcher} of the package's kernels (launchable: not device functions)."""
    return {k: d for k, d in find_dispatchers(package).items() if not d.targetoptions.get("device")}


# --------------------------------------------------------------------------- compiling


@contextlib.contextmanager
def target(cc: tuple[int, int], package: str = "flowatlas") -> Iterator[None]:
    """Compile for compute capability ``cc`` with no driver: device functions ask the current
    device for its capability while they compile, so that question is answered here.

    Device functions cache what they compiled by argument types only, so their caches are
    emptied on the way in and out (a function compiled for sm_80 is not reused for sm_90).
    """
    from types import SimpleNamespace

    import numba.cuda.dispatcher as dispatcher

    if not hasattr(dispatcher, "get_current_device"):  # pragma: no cover - numba-cuda changed
        raise RuntimeError("numba.cuda.dispatcher.get_current_device is gone: update the shim")
    devices = [d for d in find_dispatchers(package).values() if d.targetoptions.get("device")]
    saved = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=tuple(cc))
    for d in devices:
        d.overloads.clear()
    try:
        yield
    finally:
        dispatcher.get_current_device = saved
        for d in devices:
            d.overloads.clear()


@dataclass
class Resources:
    """What ptxas reports for one kernel on one architecture (bytes, per thread or block)."""

    registers: int
    stack: int
    spill_stores: int
    spill_loads: int
    shared: int
    local: int
    constant: int
    log: str = field(repr=False, default="")


@dataclass
class Compiled:
    """One kernel compiled for one architecture: its PTX, cubin and resources."""

    kernel: str
    signature: str
    cc: tuple[int, int]
    ptx: str
    cubin: bytes
    resources: Resources


class CompileFailure(Exception):
    """A kernel did not compile or assemble: names the kernel, signature, target and why."""


def signature(launch: dict[str, Any]) -> tuple:
    """The numba argument types of one recorded launch."""
    return tuple(numba_type(a) for a in launch["args"])


def _entry_name(ptx: str) -> str:
    m = re.search(r"\.entry\s+([\w$]+)\s*\(", ptx)
    if not m:
        raise ValueError("no .entry in the PTX")
    return m.group(1)


def parse_resources(log: str, entry: str) -> Resources:
    """The entry function's resources from nvJitLink's ``-verbose`` info log.

    ptxas prints, per function, ``N bytes stack frame, S bytes spill stores, L bytes spill
    loads`` and, for the kernel, ``used R registers, ... X bytes smem, ... Y bytes lmem``.
    Spills of called (non-inlined) functions count towards the kernel's.
    """
    stores = loads = 0
    for m in re.finditer(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log):
        stores += int(m.group(1))
        loads += int(m.group(2))
    head = r"Function properties for '" + re.escape(entry) + r"':\s*\n"
    props = re.search(head + r"([^\n]*used \d+ registers[^\n]*)", log)
    if not props:
        raise ValueError(f"no resource line for {entry[:60]} in the nvJitLink log:\n{log}")
    line = props.group(1)

    def field(pattern: str) -> int:
        m = re.search(pattern, line)
        return int(m.group(1)) if m else 0

    regs = field(r"used (\d+) registers")
    stack = field(r"(\d+) stack")
    smem = field(r"(\d+) bytes smem")
    cmem = field(r"(\d+) bytes cmem\[0\]")
    lmem = field(r"(\d+) bytes lmem")
    return Resources(regs, stack, stores, loads, smem, lmem, cmem, log)


def link_cubin(ptx: str, cc: tuple[int, int], name: str = "kernel") -> tuple[bytes, str]:
    """(cubin, info log): ``ptx`` assembled for ``sm_XY`` by nvJitLink, with no driver."""
    from cuda.bindings import nvjitlink

    arch = f"-arch=sm_{cc[0]}{cc[1]}"
    handle = nvjitlink.create(2, [arch, "-verbose"])
    try:
        data = ptx.encode()
        try:
            nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), name)
            nvjitlink.complete(handle)
        except nvjitlink.nvJitLinkError as exc:
            size = nvjitlink.get_error_log_size(handle)
            err = bytearray(size)
            if size:
                nvjitlink.get_error_log(handle, err)
            raise RuntimeError(f"nvJitLink: {exc}: {err.decode(errors='replace').strip()}") from exc
        cubin = bytearray(nvjitlink.get_linked_cubin_size(handle))
        nvjitlink.get_linked_cubin(handle, cubin)
        size = nvjitlink.get_info_log_size(handle)
        info = bytearray(size)
        if size:
            nvjitlink.get_info_log(handle, info)
        return bytes(cubin), info.decode(errors="replace").rstrip("\x00")
    finally:
        nvjitlink.destroy(handle)


def compile_kernel(
    name: str, dispatcher: Any, sig: tuple, cc: tuple[int, int], package: str = "flowatlas"
) -> Compiled:
    """Compile one kernel for one signature and architecture, PTX then cubin.

    Raises :class:`CompileFailure` naming the kernel, the signature, the target and numba's
    (or nvJitLink's) error.
    """
    from numba import cuda

    opts = dispatcher.targetoptions
    sig_text = "(" + ", ".join(str(t) for t in sig) + ")"
    try:
        with target(cc, package):
            ptx, _ = cuda.compile_ptx(
                dispatcher.py_func,
                sig,
                cc=cc,
                debug=bool(opts.get("debug")),
                lineinfo=bool(opts.get("lineinfo")),
                fastmath=bool(opts.get("fastmath")),
            )
        cubin, log = link_cubin(ptx, cc, name)
        res = parse_resources(log, _entry_name(ptx))
    except Exception as exc:
        raise CompileFailure(
            f"{name}{sig_text} for sm_{cc[0]}{cc[1]}: {type(exc).__name__}: {exc}"
        ) from exc
    return Compiled(name, sig_text, cc, ptx, cubin, res)


def check_all(
    launches: dict[str, list[dict[str, Any]]],
    package: str = "flowatlas",
    targets: tuple[tuple[int, int], ...] = TARGETS,
) -> tuple[list[Compiled], list[str]]:
    """Compile every kernel of ``package`` with every recorded signature for every target.

    Returns (what compiled, problems): a problem names a kernel with no recorded launch, a
    launch recorded from an older version of the kernel's module, or a failed compile.
    """
    kernels = find_kernels(package)
    problems: list[str] = []
    done: list[Compiled] = []
    for name in sorted(kernels):
        disp = kernels[name]
        recorded = launches.get(name, [])
        if not recorded:
            problems.append(
                f"{name}: no recorded launch (no simulator test launches it, so its argument "
                "types are unknown: add a test that runs it)"
            )
            continue
        digest = _module_digest(disp.py_func.__module__)
        for launch in recorded:
            if launch.get("source") and launch["source"] != digest:
                problems.append(
                    f"{name}: launch recorded from another version of "
                    f"{disp.py_func.__module__} (rerun the simulator tests)"
                )
                continue
            sig = signature(launch)
            for cc in targets:
                try:
                    done.append(compile_kernel(name, disp, sig, cc, package))
                except CompileFailure as exc:
                    problems.append(str(exc))
    return done, problems


# --------------------------------------------------------------------------- occupancy

#: sm_90 (H100/H200) limits, from the CUDA C Programming Guide's table of technical
#: specifications per compute capability and the occupancy calculator's allocation rules
SM90 = {
    "regs_per_sm": 65536,
    "reg_alloc_unit": 256,  # registers are given to a warp in units of 256
    "warp_alloc_granularity": 4,
    "max_warps_per_sm": 64,
    "max_blocks_per_sm": 32,
    "max_threads_per_block": 1024,
    "smem_per_sm": 228 * 1024,
    "smem_per_block_max": 227 * 1024,
    "smem_reserved_per_block": 1024,  # the system's share of each block's shared memory
    "smem_alloc_unit": 128,
}


def occupancy_sm90(registers: int, shared: int, threads: int) -> tuple[int, float, str]:
    """(resident blocks per SM, occupancy as resident warps / 64, the limiting resource)."""
    lim = SM90
    warps = -(-threads // 32)
    regs_per_warp = -(-registers * 32 // lim["reg_alloc_unit"]) * lim["reg_alloc_unit"]
    warps_by_regs = lim["regs_per_sm"] // max(regs_per_warp, 1)
    warps_by_regs -= warps_by_regs % lim["warp_alloc_granularity"]
    smem_block = shared + lim["smem_reserved_per_block"]
    smem_block = -(-smem_block // lim["smem_alloc_unit"]) * lim["smem_alloc_unit"]
    bounds = {
        "registers": warps_by_regs // warps,
        "shared memory": lim["smem_per_sm"] // smem_block,
        "warps": lim["max_warps_per_sm"] // warps,
        "blocks": lim["max_blocks_per_sm"],
    }
    limit = min(bounds, key=lambda k: bounds[k])
    blocks = bounds[limit]
    return blocks, blocks * warps / lim["max_warps_per_sm"], limit


def versions() -> dict[str, str]:
    """Versions of the compile chain: numba, numba-cuda, NVVM and nvJitLink (wheels)."""
    from importlib import metadata

    out = {}
    for dist in ("numba", "numba-cuda", "nvidia-nvvm", "nvidia-nvjitlink", "cuda-bindings"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out
