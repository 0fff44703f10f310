"""The uncovered-class patch on the main job's photos: does it steal covered images?

Runs the photos suite (`mllgraph.eval.photos`) in this process, through the same selection
and inference code the services wrap, and reports per task MLL against the best ImageNet
expert alone, which classes the plan leaves uncovered, and how its ConSE patch was
calibrated (`combination["patch"]["calibration"]`: method, images, measured steal share).
Besides the suite's own tasks it runs variants where one class is replaced by a name no
hub head covers, so that the patch is really exercised (`UNCOVERED_VARIANTS`).

Only the hub's probe images calibrate a patch (selection does that); the photos here are
task images and only ever scored. `mllgraph bench patch` writes the JSON report.

Uses only `photos.run_suite`, `select.select` and `reuse.classifier`, so the same file also
measures an older checkout's behaviour when imported over that checkout's package.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.eval import photos
from mllgraph.settings import Settings

# (task it varies, class replaced, the replacement: a name no hub head covers, the photo's
# truth becomes it)
UNCOVERED_VARIANTS: tuple[tuple[str, str, str], ...] = (
    ("photos-5", "coffee", "cappuccino"),
    # Its covered Fashion classes have probe images: the patch is calibrated on them.
    ("cross-domain", "coffee mug", "cappuccino"),
)


def variant_tasks(
    tasks: Sequence[photos.PhotoTask] = photos.PHOTO_TASKS,
    variants: Sequence[tuple[str, str, str]] = UNCOVERED_VARIANTS,
) -> list[photos.PhotoTask]:
    """Each variant as a task named "<task>/<replacement>"."""
    by_name = {t.name: t for t in tasks}
    out = []
    for name, old, new in variants:
        task = by_name[name]
        out.append(
            photos.PhotoTask(
                f"{name}/{new}",
                tuple(new if n == old else n for n in task.names),
                tuple((p, new if c == old else c) for p, c in task.photos),
                task.fashion,
            )
        )
    return out


class InProcessPipeline:
    """What `photos.run_suite` needs of a pipeline, without the services: `select` as
    SelectHeads does it (default options: ancestors allowed, parameters fitted) and
    `classify_detailed` as Classify does (the plan's classifier, CPU)."""

    def __init__(self, graph: Any, settings: Settings) -> None:
        from mllgraph.ground.resolve import default_resolver
        from mllgraph.reuse import cache as model_cache

        self.graph, self.settings = graph, settings
        self.resolver = default_resolver(settings)
        self.models = model_cache.ModelCache(settings, device="cpu")
        self.plans: dict[str, dict[str, Any]] = {}  # task name -> its plan (whole hub)

    def list_models(self) -> list[Any]:
        from types import SimpleNamespace

        from mllgraph.hub import registry

        return [SimpleNamespace(**m) for m in registry.list_models(self.graph, limit=1000)]

    def select(self, task: Any, budget: int, models: tuple[str, ...] | None) -> dict[str, Any]:
        from mllgraph.plan import request
        from mllgraph.select import run as select

        ctx = select.select(
            self.graph,
            self.settings,
            [request.TaskClass(n) for n in task.names],
            request.SelectOptions(budget=budget, models=models),
            self.resolver,
        )
        if models is None:
            self.plans[task.name] = ctx.plan
        return ctx.plan

    def classify_detailed(self, plan: dict[str, Any], images: list[np.ndarray]) -> list[dict]:
        from mllgraph.reuse import classifier

        clf = classifier.PlanClassifier(plan, self.graph, self.settings, self.models)
        out = []
        for r in clf.classify(images):
            out.append(
                {
                    "class_index": r.class_index,
                    "class_name": r.class_name,
                    "probability": r.probability,
                    "used_fallback": r.used_fallback,
                    "patch": clf.fallback_rule if r.used_fallback else "",
                    "out_of_domain": list(r.out_of_domain),
                    "heads": [
                        {"model_id": h.model_id, "head_index": h.head_index,
                         "head_label": h.head_label}
                        for h in r.contributing_heads
                    ],
                }
            )  # fmt: skip
        return out


def best_expert_alone(result: photos.PhotoResult) -> tuple[str, float]:
    """The best single expert of a task: each ImageNet expert restricted to the task's
    classes, and (cross-domain tasks) each hub expert as a one-model sub-hub."""
    scores = {**result.experts_alone, **result.single_experts}
    name = max(sorted(scores), key=lambda n: scores[n])
    return name, scores[name]


def task_row(result: photos.PhotoResult, plan: dict[str, Any] | None) -> dict[str, Any]:
    best, best_acc = best_expert_alone(result)
    patch = (plan or {}).get("patch") or {}
    stolen = [
        im["image"]
        for im in result.per_image
        if not im["right"] and im["mll"] in result.uncovered and im["truth"] not in result.uncovered
    ]
    return {
        "task": result.task,
        "classes": result.classes,
        "uncovered": result.uncovered,
        "mll": result.mll_accuracy,
        "best_single_expert": best,
        "best_single_expert_accuracy": best_acc,
        "mll_at_least_best_single": result.mll_accuracy >= best_acc,
        # Photos of covered classes an uncovered class took (what the patch must never do).
        "covered_photos_taken_by_uncovered": stolen,
        "patch": {
            "model_id": patch.get("model_id"),
            "evidence": patch.get("evidence", "share" if patch else None),
            "weight": patch.get("weight"),
            "floor": patch.get("floor"),  # absent: the rule's constant (plans from before)
            "calibration": patch.get("calibration"),
        }
        if patch
        else None,
        "per_image": [
            {k: im[k] for k in ("image", "truth", "mll", "probability", "right", "patch")}
            for im in result.per_image
        ],
    }


def run(
    graph: Any,
    settings: Settings,
    *,
    budget: int = 5,
    tasks: Sequence[photos.PhotoTask] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The suite's tasks and the uncovered variants, in process: one row per task."""
    tasks = list(tasks) if tasks is not None else [*photos.PHOTO_TASKS, *variant_tasks()]
    pipeline = InProcessPipeline(graph, settings)
    t = time.perf_counter()
    results = photos.run_suite(
        pipeline,
        settings.fashion_mnist_dir,
        settings.wordnet_dir,
        budget=budget,
        tasks=tasks,
        log=log,
    )
    rows = [task_row(r, pipeline.plans.get(r.task)) for r in results]
    return {
        "tasks": rows,
        "all_at_least_best_single": all(r["mll_at_least_best_single"] for r in rows),
        "seconds": round(time.perf_counter() - t, 1),
        "results": [asdict(r) for r in results],
    }


def write(report: dict[str, Any], path: Path) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
