"""On a machine without a GPU nothing imports or initialises CUDA (RAPIDS' no-device test)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys, tempfile, pathlib
    import flowatlas
    from flowatlas.synth import synthesize
    from flowatlas.engine.build import build_cube
    from flowatlas.engine.cube import open_cube
    from flowatlas.viz.views import compute_views
    d = pathlib.Path(tempfile.mkdtemp())
    synthesize(d / "a", records=3000, days=3, workers=1)
    build_cube(d / "a", d / "c", workers=0)
    compute_views(open_cube(d / "c"))
    gpu = sorted(m for m in sys.modules
                 if m.split(".")[0] in ("cupy", "cudf", "dask_cudf", "dask_cuda", "rmm")
                 or m.startswith("numba.cuda"))
    print("GPU-MODULES:", ",".join(gpu))
    """
)


def test_cpu_pipeline_never_imports_cuda() -> None:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1")
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr[-3000:]
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("GPU-MODULES:"))
    assert line == "GPU-MODULES: ", line


def test_import_is_cheap_and_lazy() -> None:
    code = (
        "import sys, flowatlas; "
        "print(sorted(m for m in ('numba','dask','bokeh','pandas') if m in sys.modules))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_a_threads_build_imports_no_dask(tmp_path) -> None:
    """The default local build runs on a thread pool: neither Dask nor psutil (nor Bokeh)
    is imported for it, so no build pays for them at start-up."""
    from flowatlas.synth import synthesize

    synthesize(tmp_path / "a", records=3000, days=2, workers=1)
    code = textwrap.dedent(
        f"""
        import sys
        from flowatlas.engine.build import build_cube
        build_cube({str(tmp_path / "a")!r}, {str(tmp_path / "c")!r}, workers=2)
        print(sorted(m.split(".")[0] for m in sys.modules
                     if m.split(".")[0] in ("dask", "distributed", "psutil", "bokeh")))
        """
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().splitlines()[-1] == "[]"
