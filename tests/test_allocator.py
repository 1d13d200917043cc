"""The allocator settings a build runs under: applied on glibc, undone afterwards."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from flowatlas.engine import allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_build_allocator_applies_and_returns_memory() -> None:
    if allocator._glibc() is None:
        pytest.skip("not glibc")
    with allocator.build_allocator() as applied:
        assert applied
        a = np.ones(4_000_000)  # 32 MB: below the mmap threshold, served from the heap
        assert a.sum() == 4_000_000
        del a
    # afterwards the settings are moderate again and mallopt still accepts them
    assert allocator._set(
        allocator._glibc(), allocator.AFTER_TRIM_THRESHOLD, allocator.AFTER_TOP_PAD
    )


def test_build_allocator_is_a_no_op_without_glibc(monkeypatch) -> None:
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    with allocator.build_allocator() as applied:
        assert applied is False
