"""Thread limits that a request may set: only for its own thread.

Numeric work runs on two kinds of pool. OpenMP's thread count (torch's intra-op parallelism
on CPU runs on it) is per calling thread: the OpenMP ``nthreads-var`` setting belongs to the
thread that sets it, so :func:`local_threads` sets it for a block in the calling thread only,
and a request that overlaps sees nothing. OpenBLAS's count (numpy, scipy, scikit-learn) and
``torch.set_num_threads`` (it also sets the count every thread torch has not seen yet starts
with) are process-wide: a request must never change them (two overlapping requests race: one
restores what the other changed, and the service is left on one thread). They belong to
start-up, and the project sets neither: their defaults (one thread per core) stand, or the
usual ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` in the environment of the process.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


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
