"""Shared fixtures: the third-party data folder, external tools, small archives."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from flowatlas.kernels import cuda_check
from flowatlas.testing import shared_data_dir, shared_data_missing, skip_or_fail

_LAUNCH_DIR = pytest.StashKey[Path]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--gpu", action="store_true", help="run tests marked gpu on a real GPU")
    parser.addoption(
        "--full",
        action="store_true",
        help="run tests marked slow at full size (CI runs a bounded version)",
    )


def _simulated_threads_wrap() -> None:
    """Under numba's CUDA simulator, run each simulated GPU thread with NumPy's overflow
    warnings off: the simulator runs device code on NumPy scalars, which warn (an error under
    this suite's filters) where a GPU's uint64 arithmetic, like the CPU kernels', wraps by
    definition: hash multiplies (``mix64``), the LPM body's popcount. Per thread, since NumPy's
    error state is (a simulated thread starts with the default)."""
    from numba import config as numba_config

    if not numba_config.ENABLE_CUDASIM:
        return
    import numpy as np
    from numba.cuda.simulator.kernel import BlockThread

    run = BlockThread.run
    if getattr(run, "_wraps", False):
        return

    def wrapping(self: BlockThread) -> None:
        with np.errstate(over="ignore"):
            run(self)

    wrapping._wraps = True  # type: ignore[attr-defined]
    BlockThread.run = wrapping


def pytest_configure(config: pytest.Config) -> None:
    _simulated_threads_wrap()
    # the session's first process (the xdist controller) makes the folder; workers and the
    # simulator subprocesses the tests start inherit the variable, and kernels/cuda.py records
    if not hasattr(config, "workerinput") and cuda_check.LOG_ENV not in os.environ:
        folder = tempfile.mkdtemp(prefix="flowatlas-cuda-launches-")
        os.environ[cuda_check.LOG_ENV] = folder
        config.stash[_LAUNCH_DIR] = Path(folder)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Merge the recorded kernel launches into one file, the signatures that
    tests/test_cuda_compile.py compiles (if this session launched any kernel)."""
    folder = config.stash.get(_LAUNCH_DIR, None)
    if folder is None:
        return
    launches = cuda_check.read_launches(folder)
    if launches:
        rows = sorted(json.dumps(e, sort_keys=True) for v in launches.values() for e in v)
        cuda_check.launches_file().write_text("".join(r + "\n" for r in rows))
    shutil.rmtree(folder, ignore_errors=True)
    os.environ.pop(cuda_check.LOG_ENV, None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--gpu"):
        skip = pytest.mark.skip(reason="needs a real GPU: run with --gpu on a CUDA machine")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
    if not (config.getoption("--full") or os.environ.get("FLOWATLAS_FULL") == "1"):
        skip = pytest.mark.skip(reason="full-size run: use --full (CI runs the bounded version)")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def full_size(request: pytest.FixtureRequest) -> bool:
    """True under --full (benchmark-sized inputs); CI runs the bounded size."""
    return bool(request.config.getoption("--full")) or os.environ.get("FLOWATLAS_FULL") == "1"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared third-party data folder; skips the test where it is absent (fails in CI)."""
    why = shared_data_missing()
    if why:
        skip_or_fail(why)
    return shared_data_dir()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, one per test module (tests/serve_support.py)."""
    from serve_support import browser_session

    yield from browser_session()


@pytest.fixture(scope="module")
def small_plan(tmp_path_factory):
    """The build plan of a small synthetic archive: its prefix table, regions and types,
    for tests that drive the engine's steps directly."""
    from flowatlas.classify import load_table
    from flowatlas.engine.build import resolve_config
    from flowatlas.engine.plan import make_plan
    from flowatlas.synth import synthesize

    root = tmp_path_factory.mktemp("plan")
    synthesize(root / "a", records=2_000, days=2, start="2025-09-01", seed=3)
    cfg = resolve_config(root / "a", None)
    return make_plan(cfg, load_table(cfg))
