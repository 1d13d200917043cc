"""GPU backend on a cluster of worker processes: dask-cuda's LocalCUDACluster where installed,
else plain worker processes with a warning; the cube is the CPU's either way."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import pathlib, tempfile, warnings
    from flowatlas.synth import synthesize
    from flowatlas.engine.build import build_cube
    if __name__ == "__main__":
        d = pathlib.Path(tempfile.mkdtemp())
        synthesize(d / "a", records={records}, days=2, start="2025-09-29", workers=1)
        build_cube(d / "a", d / "cpu", workers=0, backend="cpu")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            build_cube(d / "a", d / "gpu", workers=2, processes=True, backend="gpu")
        for w in caught:
            print("WARNING", w.category.__name__, w.message)
        for name in ("cells.parquet", "rollups.parquet", "top_ips.parquet", "top_asns.parquet",
                     "sketches.parquet", "links.parquet", "geo.parquet", "cube.json"):
            assert (d / "cpu" / name).read_bytes() == (d / "gpu" / name).read_bytes(), name
        print("SAME")
    """
)


def _run(records: int, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.format(records=records)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_gpu_processes_without_dask_cuda_warn_and_give_the_cpu_cube() -> None:
    pytest.importorskip("distributed")
    try:
        import dask_cuda  # noqa: F401

        pytest.skip("dask-cuda is installed here; the GPU test covers LocalCUDACluster")
    except ImportError:
        pass
    p = _run(600, dict(os.environ, NUMBA_ENABLE_CUDASIM="1"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "WARNING GpuFallbackWarning dask-cuda unusable" in p.stdout, p.stdout
    assert p.stdout.strip().endswith("SAME")


@pytest.mark.gpu
def test_gpu_processes_run_on_a_local_cuda_cluster() -> None:
    pytest.importorskip("dask_cuda")
    p = _run(200_000, dict(os.environ))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "GpuFallbackWarning" not in p.stdout, p.stdout
    assert p.stdout.strip().endswith("SAME")
