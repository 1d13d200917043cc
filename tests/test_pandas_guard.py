"""A build without pandas (flowatlas/pandas_guard.py, compiler._factorize's NumPy path).

The guard's checks run in fresh interpreters: pandas is imported once per process, and the
test process has usually imported it already.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flowatlas.classify import compiler


def _run(script: str, cwd: Path | None = None) -> str:
    p = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=cwd
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout.strip()


def test_guard_refuses_pyarrows_imports_and_lets_python_import_pandas() -> None:
    """Arrow <-> NumPy conversions inside the block import no pandas and give the same
    values; an import statement and importlib still get pandas; after the block pyarrow
    recognises pandas objects again (its probe asks anew)."""
    out = _run(
        """
import sys, importlib
import numpy as np, pyarrow as pa, pyarrow.compute as pc
from flowatlas.pandas_guard import implicit_pandas_refused
with implicit_pandas_refused() as finder:
    a = pa.array(np.arange(5, dtype=np.int64))
    assert a.to_numpy().tolist() == [0, 1, 2, 3, 4]
    t = pa.array(np.array([0, 86_400_000_000], dtype="datetime64[us]"))
    assert t.to_numpy().tolist() == np.array([0, 86_400_000_000], "datetime64[us]").tolist()
    assert pc.take(pa.array(["x", "y"]), np.array([1, 0])).to_pylist() == ["y", "x"]
    assert np.asarray(pa.chunked_array([[1, 2], [3]])).tolist() == [1, 2, 3]
    print("pandas" in sys.modules, finder.refused > 0)
    def explicit():
        import pandas
        return pandas
    assert explicit().__name__ == "pandas"
    del sys.modules["pandas"]
    assert importlib.import_module("pandas").__name__ == "pandas"
print(finder in sys.meta_path)
import pandas as pd
print(pa.array(pd.Series(["a", "b"], dtype="category")).type)
"""
    )
    assert out.splitlines() == [
        "False True",
        "False",
        "dictionary<values=large_string, indices=int8, ordered=0>",
    ]


def test_guard_does_nothing_once_pandas_is_imported() -> None:
    out = _run(
        """
import pandas, sys
from flowatlas.pandas_guard import implicit_pandas_refused
n = len(sys.meta_path)
with implicit_pandas_refused() as finder:
    print(finder, len(sys.meta_path) == n)
"""
    )
    assert out == "None True"


def test_guard_removes_its_finder_on_error() -> None:
    out = _run(
        """
import sys
from flowatlas.pandas_guard import ImplicitPandasFinder, implicit_pandas_refused
try:
    with implicit_pandas_refused():
        raise KeyError("x")
except KeyError:
    pass
print(any(isinstance(f, ImplicitPandasFinder) for f in sys.meta_path))
"""
    )
    assert out == "False"


def test_build_command_process_imports_no_pandas(tmp_path) -> None:
    """`flowatlas build` of an archive with its prefix table, threads and eager, never
    imports pandas; the cubes are equal to a build in a process that has pandas loaded."""
    from flowatlas.synth import synthesize

    arch = tmp_path / "a"
    synthesize(arch, records=20_000, days=3, seed=3)
    table = tmp_path / "t.fatable"
    from flowatlas.classify import load_table
    from flowatlas.engine.build import resolve_config

    load_table(resolve_config(arch, None)).save(table)
    outs = []
    for workers in ("0", "2"):
        out = tmp_path / f"c{workers}"
        outs.append(out)
        got = _run(
            f"""
import sys
from flowatlas.cli import main
code = main(["build", {str(arch)!r}, "--table", {str(table)!r}, "-o", {str(out)!r},
             "-q", "--workers", "{workers}"])
print(code, "pandas" in sys.modules)
""",
            cwd=tmp_path,
        )
        assert got == "0 False"
    ref = tmp_path / "ref"
    _run(
        f"""
import pandas
from flowatlas.engine.build import build_cube
build_cube({str(arch)!r}, {str(ref)!r}, table={str(table)!r})
"""
    )
    for out in outs:
        names = sorted(p.name for p in ref.iterdir())
        assert sorted(p.name for p in out.iterdir()) == names
        for name in names:
            assert (out / name).read_bytes() == (ref / name).read_bytes(), name


def _factorize_oracle(columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ids by first appearance of distinct rows, with a dict of tuples."""
    seen: dict[tuple[int, ...], int] = {}
    ids, first = [], []
    for i, row in enumerate(zip(*(c.tolist() for c in columns), strict=True)):
        if row not in seen:
            seen[row] = len(seen)
            first.append(i)
        ids.append(seen[row])
    return np.array(ids, dtype=np.int32), np.array(first, dtype=np.int64)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 100, 3000])
@pytest.mark.parametrize("kind", ["random", "few", "all_equal", "all_distinct", "extremes"])
def test_factorize_sorting_and_hashing_match_an_oracle(n: int, kind: str) -> None:
    """Both ways of numbering distinct rows (NumPy sorting for small inputs, pandas hashing
    for large) give the oracle's ids and first rows, on random and adversarial columns."""
    rng = np.random.default_rng(n * 31 + len(kind))
    cols: list[np.ndarray]
    if kind == "random":
        cols = [rng.integers(-5, 5, n, dtype=np.int32) for _ in range(9)]
    elif kind == "few":
        cols = [rng.integers(0, 2, n, dtype=np.int32) for _ in range(3)]
    elif kind == "all_equal":
        cols = [np.full(n, -1, dtype=np.int32) for _ in range(9)]
    elif kind == "all_distinct":
        cols = [rng.permutation(n).astype(np.int32), np.zeros(n, dtype=np.int32)]
    else:  # values that overflow a naive combined key, in reversed order
        big = np.array([np.iinfo(np.int32).max, np.iinfo(np.int32).min, 0], dtype=np.int32)
        cols = [big[(np.arange(n)[::-1] + k) % 3] for k in range(9)]
    want_ids, want_first = _factorize_oracle(cols)
    for way in (compiler._factorize_sorting, _hashing):
        ids, first = way(cols)
        assert ids.dtype == np.int32
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(first, want_first)


def _hashing(cols: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """compiler._factorize forced onto its pandas path."""
    mp = pytest.MonkeyPatch()
    mp.setattr(compiler, "FACTORIZE_SORT_ROWS", -1)
    try:
        return compiler._factorize(cols)
    finally:
        mp.undo()


def test_factorize_sorts_small_inputs_only(monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(compiler, "_factorize_sorting", lambda c: calls.append(c[0].size))
    compiler._factorize([np.zeros(compiler.FACTORIZE_SORT_ROWS, np.int32)])
    compiler._factorize([np.zeros(compiler.FACTORIZE_SORT_ROWS + 1, np.int32)])
    assert calls == [compiler.FACTORIZE_SORT_ROWS]
