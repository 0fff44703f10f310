"""`mllgraph bench cost`: the main job's tasks through gRPC under the cost-aware default (the
cheapest plan within the accuracy slack) against the model-count budget alone (slack 0: the
most accurate plan), side by side in one run: images/s of Classify and accuracy per task.

Runs over the hub at MLLGRAPH_HOME as it is (build it with `mllgraph demo`); models without a
measured cost are measured first (`hub.cost`, recorded on their nodes). For each task the two
policies alternate (select, one warm-up request, then the task's test images in requests of
`grpc_pipeline.CLASSIFY_BATCH`), so both see the same machine load. Goals (issue #24): the
cost-aware images/s at least 3x the model-count budget's, its accuracy within 0.5 points.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from mllgraph.settings import Settings

SPEEDUP_GOAL = 3.0
ACCURACY_GOAL_POINTS = 0.5
POLICIES = {"model_count": 0.0, "cost_aware": None}  # accuracy_slack; None: server default
WARMUP_IMAGES = 8


def bench_cost(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from mllgraph.eval import evalset
    from mllgraph.eval.demo import DEMO_TASKS
    from mllgraph.eval.grpc_pipeline import GrpcPipeline
    from mllgraph.eval.tasks import Suite, load_suite
    from mllgraph.graph import db
    from mllgraph.hub import cost as hub_cost
    from mllgraph.hub import registry

    suite = load_suite(getattr(args, "tasks", None))
    if not getattr(args, "tasks", None):
        suite = Suite(suite.name, tuple(t for t in suite.tasks if t.name in DEMO_TASKS))
    from mllgraph.eval.bench.common import write_report

    out = getattr(args, "out", None) or "reports"
    per_class = getattr(args, "test_per_class", None) or 50
    budget = getattr(args, "budget", None) or 5
    images = evalset.eval_images(settings, per_class)
    with db.connect(settings) as graph:
        costs: dict[str, dict[str, Any]] = {}
        for r in registry.list_models(graph, limit=1000):
            if hub_cost.needs_measuring(r, settings.torch_device()):
                r = registry.measure_cost(graph, settings, r["id"])
            ms, estimated = hub_cost.cost_of(r)
            costs[r["id"]] = {"ms_per_image": round(ms, 4), "clock": r.get("cost_clock")}
    rows: list[dict[str, Any]] = []
    with GrpcPipeline(settings) as pipeline:
        for task in suite.tasks:
            idx, labels = images.for_task(task)
            x = images.images[idx]
            for policy, slack in POLICIES.items():
                t = time.perf_counter()
                plan = _select(pipeline, task.names, budget, slack)
                select_ms = (time.perf_counter() - t) * 1000
                pipeline.classify(plan, x[:WARMUP_IMAGES])  # loads the plan's models
                t = time.perf_counter()
                pred = pipeline.classify(plan, x)
                seconds = time.perf_counter() - t
                row = {
                    "task": task.name,
                    "split": task.split,
                    "policy": policy,
                    "models": plan["models"],
                    "cost_ms_per_image": round(float(plan.get("cost_ms_per_image") or 0.0), 4),
                    "estimated_accuracy": plan.get("estimated_accuracy"),
                    "accuracy": round(float((pred == labels).mean()), 4),
                    "images": int(len(idx)),
                    "images_per_s": round(len(idx) / seconds, 1),
                    "select_ms": round(select_ms, 1),
                    "front": plan.get("cost_front", []),
                }
                rows.append(row)
                # Written after every row: a run cut short still leaves its figures.
                write_report("cost", {"partial": True, "costs": costs, "tasks": rows}, out)
                print(
                    f"{task.name:<24} {policy:<11} {row['accuracy']:.3f} "
                    f"{row['images_per_s']:>7.1f} img/s  {row['cost_ms_per_image']:>7.2f} ms/img  "
                    f"{', '.join(row['models'])}",
                    flush=True,
                )
    return {"costs": costs, "tasks": rows, **_summary(rows)}


def _select(pipeline: Any, names: list[str], budget: int, slack: float | None) -> dict[str, Any]:
    from mllgraph.v1 import selection_pb2

    options = selection_pb2.SelectOptions(allow_ancestor=True, fit_params=True)
    if slack is not None:
        options.accuracy_slack = slack
    request = selection_pb2.SelectHeadsRequest(
        classes=[selection_pb2.TaskClass(name=n) for n in names], budget=budget, options=options
    )
    plan = pipeline.selection.SelectHeads(request, timeout=900)
    doc = json.loads(plan.combination_json)
    doc["plan_id"] = plan.plan_id
    return doc


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per policy: images/s over all tasks (total images / total Classify seconds), mean
    accuracy and mean plan cost; the speed-up and the accuracy change against the goals."""
    out: dict[str, Any] = {}
    for policy in POLICIES:
        mine = [r for r in rows if r["policy"] == policy]
        if not mine:
            continue
        seconds = sum(r["images"] / r["images_per_s"] for r in mine)
        out[policy] = {
            "images_per_s": round(sum(r["images"] for r in mine) / seconds, 1),
            "mean_accuracy": round(float(np.mean([r["accuracy"] for r in mine])), 4),
            "mean_cost_ms_per_image": round(
                float(np.mean([r["cost_ms_per_image"] for r in mine])), 3
            ),
        }
    if len(out) == 2:
        base, new = out["model_count"], out["cost_aware"]
        speedup = new["images_per_s"] / base["images_per_s"]
        change = (new["mean_accuracy"] - base["mean_accuracy"]) * 100
        out["speedup"] = round(speedup, 2)
        out["accuracy_change_points"] = round(change, 2)
        out["goals"] = {
            "speedup_at_least": SPEEDUP_GOAL,
            "speedup_met": speedup >= SPEEDUP_GOAL,
            "accuracy_within_points": ACCURACY_GOAL_POINTS,
            "accuracy_met": change >= -ACCURACY_GOAL_POINTS,
        }
    return out
