"""A mutation pass over the importers' field mappings and the cube's measures.

Each mutation is a one-line edit of the kind a tired hand makes (two fields swapped, a unit
dropped, a factor lost). The script applies one at a time to a scratch copy of the source
tree, runs the tests that should notice, and reports whether they did ("killed") or not
("SURVIVED"). A survivor is a hole in the tests: kill it with a test, or explain it.

    python bench/mutate.py                 # every mutation, a table on stdout
    python bench/mutate.py --only nfcapd   # those whose name contains "nfcapd"

The source tree is never edited in place: each mutation runs in a copy (``git worktree``-free:
a plain copy of flowatlas/ and tests/ under a temporary folder), so an interrupted run leaves
nothing behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    old: str  # must occur exactly once
    new: str
    tests: tuple[str, ...]  # pytest node ids or files that should fail


SWAP = "\x00"  # placeholder while swapping two strings


def swap(text: str, a: str, b: str) -> str:
    return text.replace(a, SWAP).replace(b, a).replace(SWAP, b)


MUTATIONS = (
    Mutation(
        "nfcapd native: in_if <-> out_if",
        "flowatlas/io/nfcapd.py",
        "            in_if[row] = ii\n            out_if[row] = oi\n",
        "            in_if[row] = oi\n            out_if[row] = ii\n",
        ("tests/test_nfcapd.py", "tests/test_nfcapd_vs_pmacct.py"),
    ),
    Mutation(
        "nfcapd native: src_as <-> dst_as",
        "flowatlas/io/nfcapd.py",
        "            src_as[row] = sa\n            dst_as[row] = da\n",
        "            src_as[row] = da\n            dst_as[row] = sa\n",
        ("tests/test_nfcapd_as.py", "tests/test_nfcapd.py"),
    ),
    Mutation(
        "nfcapd via nfdump: %in <-> %out",
        "flowatlas/io/importers/nfdump.py",
        '    ("in_if", "%in"),\n    ("out_if", "%out"),\n',
        '    ("in_if", "%out"),\n    ("out_if", "%in"),\n',
        ("tests/test_nfcapd.py", "tests/test_importers_nfdump.py"),
    ),
    Mutation(
        "goflow2 protobuf: in_if <-> out_if (18, 19)",
        "flowatlas/io/importers/goflow2.py",
        '    18: "in_if",\n    19: "out_if",\n',
        '    18: "out_if",\n    19: "in_if",\n',
        ("tests/test_goflow2_protoc.py", "tests/test_importers_goflow2.py"),
    ),
    Mutation(
        "goflow2 JSON: in_if <-> out_if keys",
        "flowatlas/io/importers/goflow2.py",
        '    "in_if": ("in_if", "InIf"),\n    "out_if": ("out_if", "OutIf"),\n',
        '    "in_if": ("out_if", "OutIf"),\n    "out_if": ("in_if", "InIf"),\n',
        ("tests/test_importers_goflow2.py",),
    ),
    Mutation(
        "pmacct: iface_in <-> iface_out",
        "flowatlas/io/importers/pmacct.py",
        '    "in_if": "iface_in",\n    "out_if": "iface_out",\n',
        '    "in_if": "iface_out",\n    "out_if": "iface_in",\n',
        ("tests/test_importers_pmacct.py",),
    ),
    Mutation(
        "NetFlow/IPFIX: input <-> output interface",
        "flowatlas/io/netflow.py",
        '        in_if = bounded(first(IE_IN_IF), _U32, "input interface")\n',
        '        in_if = bounded(first(IE_OUT_IF), _U32, "input interface")\n',
        ("tests/test_netflow_decoder.py",),
    ),
    Mutation(
        "cube: magnitude in bytes, not bits",
        "flowatlas/engine/cube.py",
        '    return (volume_bytes.astype("float64") * 8.0 / u.where(u > 0)).astype("float64")\n',
        '    return (volume_bytes.astype("float64") / u.where(u > 0)).astype("float64")\n',
        ("tests/test_measures.py", "tests/test_build_oracle.py", "tests/test_findings.py"),
    ),
)


def run(mutation: Mutation, python: str, timeout: float) -> tuple[str, float]:
    with tempfile.TemporaryDirectory(prefix="flowatlas-mutant-") as tmp:
        tree = Path(tmp) / "repo"
        tree.mkdir()
        for name in ("flowatlas", "tests", "bench", "pyproject.toml", "README.md", "docs"):
            src = ROOT / name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, tree / name)
        target = tree / mutation.path
        text = target.read_text()
        if text.count(mutation.old) != 1:
            return "STALE (the code it mutates changed)", 0.0
        target.write_text(text.replace(mutation.old, mutation.new))
        env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
        env.setdefault("FLOWATLAS_DATA", str((ROOT / ".." / "shared" / "data").resolve()))
        t0 = time.perf_counter()
        try:
            p = subprocess.run(
                [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutation.tests],
                cwd=tree,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return "timeout", time.perf_counter() - t0
        dt = time.perf_counter() - t0
        if p.returncode == 1:
            return "killed", dt
        if p.returncode == 0:
            return "SURVIVED", dt
        return f"error (pytest exit {p.returncode})", dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="run mutations whose name contains this")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    chosen = [m for m in MUTATIONS if args.only.lower() in m.name.lower()]
    print("| mutation | tests | result | seconds |")
    print("|---|---|---|---:|")
    survivors = 0
    for m in chosen:
        result, dt = run(m, sys.executable, args.timeout)
        survivors += result == "SURVIVED"
        tests = ", ".join(t.removeprefix("tests/") for t in m.tests)
        print(f"| {m.name} | {tests} | {result} | {dt:.0f} |", flush=True)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
