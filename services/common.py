"""Server plumbing shared by the mllgraph gRPC services (grpc.aio).

* `rpc`: decorator for servicer methods (unary or streaming responses) that turns domain
  errors into their status (services/errors.py), anything else into INTERNAL, and logs one
  line per call.
* `build_server`: an aio server with the given servicers, standard health checking (every
  service NOT_SERVING until `set_serving`) and server reflection.
* `serve_until_signal`: run until SIGTERM/SIGINT, then report NOT_SERVING and stop
  gracefully so in-flight RPCs finish.
* `configure_logging`: one-line key=value log records (with ``request_id=`` and ``caller=``
  inside a call).
* Serving to others: `build_server(..., settings=)` adds TLS, bearer tokens and the bind
  rule (services/security.py), request ids and Prometheus metrics (services/telemetry.py).

* Running a service (what services/ingestion, selection and inference share):
  `start_service` builds and starts it (`RunningServer`, whose `close` ends it), `watch_health`
  keeps its health status, `run_server` serves until a signal, and `run_service_main` is the
  ``python -m services.<name>`` entry point::

    running = await start_service(servicer, add_fn, name, settings, port, host=host,
                                  close_servicer=close, grace=5.0)
    running.run_in_background(watch_health(running.health, [name], check, running.stop_event,
                                           interval=5.0, retry_interval=1.0, report=report))
    await run_server(running, grace=5.0)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import inspect
import logging
import signal
import sys
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import EllipsisType, ModuleType
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import SERVICE_NAME as HEALTH_SERVICE_NAME
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from mllgraph import threads
from mllgraph.errors import DeadlineExceeded, InvalidArgument, MllgraphError, Unavailable
from mllgraph.graph import deadline
from mllgraph.settings import Settings
from services import limits, telemetry
from services.errors import _short, abort_with, status_for
from services.security import ServerSecurity

log = logging.getLogger("mllgraph.services")

HealthServicer = health_aio.HealthServicer
"""The asyncio health servicer type returned by `build_server`."""

AddServicerFn = Callable[[Any, grpc.aio.Server], None]
"""A generated ``add_XServicer_to_server`` function."""

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest request/response the servers accept (weights uploads, image batches)."""

_HandlerT = TypeVar("_HandlerT", bound=Callable[..., Any])
_T = TypeVar("_T")

GRAPH_SHARE = 0.9
"""Share of an RPC's remaining time its graph calls may use (`mllgraph.graph.deadline`), so
they end, DEADLINE_EXCEEDED, while the client still waits for the answer."""


def _graph_deadline(context: grpc.aio.ServicerContext) -> float | None:
    """Seconds the handler's graph calls may take: a share of the RPC's time left (the
    client's deadline, else the server's default one: `limits.time_remaining`)."""
    left = limits.time_remaining(context)
    return None if left is None else left * GRAPH_SHARE


# --- the rpc decorator ------------------------------------------------------------------


def _final_code(context: grpc.aio.ServicerContext) -> str:
    """Name of the status the handler left on `context` (OK unless it set one)."""
    try:
        code = context.code()
    except Exception:  # EXPERIMENTAL API: never fail a call over logging
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "OK" if code in (None, 0) else str(code)


def _log_call(method: str, status: str, start: float, **fields: Any) -> None:
    """Log one `rpc method=... status=... ms=...` line (warning for non-OK)."""
    ms = (time.perf_counter() - start) * 1000.0
    extra = "".join(f" {key}={value!r}" for key, value in fields.items())
    level = logging.INFO if status == "OK" else logging.WARNING
    log.log(level, "rpc method=%s status=%s ms=%.1f%s", method, status, ms, extra)


def rpc(handler: _HandlerT) -> _HandlerT:
    """Wrap an async servicer method ``(self, request_or_iterator, context)``.

    Works for coroutine methods (unary responses) and async-generator methods (streaming
    responses). MllgraphError -> its mapped status and message; grpc aborts and
    cancellation pass through; any other exception -> INTERNAL (logged with traceback).
    Graph calls made by the handler (in worker threads too) get GRAPH_SHARE of the RPC's
    remaining time at its start (`limits.time_remaining`: the client's deadline, else the
    server's default) as their transaction timeout (`mllgraph.graph.deadline`).
    Every call logs ``rpc method=<Class.Method> status=<CODE> ms=<elapsed>``.
    """
    method = handler.__qualname__

    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def stream_wrapper(
            self: Any, request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            start = time.perf_counter()
            sent = 0
            try:
                with deadline.within(_graph_deadline(context)):
                    async for response in handler(self, request, context):
                        yield response
                        sent += 1
            except grpc.aio.AbortError:
                _log_call(method, _final_code(context), start, sent=sent)
                raise
            except asyncio.CancelledError:
                _log_call(method, "CANCELLED", start, sent=sent)
                raise
            except Exception as exc:
                _log_call(method, status_for(exc).name, start, sent=sent, msg=_short(str(exc)))
                await abort_with(context, exc)
            else:
                _log_call(method, _final_code(context), start, sent=sent)

        return stream_wrapper  # type: ignore[return-value]

    if not inspect.iscoroutinefunction(handler):
        raise TypeError(f"@rpc needs an async def or async generator method, got {method}")

    @functools.wraps(handler)
    async def unary_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = time.perf_counter()
        try:
            with deadline.within(_graph_deadline(context)):
                response = await handler(self, request, context)
        except grpc.aio.AbortError:
            _log_call(method, _final_code(context), start)
            raise
        except asyncio.CancelledError:
            _log_call(method, "CANCELLED", start)
            raise
        except Exception as exc:
            _log_call(method, status_for(exc).name, start, msg=_short(str(exc)))
            await abort_with(context, exc)
        _log_call(method, _final_code(context), start)
        return response

    return unary_wrapper  # type: ignore[return-value]


# --- server construction ----------------------------------------------------------------


def full_service_name(pb2_module: ModuleType, service: str) -> str:
    """Fully qualified name of `service` declared in a generated ``*_pb2`` module.

    E.g. ``full_service_name(selection_pb2, "SelectionService")`` ->
    ``"mllgraph.v1.SelectionService"``.
    """
    return pb2_module.DESCRIPTOR.services_by_name[service].full_name


async def set_serving(health: HealthServicer, names: Iterable[str], serving: bool) -> None:
    """Report `names` (and the overall server, "") as SERVING or NOT_SERVING."""
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *names):
        await health.set(name, status)


def _address(host: str, port: int) -> str:
    """host:port, with IPv6 literals bracketed."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


HANDLER_THREADS = 64
"""Threads of the event loop's default executor (handlers' `asyncio.to_thread`: database-free
work such as uploads and decoding). Python's default is min(32, CPUs + 4): 6 on 2 cores."""

GRAPH_THREADS = 32
"""Threads for handlers' graph work (`graph_thread`), apart from the default executor: while
Neo4j is slow or frozen, calls waiting on it hold at most these, and database-free calls
(UploadWeights, decoding) still get a thread. More than the graph layer's own pool
(`mllgraph.graph.db.GRAPH_WORKERS`, 16), so that handlers reach the graph layer, which answers
within their deadline (a thread freed in time, DEADLINE_EXCEEDED, or UNAVAILABLE at once when
the database stopped answering)."""


_LOOPS_WITH_HANDLER_THREADS: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _ensure_handler_threads(loop: asyncio.AbstractEventLoop) -> None:
    """Give `loop` a default executor of HANDLER_THREADS threads, once per loop."""
    if loop in _LOOPS_WITH_HANDLER_THREADS:
        return
    loop.set_default_executor(
        ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="mllgraph-handler")
    )
    _LOOPS_WITH_HANDLER_THREADS.add(loop)


@dataclasses.dataclass
class _GraphThreads:
    """The graph-work threads of one event loop, and a semaphore that hands them out."""

    pool: ThreadPoolExecutor
    free: asyncio.Semaphore


def _graph_threads(loop: asyncio.AbstractEventLoop) -> _GraphThreads:
    """`loop`'s graph-work threads, made on first use (kept on the loop: they go with it)."""
    threads = getattr(loop, "_mllgraph_graph_threads", None)
    if threads is None:
        pool = ThreadPoolExecutor(GRAPH_THREADS, thread_name_prefix="mllgraph-graph-work")
        threads = _GraphThreads(pool, asyncio.Semaphore(GRAPH_THREADS))
        loop._mllgraph_graph_threads = threads  # type: ignore[attr-defined]
    return threads


def _release_on(loop: asyncio.AbstractEventLoop, semaphore: asyncio.Semaphore) -> None:
    """Release `semaphore` on `loop` (from any thread; nothing when the loop is closed)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(semaphore.release)


async def graph_thread(fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """``asyncio.to_thread`` for work that reads or writes the graph, on GRAPH_THREADS threads
    of its own (see there). With all of them busy, the call waits for one until its graph
    deadline (`mllgraph.graph.deadline`), then DeadlineExceeded naming Neo4j. A thread counts
    as busy until its work ends, even when the call awaiting it was cancelled."""
    loop = asyncio.get_running_loop()
    threads = _graph_threads(loop)
    wait_s = deadline.remaining()
    try:
        async with asyncio.timeout(None if wait_s is None else max(0.0, wait_s)):
            await threads.free.acquire()
    except TimeoutError:
        raise DeadlineExceeded(
            f"no thread for graph work came free within {wait_s:.1f} s (the request's "
            f"deadline): {GRAPH_THREADS} graph calls are waiting on Neo4j"
        ) from None
    context = contextvars.copy_context()
    try:
        work = threads.pool.submit(context.run, functools.partial(fn, *args, **kwargs))
    except BaseException:
        threads.free.release()
        raise
    work.add_done_callback(lambda _: _release_on(loop, threads.free))
    return await asyncio.wrap_future(work)


async def build_server(
    port: int,
    servicers: Sequence[tuple[AddServicerFn, Any]],
    service_names: Sequence[str],
    *,
    host: str = "127.0.0.1",
    settings: Settings | None = None,
    collectors: Sequence[Any] = (),
    max_concurrent_rpcs: int | None = None,
) -> tuple[grpc.aio.Server, HealthServicer, int]:
    """Create (not start) an aio server with `servicers`, health checking and reflection.

    `service_names` are the fully qualified names of the services (see
    `full_service_name`); health reports each of them and the overall server ("") as
    NOT_SERVING until `set_serving` is called. Reflection lists them plus the health and
    reflection services. `port` 0 picks a free port. Returns (server, health, bound_port).
    Raises Unavailable when the address cannot be bound (e.g. the port is in use).

    `settings` (default: `Settings()`, nothing configured) brings TLS, bearer tokens, the
    bind rule (`ServerSecurity.check_bind`: FailedPrecondition for a non-loopback `host`
    without TLS and tokens unless insecure) and the metrics port of the first service
    (``<name>_metrics_port``; 0 = no endpoint). `collectors` are added to its registry.
    Every server gets request ids and per-RPC metrics (`telemetry.RequestInterceptor`), and
    the call budgets, stream limits and default deadlines of `settings`
    (`limits.LimitInterceptor`); `max_concurrent_rpcs` (None: no limit) overrides
    ``settings.max_concurrent_rpcs``, the unary calls in progress: one more is refused with
    RESOURCE_EXHAUSTED at once instead of queueing.
    """
    if max_concurrent_rpcs is not None and max_concurrent_rpcs < 1:
        raise InvalidArgument(f"max_concurrent_rpcs must be >= 1, got {max_concurrent_rpcs}")
    settings = settings if settings is not None else Settings()
    security = ServerSecurity.from_settings(settings)
    security.check_bind(host)
    call_limits = limits.CallLimits.from_settings(settings)
    call_limits = dataclasses.replace(call_limits, unary=max_concurrent_rpcs)
    _ensure_handler_threads(asyncio.get_running_loop())
    metrics = telemetry.ServiceMetrics(collectors)
    server = grpc.aio.server(
        # In this order: the limits see the caller the auth interceptor found.
        interceptors=[
            telemetry.RequestInterceptor(metrics),
            *security.interceptors(),
            limits.LimitInterceptor(call_limits),
        ],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Fail loudly on a port another process listens on instead of sharing it.
            ("grpc.so_reuseport", 0),
        ],
    )
    for add_fn, servicer in servicers:
        add_fn(servicer, server)

    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await set_serving(health, service_names, False)

    reflection.enable_server_reflection(
        [*service_names, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME], server
    )

    address = _address(host, port)
    try:
        if security.credentials is not None:
            bound = server.add_secure_port(address, security.credentials)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise Unavailable(
            f"cannot listen on {address}: the port is in use or the address is not local; "
            "choose another port (0 picks a free one)"
        ) from exc
    server.mllgraph_metrics = metrics  # type: ignore[attr-defined]
    metrics_port = _metrics_port(settings, service_names)
    if metrics_port:
        _serve_metrics(server, metrics, settings.metrics_host, metrics_port)
    log.info(
        "server_built address=%s services=%s %s metrics=%s",
        _address(host, bound),
        ",".join(service_names),
        security.describe(),
        _address(settings.metrics_host, metrics_port) if metrics_port else "off",
    )
    return server, health, bound


def _metrics_port(settings: Settings, service_names: Sequence[str]) -> int:
    """``settings.<name>_metrics_port`` for the first service (mllgraph.v1.XService -> x)."""
    if not service_names:
        return 0
    short = service_names[0].rsplit(".", 1)[-1].removesuffix("Service").lower()
    return int(getattr(settings, f"{short}_metrics_port", 0) or 0)


def _serve_metrics(
    server: grpc.aio.Server, metrics: telemetry.ServiceMetrics, host: str, port: int
) -> None:
    """Start the /metrics endpoint and stop it when `server` stops."""
    _http, stop_http = telemetry.start_metrics_http(metrics.registry, host, port)
    stop_server = server.stop

    async def stop(grace: float | None) -> None:
        try:
            await stop_server(grace)
        finally:
            await asyncio.to_thread(stop_http)

    server.stop = stop  # type: ignore[method-assign]


async def serve_until_signal(
    server: grpc.aio.Server,
    health: HealthServicer,
    names: Iterable[str],
    grace: float,
    *,
    stop: asyncio.Event | None = None,
) -> None:
    """Wait for SIGTERM/SIGINT (or `stop` being set), then shut down gracefully.

    On shutdown: health reports `names` and "" NOT_SERVING, then ``server.stop(grace)`` lets
    in-flight RPCs finish for up to `grace` seconds. A second signal during the grace period
    gets the default behaviour (terminates the process). Also returns if the server
    terminates by itself. The server must already be started.
    """
    names = list(names)
    loop = asyncio.get_running_loop()
    stop = stop if stop is not None else asyncio.Event()
    received: list[str] = []
    installed: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            # Not the main thread, or a platform without loop signal handlers: `stop` only.
            pass

    def uninstall() -> None:
        while installed:
            loop.remove_signal_handler(installed.pop())

    stop_wait = asyncio.ensure_future(stop.wait())
    termination = asyncio.ensure_future(server.wait_for_termination())
    try:
        done, _ = await asyncio.wait({stop_wait, termination}, return_when=asyncio.FIRST_COMPLETED)
        if stop_wait in done:
            uninstall()
            log.info(
                "shutdown reason=%s grace_s=%.1f",
                received[0] if received else "stop_event",
                grace,
            )
            await set_serving(health, names, False)
            await health.enter_graceful_shutdown()
            await server.stop(grace)
            log.info("shutdown status=done")
        else:
            log.info("server_terminated")
    finally:
        uninstall()
        for task in (stop_wait, termination):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


# --- logging ----------------------------------------------------------------------------


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=... logger=... <message>`` on one line; exceptions as ``exc="..."``."""

    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__(
            fmt="ts=%(asctime)s.%(msecs)03dZ level=%(levelname)s logger=%(name)s %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )

    def format(self, record: logging.LogRecord) -> str:
        """Format `record`, folding any traceback into a single escaped field."""
        exc_info, exc_text, stack_info = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = exc_info, exc_text, stack_info
        if exc_info and exc_info[0] is not None:
            line += " exc=" + _escape(self.formatException(exc_info))
        if stack_info:
            line += " stack=" + _escape(self.formatStack(stack_info))
        request_id = getattr(record, "request_id", None)  # stamped by services.telemetry
        caller = getattr(record, "caller", None)
        if request_id is not None:
            line += f" request_id={request_id}"
        if caller is not None:
            line += f" caller={caller}"
        return line.replace("\n", "\\n")


def _escape(text: str) -> str:
    """`text` as one double-quoted line (newlines and quotes escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def configure_logging(level: int | str = logging.INFO) -> None:
    """Send one-line key=value records at `level` and above to stderr (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_mllgraph", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    handler._mllgraph = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)


# --- running a service ------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class RunningServer:
    """A started service (from `start_service`): its server, health servicer, bound port and
    servicer, and the background tasks (health watching, housekeeping) that end with it."""

    server: grpc.aio.Server
    health: HealthServicer
    port: int
    servicer: Any
    service_names: list[str]
    close_servicer: Callable[[float | None], Awaitable[None]]
    grace: float  # close()'s default
    stop_event: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    tasks: list[asyncio.Future[Any]] = dataclasses.field(default_factory=list)
    # True: close() cancels the tasks (e.g. a health check blocked on a dead database)
    # instead of waiting until they see `stop_event`.
    cancel_tasks: bool = False

    def run_in_background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` until `close` (it should return once `stop_event` is set)."""
        self.tasks.append(asyncio.ensure_future(coro))

    async def close(self, grace: float | None | EllipsisType = ...) -> None:
        """End the background tasks, report NOT_SERVING, stop the server (in-flight RPCs get
        `grace` seconds; default `self.grace`; None: none) and close the servicer."""
        grace = self.grace if grace is ... else grace
        self.stop_event.set()
        for task in self.tasks:
            if self.cancel_tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await set_serving(self.health, self.service_names, False)
        await self.server.stop(grace)
        await self.close_servicer(grace)

    stop = close  # the inference service's name for it


async def start_service(
    servicer: Any,
    add_servicer: AddServicerFn,
    service_name: str,
    settings: Settings,
    port: int,
    *,
    host: str,
    close_servicer: Callable[[float | None], Awaitable[None]],
    grace: float,
    collectors: Sequence[Any] = (),
    warm_up: Callable[[], None] | None = None,
    cancel_tasks: bool = False,
) -> RunningServer:
    """Build (`build_server`, at most ``settings.max_concurrent_rpcs`` RPCs at once) and start
    a server for `servicer` on `port` (0: a free one). Health stays NOT_SERVING: the caller
    reports it (e.g. `watch_health`). `close_servicer(grace)` ends the servicer at `close`;
    `grace` is `close`'s default; `cancel_tasks`: see `RunningServer`.

    `warm_up` (blocking: run in a worker thread once the server listens) may fail: the server
    then stops and the servicer is closed before its exception propagates."""
    server, health, bound = await build_server(
        port,
        [(add_servicer, servicer)],
        [service_name],
        host=host,
        settings=settings,
        collectors=collectors,
        max_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    await server.start()
    if warm_up is not None:
        try:
            await asyncio.to_thread(warm_up)
        except BaseException:
            await server.stop(None)
            await close_servicer(None)
            raise
    return RunningServer(
        server,
        health,
        bound,
        servicer,
        [service_name],
        close_servicer,
        grace,
        cancel_tasks=cancel_tasks,
    )


async def watch_health(
    health: HealthServicer,
    names: Sequence[str],
    check: Callable[[], str | None],
    stop: asyncio.Event,
    *,
    interval: float,
    retry_interval: float,
    report: Callable[[bool, str], None],
    serving: bool | None = None,
) -> None:
    """Report `names` SERVING while `check` passes and NOT_SERVING while it does not, until
    `stop` is set.

    `check` (blocking: run in a worker thread) returns None when the service can serve, else
    why it cannot; an exception means it cannot either. It runs at once unless `serving` (the
    status already reported) is given, then every `interval` seconds while serving and every
    `retry_interval` seconds while not. `report(ok, why)` is called on each change."""
    while not stop.is_set():
        if serving is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval if serving else retry_interval)
            if stop.is_set():
                break
        try:
            why = await asyncio.to_thread(check)
        except Exception as e:  # noqa: BLE001 - any failure means: not serving
            why = str(e) or type(e).__name__
        ok = why is None
        if ok != serving and not stop.is_set():
            await set_serving(health, names, ok)
            report(ok, why or "")
            serving = ok


def neo4j_health_report(log: logging.Logger, bolt_uri: str) -> Callable[[bool, str], None]:
    """`watch_health`'s `report` for a service that serves while Neo4j answers."""

    def report(ok: bool, why: str) -> None:
        if ok:
            log.info("health status=SERVING neo4j=%s", bolt_uri)
        else:
            log.warning("health status=NOT_SERVING reason=%r", why)

    return report


async def run_server(
    running: RunningServer,
    grace: float,
    *,
    stop: asyncio.Event | None = None,
    close_grace: float | None | EllipsisType = ...,
) -> None:
    """Serve until SIGTERM/SIGINT (or `stop`; default `running.stop_event`), then shut down
    gracefully (`serve_until_signal`: in-flight RPCs get `grace` seconds) and close the rest
    with ``running.close(close_grace)`` (default `grace`)."""
    try:
        await serve_until_signal(
            running.server,
            running.health,
            running.service_names,
            grace,
            stop=running.stop_event if stop is None else stop,
        )
    finally:
        await running.close(grace if close_grace is ... else close_grace)


def run_service_main(
    name: str,
    serve: Callable[..., Any],
    argv: list[str] | None,
    *,
    port_help: str,
    description: str | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    serve_options: Callable[[argparse.Namespace, Settings], dict[str, Any]] | None = None,
) -> int:
    """The `python -m services.<name>` entry point shared by the services: --port, --host, the
    service's own flags (`add_arguments`), --insecure, --metrics-port, --log-level; structured
    logs; ``serve(settings, port=, host=, **serve_options(args, settings))``; exit 1 on a
    domain error, 130 on Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog=f"python -m services.{name}",
        description=description or f"the mllgraph {name} service",
    )
    parser.add_argument("--port", type=int, help=port_help)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    if add_arguments is not None:
        add_arguments(parser)
    add_serving_flags(parser, name)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        settings = apply_serving_flags(Settings.from_env(), args, name)
        threads.set_blas_threads(settings.blas_threads)
        threads.work_threads(settings.work_threads)  # a bad count: refused now, not per request
        options = serve_options(args, settings) if serve_options is not None else {}
        asyncio.run(serve(settings, port=args.port, host=args.host, **options))
    except MllgraphError as e:
        logging.getLogger(f"services.{name}").error("%s_failed error=%r", name, str(e))
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def add_serving_flags(parser: argparse.ArgumentParser, name: str) -> None:
    """--insecure and --metrics-port, for every service's command line."""
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow --host other than loopback without TLS and tokens (logs a warning)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help=f"Prometheus endpoint port (default MLLGRAPH_METRICS_PORT_{name.upper()}; 0: off)",
    )


def apply_serving_flags(settings: Settings, args: Any, name: str) -> Settings:
    """`settings` with the --insecure and --metrics-port given on the command line."""
    changes: dict[str, Any] = {}
    if getattr(args, "insecure", False):
        changes["insecure"] = True
    if getattr(args, "metrics_port", None) is not None:
        changes[f"{name}_metrics_port"] = args.metrics_port
    return dataclasses.replace(settings, **changes) if changes else settings
