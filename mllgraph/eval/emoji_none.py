""" "None of these" on the emoji world's held-out style (issue #23, item 4's measure).

For each task of the emoji suite, on one held-out style: the task's plan (the one MLL served;
selected again here, so the stored plan), in-task images = the held-out style's images of the
task's concepts, negatives = its images of every other concept of the run that is neither
under nor above a task concept (a poodle is a dog: not a negative for "dog"). Scored by the
inference rule from the run's cached logits (`none_study.logit_scorer`), at the plan's default
threshold, calibrated on probe images of the other styles only. The same figures as the
Fashion study (`none_study.summarise`): AUROC, in-task accuracy with and without "none of
these", the drop in points.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mllgraph.eval.none_study import logit_scorer, measure_task, summarise
from mllgraph.eval.tasks import SPLITS
from mllgraph.graph.db import Graph
from mllgraph.plan import document as plan_doc
from mllgraph.settings import Settings

Log = Callable[[str], None]


def negatives(
    image_wnids: np.ndarray, task_wnids: Sequence[str], ancestors: Mapping[str, set]
) -> np.ndarray:
    """Indices of the images whose concept is not a task concept, not under one and not above
    one (the unrelated images: the only honest "none of these")."""
    task = set(task_wnids)
    related = {
        w
        for w in set(image_wnids.tolist())
        if w in task or task & ancestors.get(w, set()) or any(w in ancestors[t] for t in task)
    }
    return np.flatnonzero(~np.isin(image_wnids, sorted(related)))


def measure(
    graph: Graph,
    settings: Settings,
    tasks: Sequence[Any],  # EmojiTask: name, names, wnids, split
    images: Any,  # EmojiImages: wnids, for_task
    logits: Any,  # evalset.LogitCache over `images`
    budget: int,
    models: tuple[str, ...] | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Per task and per half, as `none_study.run_fashion` reports them. `budget`, `models`:
    the run's selection options, so that the plan is the one MLL served (stored)."""
    from mllgraph.graph.wordnet import load_nouns
    from mllgraph.ground.resolve import default_resolver
    from mllgraph.plan import request as plan_request
    from mllgraph.select import run as select

    nouns = load_nouns(settings.wordnet_dir)
    wnids = set(images.wnids.tolist()) | {w for t in tasks for w in t.wnids}
    ancestors = {w: nouns.with_ancestors(w) - {w} for w in wnids}
    resolver = default_resolver(settings)
    rows: list[dict[str, Any]] = []
    for task in tasks:
        plan = select.select(
            graph,
            settings,
            [plan_request.TaskClass(n) for n in task.names],
            plan_request.SelectOptions(budget=budget, models=models),
            resolver,
        ).plan
        row: dict[str, Any] = {"task": task.name, "split": task.split, "plan_id": plan["plan_id"]}
        if plan_doc.parse_plan(plan).none is None:
            row["why"] = (plan.get("none_of_these") or {}).get("why")
            rows.append(row)
            log(f"  none of these, {task.name}: no calibration ({row['why']})")
            continue
        inside, labels = images.for_task(task)
        outside = negatives(images.wnids, task.wnids, ancestors)
        if not inside.size or not outside.size:
            row["why"] = "no in-task or no unrelated images"
            rows.append(row)
            continue
        row |= measure_task(plan, logit_scorer(plan, logits), inside, labels, outside)
        row["negatives"] = int(outside.size)
        log(
            f"  none of these, {task.name}: AUROC {row['auroc']:.3f} "
            f"(probes {row['probe_auroc']:.3f}), accuracy {row['accuracy']:.3f} -> "
            f"{row['accuracy_allow_none']:.3f}"
        )
        rows.append(row)
    return {
        "what": "none of these on the held-out style: in-task = its images of the task's "
        "concepts; negatives = its images of the run's other concepts, none under or above a "
        "task concept; calibration on probe images of the other styles",
        "targets": {"auroc": 0.90, "accuracy_drop_points": 1.0},
        "halves": {s: summarise([r for r in rows if r.get("split") == s]) for s in SPLITS},
        "all": summarise(rows),
        "tasks": rows,
    }
