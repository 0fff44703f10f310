"""services.limits at small scale (issue 25, findings 1 and 5): idle streams — health Watch
and reflection without a token, ClassifyStream with one — no longer starve unary calls, are
closed after their idle or open-stream timeout, and are limited per caller; health Check
answers throughout. Calls without a deadline get the server's default one, and graph work
blocked on a frozen database leaves threads for database-free calls."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2_grpc

from mllgraph import auth
from mllgraph.graph import deadline
from mllgraph.settings import Settings
from mllgraph.v1 import inference_pb2, inference_pb2_grpc, selection_pb2, selection_pb2_grpc
from services import limits
from services.common import GRAPH_THREADS, build_server, full_service_name, graph_thread, rpc

SELECTION = full_service_name(selection_pb2, "SelectionService")
INFERENCE = full_service_name(inference_pb2, "InferenceService")
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED


@dataclass
class Tokens:
    admin: str
    reader: str
    other: str
    table: str  # MLLGRAPH_TOKENS


def make_tokens() -> Tokens:
    made = {
        name: auth.create_token(scope, name)
        for name, scope in (("root", "admin"), ("reader", "read"), ("other", "read"))
    }
    table = ";".join(entry.line() for _, entry in made.values())
    return Tokens(made["root"][0], made["reader"][0], made["other"][0], table)


TOKENS = make_tokens()


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class ToySelection(selection_pb2_grpc.SelectionServiceServicer):
    """ExplainSelection does what its plan_id says."""

    def __init__(self) -> None:
        self.release = threading.Event()  # ends the "graph" work of "graph-hang"

    def _block(self) -> str:
        self.release.wait(30)
        return "released"

    @rpc
    async def ExplainSelection(self, request: Any, context: Any) -> Any:
        note = "ok"
        if request.plan_id == "hang":
            await asyncio.Event().wait()
        elif request.plan_id == "graph-hang":
            note = await graph_thread(self._block)
        elif request.plan_id == "free":
            note = await asyncio.to_thread(lambda: "database-free")
        elif request.plan_id == "deadline":
            note = repr(await asyncio.to_thread(deadline.remaining))
        return selection_pb2.Explanation(plan_id=request.plan_id, notes=[note])


class ToyInference(inference_pb2_grpc.InferenceServiceServicer):
    @rpc
    async def Classify(self, request: Any, context: Any) -> Any:
        return inference_pb2.ClassifyResponse(plan_id=request.plan_id)

    @rpc
    async def ClassifyStream(self, request_iterator: Any, context: Any) -> Any:
        async for request in request_iterator:
            yield inference_pb2.ClassifyResponse(plan_id=request.plan_id)


SMALL = replace(
    Settings(),
    tokens=TOKENS.table,
    max_concurrent_rpcs=4,
    max_concurrent_streams=4,
    max_open_streams=4,
    max_streams_per_caller=4,
    stream_idle_timeout_s=1.5,
    open_stream_max_s=1.5,
)


def run(
    scenario: Callable[[grpc.aio.Channel, ToySelection], Awaitable[None]],
    settings: Settings = SMALL,
    **build: Any,
) -> None:
    """The toy services with `settings`, serving; `scenario` against them."""
    selection = ToySelection()

    async def main() -> None:
        server, health, port = await build_server(
            0,
            [
                (selection_pb2_grpc.add_SelectionServiceServicer_to_server, selection),
                (inference_pb2_grpc.add_InferenceServiceServicer_to_server, ToyInference()),
            ],
            [SELECTION, INFERENCE],
            settings=settings,
            max_concurrent_rpcs=settings.max_concurrent_rpcs,
            **build,
        )
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await asyncio.wait_for(scenario(channel, selection), timeout=60)
        finally:
            selection.release.set()
            await server.stop(None)

    asyncio.run(main())


async def open_streams(
    start: Callable[[], Any], n: int, settle_s: float = 0.5
) -> tuple[list[Any], list[grpc.aio.AioRpcError]]:
    """Start `n` calls that send nothing more; (the ones still open, the refused ones)."""
    calls = [start() for _ in range(n)]
    for call in calls:
        with contextlib.suppress(grpc.aio.AioRpcError):  # refused: told apart below
            await call.wait_for_connection()
    statuses = {asyncio.ensure_future(call.code()): call for call in calls}
    done, _ = await asyncio.wait(statuses, timeout=settle_s)
    refused = [statuses[task] for task in done]
    assert all(t.result() == RESOURCE_EXHAUSTED for t in done), [t.result() for t in done]
    return [c for c in calls if c not in refused], refused


async def unary_calls_still_answer(channel: grpc.aio.Channel) -> None:
    """Classify with a read and an admin token, and health Check without one, all succeed."""
    infer = inference_pb2_grpc.InferenceServiceStub(channel)
    for token in (TOKENS.admin, TOKENS.reader):
        request = inference_pb2.ClassifyRequest(plan_id="p")
        response = await infer.Classify(request, metadata=bearer(token), timeout=5)
        assert response.plan_id == "p"
    check = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert check.status == health_pb2.HealthCheckResponse.SERVING


async def _status(call: Any) -> grpc.StatusCode:
    """`call`'s final code, once its responses are read (a client learns it only then)."""
    try:
        while await call.read() is not grpc.aio.EOF:
            pass
    except grpc.aio.AioRpcError:
        pass
    return await call.code()


async def ended(calls: list[Any], within_s: float) -> list[tuple[grpc.StatusCode, str]]:
    """(code, details) of `calls` once they end, which must be within `within_s`."""
    codes = await asyncio.wait_for(asyncio.gather(*(_status(c) for c in calls)), within_s)
    details = [await c.details() for c in calls]
    return list(zip(codes, details, strict=True))


# --- idle streams do not starve unary calls -------------------------------------------------


def test_idle_health_watch_streams_without_a_token() -> None:
    async def scenario(channel: grpc.aio.Channel, _sel: ToySelection) -> None:
        watch = health_pb2_grpc.HealthStub(channel).Watch
        t0 = time.monotonic()
        # A client deadline longer than the server's limit does not keep a stream open.
        held, refused = await open_streams(
            lambda: watch(health_pb2.HealthCheckRequest(), timeout=60), 6
        )
        assert len(held) == 4 and len(refused) == 2
        assert "MLLGRAPH_MAX_OPEN_STREAMS" in await refused[0].details()
        await unary_calls_still_answer(channel)
        for code, details in await ended(held, within_s=10):
            assert code == DEADLINE_EXCEEDED and "MLLGRAPH_OPEN_STREAM_MAX_S" in details
        assert time.monotonic() - t0 >= SMALL.open_stream_max_s
        again = watch(health_pb2.HealthCheckRequest())
        assert (await again.read()).status == health_pb2.HealthCheckResponse.SERVING
        again.cancel()

    run(scenario)


def test_idle_reflection_streams_without_a_token() -> None:
    async def scenario(channel: grpc.aio.Channel, _sel: ToySelection) -> None:
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo
        held, refused = await open_streams(reflect, 6)
        assert len(held) == 4 and len(refused) == 2
        select = selection_pb2_grpc.SelectionServiceStub(channel)
        request = selection_pb2.ExplainSelectionRequest(plan_id="p")
        assert (await select.ExplainSelection(request, metadata=bearer(TOKENS.admin))).notes
        await unary_calls_still_answer(channel)
        for code, details in await ended(held, within_s=10):
            assert code == DEADLINE_EXCEEDED
            assert "MLLGRAPH_STREAM_IDLE_TIMEOUT_S" in details or "OPEN_STREAM_MAX_S" in details

    run(scenario)


def test_idle_classify_streams_with_a_read_token() -> None:
    """Streams of the service's own RPCs: their own budget, a limit per caller (token name),
    closed once idle; a stream that keeps sending is served."""
    settings = replace(SMALL, max_streams_per_caller=3, open_stream_max_s=30)

    async def scenario(channel: grpc.aio.Channel, _sel: ToySelection) -> None:
        stream = inference_pb2_grpc.InferenceServiceStub(channel).ClassifyStream
        held, refused = await open_streams(lambda: stream(metadata=bearer(TOKENS.reader)), 5)
        assert len(held) == 3 and len(refused) == 2
        assert "token 'reader'" in await refused[0].details()
        assert "MLLGRAPH_MAX_STREAMS_PER_CALLER" in await refused[0].details()
        # Another caller gets the rest of the budget, then the budget is full.
        other, over = await open_streams(lambda: stream(metadata=bearer(TOKENS.other)), 3)
        assert len(other) == 1 and len(over) == 2
        assert "MLLGRAPH_MAX_CONCURRENT_STREAMS" in await over[0].details()
        await unary_calls_still_answer(channel)
        for code, details in await ended(held + other, within_s=10):
            assert code == DEADLINE_EXCEEDED and "MLLGRAPH_STREAM_IDLE_TIMEOUT_S" in details
        # Released: a stream that sends is served, past the idle timeout in all.
        busy = stream(metadata=bearer(TOKENS.reader))
        for i in range(3):
            await busy.write(inference_pb2.ClassifyRequest(plan_id=f"p{i}"))
            assert (await busy.read()).plan_id == f"p{i}"
            await asyncio.sleep(0.7)
        await busy.done_writing()
        assert await busy.code() == grpc.StatusCode.OK

    run(scenario, settings)


def test_callers_without_tokens_are_told_apart_by_address() -> None:
    class Ctx:
        def __init__(self, peer: str) -> None:
            self._peer = peer

        def peer(self) -> str:
            return self._peer

    assert limits.caller_of(Ctx("ipv4:10.1.2.3:5555")) == "address 10.1.2.3"
    assert limits.caller_of(Ctx("ipv6:[::1]:5555")) == "address ::1"
    assert limits.caller_of(Ctx("unix:/tmp/s")) == "address /tmp/s"


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(Exception, match="streams_per_caller must be >= 1"):
        limits.CallLimits.from_settings(replace(Settings(), max_streams_per_caller=0))
    with pytest.raises(Exception, match="idle_timeout_s must be > 0"):
        limits.CallLimits.from_settings(replace(Settings(), stream_idle_timeout_s=0))


# --- default deadline; graph work does not take every thread --------------------------------


def test_a_call_without_a_deadline_gets_the_servers_default() -> None:
    settings = replace(Settings(), rpc_default_deadline_s=1.0)

    async def scenario(channel: grpc.aio.Channel, _sel: ToySelection) -> None:
        select = selection_pb2_grpc.SelectionServiceStub(channel)
        t0 = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await select.ExplainSelection(selection_pb2.ExplainSelectionRequest(plan_id="hang"))
        assert info.value.code() == DEADLINE_EXCEEDED
        assert "MLLGRAPH_RPC_DEFAULT_DEADLINE_S" in info.value.details()
        assert 0.9 <= time.monotonic() - t0 < 5
        seen = await select.ExplainSelection(
            selection_pb2.ExplainSelectionRequest(plan_id="deadline")
        )
        assert 0 < float(seen.notes[0]) <= 1.0

    run(scenario, settings)


def test_graph_work_leaves_threads_for_database_free_calls() -> None:
    """More calls than GRAPH_THREADS block on the "database" (no client deadline): a
    database-free call is still served at once, the blocked ones end at the default deadline,
    those that found no graph thread say so."""
    settings = replace(Settings(), rpc_default_deadline_s=3.0)
    n = GRAPH_THREADS + 38  # 70, as in the probe

    async def scenario(channel: grpc.aio.Channel, _sel: ToySelection) -> None:
        select = selection_pb2_grpc.SelectionServiceStub(channel)
        hang = selection_pb2.ExplainSelectionRequest(plan_id="graph-hang")
        blocked = [asyncio.ensure_future(select.ExplainSelection(hang)) for _ in range(n)]
        await asyncio.sleep(0.5)
        free = selection_pb2.ExplainSelectionRequest(plan_id="free")
        assert (await select.ExplainSelection(free, timeout=2)).notes == ["database-free"]
        results = await asyncio.gather(*blocked, return_exceptions=True)
        codes = [r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert codes == [DEADLINE_EXCEEDED] * n
        no_thread = [r for r in results if "no thread for graph work" in r.details()]
        assert len(no_thread) == n - GRAPH_THREADS

    run(scenario, settings)
