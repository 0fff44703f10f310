"""IngestionService (grpc.aio): register expert models, label their heads, browse and delete
the catalogue. Thin wiring over `mllgraph.hub.registry`, `mllgraph.label.run` and
`mllgraph.hub.probes`.

* Every blocking library call (the Neo4j driver, torch, the grounding resolver) runs in a
  worker thread, so the event loop keeps answering health checks: work that needs the graph
  on the graph-work threads (`services.common.graph_thread`), the rest (uploads, decoding)
  with `asyncio.to_thread`, so that a frozen database cannot take every thread.
* Domain errors become gRPC statuses in one place (`services.common.rpc`).
* Registrations are serialised within the process (one at a time), so two concurrent
  requests for the same id cannot both pass the existence check.
* Weights from callers (`mllgraph.hub.imports`): `UploadWeights` streams a file into
  ``<model store>/uploads/<sha256>`` (hashed on the fly, capped by ``max_upload_bytes``,
  RESOURCE_EXHAUSTED beyond, kept only complete; the uploads kept and arriving together
  within ``max_pending_upload_bytes``, one caller half of it: services/uploads.py);
  `RegisterModel` names it by ``weights_sha256`` (or a blob already stored) and consumes it.
  ``weights_path`` is read only inside ``import_dir`` (FAILED_PRECONDITION when none is
  configured). Either way the registry reads a private copy in a temporary folder of the
  model store, removed whatever happens.
* `AddProbes` streams probe images with their concept (the folder layout of `mllgraph probes
  add --folder`), decodes each as it arrives (pixel limit checked from the header; the pixels
  of all AddProbes decoding at once within ``probe_max_inflight_pixels``, a
  `mllgraph.reuse.admission.PixelBudget`: one that does not fit waits), and attaches them
  with `probe_folder.attach_groups`: the same report and stale marks as the CLI.
  Streamed, not a server path: any remote caller can send them, and the server reads nothing
  from its disk on a caller's behalf.
* Input specs and the shared enum vocabularies convert through `mllgraph.wire`.
* Class names are grounded with `mllgraph.ground.resolve.grounder(settings)`, built lazily on first
  use (about 15 s: WordNet, morphology, the text embedder) and shared afterwards; `serve`
  warms it up in the background.

Labelling jobs (the queue: services/label_jobs.py)
--------------------------------------------------
`LabelModel` validates synchronously (the model exists -> else NOT_FOUND; at least one probe
set exists -> else FAILED_PRECONDITION), then claims the model for a new job and returns it
QUEUED. One worker task runs the jobs one at a time, in submission order, each in a worker
thread (`labeller.label_model`).

One job per model, however many callers, across threads and processes: calls for one model
are decided one at a time in this process (a lock per model), and the decision is a claim in
the graph (`mllgraph.label.claims`: one conditional write under the model node's lock, with a
lease the running job renews), so replicated services never both label a model. A call
returns the model's queued or running job, or the job that finished after the call arrived
(its request is served: e.g. a call that raced a job just finishing); a model labelled
before the call is FAILED_PRECONDITION unless `options.relabel`; a model another process is
labelling is ALREADY_EXISTS, naming that job.
`GetLabelJob` reports QUEUED -> RUNNING -> DONE | FAILED; `progress` follows the labeller's
progress callback (probe images through the
model, scaled to 0..0.95; measuring and writing the labels is the rest) and is 1 at DONE;
`message` is a summary at DONE and the error at FAILED; `heads_done` jumps from 0 to
`heads_total` at DONE (all heads are measured together).

Jobs live only in this process's memory: a restart forgets them (labels a finished job wrote
stay in the graph; a queued or running job is lost and must be resubmitted). The newest
`label_jobs.MAX_FINISHED_JOBS` finished jobs are kept for `GetLabelJob`; older ones answer
NOT_FOUND.
While a model has an active job, `DeleteModel` refuses it (FAILED_PRECONDITION); while a
delete runs, `LabelModel` for that model is refused (FAILED_PRECONDITION). DeleteModel and
RegisterModel run one at a time (they share weights files; see `registry.store_lock` for other
processes). On shutdown, queued jobs fail ("server shutting down") and a running job gets the
grace period to finish; after it, the job's cancel token (`label_work.CancelToken`) is cancelled
*before* the job is reported FAILED, so its thread writes nothing afterwards (it stops at its
next batch); a write already in flight is given `label_jobs.CANCEL_WAIT_S`, and the job reports what
happened (DONE when the write finished first).

Run it with ``python -m services.ingestion [--port N] [--host H]`` (port default
MLLGRAPH_INGESTION_PORT, 50051). Health reports SERVING only once Neo4j answers, and
NOT_SERVING again while it does not.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import io
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from mllgraph.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    MllgraphError,
    NotFound,
    ResourceExhausted,
)
from mllgraph.graph.db import Graph
from mllgraph.graph.wordnet import concept_display_name
from mllgraph.hub import imports, probe_folder, probes, registry
from mllgraph.label import claims
from mllgraph.label import run as labeller
from mllgraph.label import work as label_work
from mllgraph.reuse import admission
from mllgraph.settings import Settings
from mllgraph.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc
from mllgraph.wire import JOB_STATE_NAMES, f32, spec_from_proto, spec_to_proto, timestamp
from services import limits, telemetry, uploads
from services.common import (
    RunningServer,
    full_service_name,
    graph_thread,
    neo4j_health_report,
    rpc,
    run_server,
    run_service_main,
    start_service,
    watch_health,
)
from services.errors import redact
from services.label_jobs import LabelJob, LabelJobQueue

log = logging.getLogger("mllgraph.services.ingestion")

SERVICE_NAME = full_service_name(ingestion_pb2, "IngestionService")
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000
TOP_LABELS_PER_HEAD = 5
GRACE_S = 10.0
HEALTH_INTERVAL_S = 10.0  # Neo4j check once serving; every second before that
MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}@[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")

_SOURCE_TO_PROTO = {
    "file": ingestion_pb2.MODEL_SOURCE_WEIGHTS_PATH,
    "upload": ingestion_pb2.MODEL_SOURCE_WEIGHTS_BYTES,
    "builtin": ingestion_pb2.MODEL_SOURCE_BUILTIN,
    "stream": ingestion_pb2.MODEL_SOURCE_WEIGHTS_UPLOAD,
}
MAX_PROBE_CONCEPT_CHARS, MAX_PROBE_NAME_CHARS = 200, 500

# --- conversions ----------------------------------------------------------------------------


def _required(value: str, name: str) -> str:
    value = value.strip()
    if not value:
        raise InvalidArgument(f"{name}: required")
    return value


def head_to_proto(row: dict[str, Any]) -> ingestion_pb2.Head:
    return ingestion_pb2.Head(
        index=int(row["index"]),
        label=row["label"] or "",
        declared_wnid=row.get("declared_wnid") or "",
        top_labels=[
            ingestion_pb2.HeadConcept(
                concept=common_pb2.ConceptRef(
                    wnid=lab["wnid"], name=concept_display_name(lab["name"])
                ),
                score=float(lab["score"]),
            )
            for lab in row.get("labels") or []
        ],
    )


def model_to_proto(
    record: dict[str, Any], heads: list[dict[str, Any]] | None = None
) -> ingestion_pb2.Model:
    source = record.get("source", "")
    model = ingestion_pb2.Model(
        id=record["id"],
        name=record["name"],
        version=record["version"],
        arch=record["arch"],
        source=_SOURCE_TO_PROTO.get(source, ingestion_pb2.MODEL_SOURCE_UNSPECIFIED),
        source_ref="" if source in ("upload", "stream") else record.get("source_ref", ""),
        sha256=record["sha256"],
        num_classes=int(record["num_classes"]),
        input_spec=spec_to_proto(record["input_spec"]),
        labelled=bool(record.get("labelled_at")),
        metadata={str(k): str(v) for k, v in (record.get("metadata") or {}).items()},
        heads=[head_to_proto(h) for h in heads or []],
    )
    if record.get("top1_accuracy") is not None:
        model.top1_accuracy = float(record["top1_accuracy"])
    created = timestamp(record.get("created_at"))
    if created is not None:
        model.created_at.CopyFrom(created)
    labelled = timestamp(record.get("labelled_at"))
    if labelled is not None:
        model.labelled_at.CopyFrom(labelled)
    return model


def label_options_from_proto(msg: ingestion_pb2.LabelOptions) -> label_work.LabelOptions:
    """Zero fields take label_work.LabelOptions' defaults; out-of-range ones are refused."""
    default = label_work.LabelOptions()
    if msg.probe_set:
        raise InvalidArgument(
            f"options.probe_set {msg.probe_set!r}: choosing probe sets is not supported yet; "
            "leave it empty to label with every probe set"
        )
    checks = (
        ("samples_per_concept", msg.samples_per_concept, 100_000),
        ("top_k", msg.top_k, 1000),
        ("batch_size", msg.batch_size, 4096),
    )
    for name, value, most in checks:
        if not 0 <= value <= most:
            raise InvalidArgument(f"options.{name} must be in 0..{most} (0 = default), got {value}")
    if not (math.isfinite(msg.min_score) and 0.0 <= msg.min_score <= 1.0):
        raise InvalidArgument(f"options.min_score must be in [0, 1], got {msg.min_score}")
    return label_work.LabelOptions(
        samples_per_concept=msg.samples_per_concept or default.samples_per_concept,
        batch_size=msg.batch_size or default.batch_size,
        top_k=msg.top_k or default.top_k,
        min_score=f32(msg.min_score) if msg.min_score else default.min_score,
    )


def _named_by_content(path: Path) -> Path:
    """`path` renamed with the suffix its content asks for (the loader picks by suffix)."""
    suffix = ".safetensors" if registry.is_safetensors(path) else ".pt"
    return path.rename(path.with_name(path.stem + suffix))


def _header_pixels(encoded: bytes) -> int:
    """Pixels an image decodes to, from its header (nothing decoded); 0 when unreadable
    (decoding then says why)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(encoded)) as im:
            return int(im.size[0]) * int(im.size[1])
    except Exception:  # noqa: BLE001 - any failure is load_image's to report
        return 0


def _stored_blob(settings: Settings, sha: str) -> Path:
    blob = registry.stored_blob(settings, sha)
    if blob is not None:
        return blob
    imports.upload_path(settings, sha)  # raises NotFound with the advice
    raise AssertionError("unreachable")  # pragma: no cover


# --- the servicer ---------------------------------------------------------------------------


class IngestionServicer(ingestion_pb2_grpc.IngestionServiceServicer):
    def __init__(
        self,
        settings: Settings,
        *,
        graph: Graph | None = None,
        grounder_factory: Callable[[Settings], Callable[[str], str]] | None = None,
    ) -> None:
        self.settings = settings
        self.graph = graph if graph is not None else Graph(settings)
        self._owns_graph = graph is None
        self._grounder_factory = grounder_factory
        self._grounder: Callable[[str], str] | None = None
        self._grounder_lock = threading.Lock()
        self._delete_lock = asyncio.Lock()
        self.decode_budget = admission.PixelBudget(settings.probe_max_inflight_pixels)
        self.uploads = uploads.UploadQuota(settings)
        self.jobs = LabelJobQueue(self._run_label_job)
        # Per model: LabelModel's decision. Weak: a lock lives only while calls hold it, so
        # calls naming many (or bogus) models leave nothing behind.
        self._label_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    # -- helpers ---------------------------------------------------------------------------

    def grounder(self) -> Callable[[str], str]:
        """The class-name grounder, built once (blocking: call it from a thread)."""
        with self._grounder_lock:
            if self._grounder is None:
                t0 = time.monotonic()
                if self._grounder_factory is None:
                    from mllgraph.ground import resolve

                    self._grounder = resolve.grounder(self.settings)
                else:
                    self._grounder = self._grounder_factory(self.settings)
                log.info("grounder_ready s=%.1f", time.monotonic() - t0)
            return self._grounder

    def _ground(self, name: str) -> str:
        return self.grounder()(name)

    async def _renew_claim(self, job: LabelJob) -> None:
        """Keep the job's claim on its model alive while it runs (the lease ends it otherwise)."""
        while True:
            await asyncio.sleep(claims.RENEW_S)
            try:
                await asyncio.to_thread(claims.renew, self.graph, job.model_id, job.job_id)
            except MllgraphError as e:  # the graph is down: the lease still runs for a while
                log.warning("label_claim_renew_failed job=%s error=%r", job.job_id, str(e))

    def _release_claim(self, job: LabelJob) -> None:
        try:
            claims.release(self.graph, job.model_id, job.job_id)
        except MllgraphError as e:  # the lease ends the claim anyway
            log.warning("label_claim_release_failed job=%s error=%r", job.job_id, str(e))

    async def close(self, grace: float | None = None) -> None:
        queued = self.jobs.queued()  # they never run: give their models back now
        await self.jobs.close(grace)
        for job in queued:
            await asyncio.to_thread(self._release_claim, job)
        if self._owns_graph:
            await asyncio.to_thread(self.graph.close)
        # Jobs run as Ray tasks with MLLGRAPH_EXECUTOR=ray: shut down the Ray they started.
        executor = sys.modules.get("mllgraph.hub.executor")  # a no-op unless Ray was started here
        if executor is not None:
            await asyncio.to_thread(executor.shutdown)

    def _register(self, reg: registry.Registration) -> registry.RegisteredModel:
        ground = self._ground if reg.class_names else None
        return registry.register_model(self.graph, self.settings, reg, ground)

    def _model_with_heads(self, mid: str, include_heads: bool) -> ingestion_pb2.Model:
        record = registry.get_model(self.graph, mid)
        heads = registry.heads(self.graph, mid, TOP_LABELS_PER_HEAD) if include_heads else None
        return model_to_proto(record, heads)

    async def _run_label_job(self, job: LabelJob) -> str:
        def progress(done: int, total: int) -> None:
            job.progress = 0.95 * done / total if total else 0.0

        renewing = asyncio.create_task(self._renew_claim(job), name=f"claim-{job.job_id}")
        try:
            r = await asyncio.to_thread(
                labeller.label_model,
                self.graph,
                self.settings,
                job.model_id,
                job.options,
                progress=progress,
                cancel=job.token,
            )
        finally:
            renewing.cancel()
            await asyncio.to_thread(self._release_claim, job)
        return (
            f"labelled {job.heads_total} heads of {r.model_id}: {r.labels} labels and "
            f"{r.group_labels} group labels from {r.images} probe images of {r.concepts} "
            f"concepts in {r.seconds:.1f} s (temperature {r.temperature:.3f}); catalogue "
            f"version {r.catalogue_version}"
        )

    # -- RPCs ------------------------------------------------------------------------------

    def _register_from(
        self, reg: registry.Registration, source: str | None, ref: str
    ) -> registry.RegisteredModel:
        """Register `reg`, first turning a caller's weights_path (confined to the import folder)
        or weights_sha256 (an upload) into a private copy in a temporary folder of the model
        store; that folder is removed whatever happens. A consumed upload is removed."""
        if source not in ("weights_path", "weights_sha256"):
            return self._register(reg)
        self.settings.upload_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".register-", dir=self.settings.upload_dir) as tmp:
            if source == "weights_path":
                with imports.copy_import(self.settings, ref, Path(tmp)) as copy:
                    path = _named_by_content(copy)
                    origin = ("file", imports.relative_ref(self.settings, ref))
                    reg = dataclasses.replace(reg, weights_path=path, origin=origin)
                    return self._register(reg)
            sha = imports.check_sha256(ref)
            upload: Path | None
            try:
                upload = imports.upload_path(self.settings, sha)
                stored = upload
            except NotFound:  # weights already in the store (another model's) will do
                upload, stored = None, _stored_blob(self.settings, sha)
            local = Path(tmp) / "weights"
            try:
                os.link(stored, local)
            except OSError:
                shutil.copyfile(stored, local)
            path = _named_by_content(local)
            reg = dataclasses.replace(reg, weights_path=path, origin=("stream", sha))
            result = self._register(reg)
            if upload is not None:
                upload.unlink(missing_ok=True)  # consumed: the blob store has it now
            return result

    @rpc
    async def RegisterModel(  # noqa: N802 - gRPC method name
        self, request: ingestion_pb2.RegisterModelRequest, context: grpc.aio.ServicerContext
    ) -> ingestion_pb2.Model:
        source = request.WhichOneof("source")
        builtin = request.builtin if source == "builtin" else None
        limit = self.settings.max_upload_bytes
        if source == "weights_bytes" and len(request.weights_bytes) > limit:
            raise ResourceExhausted(
                f"weights_bytes: {len(request.weights_bytes):,} bytes is over this server's "
                f"upload limit of {limit:,} bytes"
            )
        spec = None
        if request.HasField("input_spec"):
            from mllgraph.hub import loading

            lite = loading.EFFICIENTNET_LITE.get(builtin or "")
            base = lite.input_spec if lite else None
            spec = spec_from_proto(request.input_spec, request.arch or builtin or "", base)
        ref = ""
        if source == "weights_path":
            ref = request.weights_path
        elif source == "weights_sha256":
            ref = request.weights_sha256
        reg = registry.Registration(
            name=request.name,
            version=request.version or "1",
            arch=request.arch,
            builtin=builtin,
            weights_bytes=request.weights_bytes if source == "weights_bytes" else None,
            class_names=list(request.class_names) or None,
            wnids=list(request.wnids) or None,
            input_spec=spec,
            metadata=dict(request.metadata),
            top1_accuracy=request.top1_accuracy if request.HasField("top1_accuracy") else None,
        )
        if source in ("weights_path", "weights_sha256"):
            registry.validate_identity(dataclasses.replace(reg, weights_path=Path("-")))
        # No service-wide lock: the library serialises what registrations share (weights
        # files, under registry.store_lock), and a slow build must not hold up the others.
        result = await graph_thread(self._register_from, reg, source, ref)
        record = result.record
        log.info(
            "model_registered id=%s created=%s arch=%s heads=%d source=%s sha256=%s",
            record["id"],
            result.created,
            record["arch"],
            record["num_classes"],
            record["source"],
            record["sha256"][:12],
        )
        return model_to_proto(record)

    @rpc
    async def UploadWeights(  # noqa: N802
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> ingestion_pb2.WeightsRef:
        await asyncio.to_thread(imports.prune_uploads, self.settings)
        self.uploads.started(await asyncio.to_thread(uploads.scan, self.settings.upload_dir))
        quota = uploads.UploadTicket(self.uploads, limits.caller_of(context))
        upload: imports.Upload | None = None
        kept: tuple[str, int] | None = None
        try:
            async for chunk in request_iterator:
                if upload is None:
                    upload = imports.Upload(
                        self.settings, total_bytes=chunk.total_bytes, expected_sha256=chunk.sha256
                    )
                    quota.cover(chunk.total_bytes)
                elif chunk.total_bytes or chunk.sha256:
                    raise InvalidArgument("total_bytes and sha256 belong in the first chunk only")
                if chunk.data:
                    quota.cover(upload.size + len(chunk.data))
                    await asyncio.to_thread(upload.write, chunk.data)
            if upload is None:
                raise InvalidArgument("the upload is empty: no WeightsChunk arrived")
            sha, size = kept = await asyncio.to_thread(upload.finish)
        finally:
            if upload is not None:
                upload.abort()  # nothing to do after finish; else the temporary file goes
            quota.end(kept)
        log.info("weights_uploaded sha256=%s bytes=%d", sha[:12], size)
        return ingestion_pb2.WeightsRef(sha256=sha, size_bytes=size)

    async def _decode_probe(self, encoded: bytes, context: Any) -> np.ndarray:
        """One probe image, decoded within the service's pixel budget (`decode_budget`): its
        pixels, read from the header, are reserved first (waiting for room until the call's
        deadline) and held until the decoding thread ends."""
        max_pixels = self.settings.infer_max_image_pixels
        pixels = await asyncio.to_thread(_header_pixels, encoded)
        if pixels > max_pixels:
            pixels = 0  # load_image refuses it from the header: nothing is decoded
        left = limits.time_remaining(context)
        until = None if left is None else time.monotonic() + left
        async with self.decode_budget.reserve(pixels, deadline=until, what="a probe image") as held:
            decoding: concurrent.futures.Future[None] = concurrent.futures.Future()

            def decode() -> np.ndarray:
                try:
                    return probe_folder.load_image(encoded, max_pixels=max_pixels)
                finally:
                    decoding.set_result(None)

            held.track(decoding)
            return await asyncio.to_thread(decode)

    @rpc
    async def AddProbes(  # noqa: N802
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> ingestion_pb2.AddProbesReport:
        groups: dict[str, list[np.ndarray]] = {}
        refused: list[dict[str, str]] = []
        count, source = 0, ""
        limit = self.settings.max_probe_images
        async for msg in request_iterator:
            if count >= limit:
                raise ResourceExhausted(
                    f"more than {limit} probe images in one AddProbes call "
                    "(MLLGRAPH_MAX_PROBE_IMAGES); nothing was attached: split the images "
                    "into several calls"
                )
            if count == 0:
                source = msg.source[:MAX_PROBE_NAME_CHARS]
            concept = msg.concept.strip()
            name = (msg.name or f"{concept}/#{len(groups.get(concept, []))}")[:MAX_PROBE_NAME_CHARS]
            count += 1
            if not concept:
                refused.append({"path": name, "reason": "no concept: ProbeImage.concept is empty"})
                continue
            if len(concept) > MAX_PROBE_CONCEPT_CHARS:
                refused.append(
                    {"path": name, "reason": f"concept over {MAX_PROBE_CONCEPT_CHARS} characters"}
                )
                continue
            try:
                arr = await self._decode_probe(msg.encoded, context)
            except DeadlineExceeded:
                raise  # no room to decode before the call's deadline: the call fails
            except MllgraphError as e:
                refused.append({"path": name, "reason": str(e)})
                continue
            groups.setdefault(concept, []).append(arr)
        if count == 0:
            raise InvalidArgument("AddProbes: no ProbeImage arrived")
        report = await graph_thread(
            probe_folder.attach_groups,
            self.graph,
            self.settings,
            groups,
            ground=self._ground,
            source=source or "AddProbes",
            refused=refused,
        )
        log.info(
            "probes_added concepts=%d images=%d refused=%d stale=%d",
            len(report.attached),
            sum(a["images"] for a in report.attached),
            len(report.refused),
            len(report.stale_models),
        )
        return ingestion_pb2.AddProbesReport(
            attached=[
                ingestion_pb2.AttachedProbes(
                    folder=a["folder"],
                    concept=common_pb2.ConceptRef(
                        wnid=a["wnid"], name=concept_display_name(a["concept"])
                    ),
                    set_id=a["set_id"],
                    images=int(a["images"]),
                    created=bool(a["created"]),
                )
                for a in report.attached
            ],
            refused=[
                ingestion_pb2.RefusedProbe(path=r["path"], reason=redact(r["reason"]))
                for r in report.refused
            ],
            stale_models=report.stale_models,
        )

    @rpc
    async def LabelModel(  # noqa: N802
        self, request: ingestion_pb2.LabelModelRequest, context: grpc.aio.ServicerContext
    ) -> ingestion_pb2.LabelJob:
        arrived = time.time()
        mid = _required(request.model_id, "model_id")
        options = label_options_from_proto(request.options)
        # One decision at a time per model in this process; the graph claim settles it
        # across processes (replicated services): see "Labelling jobs" above.
        lock = self._label_locks.setdefault(mid, asyncio.Lock())
        async with lock:
            job = self.jobs.active_for(mid) or self.jobs.served_since(mid, arrived)
            if job is not None:
                return job.to_proto()
            record = await graph_thread(registry.get_model, self.graph, mid)
            if not await graph_thread(probes.probe_sets, self.graph):
                raise FailedPrecondition(
                    f"cannot label {mid}: no concept has probe images yet; add some with "
                    "`mllgraph probes add` (or `mllgraph hub build`)"
                )
            job_id = uuid.uuid4().hex
            claim = await graph_thread(
                claims.claim,
                self.graph,
                mid,
                job_id,
                relabel=request.options.relabel,
                since_ms=int(arrived * 1000),
            )
            if claim.granted:
                try:
                    return self.jobs.submit(
                        mid, options, int(record["num_classes"]), job_id
                    ).to_proto()
                except BaseException:
                    await graph_thread(claims.release, self.graph, mid, job_id)
                    raise
            if claim.busy:
                raise AlreadyExists(
                    f"model {mid} is being labelled by job {claim.holder} of another ingestion "
                    "service on this graph; watch the model's labelled_at"
                )
            if claim.fresh:
                raise FailedPrecondition(
                    f"model {mid} was labelled at {claim.labelled_at}, after this request "
                    "arrived (by another process): its labels are current"
                )
            raise FailedPrecondition(
                f"model {mid} is already labelled (at {claim.labelled_at}); set "
                "options.relabel to replace its labels"
            )

    @rpc
    async def GetLabelJob(  # noqa: N802
        self, request: ingestion_pb2.GetLabelJobRequest, context: grpc.aio.ServicerContext
    ) -> ingestion_pb2.LabelJob:
        return self.jobs.get(_required(request.job_id, "job_id")).to_proto()

    @rpc
    async def GetModel(  # noqa: N802
        self, request: ingestion_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> ingestion_pb2.Model:
        mid = _required(request.model_id, "model_id")
        return await graph_thread(self._model_with_heads, mid, request.include_heads)

    @rpc
    async def ListModels(  # noqa: N802
        self, request: ingestion_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> ingestion_pb2.ListModelsResponse:
        if request.page_size < 0:
            raise InvalidArgument(f"page_size must be >= 0, got {request.page_size}")
        page_size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        if request.page_token and not MODEL_ID_RE.match(request.page_token):
            raise InvalidArgument(
                f"page_token {request.page_token!r} is not one this server issued "
                "(use next_page_token of the previous response)"
            )
        score = request.min_label_score
        if not (math.isfinite(score) and 0.0 <= score <= 1.0):
            raise InvalidArgument(f"min_label_score must be in [0, 1], got {score}")

        def work() -> ingestion_pb2.ListModelsResponse:
            try:
                records = registry.list_models(
                    self.graph,
                    name=request.name or None,
                    arch=request.arch or None,
                    covers=request.covers_concept or None,
                    min_score=f32(score),
                    limit=page_size,
                    after=request.page_token or None,
                )
            except NotFound as e:  # only the covers_concept lookup raises it
                raise InvalidArgument(f"covers_concept: {e}") from e
            models = [
                model_to_proto(
                    r,
                    registry.heads(self.graph, r["id"], TOP_LABELS_PER_HEAD)
                    if request.include_heads
                    else None,
                )
                for r in records
            ]
            token = records[-1]["id"] if len(records) == page_size else ""
            return ingestion_pb2.ListModelsResponse(models=models, next_page_token=token)

        return await graph_thread(work)

    @rpc
    async def DeleteModel(  # noqa: N802
        self, request: ingestion_pb2.DeleteModelRequest, context: grpc.aio.ServicerContext
    ) -> ingestion_pb2.DeleteModelResponse:
        mid = _required(request.model_id, "model_id")
        # Closed to new label jobs for `mid` from the check below until the delete has
        # finished (the weights file is removed under registry.store_lock).
        async with self._delete_lock:
            active = self.jobs.active_for(mid)
            if active is not None:
                raise FailedPrecondition(
                    f"model {mid} has a labelling job {JOB_STATE_NAMES[active.state]} "
                    f"({active.job_id}); delete it once the job has finished"
                )
            self.jobs.closed.add(mid)
            try:
                out = await graph_thread(registry.delete_model, self.graph, self.settings, mid)
            except NotFound:
                if request.allow_missing:
                    return ingestion_pb2.DeleteModelResponse(model_id=mid)
                raise
            finally:
                self.jobs.closed.discard(mid)
        log.info(
            "model_deleted id=%s heads=%d label_edges=%d weights_removed=%s",
            mid,
            out["deleted_heads"],
            out["deleted_label_edges"],
            out["weights_removed"],
        )
        return ingestion_pb2.DeleteModelResponse(
            model_id=mid,
            deleted_heads=int(out["deleted_heads"]),
            deleted_label_edges=int(out["deleted_label_edges"]),
            weights_removed=bool(out["weights_removed"]),
        )


# --- running the server ---------------------------------------------------------------------


async def start(
    settings: Settings,
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    servicer: IngestionServicer | None = None,
    health_interval: float = HEALTH_INTERVAL_S,
) -> RunningServer:
    """Build and start the server on `port` (0: a free one); health turns SERVING once Neo4j
    answers. Stop it with `await running.close()` (grace GRACE_S; then the label jobs get it)."""
    servicer = servicer or IngestionServicer(settings)
    running = await start_service(
        servicer,
        ingestion_pb2_grpc.add_IngestionServiceServicer_to_server,
        SERVICE_NAME,
        settings,
        port,
        host=host,
        close_servicer=servicer.close,
        grace=GRACE_S,
        collectors=[telemetry.label_job_collector(servicer.jobs.state_counts)],
    )

    def neo4j_answers() -> None:
        servicer.graph.verify()

    running.run_in_background(
        watch_health(
            running.health,
            [SERVICE_NAME],
            neo4j_answers,
            running.stop_event,
            interval=health_interval,
            retry_interval=1.0,
            report=neo4j_health_report(log, servicer.graph.settings.bolt_uri),
        )
    )
    log.info("ingestion_started port=%d neo4j=%s", running.port, settings.bolt_uri)
    return running


async def serve(settings: Settings, *, port: int | None = None, host: str = "127.0.0.1") -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully."""
    running = await start(settings, settings.ingestion_port if port is None else port, host=host)
    servicer: IngestionServicer = running.servicer

    def warm_up() -> None:
        try:
            servicer.grounder()
        except Exception as e:  # noqa: BLE001 - registration will report it when used
            log.warning("grounder_warm_up_failed error=%r", str(e))

    # A daemon thread, not the loop's executor: shutdown need not wait for the warm-up.
    threading.Thread(target=warm_up, name="grounder-warm-up", daemon=True).start()
    await run_server(running, GRACE_S)


def main(argv: list[str] | None = None) -> int:
    return run_service_main(
        "ingestion", serve, argv, port_help="port (default MLLGRAPH_INGESTION_PORT, 50051)"
    )


if __name__ == "__main__":
    sys.exit(main())
