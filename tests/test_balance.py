"""balance: map tasks regrouped so that the workers finish their last ones together."""

from __future__ import annotations

import heapq

import numpy as np
import pytest

from flowatlas.engine.pipeline import BALANCE_SLACK, TASK_COST_ROWS, _makespan, balance, pack
from flowatlas.io.archive import Fragment


def _frags(rows: list[int]) -> list[Fragment]:
    return [Fragment(f"f{i}.parquet", (0,), int(n), "raw") for i, n in enumerate(rows)]


def _rows(tasks: list[list[Fragment]]) -> list[int]:
    return [sum(f.num_rows for f in t) for t in tasks]


def _makespan_oracle(task_rows: list[int], workers: int) -> int:
    """Workers as a heap of (free at, index): each task to the first free one (lowest index
    on ties), as a thread pool takes them."""
    heap = [(0, i) for i in range(workers)]
    for r in task_rows:
        t, i = heapq.heappop(heap)
        heapq.heappush(heap, (t + r + TASK_COST_ROWS, i))
    return max(t for t, _ in heap)


@pytest.mark.parametrize("seed", range(30))
def test_makespan_equals_a_heap_of_workers(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 500_000, rng.integers(0, 40)).tolist()
    for workers in (1, 2, 3, 8):
        assert _makespan(rows, workers) == _makespan_oracle(rows, workers)


@pytest.mark.parametrize("seed", range(60))
def test_balance_keeps_the_fragments_in_order_and_never_finishes_later(seed: int) -> None:
    rng = np.random.default_rng(seed)
    kind = seed % 4
    n = int(rng.integers(1, 300))
    if kind == 0:  # equal files (the synthetic world)
        rows = [int(rng.integers(1, 200_000))] * n
    elif kind == 1:  # any sizes
        rows = rng.integers(0, 400_000, n).tolist()
    elif kind == 2:  # one huge fragment among small ones
        rows = rng.integers(1, 5_000, n).tolist()
        rows[int(rng.integers(0, n))] = 10_000_000
    else:  # many empty fragments
        rows = (rng.integers(0, 100_000, n) * (rng.random(n) < 0.3)).tolist()
    frags = _frags(rows)
    target = int(rng.integers(1_000, 2_000_000))
    tasks = pack(frags, target)
    for workers in (0, 1, 2, 3, 4):
        out = balance(tasks, workers)
        assert [f for t in out for f in t] == frags  # same fragments, same order
        assert all(t for t in out)  # no empty task
        if out is not tasks:  # changed only for a sooner finish, with no task much larger
            assert _makespan(_rows(out), workers) < _makespan(_rows(tasks), workers)
            assert max(_rows(out)) <= BALANCE_SLACK * max(_rows(tasks))


def test_the_world_s_seventeen_tasks_become_eighteen_even_ones() -> None:
    """World 5 M: 184 files of 27,174 rows at 312,500 rows a task: 16 tasks of 11 files and
    a last one of 8 running alone; balanced, 18 tasks within one file of each other."""
    frags = _frags([27_174] * 184)
    tasks = pack(frags, 312_500)
    assert len(tasks) == 17
    out = balance(tasks, 2)
    assert len(out) == 18
    assert max(_rows(out)) - min(_rows(out)) <= 27_174


def test_tasks_already_even_stay_as_they_are() -> None:
    """The heavy-tailed archives: 30 files of one task each, or coarse files that no even
    split can do better with."""
    tasks = pack(_frags([166_666] * 30), 312_500)
    assert balance(tasks, 2) is tasks
    tasks = pack(_frags([1_000_000, 1_000_000, 1_000_000]), 1_000_000)
    assert balance(tasks, 2) is tasks  # three whole files: nothing splits them
