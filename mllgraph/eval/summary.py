"""What a suite run comes to: mean accuracy per method with its task-bootstrap 95% interval,
each method's share of the supervised reference, per suite half and the dev − test difference,
as dictionaries and Markdown tables; the results as JSON.

Reads :class:`evaluate.TaskResult` only; evaluate must not import it (it imports evaluate).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.eval.evaluate import TaskResult
from mllgraph.eval.tasks import SPLITS
from mllgraph.plan.document import UNCOVERED_WHY

REFERENCE = "supervised"  # shares are of this method's mean (eval/supervised)
BOOTSTRAP = 2000  # task resamples per interval
LEVEL = 0.95


def summarise(results: list[TaskResult]) -> dict[str, Any]:
    """Mean accuracy per method over the tasks with its task-bootstrap interval, and each
    method's share of the supervised reference (its mean over the reference's mean, on the
    tasks that have a reference figure)."""
    methods = ["mll"] + sorted({b for r in results for b in r.baselines})
    mean: dict[str, float | None] = {}
    interval: dict[str, list[float] | None] = {}
    share: dict[str, float | None] = {}
    with_ref = [r for r in results if r.baselines.get(REFERENCE) is not None]
    ref_mean = float(np.mean([r.baselines[REFERENCE] for r in with_ref])) if with_ref else 0
    for m in methods:
        values = [_value(r, m) for r in results]
        mean[m] = _mean(values)
        interval[m] = bootstrap_interval([v for v in values if v is not None])
        paired = [_value(r, m) for r in with_ref]
        share[m] = (
            _mean(paired) / ref_mean if ref_mean > 0 and paired and None not in paired else None
        )
    # The coverage goal: no class left uncovered where the hub has a head for it.
    tasks_uncovered = {
        why: sum(why in r.uncovered_why.values() for r in results) for why in UNCOVERED_WHY
    }
    return {
        "tasks": len(results),
        "mean_accuracy": mean,
        "interval_95": interval,
        "share_of_supervised": share,
        "tasks_with_uncovered": tasks_uncovered,
    }


def bootstrap_interval(values: list[float], seed: int = 0) -> list[float] | None:
    """Task-bootstrap percentile interval (:data:`LEVEL`) of the mean of `values`; None for
    no values. Tasks are the resampled unit: the images of one task are not independent."""
    if not values:
        return None
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(BOOTSTRAP, len(v)))].mean(1)
    lo, hi = np.percentile(means, [50 * (1 - LEVEL), 100 - 50 * (1 - LEVEL)])
    return [float(lo), float(hi)]


def difference_interval(a: list[float], b: list[float], seed: int = 0) -> list[float] | None:
    """Task-bootstrap interval of mean(a) − mean(b), each half resampled on its own."""
    if not a or not b:
        return None
    rng = np.random.default_rng(seed)
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    da = va[rng.integers(0, len(va), size=(BOOTSTRAP, len(va)))].mean(1)
    db = vb[rng.integers(0, len(vb), size=(BOOTSTRAP, len(vb)))].mean(1)
    lo, hi = np.percentile(da - db, [50 * (1 - LEVEL), 100 - 50 * (1 - LEVEL)])
    return [float(lo), float(hi)]


def summarise_halves(results: list[TaskResult]) -> dict[str, dict[str, Any]]:
    """:func:`summarise` of the `dev` half, the `test` half and all tasks, side by side."""
    out: dict[str, dict[str, Any]] = {
        h: summarise([r for r in results if r.split == h]) for h in SPLITS
    }
    out["all"] = summarise(results)
    dev = [r for r in results if r.split == "dev"]
    test = [r for r in results if r.split == "test"]
    diff: dict[str, Any] = {}
    for m in out["all"]["mean_accuracy"]:
        a = [v for v in (_value(r, m) for r in dev) if v is not None]
        b = [v for v in (_value(r, m) for r in test) if v is not None]
        if a and b:
            diff[m] = {
                "difference": float(np.mean(a) - np.mean(b)),
                "interval_95": difference_interval(a, b),
            }
    out["dev_minus_test"] = diff
    return out


def _value(r: TaskResult, method: str) -> float | None:
    return r.mll if method == "mll" else r.baselines.get(method)


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def halves_table(results: list[TaskResult]) -> str:
    """Markdown: per method, mean accuracy [95% interval] and share of the supervised
    reference on each half and on all, and the dev − test difference."""
    halves = summarise_halves(results)
    methods = ["mll"] + sorted({b for r in results for b in r.baselines})
    cols = [*SPLITS, "all"]
    lines = [
        "| method | "
        + " | ".join(f"{h} ({halves[h]['tasks']} tasks) | {h}: share of supervised" for h in cols)
        + " | dev − test |",
        "|---|" + "---|---|" * len(cols) + "---|",
    ]
    for m in methods:
        cells = []
        for h in cols:
            acc, share = halves[h]["mean_accuracy"].get(m), halves[h]["share_of_supervised"].get(m)
            ci = halves[h]["interval_95"].get(m)
            shown = (
                "" if acc is None else f"{acc:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
            )
            cells += [shown, "" if share is None else f"{share:.1%}"]
        d = halves["dev_minus_test"].get(m)
        cells.append(
            ""
            if d is None
            else f"{d['difference']:+.3f} [{d['interval_95'][0]:+.3f}, {d['interval_95'][1]:+.3f}]"
        )
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_table(results: list[TaskResult]) -> str:
    methods = ["mll"] + sorted({b for r in results for b in r.baselines})
    lines = [
        "| task | half | K | images | "
        + " | ".join(methods)
        + " | mll estimated | models | uncovered (why; scored by) |",
        "|---|---|---|---|" + "---|" * len(methods) + "---|---|---|",
    ]
    for r in results:
        vals = [r.mll] + [r.baselines.get(m) for m in methods[1:]]
        cells = " | ".join("" if v is None else f"{v:.3f}" for v in vals)
        est = "-" if r.estimated is None else f"{r.estimated:.3f}"
        lines.append(
            f"| {r.task} | {r.split or '-'} | {len(r.classes)} | {r.images} | {cells} | "
            f"{est} | {len(r.models)} | {r.uncovered_text()} |"
        )
    s = summarise(results)["mean_accuracy"]
    cells = " | ".join("" if s[m] is None else f"**{s[m]:.3f}**" for m in methods)
    lines.append(f"| **mean** | | | | {cells} | | | |")
    return "\n".join(lines)


def results_json(results: list[TaskResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return path
