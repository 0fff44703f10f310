"""A/B of the stacked rule's model screen (mllgraph.combine.screen) on an existing hub.

Both variants run in one process on the same hub, tasks and images, side by side: "chco"
fits the stacked rule only on CHCO's models (the screen switched off), "screened" also fits
it on the screen's models and keeps the better. MLL accuracy per task and sub-hub size,
in-process (select with store=False, then the plan applied to cached logits exactly as
inference applies it). Only the suite's `dev` half unless --split says otherwise: rules
are tuned on dev, test is only reported.

    MLLGRAPH_HOME=.mllgraph python scripts/ab_stacked.py --sizes 3,6,12 --out reports/ab.json

The hub is the demo's (`mllgraph demo` or `hub build --experts 12`, seed 0).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from mllgraph.combine import screen as feature_sets
    from mllgraph.eval import evalset, scoring, zeroshot
    from mllgraph.eval.tasks import load_suite
    from mllgraph.graph import db
    from mllgraph.ground.resolve import default_resolver
    from mllgraph.hub import registry
    from mllgraph.plan import request as plan_request
    from mllgraph.select import run as select
    from mllgraph.settings import Settings

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="3,6,12")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipe", default="e1-m4000-p0", help="the experts' version")
    ap.add_argument("--budget", type=int, default=5)
    ap.add_argument("--split", default="dev")
    ap.add_argument("--test-per-class", type=int, default=50)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    settings = Settings.from_env()
    suite = load_suite().half(args.split)
    screen = feature_sets.greedy_models
    rows = []
    with db.connect(settings) as graph:
        images = evalset.eval_images(settings, args.test_per_class)
        logits = evalset.LogitCache(graph, settings, images)
        resolver = default_resolver(settings)
        builtins = tuple(registry.model_id(b, "1") for b in registry.BUILTINS)
        for size in [int(s) for s in args.sizes.split(",")]:
            ids = zeroshot._fashion_ids(graph, args.seed, size, args.recipe)
            models = (*ids, *builtins)
            for task in suite.tasks:
                idx, labels = images.for_task(task)
                row = {"task": task.name, "experts": len(ids)}
                for variant in ("chco", "screened"):
                    feature_sets.greedy_models = (
                        screen if variant == "screened" else (lambda *a, **k: ([], 0.0))
                    )
                    t = time.perf_counter()
                    plan = select.select(
                        graph,
                        settings,
                        [plan_request.TaskClass(n) for n in task.names],
                        plan_request.SelectOptions(budget=args.budget, models=models),
                        resolver,
                        store=False,
                    ).plan
                    ms = (time.perf_counter() - t) * 1000
                    pred = scoring.classify_plan(plan, logits, idx, logits.in_domain)
                    row[variant] = float((pred == labels).mean())
                    row[f"{variant}_models"] = plan["models"]
                    row[f"{variant}_estimate"] = plan["estimated_accuracy"]
                    row[f"{variant}_ms"] = round(ms, 1)
                feature_sets.greedy_models = screen
                rows.append(row)
                print(
                    f"{size:>3} {task.name:<32} chco {row['chco']:.3f}  "
                    f"screened {row['screened']:.3f}  ({row['chco_ms']:.0f} / "
                    f"{row['screened_ms']:.0f} ms)",
                    flush=True,
                )
    summary = {}
    for size in sorted({r["experts"] for r in rows}):
        mine = [r for r in rows if r["experts"] == size]
        summary[size] = {v: float(np.mean([r[v] for r in mine])) for v in ("chco", "screened")}
        print(f"hub of {size} experts ({args.split}, {len(mine)} tasks): {summary[size]}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                        "summary": summary, "rows": rows}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
