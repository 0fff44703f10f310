"""`mllgraph bench label`: probe images per second through an expert's forward pass, and with
`--workers 1,2` the same models labelled in-process against 1 and 2 Ray workers."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Any

from mllgraph.hub import executor
from mllgraph.label import work as label_work
from mllgraph.settings import Settings

ENGINE_EXPERTS = 3  # Fashion experts beside EfficientNet-Lite0 when engines are compared


def _throughput(images: int, seconds: float) -> float:
    return round(images / seconds, 1) if seconds else 0.0


def bench_label(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Labelling throughput (probe images/s per model, CPU): an EfficientNet-Lite0 (unless
    `--no-imagenet`) and Fashion-MNIST experts, each labelled on the same probe images. With
    `--workers`, all of them labelled again as one batch by each engine: in-process (one model
    after another, torch using every core) and a local Ray of N workers (one task per model,
    one CPU each), as images/s and as ratios to in-process. The Ray figures include starting
    the workers (cold) but not starting Ray itself, which is reported apart."""
    from mllgraph.graph import db, sdag
    from mllgraph.graph.wordnet import load_nouns
    from mllgraph.hubs.fashion import build as hub
    from mllgraph.label import run as labeller

    per_concept = args.samples_per_concept
    workers: tuple[int, ...] = tuple(getattr(args, "workers", None) or ())
    local = replace(settings, executor="local")
    options = label_work.LabelOptions(samples_per_concept=per_concept)
    with db.connect(local) as graph:
        sdag.load(graph, load_nouns(settings.wordnet_dir))
        report = hub.build(
            graph,
            local,
            experts=ENGINE_EXPERTS if workers else 1,
            seed=0,
            epochs=1,
            max_train_per_expert=3000,
            imagenet=() if getattr(args, "no_imagenet", False) else ("efficientnet_lite0",),
            probes_per_class=max(per_concept, 100),
            label_options=options,  # the first labelling, also a warm-up
            log=lambda _m: None,
            progress=False,
        )
        models = report.registered + report.already
        out: dict[str, Any] = {}
        t0 = time.monotonic()
        for mid in models:
            result = labeller.label_model(graph, local, mid, options)
            out[mid] = {
                "images": result.images,
                "forward_images_per_s": _throughput(result.images, result.forward_seconds),
                "label_images_per_s": _throughput(result.images, result.seconds),
                "label_seconds": round(result.seconds, 2),
                "labels": result.labels,
            }
        figures: dict[str, Any] = {
            "device": settings.torch_device(),
            "samples_per_concept": per_concept,
            "models": out,
        }
        if not workers:
            return figures
        in_process_s = time.monotonic() - t0
        images = sum(m["images"] for m in out.values())
        engines: dict[str, Any] = {
            "in_process": {
                "seconds": round(in_process_s, 2),
                "images_per_s": _throughput(images, in_process_s),
                "ratio": 1.0,
            }
        }
        on_ray = replace(settings, executor="ray", ray_address=None, device="cpu")
        for n in workers:
            t_start = time.monotonic()
            with executor.session(on_ray, num_cpus=n):
                start_s = time.monotonic() - t_start
                t0 = time.monotonic()
                labeller.label_models(graph, on_ray, models, options)
                seconds = time.monotonic() - t0
            engines[f"ray_{n}"] = {
                "workers": n,
                "seconds": round(seconds, 2),
                "images_per_s": _throughput(images, seconds),
                "ratio": round(in_process_s / seconds, 3),
                "ray_start_s": round(start_s, 2),
            }
        figures["engines"] = {"models": len(models), "images": images, **engines}
    return figures
