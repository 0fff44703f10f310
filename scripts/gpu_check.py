"""The inference service on a GPU machine (no network, no Neo4j): correctness and speed.

Run through `scripts/gpu_check.sh run` (it sets PYTHONPATH). Serves a bundle written by
`python -m mllgraph.reuse.bundle export-plan` with `services.inference` on CUDA (the CPU when
there is none: said so), sends the plan INLINE through gRPC, and checks:

* predictions and probabilities against the CPU fp32 reference in the bundle: on the CPU
  they must match (max |dp| <= 1e-4, every prediction equal); on CUDA (fp16) max |dp| <= 0.05
  and every prediction equal where the reference's top-2 margin is over 0.05 (near-ties may
  flip in half precision), overall agreement >= 99 %;
* raw arrays, PNG bytes (if Pillow is there) and ClassifyStream give the same predictions;
* throughput (images/s) and p50/p95 request latency at request batch sizes 1, 32, 256.

The neo4j driver and open_clip are blocked from import (as on the GPU machine) unless
--allow-imports. Prints one JSON summary; writes $OUT/gpu_check.json when $OUT is set.
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", required=True, type=Path)
    ap.add_argument("--sizes", default="1,32,256")
    ap.add_argument("--allow-imports", action="store_true", help="do not block neo4j/open_clip")
    args = ap.parse_args()
    if not args.allow_imports:
        for name in ("neo4j", "open_clip"):
            sys.modules[name] = None  # type: ignore[assignment]  # import now raises

    import grpc
    import numpy as np
    import torch
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from mllgraph import wire
    from mllgraph.plan import document as plan_doc
    from mllgraph.reuse import bundle as bundles
    from mllgraph.reuse import cache as model_cache
    from mllgraph.settings import Settings
    from mllgraph.v1 import inference_pb2, inference_pb2_grpc
    from services import inference as svc

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if not cuda:
        print("[gpu_check] no CUDA device: falling back to the CPU (fp32)", flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = replace(
        Settings.from_env(), device=device, infer_max_images=max([256, *sizes]), infer_max_batch=256
    )
    bundle = bundles.load_bundle(args.bundle)
    with np.load(args.bundle / "images.npz") as data:
        images = data["images"]
    reference = np.load(args.bundle / "reference.npy")
    n_img = len(images)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def call(coro: Any, timeout: float = 600) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    t0 = time.perf_counter()
    running = call(
        svc.start_server(settings, port=0, bundle=bundle, use_neo4j=False, health_interval_s=0.2)
    )
    channel = grpc.insecure_channel(
        f"127.0.0.1:{running.port}",
        options=[("grpc.max_send_message_length", 64 << 20),
                 ("grpc.max_receive_message_length", 64 << 20)],
    )  # fmt: skip
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    while (
        health.Check(health_pb2.HealthCheckRequest(service=svc.SERVICE_NAME)).status
        != health_pb2.HealthCheckResponse.SERVING
    ):
        assert time.perf_counter() - t0 < 30, "the service never became SERVING"
        time.sleep(0.05)
    inline = wire.inline_plan_to_proto(bundle.plan)

    def raw(im: np.ndarray) -> Any:
        return inference_pb2.Image(
            raw=inference_pb2.RawArray(data=im.tobytes(), shape=list(im.shape), dtype="uint8")
        )

    def classify(imgs: list[Any]) -> Any:
        req = inference_pb2.ClassifyRequest(inline_plan=inline, images=imgs)
        return stub.Classify(req, timeout=600)

    # -- correctness against the CPU reference --
    t = time.perf_counter()
    probs = []
    for s in range(0, n_img, 256):
        resp = classify([raw(im) for im in images[s : s + 256]])
        probs += [list(p.class_probabilities) for p in resp.predictions]
    first_pass_s = time.perf_counter() - t
    probs = np.asarray(probs, dtype=np.float64)
    pred, ref_pred = probs.argmax(1), reference.argmax(1)
    top2 = np.sort(reference, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    max_diff = float(np.abs(probs - reference).max())
    agree = float((pred == ref_pred).mean())
    if cuda:
        clear = margin > 0.05
        ok_pred = bool((pred[clear] == ref_pred[clear]).all()) and agree >= 0.99
        tol = 0.05
    else:
        ok_pred = bool((pred == ref_pred).all())
        tol = 1e-4
    checks: dict[str, bool] = {"probabilities": max_diff <= tol, "predictions": ok_pred}

    few = images[:16]
    base = [p.class_index for p in classify([raw(im) for im in few]).predictions]
    try:
        from PIL import Image

        def png(im: np.ndarray) -> bytes:
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, format="PNG")
            return buf.getvalue()

        enc = classify([inference_pb2.Image(encoded=png(im)) for im in few])
        checks["png_equals_raw"] = [p.class_index for p in enc.predictions] == base
    except ImportError:
        print("[gpu_check] Pillow missing: PNG path not checked", flush=True)
    first = inference_pb2.ClassifyRequest(inline_plan=inline, images=[raw(im) for im in few[:8]])
    then = inference_pb2.ClassifyRequest(images=[raw(im) for im in few[8:]])  # plan reused
    stream = list(stub.ClassifyStream(iter([first, then]), timeout=600))
    checks["stream_equals_unary"] = [p.class_index for r in stream for p in r.predictions] == base

    # -- throughput and latency through gRPC --
    repeats = {1: 50 if cuda else 10, 32: 20 if cuda else 3, 256: 5 if cuda else 1}
    speed: dict[str, Any] = {}
    for bs in sizes:
        imgs = [raw(images[i % n_img]) for i in range(bs)]
        classify(imgs)  # warm-up at this shape
        lat = []
        server_ms: dict[str, float] = {}
        t = time.perf_counter()
        for _ in range(repeats.get(bs, 3)):
            s = time.perf_counter()
            resp = classify(imgs)
            lat.append(time.perf_counter() - s)
            for mt in resp.model_timings:
                server_ms[mt.model_id] = server_ms.get(mt.model_id, 0.0) + mt.forward_ms
        wall = time.perf_counter() - t
        ms = np.asarray(lat) * 1000
        speed[str(bs)] = {
            "requests": len(lat),
            "images_per_s": round(bs * len(lat) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "server_forward_ms_per_image": {
                m: round(v / (bs * len(lat)), 3) for m, v in server_ms.items()
            },
        }

    cache = running.servicer.cache
    summary = {
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "precision": {v: k for k, v in model_cache.DTYPES.items()}[cache.dtype],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "grpc": grpc.__version__,
        "plan": bundle.plan.get("plan_id"),
        "models": plan_doc.parse_plan(bundle.plan).models,
        "images": n_img,
        "first_pass_s": round(first_pass_s, 2),
        "max_abs_prob_diff": max_diff,
        "prob_tolerance": tol,
        "agreement": agree,
        "checks": checks,
        "throughput": speed,
        "batcher": {
            "batches": running.servicer.batcher.stats.batches,
            "oom_retries": running.servicer.batcher.stats.oom_retries,
        },
        "ok": all(checks.values()),
    }
    channel.close()
    call(running.stop(2.0))
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    text = json.dumps(summary, indent=1)
    print(text)
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_check.json").write_text(text + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
