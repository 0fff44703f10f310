"""`mllgraph bench estimates`: a plan's estimated accuracy against the accuracy measured on
the task's images, per task, on the hub at MLLGRAPH_HOME (nothing is built or labelled).

Tasks: the Fashion suite (`--tasks`, default the project's; `--test-per-class` Fashion-MNIST
test images per class, default 50) and the photos suite (`mllgraph.eval.photos`: real
photos, a handful per task, so each of its gaps is coarse). Selection and classification run
in-process, as the services run them.

Before and after in one run: every plan carries both ``simulated_accuracy`` (what CHCO or the
stacked rule scored on the probe images, proxy images and label-score priors included: the
estimate plans reported before `select/evidence`) and ``estimated_accuracy`` (each class's
estimate from the evidence of its kind). Figures: per task both gaps (estimate − measured),
and the mean |gap| per half (`dev`, `test`) and suite. Nothing is tuned here.

Writes `reports/estimate_gap.{json,md}`.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.eval.bench.common import git_commit
from mllgraph.eval.summary import write_json
from mllgraph.settings import Settings


def _row(suite: str, task: str, half: str | None, plan: dict[str, Any], measured: float,
         images: int) -> dict[str, Any]:  # fmt: skip
    before, after = plan.get("simulated_accuracy"), plan.get("estimated_accuracy")
    kinds = Counter(
        (c.get("estimate_evidence") or {}).get("kind", "?") for c in plan.get("classes", [])
    )
    return {
        "suite": suite,
        "task": task,
        "half": half or "-",
        "classes": len(plan.get("classes", [])),
        "images": images,
        "measured": measured,
        "estimated_before": before,
        "estimated_after": after,
        "gap_before": None if before is None else before - measured,
        "gap_after": None if after is None else after - measured,
        "evidence": dict(sorted(kinds.items())),
        "models": plan.get("models", []),
    }


def _mean_abs(rows: list[dict[str, Any]], key: str) -> float | None:
    gaps = [abs(r[key]) for r in rows if r[key] is not None]
    return round(float(np.mean(gaps)), 4) if gaps else None


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean |gap| before and after, for every suite and half, and all tasks together."""
    groups: dict[str, list[dict[str, Any]]] = {"all": rows}
    for r in rows:
        groups.setdefault(r["suite"], []).append(r)
        if r["half"] != "-":
            groups.setdefault(f"{r['suite']}:{r['half']}", []).append(r)
    return {
        name: {
            "tasks": len(g),
            "mean_abs_gap_before": _mean_abs(g, "gap_before"),
            "mean_abs_gap_after": _mean_abs(g, "gap_after"),
        }
        for name, g in groups.items()
    }


def bench_estimates(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from mllgraph.eval import evalset, photos
    from mllgraph.eval import evaluate as ev
    from mllgraph.eval.patch_study import InProcessPipeline
    from mllgraph.eval.tasks import load_suite
    from mllgraph.graph import db

    t_all = time.perf_counter()
    budget = int(getattr(args, "budget", 5) or 5)
    per_class = int(getattr(args, "test_per_class", None) or 50)
    suite = load_suite(getattr(args, "tasks", None))
    rows: list[dict[str, Any]] = []
    with db.connect(settings) as graph:
        images = evalset.eval_images(settings, per_class)
        logits = evalset.LogitCache(graph, settings, images)
        plans: dict[str, dict[str, Any]] = {}

        class Capturing(ev.LibraryPipeline):
            def select(self, task: Any, budget: int, models: Any) -> dict[str, Any]:
                plans[task.name] = plan = super().select(task, budget, models)
                return plan

        pipeline = Capturing(graph, settings, logits)
        results = ev.run_suite(
            graph, settings, suite, pipeline, images, logits, budget=budget, baselines=(),
            log=print,
        )  # fmt: skip
        for r in results:
            rows.append(_row("fashion", r.task, r.split, plans[r.task], r.mll, r.images))
        photo_pipe = InProcessPipeline(graph, settings)
        for task in photos.PHOTO_TASKS:
            data = photos.task_images(task, settings.fashion_mnist_dir)
            plan = photo_pipe.select(task, budget, None)
            got = np.asarray(
                [d["class_index"] for d in photo_pipe.classify_detailed(plan, data.images)]
            )
            measured = float(np.mean(got == data.labels))
            rows.append(_row("photos", task.name, None, plan, measured, len(data.labels)))
            print(f"{task.name}: measured {measured:.3f}")
    figures = {
        "config": {
            "budget": budget,
            "test_per_class": per_class,
            "suite": suite.name,
            "home": str(settings.home),
            "commit": git_commit(),
        },
        "summary": summarise(rows),
        "tasks": rows,
        "seconds": round(time.perf_counter() - t_all, 1),
    }
    out = Path(getattr(args, "out", "reports"))
    path = write_json(out / "estimate_gap.json", figures)
    (out / "estimate_gap.md").write_text(markdown(figures))
    figures["report"] = str(path)
    return {"summary": figures["summary"], "report": str(path), "seconds": figures["seconds"]}


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def markdown(figures: dict[str, Any]) -> str:
    lines = [
        "# Estimated against measured accuracy per task (`mllgraph bench estimates`)",
        "",
        "Before: the plan's `simulated_accuracy` (CHCO or the stacked rule on the probe "
        "images, proxy images and label-score priors included). After: `estimated_accuracy`, "
        "each class's estimate from the evidence of its kind (select/evidence). Measured: the "
        "task's images, as Classify scores them. Both estimates come from the same plan.",
        "",
        f"Config: {figures['config']}; {figures['seconds']} s.",
        "",
        "| group | tasks | mean abs gap before | mean abs gap after |",
        "|---|---|---|---|",
    ]
    for name, s in figures["summary"].items():
        lines.append(
            f"| {name} | {s['tasks']} | {_f(s['mean_abs_gap_before'])} | "
            f"{_f(s['mean_abs_gap_after'])} |"
        )
    lines += [
        "",
        "| suite | task | half | K | images | measured | est. before | est. after | gap before "
        "| gap after | evidence (classes per kind) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in figures["tasks"]:
        ev = ", ".join(f"{k} {n}" for k, n in r["evidence"].items())
        lines.append(
            f"| {r['suite']} | {r['task']} | {r['half']} | {r['classes']} | {r['images']} | "
            f"{r['measured']:.3f} | {_f(r['estimated_before'])} | {_f(r['estimated_after'])} "
            f"| {_f(r['gap_before'])} | {_f(r['gap_after'])} | {ev} |"
        )
    return "\n".join(lines) + "\n"
