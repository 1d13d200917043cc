"""Support for tests and benchmarks: where the shared third-party data lives.

One setting, the environment variable ``FLOWATLAS_DATA``, points at the folder of real
third-party data (packet captures, prefix tables, flow exports; see its MANIFEST.md). It
defaults to ``../shared/data`` beside the repository root. Tests that need it skip with a
reason where it is absent, except in CI (``CI=true``), where a missing folder, file or tool
fails the test instead: CI must not go green while testing little. Nothing from the data is
ever copied into the package.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

ENV_VAR = "FLOWATLAS_DATA"
REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """The shared data folder (it may not exist)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT / ".." / "shared" / "data").resolve()


def shared_data_missing(*relpaths: str) -> str | None:
    """Why shared data (or the given files inside it) cannot be used, or None if it can."""
    root = shared_data_dir()
    if not root.is_dir():
        return f"shared data not found at {root} (set {ENV_VAR} to the folder holding MANIFEST.md)"
    for rel in relpaths:
        if not (root / rel).exists():
            return f"{rel} not found under {root}"
    return None


def tool_missing(*names: str) -> str | None:
    """Why external tools cannot be used (not on PATH), or None if all are there."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        return f"external tool(s) not installed: {', '.join(missing)} (.ci/run installs them)"
    return None


def in_ci() -> bool:
    """Whether this runs in CI (``CI=true``, as .ci/run's caller sets it)."""
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(why: str) -> None:
    """Inside a test: skip for ``why``, or fail in CI, where nothing may be missing."""
    import pytest

    if in_ci():
        pytest.fail(f"{why} (CI=true: a missing prerequisite fails the run)", pytrace=False)
    pytest.skip(why)


def need_data(*relpaths: str) -> Path:
    """Inside a test: the shared data folder, skipping (failing in CI) unless ``relpaths``
    exist in it."""
    why = shared_data_missing(*relpaths)
    if why:
        skip_or_fail(why)
    return shared_data_dir()


def need_tools(*names: str) -> None:
    """Inside a test: skip (fail in CI) unless the external tools are on PATH."""
    why = tool_missing(*names)
    if why:
        skip_or_fail(why)


@contextlib.contextmanager
def mounted_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """Inside a test: a tmpfs of ``size`` (e.g. "64k") mounted at the new folder ``where``,
    for full-disk tests; skips where mounting is not allowed (it needs root)."""
    import subprocess

    import pytest

    where.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def run_script(script: str, *, cuda_simulator: bool, timeout: float = 900) -> str:
    """Run a Python script in a fresh interpreter, on numba's CUDA simulator or on the real
    GPU (the simulator must be chosen before numba is imported); return its stdout.

    A failing script fails the calling test with the end of its stderr.
    """
    import subprocess
    import sys

    env = dict(os.environ)
    if cuda_simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    else:
        env.pop("NUMBA_ENABLE_CUDASIM", None)
    p = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert p.returncode == 0, p.stderr[-4000:]
    return p.stdout
