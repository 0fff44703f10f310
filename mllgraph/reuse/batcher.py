"""Dynamic batching: one worker thread per device serving concurrent callers.

Callers (threads, or asyncio through ``asyncio.wrap_future``) submit requests keyed by plan;
the worker takes the oldest request and every queued request of the same plan, up to
``max_batch_size`` images, once that many images are queued or the oldest has waited
``max_delay_s``. One pass of the plan's models serves the whole batch. A request larger than
``max_batch_size`` is **split** into chunks run back to back (the per-request limit is the
service's business: it refuses requests over ``infer_max_images`` with RESOURCE_EXHAUSTED).
Requests whose deadline passes while queued are dropped with ``DeadlineExceeded`` (the worker
wakes at the earliest deadline). On ``torch.OutOfMemoryError`` (CUDA OOM) the batch is retried
as two halves, recursively; the plan's batch cap is lowered to the size that worked; a single
image that does not fit is ``ResourceExhausted``. Nothing here kills the worker.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch

from mllgraph.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    MllgraphError,
    ResourceExhausted,
)
from mllgraph.reuse.classifier import BatchRun, ModelTiming
from mllgraph.settings import Settings

log = logging.getLogger("mllgraph.reuse.batcher")

OOM_ERRORS: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError,)


# run(images) -> BatchRun; called as run(images, digests=...) for requests that give digests.
Runner = Callable[..., BatchRun]


@dataclass
class BatcherStats:
    requests: int = 0
    batches: int = 0  # model passes (chunks and OOM halves included)
    images: int = 0
    expired: int = 0
    cancelled: int = 0
    oom_retries: int = 0
    failed_batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)  # the last 1000 passes
    size_counts: dict[int, int] = field(default_factory=dict)  # passes by size, since start


@dataclass
class _Request:
    key: str
    run: Runner
    images: list[np.ndarray]
    deadline: float | None
    enqueued: float
    future: Future
    digests: list[bytes] | None = None  # the images' keys in the kept outputs (run's digests=)


class DynamicBatcher:
    """Collects requests from concurrent callers into batches (see module doc).

    ``submit`` returns a ``concurrent.futures.Future`` of a :class:`BatchRun` holding the
    request's own results, in order, and its share of each pass's timings.
    ``max_batch_size`` and ``max_delay_s`` may be changed while running.
    """

    def __init__(
        self, *, max_batch_size: int = 64, max_delay_s: float = 0.002, name: str = "batcher"
    ) -> None:
        if max_batch_size < 1:
            raise InvalidArgument(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_delay_s < 0:
            raise InvalidArgument(f"max_delay_s must be >= 0, got {max_delay_s}")
        self.max_batch_size = int(max_batch_size)
        self.max_delay_s = float(max_delay_s)
        self.stats = BatcherStats()
        self._queue: list[_Request] = []
        self._cond = threading.Condition()
        self._closing = False
        self._oom_cap: dict[str, int] = {}
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings) -> DynamicBatcher:
        return cls(
            max_batch_size=settings.infer_max_batch,
            max_delay_s=settings.infer_max_delay_ms / 1000.0,
        )

    def submit(
        self,
        key: str,
        run: Runner,
        images: Sequence[np.ndarray],
        *,
        deadline: float | None = None,
        digests: Sequence[bytes] | None = None,
    ) -> Future:
        """Queue `images` for `run` (requests with the same `key` batch together).

        `deadline` is a time.monotonic() value; past it, a still-queued request fails with
        DeadlineExceeded. `digests` (one per image) go with them to `run(images, digests=)`:
        the keys of their kept outputs (`mllgraph.reuse.outputs`), scoped by the caller;
        requests of one key either all give them or none does.
        """
        fut: Future = Future()
        images = list(images)
        if digests is not None and len(digests) != len(images):
            raise InvalidArgument(f"{len(digests)} digests for {len(images)} images")
        if not images:
            fut.set_result(BatchRun([]))
            return fut
        with self._cond:
            if self._closing:
                raise FailedPrecondition("the inference batcher is shut down")
            kept = None if digests is None else list(digests)
            request = _Request(key, run, images, deadline, time.monotonic(), fut, kept)
            self._queue.append(request)
            self.stats.requests += 1
            self._cond.notify_all()
        return fut

    def cap(self, key: str) -> int:
        return max(1, min(self.max_batch_size, self._oom_cap.get(key, self.max_batch_size)))

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def close(self, timeout: float | None = None) -> None:
        """Finish every queued request, then stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- the worker --

    def _expire(self, now: float) -> None:
        keep = []
        for r in self._queue:
            if r.future.cancelled():
                self.stats.cancelled += 1
            elif r.deadline is not None and now >= r.deadline:
                self.stats.expired += 1
                waited = now - r.enqueued
                r.future.set_exception(
                    DeadlineExceeded(
                        f"the request's deadline expired after {waited * 1000:.0f} ms queued "
                        f"for inference ({len(r.images)} images); nothing was run for it"
                    )
                )
            else:
                keep.append(r)
        self._queue = keep

    def _take(self) -> list[_Request] | None:
        """Under the lock: the next batch, or None to wait (or stop when closing)."""
        while True:
            now = time.monotonic()
            self._expire(now)
            if not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
                continue
            head = self._queue[0]
            cap = self.cap(head.key)
            same = [r for r in self._queue if r.key == head.key]
            queued = sum(len(r.images) for r in same)
            due = head.enqueued + self.max_delay_s
            if queued < cap and now < due and not self._closing:
                wake = min([due] + [r.deadline for r in self._queue if r.deadline is not None])
                self._cond.wait(max(0.0, wake - now))
                continue
            batch, total = [], 0
            for r in same:
                if batch and total + len(r.images) > cap:
                    break
                batch.append(r)
                total += len(r.images)
            taken = {id(r) for r in batch}
            self._queue = [r for r in self._queue if id(r) not in taken]
            return [r for r in batch if r.future.set_running_or_notify_cancel()]

    def _loop(self) -> None:
        while True:
            with self._cond:
                batch = self._take()
            if batch is None:
                return
            if batch:
                self._serve(batch)

    def _serve(self, batch: list[_Request]) -> None:
        key, run = batch[0].key, batch[0].run
        images = [im for r in batch for im in r.images]
        digests = None
        if all(r.digests is not None for r in batch):
            digests = [d for r in batch for d in r.digests or ()]
        try:
            out = BatchRun([])
            cap = self.cap(key)
            for start in range(0, len(images), cap):
                part = None if digests is None else digests[start : start + cap]
                out.extend(self._run_with_retry(key, run, images[start : start + cap], part))
        except BaseException as e:  # noqa: BLE001 - every waiting caller gets the error
            self.stats.failed_batches += 1
            if not isinstance(e, MllgraphError):
                log.exception("inference batch failed")
            for r in batch:
                r.future.set_exception(e)
            return
        start = 0
        for r in batch:
            n = len(r.images)
            share = n / len(images)
            mine = BatchRun(out.results[start : start + n])
            for mid, t in out.timings.items():
                mine.timings.setdefault(mid, ModelTiming(mid)).add(t, share)
            start += n
            r.future.set_result(mine)

    def _run_with_retry(
        self,
        key: str,
        run: Runner,
        images: list[np.ndarray],
        digests: list[bytes] | None = None,
    ) -> BatchRun:
        try:
            out = run(images) if digests is None else run(images, digests=digests)
        except OOM_ERRORS as e:
            self.stats.oom_retries += 1
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()
            if len(images) == 1:
                raise ResourceExhausted(
                    "out of device memory running one image through the plan's models; "
                    "use a larger device or a smaller model budget"
                ) from e
            half = len(images) // 2
            self._oom_cap[key] = min(self._oom_cap.get(key, self.max_batch_size), half)
            log.warning("cuda_oom batch=%d retry_as=%d+%d", len(images), half, len(images) - half)
            parts = (None, None) if digests is None else (digests[:half], digests[half:])
            out = self._run_with_retry(key, run, images[:half], parts[0])
            out.extend(self._run_with_retry(key, run, images[half:], parts[1]))
            return out
        self.stats.batches += 1
        self.stats.images += len(images)
        self.stats.batch_sizes.append(len(images))
        self.stats.size_counts[len(images)] = self.stats.size_counts.get(len(images), 0) + 1
        del self.stats.batch_sizes[:-1000]
        return out
