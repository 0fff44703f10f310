"""What the emoji side-by-side scripts (`ab_none_rule.py`, `ab_proxy_order_emoji.py`) share:
the held-out style's world on a hub prepared by `mllgraph bench zeroshot --world emoji` (its
probe sets and models as they are). Task images: the held-out style's, 4 per emoji, seed 0,
as the bench makes them; the models: every non-Fashion model of the hub.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class HeldOutWorld:
    suite: Any  # the emoji suite, its groundable tasks
    images: Any  # emoji_world.EmojiImages of the held-out style
    models: tuple[str, ...]
    logits: Any  # evalset.LogitCache over `images`
    ancestors: dict[str, frozenset[str]]  # each image's and task's concept -> its ancestors
    probe_styles: list[str]
    probe_images: int


def held_out_world(settings: Any, graph: Any, held_out: str) -> HeldOutWorld:
    from mllgraph.eval import emoji_suite, emoji_world, evalset
    from mllgraph.graph.wordnet import load_nouns
    from mllgraph.hub import registry
    from mllgraph.hubs.emoji import catalogue, split

    manifest = json.loads((settings.home / "emoji_eval/probes/manifest.json").read_text())
    suite, _ = emoji_world.groundable(settings, emoji_suite.load_suite(), print)
    cat = catalogue.load(settings.emoji_cache)
    wanted = suite.concepts()
    rows = [r for r in split.read_concepts(emoji_world.CONCEPTS_FILE) if r.wnid in wanted]
    style_split = split.split(held_out, (held_out, *manifest["probe_styles"]))
    tasks = split.task_images(cat, rows, style_split, per_emoji=4, seed=0, side=224)
    images = emoji_world.EmojiImages(
        np.stack([t.image for t in tasks]), np.array([t.wnid for t in tasks], dtype=str)
    )
    models = tuple(
        m["id"] for m in registry.list_models(graph) if not m["id"].startswith("fashion")
    )
    nouns = load_nouns(settings.wordnet_dir)
    wnids = set(images.wnids.tolist()) | {w for t in suite.tasks for w in t.wnids}
    return HeldOutWorld(
        suite=suite,
        images=images,
        models=models,
        logits=evalset.LogitCache(graph, settings, images),  # type: ignore[arg-type]
        ancestors={w: nouns.with_ancestors(w) - {w} for w in wnids},
        probe_styles=list(manifest["probe_styles"]),
        probe_images=len(manifest["images"]),
    )
