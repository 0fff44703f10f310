"""Prometheus endpoints, request ids and structured logs of the services (services/telemetry.py).

The inference service serves a hand-made bundle (one small untrained timm model, no Neo4j);
the ingestion service runs against the suite's Neo4j. Each test scrapes /metrics over HTTP
after a few RPCs and reads the figures back with prometheus_client's own parser.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mllgraph.label import work as label_work
from mllgraph.settings import Settings
from mllgraph.v1 import inference_pb2, inference_pb2_grpc, ingestion_pb2, ingestion_pb2_grpc
from services import common
from tests.helpers import Loop, two_class_bundle

ARCH = "test_efficientnet"
PLAN_ID = "metrics-test-plan"
MODEL_ID = "metrics-model@1"
INFERENCE = "mllgraph.v1.InferenceService"
INGESTION = "mllgraph.v1.IngestionService"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of http://127.0.0.1:port/metrics as {(name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape_when(port: int, ready: Callable[[dict], bool], timeout_s: float = 10.0) -> dict:
    """A scrape once `ready` holds for it (or the last one after `timeout_s`). A call that
    ends by abort sends its status before the server's bookkeeping of it runs, so a client
    may see the answer a moment before the counters do."""
    end = time.monotonic() + timeout_s
    samples = scrape(port)
    while not ready(samples) and time.monotonic() < end:
        time.sleep(0.05)
        samples = scrape(port)
    return samples


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def inference_server(loop: Loop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from services import inference

    bundle = two_class_bundle(tmp_path_factory.mktemp("metrics"), ARCH, MODEL_ID, PLAN_ID)
    settings = Settings(device="cpu", inference_metrics_port=free_port(), infer_max_batch=4)
    running = loop.call(inference.start_server(settings, port=0, bundle=bundle, use_neo4j=False))
    running.metrics_port = settings.inference_metrics_port
    yield running
    loop.call(running.stop(1.0))


def classify(stub: Any, n: int, **kwargs: Any) -> Any:
    rng = np.random.default_rng(n)
    images = [
        inference_pb2.Image(
            raw=inference_pb2.RawArray(
                data=rng.integers(0, 256, (28, 28), dtype=np.uint8).tobytes(),
                shape=[28, 28],
                dtype="uint8",
            )
        )
        for _ in range(n)
    ]
    return stub.Classify(
        inference_pb2.ClassifyRequest(plan_id=PLAN_ID, images=images), timeout=60, **kwargs
    )


def test_inference_metrics_move_with_the_calls(inference_server: Any) -> None:
    port = inference_server.metrics_port
    before = scrape(port)
    with grpc.insecure_channel(f"127.0.0.1:{inference_server.port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        for n in (1, 3, 6):  # 6 > infer_max_batch=4: two model passes (4 + 2)
            assert len(classify(stub, n).predictions) == n
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as e:
                stub.Classify(inference_pb2.ClassifyRequest(), timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    calls = ("mllgraph_rpc_latency_seconds_count", (("method", "Classify"), ("service", INFERENCE)))
    after = scrape_when(port, lambda x: x.get(calls, 0) - before.get(calls, 0) >= 5)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert (
        moved("mllgraph_rpc_requests_total", service=INFERENCE, method="Classify", code="OK") == 3
    )
    for name in ("mllgraph_rpc_requests_total", "mllgraph_rpc_errors_total"):
        labels = {"service": INFERENCE, "method": "Classify", "code": "INVALID_ARGUMENT"}
        assert moved(name, **labels) == 2
    assert value(after, "mllgraph_rpc_errors_total", **{**labels, "code": "OK"}) == 0
    assert moved("mllgraph_rpc_latency_seconds_count", service=INFERENCE, method="Classify") == 5
    assert moved("mllgraph_rpc_latency_seconds_sum", service=INFERENCE, method="Classify") > 0
    # One load, then hits; the model's bytes are held.
    assert value(after, "mllgraph_model_cache_misses_total") == 1  # one model, loaded once
    assert value(after, "mllgraph_model_cache_loads_total") == 1
    assert moved("mllgraph_model_cache_hits_total") >= 2  # at least 3 passes in all
    assert value(after, "mllgraph_model_cache_bytes") > 0
    assert value(after, "mllgraph_model_cache_models") == 1
    # Batches: sizes 1, 3, 4 and 2 (whatever merging happened, 10 images in all).
    assert moved("mllgraph_batch_size_sum") == 10
    assert moved("mllgraph_batch_size_count") >= 3
    assert value(after, "mllgraph_batch_size_bucket", le="4.0") == value(
        after, "mllgraph_batch_size_count"
    )
    assert moved("mllgraph_batcher_requests_total") >= 3
    # Admission: every request's pixels were reserved and given back.
    assert value(after, "mllgraph_inflight_pixels") == 0
    assert value(after, "mllgraph_inflight_pixels_budget") == Settings().infer_max_inflight_pixels
    assert value(after, "mllgraph_inflight_pixels_peak") > 0


def test_outputs_kept_by_image_show_in_the_metrics(inference_server: Any) -> None:
    port = inference_server.metrics_port
    before = scrape(port)
    with grpc.insecure_channel(f"127.0.0.1:{inference_server.port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        first = classify(stub, 2)  # two images no other test sends (seed 2)
        again = classify(stub, 2)
    assert [t.cached_images for t in first.model_timings] == [0]
    assert [t.cached_images for t in again.model_timings] == [2]
    hits = ("mllgraph_output_cache_hits_total", ())
    after = scrape_when(port, lambda x: x.get(hits, 0) - before.get(hits, 0) >= 2)
    assert (
        value(after, "mllgraph_output_cache_hits_total")
        - value(before, "mllgraph_output_cache_hits_total")
        == 2
    )
    assert (
        value(after, "mllgraph_output_cache_misses_total")
        - value(before, "mllgraph_output_cache_misses_total")
        == 2
    )
    assert value(after, "mllgraph_output_cache_bytes") > 0


def test_request_id_is_echoed_and_logged(
    inference_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    formatter = common.KeyValueFormatter()
    black = inference_pb2.Image(
        raw=inference_pb2.RawArray(data=bytes(28 * 28), shape=[28, 28], dtype="uint8")
    )
    with (
        grpc.insecure_channel(f"127.0.0.1:{inference_server.port}") as channel,
        caplog.at_level(logging.INFO, logger="mllgraph.services"),
    ):
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        # A call that fails: the id still comes back in the trailing metadata.
        with pytest.raises(grpc.RpcError) as e:
            stub.Classify(
                inference_pb2.ClassifyRequest(),
                metadata=[("x-request-id", "req-42.abc")],
                timeout=10,
            )
        assert dict(e.value.trailing_metadata())["x-request-id"] == "req-42.abc"
        # A call that succeeds.
        response, call = stub.Classify.with_call(
            inference_pb2.ClassifyRequest(plan_id=PLAN_ID, images=[black]),
            metadata=[("x-request-id", "req-43")],
            timeout=60,
        )
        assert len(response.predictions) == 1
        assert dict(call.trailing_metadata())["x-request-id"] == "req-43"
        # No id sent (or a malformed one): the server makes one and returns it.
        _, call = stub.Classify.with_call(
            inference_pb2.ClassifyRequest(plan_id=PLAN_ID, images=[black]),
            metadata=[("x-request-id", "bad id with spaces")],
            timeout=60,
        )
        made = dict(call.trailing_metadata())["x-request-id"]
        assert made and " " not in made
    lines = [formatter.format(r) for r in caplog.records if r.name == "mllgraph.services"]
    rpc_lines = [x for x in lines if " rpc method=InferenceServicer.Classify " in x]
    assert any("status=INVALID_ARGUMENT" in x and "request_id=req-42.abc" in x for x in rpc_lines)
    assert any("status=OK" in x and "request_id=req-43" in x for x in rpc_lines)
    assert any(f"request_id={made}" in x for x in rpc_lines)


def test_metrics_endpoint_is_off_unless_configured(loop: Loop) -> None:
    from services import inference

    port = free_port()
    running = loop.call(inference.start_server(Settings(device="cpu"), port=0, use_neo4j=False))
    try:
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    finally:
        loop.call(running.stop(0.5))


def test_metrics_endpoint_stops_with_the_server(loop: Loop) -> None:
    from services import inference

    port = free_port()
    settings = Settings(device="cpu", inference_metrics_port=port)
    running = loop.call(inference.start_server(settings, port=0, use_neo4j=False))
    assert ("mllgraph_model_cache_hits_total", ()) in scrape(port)
    loop.call(running.stop(0.5))
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_ingestion_metrics_count_calls_and_label_job_states(
    loop: Loop, neo4j_settings: Settings, graph: Any
) -> None:
    from services import ingestion

    settings = dataclasses.replace(neo4j_settings, ingestion_metrics_port=free_port())
    running = loop.call(ingestion.start(settings, 0, health_interval=0.5))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
            stub.ListModels(ingestion_pb2.ListModelsRequest(), timeout=60)
            with pytest.raises(grpc.RpcError) as e:
                stub.GetModel(ingestion_pb2.GetModelRequest(model_id="nobody@1"), timeout=60)
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
        errors = (
            "mllgraph_rpc_errors_total",
            (("code", "NOT_FOUND"), ("method", "GetModel"), ("service", INGESTION)),
        )
        samples = scrape_when(settings.ingestion_metrics_port, lambda x: errors in x)
        assert (
            value(
                samples,
                "mllgraph_rpc_requests_total",
                service=INGESTION,
                method="ListModels",
                code="OK",
            )
            == 1
        )
        assert value(
            samples, "mllgraph_rpc_errors_total", service=INGESTION, method="GetModel",
            code="NOT_FOUND",
        ) == 1  # fmt: skip
        states = {
            dict(labels)["state"]: v
            for (name, labels), v in samples.items()
            if name == "mllgraph_label_jobs"
        }
        assert states == {"queued": 0, "running": 0, "done": 0, "failed": 0}
        # Health checks are not counted as RPCs of the service.
        assert not any("Health" in dict(labels).get("service", "") for _, labels in samples)
    finally:
        loop.call(running.close(1.0))


def test_label_job_states_are_exposed_as_they_change() -> None:
    """The ingestion service's job queue, with a job body that finishes on a signal or fails,
    read through the same collector the service registers."""
    from prometheus_client import CollectorRegistry, generate_latest

    from mllgraph.errors import FailedPrecondition
    from services import label_jobs, telemetry

    async def scenario() -> list[dict[str, float]]:
        release = asyncio.Event()

        async def run(job: Any) -> str:
            if job.model_id == "bad@1":
                raise FailedPrecondition("no probes")
            await release.wait()
            return "labelled"

        queue = label_jobs.LabelJobQueue(run)
        registry = CollectorRegistry()
        registry.register(telemetry.label_job_collector(queue.state_counts))

        def states() -> dict[str, float]:
            text = generate_latest(registry).decode()
            return {
                s.labels["state"]: s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "mllgraph_label_jobs"
            }

        seen = [states()]
        for mid in ("good@1", "bad@1"):
            queue.submit(mid, label_work.LabelOptions(), heads_total=2)
        await asyncio.sleep(0.05)  # the first runs (waiting), the second waits its turn
        seen.append(states())
        release.set()
        for _ in range(200):
            await asyncio.sleep(0.01)
            counts = queue.state_counts()
            if counts["queued"] == counts["running"] == 0:
                break
        seen.append(states())
        await queue.close(1.0)
        return seen

    empty, busy, finished = asyncio.run(scenario())
    assert empty == {"queued": 0, "running": 0, "done": 0, "failed": 0}
    assert busy == {"queued": 1, "running": 1, "done": 0, "failed": 0}
    assert finished == {"queued": 0, "running": 0, "done": 1, "failed": 1}
