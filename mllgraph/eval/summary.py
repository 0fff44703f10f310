"""What a suite run comes to: mean accuracy per method, share of the oracle, per suite half,
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


def summarise(results: list[TaskResult]) -> dict[str, Any]:
    """Mean accuracy per method over the tasks, and each method's share of the oracle (its
    mean over the oracle's mean, on the tasks that have an oracle figure)."""
    methods = ["mll"] + sorted({b for r in results for b in r.baselines})
    mean: dict[str, float | None] = {}
    share: dict[str, float | None] = {}
    with_oracle = [r for r in results if r.baselines.get("oracle") is not None]
    oracle_mean = float(np.mean([r.baselines["oracle"] for r in with_oracle])) if with_oracle else 0
    for m in methods:
        mean[m] = _mean([_value(r, m) for r in results])
        paired = [_value(r, m) for r in with_oracle]
        share[m] = (
            _mean(paired) / oracle_mean
            if oracle_mean > 0 and paired and None not in paired
            else None
        )
    # The coverage goal: no class left uncovered where the hub has a head for it.
    tasks_uncovered = {
        why: sum(why in r.uncovered_why.values() for r in results) for why in UNCOVERED_WHY
    }
    return {
        "tasks": len(results),
        "mean_accuracy": mean,
        "share_of_oracle": share,
        "tasks_with_uncovered": tasks_uncovered,
    }


def summarise_halves(results: list[TaskResult]) -> dict[str, dict[str, Any]]:
    """:func:`summarise` of the `dev` half, the `test` half and all tasks, side by side."""
    out = {h: summarise([r for r in results if r.split == h]) for h in SPLITS}
    out["all"] = summarise(results)
    return out


def _value(r: TaskResult, method: str) -> float | None:
    return r.mll if method == "mll" else r.baselines.get(method)


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def halves_table(results: list[TaskResult]) -> str:
    """Markdown: per method, mean accuracy and share of the oracle on each half and on all."""
    halves = summarise_halves(results)
    methods = ["mll"] + sorted({b for r in results for b in r.baselines})
    cols = [*SPLITS, "all"]
    lines = [
        "| method | "
        + " | ".join(f"{h} ({halves[h]['tasks']} tasks) | {h}: share of oracle" for h in cols)
        + " |",
        "|---|" + "---|---|" * len(cols),
    ]
    for m in methods:
        cells = []
        for h in cols:
            acc, share = halves[h]["mean_accuracy"].get(m), halves[h]["share_of_oracle"].get(m)
            cells += ["" if acc is None else f"{acc:.3f}", "" if share is None else f"{share:.1%}"]
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
