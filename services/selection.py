"""SelectionService (grpc.aio): ground a task's class names, select expert heads under a model
budget (CHCO), store the plan, return it and explain it. Thin wiring over `mllgraph.select.run`.

* `SelectHeads` runs `select.select` on a graph-work thread (`common.graph_thread`); the grounding
  resolver is built and warmed once at start-up, so no request pays for WordNet or the text
  embedder. Health reports SERVING only once the resolver is warm and Neo4j answers, and
  NOT_SERVING again while Neo4j does not; a request that arrives before the resolver is warm
  gets UNAVAILABLE.
* What a catalogue version needs is kept in the process (`mllgraph.select.cache`): a request
  reads the catalogue version (one indexed lookup) and finds the candidates, probe sets and
  sense coverage of concepts earlier requests asked about; a registration, labelling,
  deletion or probe-set change anywhere moves the version and the next request reads afresh.
  Probe outputs stay memory-mapped per model file (`mllgraph.select.probe_data.ProbeOutputCache`).
* Domain errors become gRPC statuses in one place (`services.common.rpc`). What each RPC
  answers:

  ==================================================  ===================
  no classes; one class; > 1,000 classes               INVALID_ARGUMENT
  an empty class name, control characters in a name    INVALID_ARGUMENT
  a name WordNet has nothing close to                  INVALID_ARGUMENT
  two classes grounding to one concept (names both)    INVALID_ARGUMENT
  budget < 0 (0 = the server default, 5)               INVALID_ARGUMENT
  an unknown solver; min_label_score outside [0, 1]    INVALID_ARGUMENT
  max_heads_per_class / time_limit_seconds != 0        INVALID_ARGUMENT (not supported yet)
  options.models with an empty id                      INVALID_ARGUMENT
  options.max_cost_ms < 0 or not finite                INVALID_ARGUMENT
  options.accuracy_slack outside [0, 1] or not finite  INVALID_ARGUMENT
  solver EXACT on a search space over its limit        INVALID_ARGUMENT
  pinned_wnid that is no WordNet noun / user concept   NOT_FOUND
  no labelled model in the catalogue                   FAILED_PRECONDITION
  GetPlan / ExplainSelection: empty plan_id            INVALID_ARGUMENT
  GetPlan / ExplainSelection: unknown or evicted plan  NOT_FOUND (evicted: see select.retention)
  Neo4j unreachable                                    UNAVAILABLE
  ==================================================  ===================

  Class names are data, never Cypher: quotes or Cypher text in a name are grounded like any
  other text (usually approximately or to a word inside it) or refused as INVALID_ARGUMENT.

How a plan document becomes the `Plan` and `Explanation` messages: services/plan_messages.py.

Run it with ``python -m services.selection [--port N] [--host H]`` (port default
MLLGRAPH_SELECTION_PORT, 50052) or ``mllgraph serve selection``. Each SelectHeads logs one
``select ...`` line with the plan id, whether it came from the store, and its grounding /
cypher / load / chco / total milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sys
import time
from dataclasses import fields
from typing import Any

from mllgraph.errors import InvalidArgument, MllgraphError, Unavailable
from mllgraph.graph.db import Graph
from mllgraph.hub import registry
from mllgraph.plan import document as plan_doc
from mllgraph.plan import request as plan_request
from mllgraph.select import chco_kernels, retention
from mllgraph.select import run as select
from mllgraph.settings import Settings
from mllgraph.v1 import selection_pb2, selection_pb2_grpc
from mllgraph.wire import f32
from services.common import (
    RunningServer,
    full_service_name,
    graph_thread,
    neo4j_health_report,
    rpc,
    run_server,
    run_service_main,
    set_serving,
    start_service,
    watch_health,
)
from services.plan_messages import Concepts, explain, plan_to_proto

log = logging.getLogger("mllgraph.services.selection")

SERVICE_NAME = full_service_name(selection_pb2, "SelectionService")
DEFAULT_BUDGET = 5
DEFAULT_MIN_LABEL_SCORE = plan_request.SelectOptions().min_label_score
GRACE_S = 5.0
HEALTH_INTERVAL_S = 5.0

_SOLVER_FROM_PROTO = {
    selection_pb2.SOLVER_UNSPECIFIED: "auto",
    selection_pb2.SOLVER_AUTO: "auto",
    selection_pb2.SOLVER_EXACT: "exact",
    selection_pb2.SOLVER_HEURISTIC: "heuristic",
}


# --- request -> library -----------------------------------------------------------------------


def _check_name(index: int, name: str) -> str:
    return plan_doc.check_class_name(name, f"classes[{index}].name")


def _models_option(opts: selection_pb2.SelectOptions) -> dict[str, Any]:
    """SelectOptions.models (a sub-hub), where both the proto and the library have it."""
    given = list(getattr(opts, "models", []) or [])
    if not given:
        return {}
    if "models" not in {f.name for f in fields(plan_request.SelectOptions)}:
        raise InvalidArgument("options.models is not supported by this server")
    models = sorted({m.strip() for m in given})
    if "" in models:
        raise InvalidArgument("options.models: an empty model id")
    return {"models": tuple(models)}


def _check_cost_options(options: plan_request.SelectOptions) -> None:
    """`options.validate()`, with the cost options' errors naming the request's fields
    (options.max_cost_ms, options.accuracy_slack)."""
    try:
        options.validate()
    except InvalidArgument as e:
        msg = str(e)
        if msg.startswith(("max_cost_ms", "accuracy_slack")):
            raise InvalidArgument(f"options.{msg}") from e
        raise


def _flag(opts: selection_pb2.SelectOptions, name: str) -> bool:
    """An optional bool of SelectOptions: as set, else the library's default (one plan for a
    task whichever door it came through: gRPC, the client, the CLI)."""
    source = opts if opts.HasField(name) else plan_request.SelectOptions
    return bool(getattr(source, name))


def request_to_task(
    request: selection_pb2.SelectHeadsRequest, default_budget: int = DEFAULT_BUDGET
) -> tuple[list[plan_request.TaskClass], plan_request.SelectOptions]:
    """The library's task classes and options for a SelectHeads request (validated)."""
    if request.budget < 0:
        raise InvalidArgument(
            f"budget must be a positive number of models (0 = server default), got {request.budget}"
        )
    opts = request.options
    if opts.solver not in _SOLVER_FROM_PROTO:
        raise InvalidArgument(f"options.solver: unknown value {opts.solver}")
    if opts.max_heads_per_class:
        raise InvalidArgument(
            "options.max_heads_per_class is not supported by this server yet; leave it 0"
        )
    if opts.time_limit_seconds:
        raise InvalidArgument(
            "options.time_limit_seconds is not supported by this server yet (the solver "
            "switches to its heuristic on large problems); leave it 0"
        )
    if len(request.classes) > plan_doc.MAX_CLASSES:
        raise InvalidArgument(
            f"classes: {len(request.classes)} is over the limit of {plan_doc.MAX_CLASSES}"
        )
    classes = [
        plan_request.TaskClass(
            name=_check_name(i, c.name), pinned_wnid=c.pinned_wnid.strip() or None
        )
        for i, c in enumerate(request.classes)
    ]
    options = plan_request.SelectOptions(
        budget=request.budget or default_budget,
        solver=_SOLVER_FROM_PROTO[opts.solver],
        allow_ancestor=_flag(opts, "allow_ancestor"),
        fit_params=_flag(opts, "fit_params"),
        min_label_score=(
            f32(opts.min_label_score) if opts.min_label_score else DEFAULT_MIN_LABEL_SCORE
        ),
        max_cost_ms=float(opts.max_cost_ms),
        accuracy_slack=(
            float(opts.accuracy_slack)
            if opts.HasField("accuracy_slack")
            else plan_request.ACCURACY_SLACK
        ),
        **_models_option(opts),
    )
    _check_cost_options(options)
    select.validate_classes(classes)
    return classes, options


# --- the servicer -------------------------------------------------------------------------------


class SelectionServicer(selection_pb2_grpc.SelectionServiceServicer):
    """SelectHeads / GetPlan / ExplainSelection over one Graph and one warm resolver."""

    def __init__(
        self,
        settings: Settings,
        *,
        graph: Graph | None = None,
        resolver: Any | None = None,
        default_budget: int = DEFAULT_BUDGET,
    ) -> None:
        self.settings = settings
        self.graph = graph or Graph(settings)
        self._owns_graph = graph is None
        self.resolver = resolver
        self.concepts = Concepts(resolver)
        self.default_budget = default_budget
        self.ready = False
        self._last_sweep = 0.0  # time.monotonic() of the last plan eviction started
        self._background: set[asyncio.Task[int]] = set()
        self._sweeping = False

    async def evict_plans(self, *, throttle: float = 0.0) -> int:
        """Evict stored plans over the limits (`mllgraph.select.retention`), unless a sweep
        runs already or one started less than `throttle` s ago. Never raises: a failed
        sweep is logged and the next one tries again."""
        now = time.monotonic()
        if self._sweeping or now - self._last_sweep < throttle:
            return 0
        self._sweeping, self._last_sweep = True, now
        try:
            # A fresh context: no request deadline applies to the sweep.
            evicted = await asyncio.to_thread(
                contextvars.Context().run, retention.evict_plans, self.graph, self.settings
            )
        except Exception as e:  # noqa: BLE001 - eviction is housekeeping
            log.warning("plans_evict_failed error=%r", str(e))
            return 0
        finally:
            self._sweeping = False
        if evicted:
            log.info("plans_evicted n=%d", evicted)
        return evicted

    def warm_up(self) -> None:
        """Build and warm the resolver (unless given), check Neo4j, create the plan schema,
        then select once for a small task of the hub's own (`select.warm_up`, nothing
        stored), so that the first requests do not pay Neo4j's query planning."""
        t = time.perf_counter()
        if self.resolver is None:
            from mllgraph.ground.resolve import default_resolver

            self.resolver = default_resolver(self.settings)
        self.resolver.warm_up()
        chco_kernels.warm_up()  # CHCO's compiled loops, loaded before the first request
        self.concepts = Concepts(self.resolver)
        self.graph.verify()
        select.ensure_schema(self.graph)
        t_task = time.perf_counter()
        try:
            task = select.warm_up(self.graph, self.settings, self.resolver)
        except Exception as e:  # only a warm-up: a hub that cannot serve it serves others
            task = []
            log.warning(
                "selection_warm_task_failed error_type=%s error=%s",
                type(e).__name__,
                str(e)[:200],
            )
        self.ready = True
        log.info(
            "selection_warm ms=%.0f task=%s task_ms=%.0f",
            (time.perf_counter() - t) * 1000,
            ",".join(task) or "-",
            (time.perf_counter() - t_task) * 1000,
        )

    async def drain(self, grace: float | None) -> None:
        """Let the plan evictions started after SelectHeads finish, `grace` s at most (None:
        none), then cancel the rest: a task left pending when the event loop closes is
        destroyed with a warning, and its sweep would use a closed driver."""
        pending = set(self._background)
        if pending and grace:
            _, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def close(self) -> None:
        if self._owns_graph:
            self.graph.close()

    def _check_ready(self) -> None:
        if not self.ready:
            raise Unavailable("the selection service is still starting (grounding warm-up)")

    @rpc
    async def SelectHeads(self, request: Any, context: Any) -> selection_pb2.Plan:
        self._check_ready()
        classes, options = request_to_task(request, self.default_budget)
        if getattr(options, "models", None):
            await graph_thread(
                registry.require_models, self.graph, options.models, "options.models"
            )
        t = time.perf_counter()
        ctx = await graph_thread(
            select.select, self.graph, self.settings, classes, options, self.resolver
        )
        ms = (time.perf_counter() - t) * 1000
        plan = ctx.plan
        cached = ctx.timings.total_ms == 0.0
        tm = ctx.timings
        log.info(
            "select plan_id=%s classes=%d budget=%d cached=%s grounding_ms=%.1f cypher_ms=%.1f "
            "load_ms=%.1f chco_ms=%.1f select_ms=%.1f solver=%s models=%d uncovered=%d",
            plan["plan_id"],
            len(classes),
            options.budget,
            cached,
            tm.grounding_ms,
            tm.cypher_ms,
            tm.load_ms,
            tm.chco_ms,
            ms,
            plan.get("solver"),
            len(plan.get("models") or []),
            len(plan.get("uncovered") or []),
        )
        if not cached:  # a new plan was stored: keep the store within its bounds
            task = asyncio.create_task(self.evict_plans(throttle=retention.AFTER_SELECT_S))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return plan_to_proto(plan, self.concepts)

    async def _plan(self, plan_id: str) -> dict[str, Any]:
        plan_id = plan_id.strip()
        if not plan_id:
            raise InvalidArgument("plan_id: required")
        return await graph_thread(select.get_plan, self.graph, plan_id)

    @rpc
    async def GetPlan(self, request: Any, context: Any) -> selection_pb2.Plan:
        return plan_to_proto(await self._plan(request.plan_id), self.concepts)

    @rpc
    async def ExplainSelection(self, request: Any, context: Any) -> selection_pb2.Explanation:
        plan = await self._plan(request.plan_id)
        try:
            current = await graph_thread(registry.catalogue_version, self.graph)
        except MllgraphError:
            current = None
        return explain(plan, self.concepts, current)


# --- running the server -------------------------------------------------------------------------


async def start(
    settings: Settings,
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    servicer: SelectionServicer | None = None,
    health_interval: float = HEALTH_INTERVAL_S,
) -> RunningServer:
    """Build the server, warm the resolver and check Neo4j, then start it on `port` (0: a
    free one) and report SERVING. Raises Unavailable if Neo4j does not answer. Stop it with
    `await running.close()`."""
    servicer = servicer or SelectionServicer(settings)

    async def close_servicer(grace: float | None) -> None:
        await servicer.drain(grace)
        servicer.close()

    running = await start_service(
        servicer,
        selection_pb2_grpc.add_SelectionServiceServicer_to_server,
        SERVICE_NAME,
        settings,
        port,
        host=host,
        close_servicer=close_servicer,
        grace=GRACE_S,
        warm_up=servicer.warm_up,
    )
    await set_serving(running.health, [SERVICE_NAME], True)
    log.info("health status=SERVING neo4j=%s", settings.bolt_uri)

    def ready() -> str | None:
        servicer.graph.verify()
        return None if servicer.ready else "warming up"

    running.run_in_background(
        watch_health(
            running.health,
            [SERVICE_NAME],
            ready,
            running.stop_event,
            interval=health_interval,
            retry_interval=1.0,
            report=neo4j_health_report(log, servicer.settings.bolt_uri),
            serving=True,
        )
    )
    running.run_in_background(sweep_plans(servicer, running.stop_event))
    log.info("selection_started port=%d neo4j=%s", running.port, settings.bolt_uri)
    return running


async def sweep_plans(servicer: SelectionServicer, stop: asyncio.Event) -> None:
    """Evict stored plans over the limits now and every `retention.sweep_interval`."""
    while not stop.is_set():
        await servicer.evict_plans()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), retention.sweep_interval(servicer.settings))


async def serve(settings: Settings, *, port: int | None = None, host: str = "127.0.0.1") -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully."""
    running = await start(settings, settings.selection_port if port is None else port, host=host)
    await run_server(running, GRACE_S)


def main(argv: list[str] | None = None) -> int:
    return run_service_main(
        "selection", serve, argv, port_help="port (default MLLGRAPH_SELECTION_PORT, 50052)"
    )


class BackgroundServer:
    """A SelectionService on its own event loop in a daemon thread, for benchmarks and tests
    that call it with blocking stubs: ``with BackgroundServer(settings) as srv: srv.port``."""

    def __init__(self, settings: Settings, *, resolver: Any | None = None, port: int = 0) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="selection-server", daemon=True
        )
        self._thread.start()
        servicer = SelectionServicer(settings, resolver=resolver)
        try:
            self.running = self._run(start(settings, port, servicer=servicer))
        except BaseException:
            self._stop_loop()
            raise
        self.port = self.running.port
        self.address = f"127.0.0.1:{self.port}"

    def _run(self, coro: Any, timeout: float = 300.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()

    def close(self, grace: float | None = None) -> None:
        try:
            self._run(self.running.close(grace))
        finally:
            self._stop_loop()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(main())
