"""MLL accuracy against hub size on one half of the task suite, in-process (no gRPC): select
with store=False, then the plan applied to cached logits exactly as inference applies it.
A quick look at one rule change on the `dev` half (the zero-shot benchmark is the report of
record); `--no-imagenet` leaves the EfficientNet-Lite experts out of every sub-hub, so the
curve shows what the Fashion experts alone add.

    MLLGRAPH_HOME=/tmp/zs-home python scripts/hub_curve.py --sizes 5,10,20,50 --out F.json

The hub is the zero-shot benchmark's (`bench zeroshot --experts 50 ...`: recipe e1-m2000-p0).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from mllgraph.plan import request as plan_request

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from mllgraph.eval import evalset, scoring, zeroshot
    from mllgraph.eval.tasks import load_suite
    from mllgraph.graph import db
    from mllgraph.ground.resolve import default_resolver
    from mllgraph.hub import registry
    from mllgraph.select import run as select
    from mllgraph.settings import Settings

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="5,10,20,50")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipe", default="e1-m2000-p0", help="the experts' version")
    ap.add_argument("--split", default="dev", help="dev, test or all (to report only)")
    ap.add_argument("--budget", type=int, default=5)
    ap.add_argument("--test-per-class", type=int, default=50)
    ap.add_argument("--no-imagenet", action="store_true")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    settings = Settings.from_env()
    suite = load_suite() if args.split == "all" else load_suite().half(args.split)
    rows = []
    with db.connect(settings) as graph:
        images = evalset.eval_images(settings, args.test_per_class)
        logits = evalset.LogitCache(graph, settings, images)
        resolver = default_resolver(settings)
        builtins = () if args.no_imagenet else registry.BUILTINS
        extra = tuple(registry.model_id(b, "1") for b in builtins)
        for size in [int(s) for s in args.sizes.split(",")]:
            ids = zeroshot._fashion_ids(graph, args.seed, size, args.recipe)
            for task in suite.tasks:
                idx, labels = images.for_task(task)
                t = time.perf_counter()
                plan = select.select(
                    graph,
                    settings,
                    [plan_request.TaskClass(n) for n in task.names],
                    plan_request.SelectOptions(budget=args.budget, models=(*ids, *extra)),
                    resolver,
                    store=False,
                ).plan
                ms = (time.perf_counter() - t) * 1000
                pred = scoring.classify_plan(plan, logits, idx, logits.in_domain)
                rows.append(
                    {
                        "experts": size,
                        "task": task.name,
                        "accuracy": float((pred == labels).mean()),
                        "estimated": plan.get("estimated_accuracy"),
                        "models": plan["models"],
                        "concepts": [c["concept"]["name"] for c in plan["classes"]],
                        "uncovered": {
                            c["name"]: c.get("uncovered_why", "")
                            for c in plan["classes"]
                            if c["coverage"] == "uncovered"
                        },
                        "select_ms": round(ms),
                    }
                )
                print(size, task.name, f"{rows[-1]['accuracy']:.3f}", flush=True)
    sizes = sorted({r["experts"] for r in rows})
    means = {s: float(np.mean([r["accuracy"] for r in rows if r["experts"] == s])) for s in sizes}
    for s, m in means.items():
        print(f"experts {s:>3}: MLL {m:.4f}")
    report = {"config": vars(args) | {"out": str(args.out)}, "mean": means, "tasks": rows}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
