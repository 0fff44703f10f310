"""A Neo4j of this module's own (never the session's shared server): stored plans are bounded
(issue #12 §4), and with the database frozen (SIGSTOP, then SIGCONT) graph-needing RPCs answer
UNAVAILABLE or DEADLINE_EXCEEDED from the server within their deadline, a cached plan keeps
classifying, and everything answers again once the database resumes (issue #12 §2).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch

from mllgraph.combine import rule as combine
from mllgraph.errors import DeadlineExceeded, NotFound, Unavailable
from mllgraph.graph import db, deadline
from mllgraph.graph.db import Graph
from mllgraph.hub import loading, registry
from mllgraph.hubs.fashion import experts as fashion_experts
from mllgraph.select import chco, retention
from mllgraph.select import run as select
from mllgraph.settings import Settings
from mllgraph.v1 import inference_pb2, inference_pb2_grpc, ingestion_pb2, ingestion_pb2_grpc
from services import inference, ingestion
from services.selection import SelectionServicer
from tests.helpers import Loop

pytestmark = pytest.mark.neo4j

SANDAL, GYM_SHOE = "n04133789", "n03472535"
PREFIX = f"frozentest-{uuid.uuid4().hex[:8]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def own_neo4j(neo4j_settings: Settings) -> Iterator[Settings]:
    """A throwaway project-managed Neo4j for this module only (this module freezes it)."""
    from mllgraph.graph import neo4j_server

    if not neo4j_settings.uses_local_neo4j:
        pytest.skip("freezing needs a Neo4j process of our own (the suite uses another one)")
    home = Path(tempfile.mkdtemp(prefix="mllgraph-frozen-test-"))
    settings = neo4j_server.scratch_settings(Settings.from_env(), home, _free_port())
    settings = replace(settings, device="cpu")
    try:
        neo4j_server.start(settings)
        yield settings
    finally:
        pid = neo4j_server.running_pid(settings)
        if pid is not None:
            os.kill(pid, signal.SIGCONT)  # never leave it stopped
            neo4j_server.stop(settings)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def own_graph(own_neo4j: Settings) -> Iterator[Graph]:
    graph = Graph(own_neo4j)
    graph.verify(timeout_s=60)
    graph.write(
        "graph/create_concepts",
        rows=[
            {"wnid": w, "name": n, "lemmas": [n], "definition": "", "lexname": "noun.artifact",
             "depth": 1, "source": "wordnet"}
            for w, n in ((SANDAL, "sandal"), (GYM_SHOE, "gym_shoe"))
        ],
    )  # fmt: skip
    yield graph
    graph.close()


def _put_plan(graph: Graph, plan_id: str, body: dict[str, Any] | None = None) -> None:
    body = body or {"plan_id": plan_id}
    graph.write("select/plan_put", id=plan_id, body=json.dumps(body), catalogue_version=0)


def _plan_ids(graph: Graph) -> set[str]:
    return {r["id"] for r in graph.run_user_query("MATCH (p:Plan) RETURN p.id AS id")}


# --- plans are bounded ----------------------------------------------------------------------


def test_plans_are_evicted_by_count_then_by_age(own_neo4j, own_graph) -> None:
    graph = own_graph
    select.ensure_schema(graph)
    ids = [f"{PREFIX}-count-{i}" for i in range(5)]
    for pid in ids:
        _put_plan(graph, pid)
    by_count = replace(own_neo4j, plan_max_count=3, plan_max_age_s=0)
    assert retention.evict_plans(graph, by_count) == 2  # this database holds only these
    assert _plan_ids(graph) == set(ids[2:])  # the newest three stay
    with pytest.raises(NotFound):
        select.get_plan(graph, ids[0])
    assert select.get_plan(graph, ids[4])["plan_id"] == ids[4]
    assert retention.evict_plans(graph, by_count) == 0  # within bounds: nothing to do

    time.sleep(1.5)
    fresh = f"{PREFIX}-fresh"
    _put_plan(graph, fresh)
    by_age = replace(own_neo4j, plan_max_count=100, plan_max_age_s=1.0)
    assert retention.evict_plans(graph, by_age) == 3
    assert _plan_ids(graph) == {fresh}
    # Stored again under the same id after eviction (what SelectHeads does on a miss).
    _put_plan(graph, ids[4])
    assert select.get_plan(graph, ids[4])["plan_id"] == ids[4]


def test_the_selection_service_sweeps_plans(own_neo4j, own_graph) -> None:
    graph = own_graph
    for i in range(4):
        _put_plan(graph, f"{PREFIX}-svc-{i}")
    settings = replace(own_neo4j, plan_max_count=2, plan_max_age_s=0)
    servicer = SelectionServicer(settings, graph=graph, resolver=None)

    async def scenario() -> tuple[int, int]:
        first = await servicer.evict_plans()
        throttled = await servicer.evict_plans(throttle=60)  # a sweep ran just now
        return first, throttled

    first, throttled = asyncio.run(scenario())
    assert first >= 2 and throttled == 0
    assert len(_plan_ids(graph)) == 2


def test_closing_the_selection_service_ends_its_evictions(own_neo4j, own_graph) -> None:
    """An eviction started after SelectHeads is waited for up to the grace period, then
    cancelled: none is left pending when the event loop closes."""
    servicer = SelectionServicer(own_neo4j, graph=own_graph, resolver=None)
    finished: list[str] = []

    async def quick() -> int:
        await asyncio.sleep(0.01)
        finished.append("quick")
        return 0

    async def stuck() -> int:
        await asyncio.sleep(3600)
        return 0

    async def scenario() -> tuple[asyncio.Task[int], asyncio.Task[int]]:
        tasks = asyncio.create_task(quick()), asyncio.create_task(stuck())
        servicer._background.update(tasks)
        await servicer.drain(0.5)
        return tasks

    done, hung = asyncio.run(scenario())
    assert finished == ["quick"] and done.done() and not done.cancelled()
    assert hung.cancelled()


# --- a frozen database ----------------------------------------------------------------------


def _one_model_plan(mid: str, plan_id: str) -> dict[str, Any]:
    assignment = [
        combine.ClassAssignment(i, (combine.HeadGroup(mid, (i,), "exact", 0.8),)) for i in range(2)
    ]
    cp = chco.Plan(
        assignment=assignment,
        params=combine.default_params(assignment),
        estimated_accuracy=float("nan"),
        per_class_accuracy=[float("nan")] * 2,
        uncovered=[],
        models=[mid],
        solver="none",
        evaluated=0,
    )
    return {
        "plan_id": plan_id,
        "classes": [{"name": n, "heads": []} for n in ("sandal", "sneaker")],
        "models": [mid],
        "combination": {"schema_version": 1, "plan": cp.to_dict()},
    }


def _images(n: int = 2) -> list[inference_pb2.Image]:
    rng = np.random.default_rng(0)
    return [
        inference_pb2.Image(
            raw=inference_pb2.RawArray(
                data=rng.integers(0, 256, (28, 28), dtype=np.uint8).tobytes(),
                shape=[28, 28],
                dtype="uint8",
            )
        )
        for _ in range(n)
    ]


def _probabilities(resp: inference_pb2.ClassifyResponse) -> np.ndarray:
    return np.array([list(p.class_probabilities) for p in resp.predictions])


def test_frozen_database_answers_within_deadlines_and_cached_plans_classify(
    own_neo4j, own_graph, tmp_path
) -> None:
    from mllgraph.graph import neo4j_server

    settings, graph = own_neo4j, own_graph
    torch.manual_seed(1)
    path = loading.save_weights(
        loading.build_timm("test_efficientnet", 2, 1), tmp_path / "w.safetensors"
    )
    mid = registry.register_model(
        graph,
        settings,
        registry.Registration(
            name=f"{PREFIX}-m",
            arch="test_efficientnet",
            weights_path=path,
            wnids=[SANDAL, GYM_SHOE],
            input_spec=fashion_experts.FASHION_INPUT_SPEC,
        ),
    ).record["id"]
    plan_id = f"{PREFIX}-plan"
    _put_plan(graph, plan_id, _one_model_plan(mid, plan_id))

    loop = Loop()
    infer = loop.run(inference.start_server(settings, port=0, health_interval_s=1.0))
    ingest = loop.run(ingestion.start(settings, 0, health_interval=1.0))
    channels = [
        grpc.insecure_channel(f"127.0.0.1:{infer.port}"),
        grpc.insecure_channel(f"127.0.0.1:{ingest.port}"),
    ]
    classify = inference_pb2_grpc.InferenceServiceStub(channels[0]).Classify
    get_model = ingestion_pb2_grpc.IngestionServiceStub(channels[1]).GetModel
    pid = neo4j_server.running_pid(settings)
    assert pid is not None
    try:
        cached = inference_pb2.ClassifyRequest(plan_id=plan_id, images=_images())
        before = _probabilities(classify(cached, timeout=60))  # loads and caches the plan
        get_model(ingestion_pb2.GetModelRequest(model_id=mid), timeout=30)

        os.kill(pid, signal.SIGSTOP)
        try:
            graph_calls: list[tuple[str, Any, Any]] = []
            for i in range(8):
                unknown = inference_pb2.ClassifyRequest(plan_id=f"{PREFIX}-x{i}", images=_images(1))
                graph_calls.append(("Classify", classify, unknown))
                graph_calls.append(
                    ("GetModel", get_model, ingestion_pb2.GetModelRequest(model_id=mid))
                )
            with ThreadPoolExecutor(len(graph_calls)) as pool:
                futures = [pool.submit(_call, call, req, 3.0) for _, call, req in graph_calls]
                time.sleep(0.5)  # they are waiting on the frozen database now
                during = [_probabilities(classify(cached, timeout=10)) for _ in range(3)]
                answers = [f.result() for f in futures]
            # The Graph itself: each call waits no longer than its deadline; once all its
            # threads wait on the frozen server, the next call is refused at once.
            for _ in range(db.GRAPH_WORKERS):
                with deadline.within(0.1), pytest.raises(DeadlineExceeded, match="Neo4j"):
                    graph.read("hub/catalogue_version")
            with deadline.within(30), pytest.raises(Unavailable, match="still waiting"):
                graph.read("hub/catalogue_version")
        finally:
            os.kill(pid, signal.SIGCONT)

        for d in during:  # the cached plan classified while the database was frozen
            np.testing.assert_allclose(d, before, atol=1e-6)
        for (method, _, _), (code, details) in zip(graph_calls, answers, strict=True):
            assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            # The server's own answer (about Neo4j or the graph call it could not make in
            # time), not the client giving up at its deadline ("Deadline Exceeded").
            assert re.search(r"neo4j|graph call", details, re.I), (method, code, details)

        # Resumed: served again without restarting anything.
        end = time.monotonic() + 60
        while True:
            code, details = _call(get_model, ingestion_pb2.GetModelRequest(model_id=mid), 10.0)
            if code == grpc.StatusCode.OK or time.monotonic() > end:
                break
            time.sleep(0.5)
        assert code == grpc.StatusCode.OK, details
        gone = inference_pb2.ClassifyRequest(plan_id=f"{PREFIX}-nope", images=_images(1))
        assert _call(classify, gone, 10.0)[0] == grpc.StatusCode.NOT_FOUND
        np.testing.assert_allclose(_probabilities(classify(cached, timeout=30)), before, atol=1e-6)
    finally:
        for channel in channels:
            channel.close()
        loop.run(infer.stop(1.0))
        loop.run(ingest.close(1.0))
        loop.close()
        registry.delete_model(graph, settings, mid)


def _call(call: Any, request: Any, timeout: float) -> tuple[grpc.StatusCode, str]:
    try:
        call(request, timeout=timeout)
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


def test_calls_without_a_deadline_end_and_uploads_go_on_while_frozen(own_neo4j) -> None:
    """Issue 25 §5: 70 GetModel calls sent without a deadline while the database is frozen
    end at the server's default deadline (naming Neo4j or the graph), and a database-free
    UploadWeights made meanwhile is served: graph work cannot take every thread."""
    from mllgraph.graph import neo4j_server

    settings = replace(own_neo4j, rpc_default_deadline_s=4.0)
    loop = Loop()
    ingest = loop.run(ingestion.start(settings, 0, health_interval=1.0))
    channel = grpc.insecure_channel(f"127.0.0.1:{ingest.port}")
    stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
    unknown = ingestion_pb2.GetModelRequest(model_id=f"{PREFIX}-none@1")
    pid = neo4j_server.running_pid(settings)
    assert pid is not None
    try:
        assert _call(stub.GetModel, unknown, 30.0)[0] == grpc.StatusCode.NOT_FOUND  # connected
        os.kill(pid, signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(70) as pool:
                t0 = time.monotonic()
                hanging = [pool.submit(_call_untimed, stub.GetModel, unknown) for _ in range(70)]
                time.sleep(0.5)  # they are waiting on the frozen database now
                chunk = ingestion_pb2.WeightsChunk(data=b"frozen-graph upload")
                ref = stub.UploadWeights(iter([chunk]), timeout=10)
                uploaded_after = time.monotonic() - t0
                answers = [f.result(timeout=60) for f in hanging]
                all_ended_after = time.monotonic() - t0
        finally:
            os.kill(pid, signal.SIGCONT)
        assert ref.size_bytes == len(chunk.data) and uploaded_after < 5
        assert all_ended_after < settings.rpc_default_deadline_s + 10
        for code, details in answers:
            assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            assert re.search(r"neo4j|graph|default deadline", details, re.I), (code, details)
        end = time.monotonic() + 60  # resumed: answered again (the waiting calls drained)
        while _call(stub.GetModel, unknown, 10.0)[0] != grpc.StatusCode.NOT_FOUND:
            assert time.monotonic() < end, "not answering after the database resumed"
            time.sleep(0.5)
    finally:
        channel.close()
        loop.run(ingest.close(1.0))
        loop.close()


def _call_untimed(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    """`call(request)` with no deadline: (code, details)."""
    try:
        call(request)
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""
