"""Jobs of one torch thread each (training an expert), run on several cores at once.

Training a small expert is one torch thread's work: more threads per job compete on a small
shared CPU (`hubs.fashion.experts`, `hubs.emoji.experts`). So a hub's experts, trained one
after another, left every other core idle: half of a 2-core machine for a minute of README
command (1). `run_jobs` runs such jobs in a pool of spawned processes, one torch thread
each. Spawned, not forked: the parent may hold a Neo4j driver, a gRPC channel or torch's own
thread pools, none of which survive a fork. Results come back in the jobs' order, and
`on_done` hears of each as it finishes. Every job seeds its own generators, so what it
computes does not depend on which process ran it, or when.

Imports nothing of this project above `settings` and `errors`.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, TypeVar

from mllgraph.errors import InvalidArgument
from mllgraph.settings import Settings

# Processes at most when the setting says "auto" (0): each holds torch and its training data
# (a few hundred MB), and a hub's experts number a dozen or so.
MAX_AUTO_WORKERS = 4

J = TypeVar("J")
R = TypeVar("R")


def worker_count(settings: Settings, jobs: int) -> int:
    """How many processes `jobs` one-thread jobs get: `settings.train_workers`, or with 0
    the cores this process may use (at most MAX_AUTO_WORKERS); never more than the jobs."""
    if settings.train_workers < 0:
        raise InvalidArgument(
            f"MLLGRAPH_TRAIN_WORKERS={settings.train_workers}: use a count of processes, or 0 "
            "for one per core"
        )
    want = settings.train_workers or min(MAX_AUTO_WORKERS, len(os.sched_getaffinity(0)))
    return max(1, min(want, jobs))


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def run_jobs(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    workers: int,
    on_done: Callable[[int, R], None] | None = None,
) -> list[R]:
    """`[fn(job) for job in jobs]`, in `workers` spawned processes when that is more than one
    (`fn` and the jobs must pickle: a module-level function, plain data), else here.
    `on_done(i, result)` runs here as job i finishes. The first job to fail raises its
    error here once the jobs already running have ended; jobs not started are dropped."""
    if workers <= 1 or len(jobs) <= 1:
        out = []
        for i, job in enumerate(jobs):
            out.append(fn(job))
            if on_done is not None:
                on_done(i, out[-1])
        return out
    context = multiprocessing.get_context("spawn")
    results: dict[int, R] = {}
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        index = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
        pending: set[Any] = set(index)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: index[f]):
                if future.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise future.exception()  # type: ignore[misc]
                results[index[future]] = future.result()
                if on_done is not None:
                    on_done(index[future], results[index[future]])
    return [results[i] for i in range(len(jobs))]
