"""One-thread jobs in worker processes (mllgraph.hub.workers): order, errors, how many. No
server. The experts trained this way: tests/test_experts.py, tests/test_emoji_experts.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mllgraph.errors import InvalidArgument
from mllgraph.hub import workers
from mllgraph.settings import Settings


def _square_and_pid(x: int) -> tuple[int, int]:
    if x < 0:
        raise InvalidArgument(f"job {x}: negative")
    return x * x, os.getpid()


def test_jobs_come_back_in_their_order_from_other_processes() -> None:
    heard: list[int] = []
    got = workers.run_jobs(
        _square_and_pid, [3, 1, 4, 1, 5], 2, on_done=lambda i, _r: heard.append(i)
    )
    assert [r for r, _ in got] == [9, 1, 16, 1, 25]
    assert sorted(heard) == [0, 1, 2, 3, 4]
    assert os.getpid() not in {pid for _, pid in got}  # spawned, not run here
    # One worker: here, in order.
    here = workers.run_jobs(_square_and_pid, [2, 3], 1)
    assert here == [(4, os.getpid()), (9, os.getpid())]


def _wait_for(path: str) -> bool:
    """True once `path` exists (at most 60 s)."""
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


def test_each_job_is_heard_of_as_it_finishes(tmp_path: Path) -> None:
    # Job 1 waits for the file the parent writes on hearing of job 0: heard only once every
    # job had ended, it would wait in vain.
    flag = str(tmp_path / "job-0-heard")

    def heard(i: int, _r: object) -> None:
        if i == 0:
            Path(flag).touch()

    got = workers.run_jobs(_wait_for, [str(tmp_path), flag], 2, on_done=heard)
    assert got == [True, True]


def test_a_job_that_fails_raises_its_own_error_here() -> None:
    with pytest.raises(InvalidArgument, match="job -2: negative"):
        workers.run_jobs(_square_and_pid, [1, -2, 3], 2)


def test_worker_count() -> None:
    auto = Settings(train_workers=0)
    cores = len(os.sched_getaffinity(0))
    assert workers.worker_count(auto, 12) == min(cores, workers.MAX_AUTO_WORKERS)
    assert workers.worker_count(auto, 1) == 1
    assert workers.worker_count(Settings(train_workers=3), 12) == 3
    assert workers.worker_count(Settings(train_workers=3), 2) == 2
    with pytest.raises(InvalidArgument, match="MLLGRAPH_TRAIN_WORKERS=-1"):
        workers.worker_count(Settings(train_workers=-1), 4)
