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
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from mllgraph.errors import InvalidArgument


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
