"""`mllgraph bench reliability`: load, bad inputs, auth, faults and memory, each pass/fail
(issue #12 §7). Writes `reports/reliability.{json,md}`.

Loopback only, on a Neo4j of its own (a scratch home and a free port, never the user's
database) with a tiny hub it builds itself: two quickly trained Fashion experts over six
concepts. The three services run as subprocesses (`python -m services.NAME`), so a fault can
kill one. Every loop is bounded in count and in time. Checks, in order:

* load: SelectHeads and Classify at each concurrency for a bounded time: throughput,
  p50/p95/p99, errors by code; passes with 0 errors and p95 at 16 <= 3x p95 at 1;
* bad_inputs: malformed requests per RPC, each answered with its expected code, and the
  catalogue unchanged (node and edge counts before and after);
* auth: an ingestion service with tokens refuses every write RPC without a token
  (UNAUTHENTICATED) and with a read token (PERMISSION_DENIED);
* inference_kill: inference SIGKILLed and restarted gives the same predictions;
* frozen_db: Neo4j SIGSTOPped: every RPC answers within its deadline, cached plans classify;
  all served again after SIGCONT;
* neo4j_stop: Neo4j stopped during traffic: UNAVAILABLE/DEADLINE_EXCEEDED within the
  deadline (never a hang or INTERNAL); served again after a restart, services untouched;
* memory: peak RSS of an inference service under bursts of 4 large all-zero PNGs per request
  (scripts/admission_memory.py) stays under idle RSS + BYTES_PER_PIXEL x its pixel budget.

Latency figures depend on the machine and on what else runs on it: compare within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.eval.bench.common import cpus
from mllgraph.hubs.fashion import experts as fashion_experts
from mllgraph.label import work as label_work
from mllgraph.settings import Settings

REPO = Path(__file__).resolve().parents[3]
CHECKS = ("load", "bad_inputs", "auth", "inference_kill", "frozen_db", "neo4j_stop", "memory")
QUICK_CHECKS = ("load", "bad_inputs", "auth", "inference_kill", "frozen_db")
# Fashion class -> WordNet concept (as tests/conftest.py).
FASHION = {
    1: ("n04489008", "trouser"),
    3: ("n03236735", "dress"),
    5: ("n04133789", "sandal"),
    7: ("n03472535", "gym_shoe"),
    8: ("n02773037", "bag"),
    9: ("n02872752", "boot"),
}
# The RSS a decoded pixel may cost the inference service: the uint8 decode, its float32
# conversion and one working copy (resize/normalise) — 1 + 4 + 4 bytes, rounded up.
BYTES_PER_PIXEL = 16
SERVER_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _code(e: Exception) -> str:
    import grpc

    if isinstance(e, grpc.RpcError):
        return str(e.code().name)
    return type(e).__name__


def _details(e: Exception) -> str:
    import grpc

    if isinstance(e, grpc.RpcError):
        return str(e.details() or "")
    return str(e)


def _call(fn: Callable[..., Any], request: Any, timeout: float) -> tuple[str, str, float, Any]:
    """(code, details, seconds, response) of one blocking call."""
    t = time.perf_counter()
    try:
        resp = fn(request, timeout=timeout)
    except Exception as e:  # noqa: BLE001 — the code is the result
        return _code(e), _details(e)[:200], time.perf_counter() - t, None
    return "OK", "", time.perf_counter() - t, resp


def _pct(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ms = np.asarray(samples) * 1000.0
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)}


# -- the environment: own Neo4j, tiny hub, services as subprocesses -----------------------


@dataclass
class Service:
    name: str
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.log is not None
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}", "--port", str(self.port)]
            + ["--log-level", "WARNING"],
            env=self.env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()

    def wait_ready(self, timeout_s: float = 180.0) -> float:
        """Seconds until the health service says SERVING (bounded)."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        t0 = time.monotonic()
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited ({self.proc.returncode}); see {self.log}"
                    )
                try:
                    resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return time.monotonic() - t0
                except grpc.RpcError:
                    pass
                if time.monotonic() - t0 > timeout_s:
                    raise TimeoutError(f"{self.name} not serving after {timeout_s:.0f} s")
                time.sleep(0.3)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Rig:
    settings: Settings
    home: Path
    graph: Any
    env: dict[str, str]
    services: dict[str, Service] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    channels: dict[str, Any] = field(default_factory=dict)

    def stub(self, name: str) -> Any:
        import grpc

        from mllgraph.v1 import (
            inference_pb2_grpc,
            ingestion_pb2_grpc,
            selection_pb2_grpc,
        )

        if name not in self.channels:
            self.channels[name] = grpc.insecure_channel(
                self.services[name].address,
                options=[
                    ("grpc.max_send_message_length", 64 << 20),
                    ("grpc.max_receive_message_length", 64 << 20),
                ],
            )
        make = {
            "ingestion": ingestion_pb2_grpc.IngestionServiceStub,
            "selection": selection_pb2_grpc.SelectionServiceStub,
            "inference": inference_pb2_grpc.InferenceServiceStub,
        }[name]
        return make(self.channels[name])

    def counts(self) -> dict[str, int]:
        nodes = self.graph.run_user_query("MATCH (n) RETURN count(n) AS n")[0]["n"]
        edges = self.graph.run_user_query("MATCH ()-[r]->() RETURN count(r) AS n")[0]["n"]
        return {"nodes": int(nodes), "edges": int(edges)}

    def neo4j_pid(self) -> int | None:
        from mllgraph.graph import neo4j_server

        return neo4j_server.running_pid(self.settings)


def _service_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLLGRAPH_", "NEO4J_"))}
    env.update(
        MLLGRAPH_HOME=str(settings.home),
        MLLGRAPH_NEO4J_PORT=str(settings.local_neo4j_port),
        MLLGRAPH_DEVICE="cpu",
        MLLGRAPH_WORDNET_DIR=str(settings.wordnet_dir),
        PYTHONPATH=str(REPO),
    )
    env.update(extra)
    return env


def _build_hub(rig: Rig, log: Callable[[str], None]) -> None:
    """Six concepts, two quickly trained Fashion experts labelled on small probe sets."""
    from mllgraph.hub import loading, probes, registry
    from mllgraph.hubs.fashion import data as fashion
    from mllgraph.label import run as labeller

    graph, settings = rig.graph, rig.settings
    graph.write(
        "graph/create_concepts",
        rows=[
            {
                "wnid": w,
                "name": n,
                "lemmas": [n],
                "definition": "",
                "lexname": "noun.artifact",
                "depth": 1,
                "source": "wordnet",
            }
            for w, n in FASHION.values()
        ],
    )
    x_train, y_train = fashion.load_split("train", settings.fashion_mnist_dir)
    x_test, y_test = fashion.load_split("test", settings.fashion_mnist_dir)
    keep = np.isin(y_test, list(FASHION))
    rig.images, rig.labels = x_test[keep][:64], y_test[keep][:64]
    tmp = rig.home / "weights"
    tmp.mkdir(exist_ok=True)
    for name, arch, classes, seed in (
        ("a", "test_mambaout", (5, 7, 9), 1),
        ("b", "test_efficientnet", (1, 8, 3), 2),
    ):
        model = fashion_experts.train_expert(
            arch,
            classes,
            x_train[:20000],
            y_train[:20000],
            epochs=1,
            seed=seed,
            max_train=800,
            batch_size=100,
        )
        path = loading.save_weights(model, tmp / f"{name}.safetensors")
        reg = registry.register_model(
            graph,
            settings,
            registry.Registration(
                name=f"reliability-{name}",
                arch=arch,
                weights_path=path,
                wnids=[FASHION[c][0] for c in classes],
                input_spec=fashion_experts.FASHION_INPUT_SPEC,
            ),
        )
        rig.models.append(reg.record["id"])
    pool_x, pool_y = x_train[50000:], y_train[50000:]
    for cls, (wnid, _) in FASHION.items():
        probes.add_probe_set(
            graph,
            settings,
            concept=wnid,
            images=pool_x[pool_y == cls][:20],
            set_id=f"reliability-c{cls}",
        )
    for mid in rig.models:
        labeller.label_model(graph, settings, mid, label_work.LabelOptions(samples_per_concept=20))
    log(f"hub: {len(rig.models)} models, {len(FASHION)} concepts")


@contextmanager
def _rig(base: Settings, log: Callable[[str], None]) -> Iterator[Rig]:
    from mllgraph.graph import neo4j_server
    from mllgraph.graph.db import Graph

    home = Path(tempfile.mkdtemp(prefix="mllgraph-reliability-"))
    settings = neo4j_server.scratch_settings(replace(base, neo4j_uri=None), home, _free_port())
    settings = replace(settings, device="cpu")
    rig: Rig | None = None
    try:
        t = time.monotonic()
        neo4j_server.start(settings)
        graph = Graph(settings)
        graph.verify(timeout_s=120)
        log(f"neo4j on port {settings.local_neo4j_port} in {time.monotonic() - t:.0f} s")
        rig = Rig(settings, home, graph, _service_env(settings))
        _build_hub(rig, log)
        for name in ("ingestion", "selection", "inference"):
            svc = Service(name, _free_port(), rig.env, log=home / f"{name}.log")
            svc.start()
            rig.services[name] = svc
        for svc in rig.services.values():
            svc.wait_ready()
        log("services serving")
        yield rig
    finally:
        if rig is not None:
            for channel in rig.channels.values():
                channel.close()
            for svc in rig.services.values():
                svc.stop()
            rig.graph.close()
        pid = neo4j_server.running_pid(settings)
        if pid is not None:
            os.kill(pid, signal.SIGCONT)  # never leave it stopped
            neo4j_server.stop(settings)
        shutil.rmtree(home, ignore_errors=True)


# -- requests ------------------------------------------------------------------------------


def _select_request(classes: list[int]) -> Any:
    from mllgraph.v1 import selection_pb2

    return selection_pb2.SelectHeadsRequest(
        classes=[
            selection_pb2.TaskClass(name=FASHION[c][1], pinned_wnid=FASHION[c][0]) for c in classes
        ]
    )


def _raw(img: np.ndarray) -> Any:
    from mllgraph.v1 import inference_pb2

    return inference_pb2.Image(
        raw=inference_pb2.RawArray(data=img.tobytes(), shape=list(img.shape), dtype="uint8")
    )


def _classify_request(rig: Rig, plan_id: str, n: int = 4, start: int = 0) -> Any:
    from mllgraph.v1 import inference_pb2

    assert rig.images is not None
    imgs = [rig.images[(start + i) % len(rig.images)] for i in range(n)]
    return inference_pb2.ClassifyRequest(plan_id=plan_id, images=[_raw(i) for i in imgs])


def _probs(resp: Any) -> np.ndarray:
    return np.array([list(p.class_probabilities) for p in resp.predictions])


def _plan(rig: Rig) -> Any:
    return rig.stub("selection").SelectHeads(_select_request(list(FASHION)), timeout=120)


# -- 1. load -------------------------------------------------------------------------------


def _load_series(
    fn: Callable[[int], tuple[str, float]], concurrency: int, seconds: float, max_calls: int
) -> dict[str, Any]:
    """`concurrency` workers calling `fn(i)` until `seconds` pass or `max_calls` are made."""
    lock = threading.Lock()
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    issued = [0]
    end = time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < end:
            with lock:
                if issued[0] >= max_calls:
                    return
                i = issued[0]
                issued[0] += 1
            code, dt = fn(i)
            with lock:
                codes[code] += 1
                if code == "OK":
                    latencies.append(dt)

    t0 = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    wall = time.monotonic() - t0
    errors = {k: v for k, v in codes.items() if k != "OK"}
    return {
        "concurrency": concurrency,
        "seconds": round(wall, 2),
        "calls": sum(codes.values()),
        "ok": codes.get("OK", 0),
        "throughput_per_s": round(codes.get("OK", 0) / wall, 2) if wall else 0.0,
        **_pct(latencies),
        "errors": errors,
    }


def check_load(rig: Rig, seconds: float, levels: tuple[int, ...]) -> dict[str, Any]:
    from itertools import combinations

    plan = _plan(rig)
    tasks = [list(c) for c in combinations(sorted(FASHION), 3)]
    select, classify = rig.stub("selection").SelectHeads, rig.stub("inference").Classify

    def one_select(i: int) -> tuple[str, float]:
        code, _, dt, _ = _call(select, _select_request(tasks[i % len(tasks)]), 60)
        return code, dt

    def one_classify(i: int) -> tuple[str, float]:
        code, _, dt, _ = _call(classify, _classify_request(rig, plan.plan_id, 4, i), 60)
        return code, dt

    out: dict[str, Any] = {"seconds_per_series": seconds, "images_per_classify": 4}
    ok = True
    for rpc, fn in (("SelectHeads", one_select), ("Classify", one_classify)):
        fn(0)  # warm
        series = [_load_series(fn, c, seconds, max_calls=100_000) for c in levels]
        by = {s["concurrency"]: s for s in series}
        errors = sum(sum(s["errors"].values()) for s in series)
        ratio = None
        if 1 in by and 16 in by and by[1].get("p95_ms") and by[16].get("p95_ms"):
            ratio = round(by[16]["p95_ms"] / by[1]["p95_ms"], 2)
        passed = errors == 0 and (ratio is None or ratio <= 3.0)
        out[rpc] = {"series": series, "p95_16_over_1": ratio, "errors": errors, "pass": passed}
        ok = ok and passed
    out["pass"] = ok
    return out


# -- 2. bad inputs -------------------------------------------------------------------------


def _png(side: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((side, side), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _bad_requests(rig: Rig, plan: Any) -> list[tuple[str, str, Callable[[], Any], set[str]]]:
    """(rpc, what, call, expected codes)."""
    from mllgraph.v1 import inference_pb2, ingestion_pb2, selection_pb2

    sel, inf, ing = rig.stub("selection"), rig.stub("inference"), rig.stub("ingestion")
    T, inv, nf = 30, {"INVALID_ARGUMENT"}, {"NOT_FOUND"}
    inv_fp = {"INVALID_ARGUMENT", "FAILED_PRECONDITION"}
    tc = selection_pb2.TaskClass
    img = _raw(rig.images[0]) if rig.images is not None else None

    def select(classes: list[Any], **kw: Any) -> Callable[[], Any]:
        return lambda: sel.SelectHeads(
            selection_pb2.SelectHeadsRequest(classes=classes, **kw), timeout=T
        )

    def classify(**kw: Any) -> Callable[[], Any]:
        return lambda: inf.Classify(inference_pb2.ClassifyRequest(**kw), timeout=T)

    def inline(body: str) -> Callable[[], Any]:
        bad = selection_pb2.Plan()
        bad.CopyFrom(plan)
        bad.plan_id = ""
        bad.combination_json = body
        return classify(inline_plan=bad, images=[img])

    def raw(data: bytes, shape: list[int], dtype: str = "uint8") -> Any:
        return inference_pb2.Image(raw=inference_pb2.RawArray(data=data, shape=shape, dtype=dtype))

    def register(**kw: Any) -> Callable[[], Any]:
        return lambda: ing.RegisterModel(ingestion_pb2.RegisterModelRequest(**kw), timeout=T)

    nested = "[" * 10_000 + "]" * 10_000
    sandal = FASHION[5]
    return [
        ("SelectHeads", "no classes", select([]), inv),
        ("SelectHeads", "empty class name", select([tc(name="")]), inv),
        ("SelectHeads", "control character in a name", select([tc(name="sand\x07al")]), inv),
        ("SelectHeads", "format character in a name", select([tc(name="sand\u200eal")]), inv),
        ("SelectHeads", "100k-character name", select([tc(name="x" * 100_000)]), inv),
        (
            "SelectHeads",
            "unknown pinned wnid",
            select([tc(name="x", pinned_wnid="n99999999")]),
            inv | nf,
        ),
        (
            "SelectHeads",
            "malformed pinned wnid",
            select([tc(name="x", pinned_wnid="../etc")]),
            inv | nf,
        ),
        (
            "SelectHeads",
            "20,000 classes",
            select([tc(name=f"c{i}") for i in range(20_000)]),
            inv | {"RESOURCE_EXHAUSTED"},
        ),
        (
            "SelectHeads",
            "negative budget",
            select([tc(name=sandal[1], pinned_wnid=sandal[0])], budget=-1),
            inv,
        ),
        (
            "SelectHeads",
            "sub-hub naming an unknown model",
            select(
                [tc(name=sandal[1], pinned_wnid=sandal[0])],
                options=selection_pb2.SelectOptions(models=["no-such-model@1"]),
            ),
            inv | nf,
        ),
        (
            "GetPlan",
            "empty id",
            lambda: sel.GetPlan(selection_pb2.GetPlanRequest(plan_id=""), timeout=T),
            inv,
        ),
        (
            "GetPlan",
            "unknown id",
            lambda: sel.GetPlan(selection_pb2.GetPlanRequest(plan_id="nope"), timeout=T),
            nf,
        ),
        ("Classify", "no plan", classify(images=[img]), inv),
        ("Classify", "no images", classify(plan_id=plan.plan_id), inv),
        ("Classify", "unknown plan id", classify(plan_id="no-such-plan", images=[img]), nf),
        (
            "Classify",
            "not an image file",
            classify(plan_id=plan.plan_id, images=[inference_pb2.Image(encoded=b"not a png")]),
            inv,
        ),
        (
            "Classify",
            "truncated PNG",
            classify(plan_id=plan.plan_id, images=[inference_pb2.Image(encoded=_png(64)[:40])]),
            inv,
        ),
        (
            "Classify",
            "image without pixels",
            classify(plan_id=plan.plan_id, images=[inference_pb2.Image()]),
            inv,
        ),
        (
            "Classify",
            "raw: data shorter than its shape",
            classify(plan_id=plan.plan_id, images=[raw(b"\0" * 10, [28, 28])]),
            inv,
        ),
        (
            "Classify",
            "raw: unknown dtype",
            classify(plan_id=plan.plan_id, images=[raw(b"\0" * 784, [28, 28], "complex256")]),
            inv,
        ),
        (
            "Classify",
            "raw: 5-d shape",
            classify(plan_id=plan.plan_id, images=[raw(b"\0" * 32, [2, 2, 2, 2, 2])]),
            inv,
        ),
        (
            "Classify",
            "raw: 10^10 pixels claimed",
            classify(plan_id=plan.plan_id, images=[raw(b"\0" * 784, [100_000, 100_000])]),
            inv | {"RESOURCE_EXHAUSTED"},
        ),
        (
            "Classify",
            "more images than the cap",
            classify(plan_id=plan.plan_id, images=[img] * (rig.settings.infer_max_images + 1)),
            inv | {"RESOURCE_EXHAUSTED"},
        ),
        ("Classify", "inline plan: not JSON", inline("{"), inv_fp),
        ("Classify", "inline plan: schema only", inline('{"schema_version": 1}'), inv_fp),
        ("Classify", "inline plan: deeply nested JSON", inline(nested), inv_fp),
        ("Classify", "inline plan: a list", inline("[1, 2, 3]"), inv_fp),
        (
            "Classify",
            "inline plan: unknown model",
            inline(plan.combination_json.replace(rig.models[0], "no-such-model@1")),
            inv_fp | nf,
        ),
        ("RegisterModel", "no name", register(arch="resnet18", weights_bytes=b"x"), inv),
        (
            "RegisterModel",
            "no weights source",
            register(name="r-bad", arch="resnet18", wnids=[sandal[0]]),
            inv,
        ),
        (
            "RegisterModel",
            "garbage weights bytes",
            register(
                name="r-bad", arch="test_efficientnet", weights_bytes=b"garbage", wnids=[sandal[0]]
            ),
            inv,
        ),
        (
            "RegisterModel",
            "weights_path escaping",
            register(
                name="r-bad",
                arch="test_efficientnet",
                weights_path="../../etc/passwd",
                wnids=[sandal[0]],
            ),
            inv_fp,
        ),
        (
            "RegisterModel",
            "unknown upload sha256",
            register(
                name="r-bad", arch="test_efficientnet", weights_sha256="0" * 64, wnids=[sandal[0]]
            ),
            inv | nf,
        ),
        (
            "RegisterModel",
            "both class_names and wnids",
            register(
                name="r-bad",
                arch="test_efficientnet",
                weights_bytes=b"x",
                wnids=[sandal[0]],
                class_names=["sandal"],
            ),
            inv,
        ),
        (
            "RegisterModel",
            "unknown builtin",
            register(name="r-bad", builtin="no_such_builtin"),
            inv | nf,
        ),
        (
            "RegisterModel",
            "control character in the name",
            register(
                name="r\x00bad", arch="test_efficientnet", weights_bytes=b"x", wnids=[sandal[0]]
            ),
            inv,
        ),
        (
            "GetModel",
            "empty id",
            lambda: ing.GetModel(ingestion_pb2.GetModelRequest(model_id=""), timeout=T),
            inv,
        ),
        (
            "GetModel",
            "unknown id",
            lambda: ing.GetModel(ingestion_pb2.GetModelRequest(model_id="no-such@1"), timeout=T),
            nf,
        ),
        (
            "ListModels",
            "negative page size",
            lambda: ing.ListModels(ingestion_pb2.ListModelsRequest(page_size=-1), timeout=T),
            inv,
        ),
        (
            "ListModels",
            "malformed page token",
            lambda: ing.ListModels(ingestion_pb2.ListModelsRequest(page_token="%%%"), timeout=T),
            inv,
        ),
        (
            "LabelModel",
            "unknown model",
            lambda: ing.LabelModel(
                ingestion_pb2.LabelModelRequest(model_id="no-such@1"), timeout=T
            ),
            nf,
        ),
        (
            "GetLabelJob",
            "unknown job",
            lambda: ing.GetLabelJob(
                ingestion_pb2.GetLabelJobRequest(job_id="no-such-job"), timeout=T
            ),
            nf,
        ),
        (
            "DeleteModel",
            "unknown model",
            lambda: ing.DeleteModel(
                ingestion_pb2.DeleteModelRequest(model_id="no-such@1"), timeout=T
            ),
            nf,
        ),
        (
            "DeleteModel",
            "empty id",
            lambda: ing.DeleteModel(ingestion_pb2.DeleteModelRequest(model_id=""), timeout=T),
            inv,
        ),
        (
            "UploadWeights",
            "sha256 mismatch",
            lambda: ing.UploadWeights(
                iter([ingestion_pb2.WeightsChunk(data=b"abc", total_bytes=3, sha256="0" * 64)]),
                timeout=T,
            ),
            inv,
        ),
        (
            "UploadWeights",
            "declared size over the cap",
            lambda: ing.UploadWeights(
                iter([ingestion_pb2.WeightsChunk(data=b"abc", total_bytes=1 << 50)]), timeout=T
            ),
            inv | {"RESOURCE_EXHAUSTED"},
        ),
    ]


def check_bad_inputs(rig: Rig) -> dict[str, Any]:
    plan = _plan(rig)
    before = rig.counts()
    tried: list[dict[str, Any]] = []
    for rpc, what, call, expected in _bad_requests(rig, plan):
        t = time.perf_counter()
        try:
            call()
            code, details = "OK", ""
        except Exception as e:  # noqa: BLE001
            code, details = _code(e), _details(e)
        tried.append(
            {
                "rpc": rpc,
                "input": what,
                "code": code,
                "expected": sorted(expected),
                "pass": code in expected,
                "ms": round((time.perf_counter() - t) * 1000, 1),
                "details": details[:160],
            }
        )
    after = rig.counts()
    per_rpc: dict[str, dict[str, int]] = {}
    for row in tried:
        d = per_rpc.setdefault(row["rpc"], {"tried": 0, "right_code": 0})
        d["tried"] += 1
        d["right_code"] += int(row["pass"])
    unchanged = before == after
    return {
        "per_rpc": per_rpc,
        "tried": tried,
        "catalogue_before": before,
        "catalogue_after": after,
        "catalogue_unchanged": unchanged,
        "pass": unchanged and all(r["pass"] for r in tried),
    }


# -- 3. auth -------------------------------------------------------------------------------


def check_auth(rig: Rig) -> dict[str, Any]:
    import grpc

    from mllgraph.auth import create_token
    from mllgraph.v1 import ingestion_pb2, ingestion_pb2_grpc

    read_token, read_entry = create_token("read", "bench-reader")
    write_token, write_entry = create_token("write", "bench-writer")
    env = {**rig.env, "MLLGRAPH_TOKENS": f"{read_entry.line()};{write_entry.line()}"}
    svc = Service("ingestion", _free_port(), env, log=rig.home / "ingestion-auth.log")
    svc.start()
    before = rig.counts()
    rows: list[dict[str, Any]] = []
    try:
        svc.wait_ready()
        with grpc.insecure_channel(svc.address) as channel:
            stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
            mid = rig.models[0]
            writes: dict[str, Callable[[list[tuple[str, str]]], Any]] = {
                "RegisterModel": lambda md: stub.RegisterModel(
                    ingestion_pb2.RegisterModelRequest(
                        name="auth-probe",
                        arch="test_efficientnet",
                        weights_bytes=b"x",
                        wnids=[FASHION[5][0]],
                    ),
                    timeout=30,
                    metadata=md,
                ),
                "UploadWeights": lambda md: stub.UploadWeights(
                    iter([ingestion_pb2.WeightsChunk(data=b"abc", total_bytes=3)]),
                    timeout=30,
                    metadata=md,
                ),
                "AddProbes": lambda md: stub.AddProbes(
                    iter(
                        [
                            ingestion_pb2.ProbeImage(
                                concept=FASHION[5][0], name="p.png", encoded=_png(28)
                            )
                        ]
                    ),
                    timeout=30,
                    metadata=md,
                ),
                "LabelModel": lambda md: stub.LabelModel(
                    ingestion_pb2.LabelModelRequest(model_id=mid), timeout=30, metadata=md
                ),
                "DeleteModel": lambda md: stub.DeleteModel(
                    ingestion_pb2.DeleteModelRequest(model_id=mid), timeout=30, metadata=md
                ),
            }
            for rpc, call in writes.items():
                for who, md, want in (
                    ("no token", [], "UNAUTHENTICATED"),
                    (
                        "unknown token",
                        [("authorization", "Bearer mlg_" + "x" * 43)],
                        "UNAUTHENTICATED",
                    ),
                    (
                        "read token",
                        [("authorization", f"Bearer {read_token}")],
                        "PERMISSION_DENIED",
                    ),
                ):
                    try:
                        call(md)
                        code = "OK"
                    except grpc.RpcError as e:
                        code = e.code().name
                    rows.append(
                        {
                            "rpc": rpc,
                            "caller": who,
                            "code": code,
                            "expected": want,
                            "pass": code == want,
                        }
                    )
            # The write token passes the interceptor: a harmless request reaches the servicer.
            try:
                stub.GetModel(
                    ingestion_pb2.GetModelRequest(model_id="no-such@1"),
                    timeout=30,
                    metadata=[("authorization", f"Bearer {write_token}")],
                )
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
            rows.append(
                {
                    "rpc": "GetModel",
                    "caller": "write token",
                    "code": code,
                    "expected": "NOT_FOUND",
                    "pass": code == "NOT_FOUND",
                }
            )
    finally:
        svc.stop()
    after = rig.counts()
    return {
        "tried": rows,
        "catalogue_unchanged": before == after,
        "pass": before == after and all(r["pass"] for r in rows),
    }


# -- 4. faults -----------------------------------------------------------------------------


def check_inference_kill(rig: Rig) -> dict[str, Any]:
    plan = _plan(rig)
    req = _classify_request(rig, plan.plan_id, 16)
    classify = rig.stub("inference").Classify
    before = _probs(classify(req, timeout=60))
    svc = rig.services["inference"]
    assert svc.proc is not None
    t0 = time.monotonic()
    svc.proc.send_signal(signal.SIGKILL)
    svc.proc.wait(30)
    svc.start()
    ready_s = svc.wait_ready()
    code, details, _, resp = _call(classify, req, 60)
    same = resp is not None and np.allclose(_probs(resp), before, atol=1e-5)
    return {
        "restart_to_serving_s": round(ready_s, 1),
        "recovered_in_s": round(time.monotonic() - t0, 1),
        "code_after": code,
        "details": details,
        "same_predictions": bool(same),
        "pass": bool(code == "OK" and same),
    }


def _graph_calls(rig: Rig, i: int, dl: float) -> list[tuple[str, Callable[[], Any], float]]:
    """RPCs that need the graph, each with its client deadline `dl` (seconds)."""
    from mllgraph.v1 import inference_pb2, ingestion_pb2, selection_pb2

    sel, inf, ing = rig.stub("selection"), rig.stub("inference"), rig.stub("ingestion")
    uncached = inference_pb2.ClassifyRequest(
        plan_id=f"never-seen-{i}", images=[_raw(rig.images[0])]
    )  # type: ignore[index]
    return [
        (
            "SelectHeads",
            lambda: sel.SelectHeads(_select_request([(1, 3)[i % 2], 5]), timeout=dl),
            dl,
        ),
        (
            "GetPlan",
            lambda: sel.GetPlan(selection_pb2.GetPlanRequest(plan_id=f"nope-{i}"), timeout=dl),
            dl,
        ),
        (
            "GetModel",
            lambda: ing.GetModel(ingestion_pb2.GetModelRequest(model_id=rig.models[0]), timeout=dl),
            dl,
        ),
        ("ListModels", lambda: ing.ListModels(ingestion_pb2.ListModelsRequest(), timeout=dl), dl),
        ("Classify(uncached plan)", lambda: inf.Classify(uncached, timeout=dl), dl),
    ]


def _timed(call: Callable[[], Any]) -> tuple[str, str, float]:
    t = time.perf_counter()
    try:
        call()
        return "OK", "", time.perf_counter() - t
    except Exception as e:  # noqa: BLE001
        return _code(e), _details(e)[:160], time.perf_counter() - t


def _wait_served(rig: Rig, budget_s: float) -> float | None:
    """Seconds until GetModel and SelectHeads answer OK again (None: not within budget_s)."""
    from mllgraph.v1 import ingestion_pb2

    t0 = time.monotonic()
    ing, sel = rig.stub("ingestion"), rig.stub("selection")
    while time.monotonic() - t0 < budget_s:
        a = _timed(
            lambda: ing.GetModel(ingestion_pb2.GetModelRequest(model_id=rig.models[0]), timeout=10)
        )
        b = _timed(lambda: sel.SelectHeads(_select_request([5, 7]), timeout=10))
        if a[0] == "OK" and b[0] == "OK":
            return time.monotonic() - t0
        time.sleep(0.5)
    return None


def _judge(answers: list[tuple[str, str, str, float, float]]) -> dict[str, Any]:
    """answers: (rpc, code, details, seconds, deadline). A server answer: OK, or UNAVAILABLE /
    DEADLINE_EXCEEDED that is the server's own (not the client giving up at its deadline)."""
    rows, bad = [], 0
    for rpc, code, details, dt, dl in answers:
        client_gave_up = code == "DEADLINE_EXCEEDED" and details.strip() == "Deadline Exceeded"
        ok = (code == "OK" or code in SERVER_CODES or code == "NOT_FOUND") and not client_gave_up
        ok = ok and dt <= dl + 1.0
        bad += not ok
        rows.append(
            {
                "rpc": rpc,
                "code": code,
                "s": round(dt, 2),
                "deadline_s": dl,
                "pass": ok,
                "details": details[:120],
            }
        )
    by_code = Counter(r["code"] for r in rows)
    examples = {r["code"]: r["details"] for r in rows if r["code"] != "OK"}
    return {
        "answers": len(rows),
        "by_code": dict(by_code),
        "failed": [r for r in rows if not r["pass"]][:10],
        "max_s": max((r["s"] for r in rows), default=0.0),
        "details_by_code": examples,
        "pass": bad == 0,
    }


def check_frozen_db(rig: Rig, freeze_s: float, deadline_s: float) -> dict[str, Any]:
    plan = _plan(rig)
    cached = _classify_request(rig, plan.plan_id, 4)
    classify = rig.stub("inference").Classify
    before = _probs(classify(cached, timeout=60))
    pid = rig.neo4j_pid()
    assert pid is not None
    answers: list[tuple[str, str, str, float, float]] = []
    cached_rows: list[tuple[str, bool, float]] = []
    os.kill(pid, signal.SIGSTOP)
    try:
        end = time.monotonic() + freeze_s
        with ThreadPoolExecutor(16) as pool:
            futures = []
            i = 0
            while time.monotonic() < end and i < 200:
                for rpc, call, dl in _graph_calls(rig, i, deadline_s):
                    futures.append((rpc, dl, pool.submit(_timed, call)))
                c, _, dt, resp = _call(classify, cached, 10)
                same = resp is not None and np.allclose(_probs(resp), before, atol=1e-5)
                cached_rows.append((c, bool(same), dt))
                i += 1
                time.sleep(0.5)
            for rpc, dl, f in futures:
                code, details, dt = f.result(timeout=60)
                answers.append((rpc, code, details, dt, dl))
    finally:
        os.kill(pid, signal.SIGCONT)
    recovered = _wait_served(rig, 120)
    c, _, _, resp = _call(classify, cached, 30)
    after_same = resp is not None and np.allclose(_probs(resp), before, atol=1e-5)
    judged = _judge(answers)
    cached_ok = all(code == "OK" and same for code, same, _ in cached_rows)
    return {
        "frozen_s": freeze_s,
        "client_deadline_s": deadline_s,
        "graph_rpcs": judged,
        "cached_classify": {
            "calls": len(cached_rows),
            "all_ok_same": cached_ok,
            **_pct([dt for _, _, dt in cached_rows]),
        },
        "recovered_after_sigcont_s": None if recovered is None else round(recovered, 1),
        "cached_plan_after": bool(c == "OK" and after_same),
        "pass": bool(judged["pass"] and cached_ok and recovered is not None and after_same),
    }


def check_neo4j_stop(rig: Rig, traffic_s: float, deadline_s: float) -> dict[str, Any]:
    from mllgraph.graph import neo4j_server

    plan = _plan(rig)
    cached = _classify_request(rig, plan.plan_id, 4)
    classify = rig.stub("inference").Classify
    before = _probs(classify(cached, timeout=60))
    answers: list[tuple[str, str, str, float, float]] = []
    cached_codes: Counter[str] = Counter()
    stop_done = threading.Event()

    def stopper() -> None:
        time.sleep(1.0)
        neo4j_server.stop(rig.settings)
        stop_done.set()

    pids = {name: svc.proc.pid for name, svc in rig.services.items() if svc.proc}
    t_stop = threading.Thread(target=stopper, daemon=True)
    t_stop.start()
    end = time.monotonic() + traffic_s
    i = 0
    with ThreadPoolExecutor(8) as pool:
        futures = []
        while (time.monotonic() < end or not stop_done.is_set()) and i < 400:
            if time.monotonic() > end + 120:
                break
            for rpc, call, dl in _graph_calls(rig, i, deadline_s):
                futures.append((rpc, dl, pool.submit(_timed, call)))
            c, _, _, resp = _call(classify, cached, 10)
            cached_codes[c] += 1
            i += 1
            time.sleep(0.3)
        for rpc, dl, f in futures:
            code, details, dt = f.result(timeout=60)
            answers.append((rpc, code, details, dt, dl))
    t_stop.join(60)
    stopped_answers = _judge(answers)
    internal = sum(1 for a in answers if a[1] in ("INTERNAL", "UNKNOWN"))
    saw_unavailable = any(a[1] in SERVER_CODES for a in answers)
    t0 = time.monotonic()
    neo4j_server.start(rig.settings)
    restart_s = time.monotonic() - t0
    recovered = _wait_served(rig, 180)
    same_services = pids == {n: s.proc.pid for n, s in rig.services.items() if s.proc}
    c, _, _, resp = _call(classify, cached, 30)
    after_same = resp is not None and np.allclose(_probs(resp), before, atol=1e-5)
    return {
        "client_deadline_s": deadline_s,
        "graph_rpcs": stopped_answers,
        "internal_or_unknown": internal,
        "saw_unavailable": saw_unavailable,
        "cached_classify_codes": dict(cached_codes),
        "neo4j_restart_s": round(restart_s, 1),
        "served_again_after_restart_s": None if recovered is None else round(recovered, 1),
        "services_not_restarted": same_services,
        "cached_plan_after": bool(c == "OK" and after_same),
        "pass": bool(
            stopped_answers["pass"]
            and internal == 0
            and saw_unavailable
            and recovered is not None
            and same_services
            and after_same
        ),
    }


# -- 5. memory -----------------------------------------------------------------------------

_MEMORY_LINE = re.compile(r"(\w+)=(\[[^\]]*\]|\S+)")


def check_memory(side: int, levels: tuple[int, ...]) -> dict[str, Any]:
    """scripts/admission_memory.py in a subprocess per concurrency (as many requests as the
    concurrency, at least 8), at the default pixel budget."""
    budget = Settings.infer_max_inflight_pixels
    series = []
    for conc in levels:
        requests = max(8, conc)
        proc = subprocess.run(
            [
                sys.executable,
                "scripts/admission_memory.py",
                str(side),
                str(budget),
                str(requests),
                str(conc),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
            env={k: v for k, v in os.environ.items() if not k.startswith("MLLGRAPH_")},
        )
        line = (proc.stdout.strip().splitlines() or [""])[-1]
        fields = dict(_MEMORY_LINE.findall(line))
        if proc.returncode != 0 or "peak_rss_mb" not in fields:
            series.append(
                {"concurrency": conc, "error": (proc.stderr or line)[-400:], "pass": False}
            )
            continue
        idle, peak = float(fields["idle_rss_mb"]), float(fields["peak_rss_mb"])
        limit = idle + budget * BYTES_PER_PIXEL / 2**20
        series.append(
            {
                "concurrency": conc,
                "requests": requests,
                "images_per_request": 4,
                "side": side,
                "idle_rss_mb": idle,
                "peak_rss_mb": peak,
                "limit_mb": round(limit),
                "wall_s": float(fields["wall_s"]),
                "codes": fields["codes"],
                "ok": int(fields["ok"]),
                "pass": peak <= limit,
            }
        )
    return {
        "budget_pixels": budget,
        "bytes_per_pixel_allowed": BYTES_PER_PIXEL,
        "series": series,
        "pass": all(s["pass"] for s in series),
    }


# -- the bench -----------------------------------------------------------------------------


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Reliability (`mllgraph bench reliability`)",
        "",
        f"Run at {report['at']} on {report['machine']['cpu_count']} CPUs"
        f"{' (quick configuration)' if report['quick'] else ''}. {report['note']}",
        "",
        "| check | result |",
        "|---|---|",
    ]
    for name, res in report["checks"].items():
        verdict = "PASS" if res.get("pass") else ("ERROR" if "error" in res else "FAIL")
        lines.append(f"| {name} | {verdict} |")
    checks = report["checks"]
    if "load" in checks and "error" not in checks["load"]:
        lines += [
            "",
            "## Load",
            "",
            "| RPC | concurrency | calls/s | p50 ms | p95 ms | p99 ms | errors |",
            "|---|---|---|---|---|---|---|",
        ]
        for rpc in ("SelectHeads", "Classify"):
            for s in checks["load"][rpc]["series"]:
                lines.append(
                    f"| {rpc} | {s['concurrency']} | {s['throughput_per_s']} | "
                    f"{s.get('p50_ms', '-')} | {s.get('p95_ms', '-')} | {s.get('p99_ms', '-')} | "
                    f"{s['errors'] or 0} |"
                )
            lines.append(
                f"| {rpc} | p95(16)/p95(1) | {checks['load'][rpc]['p95_16_over_1']} (goal ≤ 3) "
                "| | | | |"
            )
    if "bad_inputs" in checks and "error" not in checks["bad_inputs"]:
        b = checks["bad_inputs"]
        lines += [
            "",
            "## Bad inputs",
            "",
            f"Catalogue before {b['catalogue_before']}, after {b['catalogue_after']}.",
            "",
            "| RPC | input | code | expected |",
            "|---|---|---|---|",
        ]
        for r in b["tried"]:
            mark = "" if r["pass"] else " **wrong**"
            lines.append(
                f"| {r['rpc']} | {r['input']} | {r['code']}{mark} | {'/'.join(r['expected'])} |"
            )
    if "auth" in checks and "error" not in checks["auth"]:
        lines += [
            "",
            "## Auth (ingestion with tokens)",
            "",
            "| RPC | caller | code | expected |",
            "|---|---|---|---|",
        ]
        for r in checks["auth"]["tried"]:
            lines.append(f"| {r['rpc']} | {r['caller']} | {r['code']} | {r['expected']} |")
    for name in ("inference_kill", "frozen_db", "neo4j_stop", "memory"):
        if name in checks:
            body = {k: v for k, v in checks[name].items() if k != "pass"}
            lines += ["", f"## {name}", "", "```json", json.dumps(body, indent=1), "```"]
    return "\n".join(lines) + "\n"


def bench_reliability(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(getattr(args, "quick", False))
    wanted = getattr(args, "checks", None)
    checks = tuple(wanted.split(",")) if wanted else (QUICK_CHECKS if quick else CHECKS)
    unknown = set(checks) - set(CHECKS)
    if unknown:
        from mllgraph.errors import InvalidArgument

        raise InvalidArgument(f"unknown reliability checks {sorted(unknown)}; known: {CHECKS}")
    seconds = 2.0 if quick else float(getattr(args, "seconds", 10.0) or 10.0)
    levels = (1, 16) if quick else (1, 16, 64)
    deadline_s = float(getattr(args, "deadline", 10.0) or 10.0)  # client deadline, fault checks

    def log(msg: str) -> None:
        print(f"[reliability {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    results: dict[str, Any] = {}
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.monotonic()
    graph_checks = [c for c in checks if c != "memory"]
    if graph_checks:
        with _rig(settings, log) as rig:
            runners: dict[str, Callable[[], dict[str, Any]]] = {
                "load": lambda: check_load(rig, seconds, levels),
                "bad_inputs": lambda: check_bad_inputs(rig),
                "auth": lambda: check_auth(rig),
                "inference_kill": lambda: check_inference_kill(rig),
                "frozen_db": lambda: check_frozen_db(rig, 3.0 if quick else 8.0, deadline_s),
                "neo4j_stop": lambda: check_neo4j_stop(rig, 5.0 if quick else 10.0, deadline_s),
            }
            for name in graph_checks:
                t = time.monotonic()
                try:
                    results[name] = runners[name]()
                except Exception as e:  # noqa: BLE001 — a check that crashed is reported
                    results[name] = {"pass": False, "error": f"{type(e).__name__}: {e}"[:500]}
                results[name]["check_s"] = round(time.monotonic() - t, 1)
                log(f"{name}: {'pass' if results[name]['pass'] else 'FAIL'}")
    if "memory" in checks:
        t = time.monotonic()
        try:
            results["memory"] = check_memory(1024 if quick else 4096, (8,) if quick else (8, 64))
        except Exception as e:  # noqa: BLE001
            results["memory"] = {"pass": False, "error": f"{type(e).__name__}: {e}"[:500]}
        results["memory"]["check_s"] = round(time.monotonic() - t, 1)
        log(f"memory: {'pass' if results['memory']['pass'] else 'FAIL'}")
    report = {
        "benchmark": "reliability",
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"python": sys.version.split()[0], "cpu_count": cpus()},
        "quick": quick,
        "note": "Latency figures come from one run on the machine at hand, shared with whatever "
        f"else ran on it (load average at start {load_before[0]}, at the end "
        f"{round(os.getloadavg()[0], 2)}, on {cpus()} CPUs); compare within a run. The memory "
        f"limit is this bench's: idle RSS + {BYTES_PER_PIXEL} bytes x the in-flight pixel budget.",
        "wall_s": round(time.monotonic() - started, 1),
        "checks": results,
        "pass": all(r.get("pass") for r in results.values()),
        "run_id": uuid.uuid4().hex[:8],
    }
    out = Path(getattr(args, "out", "reports"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "reliability.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "reliability.md").write_text(_markdown(report))
    report["report"] = str(out / "reliability.json")
    return report
