"""A client pipeline over the three gRPC services (`services.local.Services`: one background
event loop in this process).

`bench zeroshot` and the demo use this to run the system as its users do: SelectHeads on the
selection service, Classify on the inference service, ListModels on the ingestion service,
each a real grpc.aio server on a free local port spoken to through real channels.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import numpy as np

from mllgraph.eval.tasks import Task
from mllgraph.settings import Settings
from mllgraph.v1 import (
    inference_pb2,
    inference_pb2_grpc,
    ingestion_pb2,
    ingestion_pb2_grpc,
    selection_pb2,
    selection_pb2_grpc,
)
from services.local import Services

CLASSIFY_BATCH = 256  # images per Classify request


def _channel(address: str, settings: Settings) -> grpc.Channel:
    """A channel with the client credentials in `settings` (MLLGRAPH_TOKEN, MLLGRAPH_TLS_CA)."""
    from mllgraph.auth import open_channel
    from mllgraph.client import MAX_MESSAGE_BYTES

    return open_channel(
        address,
        settings,
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ],
    )


class GrpcPipeline:
    """`evaluate.Pipeline` over the services: plans by SelectHeads, predictions by Classify."""

    def __init__(self, settings: Settings, services: Services | None = None) -> None:
        self.settings = settings
        self._own = services is None
        self.services = services or Services(settings)
        self._latency_ms: list[float] = []
        self._images = 0
        # Per model and image of those requests: run, or answered from the service's output
        # cache (the tasks share test images: mllgraph.reuse.outputs).
        self._passes = {"run": 0, "cached": 0}

    def __enter__(self) -> GrpcPipeline:
        if self._own:
            self.services.start()
        self._sel_channel = _channel(self.services.address("selection"), self.settings)
        self._inf_channel = _channel(self.services.address("inference"), self.settings)
        self._ing_channel = _channel(self.services.address("ingestion"), self.settings)
        self.selection = selection_pb2_grpc.SelectionServiceStub(self._sel_channel)
        self.inference = inference_pb2_grpc.InferenceServiceStub(self._inf_channel)
        self.ingestion = ingestion_pb2_grpc.IngestionServiceStub(self._ing_channel)
        return self

    def __exit__(self, *exc: object) -> None:
        for ch in (self._sel_channel, self._inf_channel, self._ing_channel):
            ch.close()
        if self._own:
            self.services.stop()

    def list_models(self) -> list[Any]:
        out, token = [], ""
        while True:
            page = self.ingestion.ListModels(
                ingestion_pb2.ListModelsRequest(page_size=1000, page_token=token)
            )
            out += list(page.models)
            token = page.next_page_token
            if not token:
                return out

    def select(self, task: Task, budget: int, models: tuple[str, ...] | None) -> dict[str, Any]:
        import json

        request = selection_pb2.SelectHeadsRequest(
            classes=[selection_pb2.TaskClass(name=n) for n in task.names],
            budget=budget,
            options=selection_pb2.SelectOptions(
                allow_ancestor=True, fit_params=True, models=list(models or ())
            ),
        )
        plan = self.selection.SelectHeads(request, timeout=300)
        doc = json.loads(plan.combination_json)
        doc["plan_id"] = plan.plan_id
        return doc

    def classify(self, plan: dict[str, Any], images: np.ndarray) -> np.ndarray:
        preds = []
        for start in range(0, len(images), CLASSIFY_BATCH):
            batch = images[start : start + CLASSIFY_BATCH]
            request = inference_pb2.ClassifyRequest(
                plan_id=plan["plan_id"],
                images=[
                    inference_pb2.Image(
                        id=str(start + i),
                        raw=inference_pb2.RawArray(
                            data=img.tobytes(), shape=list(img.shape), dtype="uint8"
                        ),
                    )
                    for i, img in enumerate(batch)
                ],
                top_k=1,
            )
            t = time.perf_counter()
            response = self.inference.Classify(request, timeout=600)
            self._latency_ms.append((time.perf_counter() - t) * 1000)
            self._images += len(batch)
            for mt in response.model_timings:
                self._passes["run"] += len(batch) - mt.cached_images
                self._passes["cached"] += mt.cached_images
            preds += [p.class_index for p in response.predictions]
        return np.asarray(preds, dtype=np.int64)

    def classify_detailed(self, plan: dict[str, Any], images: list[np.ndarray]) -> list[dict]:
        """Per image: the predicted class, its probability, the heads that decided and whether
        the uncovered-class patch did (images of any size, one request)."""
        request = inference_pb2.ClassifyRequest(
            plan_id=plan["plan_id"],
            images=[
                inference_pb2.Image(
                    id=str(i),
                    raw=inference_pb2.RawArray(
                        data=np.ascontiguousarray(img).tobytes(),
                        shape=list(img.shape),
                        dtype="uint8",
                    ),
                )
                for i, img in enumerate(images)
            ],
            top_k=3,
        )
        response = self.inference.Classify(request, timeout=600)
        return [
            {
                "class_index": p.class_index,
                "class_name": p.class_name,
                "probability": p.probability,
                "used_fallback": p.used_fallback,
                "patch": response.patch if p.used_fallback else "",
                "out_of_domain": list(p.out_of_domain_models),
                "heads": [
                    {"model_id": h.model_id, "head_index": h.head_index, "head_label": h.head_label}
                    for h in p.contributing_heads
                ],
            }
            for p in response.predictions
        ]

    def stats(self) -> dict[str, Any]:
        total_s = sum(self._latency_ms) / 1000
        return {
            "classify_requests": len(self._latency_ms),
            "images": self._images,
            "images_per_s": round(self._images / total_s, 1) if total_s else None,
            # A model's outputs for an image the service had met (under any task) are kept.
            "model_images_run": self._passes["run"],
            "model_images_cached": self._passes["cached"],
            "request_p50_ms": round(float(np.percentile(self._latency_ms, 50)), 1)
            if self._latency_ms
            else None,
        }
