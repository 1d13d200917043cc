"""Shared fixtures: the third-party data folder, external tools, small archives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flowatlas.testing import shared_data_dir, shared_data_missing, skip_or_fail


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--gpu", action="store_true", help="run tests marked gpu on a real GPU")
    parser.addoption(
        "--full",
        action="store_true",
        help="run tests marked slow at full size (CI runs a bounded version)",
    )


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
