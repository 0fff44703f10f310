"""Admission control of the inference service (mllgraph/reuse/admission.py): the decoded
pixels of all requests in flight stay within one budget.

The budget itself is checked as an asyncio primitive (order, waiting, refusals, deadlines,
cancellation), then through the real service: an inference server over a hand-made bundle
(one small untrained timm model, no Neo4j). Concurrency is observed through the budget's
own state (its queue of waiters, its peak), never through timing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from mllgraph.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted
from mllgraph.reuse.admission import PixelBudget
from mllgraph.settings import Settings
from mllgraph.v1 import inference_pb2, inference_pb2_grpc
from tests.helpers import Loop, two_class_bundle

# --- the budget alone ---------------------------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_budget_grants_in_order_and_never_exceeds_capacity() -> None:
    async def main() -> list[int]:
        budget = PixelBudget(100)
        order: list[int] = []
        await budget.acquire(60)

        async def request(i: int, pixels: int) -> None:
            await budget.acquire(pixels)
            order.append(i)
            assert budget.in_use <= budget.capacity
            await asyncio.sleep(0)
            budget.release(pixels)

        # 50 does not fit beside the 60 held; 10 would, but waits behind it (first come,
        # first served: a stream of small requests cannot starve a large one).
        tasks = [asyncio.create_task(request(0, 50)), asyncio.create_task(request(1, 10))]
        while budget.stats.waited < 2:
            await asyncio.sleep(0)
        assert order == [] and budget.in_use == 60
        budget.release(60)
        await asyncio.gather(*tasks)
        assert budget.in_use == 0 and budget.stats.peak <= 100
        return order

    assert run(main()) == [0, 1]


def test_budget_refuses_what_alone_exceeds_it() -> None:
    async def main() -> None:
        budget = PixelBudget(100)
        with pytest.raises(ResourceExhausted, match="MLLGRAPH_INFER_MAX_INFLIGHT_PIXELS"):
            await budget.acquire(101, what="4 images")
        assert budget.stats.refused == 1 and budget.in_use == 0
        await budget.acquire(100)  # exactly the budget fits
        budget.release(100)

    run(main())
    with pytest.raises(InvalidArgument):
        PixelBudget(0)


def test_budget_wait_ends_at_the_deadline_and_on_cancel() -> None:
    async def main() -> None:
        budget = PixelBudget(100)
        await budget.acquire(90)
        with pytest.raises(DeadlineExceeded, match="90 of 100"):
            await budget.acquire(20, deadline=time.monotonic() + 0.05)
        assert budget.stats.expired == 1 and budget.in_use == 90
        waiter = asyncio.create_task(budget.acquire(20))
        while budget.stats.waited < 2:
            await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        # Neither gave-up waiter holds anything or blocks the next one.
        small = asyncio.create_task(budget.acquire(10))
        await asyncio.wait_for(small, 1)
        assert budget.in_use == 100
        budget.release(100)
        assert budget.in_use == 0

    run(main())


def test_reservation_outlives_the_request_while_its_work_runs() -> None:
    """A request that ends (e.g. cancelled) while a thread still decodes its images keeps
    their pixels reserved until that work ends."""
    import concurrent.futures

    async def main() -> None:
        budget = PixelBudget(100)
        work: concurrent.futures.Future[None] = concurrent.futures.Future()
        async with budget.reserve(70) as held:
            held.track(work)
        assert budget.in_use == 70  # the request is over, its decode is not
        waiter = asyncio.create_task(budget.acquire(40))
        while budget.stats.waited < 1:
            await asyncio.sleep(0)
        threading.Thread(target=work.set_result, args=(None,)).start()
        await asyncio.wait_for(waiter, 5)
        assert budget.in_use == 40

    run(main())


# --- through the service ------------------------------------------------------------------

SIDE = 64
PIXELS = SIDE * SIDE  # one raw image
BUDGET = 3 * PIXELS
ARCH, MODEL_ID, PLAN_ID = "test_efficientnet", "admission-model@1", "admission-test-plan"


class Server:
    def __init__(self, loop: Loop, running: Any) -> None:
        self.loop, self.running = loop, running
        self.budget: PixelBudget = running.servicer.budget
        self.channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        self.stub = inference_pb2_grpc.InferenceServiceStub(self.channel)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from services import inference

    bundle = two_class_bundle(tmp_path_factory.mktemp("admission"), ARCH, MODEL_ID, PLAN_ID)
    settings = dataclasses.replace(
        Settings(device="cpu"), infer_max_inflight_pixels=BUDGET, infer_max_batch=8
    )
    loop = Loop()
    running = loop.call(inference.start_server(settings, port=0, bundle=bundle, use_neo4j=False))
    s = Server(loop, running)
    try:
        yield s
    finally:
        s.channel.close()
        loop.call(running.stop(1.0))
        loop.close()


def classify(server: Server, n: int, timeout: float = 60) -> Any:
    rng = np.random.default_rng(n)
    images = [
        inference_pb2.Image(
            raw=inference_pb2.RawArray(
                data=rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8).tobytes(),
                shape=[SIDE, SIDE],
                dtype="uint8",
            )
        )
        for _ in range(n)
    ]
    req = inference_pb2.ClassifyRequest(plan_id=PLAN_ID, images=images)
    return server.stub.Classify(req, timeout=timeout)


def test_concurrent_requests_wait_for_room_and_never_exceed_the_budget(server: Server) -> None:
    budget = server.budget
    # Hold the whole budget, so every request below must queue; then let them in.
    server.loop.call(budget.acquire(BUDGET))
    waited, admitted = budget.stats.waited, budget.stats.admitted
    results: list[Any] = []
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            results.append(classify(server, n))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(1 + i % 3,)) for i in range(8)]
    for t in threads:
        t.start()
    end = time.monotonic() + 30
    while budget.stats.waited < waited + 8 and time.monotonic() < end:
        time.sleep(0.01)
    assert budget.stats.waited == waited + 8, "requests did not queue for the budget"
    assert budget.in_use == BUDGET and budget.stats.admitted == admitted
    budget.stats.peak = 0
    server.loop.loop.call_soon_threadsafe(budget.release, BUDGET)
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(len(r.predictions) for r in results) == sorted(1 + i % 3 for i in range(8))
    assert budget.stats.admitted == admitted + 8
    assert 0 < budget.stats.peak <= BUDGET  # 18 images of 64x64 went through 3 at a time at most
    assert budget.in_use == 0


def test_a_request_over_the_whole_budget_is_refused(server: Server) -> None:
    refused = server.budget.stats.refused
    with pytest.raises(grpc.RpcError) as info:
        classify(server, 4)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = info.value.details()
    assert f"{4 * PIXELS:,} pixels" in details and f"{BUDGET:,}" in details
    assert "MLLGRAPH_INFER_MAX_INFLIGHT_PIXELS" in details
    assert server.budget.stats.refused == refused + 1 and server.budget.in_use == 0
    assert len(classify(server, 3).predictions) == 3  # the service still serves


def test_waiting_ends_at_the_deadline(server: Server) -> None:
    budget = server.budget
    server.loop.call(budget.acquire(BUDGET - PIXELS))
    try:
        expired = budget.stats.expired
        with pytest.raises(grpc.RpcError) as info:
            classify(server, 2, timeout=1.0)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        end = time.monotonic() + 5
        while budget.stats.expired == expired and time.monotonic() < end:
            time.sleep(0.02)
        assert budget.stats.expired == expired + 1
        assert len(classify(server, 1).predictions) == 1  # what fits still goes through
    finally:
        server.loop.loop.call_soon_threadsafe(budget.release, BUDGET - PIXELS)
    end = time.monotonic() + 5
    while budget.in_use and time.monotonic() < end:
        time.sleep(0.02)
    assert budget.in_use == 0


def test_settings_reads_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLLGRAPH_INFER_MAX_INFLIGHT_PIXELS", "12345")
    assert Settings.from_env().infer_max_inflight_pixels == 12345


def test_the_memory_script_runs() -> None:
    """scripts/admission_memory.py (the memory figures, and `bench reliability`'s memory
    check) still runs end to end: a service subprocess, requests, RSS read. Its figures are
    not checked here (machine-dependent)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "scripts/admission_memory.py", "256", "0", "2", "1"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "codes=['OK']" in done.stdout and "peak_rss_mb=" in done.stdout, done.stdout
