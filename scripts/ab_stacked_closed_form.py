"""Side by side: the stacked rule's former fit (nested L-BFGS logistic CV,
mllgraph.combine.stacked_logistic) against today's closed-form fit (ridge with leave-one-out,
mllgraph.combine.stacked), on one hub, in one process.

For every task of the suite's `dev` half (rules are tuned on dev; test is only reported)
and every sub-hub size, SelectHeads runs twice in-process (store=False), once per fitter,
everything else equal; each plan is applied to the same cached test images exactly as
inference applies it. Recorded per task: MLL accuracy, the models, the estimate, whether
the stacked rule serves the plan, the time spent in the fitter per SelectHeads (both fits:
CHCO's models and the screen's) and the whole step-4 time (`timings_ms.stacked_ms`). The fit
cache is off for both, so every fit is timed.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MLLGRAPH_HOME=/tmp/hub \\
        python scripts/ab_stacked_closed_form.py --sizes 12 --tune accuracy \\
        --out reports/ab_stacked_closed_form.json

One BLAS thread: on a shared 2-core machine, OpenBLAS's default (a thread per core) made the
former fit's L-BFGS take minutes per task under load, which measures the machine, not the
rule. `--tune` adds dev-only variants of the new rule (TUNING).

The hub is the demo's (`mllgraph demo` or `hub build --experts 12`, seed 0).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ("old", "new")


def _accuracy_first(path: Any, y: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
    """A tuning variant: alpha by the leave-one-out accuracy, ties by the class-weighted
    leave-one-out squared error (the rule's first version; PRESS alone did better on dev)."""
    from mllgraph.combine import stacked

    onehot = np.eye(path.y.shape[1])[y]
    best: tuple[tuple[float, float], float, np.ndarray] | None = None
    for alpha in stacked.ALPHAS:
        loo = path.loo(alpha * y.size)
        err = float(weights @ ((loo - onehot) ** 2).sum(1))
        score = (-float((loo.argmax(1) == y).mean()), err)
        if best is None or score < best[0]:
            best = (score, alpha, loo)
    assert best is not None
    return best[1], best[2]


# Dev-only tuning variants of the new rule: attributes of mllgraph.combine.stacked replaced
# for one SelectHeads (`--tune accuracy,cols64`).
TUNING: dict[str, dict[str, Any]] = {
    "accuracy": {"choose_alpha": _accuracy_first},
    "cols64": {"MAX_COLUMNS": 64},
    "cols512": {"MAX_COLUMNS": 512},
}


def timed(fitter: Callable[..., Any], spent: list[float]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fitter(*args, **kwargs)
        finally:
            spent.append((time.perf_counter() - t) * 1000)

    run.__module__ = fitter.__module__  # (the fit cache's key names the fitter's module)
    return run


def main() -> int:
    from mllgraph.combine import stacked, stacked_logistic
    from mllgraph.eval import evalset, scoring, zeroshot
    from mllgraph.eval.tasks import load_suite
    from mllgraph.graph import db
    from mllgraph.ground.resolve import default_resolver
    from mllgraph.hub import registry
    from mllgraph.plan import request as plan_request
    from mllgraph.select import run as select
    from mllgraph.select import stacked_choice
    from mllgraph.select.cache import FitCache
    from mllgraph.settings import Settings

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="12")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipe", default="e1-m4000-p0", help="the experts' version")
    ap.add_argument("--budget", type=int, default=5)
    ap.add_argument("--split", default="dev")
    ap.add_argument("--test-per-class", type=int, default=50)
    ap.add_argument("--tune", default="", help=f"extra variants of the new rule: {list(TUNING)}")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    tuned = [t for t in args.tune.split(",") if t]
    variants = (*VARIANTS, *tuned)

    # The code under test is the code at start (a later commit must not be credited).
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "mllgraph"], capture_output=True, text=True
    ).stdout.strip()
    commit += " (+ uncommitted changes under mllgraph/)" if dirty else ""
    settings = Settings.from_env()
    suite = load_suite().half(args.split)
    fitters = {"old": stacked_logistic.fit, "new": stacked.fit}
    original = stacked.fit
    stacked_choice.FITS = FitCache(0)  # every fit timed
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
                row: dict[str, Any] = {"task": task.name, "experts": len(ids)}
                for variant in variants:
                    spent: list[float] = []
                    stacked.fit = timed(fitters.get(variant, original), spent)
                    saved = {a: getattr(stacked, a) for a in TUNING.get(variant, {})}
                    for a, v in TUNING.get(variant, {}).items():
                        setattr(stacked, a, v)
                    try:
                        plan = select.select(
                            graph,
                            settings,
                            [plan_request.TaskClass(n) for n in task.names],
                            plan_request.SelectOptions(budget=args.budget, models=models),
                            resolver,
                            store=False,
                        ).plan
                    finally:
                        stacked.fit = original
                        for a, v in saved.items():
                            setattr(stacked, a, v)
                    pred = scoring.classify_plan(plan, logits, idx, logits.in_domain)
                    row[variant] = float((pred == labels).mean())
                    row[f"{variant}_models"] = plan["models"]
                    row[f"{variant}_estimate"] = plan["estimated_accuracy"]
                    row[f"{variant}_stacked_used"] = bool(plan.get("stacked", {}).get("used"))
                    row[f"{variant}_fits"] = len(spent)
                    row[f"{variant}_fit_ms"] = round(sum(spent), 1)
                    row[f"{variant}_stacked_ms"] = round(plan["timings_ms"]["stacked_ms"], 1)
                rows.append(row)
                print(
                    f"{size:>3} {task.name:<32} old {row['old']:.3f}  new {row['new']:.3f}  "
                    f"fit {row['old_fit_ms']:.0f} / {row['new_fit_ms']:.0f} ms "
                    f"({row['old_fits']} / {row['new_fits']} fits)  "
                    + "  ".join(f"{t} {row[t]:.3f}" for t in tuned),
                    flush=True,
                )
    summary: dict[int, dict[str, Any]] = {}
    for size in sorted({r["experts"] for r in rows}):
        mine = [r for r in rows if r["experts"] == size]
        diffs = [100 * (r["new"] - r["old"]) for r in mine]
        summary[size] = {
            "tasks": len(mine),
            "mean_old": float(np.mean([r["old"] for r in mine])),
            "mean_new": float(np.mean([r["new"] for r in mine])),
            "mean_diff_points": float(np.mean(diffs)),
            "worst_task_diff_points": float(min(diffs)),
            "tasks_more_than_half_a_point_worse": [
                r["task"] for r, d in zip(mine, diffs, strict=True) if d < -0.5 - 1e-9
            ],
            "fit_ms_per_select_old_median": float(np.median([r["old_fit_ms"] for r in mine])),
            "fit_ms_per_select_new_median": float(np.median([r["new_fit_ms"] for r in mine])),
            "fit_ms_per_select_old_mean": float(np.mean([r["old_fit_ms"] for r in mine])),
            "fit_ms_per_select_new_mean": float(np.mean([r["new_fit_ms"] for r in mine])),
            "tuning_variants_mean": {t: float(np.mean([r[t] for r in mine])) for t in tuned},
        }
        print(f"hub of {size} experts ({args.split}): {json.dumps(summary[size])}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "what": "issue 24 item 2: the stacked rule's fit, former (nested L-BFGS "
                    "logistic CV) against closed form (ridge, leave-one-out), same process, "
                    "hub, tasks and images; fit cache off",
                    "command": " ".join(sys.argv),
                    "commit": commit,
                    "args": vars(args) | {"out": str(args.out)},
                    "summary": summary,
                    "rows": rows,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
