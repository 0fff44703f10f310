"""The evaluation images (a seeded subset of the Fashion-MNIST test split) and each model's
logits on them, computed once per model (:class:`LogitCache`, in-process or on Ray).

The bottom of the evaluation: it must not import evaluate, scoring, baselines, references or
summary.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mllgraph.combine.domain import thumbnails
from mllgraph.eval.tasks import Task
from mllgraph.graph.db import Graph
from mllgraph.hub import domains, forward, loading, registry
from mllgraph.hubs.fashion.data import FASHION_CLASSES
from mllgraph.settings import Settings


@dataclass(frozen=True)
class EvalImages:
    images: np.ndarray  # uint8 (N, 28, 28), Fashion-MNIST test split
    fashion: np.ndarray  # (N,) Fashion class index

    def for_task(self, task: Task) -> tuple[np.ndarray, np.ndarray]:
        """Indices into `images` of the task's classes, and their task-class labels."""
        mapping = task.label_map()
        idx = np.flatnonzero(np.isin(self.fashion, list(mapping)))
        labels = np.array([mapping[int(f)] for f in self.fashion[idx]], dtype=np.int64)
        return idx, labels


def eval_images(settings: Settings, per_class: int | None, seed: int = 0) -> EvalImages:
    """The first `per_class` test images of every class in a seeded order (all if None)."""
    from mllgraph.hubs.fashion import data as fashion

    images, labels = fashion.load_split("test", settings.fashion_mnist_dir)
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(len(FASHION_CLASSES)):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        keep.append(idx if per_class is None else idx[:per_class])
    order = np.sort(np.concatenate(keep))
    return EvalImages(images[order], labels[order])


class LogitCache:
    """Each model's logits on the evaluation images, computed once: in this process, or, with
    MLLGRAPH_EXECUTOR=ray, as one Ray task per model for a batch given to :meth:`prefetch`."""

    def __init__(self, graph: Graph, settings: Settings, images: EvalImages) -> None:
        self.graph, self.settings, self.images = graph, settings, images
        self._logits: dict[str, np.ndarray] = {}
        self._in_domain: dict[str, np.ndarray | None] = {}
        self._thumbnails: np.ndarray | None = None
        self.seconds: dict[str, float] = {}

    def in_domain(self, mid: str) -> np.ndarray | None:
        """(N,) bool: the evaluation images inside the model's described input domain, as
        inference decides it; None for a model without a domain profile (every image)."""
        if mid not in self._in_domain:
            record = registry.get_model(self.graph, mid)
            mask = None
            if record.get("domain_sha256"):
                if self._thumbnails is None:
                    self._thumbnails = thumbnails(list(self.images.images))
                mask = domains.load(self.settings, mid, record).accepts(self._thumbnails)
            self._in_domain[mid] = mask
        return self._in_domain[mid]

    def __call__(self, mid: str) -> np.ndarray:
        if mid not in self._logits:
            record = registry.get_model(self.graph, mid)
            t = time.perf_counter()
            self._logits[mid] = model_logits(self.settings, self.images.images, record)
            self.seconds[mid] = time.perf_counter() - t
        return self._logits[mid]

    def prefetch(self, mids: Sequence[str]) -> None:
        """Compute the logits of `mids` now; on Ray (MLLGRAPH_EXECUTOR=ray) one task each."""
        todo = [m for m in dict.fromkeys(mids) if m not in self._logits]
        if not todo:
            return
        if self.settings.executor != "ray":
            for mid in todo:
                self(mid)
            return
        from mllgraph.hub import executor

        records = {mid: (registry.get_model(self.graph, mid),) for mid in todo}
        t = time.perf_counter()
        out = executor.map_models(
            self.settings, model_logits, records, shared=(self.settings, self.images.images)
        )
        per_model = (time.perf_counter() - t) / len(todo)  # wall time, shared by the tasks
        for mid in todo:
            self._logits[mid] = out[mid]
            self.seconds[mid] = per_model


def model_logits(
    settings: Settings, images: np.ndarray, record: Mapping[str, Any], device: str = "cpu"
) -> np.ndarray:
    """One model's logits on the evaluation images (in this process or in a Ray task)."""
    model, spec = loading.load_model(settings, dict(record))
    return forward.logits(
        model, spec, images, batch_size=128, device=device, cpu_chunk=settings.infer_cpu_chunk
    )
