"""Side by side on the emoji world, in one process: a rule of selection before and after a
change, everything else equal. Experiments (`--experiment`):

- `source-folds` (#22): the stacked rule's folds by image (before SELECTION_VERSION 17)
  against folds that hold one probe source out at a time (`combine.stacked.source_folds`);
- `partial-stacked` (#22): a task with a class without probe images keeps no stacked rule
  (before SELECTION_VERSION 19) against a stacked rule over the classes that have images, the
  per-class rule (its heads, else the ConSE patch) for the others (`StackedRule.classes`).

The world: held-out style twemoji; probe sets of the suite's concepts (but its `unprobed`
ones) from the three other styles (openmoji, fluent-flat, fluent-modern: `--per-style`
augmented images per concept and style, seed 0), attached and the hub's three ImageNet
experts labelled on them, exactly as `mllgraph bench zeroshot --world emoji` does
(`emoji_world.attach_probes`, `check_no_leak`, `label_model`); no emoji experts. That part runs
once per home (`--prepare`); the twemoji task images' logits are kept beside it
(`<home>/ab_source_folds/eval.npz`).

Then, for every task of the suite's halves, SelectHeads runs once per variant in-process
(store=False, the fit cache cleared): the first variant patches today's code back to the
former rule, the second is today's. Each plan is scored on the held-out style's images as
inference applies it (`evaluate.run_suite`, one scoring path), with the references of the
emoji bench (hindsight, stack-all, summed subtrees) beside it. Variants are compared on
`dev`; `test` is reported as it comes.

    MLLGRAPH_HOME=/tmp/hub python scripts/ab_emoji.py --prepare
    MLLGRAPH_HOME=/tmp/hub python scripts/ab_emoji.py --experiment source-folds
    MLLGRAPH_HOME=/tmp/hub python scripts/ab_emoji.py --experiment partial-stacked
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HELD_OUT = "twemoji"


def _former_folds() -> Callable[[], None]:
    """Folds by image: `source_folds` finds nothing. Returns the undo."""
    from mllgraph.combine import stacked

    original = stacked.source_folds
    stacked.source_folds = lambda *a, **k: None
    return lambda: setattr(stacked, "source_folds", original)


def _whole_only() -> Callable[[], None]:
    """No stacked rule for a task with a class without probe images. Returns the undo."""
    from mllgraph.select import stacked_choice

    original = stacked_choice.fit_stacked

    def whole_only(problem: Any, models: Any) -> Any:
        if np.bincount(problem.labels, minlength=problem.num_classes).min() == 0:
            return None
        return original(problem, models)

    stacked_choice.fit_stacked = whole_only
    return lambda: setattr(stacked_choice, "fit_stacked", original)


# name: (former variant, today's variant, what turns today's code into the former rule)
EXPERIMENTS: dict[str, tuple[str, str, Callable[[], Callable[[], None]]]] = {
    "source-folds": ("images", "sources", _former_folds),
    "partial-stacked": ("whole-only", "partial", _whole_only),
}


def prepare(graph: Any, settings: Any, per_style: int, per_emoji: int, out: Path) -> None:
    from mllgraph.eval import demo_emoji, emoji_suite, emoji_world, evalset
    from mllgraph.hubs.emoji import catalogue, split
    from mllgraph.label import run as labeller
    from mllgraph.label.work import LabelOptions

    models = demo_emoji.imagenet_experts(graph, settings)
    suite, _ = emoji_world.groundable(settings, emoji_suite.load_suite(), print)
    cat = catalogue.load(settings.emoji_cache)
    rows = [r for r in split.read_concepts(emoji_world.CONCEPTS_FILE) if r.wnid in suite.concepts()]
    config = emoji_world.EmojiConfig(held_out=(HELD_OUT,), per_style=per_style)
    _, probe_styles = emoji_world.styles_for(config, HELD_OUT)
    style_split = split.split(HELD_OUT, (HELD_OUT, *probe_styles))
    manifest = emoji_world.attach_probes(
        graph, settings, cat, [r for r in rows if r.wnid not in suite.unprobed], style_split,
        settings.home / "emoji_eval" / "probes", per_style=per_style, seed=0, side=config.side,
    )  # fmt: skip
    tasks = split.task_images(cat, rows, style_split, per_emoji=per_emoji, seed=0, side=config.side)
    emoji_world.check_no_leak(graph, manifest, tasks, HELD_OUT)
    options = LabelOptions(samples_per_concept=per_style * len(style_split.probe_styles))
    for m in models:
        result = labeller.label_model(graph, settings, m, options)
        print(f"labelled {m}: {result.images} probe images, {result.seconds:.0f} s", flush=True)
    images = emoji_world.EmojiImages(
        np.stack([t.image for t in tasks]), np.array([t.wnid for t in tasks], dtype=str)
    )
    logits = evalset.LogitCache(graph, settings, images)  # type: ignore[arg-type]
    data: dict[str, np.ndarray] = {"images": images.images, "wnids": images.wnids}
    for m in models:
        data[f"logits::{m}"] = logits(m)
        in_domain = logits.in_domain(m)
        if in_domain is not None:
            data[f"domain::{m}"] = in_domain
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "eval.npz", **data)
    meta = {"models": list(models), "per_style": per_style, "per_emoji": per_emoji,
            "probe_styles": list(style_split.probe_styles), "probe_images": len(manifest),
            "task_images": len(tasks)}  # fmt: skip
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    print(f"prepared: {len(manifest)} probe images, {len(tasks)} task images", flush=True)


def evaluate(graph: Any, settings: Any, out: Path, experiment: str) -> dict[str, Any]:
    from mllgraph.eval import emoji_suite, emoji_world, evalset
    from mllgraph.eval import evaluate as ev
    from mllgraph.eval import references as references_mod
    from mllgraph.eval.bench.common import git_commit
    from mllgraph.plan import request as plan_request
    from mllgraph.select import run as select_run
    from mllgraph.select import stacked_choice

    former, today, to_former = EXPERIMENTS[experiment]
    meta = json.loads((out / "meta.json").read_text())
    models = tuple(meta["models"])
    z = np.load(out / "eval.npz")
    images = emoji_world.EmojiImages(z["images"], z["wnids"])
    logits = evalset.LogitCache(graph, settings, images)  # type: ignore[arg-type]
    for m in models:  # the cached forward passes (prepare's), not recomputed
        logits._logits[m] = z[f"logits::{m}"]
        logits._in_domain[m] = z[f"domain::{m}"] if f"domain::{m}" in z.files else None
        logits.seconds[m] = 0.0

    class Unstored(ev.LibraryPipeline):
        def select(self, task: Any, budget: int, models: Any) -> dict[str, Any]:
            stacked_choice.FITS.clear()  # the key does not name the variant
            ctx = select_run.select(
                self.graph, self.settings, [plan_request.TaskClass(n) for n in task.names],
                plan_request.SelectOptions(budget=budget, models=models), self.resolver,
                store=False,
            )  # fmt: skip
            return ctx.plan

    suite, not_scored = emoji_world.groundable(settings, emoji_suite.load_suite(), print)
    config = emoji_world.EmojiConfig(held_out=(HELD_OUT,))
    report: dict[str, Any] = {
        "experiment": experiment, "commit": git_commit(), "held_out": HELD_OUT, "meta": meta,
        "not_scored": not_scored, "variants": {}, "order": [former, today],
    }  # fmt: skip
    pipeline = Unstored(graph, settings, logits)
    stack_all = references_mod.StackAll(graph, settings, logits, models)
    subtree = references_mod.SubtreeSum(graph, settings, logits, models)
    for variant in (former, today):
        undo = to_former() if variant == former else (lambda: None)
        t = time.perf_counter()
        try:
            results = ev.run_suite(
                graph, settings, suite, pipeline, images, logits,  # type: ignore[arg-type]
                budget=config.budget, models=models, stack_all=stack_all, subtree=subtree,
                baselines=emoji_world.METHODS, seed=0, log=lambda *a: None,
            )  # fmt: skip
        finally:
            undo()
        rows = [
            {"task": r.task, "split": r.split, "classes": len(r.classes), "mll": r.mll,
             "estimated": r.estimated, "models": r.models, **r.baselines}
            for r in results
        ]  # fmt: skip
        report["variants"][variant] = {"seconds": round(time.perf_counter() - t, 1), "tasks": rows}
        print(f"{variant}: {len(rows)} tasks in {time.perf_counter() - t:.0f} s", flush=True)
    report["summary"] = summarise(report["variants"], former, today)
    return report


def _mean_iv(values: list[float], seed: int = 0) -> list[float]:
    """Mean and task-bootstrap 95% interval."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    boots = v[rng.integers(0, v.size, size=(2000, v.size))].mean(axis=1)
    return [float(v.mean()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))]


def _figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    both = [r for r in rows if r.get("stack_all") is not None]
    small = [r for r in rows if r["classes"] <= 10]
    return {
        "tasks": len(rows),
        "mll": _mean_iv([r["mll"] for r in rows]),
        "mll_tasks_of_10_classes_or_fewer": _mean_iv([r["mll"] for r in small]) if small else None,
        "mean_abs_estimate_gap": float(np.mean([abs(r["estimated"] - r["mll"]) for r in rows])),
        "mean_signed_estimate_gap": float(np.mean([r["estimated"] - r["mll"] for r in rows])),
        "hindsight": _mean_iv([r["hindsight"] for r in rows]),
        "imagenet_subtree": _mean_iv([r["imagenet_subtree"] for r in rows]),
        "tasks_with_stack_all": len(both),
        "mll_on_those": float(np.mean([r["mll"] for r in both])) if both else None,
        "stack_all": float(np.mean([r["stack_all"] for r in both])) if both else None,
    }


def summarise(variants: dict[str, Any], former: str, today: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for half in ("dev", "test"):
        per: dict[str, Any] = {
            v: _figures([r for r in data["tasks"] if r["split"] == half])
            for v, data in variants.items()
        }
        a = {r["task"]: r["mll"] for r in variants[former]["tasks"] if r["split"] == half}
        b = {r["task"]: r["mll"] for r in variants[today]["tasks"] if r["split"] == half}
        per["difference"] = _mean_iv([b[t] - a[t] for t in sorted(a)])
        changed = sorted(t for t in a if abs(b[t] - a[t]) > 1e-12)
        per["tasks_changed"] = changed
        out[half] = per
    return out


def write_md(report: dict[str, Any], path: Path) -> None:
    s = report["summary"]
    former, today = report.get("order") or ["images", "sources"]
    lines = [
        f"# Emoji world A/B: {report.get('experiment', 'source-folds')} ({former} against {today})",
        "",
        f"Commit `{report['commit'][:12]}`. Held-out style {report['held_out']}; probe images "
        f"from {', '.join(report['meta']['probe_styles'])} ({report['meta']['probe_images']}, "
        f"{report['meta']['per_style']} per concept and style); "
        f"{report['meta']['task_images']} task images of the held-out style; experts "
        f"{', '.join(report['meta']['models'])}. Budget 5. Task-bootstrap 95% intervals. "
        f"`{former}` is the former rule, `{today}` today's; decided on dev, test as it came. "
        "Code: `scripts/ab_emoji.py`.",
        "",
        "| half | variant | tasks | MLL | MLL, tasks of <= 10 classes | mean abs estimate gap | "
        "mean signed gap | MLL / stack-all where both score | hindsight | summed subtrees |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for half in ("dev", "test"):
        for v in (former, today):
            r = s[half][v]
            iv, small = r["mll"], r.get("mll_tasks_of_10_classes_or_fewer")
            pair = (
                f"{r['mll_on_those']:.3f} / {r['stack_all']:.3f} ({r['tasks_with_stack_all']})"
                if r["stack_all"] is not None
                else "-"
            )
            small_text = f"{small[0]:.3f} [{small[1]:.3f}, {small[2]:.3f}]" if small else "-"
            lines.append(
                f"| {half} | {v} | {r['tasks']} | {iv[0]:.3f} [{iv[1]:.3f}, {iv[2]:.3f}] | "
                f"{small_text} | {r['mean_abs_estimate_gap']:.3f} | "
                f"{r['mean_signed_estimate_gap']:+.3f} | {pair} | {r['hindsight'][0]:.3f} | "
                f"{r['imagenet_subtree'][0]:.3f} |"
            )
        d = s[half].get("difference") or s[half].get("sources_minus_images")
        lines.append(
            f"| {half} | {today} − {former} | | {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] | "
            f"tasks changed: {', '.join(s[half].get('tasks_changed', [])) or '-'} |"
        )
    lines += ["", "Per task (MLL, estimate, models):", ""]
    lines += [
        f"| task | {former}: MLL / est / models | {today}: MLL / est / models |",
        "|---|---|---|",
    ]
    other = {r["task"]: r for r in report["variants"][today]["tasks"]}
    for r in report["variants"][former]["tasks"]:
        o = other[r["task"]]

        def cell(x: dict[str, Any]) -> str:
            names = ", ".join(m.split("@")[0].replace("efficientnet_", "") for m in x["models"])
            return f"{x['mll']:.3f} / {x['estimated']:.3f} / {names}"

        lines.append(f"| {r['task']} | {cell(r)} | {cell(o)} |")
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    from mllgraph.graph import db, sdag
    from mllgraph.graph.wordnet import load_nouns
    from mllgraph.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepare", action="store_true", help="attach probes, label, cache")
    parser.add_argument("--experiment", choices=sorted(EXPERIMENTS), default="partial-stacked")
    parser.add_argument("--per-style", type=int, default=4)
    parser.add_argument("--per-emoji", type=int, default=4)
    parser.add_argument("--out", help="default: reports/ab_<experiment>.json")
    parser.add_argument("--md-only", action="store_true", help="rewrite the .md from --out")
    args = parser.parse_args()
    out = Path(args.out or f"reports/ab_{args.experiment.replace('-', '_')}.json")
    if args.md_only:
        write_md(json.loads(out.read_text()), out.with_suffix(".md"))
        return 0
    settings = Settings.from_env()
    work = settings.home / "ab_source_folds"
    with db.connect(settings) as graph:
        sdag.load(graph, load_nouns(settings.wordnet_dir))
        if args.prepare:
            prepare(graph, settings, args.per_style, args.per_emoji, work)
            return 0
        report = evaluate(graph, settings, work, args.experiment)
    out.write_text(json.dumps(report, indent=1) + "\n")
    write_md(report, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
