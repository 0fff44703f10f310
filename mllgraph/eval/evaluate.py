"""Zero-shot evaluation: MLL against baselines on the same tasks and test images.

For every task of a suite: SelectHeads (CHCO) then Classify on Fashion-MNIST test images of
the task's classes, through a `Pipeline` — the gRPC services in `bench zeroshot` and the
demo, or the library in-process (the hub-size study, where hundreds of selections run).

Baselines, computed on the same images from each model's logits (every model runs once on
the evaluation images and its logits are cached). Every method is scored by the same code
(:func:`scoring.task_scores`): the shared rule (`mllgraph.combine.rule.combine`) at each model's
calibrated temperature (the one labelling fitted on the hub's probe images, which selection
and inference use too), and the same offline fallback evidence
(`mllgraph.combine.rule.fallback_evidence`) for every class the method leaves uncovered. Only the
choice of heads and the combination's per-class weights differ:
  (a) random   — a uniformly random candidate per class (mean of 5 draws), default weights;
  (b) single   — the one expert covering most classes (ties: higher mean label score), its
                 best head group per covered class, default weights; the classes it does not
                 cover get the fallback like any uncovered class;
  (c) uniform  — every candidate group of every candidate model, evidence averaged with
                 equal weights (label scores ignored), no budget and no optimisation;
  (d) oracle   — :class:`references.OracleRecipe`: the hub's strongest expert architecture
                 trained with the experts' recipe and per-class image budget on the task's
                 classes (a supervised reference: it sees labelled task images, MLL does not);
  (e) conse    — text-only zero-shot from offline parts (a stand-in for a VLM):
                 EfficientNet-Lite0's ImageNet top-10 probabilities mapped to the task's class
                 names by MiniLM text-embedding similarity (ConSE-style).
MLL's plan adds what selection fitted on the hub's probe images (per-class weights and
biases); an uncovered class keeps weight 1 and bias 0 there, as in the baselines.

What MLL uses, exactly (:data:`MLL_USES`): the task's class names and the hub's own probe
images (labelled concept images the hub keeps to label its models; the temperatures and
combination weights are fitted on them); no image or label of the task. The random, single
and uniform baselines use the same; ConSE uses class names only; the oracle is trained on
labelled images of the task's classes.

Where the parts live: `evalset` (the evaluation images and each model's logits on them),
`scoring` (the rule every method is scored by), `baselines` (random, single, uniform),
`references` (the oracle and ConSE) and `summary` (means, shares of the oracle, the tables).
This module holds the suite runner: the pipelines, :class:`TaskResult` and :func:`run_suite`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mllgraph.eval.baselines import (
    TaskView,
    baseline_random,
    baseline_single,
    baseline_uniform,
    candidates_for,
)
from mllgraph.eval.evalset import EvalImages, LogitCache
from mllgraph.eval.references import ConSE, Oracle
from mllgraph.eval.scoring import classify_plan
from mllgraph.eval.tasks import Suite, Task
from mllgraph.graph.db import Graph
from mllgraph.plan import apply
from mllgraph.plan import document as plan_doc
from mllgraph.plan import request as plan_request
from mllgraph.plan.document import uncovered_names
from mllgraph.select import run as select
from mllgraph.settings import Settings

BASELINES = ("random", "single", "uniform", "oracle", "conse")
# What MLL sees of a task, stated wherever its figures are shown (module doc).
MLL_USES = (
    "MLL uses the task's class names and the hub's own probe images (temperatures and "
    "combination weights are fitted on them); no image or label of the task"
)
ORACLE_USES = "the oracle is trained on labelled images of the task's classes"
Log = Callable[[str], None]


# -- the system under test -------------------------------------------------------------------


class Pipeline(Protocol):
    def select(self, task: Task, budget: int, models: tuple[str, ...] | None) -> dict[str, Any]:
        """The plan document for a task."""
        ...

    def classify(self, plan: dict[str, Any], images: np.ndarray) -> np.ndarray:
        """Predicted task-class index per image."""
        ...


class LibraryPipeline:
    """Selection and classification in-process (same code the services wrap)."""

    def __init__(self, graph: Graph, settings: Settings, logits: LogitCache) -> None:
        from mllgraph.ground.resolve import default_resolver

        self.graph, self.settings, self.logits = graph, settings, logits
        self.resolver = default_resolver(settings)

    def select(self, task: Task, budget: int, models: tuple[str, ...] | None) -> dict[str, Any]:
        ctx = select.select(
            self.graph,
            self.settings,
            [plan_request.TaskClass(n) for n in task.names],
            plan_request.SelectOptions(budget=budget, models=models),
            self.resolver,
        )
        return ctx.plan

    def classify_indices(self, plan: dict[str, Any], idx: np.ndarray) -> np.ndarray:
        """What the inference service answers (same rule, same offline fallback for uncovered
        classes), from cached logits."""
        return classify_plan(plan, self.logits, idx, self.logits.in_domain)

    def classify(self, plan: dict[str, Any], images: np.ndarray) -> np.ndarray:
        raise NotImplementedError("LibraryPipeline classifies by index: use classify_indices")


# -- the run ---------------------------------------------------------------------------------


@dataclass
class TaskResult:
    task: str
    classes: list[str]
    images: int
    mll: float
    estimated: float | None
    models: list[str]
    uncovered: list[str]
    selection_ms: float
    classify_ms: float
    baselines: dict[str, float] = field(default_factory=dict)
    split: str | None = None  # the task's suite half: "dev", "test" or None
    # What scored the uncovered classes (plan/apply.patch_rule): "none", "stacked",
    # "conse:<model>" or "constant".
    patch: str = "none"
    # Per uncovered class, why (plan/document.UNCOVERED_WHY): "no head" or "not chosen".
    uncovered_why: dict[str, str] = field(default_factory=dict)

    def uncovered_text(self) -> str:
        """E.g. "sweater (not chosen), tee (no head); scored by stacked", or "-"."""
        if not self.uncovered:
            return "-"
        return f"{uncovered_names(self.uncovered, self.uncovered_why)}; scored by {self.patch}"


def run_suite(
    graph: Graph,
    settings: Settings,
    suite: Suite,
    pipeline: Pipeline,
    images: EvalImages,
    logits: LogitCache,
    *,
    budget: int,
    models: tuple[str, ...] | None = None,
    oracle: Oracle | None = None,
    conse: ConSE | None = None,
    baselines: tuple[str, ...] = BASELINES,
    seed: int = 0,
    log: Log = print,
) -> list[TaskResult]:
    from mllgraph.ground.resolve import default_resolver

    resolver = default_resolver(settings)
    results = []
    for t_i, task in enumerate(suite.tasks):
        idx, labels = images.for_task(task)
        k = len(task.classes)
        t = time.perf_counter()
        plan = pipeline.select(task, budget, models)
        sel_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        if isinstance(pipeline, LibraryPipeline):
            pred = pipeline.classify_indices(plan, idx)
        else:
            pred = pipeline.classify(plan, images.images[idx])
        cls_ms = (time.perf_counter() - t) * 1000
        r = TaskResult(
            task=task.name,
            classes=task.names,
            images=len(idx),
            mll=float((pred == labels).mean()),
            estimated=plan.get("estimated_accuracy"),
            models=plan.get("models", []),
            uncovered=plan.get("uncovered", []),
            selection_ms=sel_ms,
            classify_ms=cls_ms,
            split=task.split,
            patch=apply.patch_rule(plan_doc.parse_plan(plan)),
            uncovered_why={
                c["name"]: c["uncovered_why"] for c in plan["classes"] if "uncovered_why" in c
            },
        )
        cands, temps = candidates_for(graph, settings, task, resolver, models)
        view = TaskView(k, cands, temps, logits, idx, labels, logits.in_domain)
        if "random" in baselines:
            r.baselines["random"] = baseline_random(view, seed + t_i)
        if "single" in baselines:
            r.baselines["single"] = baseline_single(view)
        if "uniform" in baselines:
            r.baselines["uniform"] = baseline_uniform(view)
        if oracle is not None and "oracle" in baselines:
            r.baselines["oracle"] = oracle.accuracy(task, images, idx, labels)
        if conse is not None and "conse" in baselines:
            r.baselines["conse"] = conse.accuracy(task, idx, labels)
        results.append(r)
        shown = "  ".join(f"{b} {v:.3f}" for b, v in r.baselines.items())
        log(f"{task.name:<44} MLL {r.mll:.3f}  {shown}")
    return results
