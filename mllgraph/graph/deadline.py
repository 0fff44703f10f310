"""The deadline of the request being served, for graph calls (no neo4j import: the inference
service runs without the driver).

The services' `rpc` decorator opens `within(seconds)` with a share of the RPC's remaining
time; `asyncio.to_thread` copies context variables, so graph calls made in worker threads see
it. `Graph` (mllgraph.graph.db) gives every transaction the time left as its timeout, so a
graph call ends before the RPC's deadline (DEADLINE_EXCEEDED), not after it. Outside a
request (the CLI, background jobs in their own threads) there is no deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from mllgraph.errors import DeadlineExceeded

_deadline: ContextVar[float | None] = ContextVar("mllgraph_graph_deadline", default=None)


@contextmanager
def within(seconds: float | None) -> Iterator[None]:
    """Graph calls in this context (and in threads started with asyncio.to_thread from it)
    must end within `seconds` from now; None: no deadline."""
    token = _deadline.set(None if seconds is None else time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left before the current deadline (<= 0: passed); None without one."""
    at = _deadline.get()
    return None if at is None else at - time.monotonic()


def check(stage: str) -> None:
    """Raise DeadlineExceeded when the current deadline has passed: long pure computations
    (selection's fits) call this between their steps, so a request whose caller has given up
    stops computing instead of holding a worker thread (and the process, at exit) for minutes."""
    left = remaining()
    if left is not None and left <= 0:
        raise DeadlineExceeded(
            f"the request's deadline passed during {stage}; retry with a longer deadline"
        )
