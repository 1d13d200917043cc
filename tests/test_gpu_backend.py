"""The GPU backend: same cube as the CPU (simulator in CI, real GPU with --gpu); clean fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from flowatlas.engine.backends import GpuFallbackWarning, gpu_status, resolve_backend

SCRIPT = textwrap.dedent(
    """
    import sys, pathlib, tempfile
    from flowatlas.engine.backends import resolve_backend
    from flowatlas.synth import synthesize
    from flowatlas.engine.build import build_cube
    assert resolve_backend("auto") == "gpu", "the simulator should count as a GPU"
    d = pathlib.Path(tempfile.mkdtemp())
    synthesize(d / "a", records={records}, days=3, start="2025-09-29", workers=1)
    build_cube(d / "a", d / "cpu", workers=0, backend="cpu")
    build_cube(d / "a", d / "gpu", workers=0, backend="gpu")
    for name in ("cells.parquet", "rollups.parquet", "top_ips.parquet", "sketches.parquet",
                 "links.parquet", "geo.parquet", "cube.json"):
        assert (d / "cpu" / name).read_bytes() == (d / "gpu" / name).read_bytes(), name
    print("SAME")
    """
)


def test_gpu_kernels_give_the_same_cube_under_the_simulator() -> None:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(records=1500)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().endswith("SAME")


@pytest.mark.gpu
def test_gpu_kernels_give_the_same_cube_on_a_gpu() -> None:
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(records=2_000_000)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0, p.stderr[-3000:]


def test_asking_for_a_gpu_without_one_warns_and_falls_back(monkeypatch) -> None:
    if gpu_status()[0]:
        pytest.skip("this machine has a usable GPU")
    with pytest.warns(GpuFallbackWarning, match="building on the CPU instead"):
        assert resolve_backend("gpu") == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_backend("auto") == "cpu"  # auto falls back silently
    assert resolve_backend("cpu") == "cpu"


def test_cli_prints_the_fallback_as_one_warning_line(tmp_path) -> None:
    if gpu_status()[0]:
        pytest.skip("this machine has a usable GPU")
    from flowatlas.synth import synthesize

    synthesize(tmp_path / "a", records=500, days=2, workers=1)
    p = subprocess.run(
        [sys.executable, "-m", "flowatlas", "build", str(tmp_path / "a"), "-o",
         str(tmp_path / "c"), "--backend", "gpu", "--workers", "0", "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip() == (
        "flowatlas: warning: GPU backend asked for, but no NVIDIA GPU on this machine: "
        "building on the CPU instead"
    )
