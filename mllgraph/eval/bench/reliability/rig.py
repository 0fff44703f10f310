"""The bench's environment: its own Neo4j (a scratch home on a free port), the tiny hub it
builds (two quickly trained Fashion experts over six concepts) and the three services as
subprocesses (`python -m services.NAME`), so that a fault can kill one.

The bottom layer of the package: it must not import the checks, requests or the report.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.settings import Settings

# The repository root: the services run from it (`python -m services.NAME`), as do scripts/.

REPO = Path(__file__).resolve().parents[4]


# Fashion class -> WordNet concept (as tests/conftest.py).
FASHION = {
    1: ("n04489008", "trouser"),
    3: ("n03236735", "dress"),
    5: ("n04133789", "sandal"),
    7: ("n03472535", "gym_shoe"),
    8: ("n02773037", "bag"),
    9: ("n02872752", "boot"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    from mllgraph.hubs.fashion import experts as fashion_experts
    from mllgraph.label import run as labeller
    from mllgraph.label import work as label_work

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
def open_rig(base: Settings, log: Callable[[str], None]) -> Iterator[Rig]:
    from mllgraph.graph import neo4j_server
    from mllgraph.graph.db import Graph

    home = Path(tempfile.mkdtemp(prefix="mllgraph-reliability-"))
    settings = neo4j_server.scratch_settings(replace(base, neo4j_uri=None), home, free_port())
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
            svc = Service(name, free_port(), rig.env, log=home / f"{name}.log")
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
