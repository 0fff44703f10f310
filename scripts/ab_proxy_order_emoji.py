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
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = ("old", "new")


def old_order(r: dict[str, Any]) -> tuple[int, float, str]:
    """The order before: the deepest concept first, ancestor or related alike."""
    return (-(r.get("via_depth") or 0), -r["score"], r["via"] or "")


def main() -> int:
    from fashion_ab import report

    from mllgraph.eval import emoji_none, emoji_suite, emoji_world, evalset
    from mllgraph.eval.none_study import logit_scorer, measure_task
    from mllgraph.graph import db
    from mllgraph.graph.wordnet import load_nouns
    from mllgraph.ground.resolve import default_resolver
    from mllgraph.hub import registry
    from mllgraph.hubs.emoji import catalogue, split
    from mllgraph.plan import document as plan_doc
    from mllgraph.plan import request as plan_request
    from mllgraph.select import probe_data, stacked_choice
    from mllgraph.select import run as select_run
    from mllgraph.settings import Settings

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
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
    settings = Settings.from_env()
    manifest = json.loads((settings.home / "emoji_eval/probes/manifest.json").read_text())
    rows_out: list[dict[str, Any]] = []
    with db.connect(settings) as graph:
        suite, _ = emoji_world.groundable(settings, emoji_suite.load_suite(), print)
        cat = catalogue.load(settings.emoji_cache)
        wanted = suite.concepts()
        rows = [r for r in split.read_concepts(emoji_world.CONCEPTS_FILE) if r.wnid in wanted]
        style_split = split.split("twemoji", ("twemoji", *manifest["probe_styles"]))
        tasks = split.task_images(cat, rows, style_split, per_emoji=4, seed=0, side=224)
        images = emoji_world.EmojiImages(
            np.stack([t.image for t in tasks]), np.array([t.wnid for t in tasks], dtype=str)
        )
        models = tuple(
            m["id"] for m in registry.list_models(graph) if not m["id"].startswith("fashion")
        )
        logits = evalset.LogitCache(graph, settings, images)  # type: ignore[arg-type]
        nouns = load_nouns(settings.wordnet_dir)
        wnids = set(images.wnids.tolist()) | {w for t in suite.tasks for w in t.wnids}
        ancestors = {w: nouns.with_ancestors(w) - {w} for w in wnids}
        resolver = default_resolver(settings)
        for task in suite.tasks:
            row: dict[str, Any] = {"task": task.name, "split": task.split}
            inside, labels = images.for_task(task)
            outside = emoji_none.negatives(images.wnids, task.wnids, ancestors)
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
