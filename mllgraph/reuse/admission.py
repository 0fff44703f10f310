"""Admission control: a budget of decoded pixels in flight across all requests.

The inference service decodes every image of a request before batching it, so memory grows
with the pixels of all requests in progress, not of one. `PixelBudget` caps that sum: a
request reserves its pixels (read from the image headers, before any pixel is decoded) and
releases them when its images are done; one that does not fit waits, first come first
served, until enough is released or its deadline passes (`DeadlineExceeded`); one that alone
needs more than the whole budget is refused at once (`ResourceExhausted`). Nothing else is
refused, so any sequence of requests holds at most `capacity` decoded pixels.

It is an asyncio primitive: every request of one service runs on the service's event loop,
and the service process holds one budget (`Settings.infer_max_inflight_pixels`). `peak`,
`waited` and friends are counters for tests and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from mllgraph.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted


@dataclass
class BudgetStats:
    admitted: int = 0  # reservations granted
    waited: int = 0  # of those, how many had to wait
    refused: int = 0  # larger than the whole budget
    expired: int = 0  # deadline passed while waiting
    peak: int = 0  # most pixels ever reserved at once


class PixelBudget:
    """At most `capacity` pixels reserved at once; see the module docstring."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise InvalidArgument(f"the in-flight pixel budget must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.in_use = 0
        self.stats = BudgetStats()
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _grant(self, pixels: int) -> None:
        self.in_use += pixels
        self.stats.admitted += 1
        self.stats.peak = max(self.stats.peak, self.in_use)

    def _wake(self) -> None:
        """Grant waiters in arrival order while the first one fits."""
        while self._waiters:
            pixels, fut = self._waiters[0]
            if fut.done():  # gave up (deadline, cancellation)
                self._waiters.popleft()
                continue
            if self.in_use + pixels > self.capacity:
                return
            self._waiters.popleft()
            self._grant(pixels)
            fut.set_result(None)

    async def acquire(self, pixels: int, *, deadline: float | None = None, what: str = "") -> None:
        """Reserve `pixels`, waiting until `deadline` (time.monotonic()) at most."""
        pixels = max(0, int(pixels))
        if pixels > self.capacity:
            self.stats.refused += 1
            raise ResourceExhausted(
                f"{what or 'the request'}: its images decode to {pixels:,} pixels, over this "
                f"server's budget of {self.capacity:,} decoded pixels in flight "
                "(MLLGRAPH_INFER_MAX_INFLIGHT_PIXELS); send fewer or smaller images per request"
            )
        if not self._waiters and self.in_use + pixels <= self.capacity:
            self._grant(pixels)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((pixels, fut))
        self.stats.waited += 1
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except (TimeoutError, asyncio.CancelledError) as e:
            if fut.done() and not fut.cancelled():
                self.release(pixels)  # granted just as we gave up: give it back
            else:
                fut.cancel()
            self._wake()  # the queue's head may have changed
            if isinstance(e, asyncio.CancelledError):
                raise
            self.stats.expired += 1
            raise DeadlineExceeded(
                f"{what or 'the request'}: waited for room to decode its {pixels:,} pixels "
                f"until its deadline; {self.in_use:,} of {self.capacity:,} pixels are in use "
                "by other requests"
            ) from e

    def release(self, pixels: int) -> None:
        self.in_use -= max(0, int(pixels))
        if self.in_use < 0:  # a bug, not a caller's mistake: never go below empty
            self.in_use = 0
        self._wake()

    @contextlib.asynccontextmanager
    async def reserve(
        self, pixels: int, *, deadline: float | None = None, what: str = ""
    ) -> AsyncIterator[Reservation]:
        """``async with budget.reserve(n, deadline=...) as held:`` the pixels are held inside,
        and after it until every piece of work `held.track`s has ended too (a decode thread or
        a batch still holding the images when the RPC is cancelled)."""
        await self.acquire(pixels, deadline=deadline, what=what)
        held = Reservation(self, pixels, asyncio.get_running_loop())
        try:
            yield held
        finally:
            held.end()


class Reservation:
    """Pixels held by one request: released once the request and all it tracks have ended."""

    def __init__(self, budget: PixelBudget, pixels: int, loop: asyncio.AbstractEventLoop) -> None:
        self.budget, self.pixels, self.loop = budget, pixels, loop
        self.pending = 1  # the request itself

    def track(self, fut: Any) -> None:
        """Hold the pixels until `fut` (a concurrent.futures or asyncio future) is done."""
        self.pending += 1
        fut.add_done_callback(lambda _: self._end_threadsafe())

    def end(self) -> None:
        """One holder done (call on the budget's loop)."""
        self.pending -= 1
        if self.pending == 0:
            self.budget.release(self.pixels)

    def _end_threadsafe(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to release to
            self.loop.call_soon_threadsafe(self.end)
