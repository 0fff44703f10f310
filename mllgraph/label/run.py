"""Model labelling: run one model on the probe images, measure what each head recognises, and
write its LABELED edges.

Only the labelled model runs and only its rows change, so adding an expert to a hub of N
costs one model's work. The model's per-image outputs on the probes are kept beside its
weights (`probe_outputs.npz`) so that selection can simulate head combinations later without
running any model.

Three steps, so the computation can run elsewhere: `prepare` reads what a model's labelling
needs from the graph, `compute` runs the model and measures (no graph, no writes: the same
function in this process and in a Ray task, see `ray_exec`), `commit` writes the outcome.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.errors import FailedPrecondition, InvalidArgument
from mllgraph.graph.db import Graph
from mllgraph.hub import forward, probes, registry
from mllgraph.label import measure as labelling
from mllgraph.settings import Settings

PROBE_OUTPUTS = "probe_outputs.npy"
PROBE_INDEX = "probe_outputs.json"
ProgressFn = Callable[[int, int], None]  # (images done, images total)


@dataclass(frozen=True)
class LabelOptions:
    samples_per_concept: int = 200
    batch_size: int = 64
    top_k: int = 5
    min_score: float = 0.05


@dataclass(frozen=True)
class LabelResult:
    model_id: str
    temperature: float
    temperature_images: int
    images: int
    concepts: int
    labels: int
    group_labels: int
    seconds: float
    forward_seconds: float
    catalogue_version: int

    @property
    def images_per_second(self) -> float:
        return self.images / self.forward_seconds if self.forward_seconds else 0.0


def hierarchy(graph: Graph, wnids: list[str]) -> labelling.ConceptHierarchy:
    rows = graph.read("label/hierarchy", wnids=sorted(set(wnids)))
    ancestors: dict[str, frozenset[str]] = {}
    names: dict[str, str] = {}
    depth: dict[str, int] = {}
    for r in rows:
        ancestors[r["wnid"]] = frozenset(r["ancestor_wnids"])
        names[r["wnid"]] = r["name"]
        depth[r["wnid"]] = r["depth"]
        for w, n, d in zip(
            r["ancestor_wnids"], r["ancestor_names"], r["ancestor_depths"], strict=True
        ):
            names[w], depth[w] = n, d
    return labelling.ConceptHierarchy(ancestors=ancestors, names=names, depth=depth)


def probe_outputs_path(settings: Settings, mid: str) -> Path:
    """The model's logits on the probes: one float16 array, rows grouped by probe set."""
    return registry.model_dir(settings, mid) / PROBE_OUTPUTS


def probe_index_path(settings: Settings, mid: str) -> Path:
    """Where each probe set's rows start in `probe_outputs.npy`, and the temperature."""
    return registry.model_dir(settings, mid) / PROBE_INDEX


@dataclass(frozen=True)
class StagedOutputs:
    """Probe outputs written beside their final names, not yet visible to readers."""

    path: Path  # the final array path
    parts: tuple[tuple[Path, Path], ...]  # (staged file, final file), array first

    def switch_in(self) -> Path:
        # The index is replaced after the array: between the two replaces a reader can pair
        # the new array with the old index (same models, same sets, so only the values differ).
        for part, final in self.parts:
            os.replace(part, final)
        return self.path

    def discard(self) -> None:
        for part, _ in self.parts:
            part.unlink(missing_ok=True)


def stage_probe_outputs(
    settings: Settings, mid: str, outputs: dict[str, np.ndarray], temperature: float
) -> StagedOutputs:
    """Write the probe outputs under unique staging names; `switch_in` makes them current.

    One contiguous array plus a small JSON index, so selection can memory-map the file and
    read only a task's probe sets (a compressed archive of one entry per set costs ~10 ms
    per model to open, which dominates selection on a large hub)."""
    path = probe_outputs_path(settings, mid)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = sorted(outputs)
    index, offset = {}, 0
    for s in ids:
        index[s] = [offset, int(outputs[s].shape[0])]
        offset += int(outputs[s].shape[0])
    heads = next((int(outputs[s].shape[1]) for s in ids), 0)
    # float16 halves the file; logits need no more precision than that for simulation.
    data = (
        np.concatenate([outputs[s] for s in ids]).astype(np.float16)
        if ids
        else np.zeros((0, heads), np.float16)
    )
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    part = path.with_name(f"probe_outputs.part-{tag}.npy")
    index_path = probe_index_path(settings, mid)
    part_json = index_path.with_name(f"{index_path.name}.part-{tag}")
    staged = StagedOutputs(path, ((part, path), (part_json, index_path)))
    try:
        np.save(part, data)
        meta = {"temperature": float(temperature), "heads": heads, "sets": index}
        part_json.write_text(json.dumps(meta))
    except BaseException:
        staged.discard()
        raise
    return staged


def save_probe_outputs(
    settings: Settings, mid: str, outputs: dict[str, np.ndarray], temperature: float
) -> Path:
    """Write a model's probe outputs and make them current at once."""
    return stage_probe_outputs(settings, mid, outputs, temperature).switch_in()


@dataclass(frozen=True)
class ProbeOutputs:
    """A labelled model's probe logits, memory-mapped; slices are read on demand."""

    data: np.ndarray  # float16 (rows, heads), memory-mapped
    sets: dict[str, tuple[int, int]]  # probe set id -> (first row, rows)
    temperature: float

    def get(self, set_id: str) -> np.ndarray:
        start, n = self.sets[set_id]
        return np.asarray(self.data[start : start + n], dtype=np.float32)

    def as_dict(self, set_ids: list[str] | None = None) -> dict[str, np.ndarray]:
        wanted = self.sets if set_ids is None else [s for s in set_ids if s in self.sets]
        return {s: self.get(s) for s in wanted}


def open_probe_outputs(settings: Settings, mid: str) -> ProbeOutputs:
    index_path = probe_index_path(settings, mid)
    if not index_path.is_file():
        raise FailedPrecondition(f"model {mid} has no probe outputs ({index_path}): label it")
    meta = json.loads(index_path.read_text())
    data = np.load(probe_outputs_path(settings, mid), mmap_mode="r")
    sets = {s: (int(a), int(n)) for s, (a, n) in meta["sets"].items()}
    return ProbeOutputs(data, sets, float(meta["temperature"]))


def load_probe_outputs(settings: Settings, mid: str) -> tuple[dict[str, np.ndarray], float]:
    """({probe set id: logits (n, heads) float32}, temperature) of a labelled model."""
    outputs = open_probe_outputs(settings, mid)
    return outputs.as_dict(), outputs.temperature


@dataclass(frozen=True)
class LabelWork:
    """Everything labelling one model reads from the graph, read up front by the caller.

    Plain picklable data: `compute` needs no Neo4j connection, only the model store and the
    probe images, so it runs the same in this process or as a Ray task on another worker."""

    model_id: str
    record: dict[str, Any]
    plan: tuple[tuple[probes.ProbeSet, int], ...]  # probe sets and how many images of each
    declared: tuple[str | None, ...]  # each head's declared concept
    tree: labelling.ConceptHierarchy
    options: LabelOptions
    started: float  # time.time() when the work was read (for the model's label_seconds)

    @property
    def images(self) -> int:
        return sum(n for _, n in self.plan)

    @property
    def probed(self) -> list[str]:
        return sorted({ps.wnid for ps, _ in self.plan})


@dataclass(frozen=True)
class LabelOutcome:
    """What `compute` measured: the probe outputs and the LABELED rows, not yet written."""

    model_id: str
    outputs: dict[str, np.ndarray]  # probe set id -> float32 logits
    rows: list[dict[str, Any]]
    temperature: float
    temperature_images: int
    labels: int
    group_labels: int
    forward_seconds: float


def prepare(
    graph: Graph, settings: Settings, mid: str, options: LabelOptions = LabelOptions()
) -> LabelWork:
    """Read what labelling `mid` needs: its record, the probe plan, its heads, the hierarchy."""
    started = time.time()
    record = registry.get_model(graph, mid)
    sets = probes.probe_sets(graph)
    if not sets:
        raise FailedPrecondition(
            f"cannot label {mid}: no concept has probe images yet; add some with "
            "`mllgraph probes add` (or `mllgraph hub fashion-probes`)"
        )
    # Up to samples_per_concept images per concept, spread over its probe sets in order.
    budget: dict[str, int] = {}
    plan: list[tuple[probes.ProbeSet, int]] = []
    for ps in sets:
        take = min(ps.count, options.samples_per_concept - budget.get(ps.wnid, 0))
        if take > 0:
            plan.append((ps, take))
            budget[ps.wnid] = budget.get(ps.wnid, 0) + take
    declared = tuple(h["declared_wnid"] for h in registry.heads(graph, mid, top_k=0))
    tree = hierarchy(graph, sorted(budget) + [w for w in declared if w])
    return LabelWork(mid, record, tuple(plan), declared, tree, options, started)


def compute(
    settings: Settings,
    work: LabelWork,
    *,
    device: str | None = None,
    progress: ProgressFn | None = None,
) -> LabelOutcome:
    """Run the model over its probe images and measure its labels (no graph, no writes)."""
    options = work.options
    plan = work.plan
    total = work.images
    model, spec = registry.load_model(settings, work.record)
    device = device or settings.torch_device()
    outputs: dict[str, np.ndarray] = {}
    done = 0
    t_fwd = time.monotonic()
    for ps, take in plan:
        images = probes.load_images(ps, take)
        base = done
        outputs[ps.id] = forward.logits(
            model,
            spec,
            images,
            batch_size=options.batch_size,
            device=device,
            progress=(lambda n, b=base: progress(b + n, total)) if progress else None,
        )
        done += take
    forward_s = time.monotonic() - t_fwd

    probed = work.probed
    concept_index = {w: i for i, w in enumerate(probed)}
    logits = np.concatenate([outputs[ps.id] for ps, _ in plan])
    image_concepts = np.concatenate(
        [np.full(take, concept_index[ps.wnid], dtype=np.int64) for ps, take in plan]
    )
    declared = list(work.declared)
    tree = work.tree
    temperature, t_images = labelling.fit_temperature(
        logits, image_concepts, probed, declared, tree
    )
    labels = labelling.measure(
        logits,
        image_concepts,
        probed,
        declared,
        tree,
        temperature=temperature,
        min_score=options.min_score,
        top_k=options.top_k,
    )
    groups = labelling.group_labels(
        logits, image_concepts, probed, declared, tree, temperature=temperature
    )
    rows: list[dict[str, Any]] = [
        {
            "head": lab.head,
            "wnid": lab.wnid,
            "score": lab.score,
            "precision": lab.precision,
            "recall": lab.recall,
            "mean_prob": lab.mean_prob,
            "n_probe": lab.n_probe,
            "method": lab.method,
            "group_heads": None,
        }
        for lab in labels
    ]
    # A group label is written on each member head; `group_heads` names the whole group.
    for g in groups:
        rows += [
            {
                "head": h,
                "wnid": g.wnid,
                "score": g.score,
                "precision": g.precision,
                "recall": g.recall,
                "mean_prob": g.mean_prob,
                "n_probe": g.n_probe,
                "method": "group",
                "group_heads": list(g.heads),
            }
            for h in g.heads
        ]
    return LabelOutcome(
        model_id=work.model_id,
        outputs=outputs,
        rows=rows,
        temperature=float(temperature),
        temperature_images=int(t_images),
        labels=len(labels),
        group_labels=len(groups),
        forward_seconds=forward_s,
    )


def commit(graph: Graph, settings: Settings, work: LabelWork, outcome: LabelOutcome) -> LabelResult:
    """Write a computed outcome: the probe outputs are staged, the graph is written, and only
    then are the new files switched in, so a failure before the graph write changes nothing."""
    if outcome.model_id != work.model_id:
        raise InvalidArgument(f"outcome of {outcome.model_id} committed for {work.model_id}")
    mid = work.model_id
    staged = stage_probe_outputs(settings, mid, outcome.outputs, outcome.temperature)
    try:
        version = graph.write(
            "label/labels_replace",
            id=mid,
            labels=outcome.rows,
            temperature=float(outcome.temperature),
            n_images=int(work.images),
            probe_outputs=json.dumps(
                {"path": str(staged.path), "sets": {ps.id: n for ps, n in work.plan}}
            ),
            seconds=time.time() - work.started,
        )[0]["catalogue_version"]
    except BaseException:
        staged.discard()
        raise
    staged.switch_in()
    return LabelResult(
        model_id=mid,
        temperature=float(outcome.temperature),
        temperature_images=outcome.temperature_images,
        images=int(work.images),
        concepts=len(work.probed),
        labels=outcome.labels,
        group_labels=outcome.group_labels,
        seconds=time.time() - work.started,
        forward_seconds=outcome.forward_seconds,
        catalogue_version=int(version),
    )


EXECUTORS = ("local", "ray")


def _executor(settings: Settings) -> str:
    if settings.executor not in EXECUTORS:
        raise InvalidArgument(
            f"MLLGRAPH_EXECUTOR={settings.executor!r}: use one of {', '.join(EXECUTORS)}"
        )
    return settings.executor


def label_model(
    graph: Graph,
    settings: Settings,
    mid: str,
    options: LabelOptions = LabelOptions(),
    *,
    device: str | None = None,
    progress: ProgressFn | None = None,
) -> LabelResult:
    """Label one model: in this process, or as one Ray task when MLLGRAPH_EXECUTOR=ray."""
    if _executor(settings) == "ray":
        from mllgraph.label import ray_exec

        return ray_exec.label_models(graph, settings, [mid], options, progress=progress)[0]
    work = prepare(graph, settings, mid, options)
    return commit(graph, settings, work, compute(settings, work, device=device, progress=progress))


def label_models(
    graph: Graph,
    settings: Settings,
    mids: list[str],
    options: LabelOptions = LabelOptions(),
    *,
    on_done: Callable[[LabelResult], None] | None = None,
) -> list[LabelResult]:
    """Label several models: one after another in this process, or one Ray task each (run
    side by side as the cluster allows) when MLLGRAPH_EXECUTOR=ray. Results in `mids` order."""
    if _executor(settings) == "ray":
        from mllgraph.label import ray_exec

        return ray_exec.label_models(graph, settings, mids, options, on_done=on_done)
    results = []
    for mid in mids:
        results.append(label_model(graph, settings, mid, options))
        if on_done:
            on_done(results[-1])
    return results
