"""Requests the checks send, and how an answer is read: the code and details of a failed
call, one timed call, latency percentiles, the plan of all six concepts.

Imports the rig only; it must not import the checks or the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mllgraph.eval.bench.reliability.rig import FASHION, Rig


def error_code(e: Exception) -> str:
    import grpc

    if isinstance(e, grpc.RpcError):
        return str(e.code().name)
    return type(e).__name__


def error_details(e: Exception) -> str:
    import grpc

    if isinstance(e, grpc.RpcError):
        return str(e.details() or "")
    return str(e)


def call_rpc(fn: Callable[..., Any], request: Any, timeout: float) -> tuple[str, str, float, Any]:
    """(code, details, seconds, response) of one blocking call."""
    t = time.perf_counter()
    try:
        resp = fn(request, timeout=timeout)
    except Exception as e:  # noqa: BLE001 — the code is the result
        return error_code(e), error_details(e)[:200], time.perf_counter() - t, None
    return "OK", "", time.perf_counter() - t, resp


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ms = np.asarray(samples) * 1000.0
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)}


def select_request(classes: list[int]) -> Any:
    from mllgraph.v1 import selection_pb2

    return selection_pb2.SelectHeadsRequest(
        classes=[
            selection_pb2.TaskClass(name=FASHION[c][1], pinned_wnid=FASHION[c][0]) for c in classes
        ]
    )


def raw_image(img: np.ndarray) -> Any:
    from mllgraph.v1 import inference_pb2

    return inference_pb2.Image(
        raw=inference_pb2.RawArray(data=img.tobytes(), shape=list(img.shape), dtype="uint8")
    )


def classify_request(rig: Rig, plan_id: str, n: int = 4, start: int = 0) -> Any:
    from mllgraph.v1 import inference_pb2

    assert rig.images is not None
    imgs = [rig.images[(start + i) % len(rig.images)] for i in range(n)]
    return inference_pb2.ClassifyRequest(plan_id=plan_id, images=[raw_image(i) for i in imgs])


def probabilities(resp: Any) -> np.ndarray:
    return np.array([list(p.class_probabilities) for p in resp.predictions])


def plan_all(rig: Rig) -> Any:
    return rig.stub("selection").SelectHeads(select_request(list(FASHION)), timeout=120)


def zero_png(side: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((side, side), np.uint8)).save(buf, "PNG")
    return buf.getvalue()
