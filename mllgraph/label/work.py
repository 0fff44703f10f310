"""Model labelling: run one model on the probe images, measure what each head recognises, and
write its LABELED edges.

Only the labelled model runs and only its rows change, so adding an expert to a hub of N
costs one model's work. The model's per-image outputs on the probes are kept beside its
weights so that selection can simulate head combinations later without running any model:
each labelling writes them as a new version (`probe_outputs/<version>/` holding the array and
its index) and, only after the graph write of the labels succeeded, switches the
`probe_outputs/CURRENT` symlink to it with one atomic rename, so readers see the old pair or
the new pair and a failed write leaves the old outputs beside the old labels.

A model store at a URL (`store`) holds the same layout; there `CURRENT` is a small object
holding the version's name, put only after the version's files, and readers memory-map a
local copy (the store's cache, where a `CURRENT` symlink mirrors the store's, looked up again
at most every `settings.store_refresh_s`: `refresh_current`).

Three steps, so the computation can run elsewhere: `prepare` reads what a model's labelling
needs from the graph, `compute` runs the model and measures (no graph, no writes: the same
function in this process and in a Ray task, see `ray_exec`), `commit` writes the outcome.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from mllgraph.errors import Aborted, FailedPrecondition, InvalidArgument
from mllgraph.graph.db import Graph
from mllgraph.hub import cost as hub_cost
from mllgraph.hub import forward, loading, probes, registry
from mllgraph.hub.probe_outputs import StagedOutputs, stage_probe_outputs
from mllgraph.label import measure as labelling
from mllgraph.settings import Settings

ProgressFn = Callable[[int, int], None]  # (images done, images total)
log = logging.getLogger(__name__)


class CancelToken:
    """Stops a labelling run, and above all its write, once its job is reported failed.

    `cancel` and the write path (`commit`) exclude each other: the write holds the token's
    lock from the check to the last file switched in, and `cancel` takes the same lock. So
    after `cancel` answers "cancelled" nothing is written, and a run that already committed
    answers "committed". The forward pass checks the token between batches (through the
    progress callback) and stops early, so a cancelled thread ends soon."""

    CANCELLED, COMMITTED, WRITING = "cancelled", "committed", "writing"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._committed = False

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def check(self) -> None:
        """Aborted once cancelled."""
        if self._cancelled:
            raise Aborted("the labelling job was cancelled; nothing was written")

    def cancel(self, timeout: float = -1) -> str:
        """CANCELLED (nothing has been or will be written), COMMITTED (the write finished
        first) or, when a write in flight did not finish within `timeout` s, WRITING."""
        if not self._lock.acquire(timeout=timeout):
            return self.WRITING
        try:
            if self._committed:
                return self.COMMITTED
            self._cancelled = True
            return self.CANCELLED
        finally:
            self._lock.release()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """The write path: refuses to start once cancelled; marks the run committed when the
        block completes."""
        with self._lock:
            self.check()
            yield
            self._committed = True


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
    # hub.cost's measurement, when the model had none for this kind of device (else None).
    cost: dict[str, Any] | None = None


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
    model, spec = loading.load_model(settings, work.record)
    device = device or settings.torch_device()
    model = forward.prepare(model, spec, device)
    outputs: dict[str, np.ndarray] = {}
    done = 0
    t_fwd = time.monotonic()
    for ps, take in plan:
        images = probes.load_images(ps, take, settings=settings)
        base = done
        outputs[ps.id] = forward.logits(
            model,
            spec,
            images,
            batch_size=options.batch_size,
            device=device,
            progress=(lambda n, b=base: progress(b + n, total)) if progress else None,
            cpu_chunk=settings.infer_cpu_chunk,
        )
        done += take
    forward_s = time.monotonic() - t_fwd
    cost = None
    if hub_cost.needs_measuring(work.record, device):
        # A model registered before costs were measured, or on another kind of device.
        cost = hub_cost.measure(model, spec, device, cpu_chunk=settings.infer_cpu_chunk)

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
        cost=cost,
    )


def _write_labels(
    graph: Graph, work: LabelWork, outcome: LabelOutcome, staged: StagedOutputs
) -> int:
    """Replace the model's LABELED edges; the new catalogue version."""
    return int(
        graph.write(
            "label/labels_replace",
            id=work.model_id,
            labels=outcome.rows,
            temperature=float(outcome.temperature),
            n_images=int(work.images),
            probe_outputs=json.dumps(
                {"path": staged.location, "sets": {ps.id: n for ps, n in work.plan}}
            ),
            seconds=time.time() - work.started,
            cost=outcome.cost or {},
        )[0]["catalogue_version"]
    )


def commit(
    graph: Graph,
    settings: Settings,
    work: LabelWork,
    outcome: LabelOutcome,
    *,
    cancel: CancelToken | None = None,
) -> LabelResult:
    """Write a computed outcome: the probe outputs are staged, the graph is written, and only
    then are the new files switched in, so a failure before the graph write changes nothing.
    With `cancel`, nothing is written once it is cancelled (see CancelToken)."""
    if outcome.model_id != work.model_id:
        raise InvalidArgument(f"outcome of {outcome.model_id} committed for {work.model_id}")
    mid = work.model_id
    staged = stage_probe_outputs(settings, mid, outcome.outputs, outcome.temperature)
    try:
        with cancel.writing() if cancel is not None else nullcontext():
            version = _write_labels(graph, work, outcome, staged)
            staged.switch_in()
    except BaseException:
        staged.discard()
        raise
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
