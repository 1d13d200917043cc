"""What each CUDA kernel costs on a real GPU, measured without one: registers, spills, memory.

Compiles every kernel of the package, with each argument signature the simulator tests
recorded (``.cuda-launches.jsonl``: run the tests first), to PTX with NVVM and to a cubin with
nvJitLink (see :mod:`flowatlas.kernels.cuda_check`), and prints, for sm_90 (H100/H200), what
ptxas allotted per thread and per block and the occupancy that follows at the block size the
GPU path launches with (registers and shared memory against the sm_90 limits). sm_80's
register count is shown beside it. Needs the ``gpu`` extra, no GPU::

    python3 -m venv .venv-gpu && .venv-gpu/bin/pip install -e '.[gpu]' pytest
    .venv/bin/python -m pytest -n 2                 # records the launches
    .venv-gpu/bin/python bench/cuda_resources.py    # prints the table
    .venv-gpu/bin/python bench/cuda_resources.py --results bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, markdown_table, provenance, write_section

HEADING = "CUDA kernels: registers, spills, shared memory, occupancy on sm_90"
PACKAGES = ("numba", "numba-cuda", "nvidia-nvvm", "nvidia-nvjitlink", "cuda-bindings")


def block_sizes() -> dict[str, int]:
    """Threads per block each kernel is launched with on a GPU (the drivers' defaults)."""
    from flowatlas.kernels import cuda as K
    from flowatlas.kernels import cuda_accumulate as A
    from flowatlas.kernels import lpm

    grid = inspect.signature(K._grid).parameters["threads"].default
    sizes = {"*": grid}
    sizes["flowatlas.kernels.cuda.lpm_kernel"] = (
        inspect.signature(lpm.lookup_cuda).parameters["threads"].default
    )
    sizes["flowatlas.kernels.cuda_accumulate._scan_block_kernel"] = A.SCAN_THREADS
    return sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--launches", type=Path, default=None, help="recorded launches file")
    ap.add_argument("--results", type=Path, help="also write the section into this file")
    args = ap.parse_args(argv)
    load_before = load_average()

    from flowatlas.kernels import cuda_check as C

    why = C.stack_missing()
    if why:
        print(f"cuda_resources: needs the gpu extra ({why})", file=sys.stderr)
        return 2
    path = args.launches or C.launches_file()
    if not path.exists():
        print(f"cuda_resources: no {path}: run the simulator tests first", file=sys.stderr)
        return 2
    done, problems = C.check_all(C.read_launches(path))
    for p in problems:
        print(f"cuda_resources: {p}", file=sys.stderr)
    sizes = block_sizes()
    sm80 = {(c.kernel, c.signature): c.resources.registers for c in done if c.cc == (8, 0)}
    rows = []
    for c in sorted((c for c in done if c.cc == (9, 0)), key=lambda c: (c.kernel, c.signature)):
        r = c.resources
        threads = sizes.get(c.kernel, sizes["*"])
        blocks, occ, limit = C.occupancy_sm90(r.registers, r.shared, threads)
        variants = sum(1 for d in done if d.kernel == c.kernel and d.cc == (9, 0))
        name = c.kernel.removeprefix("flowatlas.kernels.")
        if variants > 1:  # the same kernel launched with several argument types
            name += " " + re.sub(r"array\((\w+), 1d, C\)", r"\1[:]", c.signature)
        rows.append([
            name, r.registers, sm80.get((c.kernel, c.signature), "-"),
            f"{r.spill_stores}/{r.spill_loads}", r.stack, r.shared, r.local, threads,
            blocks, f"{occ:.0%}", limit if occ < 1 else "-",
        ])  # fmt: skip
    headers = [
        "kernel", "regs sm_90", "regs sm_80", "spill st/ld (B)", "stack (B)", "smem (B)",
        "lmem (B)", "threads/block", "blocks/SM", "occupancy", "limited by",
    ]  # fmt: skip
    ptx = done[0].ptx if done else ""
    nvvm = re.search(r"Based on (NVVM [\d.]+)", ptx)
    tools = re.search(r"Cuda compilation tools, (release [\d.]+, V[\d.]+)", ptx)
    spilled = [row[0] for row in rows if row[3] != "0/0" or row[6]]
    body = [
        "Measured without a GPU: `bench/cuda_resources.py` compiles each kernel with the argument",
        "types its launches had under the simulator tests, to PTX with NVVM and to a cubin with",
        "nvJitLink, and reads ptxas' report. Occupancy is resident warps / 64 per SM at the block",
        "size the GPU path launches with, from the registers and shared memory against sm_90's",
        "limits (65,536 registers per SM in units of 256 per warp, 64 warps, 32 blocks, 228 KiB",
        "shared memory with 1 KiB reserved per block). smem is what the cubin declares: for sm_90",
        "it includes that reserved KiB (the scan's 256 int64 are 2,048 B; sm_80 reports 2,048),",
        "so the occupancy counts it twice: conservative, and no kernel is limited by it.",
        "",
        markdown_table(headers, rows),
        "",
        f"- spills: {'none' if not spilled else ', '.join(spilled)}; no kernel uses local memory"
        if not spilled
        else f"- spills: {', '.join(spilled)}",
        "- below full occupancy: "
        + (", ".join(f"{r[0]} {r[9]} ({r[1]} registers)" for r in rows if r[9] != "100%") or "none")
        + "; their values are mostly 64-bit (addresses, keys, sums: two registers each),"
        " and they stream rows through grid-stride loops, where 40-48 resident warps per SM"
        " usually hide memory latency: bench_gpu.py on a GPU decides whether `launch_bounds`"
        " would pay",
        f"- compiler: {nvvm.group(1) if nvvm else 'NVVM ?'} (CUDA compilation tools "
        f"{tools.group(1) if tools else '?'}), nvJitLink for the cubins",
        *provenance(PACKAGES, load_before, "python bench/cuda_resources.py --results FILE"),
    ]
    if problems:
        body.append(f"- NOT COMPILED: {len(problems)} problem(s), see stderr")
    text = "\n".join(body)
    print(f"## {HEADING}\n\n{text}")
    if args.results:
        write_section(args.results, HEADING, text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
