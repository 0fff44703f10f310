"""Peak RSS of an inference service process under bursts of large all-zero PNGs (issue 12's
memory case: Classify requests of 4 all-zero SIDExSIDE PNGs, CONCURRENCY at a time), with the
in-flight pixel budget set to BUDGET_PIXELS (0: effectively unbounded). The service serves a
hand-made bundle (one small untrained model, no Neo4j) on the CPU in its own process; its
VmHWM is read from /proc after the burst.

usage (from the repository root):
    python scripts/admission_memory.py SIDE BUDGET_PIXELS [REQUESTS CONCURRENCY]
e.g. python scripts/admission_memory.py 4096 134217728 16 8
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

sys.path.insert(0, os.getcwd())
from mllgraph.v1 import inference_pb2, inference_pb2_grpc  # noqa: E402
from tests.helpers import two_class_bundle  # noqa: E402
from tests.test_admission import ARCH, MODEL_ID, PLAN_ID  # noqa: E402

side, budget = int(sys.argv[1]), int(sys.argv[2])
n_requests = int(sys.argv[3]) if len(sys.argv) > 3 else 16
concurrency = int(sys.argv[4]) if len(sys.argv) > 4 else 8

tmp = Path(tempfile.mkdtemp())
two_class_bundle(tmp, ARCH, MODEL_ID, PLAN_ID)  # writes tmp / "bundle"
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
env = {
    **os.environ,
    "MLLGRAPH_DEVICE": "cpu",
    "MLLGRAPH_INFER_MAX_INFLIGHT_PIXELS": str(budget or 10**12),
    "MLLGRAPH_HOME": str(tmp / "home"),
}
proc = subprocess.Popen(
    [
        sys.executable,
        "-m",
        "services.inference",
        "--bundle",
        str(tmp / "bundle"),
        "--no-neo4j",
        "--port",
        str(port),
        "--log-level",
        "WARNING",
    ],
    env=env,
)
buf = io.BytesIO()
Image.fromarray(np.zeros((side, side), np.uint8)).save(buf, "PNG")
png = buf.getvalue()
req = inference_pb2.ClassifyRequest(
    plan_id=PLAN_ID, images=[inference_pb2.Image(encoded=png) for _ in range(4)]
)


def rss(field: str) -> int:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0


channel = grpc.insecure_channel(
    f"127.0.0.1:{port}",
    options=[
        ("grpc.max_send_message_length", 64 << 20),
        ("grpc.max_receive_message_length", 64 << 20),
    ],
)
stub = inference_pb2_grpc.InferenceServiceStub(channel)
end = time.monotonic() + 120
while True:
    try:
        stub.Classify(
            inference_pb2.ClassifyRequest(plan_id=PLAN_ID, images=[req.images[0]]), timeout=60
        )
        break
    except grpc.RpcError:
        assert time.monotonic() < end
        time.sleep(0.5)
idle = rss("VmRSS:")
codes: list[str] = []
t0 = time.monotonic()


def one(_: int) -> None:
    try:
        stub.Classify(req, timeout=600)
        codes.append("OK")
    except grpc.RpcError as e:
        codes.append(e.code().name)


with ThreadPoolExecutor(concurrency) as pool:
    list(pool.map(one, range(n_requests)))
wall = time.monotonic() - t0
peak = rss("VmHWM:")
proc.terminate()
proc.wait(30)
print(
    f"side={side} png_bytes={len(png)} requests={n_requests}x4 concurrency={concurrency} "
    f"budget_pixels={budget or 'unbounded'} idle_rss_mb={idle / 2**20:.0f} "
    f"peak_rss_mb={peak / 2**20:.0f} wall_s={wall:.1f} codes={sorted(set(codes))} "
    f"ok={codes.count('OK')}"
)
