"""Every CUDA kernel compiles for real GPUs (PTX, then a cubin for sm_80 and sm_90), no GPU.

The simulator tests never type a kernel; these compile each one with the argument types its
launches really had. tests/conftest.py records them while the simulator tests run (any
session, any worker, any subprocess) and leaves them in ``.cuda-launches.jsonl``; this module
compiles them with NVVM and assembles them with nvJitLink, which needs the ``gpu`` extra.
The base install stays free of CUDA packages, so CI (.ci/run) makes a second environment,
``.venv-gpu``, and runs this module there after the main test run:

    python3 -m venv .venv-gpu && .venv-gpu/bin/pip install -e '.[gpu]' pytest
    python -m pytest -n 2                                   # records the launches
    .venv-gpu/bin/python -m pytest tests/test_cuda_compile.py

In the main environment the compile tests skip with that reason, except in CI, where
``test_ci_runs_the_compile_check`` fails unless .venv-gpu can run the check and .ci/run runs it.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from flowatlas.kernels import cuda_check

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
GPU_VENV = ROOT / ".venv-gpu"
#: where the check must run, not skip: CI's .venv-gpu, or where this variable is 1
#: (.ci/run and bench/gpu_session.sh set it)
REQUIRED = os.environ.get("FLOWATLAS_CUDA_CHECK_REQUIRED") == "1" or (
    IN_CI and Path(sys.prefix).resolve() == GPU_VENV.resolve()
)
HOW = (
    "python3 -m venv .venv-gpu && .venv-gpu/bin/pip install -e '.[gpu]' pytest, then "
    ".venv-gpu/bin/python -m pytest tests/test_cuda_compile.py (CI runs it so: .ci/run)"
)


@pytest.fixture(scope="module")
def stack() -> None:
    """NVVM and nvJitLink are here; else skip (the main environment has no CUDA packages)."""
    why = cuda_check.stack_missing()
    if why is None:
        return
    if REQUIRED:
        pytest.fail(f"this environment cannot compile CUDA: {why}")
    if IN_CI:
        pytest.skip(
            "no CUDA packages in the main environment: .ci/run compiles in .venv-gpu after "
            "this run (test_ci_runs_the_compile_check checks that it can and does)"
        )
    pytest.skip(f"the CUDA compile check needs the gpu extra ({why}): {HOW}")


@pytest.fixture(scope="module")
def launches(stack: None) -> dict:
    """The launches the simulator tests recorded (read once; CI fails without them)."""
    path = cuda_check.launches_file()
    if not path.exists():
        why = f"no recorded kernel launches at {path}: run the simulator tests first (pytest -n 2)"
        if IN_CI or REQUIRED:
            pytest.fail(why)
        pytest.skip(why)
    return cuda_check.read_launches(path)


@pytest.fixture(scope="module")
def compiled(launches: dict) -> list:
    done, problems = cuda_check.check_all(launches)
    assert not problems, "CUDA kernels that do not compile for a real GPU:\n" + "\n\n".join(
        problems
    )
    return done


# --------------------------------------------------------------------------- the check


def test_every_kernel_compiles_to_a_cubin_for_sm80_and_sm90(compiled: list) -> None:
    kernels = cuda_check.find_kernels()
    for name in kernels:
        for cc in cuda_check.TARGETS:
            assert any(c.kernel == name and c.cc == cc for c in compiled), (name, cc)
    for c in compiled:
        assert f".target sm_{c.cc[0]}{c.cc[1]}" in c.ptx, c.kernel
        assert c.cubin[:4] == b"\x7fELF", c.kernel  # a cubin is an ELF image
        assert 0 < c.resources.registers <= 255, (c.kernel, c.resources)


def test_no_kernel_spills_registers_or_uses_local_memory(compiled: list) -> None:
    spills = [
        f"{c.kernel} sm_{c.cc[0]}{c.cc[1]}: {c.resources}"
        for c in compiled
        if c.resources.spill_stores or c.resources.spill_loads or c.resources.local
    ]
    assert not spills, "\n".join(spills)


def _elf_resources(cubin: bytes, entry: str) -> tuple[int, int]:
    """(registers, static shared bytes) of ``entry``, read from the cubin's ELF itself: the
    oracle for what the nvJitLink log says. Registers are the EIATTR_REGCOUNT (0x2f)
    attribute of .nv.info for the entry's symbol; shared memory is the size of its
    .nv.shared section (absent: none)."""
    shoff = struct.unpack_from("<Q", cubin, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)
    heads = [struct.unpack_from("<IIQQQQIIQQ", cubin, shoff + i * shentsize) for i in range(shnum)]

    def cstr(at: int) -> str:
        return cubin[at : cubin.index(b"\0", at)].decode()

    sec = {cstr(heads[shstrndx][4] + h[0]): h for h in heads}
    symtab, strtab = sec[".symtab"], sec[".strtab"]
    names = [
        cstr(strtab[4] + struct.unpack_from("<I", cubin, symtab[4] + k)[0])
        for k in range(0, symtab[5], 24)
    ]
    index = names.index(entry)
    info = cubin[sec[".nv.info"][4] : sec[".nv.info"][4] + sec[".nv.info"][5]]
    registers, i = None, 0
    while i + 1 < len(info):
        fmt, attr = info[i], info[i + 1]
        i += 2
        size = {1: 0, 2: 1, 3: 2}.get(fmt)
        if size is None:  # EIFMT_SVAL: a 16-bit length, then the value
            size = struct.unpack_from("<H", info, i)[0]
            i += 2
        if attr == 0x2F and struct.unpack_from("<I", info, i)[0] == index:
            registers = struct.unpack_from("<I", info, i + 4)[0]
        i += size
    shared = sec.get(f".nv.shared.{entry}")
    return registers, shared[5] if shared else 0


def test_the_resources_match_the_cubins_own_records(compiled: list) -> None:
    for c in compiled:
        entry = re.search(r"\.entry\s+([\w$]+)\s*\(", c.ptx).group(1)
        assert _elf_resources(c.cubin, entry) == (c.resources.registers, c.resources.shared), (
            c.kernel,
            c.cc,
        )


def test_the_walk_finds_every_kernel_and_no_device_function(stack: None) -> None:
    kernels = cuda_check.find_kernels()
    everything = cuda_check.find_dispatchers()
    src = "".join(
        p.read_text() for p in (ROOT / "flowatlas").rglob("*.py") if p.name != "cuda_check.py"
    )
    # every `@cuda.jit` (no arguments) in the source is a kernel the walk found, by name
    decorated = re.findall(r"@cuda\.jit\n(?:@[^\n]*\n)*def (\w+)", src)
    assert decorated and {n.rsplit(".", 1)[1] for n in kernels} == set(decorated)
    devices = [n for n, d in everything.items() if d.targetoptions.get("device")]
    assert "flowatlas.kernels.lpm._lpm_body" in devices
    assert not set(devices) & set(kernels)


# --------------------------------------------------------------------------- the check catches
#                                                                              what the simulator
#                                                                              does not

MIXED = textwrap.dedent(
    '''
    import numpy as np
    from numba import cuda


    @cuda.jit
    def mixed_shift(a, shift, out):
        """``s`` is uint64 on one path and int64 on the other: numba unifies the two as
        float64, and a uint64 shifted by a float64 does not compile (lpm_kernel's ``shift``
        does this when ``shift6`` comes in as int64). Python's ints simulate it fine."""
        i = cuda.grid(1)
        if i < a.size:
            s = np.uint64(0)
            if a[i] > np.uint64(255):
                s = shift
            out[i] = a[i] >> s


    @cuda.jit
    def typed_shift(a, shift, out):
        """The same, with the amount cast to uint64 on both paths: compiles."""
        i = cuda.grid(1)
        if i < a.size:
            s = np.uint64(0)
            if a[i] > np.uint64(255):
                s = np.uint64(shift)
            out[i] = a[i] >> s


    @cuda.jit
    def never_launched(a):
        a[0] = 1
    '''
)

LAUNCH = textwrap.dedent(
    """
    import os
    import numpy as np
    from numba import cuda
    from flowatlas.kernels.cuda_check import record_launches
    record_launches(os.environ["FLOWATLAS_CUDA_LAUNCH_LOG"])
    from mixpkg.kernels import mixed_shift, typed_shift
    a = np.array([2**64 - 1, 2**40, 7, 0], np.uint64)
    for kernel in (mixed_shift, typed_shift):
        out = cuda.device_array(a.size, np.uint64)
        kernel[1, 32](cuda.to_device(a), 3, out)  # a Python int: typed int64 on a GPU
        want = np.where(a > 255, a >> np.uint64(3), a)
        assert (out.copy_to_host() == want).all(), kernel
    print("SIMULATOR OK")
    """
)


def test_a_uint64_int64_mix_passes_the_simulator_and_fails_the_check(
    stack: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "mixpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "kernels.py").write_text(MIXED)
    log = tmp_path / "log"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", FLOWATLAS_CUDA_LAUNCH_LOG=str(log))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    p = subprocess.run(
        [sys.executable, "-c", LAUNCH], env=env, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "SIMULATOR OK" in p.stdout  # both kernels give the right answer when simulated

    monkeypatch.syspath_prepend(str(tmp_path))
    launches = cuda_check.read_launches(log)
    assert set(launches) == {"mixpkg.kernels.mixed_shift", "mixpkg.kernels.typed_shift"}
    done, problems = cuda_check.check_all(launches, package="mixpkg")
    assert sorted((c.kernel, c.cc) for c in done) == [
        ("mixpkg.kernels.typed_shift", cc) for cc in cuda_check.TARGETS
    ]
    sig = "(array(uint64, 1d, C), int64, array(uint64, 1d, C))"
    mixed = [p for p in problems if p.startswith("mixpkg.kernels.mixed_shift")]
    assert [m.split(":")[0] for m in mixed] == [
        f"mixpkg.kernels.mixed_shift{sig} for sm_{a}{b}" for a, b in cuda_check.TARGETS
    ]
    for m in mixed:  # numba's own words: the shift of a uint64 by a float64
        assert "TypingError" in m and "rshift(uint64, float64)" in m, m
    assert any(p.startswith("mixpkg.kernels.never_launched: no recorded launch") for p in problems)
    assert len(problems) == 3, problems

    # a launch recorded from an older version of the module is stale, not compiled
    (pkg / "kernels.py").write_text(MIXED + "\n# edited\n")
    cuda_check._module_digest.cache_clear()
    try:
        _, problems = cuda_check.check_all(launches, package="mixpkg")
    finally:
        cuda_check._module_digest.cache_clear()
    assert sum("another version of mixpkg.kernels" in p for p in problems) == 2, problems


# --------------------------------------------------------------------------- CI cannot skip it


def test_ci_runs_the_compile_check() -> None:
    """In CI's main run (no CUDA packages) the check cannot run here: .venv-gpu must be able
    to run it, and .ci/run must run it after the test run whose launches it compiles."""
    if cuda_check.stack_missing() is None:
        pytest.skip("this environment runs the compile check itself")
    if not IN_CI:
        pytest.skip(f"CI only (the main environment has no CUDA packages); locally: {HOW}")
    python = GPU_VENV / "bin" / "python"
    assert python.exists(), f"{GPU_VENV} is missing: .ci/run must create it"
    p = subprocess.run(
        [str(python), "-c", "from flowatlas.kernels import cuda_check as c; "
         "print(c.stack_missing() or 'READY')"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert p.stdout.strip() == "READY", p.stdout + p.stderr[-2000:]
    ci = (ROOT / ".ci" / "run").read_text()
    tests = ci.index("-m pytest -n 2")
    check = ci.index(".venv-gpu/bin/python -m pytest")
    assert tests < check and "tests/test_cuda_compile.py" in ci[check:].splitlines()[0]


# --------------------------------------------------------------------------- parts, no CUDA


@pytest.mark.parametrize(
    "value",
    [
        np.zeros(3, np.uint64),
        np.zeros((4, 3), np.uint64),
        np.zeros((4, 3), np.int16, order="F"),
        np.zeros(9, np.int32)[::2],
        np.zeros(2, np.bool_),
        np.int64(5),
        np.int16(5),
        np.uint32(5),
        5,
        2**63,
        True,
        1.5,
    ],
)
def test_recorded_argument_types_are_numbas_own(value) -> None:
    import numba

    assert cuda_check.numba_type(cuda_check.arg_type(value)) == numba.typeof(value)


def test_a_read_only_host_array_is_recorded_read_only() -> None:
    import numba

    a = np.zeros(3, np.uint64)
    a.flags.writeable = False
    assert cuda_check.numba_type(cuda_check.arg_type(a)) == numba.typeof(a)


@pytest.mark.parametrize(
    ("registers", "shared", "threads", "expected"),
    [
        # hand-computed with the sm_90 rules: 64 warps, 65536 registers, 32 blocks per SM
        (32, 0, 256, (8, 1.0, "registers")),  # 1024 registers a warp: 64 warps
        (40, 0, 256, (6, 0.75, "registers")),  # 1280 a warp: 51 warps, 48 in units of 4
        (64, 0, 256, (4, 0.5, "registers")),
        (255, 0, 256, (1, 0.125, "registers")),  # 8192 a warp: 8 warps, one block
        (16, 0, 256, (8, 1.0, "warps")),
        (16, 0, 32, (32, 0.5, "blocks")),  # 32 one-warp blocks
        (24, 48 * 1024, 256, (4, 0.5, "shared memory")),  # 49 KiB a block: 4 in 228 KiB
        (32, 2048, 256, (8, 1.0, "registers")),
    ],
)
def test_sm90_occupancy_follows_the_documented_limits(registers, shared, threads, expected):
    blocks, occ, limit = cuda_check.occupancy_sm90(registers, shared, threads)
    assert (blocks, occ) == expected[:2]
    assert limit == expected[2]  # ties name the first of registers, shared memory, warps
