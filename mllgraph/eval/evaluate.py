"""Zero-shot evaluation: MLL against baselines and references on the same tasks and images.

For every task of a suite: SelectHeads (CHCO) then Classify on Fashion-MNIST test images of
the task's classes, through a `Pipeline` — the gRPC services in `bench zeroshot` and the
demo, or the library in-process (the hub-size study, where hundreds of selections run).

Every model runs once on the evaluation images (its logits are cached). What each method is:
  random, single, uniform — head choices among the candidates selection finds, scored by the
      parameter-free rule (`scoring`: default weights at the calibrated temperatures, the
      constant fallback for uncovered classes). They get NEITHER MLL's fitted parameters,
      NOR its stacked rule, NOR its patch: they show what choosing heads is worth, not what
      a user could do instead. random: a random candidate per class (mean of 5 draws);
      single: the expert covering most classes; uniform: every candidate, equal weights.
  hindsight — the best single expert in hindsight, given exactly what MLL gets: for each
      model with a candidate head, MLL's own selection restricted to that model (its
      calibration, fitted parameters, stacked rule and patch), scored on the task's images by
      the inference rule; the best of them (it peeks at the task's labels to pick).
  stack_all — :class:`references.StackAll`: the stacked rule over every head of every hub
      model, fitted on the same probe images; no graph search, no CHCO, no budget (classes
      without probe images: MLL's own plan scores them, as for MLL's partial rule).
  imagenet_subtree — :class:`references.SubtreeSum`: one ImageNet expert's probabilities
      summed over each class's WordNet subtree (the best of the hub's ImageNet experts).
  supervised — :class:`supervised.Supervised`: a small CNN trained on all labelled
      Fashion-MNIST train images (it sees labelled images of the task's classes).
  expert_recipe — :class:`references.ExpertRecipeModel`: the hub's largest expert
      architecture trained per task with the experts' own recipe and image budget (formerly
      called "oracle"; it is not one: a weak supervised model).
  conse — text-only zero-shot from offline parts (a stand-in for a VLM).

What MLL uses, exactly (:data:`MLL_USES`): the task's class names and the hub's own probe
images; on the Fashion suite those probe images are Fashion-MNIST train images, drawn from the
same distribution as the test images (a probe-pool result, not a zero-shot one).

Where the parts live: `evalset` (the evaluation images and each model's logits on them),
`scoring` (the rule the baselines are scored by), `baselines` (random, single, uniform,
hindsight), `references` (stack-all, summed subtrees, the expert-recipe model and ConSE),
`supervised`, and `summary` (means with intervals, shares of the supervised reference, the
tables). This module holds the suite runner: the pipelines, :class:`TaskResult` and
:func:`run_suite`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mllgraph.eval.baselines import (
    TaskView,
    baseline_hindsight,
    baseline_random,
    baseline_single,
    baseline_uniform,
    candidates_for,
)
from mllgraph.eval.evalset import EvalImages, LogitCache
from mllgraph.eval.references import ConSE, ExpertRecipeModel, StackAll, SubtreeSum
from mllgraph.eval.scoring import classify_plan
from mllgraph.eval.supervised import Supervised
from mllgraph.eval.tasks import Suite, Task
from mllgraph.graph.db import Graph
from mllgraph.plan import apply
from mllgraph.plan import document as plan_doc
from mllgraph.plan import request as plan_request
from mllgraph.plan.document import uncovered_names
from mllgraph.select import run as select
from mllgraph.settings import Settings

BASELINES = (
    "random", "single", "uniform", "hindsight", "stack_all", "imagenet_subtree", "supervised",
    "expert_recipe", "conse",
)  # fmt: skip
# What MLL sees of a task, stated wherever its figures are shown (module doc).
MLL_USES = (
    "MLL used: the task's class names, and the hub's own probe images (temperatures and "
    "combination weights are fitted on them), here Fashion-MNIST train-split images — drawn "
    "from the same distribution as the test images (a probe-pool result, not zero-shot); no "
    "image or label of the task"
)
REFERENCES_USE = (
    "the supervised reference and the expert-recipe model are trained on labelled images of "
    "the task's classes; hindsight picks its expert with the task's labels"
)
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

    def __init__(
        self, graph: Graph, settings: Settings, logits: LogitCache, *, store: bool = True
    ) -> None:
        """`store=False`: plans are not stored, so the same task asked again is selected
        again (side-by-side runs that change the code between two asks)."""
        from mllgraph.ground.resolve import default_resolver

        self.graph, self.settings, self.logits = graph, settings, logits
        self.store = store
        self.resolver = default_resolver(settings)

    def select(self, task: Task, budget: int, models: tuple[str, ...] | None) -> dict[str, Any]:
        ctx = select.select(
            self.graph,
            self.settings,
            [plan_request.TaskClass(n) for n in task.names],
            plan_request.SelectOptions(budget=budget, models=models),
            self.resolver,
            store=self.store,
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
    hindsight_model: str | None = None  # the expert the hindsight baseline picked
    # The served plan's cost (ms per image) and the accuracy-cost front it was chosen from:
    # which plan a task gets can move with measured costs, and the report shows how.
    cost_ms: float | None = None
    cost_front: list[dict[str, Any]] = field(default_factory=list)

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
    expert_recipe: ExpertRecipeModel | None = None,
    conse: ConSE | None = None,
    supervised: Supervised | None = None,
    stack_all: StackAll | None = None,
    subtree: SubtreeSum | None = None,
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
            cost_ms=plan.get("cost_ms_per_image"),
            cost_front=list(plan.get("cost_front") or []),
        )
        cands, temps = candidates_for(graph, settings, task, resolver, models)
        view = TaskView(k, cands, temps, logits, idx, labels, logits.in_domain)
        if "random" in baselines:
            r.baselines["random"] = baseline_random(view, seed + t_i)
        if "single" in baselines:
            r.baselines["single"] = baseline_single(view)
        if "uniform" in baselines:
            r.baselines["uniform"] = baseline_uniform(view)
        if "hindsight" in baselines:
            r.baselines["hindsight"], r.hindsight_model = baseline_hindsight(
                graph, settings, task, resolver, view
            )
        if stack_all is not None and "stack_all" in baselines:
            value = stack_all.accuracy(plan, idx, labels)
            if value is not None:  # None: some class lacks probe images to fit on
                r.baselines["stack_all"] = value
        if subtree is not None and "imagenet_subtree" in baselines:
            value = subtree.accuracy(plan, idx, labels)
            if value is not None:  # None: the hub has no ImageNet expert
                r.baselines["imagenet_subtree"] = value
        if supervised is not None and "supervised" in baselines:
            r.baselines["supervised"] = supervised.accuracy(task, images.images, idx, labels)
        if expert_recipe is not None and "expert_recipe" in baselines:
            r.baselines["expert_recipe"] = expert_recipe.accuracy(task, images, idx, labels)
        if conse is not None and "conse" in baselines:
            r.baselines["conse"] = conse.accuracy(task, idx, labels)
        results.append(r)
        shown = "  ".join(f"{b} {v:.3f}" for b, v in r.baselines.items())
        log(f"{task.name:<44} MLL {r.mll:.3f}  {shown}")
    return results
