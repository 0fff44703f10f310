"""Which of the stacked choice's options a suite's tasks are served by, and what MLL and the
stacked stage's time would be without one of the screen's two pools.

`select.stacked_choice` fits the stacked rule on CHCO's models and on what the screen picks
from two pools (every screened model; with model costs, also those no dearer than CHCO's
plan). For every task of the Fashion suite's `--split` half, SelectHeads runs in-process
three times on one hub, everything else equal: `full` (today), `noC` (the cheap pool's
screen picks nothing) and `noB` (the all-model pool's screen picks nothing); each plan is
applied to the same cached test images exactly as inference applies it. The fit cache is
off, so every fit is timed. Recorded per task: MLL accuracy, the stacked stage's time,
the served plan's cost (ms per image) and whether the screen's option was served.

    MLLGRAPH_HOME=/tmp/hub python scripts/ab_screen_pools.py --split dev \\
        --out reports/select-real/ab_screen_pools_dev.json

The hub is the demo's (`mllgraph demo` or `hub build --experts 12`, seed 0).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = ("full", "noC", "noB")


def main() -> int:
    from fashion_ab import arguments, report, suite_pipeline

    from mllgraph.combine import screen
    from mllgraph.select import stacked_choice
    from mllgraph.select.cache import FitCache

    args = arguments()
    stacked_choice.FITS = FitCache(0)  # every fit timed
    greedy = screen.greedy_models
    state = {"mode": "full", "calls": 0}

    def screened(*a: Any, **k: Any) -> tuple[list[str], float]:
        # The first call is the all-model pool, the second the cheap one (stacked_choice).
        state["calls"] += 1
        skip = {"noB": 1, "noC": 2}.get(str(state["mode"]))
        return ([], 0.0) if state["calls"] == skip else greedy(*a, **k)

    stacked_choice.feature_sets.greedy_models = screened  # type: ignore[attr-defined]
    rows: list[dict[str, Any]] = []
    with suite_pipeline(args.split, args.test_per_class) as (suite, pipeline, images, models):
        for task in suite.tasks:
            idx, labels = images.for_task(task)
            row: dict[str, Any] = {"task": task.name}
            for mode in MODES:
                state.update(mode=mode, calls=0)
                plan = pipeline.select(task, args.budget, models)
                note = plan.get("stacked", {})
                pred = pipeline.classify_indices(plan, idx)
                row[mode] = float((pred == labels).mean())
                row[f"{mode}_stacked_ms"] = round(plan["timings_ms"]["stacked_ms"], 1)
                row[f"{mode}_cost_ms_per_image"] = plan.get("cost_ms_per_image")
                row[f"{mode}_served"] = "screen" if "chco_models" in note else "chco"
                row[f"{mode}_models"] = plan["models"]
            rows.append(row)
            print(
                f"{task.name:<32} "
                + "  ".join(
                    f"{m} {row[m]:.3f} {row[m + '_served']} {row[m + '_stacked_ms']:.0f} ms"
                    for m in MODES
                ),
                flush=True,
            )
    summary: dict[str, Any] = {"tasks": len(rows)}
    for mode in MODES:
        diffs = [100 * (r[mode] - r["full"]) for r in rows]
        summary[mode] = {
            "mean": float(np.mean([r[mode] for r in rows])),
            "mean_diff_points": float(np.mean(diffs)),
            "worst_task_diff_points": float(min(diffs)),
            "tasks_more_than_half_a_point_worse": [
                r["task"] for r, d in zip(rows, diffs, strict=True) if d < -0.5 - 1e-9
            ],
            "stacked_ms_median": float(np.median([r[f"{mode}_stacked_ms"] for r in rows])),
            "cost_ms_per_image_mean": float(
                np.mean([r[f"{mode}_cost_ms_per_image"] for r in rows])
            ),
            "served_by_the_screen": sum(r[f"{mode}_served"] == "screen" for r in rows),
        }
    what = (
        "the stacked choice's options: MLL, stacked-stage time and cost without "
        "the screen's cheap pool (noC) or all-model pool (noB); fit cache off"
    )
    report(args, what, summary, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
