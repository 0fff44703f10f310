"""Replicated inference: `mllgraph serve inference --replicas 2` runs two server processes on
loopback, a round_robin channel over them reaches both, and killing one mid-stream fails over:
the stream on it ends UNAVAILABLE, the stream on the other goes on, and every next call
succeeds on the survivor.

Needs no Neo4j: the replicas run with --no-neo4j and classify with an inline plan that uses no
model (every class uncovered, so the answer is the uniform fallback). Which replica served a
call is read from each replica's own log (one `rpc method=Classify` line per call).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from mllgraph import wire
from mllgraph.combine import rule as combine
from mllgraph.errors import InvalidArgument
from mllgraph.select import chco
from mllgraph.v1 import inference_pb2, inference_pb2_grpc
from services import replicas

CLASSES = ("dog", "cat", "horse")
SERVED = re.compile(r"rpc method=\S*\bClassify status=OK")
START_TIMEOUT_S = 180  # two processes importing torch on a loaded 2-core machine


def _free_base(n: int) -> int:
    """A port p with p..p+n-1 all free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65536:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no run of free ports")


def _request(tag: str) -> inference_pb2.ClassifyRequest:
    assignment = [combine.ClassAssignment(i, ()) for i in range(len(CLASSES))]
    plan = chco.Plan(assignment, combine.default_params(assignment), float("nan"),
                     [float("nan")] * 3, [0, 1, 2], [], "none", 0)  # fmt: skip
    doc = {
        "plan_id": "",
        "classes": [{"name": n} for n in CLASSES],
        "combination": {"schema_version": 1, "plan": plan.to_dict()},
    }
    img = np.full((8, 8), 7, np.uint8)
    image = inference_pb2.Image(
        id=tag, raw=inference_pb2.RawArray(data=img.tobytes(), shape=[8, 8], dtype="uint8")
    )
    return inference_pb2.ClassifyRequest(images=[image], inline_plan=wire.inline_plan_to_proto(doc))


def _check(resp: inference_pb2.ClassifyResponse, tag: str) -> None:
    assert [p.image_id for p in resp.predictions] == [tag]
    assert list(resp.uncovered_classes) == list(CLASSES)
    np.testing.assert_allclose(list(resp.predictions[0].class_probabilities), [1 / 3] * 3)


def _served(log_dir: Path, port: int) -> int:
    """Classify calls a replica logged as served."""
    path = log_dir / f"inference-{port}.log"
    text = path.read_text(errors="replace") if path.is_file() else ""
    return len(SERVED.findall(text))


def _wait(predicate: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def two_replicas(tmp_path: Path) -> Iterator[dict[str, Any]]:
    base = _free_base(2)
    ports = [base, base + 1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "mllgraph", "serve", "inference", "--replicas", "2"]
    cmd += ["--port", str(base), "--log-dir", str(tmp_path), "--no-neo4j", "--grace", "1"]
    supervisor = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        for port in ports:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            try:
                grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT_S)
            finally:
                channel.close()
        pids = {p: int((tmp_path / f"inference-{p}.pid").read_text()) for p in ports}
        yield {"ports": ports, "pids": pids, "logs": tmp_path, "supervisor": supervisor}
    finally:
        if supervisor.poll() is None:
            supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(60)
        except subprocess.TimeoutExpired:
            supervisor.kill()
            supervisor.wait(10)


def test_two_replicas_both_serve_and_fail_over(two_replicas: dict[str, Any]) -> None:
    ports, logs = two_replicas["ports"], two_replicas["logs"]
    channel = replicas.balanced_channel([f"127.0.0.1:{p}" for p in ports])
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    try:
        # Until both replicas' connections are READY, round_robin uses those that are.
        for i in range(20):
            _check(stub.Classify(_request(f"w{i}"), timeout=30, wait_for_ready=True), f"w{i}")
            if all(_served(logs, p) > 0 for p in ports):
                break
        assert all(_served(logs, p) > 0 for p in ports), "one replica never served"
        # Then calls alternate over both.
        before = {p: _served(logs, p) for p in ports}
        for i in range(8):
            _check(stub.Classify(_request(f"u{i}"), timeout=30), f"u{i}")
        _wait(lambda: sum(_served(logs, p) for p in ports) == sum(before.values()) + 8, 10, "logs")
        gained = {p: _served(logs, p) - before[p] for p in ports}
        assert gained == {p: 4 for p in ports}, gained

        # Two streams: round_robin puts them on different replicas.
        import queue

        queues = [queue.Queue(), queue.Queue()]

        def requests(q: queue.Queue) -> Iterator[inference_pb2.ClassifyRequest]:
            while (item := q.get()) is not None:
                yield item

        streams = [stub.ClassifyStream(requests(q), timeout=60) for q in queues]
        for k, (q, s) in enumerate(zip(queues, streams, strict=True)):
            q.put(_request(f"s{k}-0"))
            _check(next(s), f"s{k}-0")

        # Kill one replica mid-stream.
        victim, survivor = ports
        os.kill(two_replicas["pids"][victim], signal.SIGKILL)
        outcomes = []
        for k, (q, s) in enumerate(zip(queues, streams, strict=True)):
            q.put(_request(f"s{k}-1"))
            try:
                _check(next(s), f"s{k}-1")
                outcomes.append("ok")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, e
                outcomes.append("unavailable")
        assert sorted(outcomes) == ["ok", "unavailable"], outcomes
        for q in queues:
            q.put(None)

        # Every next call succeeds, on the survivor.
        served = _served(logs, survivor)
        for i in range(6):
            _check(stub.Classify(_request(f"a{i}"), timeout=30), f"a{i}")
        _wait(lambda: _served(logs, survivor) >= served + 6, 10, "the survivor's log")
        assert _served(logs, survivor) == served + 6
    finally:
        channel.close()

    # The supervisor goes on while one replica lives, and stops it on SIGTERM.
    supervisor = two_replicas["supervisor"]
    assert supervisor.poll() is None
    supervisor.send_signal(signal.SIGTERM)
    _, err = supervisor.communicate(timeout=60)
    assert supervisor.returncode == 1, err  # one replica was killed: reported as a failure
    assert f"replica_exited pid={two_replicas['pids'][victim]} rc=-9" in err


def test_targets_and_ports() -> None:
    assert replicas.target_for(["127.0.0.1:5000", "127.0.0.1:5001"]) == (
        "ipv4:127.0.0.1:5000,127.0.0.1:5001"
    )
    assert replicas.target_for(["[::1]:5000", "[::1]:5001"]) == "ipv6:[::1]:5000,[::1]:5001"
    assert replicas.target_for(["dns:///inference:50053"]) == "dns:///inference:50053"
    with pytest.raises(InvalidArgument):
        replicas.target_for([])
    assert replicas.replica_ports(3, None, 7000) == [7000, 7001, 7002]
    assert replicas.replica_ports(None, "7005,7001", 7000) == [7005, 7001]
    with pytest.raises(InvalidArgument):
        replicas.replica_ports(0, None, 7000)
    with pytest.raises(InvalidArgument):
        replicas.replica_ports(None, "7000,7000", 1)
    config = replicas.service_config()
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
