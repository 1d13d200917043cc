"""The build benchmark still runs end to end, and its measuring helpers measure.

CI cannot afford benchmark sizes, so ``bench/bench_build.py --smoke`` runs every engine on a
tiny archive: what breaks here (an engine's API change, a cube column renamed, outputs that
stop matching) would break the real benchmark. Nothing here asserts a speed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flowatlas.testing import REPO_ROOT

BENCH = REPO_ROOT / "bench"
sys.path.insert(0, str(BENCH))

from _common import markdown_table, run_measured, write_section  # noqa: E402

pytest.importorskip("duckdb")
pytest.importorskip("polars")


def _smoke_build(tmp_path: Path, results: Path, *extra: str) -> str:
    """Run ``bench_build.py --smoke`` (plus ``extra``) into ``results``; its text after."""
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "bench_build.py"),
            "--smoke",
            *extra,
            "--data",
            str(tmp_path / "data"),
            "--results",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return results.read_text()


def test_bench_build_smoke(tmp_path: Path) -> None:
    """Every engine runs, every output equals flowatlas's cube, the results file is kept."""
    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n\n## Import benchmark\n\nsomeone else's numbers\n")
    text = _smoke_build(tmp_path, results)
    assert "## Import benchmark\n\nsomeone else's numbers\n" in text
    assert text.count("## Build benchmark") == 1
    table = [line for line in text.splitlines() if line.startswith("| ")]
    engines = {line.split("|")[1].strip() for line in table[1:]}
    assert engines == {"flowatlas", "duckdb", "polars"}
    verdicts = [line.rstrip(" |").rsplit("|", 1)[1].strip() for line in table[1:]]
    assert verdicts == ["reference", "equal", "equal", "equal", "equal"], table


def test_bench_build_from_memory_smoke(tmp_path: Path) -> None:
    """--from-memory: every engine loads the archive, computes it, equals flowatlas's cube."""
    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n\n## Build benchmark\n\nthe on-disk numbers\n")
    text = _smoke_build(tmp_path, results, "--from-memory")
    assert "## Build benchmark\n\nthe on-disk numbers\n" in text
    assert text.count("## Build benchmark from memory") == 1
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert "RSS loaded MiB" in table[0]
    engines = [line.split("|")[1].strip() for line in table[1:]]
    assert engines == ["flowatlas", "flowatlas", "duckdb", "polars"]
    verdicts = [line.rstrip(" |").rsplit("|", 1)[1].strip() for line in table[1:]]
    assert verdicts == ["reference", "equal", "equal", "equal"], table


def test_bench_simple_matrix_smoke(tmp_path: Path) -> None:
    """Both workloads, three engines: DuckDB's and Polars' simple matrix equal the cube."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_simple_matrix.py"), "--smoke",
         "--data", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line.split("|") for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
    got = {(r[1].strip(), r[3].strip()): r[-2].strip() for r in rows}
    want = {
        (w, e): "the cube" if e == "flowatlas" else "equal to the cube"
        for w in ("world", "heavy")
        for e in ("flowatlas", "duckdb", "polars")
    }
    assert got == want, proc.stdout


def test_bench_codec_smoke(tmp_path: Path) -> None:
    """Every column in every layout it can be written in, and the whole layouts, on a small
    synthetic archive: each read back equal (the benchmark checks), auto among the layouts."""
    from flowatlas.schema import COLUMNS
    from flowatlas.synth import synthesize

    synthesize(tmp_path / "a", records=3_000, days=2, workers=1, compression="zstd")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_codec.py"), "--smoke", "--archives",
         str(tmp_path / "a"), "--work", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = [line.split("|") for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert {c[1].strip() for c in cells} >= set(COLUMNS)
    assert "DELTA_BINARY_PACKED" in proc.stdout and "*" in proc.stdout  # auto's cells marked
    layouts = {c[2].strip() for c in cells if c[1].strip() == "a"}
    assert layouts == {"auto", "zstd", "lz4", "none"}, proc.stdout


def test_bench_floor_smoke(tmp_path: Path) -> None:
    """bench_floor.py times every pass it lists and writes only its own section."""
    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n\n## Build benchmark\n\nthe on-disk numbers\n")
    proc = subprocess.run(
        [
            sys.executable, str(BENCH / "bench_floor.py"), "--records", "20000", "--repeat",
            "1", "--data", str(tmp_path / "data"), "--results", str(results),
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = results.read_text()
    assert "## Build benchmark\n\nthe on-disk numbers\n" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    engines = [line.split("|")[1].strip() for line in table[1:]]
    assert engines == ["duckdb"] * 2 + ["polars"] * 2 + ["flowatlas"] * 3, table
    rates = [float(line.split("|")[5].replace(",", "")) for line in table[1:]]
    assert all(r > 0 for r in rates), table


def test_write_section_replaces_only_its_own(tmp_path: Path) -> None:
    """Re-running a benchmark replaces its section in place; others stay as they were."""
    path = tmp_path / "RESULTS.md"
    write_section(path, "Build benchmark", "first")
    path.write_text(path.read_text() + "\n## Other\n\nother text\n")
    write_section(path, "Build benchmark", "second")
    write_section(path, "Third", "third")
    text = path.read_text()
    assert "first" not in text
    assert text.index("## Build benchmark\n\nsecond") < text.index("## Other\n\nother text")
    assert text.rstrip().endswith("## Third\n\nthird")


def test_run_measured_counts_the_whole_process_tree(tmp_path: Path) -> None:
    """A grandchild's memory is in the peak (Dask workers are grandchildren of a build)."""
    script = tmp_path / "alloc.py"
    script.write_text(
        textwrap.dedent(
            """
            import subprocess, sys, time
            if sys.argv[1:] == ["child"]:
                block = bytearray(300 * 2**20)  # touched: bytearray zero-fills
                time.sleep(0.5)
            else:
                subprocess.run([sys.executable, __file__, "child"], check=True)
            """
        )
    )
    m = run_measured([sys.executable, str(script)])
    assert m.returncode == 0, m.stderr
    assert m.peak_rss >= 300 * 2**20
    assert m.seconds >= 0.5
    assert m.cpu_seconds > 0
    failed = run_measured([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert failed.returncode == 3
    with pytest.raises(RuntimeError, match="exit 3"):
        failed.check("exit three")


def test_markdown_table_lines_up() -> None:
    """Tables read as aligned plain text too (they are printed and written to RESULTS.md)."""
    lines = markdown_table(["a", "long header"], [[1, 2], ["wide cell", 3]]).splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[1].startswith("|---")


def test_bench_gpu_smoke_equals_the_cpu_path(tmp_path: Path) -> None:
    """bench_gpu.py --smoke under numba's simulator: the device map step, stage by stage,
    gives the CPU path's sums and distinct rows, and its section names the device."""
    import os

    results = tmp_path / "RESULTS-gpu.md"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_gpu.py"), "--smoke", "--results", str(results)],
        env=dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONWARNINGS="ignore"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "equal to the CPU path: True" in proc.stdout
    assert "the engine's GPU functions agree: True" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].startswith("| **end to end**")
    text = results.read_text()
    assert text.count("## GPU map step, device-resident") == 1
    assert "- machine: GPU numba CUDA simulator" in text


def test_gpu_session_script_parses() -> None:
    """bench/gpu_session.sh, run on a lent GPU only, at least parses (bash -n)."""
    import shutil

    if shutil.which("bash") is None:
        pytest.skip("no bash")
    proc = subprocess.run(
        ["bash", "-n", str(BENCH / "gpu_session.sh")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
