"""What the Fashion-suite side-by-side scripts (`ab_screen_pools.py`, `ab_proxy_order.py`)
share: their arguments, their report (with the commit they ran at), and the in-process
pipeline on the demo hub (`mllgraph demo` or `hub build --experts 12`, seed 0) that selects
each task unstored and applies the plan to cached Fashion-MNIST test images exactly as
inference does.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="dev")
    ap.add_argument("--budget", type=int, default=5)
    ap.add_argument("--test-per-class", type=int, default=50)
    ap.add_argument("--out", type=Path)
    return ap.parse_args()


def report(args: argparse.Namespace, what: str, summary: dict[str, Any], rows: list[Any]) -> None:
    """Print the summary; with --out, write it with the rows, the command and the commit."""
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        out = {
            "what": what,
            "command": " ".join(sys.argv),
            "commit": commit,
            "args": vars(args) | {"out": str(args.out)},
            "summary": summary,
            "rows": rows,
        }
        args.out.write_text(json.dumps(out, indent=1))


@contextmanager
def suite_pipeline(split: str, test_per_class: int) -> Iterator[tuple[Any, Any, Any, Any]]:
    """(the suite's `split` half, the pipeline (plans unstored: each mode selects the same
    task again), the test images, the demo hub's models: 12 Fashion experts and the three
    ImageNet ones)."""
    from mllgraph.eval import evalset, zeroshot
    from mllgraph.eval.evaluate import LibraryPipeline
    from mllgraph.eval.tasks import load_suite
    from mllgraph.graph import db
    from mllgraph.hub import registry
    from mllgraph.settings import Settings

    settings = Settings.from_env()
    with db.connect(settings) as graph:
        images = evalset.eval_images(settings, test_per_class)
        pipeline = LibraryPipeline(
            graph, settings, evalset.LogitCache(graph, settings, images), store=False
        )
        builtins = tuple(registry.model_id(b, "1") for b in registry.BUILTINS)
        models = (*zeroshot._fashion_ids(graph, 0, 12, "e1-m4000-p0"), *builtins)
        yield load_suite().half(split), pipeline, images, models
