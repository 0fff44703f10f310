"""InferenceService (grpc.aio): classify images with a plan. Thin wiring over mllgraph.reuse.

* Classify: the plan is a stored plan id (read from Neo4j with `select.get_plan`) or an inline
  Plan carrying `combination_json`; images are PNG/JPEG bytes or raw arrays. Every request goes
  through one :class:`mllgraph.reuse.batcher.DynamicBatcher` (one model pass per batch on the
  device from ``settings.torch_device()``).
* ClassifyStream: one response per request, in order; a request may leave the plan unset to
  reuse the previous one.
* ``allow_none``: a prediction whose "none of these" score (`mllgraph.combine.none_of_these`,
  computed for every image of a calibrated plan) is above the plan's threshold answers
  "none of these" (class_index -1); a plan without a calibration: FAILED_PRECONDITION.
* Limits (Settings): ``infer_max_images`` per request and ``infer_max_image_pixels`` per image
  (RESOURCE_EXHAUSTED beyond); a request's images together may hold at most
  ``REQUEST_PIXEL_FACTOR`` times the per-image limit (RESOURCE_EXHAUSTED).
* Admission control (`mllgraph.reuse.admission.PixelBudget`, one per servicer, i.e. per
  service process): the decoded pixels of all requests in progress together stay within
  ``infer_max_inflight_pixels``. A request reserves its pixels from the image headers before
  decoding anything and releases them once its predictions are built; one that does not fit
  waits (first come, first served) until its deadline (DEADLINE_EXCEEDED), one that alone
  needs more than the budget is RESOURCE_EXHAUSTED at once.
* Deadlines: the batcher gets the RPC deadline (the client's, else the server's default:
  `services.limits.time_remaining`) less a safety margin
  (``min(DEADLINE_MARGIN_S, 20 % of the time left)``), so a request that waits too long in
  the queue is dropped with the server's own DEADLINE_EXCEEDED before the client gives up.
* Health: NOT_SERVING until models can be served: Neo4j answers (checked every
  ``health_interval_s``), or a bundle (``--bundle``) holds a plan and its models.
* Neo4j is used lazily: a server given a bundle (`python -m mllgraph.eval.bundle
  export-plan`) serves inline plans and the bundle's plan with no neo4j driver installed.
* Shutdown (SIGTERM/SIGINT): NOT_SERVING, in-flight RPCs get ``grace`` seconds, then the
  batcher finishes what is queued.

Run: ``python -m services.inference [--port N] [--bundle DIR] [--vlm-arch A --vlm-checkpoint P]``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from mllgraph.combine.none_of_these import NONE_CLASS_INDEX, NONE_CLASS_NAME
from mllgraph.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from mllgraph.plan import document as plan_doc
from mllgraph.reuse import admission, classifier, images, outputs
from mllgraph.reuse import batcher as batching
from mllgraph.reuse import bundle as bundles
from mllgraph.reuse import cache as model_cache
from mllgraph.reuse import vlm as vlm_patch
from mllgraph.settings import Settings
from mllgraph.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from mllgraph.wire import inline_plan_from_proto
from services import limits, telemetry
from services.common import (
    RunningServer,
    full_service_name,
    graph_thread,
    rpc,
    run_server,
    run_service_main,
    start_service,
    watch_health,
)

log = logging.getLogger("mllgraph.services.inference")

SERVICE_NAME = full_service_name(inference_pb2, "InferenceService")
DEFAULT_TOP_K = 5
REQUEST_PIXEL_FACTOR = 4
DEADLINE_MARGIN_S = 0.2
CLASSIFIER_CACHE = 64


# -- the images' keys in the kept outputs ------------------------------------------------


def _digests(images: list[np.ndarray], scope: str | None) -> list[bytes] | None:
    """The images' keys in the kept outputs under `scope` (None: none kept)."""
    return None if scope is None else [outputs.image_digest(im, scope) for im in images]


# -- where plans and model records come from -------------------------------------------------


class PlanSource:
    """Stored plans and model records: a bundle first, then Neo4j (connected lazily)."""

    def __init__(
        self, settings: Settings, *, bundle: bundles.Bundle | None = None, use_neo4j: bool = True
    ) -> None:
        self.settings = settings
        self.bundle = bundle
        self.use_neo4j = use_neo4j
        self._graph: Any = None
        self._lock = threading.Lock()
        self._plans: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def graph(self) -> Any:
        if not self.use_neo4j:
            raise FailedPrecondition(
                "this inference server runs without Neo4j: use an inline plan or the bundle's"
            )
        with self._lock:
            if self._graph is None:
                try:
                    from mllgraph.graph.db import Graph
                except ImportError as e:
                    raise FailedPrecondition(
                        f"the neo4j driver is not installed ({e}): only inline plans whose "
                        "models are in the bundle can be served"
                    ) from e
                self._graph = Graph(self.settings)
            return self._graph

    def get_plan(self, plan_id: str) -> dict[str, Any]:
        if self.bundle is not None and self.bundle.plan.get("plan_id") == plan_id:
            return self.bundle.plan
        with self._lock:
            if plan_id in self._plans:  # plan ids name immutable content
                self._plans.move_to_end(plan_id)
                return self._plans[plan_id]
        if not self.use_neo4j:
            raise NotFound(f"plan {plan_id!r} is not in this server's bundle")
        from mllgraph.select import run as select

        doc = select.get_plan(self.graph(), plan_id)
        with self._lock:
            self._plans[plan_id] = doc
            while len(self._plans) > 256:
                self._plans.popitem(last=False)
        return doc

    def record(self, model_id: str) -> dict[str, Any]:
        if self.bundle is not None and model_id in self.bundle.records:
            return dict(self.bundle.records[model_id])
        if not self.use_neo4j:
            raise NotFound(f"model {model_id!r} is not in this server's bundle")
        return model_cache.lookup_record(self.graph(), model_id)

    def ready(self) -> bool:
        """Can models be served? Neo4j answers, or a bundle holds a plan and its models."""
        if self.use_neo4j:
            try:
                self.graph().verify()
                return True
            except Exception as e:  # noqa: BLE001 - reported as NOT_SERVING
                log.warning("neo4j_not_ready bundle=%s reason=%r", bool(self.bundle), str(e)[:200])
        return self.bundle is not None

    def close(self) -> None:
        with self._lock:
            if self._graph is not None:
                self._graph.close()
                self._graph = None


# -- the servicer ----------------------------------------------------------------------------


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(
        self,
        settings: Settings,
        source: PlanSource,
        *,
        cache: model_cache.ModelCache | None = None,
        batcher: batching.DynamicBatcher | None = None,
        vlm: vlm_patch.VlmPatch | None = None,
        budget: admission.PixelBudget | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.budget = (
            budget
            if budget is not None
            else admission.PixelBudget(settings.infer_max_inflight_pixels)
        )
        self.cache = cache if cache is not None else model_cache.ModelCache(settings)
        self.batcher = (
            batcher if batcher is not None else batching.DynamicBatcher.from_settings(settings)
        )
        self.vlm = vlm
        self._classifiers: OrderedDict[str, classifier.PlanClassifier] = OrderedDict()
        self._lock = threading.Lock()

    # -- plans --

    def _classifier_for(self, doc: dict[str, Any], key: str) -> classifier.PlanClassifier:
        with self._lock:
            clf = self._classifiers.get(key)
            if clf is not None:
                self._classifiers.move_to_end(key)
                return clf
        clf = classifier.PlanClassifier(
            doc, self.source.record, self.settings, self.cache, self.vlm
        )
        with self._lock:
            self._classifiers[key] = clf
            while len(self._classifiers) > CLASSIFIER_CACHE:
                self._classifiers.popitem(last=False)
        return clf

    def _cached(self, request: inference_pb2.ClassifyRequest) -> classifier.PlanClassifier | None:
        """The classifier of a plan id already loaded (no thread, no graph), else None."""
        if request.WhichOneof("plan") != "plan_id":
            return None
        plan_id = request.plan_id.strip()
        with self._lock:
            clf = self._classifiers.get(plan_id)
            if clf is not None:
                self._classifiers.move_to_end(plan_id)
            return clf

    async def _classifier(
        self, request: inference_pb2.ClassifyRequest
    ) -> classifier.PlanClassifier | None:
        """A cached plan is answered on the event loop: it needs neither the graph nor a
        worker thread, so it classifies while Neo4j is slow or frozen and the threads are
        busy waiting on it."""
        clf = self._cached(request)
        return clf if clf is not None else await graph_thread(self._resolve, request)

    def _resolve(self, request: inference_pb2.ClassifyRequest) -> classifier.PlanClassifier | None:
        which = request.WhichOneof("plan")
        if which == "plan_id":
            plan_id = request.plan_id.strip()
            if not plan_id:
                raise InvalidArgument("plan_id is empty")
            with self._lock:
                if plan_id in self._classifiers:
                    self._classifiers.move_to_end(plan_id)
                    return self._classifiers[plan_id]
            return self._classifier_for(self.source.get_plan(plan_id), plan_id)
        if which == "inline_plan":
            doc = inline_plan_from_proto(request.inline_plan)
            return self._classifier_for(doc, plan_doc.plan_key(doc))
        return None

    def clear_caches(self) -> None:
        """Forget loaded models and classifiers (plans and weights are read again)."""
        with self._lock:
            self._classifiers.clear()
        self.cache.clear()

    # -- images --

    def _pixels(self, request: inference_pb2.ClassifyRequest) -> int:
        """Pixels the request's images decode to, from their headers (nothing decoded);
        unreadable ones count 0 (decoding refuses them)."""
        if len(request.images) > self.settings.infer_max_images:
            return 0  # _images refuses the request
        total = 0
        for im in request.images:
            kind = im.WhichOneof("data")
            if kind == "encoded":
                h, w = images.encoded_size(im.encoded)
            elif kind == "raw" and len(im.raw.shape) >= 2:
                h, w = max(0, int(im.raw.shape[0])), max(0, int(im.raw.shape[1]))
            else:
                h = w = 0
            total += h * w
        return total

    def _images(self, request: inference_pb2.ClassifyRequest) -> list[np.ndarray]:
        n = len(request.images)
        if n == 0:
            raise InvalidArgument("images: a request needs at least one image")
        if n > self.settings.infer_max_images:
            raise ResourceExhausted(
                f"images: {n} images is over this server's limit of "
                f"{self.settings.infer_max_images} per request; split the request"
            )
        max_px = self.settings.infer_max_image_pixels
        out = []
        total = 0
        for i, im in enumerate(request.images):
            where = f"images[{i}]" + (f" ({im.id})" if im.id else "")
            kind = im.WhichOneof("data")
            if kind == "encoded":
                arr = images.decode_image(im.encoded, max_pixels=max_px, where=where)
            elif kind == "raw":
                arr = images.raw_image(
                    im.raw.data, list(im.raw.shape), im.raw.dtype, max_pixels=max_px, where=where
                )
            else:
                raise InvalidArgument(f"{where}: no pixels: set encoded or raw")
            total += arr.shape[0] * arr.shape[1]
            if total > REQUEST_PIXEL_FACTOR * max_px:
                raise ResourceExhausted(
                    f"images: the request's images hold over {REQUEST_PIXEL_FACTOR * max_px:,} "
                    "pixels together; split the request"
                )
            out.append(arr)
        return out

    # -- classification --

    async def _classify(
        self,
        request: inference_pb2.ClassifyRequest,
        clf: classifier.PlanClassifier,
        context: grpc.aio.ServicerContext,
    ) -> inference_pb2.ClassifyResponse:
        t0 = time.perf_counter()
        if request.top_k < 0:
            raise InvalidArgument(f"top_k must be >= 0, got {request.top_k}")
        top_k = min(request.top_k or DEFAULT_TOP_K, len(clf.class_names))
        if request.allow_none and clf.none_threshold is None:
            raise FailedPrecondition(
                f'allow_none: plan {clf.plan.plan_id or "(inline)"} has no "none of these" '
                "calibration (made before it existed, or its hub has no probe images of "
                "concepts outside the task: see the plan's none_of_these): select the task "
                "again, or leave allow_none unset"
            )
        deadline = None
        remaining = limits.time_remaining(context)
        if remaining is not None:
            deadline = time.monotonic() + remaining - min(DEADLINE_MARGIN_S, 0.2 * remaining)
        encoded = any(im.WhichOneof("data") == "encoded" for im in request.images)
        if encoded:
            pixels = await asyncio.to_thread(self._pixels, request)
        else:
            pixels = self._pixels(request)
        n = len(request.images)
        async with self.budget.reserve(pixels, deadline=deadline, what=f"{n} images") as held:
            # The pixels stay reserved while a decode thread or a batch still holds the
            # images, even when this RPC is cancelled before they end.
            # The images' keys in the outputs the service keeps, scoped by the caller: no
            # caller learns which images another sent (mllgraph.reuse.outputs).
            scope = limits.caller_of(context) if self.cache.outputs.enabled else None
            if encoded:
                decoding = concurrent.futures.Future()

                def decode() -> tuple[list[np.ndarray], list[bytes] | None]:
                    try:  # hashed here too: a large photo takes milliseconds
                        decoded = self._images(request)
                        return decoded, _digests(decoded, scope)
                    finally:
                        decoding.set_result(None)

                held.track(decoding)
                images, digests = await asyncio.to_thread(decode)
            else:
                images = self._images(request)
                digests = _digests(images, scope)
            fut = self.batcher.submit(
                clf.key, clf.run_batch, images, deadline=deadline, digests=digests
            )
            held.track(fut)
            del images
            run: classifier.BatchRun = await asyncio.wrap_future(fut)
        return self._response(request, clf, run, top_k, t0)

    def _response(
        self,
        request: inference_pb2.ClassifyRequest,
        clf: classifier.PlanClassifier,
        run: classifier.BatchRun,
        top_k: int,
        t0: float,
    ) -> inference_pb2.ClassifyResponse:
        response = inference_pb2.ClassifyResponse(
            plan_id=clf.plan.plan_id,
            uncovered_classes=clf.uncovered_names,
            patch="" if clf.fallback_rule == "none" else clf.fallback_rule,
        )
        threshold = clf.none_threshold if request.allow_none else None
        if threshold is not None:
            response.none_threshold = threshold
        for i, (im, res) in enumerate(zip(request.images, run.results, strict=True)):
            order = np.argsort(-res.probabilities, kind="stable")[:top_k]
            prediction = inference_pb2.Prediction(
                image_id=im.id or str(i),
                class_index=res.class_index,
                class_name=res.class_name,
                probability=res.probability,
                class_probabilities=res.probabilities.astype(np.float32).tolist(),
                contributing_heads=[_head_ref(h) for h in res.contributing_heads],
                used_fallback=res.used_fallback,
                out_of_domain_models=list(res.out_of_domain),
                top=[
                    inference_pb2.ClassScore(
                        class_index=int(c),
                        class_name=clf.class_names[int(c)],
                        probability=float(res.probabilities[c]),
                    )
                    for c in order
                ],
            )
            if threshold is not None and res.none_score is not None:
                prediction.none_score = res.none_score
                if res.none_score > threshold:
                    prediction.none_of_these = True
                    prediction.class_index = NONE_CLASS_INDEX
                    prediction.class_name = NONE_CLASS_NAME
                    prediction.probability = res.none_score
                    del prediction.contributing_heads[:]
            response.predictions.append(prediction)
        for mid, t in run.timings.items():
            response.model_timings.append(
                inference_pb2.ModelTiming(
                    model_id=mid,
                    forward_ms=t.forward_ms,
                    preprocess_ms=t.preprocess_ms,
                    cached_images=t.cached,
                )
            )
        response.total_ms = (time.perf_counter() - t0) * 1000
        return response

    @rpc
    async def Classify(
        self, request: inference_pb2.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ClassifyResponse:
        clf = await self._classifier(request)
        if clf is None:
            raise InvalidArgument("plan: set plan_id or inline_plan")
        return await self._classify(request, clf, context)

    @rpc
    async def ClassifyStream(
        self, request_iterator: AsyncIterator[inference_pb2.ClassifyRequest], context: Any
    ) -> AsyncIterator[inference_pb2.ClassifyResponse]:
        previous: classifier.PlanClassifier | None = None
        index = 0
        async for request in request_iterator:
            clf = await self._classifier(request)
            if clf is None:
                if previous is None:
                    raise InvalidArgument(
                        f"request {index}: the first request of a stream must name a plan"
                    )
                clf = previous
            previous = clf
            yield await self._classify(request, clf, context)
            index += 1


def _head_ref(h: plan_doc.HeadInfo) -> common_pb2.HeadRef:
    return common_pb2.HeadRef(
        model_id=h.model_id,
        model_version=h.model_version,
        head_index=h.head_index,
        head_label=h.head_label,
        label_score=h.label_score,
        label_wnid=h.label_wnid,
    )


# -- running ---------------------------------------------------------------------------------


async def start_server(
    settings: Settings,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    bundle: bundles.Bundle | None = None,
    use_neo4j: bool = True,
    vlm: vlm_patch.VlmPatch | None = None,
    cache: model_cache.ModelCache | None = None,
    batcher: batching.DynamicBatcher | None = None,
    health_interval_s: float = 5.0,
) -> RunningServer:
    """Build and start the server (health flips to SERVING once models can be served). Stop
    it with `await running.stop(grace)`: NOT_SERVING, in-flight RPCs get `grace` s (default
    5), then the batcher drains."""
    source = PlanSource(settings, bundle=bundle, use_neo4j=use_neo4j)
    if cache is None and bundle is not None:  # a bundle carries every weights file itself
        cache = model_cache.ModelCache(settings, loader=model_cache.load_from_blob)
    servicer = InferenceServicer(settings, source, cache=cache, batcher=batcher, vlm=vlm)

    async def close_servicer(_grace: float | None) -> None:
        await asyncio.to_thread(servicer.batcher.close)
        servicer.source.close()

    running = await start_service(
        servicer,
        inference_pb2_grpc.add_InferenceServiceServicer_to_server,
        SERVICE_NAME,
        settings,
        settings.inference_port if port is None else port,
        host=host,
        close_servicer=close_servicer,
        grace=5.0,
        # Cancelled at close: a check may wait long on a Neo4j that does not answer.
        cancel_tasks=True,
        collectors=[
            telemetry.reuse_collector(
                lambda: servicer.cache, lambda: servicer.batcher, lambda: servicer.budget
            )
        ],
    )

    def models_servable() -> str | None:
        return None if source.ready() else "no models can be served"

    def report(ready: bool, _why: str) -> None:
        log.info("health serving=%s", ready)

    running.run_in_background(
        watch_health(
            running.health,
            [SERVICE_NAME],
            models_servable,
            running.stop_event,
            interval=health_interval_s,
            retry_interval=health_interval_s,
            report=report,
        )
    )
    log.info(
        "inference_started port=%d device=%s precision=%s bundle=%s neo4j=%s vlm=%s",
        running.port,
        servicer.cache.device,
        next(k for k, v in model_cache.DTYPES.items() if v == servicer.cache.dtype),
        bundle.root if bundle else None,
        use_neo4j,
        vlm.name if vlm else None,
    )
    return running


async def start(settings: Settings, port: int = 0, **kwargs: Any) -> RunningServer:
    """Start on `port` (0: a free one); the same entry point the other services have."""
    return await start_server(settings, port=port, **kwargs)


async def serve(
    settings: Settings,
    *,
    port: int | None = None,
    bundle: bundles.Bundle | None = None,
    use_neo4j: bool = True,
    vlm: vlm_patch.VlmPatch | None = None,
    grace: float = 10.0,
    stop: asyncio.Event | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Serve until SIGTERM/SIGINT (or `stop`), then shut down gracefully."""
    running = await start_server(
        settings, port=port, host=host, bundle=bundle, use_neo4j=use_neo4j, vlm=vlm
    )
    await run_server(running, grace, stop=stop, close_grace=0)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    """The inference service's own command-line flags."""
    parser.add_argument("--bundle", type=Path, help="serve a plan bundle (export-plan)")
    parser.add_argument("--no-neo4j", action="store_true", help="bundle and inline plans only")
    parser.add_argument("--vlm-arch", help="open_clip architecture of the VLM patch")
    parser.add_argument("--vlm-checkpoint", help="local weights file or open_clip local dir")
    parser.add_argument("--vlm-pretrained", help="open_clip pretrained tag (needs internet)")
    parser.add_argument("--vlm-weight", type=float, default=vlm_patch.VLM_WEIGHT, help="λ")
    parser.add_argument("--grace", type=float, default=10.0)


def _serve_options(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """`serve`'s keyword arguments from the flags: the bundle and VLM are loaded here."""
    bundle = bundles.load_bundle(args.bundle) if args.bundle else None
    vlm = None
    device = settings.torch_device()
    if args.vlm_checkpoint:
        vlm = vlm_patch.VlmPatch.from_checkpoint(
            args.vlm_arch or "", args.vlm_checkpoint, device=device, weight=args.vlm_weight
        )
    elif args.vlm_pretrained:
        if not args.vlm_arch:
            raise InvalidArgument("--vlm-pretrained needs --vlm-arch")
        vlm = vlm_patch.VlmPatch.from_pretrained(
            args.vlm_arch, args.vlm_pretrained, device=device, weight=args.vlm_weight
        )
    return {"bundle": bundle, "use_neo4j": not args.no_neo4j, "vlm": vlm, "grace": args.grace}


def main(argv: list[str] | None = None) -> int:
    return run_service_main(
        "inference",
        serve,
        argv,
        port_help="default MLLGRAPH_INFERENCE_PORT",
        description=__doc__,
        add_arguments=_add_arguments,
        serve_options=_serve_options,
    )


if __name__ == "__main__":
    raise SystemExit(main())
