"""`mllgraph bench label`: probe images per second through an expert's forward pass."""

from __future__ import annotations

import argparse
from typing import Any

from mllgraph.settings import Settings


def bench_label(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Labelling throughput (probe images/s per model, CPU): an EfficientNet-Lite0 and a
    Fashion-MNIST expert, each labelled on the same probe images, side by side."""
    from mllgraph.graph import db, sdag
    from mllgraph.graph.wordnet import load_nouns
    from mllgraph.hub import build as hub
    from mllgraph.hub import registry
    from mllgraph.label import run as labeller

    per_concept = args.samples_per_concept
    with db.connect(settings) as graph:
        sdag.load(graph, load_nouns(settings.wordnet_dir))
        hub.build(
            graph,
            settings,
            experts=1,
            seed=0,
            epochs=1,
            max_train_per_expert=3000,
            imagenet=("efficientnet_lite0",),
            probes_per_class=max(per_concept, 100),
            log=lambda _m: None,
            progress=False,
        )
        fashion = registry.list_models(graph, name="fashion-0-000-", limit=1)
        models = ["efficientnet_lite0@1"] + [m["id"] for m in fashion]
        out = {}
        options = labeller.LabelOptions(samples_per_concept=per_concept)
        for mid in models:
            result = labeller.label_model(graph, settings, mid, options)
            out[mid] = {
                "images": result.images,
                "forward_images_per_s": round(result.images / result.forward_seconds, 1),
                "label_images_per_s": round(result.images / result.seconds, 1),
                "label_seconds": round(result.seconds, 2),
                "labels": result.labels,
            }
    return {"device": settings.torch_device(), "samples_per_concept": per_concept, "models": out}
