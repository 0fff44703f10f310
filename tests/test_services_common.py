"""services.common: error mapping, the rpc wrapper, health, reflection, graceful shutdown."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mllgraph import errors
from mllgraph.graph import deadline
from mllgraph.settings import Settings
from mllgraph.v1 import inference_pb2, inference_pb2_grpc, selection_pb2, selection_pb2_grpc
from services.common import (
    GRAPH_SHARE,
    HealthServicer,
    KeyValueFormatter,
    build_server,
    configure_logging,
    full_service_name,
    rpc,
    serve_until_signal,
    set_serving,
)
from services.errors import STATUS_BY_ERROR, status_for

SELECTION = full_service_name(selection_pb2, "SelectionService")
INFERENCE = full_service_name(inference_pb2, "InferenceService")
NAMES = [SELECTION, INFERENCE]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ToySelection(selection_pb2_grpc.SelectionServiceServicer):
    """Every method fails in its own way, or sleeps, on request."""

    @rpc
    async def GetPlan(self, request: Any, context: Any) -> Any:
        raise errors.NotFound(f"no plan with id {request.plan_id!r}")

    @rpc
    async def SelectHeads(self, request: Any, context: Any) -> Any:
        raise errors.InvalidArgument("a task needs at least one class")

    @rpc
    async def ExplainSelection(self, request: Any, context: Any) -> Any:
        if request.plan_id == "boom":
            raise RuntimeError("secret internals")
        if request.plan_id == "abort":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "handler aborted itself")
        if request.plan_id == "slow":
            await asyncio.sleep(0.5)
        if request.plan_id.startswith("/"):  # a weights file of the server's: torch refuses it
            raise errors.InvalidArgument(
                f"weights file {request.plan_id} was refused: {_torch_says(request.plan_id)}"
            )
        if request.plan_id == "deadline":  # what a graph call in a worker thread would see
            left = await asyncio.to_thread(deadline.remaining)
            return selection_pb2.Explanation(plan_id=request.plan_id, notes=[repr(left)])
        return selection_pb2.Explanation(plan_id=request.plan_id, notes=["ok"])


def _torch_says(path: str) -> str:
    """What torch.load(weights_only=True) says about the file at `path`."""
    import torch

    try:
        torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - its message is what the test needs
        return str(e)
    raise AssertionError(f"torch loaded {path}")


class ToyInference(inference_pb2_grpc.InferenceServiceServicer):
    """Echoes plan ids; a request without images is invalid mid-stream."""

    @rpc
    async def ClassifyStream(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[inference_pb2.ClassifyResponse]:
        async for request in request_iterator:
            if not request.images:
                raise errors.InvalidArgument("a request needs at least one image")
            yield inference_pb2.ClassifyResponse(plan_id=request.plan_id)


Scenario = Callable[[grpc.aio.Server, HealthServicer, grpc.aio.Channel], Awaitable[None]]


def run_with_server(scenario: Scenario, **build: Any) -> None:
    """Start the toy server on a free port, run `scenario` against it, stop it."""

    async def main() -> None:
        server, health, port = await build_server(
            0,
            [
                (selection_pb2_grpc.add_SelectionServiceServicer_to_server, ToySelection()),
                (inference_pb2_grpc.add_InferenceServiceServicer_to_server, ToyInference()),
            ],
            NAMES,
            **build,
        )
        assert port > 0
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await asyncio.wait_for(scenario(server, health, channel), timeout=20)
        finally:
            await server.stop(None)

    asyncio.run(main())


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The AioRpcError `call` fails with."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def test_every_domain_error_maps_to_its_grpc_code() -> None:
    for cls in [errors.InvalidArgument, errors.NotFound, errors.Unavailable, errors.MllgraphError]:
        assert STATUS_BY_ERROR[cls] == grpc.StatusCode[cls.grpc_code]
    assert len(STATUS_BY_ERROR) == 11
    assert STATUS_BY_ERROR[errors.Aborted] == grpc.StatusCode.ABORTED
    assert STATUS_BY_ERROR[errors.Unauthenticated] == grpc.StatusCode.UNAUTHENTICATED
    assert STATUS_BY_ERROR[errors.PermissionDenied] == grpc.StatusCode.PERMISSION_DENIED

    class PlanMissing(errors.NotFound):
        pass

    class Busy(errors.MllgraphError):
        grpc_code = "ABORTED"

    assert status_for(PlanMissing("x")) == grpc.StatusCode.NOT_FOUND
    assert status_for(Busy("x")) == grpc.StatusCode.ABORTED
    assert status_for(ValueError("x")) == grpc.StatusCode.INTERNAL


def test_rpc_rejects_sync_handlers() -> None:
    with pytest.raises(TypeError, match="async"):

        @rpc
        def Sync(self: Any, request: Any, context: Any) -> None:  # noqa: N802
            return None


def test_errors_reach_the_client_with_their_status(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mllgraph.services")

    async def scenario(_server: Any, _health: Any, channel: grpc.aio.Channel) -> None:
        stub = selection_pb2_grpc.SelectionServiceStub(channel)

        err = await rpc_error(stub.GetPlan(selection_pb2.GetPlanRequest(plan_id="p-404")))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert err.details() == "no plan with id 'p-404'"

        err = await rpc_error(stub.SelectHeads(selection_pb2.SelectHeadsRequest()))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details() == "a task needs at least one class"

        boom = selection_pb2.ExplainSelectionRequest(plan_id="boom")
        err = await rpc_error(stub.ExplainSelection(boom))
        assert err.code() == grpc.StatusCode.INTERNAL
        assert err.details().startswith("internal error (RuntimeError)")
        assert "ref=" in err.details()
        assert "secret internals" not in err.details()

        abort = selection_pb2.ExplainSelectionRequest(plan_id="abort")
        err = await rpc_error(stub.ExplainSelection(abort))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.details() == "handler aborted itself"

        ok = await stub.ExplainSelection(selection_pb2.ExplainSelectionRequest(plan_id="p1"))
        assert ok.plan_id == "p1" and list(ok.notes) == ["ok"]

    run_with_server(scenario)

    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rpc ")]
    assert any("method=ToySelection.GetPlan status=NOT_FOUND ms=" in m for m in lines)
    assert any("method=ToySelection.SelectHeads status=INVALID_ARGUMENT" in m for m in lines)
    assert any("method=ToySelection.ExplainSelection status=INTERNAL" in m for m in lines)
    assert any("status=PERMISSION_DENIED" in m for m in lines)
    assert any("method=ToySelection.ExplainSelection status=OK" in m for m in lines)
    internal = [r for r in caplog.records if r.getMessage().startswith("rpc_internal_error")]
    assert len(internal) == 1 and internal[0].exc_info is not None
    assert "secret internals" in internal[0].getMessage()


def test_error_details_name_no_server_path_and_no_torch_advice(tmp_path: Any) -> None:
    """Issue 25 §6: a weights file in a temporary folder of the server, refused by torch: the
    caller is told which file (its name) and torch's reason, not the folder or the advice."""
    folder = tmp_path / "models" / "uploads" / ".register-x1"
    folder.mkdir(parents=True)
    weights = folder / "weights.pt"
    weights.write_bytes(b"x" * 100)  # garbage: torch's weights-only loader refuses it

    async def scenario(_server: Any, _health: Any, channel: grpc.aio.Channel) -> None:
        stub = selection_pb2_grpc.SelectionServiceStub(channel)
        request = selection_pb2.ExplainSelectionRequest(plan_id=str(weights))
        details = (await rpc_error(stub.ExplainSelection(request))).details()
        assert details.startswith("weights file …/weights.pt was refused: Weights only load")
        assert "Unsupported operand" in details  # torch's reason stays
        assert str(tmp_path) not in details and ".register-" not in details
        for advice in ("weights_only` set to `False`", "file an issue", "documentation"):
            assert advice not in details, details

    run_with_server(scenario)


def test_concurrent_rpcs_over_the_limit_are_refused_at_once() -> None:
    """build_server(max_concurrent_rpcs=2): a third call while two run is RESOURCE_EXHAUSTED,
    and calls are served again once the two finish."""

    async def scenario(_server: Any, _health: Any, channel: grpc.aio.Channel) -> None:
        stub = selection_pb2_grpc.SelectionServiceStub(channel)
        slow = selection_pb2.ExplainSelectionRequest(plan_id="slow")
        calls = [asyncio.ensure_future(stub.ExplainSelection(slow)) for _ in range(3)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(refused) == 1, results
        assert refused[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert sum(isinstance(r, selection_pb2.Explanation) for r in results) == 2
        ok = await stub.ExplainSelection(selection_pb2.ExplainSelectionRequest(plan_id="p"))
        assert ok.plan_id == "p"

    run_with_server(scenario, max_concurrent_rpcs=2)


def test_graph_calls_get_a_share_of_the_rpc_deadline() -> None:
    """Inside a handler, even in a worker thread, graph calls see less time than the RPC has
    left; without a client deadline, a share of the server's default deadline."""

    async def scenario(_server: Any, _health: Any, channel: grpc.aio.Channel) -> None:
        stub = selection_pb2_grpc.SelectionServiceStub(channel)
        request = selection_pb2.ExplainSelectionRequest(plan_id="deadline")
        timed = await stub.ExplainSelection(request, timeout=5.0)
        left = float(timed.notes[0])
        assert 0 < left <= 5.0 * GRAPH_SHARE + 0.05  # the server sees ~5 s left, plus rounding
        untimed = await stub.ExplainSelection(request)
        default = Settings().rpc_default_deadline_s
        assert 0 < float(untimed.notes[0]) <= default * GRAPH_SHARE + 0.05
        assert deadline.remaining() is None  # nothing leaks out of the handler

    run_with_server(scenario)


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(errors.InvalidArgument, match="max_concurrent_rpcs"):
        asyncio.run(build_server(0, [], [], max_concurrent_rpcs=0))


def test_streaming_errors_end_the_stream_with_their_status() -> None:
    async def scenario(_server: Any, _health: Any, channel: grpc.aio.Channel) -> None:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        image = inference_pb2.Image(encoded=b"not-decoded-here")
        requests = [
            inference_pb2.ClassifyRequest(plan_id="p1", images=[image]),
            inference_pb2.ClassifyRequest(plan_id="p1"),
        ]
        call = stub.ClassifyStream(iter(requests))
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for response in call:
                received.append(response.plan_id)
        assert received == ["p1"]
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "a request needs at least one image"

    run_with_server(scenario)


def test_health_is_not_serving_until_set_serving() -> None:
    async def scenario(_server: Any, health: HealthServicer, channel: grpc.aio.Channel) -> None:
        stub = health_pb2_grpc.HealthStub(channel)

        async def status(service: str) -> int:
            response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            return response.status

        for name in ["", *NAMES]:
            assert await status(name) == NOT_SERVING
        await set_serving(health, NAMES, True)
        for name in ["", *NAMES]:
            assert await status(name) == SERVING
        await set_serving(health, NAMES, False)
        assert await status(SELECTION) == NOT_SERVING
        err = await rpc_error(stub.Check(health_pb2.HealthCheckRequest(service="nope.Service")))
        assert err.code() == grpc.StatusCode.NOT_FOUND

    run_with_server(scenario)


def test_reflection_lists_the_services() -> None:
    async def scenario(_server: Any, _health: Any, channel: grpc.aio.Channel) -> None:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SELECTION),
        ]
        responses = [r async for r in stub.ServerReflectionInfo(iter(requests))]
        listed = {s.name for s in responses[0].list_services_response.service}
        assert listed == {
            SELECTION,
            INFERENCE,
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        assert responses[1].file_descriptor_response.file_descriptor_proto

    run_with_server(scenario)


def test_port_in_use_is_a_clear_error() -> None:
    async def main() -> None:
        first, _, port = await build_server(0, [], [])
        await first.start()
        try:
            with pytest.raises(errors.Unavailable, match=f"127.0.0.1:{port}"):
                await build_server(port, [], [])
        finally:
            await first.stop(None)

    asyncio.run(main())


async def _shutdown_scenario(
    server: grpc.aio.Server,
    health: HealthServicer,
    channel: grpc.aio.Channel,
    trigger: Callable[[], None],
) -> None:
    """In-flight RPCs finish and health watchers see NOT_SERVING after `trigger`."""
    await set_serving(health, NAMES, True)
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=SELECTION)
    )
    assert (await watch.read()).status == SERVING
    stub = selection_pb2_grpc.SelectionServiceStub(channel)
    slow = asyncio.ensure_future(
        stub.ExplainSelection(selection_pb2.ExplainSelectionRequest(plan_id="slow"))
    )
    await asyncio.sleep(0.15)  # the slow call is now in flight
    trigger()
    assert (await watch.read()).status == NOT_SERVING
    watch.cancel()
    assert (await slow).plan_id == "slow"


def _run_shutdown(trigger_factory: Callable[[asyncio.Event], Callable[[], None]]) -> None:
    """Run serve_until_signal and the shutdown scenario side by side."""

    async def scenario(server: Any, health: HealthServicer, channel: grpc.aio.Channel) -> None:
        stop = asyncio.Event()
        serving = asyncio.ensure_future(serve_until_signal(server, health, NAMES, 5.0, stop=stop))
        await asyncio.sleep(0)  # let it install its signal handlers
        await _shutdown_scenario(server, health, channel, trigger_factory(stop))
        await asyncio.wait_for(serving, timeout=10)

    run_with_server(scenario)


def test_stop_event_drains_in_flight_rpcs() -> None:
    _run_shutdown(lambda stop: stop.set)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_sets_not_serving_and_drains() -> None:
    before = signal.getsignal(signal.SIGTERM)

    def factory(_stop: asyncio.Event) -> Callable[[], None]:
        assert signal.getsignal(signal.SIGTERM) is not before, "handler not installed"
        return lambda: os.kill(os.getpid(), signal.SIGTERM)

    _run_shutdown(factory)
    assert signal.getsignal(signal.SIGTERM) == before  # handler removed again


def test_configure_logging_writes_one_line_key_values() -> None:
    root = logging.getLogger()
    level_before = root.level
    configure_logging("DEBUG")
    ours = [h for h in root.handlers if getattr(h, "_mllgraph", False)]
    configure_logging("INFO")
    ours_again = [h for h in root.handlers if getattr(h, "_mllgraph", False)]
    assert len(ours) == 1 and len(ours_again) == 1
    assert root.level == logging.INFO
    root.removeHandler(ours_again[0])
    root.setLevel(level_before)

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter())
    logger = logging.getLogger("mllgraph.test")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("rpc method=%s status=%s ms=%.1f", "S.M", "OK", 1.234)
        try:
            raise ValueError('bad "value"\nsecond line')
        except ValueError:
            logger.exception("rpc_internal_error ref=%s", "abc")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("ts=") and lines[0].endswith(
        "level=WARNING logger=mllgraph.test rpc method=S.M status=OK ms=1.2"
    )
    assert "rpc_internal_error ref=abc exc=" in lines[1]
    assert "Traceback" in lines[1] and "ValueError" in lines[1]
