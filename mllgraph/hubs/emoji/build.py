"""Emoji experts into the hub: trained (or taken from the cache), registered through the path
`mllgraph models register` takes (`hub.registry.register_model`, heads declared by the
concepts' wnids), given a domain profile of their training images (as the Fashion experts
are), and labelled on the hub's probe sets.

Everything a bad input can stop (a group, arch or style that does not exist, training styles
that hold the held-out one) is checked before the first training or registration, so such a
call leaves the catalogue as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mllgraph.combine.domain import MIN_IMAGES, DomainProfile
from mllgraph.graph.db import Graph
from mllgraph.hub import domains, registry
from mllgraph.hub.preprocess import InputSpec
from mllgraph.hub.workers import worker_count
from mllgraph.hubs.emoji import catalogue as emoji_catalogue
from mllgraph.hubs.emoji import experts as emoji_experts
from mllgraph.settings import Settings

Log = Callable[[str], None]


@dataclass
class ExpertsReport:
    models: list[str] = field(default_factory=list)  # model ids, in plan order
    registered: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)  # group -> model ids
    skipped_groups: dict[str, str] = field(default_factory=dict)  # group -> why
    heldout_accuracy: dict[str, float] = field(default_factory=dict)  # model id -> figure
    labelled: list[str] = field(default_factory=list)


def cache_dir(settings: Settings) -> Path:
    return settings.model_store / "trained" / "emoji"


def plan(
    *,
    train_styles: Iterable[str],
    groups: Sequence[str] | None = None,
    archs: Sequence[str] = emoji_experts.DEFAULT_ARCHS,
    seed: int = 0,
    recipe: emoji_experts.Recipe | None = None,
    held_out: str | None = None,
    exclude: Iterable[str] = (),
    concepts: Path = emoji_experts.CONCEPTS_FILE,
) -> tuple[list[emoji_experts.ExpertSpec], dict[str, str]]:
    """(the experts to train, skipped group -> why); InvalidArgument for any bad input."""
    planned, skipped = emoji_experts.plan_groups(
        emoji_experts.read_groups(concepts), exclude=exclude
    )
    chosen = planned if groups is None else emoji_experts.choose_groups(planned, groups)
    specs = emoji_experts.plan_experts(
        chosen,
        archs,
        train_styles,
        seed=seed,
        recipe=recipe or emoji_experts.Recipe(),
        held_out=held_out,
    )
    return specs, skipped


def build_experts(
    graph: Graph,
    settings: Settings,
    specs: Sequence[emoji_experts.ExpertSpec],
    *,
    held_out: str | None = None,
    domain: bool = True,
    label: bool = True,
    samples_per_concept: int = 200,
    log: Log = print,
) -> ExpertsReport:
    """Train what the cache lacks, register every expert of `specs`, record its domain, and
    (with `label`) label the models not yet labelled."""
    report = ExpertsReport()
    cat = emoji_catalogue.load(settings.emoji_cache)
    groups = len({s.group.name for s in specs})
    paths = emoji_experts.train_experts(
        cat, specs, cache_dir(settings), held_out=held_out, log=log,
        workers=worker_count(settings, groups),
    )  # fmt: skip
    for spec, path in zip(specs, paths, strict=True):
        meta = json.loads(path.read_text(encoding="utf-8"))
        r = register_trained(graph, settings, path, meta)
        mid = r.record["id"]
        (report.registered if r.created else report.already).append(mid)
        report.models.append(mid)
        report.groups.setdefault(spec.group.name, []).append(mid)
        report.heldout_accuracy[mid] = meta["heldout_accuracy"]
        if domain and not r.record.get("domain_sha256"):
            thumbs = np.load(emoji_experts.sibling(path, ".domain.npy"))
            if len(thumbs) < MIN_IMAGES:  # too few to describe a domain: trusted everywhere
                log(f"  {mid}: no domain profile ({len(thumbs)} training images < {MIN_IMAGES})")
                continue
            source = (
                f"emoji {spec.group.name} in {', '.join(meta['train_styles'])} (augmented), "
                f"{len(thumbs)} training images"
            )
            domains.record(graph, settings, mid, DomainProfile.fit(thumbs), source)
    log(
        f"emoji experts: {len(report.registered)} registered, {len(report.already)} already "
        "there" + (f"; groups skipped: {report.skipped_groups}" if report.skipped_groups else "")
    )
    if label:
        from mllgraph.label import run as labeller
        from mllgraph.label import work as label_work

        todo = [m for m in report.models if not registry.get_model(graph, m).get("labelled_at")]
        labeller.label_models(
            graph,
            settings,
            todo,
            label_work.LabelOptions(samples_per_concept=samples_per_concept),
            on_done=lambda res: report.labelled.append(res.model_id),
        )
    return report


def register_trained(
    graph: Graph, settings: Settings, json_path: Path, meta: dict
) -> registry.RegisteredModel:
    """One trained expert through `models register`'s path: heads declared by wnid."""
    return registry.register_model(
        graph,
        settings,
        registry.Registration(
            name=meta["name"],
            version=meta["version"],
            arch=meta["arch"],
            weights_path=emoji_experts.sibling(json_path, ".safetensors"),
            wnids=list(meta["wnids"]),
            input_spec=InputSpec.from_dict(meta["input_spec"]),
            metadata={
                "trained_on": f"emoji group {meta['group']}: augmented rasters",
                "group": meta["group"],
                "train_styles": ",".join(meta["train_styles"]),
                "never_seen_styles": ",".join(meta["never_seen_styles"]),
                "seed": str(meta["seed"]),
                "recipe": json.dumps(meta["recipe"], sort_keys=True),
                "cache_key": meta["cache_key"],
                "heldout_accuracy": f"{meta['heldout_accuracy']:.4f}",
            },
        ),
    )


def train_styles_of(record: dict) -> set[str]:
    """The styles a registered emoji expert was trained on (empty for other models)."""
    meta = record.get("metadata") or {}
    if isinstance(meta, str):
        meta = json.loads(meta)
    return {s for s in str(meta.get("train_styles", "")).split(",") if s}
