"""Thread limits that a request may set: only for its own thread.

Numeric work runs on two kinds of pool. OpenMP's thread count (torch's intra-op parallelism
on CPU runs on it) is per calling thread: the OpenMP ``nthreads-var`` setting belongs to the
thread that sets it, so :func:`local_threads` sets it for a block in the calling thread only,
and a request that overlaps sees nothing. OpenBLAS's count (numpy, scipy, scikit-learn) and
``torch.set_num_threads`` (it also sets the count every thread torch has not seen yet starts
with) are process-wide: a request must never change them (two overlapping requests race: one
restores what the other changed, and the service is left on one thread). They belong to
start-up: :func:`set_blas_threads` (the CLI's and each service's entry point, from
``Settings.blas_threads``) sets BLAS's; torch's default (one thread per core) stands, or
``OMP_NUM_THREADS`` in the environment of the process.

A request's independent pieces of numeric work (a selection's stacked fits) may run at once
on :func:`work_pool`, a process-wide pool of a fixed size: numpy releases the GIL in its
linear algebra, so on an idle second core they take about half the wall time, and however
many requests overlap, no more threads than the pool's run that work.
"""

from __future__ import annotations

import contextvars
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from mllgraph.errors import InvalidArgument

T = TypeVar("T")
MAX_AUTO_WORK_THREADS = 4  # `work_threads(0)`: one per core, at most this many


@contextmanager
def local_threads(n: int) -> Iterator[None]:
    """Run the block's OpenMP work (torch's CPU kernels included) on `n` threads, for the
    calling thread only; every other thread, and what a new thread starts with, stay as they
    are."""
    from threadpoolctl import threadpool_limits

    if "torch" in sys.modules:
        # torch sets a thread's OpenMP count from its process-wide one the first time the
        # thread calls into it: do that now, or it would undo the limit inside the block.
        sys.modules["torch"].get_num_threads()
    limits = threadpool_limits(n, user_api="openmp")
    try:
        yield
    finally:
        limits.restore_original_limits()


def set_blas_threads(n: int) -> None:
    """At start-up only (process-wide): numpy's and scipy's BLAS on `n` threads (0: leave the
    library's default). An ``OPENBLAS_NUM_THREADS`` already in the environment wins. Set in
    the environment for BLAS libraries loaded later (OpenBLAS reads it when it loads) and
    for child processes, and applied to those already loaded. torch's OpenMP pool is not a
    BLAS pool and is left alone."""
    if n < 0:
        raise InvalidArgument(
            f"MLLGRAPH_BLAS_THREADS is {n}: give a number of threads, or 0 for the library default"
        )
    if n == 0 or "OPENBLAS_NUM_THREADS" in os.environ:
        return
    os.environ["OPENBLAS_NUM_THREADS"] = str(n)
    if "numpy" in sys.modules or "scipy" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n, user_api="blas")


def work_threads(n: int) -> int:
    """The size of :func:`work_pool` for a setting of `n` (``MLLGRAPH_WORK_THREADS``): `n`,
    or with 0 one per core this process may use, at most MAX_AUTO_WORK_THREADS."""
    if n < 0:
        raise InvalidArgument(
            f"MLLGRAPH_WORK_THREADS is {n}: give a number of threads, 1 to run a request's "
            "work in its own thread only, or 0 for one per core"
        )
    return n or min(MAX_AUTO_WORK_THREADS, len(os.sched_getaffinity(0)))


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def work_pool(n: int) -> ThreadPoolExecutor | None:
    """The process-wide pool of `work_threads(n)` threads, made once per size; None where
    that is one thread (the work then runs in the caller's thread, as `run_in` does)."""
    size = work_threads(n)
    if size <= 1:
        return None
    with _pools_lock:
        if size not in _pools:
            _pools[size] = ThreadPoolExecutor(size, thread_name_prefix="mllgraph-work")
        return _pools[size]


def run_in(pool: ThreadPoolExecutor | None, fn: Callable[..., T], *args: Any) -> Future[T]:
    """`fn(*args)` on `pool` (None: now, in this thread), in a copy of the caller's context,
    so that what the request set there (its deadline, its softmax memo) holds in the pool's
    thread too. Its result, or its exception, comes from the future."""
    if pool is not None:
        return pool.submit(contextvars.copy_context().run, fn, *args)
    done: Future[T] = Future()
    try:
        done.set_result(fn(*args))
    except Exception as e:  # handed to the caller through the future, as a pool's would
        done.set_exception(e)
    return done
