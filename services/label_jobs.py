"""In-memory labelling jobs of the ingestion service: `LabelJob` and `LabelJobQueue`, a FIFO
with one worker task that runs one job at a time (behaviour: see services/ingestion.py).

Imports no service module (the ingestion servicer imports it).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mllgraph.errors import FailedPrecondition, MllgraphError, NotFound
from mllgraph.label import work as label_work
from mllgraph.v1 import ingestion_pb2
from mllgraph.wire import JOB_STATE_NAMES, timestamp
from services.errors import redact

# The jobs' lines belong to the ingestion service's log.
log = logging.getLogger("mllgraph.services.ingestion")

MAX_FINISHED_JOBS = 1000
CANCEL_WAIT_S = 5.0  # at shutdown, how long a label write in flight may take to finish

QUEUED = ingestion_pb2.LABEL_JOB_STATE_QUEUED
RUNNING = ingestion_pb2.LABEL_JOB_STATE_RUNNING
DONE = ingestion_pb2.LABEL_JOB_STATE_DONE
FAILED = ingestion_pb2.LABEL_JOB_STATE_FAILED
_CANCELLED_JOB = {  # CancelToken.cancel's answer -> how a job stopped at shutdown ends
    label_work.CancelToken.CANCELLED: (
        FAILED,
        "server shut down while labelling; nothing was written (label the model again)",
    ),
    label_work.CancelToken.COMMITTED: (
        DONE,
        "the labels were written just before the server shut down",
    ),
    label_work.CancelToken.WRITING: (
        FAILED,
        "server shut down while the labels were being written: they may or may not be in "
        "the graph (see the model's labelled_at)",
    ),
}


@dataclass
class LabelJob:
    """One labelling job (in memory; see services/ingestion.py)."""

    job_id: str
    model_id: str
    options: label_work.LabelOptions
    heads_total: int
    state: int = QUEUED
    progress: float = 0.0  # written by the labelling thread, read by the event loop
    message: str = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    heads_done: int = 0
    # Set when the job is reported FAILED while its thread may still run: no write after it.
    token: label_work.CancelToken = field(default_factory=label_work.CancelToken)

    @property
    def active(self) -> bool:
        return self.state in (QUEUED, RUNNING)

    def to_proto(self) -> ingestion_pb2.LabelJob:
        job = ingestion_pb2.LabelJob(
            job_id=self.job_id,
            model_id=self.model_id,
            state=self.state,
            progress=min(max(self.progress, 0.0), 1.0),
            message=redact(self.message),  # a job's error may name server paths
            heads_done=self.heads_done,
            heads_total=self.heads_total,
        )
        for name in ("started_at", "finished_at"):
            ts = timestamp(getattr(self, name))
            if ts is not None:
                getattr(job, name).CopyFrom(ts)
        return job


class LabelJobQueue:
    """In-memory FIFO of labelling jobs with one worker task: one job runs at a time."""

    def __init__(self, run: Callable[[LabelJob], Any], keep_finished: int = MAX_FINISHED_JOBS):
        self._run = run  # async (job) -> summary message
        self._keep = keep_finished
        self._jobs: OrderedDict[str, LabelJob] = OrderedDict()
        self._queue: asyncio.Queue[LabelJob | None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._current: asyncio.Task[str] | None = None
        self._running: LabelJob | None = None
        self._cancel_outcome: str | None = None  # CancelToken.cancel's answer at shutdown
        # Models no job may be submitted for right now (DeleteModel in progress).
        self.closed: set[str] = set()

    def get(self, job_id: str) -> LabelJob:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(
                f"label job {job_id!r} does not exist (jobs live in the server's memory: "
                "a restart forgets them, and only recent finished jobs are kept)"
            )
        return job

    def state_counts(self) -> dict[str, int]:
        """Jobs held in memory by state name (every state present, 0 when none)."""
        counts = dict.fromkeys(JOB_STATE_NAMES.values(), 0)
        for job in list(self._jobs.values()):
            name = JOB_STATE_NAMES.get(job.state, str(job.state))
            counts[name] = counts.get(name, 0) + 1
        return counts

    def active_for(self, model_id: str) -> LabelJob | None:
        return next((j for j in self._jobs.values() if j.active and j.model_id == model_id), None)

    def served_since(self, model_id: str, since: float) -> LabelJob | None:
        """The newest job that labelled `model_id` and finished at or after `since`
        (time.time()): a request that arrived then is served by it."""
        done = [
            j
            for j in self._jobs.values()
            if j.model_id == model_id and j.state == DONE and (j.finished_at or 0.0) >= since
        ]
        return max(done, key=lambda j: j.finished_at or 0.0, default=None)

    def submit(
        self,
        model_id: str,
        options: label_work.LabelOptions,
        heads_total: int,
        job_id: str | None = None,
    ) -> LabelJob:
        """Queue a job for `model_id` (under `job_id`, e.g. the id its claim was granted to),
        or return its queued or running job if it has one.

        Atomic on the event loop (no await between the check and the queueing), so two
        concurrent LabelModel calls for one model get one job. FailedPrecondition while the
        model is being deleted."""
        active = self.active_for(model_id)
        if active is not None:
            return active
        if model_id in self.closed:
            raise FailedPrecondition(f"model {model_id} is being deleted; nothing to label")
        if self._queue is None:
            self._queue = asyncio.Queue()
            # A fresh context: the worker outlives the RPC that started it, so it must not
            # inherit that RPC's graph deadline (mllgraph.graph.deadline).
            self._worker = asyncio.create_task(
                self._work(), name="label-job-worker", context=contextvars.Context()
            )
        job = LabelJob(job_id or uuid.uuid4().hex, model_id, options, heads_total)
        self._jobs[job.job_id] = job
        self._queue.put_nowait(job)
        self._evict()
        log.info(
            "label_job state=queued job=%s model=%s waiting=%d",
            job.job_id,
            model_id,
            self._queue.qsize(),
        )
        return job

    def _evict(self) -> None:
        finished = [k for k, j in self._jobs.items() if not j.active]
        for key in finished[: max(0, len(finished) - self._keep)]:
            del self._jobs[key]

    def _finish(self, job: LabelJob, state: int, message: str) -> None:
        job.state, job.message, job.finished_at = state, message, time.time()
        if state == DONE:
            job.progress, job.heads_done = 1.0, job.heads_total
        seconds = job.finished_at - (job.started_at or job.created_at)
        log.log(
            logging.INFO if state == DONE else logging.WARNING,
            "label_job state=%s job=%s model=%s s=%.1f msg=%r",
            JOB_STATE_NAMES[state],
            job.job_id,
            job.model_id,
            seconds,
            message,
        )
        self._evict()

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            if job is None:  # close(): no more jobs
                return
            if not job.active:  # failed at shutdown while waiting
                continue
            job.state, job.started_at, job.message = RUNNING, time.time(), "running"
            log.info("label_job state=running job=%s model=%s", job.job_id, job.model_id)
            self._running = job
            self._current = asyncio.ensure_future(self._run(job))
            # A job cancelled at shutdown still ends in its thread (Aborted): retrieve that.
            self._current.add_done_callback(lambda f: f.cancelled() or f.exception())
            try:
                message = await asyncio.shield(self._current)
            except asyncio.CancelledError:
                if job.active:
                    # close() cancelled the token already; otherwise do it now, not waiting.
                    outcome = self._cancel_outcome or job.token.cancel(timeout=0)
                    state, note = _CANCELLED_JOB[outcome]
                    self._finish(job, state, note)
                raise
            except MllgraphError as e:
                self._finish(job, FAILED, str(e))
            except Exception as e:  # noqa: BLE001 - reported on the job, logged with traceback
                log.exception("label_job_internal_error job=%s", job.job_id)
                self._finish(job, FAILED, f"internal error ({type(e).__name__}): {e}")
            else:
                self._finish(job, DONE, message)
            finally:
                self._current = self._running = None

    def queued(self) -> list[LabelJob]:
        return [j for j in self._jobs.values() if j.state == QUEUED]

    async def close(self, grace: float | None) -> None:
        """Fail queued jobs, give a running one `grace` seconds, then stop the worker."""
        for job in list(self._jobs.values()):
            if job.state == QUEUED:
                self._finish(job, FAILED, "server shutting down before the job started")
        if self._worker is None or self._queue is None:
            return
        self._queue.put_nowait(None)  # the worker stops after the running job
        done, _ = await asyncio.wait({self._worker}, timeout=grace or 0)
        if not done:
            job = self._running
            if job is not None:
                # Before the job is reported: its thread then writes nothing (or already has).
                self._cancel_outcome = await asyncio.to_thread(job.token.cancel, CANCEL_WAIT_S)
            self._worker.cancel()  # the job is reported; a cancelled thread stops soon
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._worker = None
