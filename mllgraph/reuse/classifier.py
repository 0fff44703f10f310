"""The plan classifier: one plan's experts run ONCE per batch, their heads combined.

Every model of the plan runs on its own preprocessing (``preprocess`` with the model's stored
``InputSpec``; models sharing a spec share the tensor), then :func:`mllgraph.combine.rule.combine`
(the one rule, shared with selection) gives the class probabilities. A model does not run
again on an image whose outputs the model cache keeps (:mod:`mllgraph.reuse.outputs`).
Uncovered classes get the VLM patch when one is configured, else the plan's ConSE patch
(:mod:`mllgraph.combine.conse`: its broad expert runs with the plan's models), else the
constant fallback (:mod:`mllgraph.reuse.vlm`); :attr:`PlanClassifier.fallback_rule` says
which. A prediction whose class is uncovered has ``used_fallback=True`` and no contributing
heads; the uncovered class names are always reported (:attr:`PlanClassifier.uncovered_names`).

A plan model with a domain profile (:mod:`mllgraph.combine.domain`, the record's
``domain_sha256``) says nothing about an image outside its domain: the prediction lists it
in ``out_of_domain`` and its heads do not contribute.

A plan with a "none of these" calibration (:mod:`mllgraph.combine.none_of_these`) gives every
prediction its ``none_score``; whether an answer becomes "none of these" is the caller's
choice (``allow_none``, against :attr:`PlanClassifier.none_threshold`), so batches mix freely.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mllgraph.combine.domain import thumbnails
from mllgraph.errors import (
    FailedPrecondition,
    InvalidArgument,
)
from mllgraph.hub import domains, forward
from mllgraph.hub.preprocess import InputSpec, preprocess
from mllgraph.plan import apply
from mllgraph.plan.document import HeadInfo, parse_plan, plan_key
from mllgraph.reuse.cache import (
    LoadedModel,
    ModelCache,
    RecordSource,
    lookup_record,
)
from mllgraph.reuse.outputs import image_digest
from mllgraph.reuse.vlm import VlmPatch
from mllgraph.settings import Settings

log = logging.getLogger("mllgraph.reuse.classifier")


@dataclass
class ModelTiming:
    model_id: str
    preprocess_ms: float = 0.0
    forward_ms: float = 0.0
    images: int = 0
    precision: str = ""
    cached: int = 0  # of the images, those whose outputs were kept (reuse.outputs): not run

    def add(self, other: ModelTiming, share: float = 1.0) -> None:
        self.preprocess_ms += other.preprocess_ms * share
        self.forward_ms += other.forward_ms * share
        self.images += other.images if share == 1.0 else round(other.images * share)
        self.cached += other.cached if share == 1.0 else round(other.cached * share)
        self.precision = other.precision or self.precision


@dataclass
class PredictionResult:
    class_index: int
    class_name: str
    probability: float
    probabilities: np.ndarray  # (K,) float64, sums to 1
    contributing_heads: tuple[HeadInfo, ...]
    used_fallback: bool
    # Plan models that said nothing about this image: outside their input domain.
    out_of_domain: tuple[str, ...] = ()
    # "None of these" score in [0, 1] (None: the plan has no calibration).
    none_score: float | None = None


@dataclass
class BatchRun:
    """One or more model passes over a list of images."""

    results: list[PredictionResult]
    timings: dict[str, ModelTiming] = field(default_factory=dict)
    logits: dict[str, np.ndarray] = field(default_factory=dict)  # kept when asked for

    def extend(self, other: BatchRun) -> None:
        self.results.extend(other.results)
        for mid, t in other.timings.items():
            self.timings.setdefault(mid, ModelTiming(mid)).add(t)
        for mid, arr in other.logits.items():
            self.logits[mid] = (
                np.concatenate([self.logits[mid], arr]) if mid in self.logits else arr
            )


class PlanClassifier:
    """Classify images with one plan (see module doc). Reusable and thread-safe."""

    def __init__(
        self,
        plan_document: Mapping[str, Any],
        graph_or_records: RecordSource,
        settings: Settings,
        cache: ModelCache,
        vlm: VlmPatch | None = None,
    ) -> None:
        self.document = dict(plan_document)
        self.plan = parse_plan(plan_document)
        self.settings = settings
        self.cache = cache
        self.vlm = vlm
        # Batches only ever mix requests of the same plan content (and VLM).
        self.key = f"{self.plan.plan_id or 'inline'}:{plan_key(plan_document)}"
        if vlm is not None:
            self.key += f":{vlm.name}:{id(vlm):x}"
        self.records: dict[str, dict[str, Any]] = {}
        # The ConSE patch runs its broad expert too, unless a VLM scores the uncovered classes.
        self.run_models = apply.models_to_run(self.plan, has_vlm=vlm is not None)
        for mid in self.run_models:
            record = lookup_record(graph_or_records, mid)
            if mid not in self.plan.models:
                self.records[mid] = record
                continue
            used = max(
                (max(g.heads) for a in self.plan.assignment for g in a.groups if g.model_id == mid),
                default=-1,  # a model only the stacked rule reads (it checks its head count)
            )
            if self.plan.none is not None:  # the heads the "none of these" score reads
                used = max([used, *(h for m, h in self.plan.none.heads_read() if m == mid)])
            if int(record.get("num_classes", used + 1)) <= used:
                raise FailedPrecondition(
                    f"the plan uses head {used} of model {mid}, which has "
                    f"{record.get('num_classes')} heads: the plan is stale, select again"
                )
            self.records[mid] = record
        self._heads = self._contributing_heads()
        self.domains = {
            mid: domains.load(settings, mid, self.records[mid])
            for mid in self.plan.models
            if self.records[mid].get("domain_sha256")
        }

    @property
    def class_names(self) -> list[str]:
        return self.plan.class_names

    @property
    def uncovered(self) -> list[int]:
        return self.plan.uncovered

    @property
    def uncovered_names(self) -> list[str]:
        return [self.plan.class_names[c] for c in self.plan.uncovered]

    @property
    def none_threshold(self) -> float | None:
        """The plan's default "none of these" threshold (score above it: none); None when the
        plan has no calibration."""
        return None if self.plan.none is None else self.plan.none.threshold

    @property
    def fallback_rule(self) -> str:
        """What scores the uncovered classes: "none" (all covered), "stacked" (the plan's
        stacked rule, from the other heads), "vlm:<name>", "conse:<model id>"
        (mllgraph.combine.conse) or "constant" (mllgraph.plan.apply)."""
        rule = apply.patch_rule(self.plan, has_vlm=self.vlm is not None)
        return f"vlm:{self.vlm.name}" if rule == "vlm" and self.vlm else rule

    def _contributing_heads(self) -> list[tuple[HeadInfo, ...]]:
        out = []
        for a, listed in zip(self.plan.assignment, self.plan.heads, strict=True):
            by_key = {(h.model_id, h.head_index): h for h in listed}
            heads = []
            for g in a.groups:
                version = str(self.records[g.model_id].get("version", ""))
                for h in g.heads:
                    heads.append(
                        by_key.get(
                            (g.model_id, h),
                            HeadInfo(g.model_id, version, h, "", g.label_score, ""),
                        )
                    )
            out.append(tuple(heads))
        return out

    # The batcher calls run_batch; classify is the direct library entry point.
    def classify(self, images: Sequence[np.ndarray]) -> list[PredictionResult]:
        return self.run_batch(images).results

    def run_batch(
        self,
        images: Sequence[np.ndarray],
        *,
        keep_logits: bool = False,
        digests: Sequence[bytes] | None = None,
    ) -> BatchRun:
        """`digests`: the images' keys in the kept outputs (`reuse.outputs.image_digest`,
        scoped to their callers by the service); None: their unscoped digests."""
        images = list(images)
        if not images:
            return BatchRun([])
        logits, timings = self.model_logits(images, digests)
        extra, vlm_timing = self._extra_evidence(images)
        if vlm_timing is not None:
            timings[vlm_timing.model_id] = vlm_timing
        in_domain = self.in_domain(images)
        probs = apply.probabilities(self.plan, logits, len(images), extra, in_domain)
        results = self._results(probs, in_domain)
        none = apply.none_scores(self.plan, logits, in_domain)
        if none is not None:
            for res, score in zip(results, none, strict=True):
                res.none_score = float(score)
        return BatchRun(results, timings, logits if keep_logits else {})

    def in_domain(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """{plan model with a domain profile: (N,) bool, the images it may speak about}."""
        if not self.domains:
            return {}
        thumbs = thumbnails(images)
        return {mid: profile.accepts(thumbs) for mid, profile in self.domains.items()}

    def model_logits(
        self, images: Sequence[np.ndarray], digests: Sequence[bytes] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, ModelTiming]]:
        """Every plan model (and the patch's) once over `images`: {model: float32 logits
        (N, H)}, timings. A model runs only on the images whose outputs the model cache's
        `outputs` does not keep (`mllgraph.reuse.outputs`; `digests`: as in run_batch)."""
        outputs = self.cache.outputs
        if not outputs.enabled:
            digests = None
        elif digests is None:
            digests = [image_digest(im) for im in images]
        elif len(digests) != len(images):
            raise InvalidArgument(f"{len(digests)} digests for {len(images)} images")
        logits: dict[str, np.ndarray] = {}
        timings: dict[str, ModelTiming] = {}
        inputs: dict[tuple[InputSpec, tuple[int, ...]], torch.Tensor] = {}
        for mid in self.run_models:
            record = self.records[mid]
            item = self.cache.get(record)
            kept = (
                outputs.get_many(item.output_key(record), digests)
                if digests
                else [None] * len(images)
            )
            todo = tuple(i for i, row in enumerate(kept) if row is None)
            out = None
            t0 = t1 = t2 = time.perf_counter()
            if todo:
                x = inputs.get((item.spec, todo))
                if x is None:
                    x = preprocess([images[i] for i in todo], item.spec, device=item.device)
                    inputs[(item.spec, todo)] = x
                _sync(item.device)
                t1 = time.perf_counter()
                out = self._forward(item, x)
                t2 = time.perf_counter()
                if digests:  # keyed by the precision it ran in (a demotion changes it)
                    outputs.put_many(item.output_key(record), [digests[i] for i in todo], out)
            if len(todo) < len(images):  # the kept rows, with those just run in their places
                ran = iter(() if out is None else out)
                out = np.stack([next(ran) if row is None else row for row in kept])
            logits[mid] = out
            timings[mid] = ModelTiming(
                mid,
                (t1 - t0) * 1000,
                (t2 - t1) * 1000,
                len(images),
                item.precision,
                cached=len(images) - len(todo),
            )
        return logits, timings

    def _forward(self, item: LoadedModel, x: torch.Tensor) -> np.ndarray:
        def run() -> torch.Tensor:
            return forward.run(item.module, x.to(item.dtype), self.cache.chunk).float()

        out = run()
        if item.dtype != torch.float32 and not bool(torch.isfinite(out).all()):
            self.cache.demote_to_fp32(item)
            out = run()
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise FailedPrecondition(
                f"model {item.model_id} returned logits of shape {tuple(out.shape)} for "
                f"{x.shape[0]} images"
            )
        return out.cpu().numpy()

    def _extra_evidence(
        self, images: Sequence[np.ndarray]
    ) -> tuple[dict[int, np.ndarray] | None, ModelTiming | None]:
        """The VLM's evidence for uncovered classes; None: the plan's own patch decides."""
        if self.vlm is None or not self.fallback_rule.startswith("vlm:"):
            return None, None
        t0 = time.perf_counter()
        extra = self.vlm.evidence(images, self.class_names, self.uncovered)
        ms = (time.perf_counter() - t0) * 1000
        precision = "fp16" if self.vlm.dtype == torch.float16 else "fp32"
        return extra, ModelTiming(self.vlm.name, 0.0, ms, len(images), precision)

    def _results(
        self, probs: np.ndarray, in_domain: dict[str, np.ndarray]
    ) -> list[PredictionResult]:
        out = []
        for i, row in enumerate(probs):
            c = int(np.argmax(row))
            refused = tuple(m for m, ok in sorted(in_domain.items()) if not ok[i])
            heads = tuple(h for h in self._heads[c] if h.model_id not in refused)
            out.append(
                PredictionResult(
                    class_index=c,
                    class_name=self.plan.class_names[c],
                    probability=float(row[c]),
                    probabilities=row,
                    contributing_heads=heads,
                    # No head spoke for the class: uncovered, or every model refused the image.
                    used_fallback=not heads,
                    out_of_domain=refused,
                )
            )
        return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
