"""Which probe sets a class without its own borrows (`select.probe_data.proxy_probes`), side
by side: `old` (the deepest concept its ancestor or related candidates were labelled on,
whichever kind) and `new` (its ancestors first, the deepest first, then related concepts).

For every task of the Fashion suite's `--split` half, SelectHeads runs in-process once per
order on one hub, everything else equal (plans unstored; the stacked fit cache is keyed by
the probe-set partition, so a changed proxy is fitted afresh), and each plan is applied to
the same cached Fashion-MNIST test images exactly as inference applies it. Recorded per
task: MLL accuracy per order, each class's borrowed concept, the plan's models and whether
the plans differ.

    MLLGRAPH_HOME=/tmp/hub python scripts/ab_proxy_order.py --split dev \\
        --out reports/select-real/ab_proxy_order_dev.json

The hub is the demo's (`mllgraph demo` or `hub build --experts 12`, seed 0).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = ("old", "new")


def old_order(r: dict[str, Any]) -> tuple[int, float, str]:
    """The order before: the deepest concept first, ancestor or related alike."""
    return (-(r.get("via_depth") or 0), -r["score"], r["via"] or "")


def switch_proxy_order() -> dict[str, Any]:
    """Make selection's proxy order switchable: the returned state's "mode" ("old" or "new")
    picks the order for the next selection, which leaves the proxies it borrowed (class ->
    concept) in its "proxies"."""
    from mllgraph.select import probe_data
    from mllgraph.select import run as select_run

    state: dict[str, Any] = {"mode": "new", "proxies": {}}
    today, todays_order = probe_data.proxy_probes, probe_data.nearest_first

    def proxies(reads: Any, rows: list[dict[str, Any]], probe_rows: Any, k: int) -> Any:
        probe_data.nearest_first = old_order if state["mode"] == "old" else todays_order
        try:
            found = today(reads, rows, probe_rows, k)
        finally:
            probe_data.nearest_first = todays_order
        state["proxies"] = {str(r["class_index"]): r["proxy"] for r in found}
        return found

    select_run.proxy_probes = proxies  # type: ignore[assignment]
    return state


def main() -> int:
    from fashion_ab import arguments, report, suite_pipeline

    args = arguments()
    state = switch_proxy_order()
    rows: list[dict[str, Any]] = []
    with suite_pipeline(args.split, args.test_per_class) as (suite, pipeline, images, models):
        for task in suite.tasks:
            idx, labels = images.for_task(task)
            row: dict[str, Any] = {"task": task.name}
            for mode in MODES:
                state["mode"] = mode
                plan = pipeline.select(task, args.budget, models)
                pred = pipeline.classify_indices(plan, idx)
                row[mode] = float((pred == labels).mean())
                row[f"{mode}_proxies"] = state["proxies"]
                row[f"{mode}_models"] = plan["models"]
                row[f"{mode}_coverage"] = [c.get("coverage") for c in plan["classes"]]
            row["plans_differ"] = any(
                row[f"old_{k}"] != row[f"new_{k}"] for k in ("proxies", "models", "coverage")
            )
            rows.append(row)
            print(
                f"{task.name:<32} old {row['old']:.3f} new {row['new']:.3f} "
                f"proxies {row['old_proxies']} -> {row['new_proxies']}",
                flush=True,
            )
    diffs = [100 * (r["new"] - r["old"]) for r in rows]
    summary = {
        "tasks": len(rows),
        "tasks_with_a_proxy": sum(bool(r["old_proxies"] or r["new_proxies"]) for r in rows),
        "tasks_whose_plan_changed": [r["task"] for r in rows if r["plans_differ"]],
        "old_mean": float(np.mean([r["old"] for r in rows])),
        "new_mean": float(np.mean([r["new"] for r in rows])),
        "mean_diff_points": float(np.mean(diffs)),
        "per_task_diff_points": {
            r["task"]: round(d, 2) for r, d in zip(rows, diffs, strict=True) if d
        },
    }
    what = (
        "MLL with the proxy probe sets chosen in the old order (deepest concept, "
        "ancestor or related alike) and the new (ancestors first); plans unstored"
    )
    report(args, what, summary, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
