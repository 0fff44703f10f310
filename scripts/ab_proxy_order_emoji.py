"""`ab_proxy_order.py` on the emoji world's held-out style (twemoji): MLL and "none of these"
per task of the emoji suite with the proxy order `old` (the deepest concept first, ancestor or
related alike) and `new` (ancestors first, `select.probe_data.nearest_first`), everything else
equal, in one process, on one hub prepared by `mllgraph bench zeroshot --world emoji
--emoji-experts --held-out twemoji --per-style 8 --per-emoji 4 --train-styles fluent-modern`
(its probe sets and models as they are). Task images: the held-out style's, 4 per emoji, seed
0, as the bench makes them; every model runs over them once. Plans unstored, fit cache cleared.

    MLLGRAPH_HOME=/tmp/emoji_hub python scripts/ab_proxy_order_emoji.py \\
        --out reports/select-real/ab_proxy_order_emoji.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = ("old", "new")


def main() -> int:
    from ab_proxy_order import switch_proxy_order
    from emoji_ab import held_out_world
    from fashion_ab import report

    from mllgraph.eval import emoji_none
    from mllgraph.eval.none_study import logit_scorer, measure_task
    from mllgraph.graph import db
    from mllgraph.ground.resolve import default_resolver
    from mllgraph.plan import document as plan_doc
    from mllgraph.plan import request as plan_request
    from mllgraph.select import run as select_run
    from mllgraph.select import stacked_choice
    from mllgraph.settings import Settings

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    state = switch_proxy_order()
    settings = Settings.from_env()
    rows_out: list[dict[str, Any]] = []
    with db.connect(settings) as graph:
        world = held_out_world(settings, graph, "twemoji")
        images, models, logits = world.images, world.models, world.logits
        resolver = default_resolver(settings)
        for task in world.suite.tasks:
            row: dict[str, Any] = {"task": task.name, "split": task.split}
            inside, labels = images.for_task(task)
            outside = emoji_none.negatives(images.wnids, task.wnids, world.ancestors)
            for mode in MODES:
                state["mode"] = mode
                stacked_choice.FITS.clear()
                classes = [plan_request.TaskClass(n) for n in task.names]
                options = plan_request.SelectOptions(budget=5, models=models)
                plan = select_run.select(
                    graph, settings, classes, options, resolver, store=False
                ).plan
                row[f"{mode}_proxies"], row[f"{mode}_models"] = state["proxies"], plan["models"]
                if plan_doc.parse_plan(plan).none is None:
                    row[mode] = None
                    continue
                got = measure_task(plan, logit_scorer(plan, logits), inside, labels, outside)
                row[mode] = {k: got[k] for k in ("accuracy", "auroc", "accuracy_drop_points")}
            rows_out.append(row)
            print(task.name, {m: row[m] for m in MODES}, flush=True)
    summary: dict[str, Any] = {}
    for half in ("dev", "test", "all"):
        sel = [r for r in rows_out if half == "all" or r["split"] == half]
        summary[half] = {
            m: {
                k: float(np.mean([r[m][k] for r in sel if r[m]]))
                for k in ("accuracy", "auroc", "accuracy_drop_points")
            }
            for m in MODES
        }
    summary["tasks_whose_proxy_changed"] = [
        r["task"] for r in rows_out if r["old_proxies"] != r["new_proxies"]
    ]
    what = (
        "emoji world, held-out twemoji: MLL accuracy and none-of-these AUROC per task with "
        "the proxy order old (deepest first) and new (ancestors first); plans unstored"
    )
    report(args, what, summary, rows_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
