"""`mllgraph bench none`: how well "none of these" (`mllgraph.combine.none_of_these`) works.

The measure is generic (:func:`measure_task`): a plan, images of the task's classes with their
labels, and images of concepts outside the task; a scorer gives each image's predicted class
and "none of these" score (:func:`classifier_scorer`: the inference library itself, any
images, e.g. another world's held-out style; :func:`logit_scorer`: the same rule from cached
logits, for the Fashion study where every model runs once over all images). Reported: AUROC
(outside vs in-task), in-task accuracy without and with "none of these" at the plan's default
threshold (a rejected in-task image counts wrong), the drop in points, and the shares
rejected.

The Fashion study (:func:`run_fashion`): every task of a suite that leaves some Fashion-MNIST
classes out; plans selected in-process on the hub (their calibration uses the hub's probe
images: never these test images); in-task images are held-out Fashion-MNIST test images of
the task's classes, negatives the test images of the other classes. Halves reported apart
(`dev` may be looked at while changing the score; `test` only reported).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.combine import none_of_these
from mllgraph.errors import FailedPrecondition
from mllgraph.eval.evalset import EvalImages, LogitCache, eval_images
from mllgraph.eval.summary import write_json
from mllgraph.eval.tasks import SPLITS, Suite, Task
from mllgraph.graph.db import Graph
from mllgraph.hubs.fashion.data import FASHION_CLASSES
from mllgraph.plan import apply
from mllgraph.plan import document as plan_doc
from mllgraph.reuse.classifier import PlanClassifier
from mllgraph.settings import Settings

# images -> (predicted class index per image, "none of these" score per image)
Scorer = Callable[[Any], tuple[np.ndarray, np.ndarray]]
Log = Callable[[str], None]


def classifier_scorer(clf: PlanClassifier, batch: int = 256) -> Scorer:
    """The inference library on any images (a sequence of arrays)."""
    if clf.none_threshold is None:
        raise FailedPrecondition(f"plan {clf.plan.plan_id} has no none-of-these calibration")

    def score(images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        results = []
        for start in range(0, len(images), batch):
            results += clf.classify(list(images[start : start + batch]))
        pred = np.array([r.class_index for r in results], dtype=np.int64)
        return pred, np.array([r.none_score for r in results], dtype=np.float64)

    return score


def logit_scorer(plan: Mapping[str, Any], logits: LogitCache) -> Scorer:
    """The plan on evaluation images given by index into `logits`' images: the same rule,
    domains and score as inference (`mllgraph.plan.apply`), each model run once."""
    parsed = plan_doc.parse_plan(plan)
    if parsed.none is None:
        raise FailedPrecondition(f"plan {parsed.plan_id} has no none-of-these calibration")

    def score(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(idx, dtype=np.int64)
        by_model = {m: logits(m)[idx] for m in apply.models_to_run(parsed)}
        masks = {}
        for m in parsed.models:
            mask = logits.in_domain(m)
            if mask is not None:
                masks[m] = mask[idx]
        probs = apply.probabilities(parsed, by_model, len(idx), None, masks)
        scores = apply.none_scores(parsed, by_model, masks)
        assert scores is not None
        return probs.argmax(1), scores

    return score


def measure_task(
    plan: Mapping[str, Any],
    scorer: Scorer,
    inside: Any,
    inside_labels: np.ndarray,
    outside: Any,
) -> dict[str, Any]:
    """`none_of_these.measure` of one task: `inside` images (what `scorer` takes) of the
    task's classes with their task-class `inside_labels`, `outside` images of concepts not in
    the task; at the plan's default threshold."""
    parsed = plan_doc.parse_plan(plan)
    if parsed.none is None:
        raise FailedPrecondition(f"plan {parsed.plan_id} has no none-of-these calibration")
    pred, si = scorer(inside)
    _, so = scorer(outside)
    got: dict[str, Any] = none_of_these.measure(
        si, pred == np.asarray(inside_labels), so, parsed.none.threshold
    )
    got["threshold"] = parsed.none.threshold
    got["probe_auroc"] = parsed.none.probe_auroc
    got["probe_rejected"] = parsed.none.probe_rejected
    got["held_out"] = parsed.none.held_out  # how the probe figures and threshold were made
    return got


class StoredLogits(LogitCache):
    """A `LogitCache` that also keeps each model's logits in `folder` (one .npy per model
    and image set), so a rerun over the same hub and images runs no model again."""

    def __init__(self, graph: Graph, settings: Settings, images: EvalImages, folder: Path):
        super().__init__(graph, settings, images)
        self.folder = folder
        digest = hashlib.sha256(images.images.tobytes()).hexdigest()[:12]
        self._stem = f"{len(images.images)}-{digest}"

    def _path(self, mid: str) -> Path:
        safe = "".join(ch if ch.isalnum() or ch in "-_.@" else "_" for ch in mid)
        return self.folder / f"{safe}-{self._stem}.npy"

    def __call__(self, mid: str) -> np.ndarray:
        path = self._path(mid)
        if mid not in self._logits and path.is_file():
            self._logits[mid] = np.load(path)
        out = super().__call__(mid)
        if not path.is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            np.save(path, out)
        return out


def fashion_tasks(suite: Suite) -> list[Task]:
    """The suite's tasks that leave some Fashion-MNIST class out (so have negatives)."""
    every = set(range(len(FASHION_CLASSES)))
    return [t for t in suite.tasks if set(t.label_map()) != every]


def run_fashion(
    graph: Graph,
    settings: Settings,
    suite: Suite,
    *,
    per_class: int = 200,
    budget: int = 5,
    log: Log = print,
    logits_dir: Path | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """The Fashion study of the module doc; a JSON-ready report. `logits_dir`: keep the
    models' logits on the test images there (`StoredLogits`); `out`: write the report there
    after every task (a long run's finished tasks are kept if it is stopped)."""
    from mllgraph.ground.resolve import default_resolver
    from mllgraph.plan import request as plan_request
    from mllgraph.select import run as select

    images: EvalImages = eval_images(settings, per_class)
    logits = (
        LogitCache(graph, settings, images)
        if logits_dir is None
        else StoredLogits(graph, settings, images, logits_dir)
    )
    resolver = default_resolver(settings)
    rows: list[dict[str, Any]] = []

    def report() -> dict[str, Any]:
        return {
            "what": "none of these on the Fashion probe pool: tasks of a subset of Fashion "
            "classes; in-task = held-out Fashion-MNIST test images of the task's classes, "
            "negatives = test images of the other classes; calibration on the hub's probe "
            "images",
            "targets": {"auroc": 0.90, "accuracy_drop_points": 1.0},
            "per_class": per_class,
            "budget": budget,
            "tasks_planned": len(todo),
            "halves": {s: summarise([r for r in rows if r.get("split") == s]) for s in SPLITS},
            "all": summarise(rows),
            "tasks": rows,
        }

    todo = fashion_tasks(suite)
    for task in todo:
        t0 = time.perf_counter()
        ctx = select.select(
            graph,
            settings,
            [plan_request.TaskClass(n) for n in task.names],
            plan_request.SelectOptions(budget=budget),
            resolver,
        )
        plan = ctx.plan
        row: dict[str, Any] = {"task": task.name, "split": task.split, "plan_id": plan["plan_id"]}
        row["none_of_these"] = plan.get("none_of_these")
        if plan_doc.parse_plan(plan).none is None:
            log(f"{task.name}: no calibration ({(plan.get('none_of_these') or {}).get('why')})")
            rows.append(row)
            if out is not None:
                write_json(out, report())
            continue
        inside, labels = images.for_task(task)
        outside = np.flatnonzero(~np.isin(images.fashion, list(task.label_map())))
        row |= measure_task(plan, logit_scorer(plan, logits), inside, labels, outside)
        row["seconds"] = time.perf_counter() - t0
        log(
            f"{task.name:<45} AUROC {row['auroc']:.3f} (probes {row['probe_auroc']:.3f})  "
            f"accuracy {row['accuracy']:.3f} -> {row['accuracy_allow_none']:.3f} "
            f"(drop {row['accuracy_drop_points']:.2f} pt)  outside refused "
            f"{row['outside_rejected']:.2f}"
        )
        rows.append(row)
        if out is not None:
            write_json(out, report())
    return report()


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Means over the calibrated tasks, the worst task, and how many met each target."""
    done = [r for r in rows if "auroc" in r]

    def mean(key: str) -> float | None:
        vals = [float(r[key]) for r in done if not math.isnan(float(r[key]))]
        return float(np.mean(vals)) if vals else None

    return {
        "tasks": len(rows),
        "calibrated": len(done),
        "auroc_mean": mean("auroc"),
        "auroc_min": min((r["auroc"] for r in done), default=None),
        "accuracy_drop_points_mean": mean("accuracy_drop_points"),
        "accuracy_drop_points_max": max((r["accuracy_drop_points"] for r in done), default=None),
        "inside_rejected_mean": mean("inside_rejected"),
        "outside_rejected_mean": mean("outside_rejected"),
        "tasks_auroc_at_least_0.90": sum(r["auroc"] >= 0.90 for r in done),
        "tasks_drop_at_most_1_point": sum(r["accuracy_drop_points"] <= 1.0 for r in done),
    }
