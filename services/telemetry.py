"""Request ids, per-RPC metrics and the Prometheus endpoint of a service.

* `RequestInterceptor` (a grpc.aio server interceptor, outermost): every call of the
  service's own RPCs gets a request id — the client's ``x-request-id`` metadata when it is
  1-64 characters of ``[A-Za-z0-9._:-]``, else a fresh one — which every log line of the call
  carries (``request_id=...``, see `services.common.KeyValueFormatter`) and which goes back
  in the trailing metadata. It counts calls by method and final status code and observes
  their latency. Health and reflection are passed through untouched.
* `ServiceMetrics`: the per-server Prometheus registry (one per server, so several services
  in one process keep their figures apart):

  ``mllgraph_rpc_requests_total{service,method,code}``  calls by final status
  ``mllgraph_rpc_errors_total{service,method,code}``    the non-OK ones
  ``mllgraph_rpc_latency_seconds{service,method}``      histogram
  ``mllgraph_rpc_in_flight{service,method}``            gauge

  plus whatever collectors the service adds (model cache, batcher, label jobs: see
  `CallbackCollector`).
* `start_metrics_http`: the ``/metrics`` endpoint on host:port (stopped with the server).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger("mllgraph.services")

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mllgraph_request_id", default=None
)
"""The id of the call being served (None outside calls); set by `RequestInterceptor`."""

CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("mllgraph_caller", default=None)
"""The token name of the caller (None without authentication); set by the auth interceptor."""


def _install_record_factory() -> None:
    """Stamp every LogRecord with the request id and caller of the call it was made in
    (``record.request_id``, ``record.caller``; None outside calls). Idempotent."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_mllgraph", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        record.caller = CALLER.get()
        return record

    factory._mllgraph = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


_install_record_factory()

REQUEST_ID_KEY = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
"""Services every caller may use, with or without a token; not counted or wrapped."""

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def split_method(method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` -> (``pkg.Service``, ``Method``)."""
    service, _, name = method.lstrip("/").partition("/")
    return service, name


def is_open(method: str) -> bool:
    """Whether `method` belongs to health checking or reflection."""
    return split_method(method)[0] in OPEN_SERVICES


def metadata_value(metadata: Iterable[Any] | None, key: str) -> str | None:
    """The first value of `key` in gRPC metadata (pairs or Metadatum), or None."""
    for item in metadata or ():
        k, v = item[0], item[1]
        if k == key:
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    return None


def request_id_from(metadata: Iterable[Any] | None) -> str:
    """The client's ``x-request-id`` when well formed, else a new id."""
    sent = metadata_value(metadata, REQUEST_ID_KEY)
    if sent is not None and _REQUEST_ID.match(sent):
        return sent
    return uuid.uuid4().hex[:16]


# --- wrapping method handlers ---------------------------------------------------------------

_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    enter: Callable[[Any], Any],
    leave: Callable[[Any, Any, BaseException | None], None],
) -> grpc.RpcMethodHandler:
    """`handler` with each behaviour bracketed: ``state = enter(context)`` before the call,
    ``leave(context, state, exc_or_None)`` after it (also on errors, aborts, cancellation).

    Async-generator behaviours stay async generators, coroutine ones (``context.write``
    style) stay coroutines, so grpc.aio serves them the same way."""
    replace: dict[str, Any] = {}
    for kind in _KINDS:
        inner = getattr(handler, kind)
        if inner is None:
            continue
        if inspect.isasyncgenfunction(inner):

            async def gen(request: Any, context: Any, _inner: Any = inner) -> Any:
                state = enter(context)
                try:
                    async for response in _inner(request, context):
                        yield response
                except BaseException as exc:
                    leave(context, state, exc)
                    raise
                leave(context, state, None)

            replace[kind] = gen
        else:

            async def coro(request: Any, context: Any, _inner: Any = inner) -> Any:
                state = enter(context)
                try:
                    result = await _inner(request, context)
                except BaseException as exc:
                    leave(context, state, exc)
                    raise
                leave(context, state, None)
                return result

            replace[kind] = coro
    return handler._replace(**replace)  # type: ignore[attr-defined]


def final_code(context: Any, exc: BaseException | None) -> str:
    """Name of the status a call ended with."""
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    try:
        code = context.code()
    except Exception:  # EXPERIMENTAL API: never fail a call over metrics
        code = None
    if isinstance(code, grpc.StatusCode):
        return code.name
    if code not in (None, 0):
        return str(code)
    return "OK" if exc is None else "UNKNOWN"


# --- metrics --------------------------------------------------------------------------------


class CallbackCollector(Collector):
    """A collector whose metrics come from `collect_fn` at scrape time (figures the library
    keeps itself, e.g. ModelCache.hits, so mllgraph.reuse needs no prometheus import)."""

    def __init__(self, collect_fn: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect_fn

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._collect()
        except Exception as e:  # noqa: BLE001 - a broken figure must not break the scrape
            log.warning("metrics_collect_failed error=%r", str(e))


class ServiceMetrics:
    """The metrics of one server, in its own registry."""

    def __init__(self, collectors: Iterable[Collector] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("service", "method")
        self.requests = Counter(
            "mllgraph_rpc_requests",
            "RPCs by final status code",
            (*labels, "code"),
            registry=self.registry,
        )
        self.errors = Counter(
            "mllgraph_rpc_errors",
            "RPCs that ended with a status other than OK",
            (*labels, "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "mllgraph_rpc_latency_seconds",
            "RPC latency, from the first byte handled to the status sent",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "mllgraph_rpc_in_flight", "RPCs being served", labels, registry=self.registry
        )
        for collector in collectors:
            self.registry.register(collector)


class RequestInterceptor(grpc.aio.ServerInterceptor):
    """Request ids, logging context and per-RPC metrics (see the module doc)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or is_open(method):
            return handler
        service, name = split_method(method)
        metrics = self.metrics

        def enter(context: Any) -> tuple[float, str]:
            rid = request_id_from(context.invocation_metadata())
            REQUEST_ID.set(rid)
            context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
            metrics.in_flight.labels(service, name).inc()
            return time.perf_counter(), rid

        def leave(context: Any, state: tuple[float, str], exc: BaseException | None) -> None:
            start, _rid = state
            code = final_code(context, exc)
            metrics.in_flight.labels(service, name).dec()
            metrics.requests.labels(service, name, code).inc()
            if code != "OK":
                metrics.errors.labels(service, name, code).inc()
            metrics.latency.labels(service, name).observe(time.perf_counter() - start)

        return wrap_handler(handler, enter, leave)


def start_metrics_http(
    registry: CollectorRegistry, host: str, port: int
) -> tuple[Any, Callable[[], None]]:
    """Serve ``/metrics`` of `registry` on host:port (a thread); returns (server, stop)."""
    from prometheus_client import start_http_server

    from mllgraph.errors import Unavailable

    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise Unavailable(
            f"cannot serve metrics on {host}:{port}: {e.strerror or e}; choose another "
            "--metrics-port (0 turns the endpoint off)"
        ) from e

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return server, stop


# --- the services' own figures --------------------------------------------------------------

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def _batch_histogram(size_counts: dict[int, int], total_images: int) -> Metric:
    from prometheus_client.core import HistogramMetricFamily

    counts = dict(size_counts)
    buckets = [
        (str(float(le)), sum(n for size, n in counts.items() if size <= le)) for le in BATCH_BUCKETS
    ]
    buckets.append(("+Inf", sum(counts.values())))
    return HistogramMetricFamily(
        "mllgraph_batch_size",
        "images per model pass of the dynamic batcher",
        buckets=buckets,
        sum_value=total_images,
    )


def _counters(prefix: str, source: Any, docs: Sequence[tuple[str, str]]) -> Iterator[Metric]:
    """A counter `prefix_name` per (name, doc), its value `source.name`."""
    from prometheus_client.core import CounterMetricFamily

    for name, doc in docs:
        yield CounterMetricFamily(f"{prefix}_{name}", doc, getattr(source, name))


def reuse_collector(
    cache_fn: Callable[[], Any],
    batcher_fn: Callable[[], Any],
    budget_fn: Callable[[], Any] | None = None,
) -> Collector:
    """Model cache (``ModelCache``), dynamic batcher (``DynamicBatcher.stats``) and admission
    (``PixelBudget``, with `budget_fn`) figures of the inference service, read at scrape time:

    ``mllgraph_model_cache_hits_total`` / ``_misses_total`` / ``_loads_total`` /
    ``_evictions_total``, ``mllgraph_model_cache_bytes`` / ``_budget_bytes`` / ``_models``,
    ``mllgraph_output_cache_hits_total`` / ``_misses_total`` / ``_evictions_total`` /
    ``mllgraph_output_cache_bytes`` (outputs kept by image, ``mllgraph.reuse.outputs``),
    ``mllgraph_batch_size`` (histogram), ``mllgraph_batcher_requests_total`` /
    ``_expired_total`` / ``_cancelled_total`` / ``_oom_retries_total`` /
    ``_failed_batches_total``, ``mllgraph_batcher_pending``; ``mllgraph_inflight_pixels`` /
    ``_budget`` / ``_peak`` and ``mllgraph_admission_waited_total`` / ``_refused_total`` /
    ``_expired_total``.
    """
    from prometheus_client.core import GaugeMetricFamily

    def collect() -> Iterator[Metric]:
        cache, batcher = cache_fn(), batcher_fn()
        yield from _counters("mllgraph_model_cache", cache, (
            ("hits", "model lookups served from the cache"),
            ("misses", "model lookups that loaded the model"),
            ("loads", "models loaded onto the device"),
            ("evictions", "models evicted to stay within the budget"),
        ))  # fmt: skip
        yield GaugeMetricFamily(
            "mllgraph_model_cache_bytes", "device memory held by cached models", cache.used_bytes
        )
        yield GaugeMetricFamily(
            "mllgraph_model_cache_budget_bytes", "the cache's budget", cache.budget_bytes
        )
        yield GaugeMetricFamily("mllgraph_model_cache_models", "models cached", len(cache))
        outputs = cache.outputs
        yield from _counters("mllgraph_output_cache", outputs, (
            ("hits", "model outputs for an image found kept: no pass (mllgraph.reuse.outputs)"),
            ("misses", "model outputs for an image not kept: the model ran on it"),
            ("evictions", "kept outputs evicted to stay within the budget"),
        ))  # fmt: skip
        yield GaugeMetricFamily(
            "mllgraph_output_cache_bytes", "host memory held by kept outputs", outputs.nbytes
        )
        stats = batcher.stats
        yield _batch_histogram(stats.size_counts, stats.images)
        yield from _counters("mllgraph_batcher", stats, (
            ("requests", "requests submitted to the batcher"),
            ("expired", "requests dropped at their deadline"),
            ("cancelled", "requests cancelled by their caller"),
            ("oom_retries", "batches split after running out of device memory"),
            ("failed_batches", "model passes that failed"),
        ))  # fmt: skip
        yield GaugeMetricFamily("mllgraph_batcher_pending", "requests waiting", batcher.pending())
        budget = budget_fn() if budget_fn is not None else None
        if budget is not None:
            for name, doc, value in (
                ("", "decoded pixels reserved by requests in progress", budget.in_use),
                ("_budget", "the in-flight pixel budget", budget.capacity),
                ("_peak", "most pixels reserved at once since start", budget.stats.peak),
            ):
                yield GaugeMetricFamily(f"mllgraph_inflight_pixels{name}", doc, value)
            yield from _counters("mllgraph_admission", budget.stats, (
                ("waited", "requests that waited for room in the pixel budget"),
                ("refused", "requests alone over the pixel budget"),
                ("expired", "requests whose deadline passed while waiting for room"),
            ))  # fmt: skip

    return CallbackCollector(collect)


def label_job_collector(state_counts: Callable[[], dict[str, int]]) -> Collector:
    """``mllgraph_label_jobs{state}``: labelling jobs the ingestion service holds, by state."""
    from prometheus_client.core import GaugeMetricFamily

    def collect() -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "mllgraph_label_jobs", "labelling jobs held in memory, by state", labels=["state"]
        )
        for state, count in sorted(state_counts().items()):
            family.add_metric([state], count)
        yield family

    return CallbackCollector(collect)
