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

import contextlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.errors import Aborted, FailedPrecondition, InvalidArgument
from mllgraph.graph.db import Graph
from mllgraph.hub import forward, probes, registry, store
from mllgraph.label import measure as labelling
from mllgraph.settings import Settings

PROBE_OUTPUTS = "probe_outputs.npy"
PROBE_INDEX = "probe_outputs.json"
OUTPUTS_DIR = "probe_outputs"  # <model dir>/probe_outputs/<version>/{npy, json}
CURRENT = "CURRENT"  # <model dir>/probe_outputs/CURRENT: a symlink to the current version
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


def _outputs_root(settings: Settings, mid: str) -> Path:
    return registry.model_dir(settings, mid) / OUTPUTS_DIR


def _outputs_key(mid: str) -> str:
    return f"{registry.model_key(mid)}/{OUTPUTS_DIR}"


def current_version(settings: Settings, mid: str) -> Path | None:
    """The folder of the model's current probe outputs (named by `CURRENT`), or None."""
    root = _outputs_root(settings, mid)
    refresh_current(settings, (mid,))
    try:
        tag = os.readlink(root / CURRENT)  # one system call: selection asks per model
    except (FileNotFoundError, NotADirectoryError):
        return None
    return root / tag


def probe_index_file(model_store: str, mid: str) -> str:
    """`probe_index_path` as a plain string, for `model_store = str(settings.model_store)`.

    Selection checks the index of every candidate model on every request (thousands at
    10,000 models): built with os.path, not pathlib, which cost most of that check."""
    root = os.path.join(model_store, "models", mid.replace("/", "_"), OUTPUTS_DIR)
    try:
        folder = os.path.join(root, os.readlink(os.path.join(root, CURRENT)))
    except (FileNotFoundError, NotADirectoryError):  # as current_version
        folder = os.path.dirname(root)  # no versions: the legacy file beside the weights
    return os.path.join(folder, PROBE_INDEX)


def probe_outputs_path(settings: Settings, mid: str) -> Path:
    """The model's current logits on the probes: one float16 array, rows grouped by probe
    set (a model labelled before versioned outputs: its legacy file beside the weights)."""
    version = current_version(settings, mid)
    return (version or registry.model_dir(settings, mid)) / PROBE_OUTPUTS


def probe_index_path(settings: Settings, mid: str) -> Path:
    """Where each probe set's rows start in the current array, and the temperature."""
    version = current_version(settings, mid)
    return (version or registry.model_dir(settings, mid)) / PROBE_INDEX


@dataclass(frozen=True)
class StagedOutputs:
    """A complete new version of the probe outputs (array and index in their own folder),
    not yet visible to readers: `switch_in` makes it current with one atomic rename of the
    `CURRENT` symlink, so a reader (which resolves the link once, then opens both files in
    that folder) sees the old pair or the new pair, never a mix. In a store at a URL the
    version is uploaded too (`key`), and the store's `CURRENT` is put before the link."""

    path: Path  # the array in the new version's folder
    version: Path  # that folder
    remote: store.Remote | None = None
    key: str = ""  # the version's key in `remote`

    @property
    def location(self) -> str:
        """Where the array is, as the graph records it (a URL in a remote store)."""
        if self.remote is None:
            return str(self.path)
        return self.remote.url_of(f"{self.key}/{PROBE_OUTPUTS}")

    def switch_in(self) -> Path:
        if self.remote is not None:
            _switch_remote(self.remote, self.key.rsplit("/", 1)[0], self.version.name)
        _switch_link(self.version.parent, self.version.name)
        return self.path

    def discard(self) -> None:
        shutil.rmtree(self.version, ignore_errors=True)
        if self.remote is not None:
            try:
                self.remote.remove(self.key, recursive=True)
            except Exception as e:  # noqa: BLE001 - the caller's error is the one to report
                log.warning("probe_outputs_discard_failed key=%s error=%r", self.key, str(e))


def _switch_link(root: Path, tag: str) -> None:
    """Point `root/CURRENT` at the version `tag` with one atomic rename; prune old ones."""
    part = root / f"{CURRENT}.part-{tag}-{uuid.uuid4().hex[:8]}"
    part.symlink_to(tag)  # relative: the store may move
    os.replace(part, root / CURRENT)
    _prune(root, tag)


def _switch_remote(remote: store.Remote, root: str, tag: str) -> None:
    """Name `tag` in the store's `CURRENT` (one put, after the version's files), then remove
    versions older than the current and the one before, as `_prune` does locally. Versions
    are ordered by their names, which start with the time they were written."""
    remote.write(f"{root}/{CURRENT}", tag.encode())
    versions = [n for n in remote.listdir(root) if n not in (CURRENT, tag) and _is_tag(n)]
    versions.sort(key=lambda n: int(n.split("-", 1)[0]))
    for old in versions[:-1]:
        remote.remove(f"{root}/{old}", recursive=True)


def _is_tag(name: str) -> bool:
    head = name.split("-", 1)[0]
    return head.isdigit() and "/" not in name and "." not in name


def _prune(root: Path, current: str) -> None:
    """Remove versions older than the current and the one before it (a reader that read the
    link just before the switch still finds its pair), and legacy unversioned files."""
    versions = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and p.name != current),
        key=lambda p: p.stat().st_mtime,
    )
    for old in versions[:-1]:
        shutil.rmtree(old, ignore_errors=True)
    for legacy in (PROBE_OUTPUTS, PROBE_INDEX):
        (root.parent / legacy).unlink(missing_ok=True)


def stage_probe_outputs(
    settings: Settings, mid: str, outputs: dict[str, np.ndarray], temperature: float
) -> StagedOutputs:
    """Write the probe outputs as a new version; `switch_in` makes it current.

    One contiguous array plus a small JSON index, so selection can memory-map the file and
    read only a task's probe sets (a compressed archive of one entry per set costs ~10 ms
    per model to open, which dominates selection on a large hub)."""
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
    tag = f"{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    version = _outputs_root(settings, mid) / tag
    version.mkdir(parents=True)
    remote = store.model_remote(settings)
    staged = StagedOutputs(version / PROBE_OUTPUTS, version, remote, f"{_outputs_key(mid)}/{tag}")
    try:
        np.save(version / PROBE_OUTPUTS, data)
        meta = {"temperature": float(temperature), "heads": heads, "sets": index}
        (version / PROBE_INDEX).write_text(json.dumps(meta))
        if remote is not None:  # written here first: the store's cache is this very folder
            for name in (PROBE_OUTPUTS, PROBE_INDEX):
                remote.put(version / name, f"{staged.key}/{name}")
    except BaseException:
        staged.discard()
        raise
    return staged


def refresh_current(settings: Settings, mids: Iterable[str]) -> None:
    """For a model store at a URL: point each model's local `CURRENT` at the version the
    store's `CURRENT` names, fetching that version into the cache when it is not there. A
    model is looked up at most every `settings.store_refresh_s` (all due ones in one call);
    in between, and when the store cannot be reached, readers keep the version they have.
    Nothing to do for a local store."""
    remote = store.model_remote(settings)
    if remote is None:
        return
    now = time.monotonic()
    due = [m for m in mids if remote.due(_outputs_key(m), settings.store_refresh_s, now)]
    mirrored = 0
    try:
        tags = remote.read_many([f"{_outputs_key(m)}/{CURRENT}" for m in due])
        for m in due:
            tag = tags[f"{_outputs_key(m)}/{CURRENT}"]
            _mirror(settings, remote, m, tag.decode().strip() if tag is not None else None)
            mirrored += 1
    except Exception as e:  # noqa: BLE001 - unreachable store: serve the cached versions
        log.warning("probe_outputs_refresh_failed store=%s error=%r", remote.url, str(e))
        for m in due[mirrored:]:  # look again next time
            remote.forget(_outputs_key(m))


def _mirror(settings: Settings, remote: store.Remote, mid: str, tag: str | None) -> None:
    """Make the local copy of a model's probe outputs current with the store's `tag`."""
    root = _outputs_root(settings, mid)
    if tag is None:  # none in the store (never labelled, or deleted): none here either
        (root / CURRENT).unlink(missing_ok=True)
        return
    if not _is_tag(tag):
        log.warning("probe_outputs_bad_current model=%s current=%r", mid, tag)
        return
    if not (root / tag).is_dir():
        # Fetched into a folder of its own and renamed when complete, as a writer stages.
        tmp = settings.model_store / "tmp" / f"{tag}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            for name in (PROBE_OUTPUTS, PROBE_INDEX):
                data = remote.read(f"{_outputs_key(mid)}/{tag}/{name}")
                if data is None:  # pruned since CURRENT was read: look again next time
                    remote.forget(_outputs_key(mid))
                    return
                (tmp / name).write_bytes(data)
            root.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):  # another thread fetched it first
                tmp.rename(root / tag)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    with contextlib.suppress(OSError):
        if os.readlink(root / CURRENT) == tag:
            return
    _switch_link(root, tag)


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
    """The current pair, both files from one version (the link is read once per try; a
    version pruned between reading the link and opening is retried with the new one)."""
    for attempt in range(3):
        folder = current_version(settings, mid) or registry.model_dir(settings, mid)
        index_path = folder / PROBE_INDEX
        try:
            meta = json.loads(index_path.read_text())
            data = np.load(folder / PROBE_OUTPUTS, mmap_mode="r")
        except FileNotFoundError:
            if attempt < 2 and current_version(settings, mid) not in (None, folder):
                continue
            raise FailedPrecondition(
                f"model {mid} has no probe outputs ({index_path}): label it"
            ) from None
        sets = {s: (int(a), int(n)) for s, (a, n) in meta["sets"].items()}
        return ProbeOutputs(data, sets, float(meta["temperature"]))
    raise AssertionError("unreachable")


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
    cancel: CancelToken | None = None,
) -> LabelResult:
    """Label one model: in this process, or as one Ray task when MLLGRAPH_EXECUTOR=ray.
    With `cancel`: Aborted once it is cancelled, and nothing written after that."""
    if _executor(settings) == "ray":
        from mllgraph.label import ray_exec

        return ray_exec.label_models(
            graph, settings, [mid], options, progress=progress, cancel=cancel
        )[0]
    if cancel is not None:
        cancel.check()
        given = progress

        def progress(done: int, total: int) -> None:  # also the forward pass's stop check
            cancel.check()
            if given is not None:
                given(done, total)

    work = prepare(graph, settings, mid, options)
    outcome = compute(settings, work, device=device, progress=progress)
    return commit(graph, settings, work, outcome, cancel=cancel)


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
