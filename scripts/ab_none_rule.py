"""Side by side on the emoji world's held-out style: the "none of these" rule of
SELECTION_VERSION 14-22 (`combine.none_of_these`, logistic over per-model summaries) against the
ridge rule (`combine.none_ridge`), everything else equal, in one process.

The world is an emoji hub prepared by `mllgraph bench zeroshot --world emoji` (its probe sets
attached and its models labelled; held-out style twemoji): `--home`'s models and probe sets are
read as they are. The held-out style's task images (4 per emoji, seed 0, as the bench makes
them) are rendered and every model run over them once; then, for every task of the emoji suite
and each rule, SelectHeads runs in-process (store=False, the fit cache cleared) and the plan's
"none of these" is measured exactly as the bench measures it (`eval.emoji_none`): in-task images
= the held-out style's images of the task's concepts, negatives = its images of unrelated
concepts, AUROC and the in-task accuracy lost at the plan's default threshold. Decided on dev;
test is reported as it comes.

`--world fashion`: the same two rules on `mllgraph bench none`'s Fashion study
(`eval.none_study.run_fashion`: the Fashion suite's tasks that leave classes out, 50 held-out
Fashion-MNIST test images per class, the other classes' as negatives) on a hub built by
README command (1); plans are selected again for each rule (store=False).

    MLLGRAPH_HOME=/tmp/emoji_hub python scripts/ab_none_rule.py --out reports/none_of_these_emoji
    MLLGRAPH_HOME=/tmp/demo_hub python scripts/ab_none_rule.py --world fashion \\
        --out reports/none_of_these_fashion_ab
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HELD_OUT = "twemoji"
RULES = ("logistic", "ridge")


@contextlib.contextmanager
def calibrating_as(rule: str) -> Iterator[None]:
    """`logistic`: the calibration exactly as SELECTION_VERSION 22 made it (its rule, and the
    task's rows as selection found them, proxies included, beside every outside set);
    `ridge`: today's. Today's code is back on leaving."""
    from mllgraph.select import none_calibration as nc

    today_rows = nc.calibration_rows
    nc.RULE = rule
    if rule == "logistic":
        nc.calibration_rows = lambda reads, wnids, rows: (rows, nc.outside_sets(reads, wnids))
    try:
        yield
    finally:
        nc.RULE, nc.calibration_rows = "ridge", today_rows


def _mean_iv(values: list[float], seed: int = 0) -> list[float]:
    v = np.asarray(values, dtype=np.float64)
    boots = v[np.random.default_rng(seed).integers(0, v.size, size=(2000, v.size))].mean(axis=1)
    return [float(v.mean()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))]


def main() -> int:
    from emoji_ab import held_out_world

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
    ap.add_argument("--out", type=Path, required=True, help="path stem: .json and .md written")
    ap.add_argument("--budget", type=int, default=5)
    ap.add_argument("--world", choices=("emoji", "fashion"), default="emoji")
    ap.add_argument("--logits-dir", type=Path, help="fashion: keep the test-image logits here")
    args = ap.parse_args()
    if args.world == "fashion":
        return fashion(args.out, args.budget, args.logits_dir)
    settings = Settings.from_env()
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    with db.connect(settings) as graph:
        world = held_out_world(settings, graph, HELD_OUT)
        suite, images, models, logits = world.suite, world.images, world.models, world.logits
        ancestors = world.ancestors
        for m in models:
            logits(m)
        resolver = default_resolver(settings)
        report: dict[str, Any] = {
            "commit": commit, "held_out": HELD_OUT, "probe_styles": world.probe_styles,
            "probe_images": world.probe_images, "task_images": len(images.wnids),
            "models": list(models), "budget": args.budget, "rules": {},
        }  # fmt: skip
        for rule in RULES:
            with calibrating_as(rule):
                per_task = []
                t0 = time.perf_counter()
                for task in suite.tasks:
                    stacked_choice.FITS.clear()
                    classes = [plan_request.TaskClass(n) for n in task.names]
                    options = plan_request.SelectOptions(budget=args.budget, models=models)
                    t = time.perf_counter()
                    ctx = select_run.select(
                        graph, settings, classes, options, resolver, store=False
                    )
                    select_ms = 1000 * (time.perf_counter() - t)
                    plan = ctx.plan
                    row: dict[str, Any] = {"task": task.name, "split": task.split}
                    if plan_doc.parse_plan(plan).none is None:
                        row["why"] = (plan.get("none_of_these") or {}).get("why")
                        per_task.append(row)
                        continue
                    inside, labels = images.for_task(task)
                    outside = emoji_none.negatives(images.wnids, task.wnids, ancestors)
                    row |= measure_task(plan, logit_scorer(plan, logits), inside, labels, outside)
                    row["select_ms"] = round(select_ms, 1)
                    row["models"] = list(plan_doc.parse_plan(plan).models)
                    print(f"{rule} {task.name}: AUROC {row['auroc']:.3f}, drop "
                          f"{row['accuracy_drop_points']:.2f}, outside refused "
                          f"{row['outside_rejected']:.3f}", flush=True)  # fmt: skip
                    per_task.append(row)
                report["rules"][rule] = {
                    "seconds": round(time.perf_counter() - t0, 1),
                    "tasks": per_task,
                }
    report["summary"] = summarise(report["rules"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    write_md(report, args.out.with_suffix(".md"))
    print(args.out.with_suffix(".md").read_text())
    return 0


def fashion(out: Path, budget: int, logits_dir: Path | None) -> int:
    import functools
    import tempfile

    from mllgraph.eval import none_study
    from mllgraph.eval.tasks import load_suite
    from mllgraph.graph import db
    from mllgraph.select import run as select_run
    from mllgraph.settings import Settings

    settings = Settings.from_env()
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    original = select_run.select
    select_run.select = functools.partial(original, store=False)  # each rule selects anew
    report: dict[str, Any] = {"commit": commit, "world": "fashion", "budget": budget, "rules": {}}
    try:
        with db.connect(settings) as graph, tempfile.TemporaryDirectory() as temporary:
            kept = logits_dir or Path(temporary)
            kept.mkdir(parents=True, exist_ok=True)
            for rule in RULES:
                with calibrating_as(rule):
                    t0 = time.perf_counter()
                    got = none_study.run_fashion(
                        graph, settings, load_suite(), per_class=50, budget=budget,
                        logits_dir=kept, log=functools.partial(print, rule, flush=True),
                    )  # fmt: skip
                    tasks = [{**r, "select_ms": None} for r in got["tasks"]]
                    report["rules"][rule] = {
                        "seconds": round(time.perf_counter() - t0, 1),
                        "tasks": tasks,
                    }
    finally:
        select_run.select = original
    report["summary"] = summarise(report["rules"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float))
    write_md(report, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())
    return 0


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.median(known)) if known else None


def summarise(rules: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for half in ("dev", "test", "all"):
        per: dict[str, Any] = {}
        scored = {
            rule: {
                r["task"]: r for r in data["tasks"] if "auroc" in r and half in ("all", r["split"])
            }
            for rule, data in rules.items()
        }
        both = sorted(set.intersection(*(set(v) for v in scored.values())))
        for rule, got in scored.items():
            per[rule] = {
                "tasks": len(both),
                "auroc": _mean_iv([got[t]["auroc"] for t in both]),
                "auroc_min": min(got[t]["auroc"] for t in both),
                "drop_points": _mean_iv([got[t]["accuracy_drop_points"] for t in both]),
                "drop_max": max(got[t]["accuracy_drop_points"] for t in both),
                "tasks_within_1_point": sum(got[t]["accuracy_drop_points"] <= 1.0 for t in both),
                "outside_refused": float(np.mean([got[t]["outside_rejected"] for t in both])),
                "select_ms_median": _median([got[t]["select_ms"] for t in both]),
            }
        a, b = scored["logistic"], scored["ridge"]
        per["auroc_difference"] = _mean_iv([b[t]["auroc"] - a[t]["auroc"] for t in both])
        out[half] = per
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def write_md(report: dict[str, Any], path: Path) -> None:
    s = report["summary"]
    if report.get("world") == "fashion":
        head = [
            '# "None of these" on the Fashion probe pool: logistic rule against ridge rule',
            "",
            f"Commit `{report['commit']}`. `mllgraph bench none`'s study (eval.none_study."
            "run_fashion): the Fashion suite's tasks that leave classes out; in-task: 50 "
            "held-out Fashion-MNIST test images per class of the task; negatives: those of the "
            "other classes; calibration on the hub's probe images (drawn from the same "
            f"distribution as the test images). Budget {report['budget']}. Decided on the emoji "
            "world's dev half; this is a second check. Task-bootstrap 95% intervals. Code: "
            "`scripts/ab_none_rule.py --world fashion`.",
        ]
    else:
        head = [
            '# "None of these" on the emoji world\'s held-out style: logistic rule against ridge '
            "rule",
            "",
            f"Commit `{report['commit']}`. Held-out style {report['held_out']}; probe images from "
            f"{', '.join(report['probe_styles'])} ({report['probe_images']}); "
            f"{report['task_images']} task images of the held-out style (4 per emoji, seed 0); "
            f"models {', '.join(report['models'])}; budget {report['budget']}. Calibration on the "
            "probe images only. In-task: the held-out style's images of the task's concepts; "
            "negatives: its images of unrelated concepts. Targets (#23): AUROC >= 0.90, in-task "
            "accuracy drop <= 1 point. Decided on dev; test as it came. Task-bootstrap 95% "
            "intervals. Code: `scripts/ab_none_rule.py`.",
        ]
    lines = [
        *head,
        "",
        "| half | rule | tasks | AUROC | AUROC min | drop (points) | drop max | tasks within "
        "1 point | outside refused | selection ms (median) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for half in ("dev", "test", "all"):
        for rule in RULES:
            r = s[half][rule]
            iv, dv = r["auroc"], r["drop_points"]
            lines.append(
                f"| {half} | {rule} | {r['tasks']} | {iv[0]:.3f} [{iv[1]:.3f}, {iv[2]:.3f}] | "
                f"{r['auroc_min']:.3f} | {dv[0]:.2f} [{dv[1]:.2f}, {dv[2]:.2f}] | "
                f"{r['drop_max']:.2f} | {r['tasks_within_1_point']} | {r['outside_refused']:.3f} "
                f"| {_ms(r['select_ms_median'])} |"
            )
        d = s[half]["auroc_difference"]
        lines.append(
            f"| {half} | ridge − logistic | | {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] | | | | | | |"
        )
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
