"""`mllgraph bench patch`: the uncovered-class patch on the main job's photos
(`mllgraph.eval.patch_study`): MLL per task against the best single expert, and each plan's
patch calibration (method, images, measured share of covered-class probe images taken).
Writes `reports/patch_calibration.json`; `--before FILE` adds a run of the same study on the
previous code (its `tasks`), side by side.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mllgraph.eval.bench.common import git_commit
from mllgraph.settings import Settings

REPORT = "patch_calibration.json"


def bench_patch(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from mllgraph.eval import patch_study
    from mllgraph.graph import db

    with db.connect(settings) as graph:
        after = patch_study.run(graph, settings, budget=args.budget)
    before: dict[str, Any] | None = None
    if args.before:
        try:
            before = json.loads(Path(args.before).read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"--before {args.before}: not a readable JSON report ({e})") from e
    figures = {
        "commit": git_commit(),
        "home": str(settings.home),
        "tasks": [_row(r, before) for r in after["tasks"]],
        "all_at_least_best_single": after["all_at_least_best_single"],
        "seconds": after["seconds"],
        "before": None if before is None else {k: before.get(k) for k in ("commit", "note")},
        "after_details": after["tasks"],
    }
    out = Path(args.out) / REPORT
    patch_study.write(figures, out)
    figures["report"] = str(out)
    return {k: v for k, v in figures.items() if k != "after_details"}


def _row(row: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """One task's figures: MLL now (and before), the best single expert, the calibration."""
    patch = row["patch"] or {}
    cal = patch.get("calibration") or {}
    out = {
        "task": row["task"],
        "uncovered": row["uncovered"],
        "mll": row["mll"],
        "best_single_expert": row["best_single_expert"],
        "best_single_expert_accuracy": row["best_single_expert_accuracy"],
        "mll_at_least_best_single": row["mll_at_least_best_single"],
        "covered_photos_taken_by_uncovered": row["covered_photos_taken_by_uncovered"],
        "patch_weight": patch.get("weight"),
        "patch_floor": patch.get("floor"),
        "patch_calibration": cal.get("method"),
        "calibration_images": cal.get("images"),
        "measured_steal_share": cal.get("steal_share"),
        "floor_noise_images": cal.get("other_images"),
    }
    if before is not None:
        old = {r["task"]: r for r in before.get("tasks", [])}.get(row["task"])
        if old is not None:
            out["mll_before"] = old["mll"]
            out["covered_photos_taken_before"] = old["covered_photos_taken_by_uncovered"]
            out["patch_weight_before"] = (old.get("patch") or {}).get("weight")
            out["patch_evidence_before"] = (old.get("patch") or {}).get("evidence")
    return out
