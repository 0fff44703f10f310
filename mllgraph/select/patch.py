"""The ConSE patch for the classes a plan leaves uncovered (`mllgraph.combine.conse`).

- `conse_patch`: the hub's broadest expert (at least `PATCH_MIN_HEADS` heads) and the text
  similarities of its heads to the class names (the mass rule: a head a covered class uses
  or is named closer to never votes for an uncovered one), its weight and floor calibrated
  so that uncovered classes take at most `conse.STEAL_RATE` of the covered classes' probe
  images; covered classes without probe images cap the floor at their noise level on the
  hub's probe images of other concepts. Inference applies it when no VLM is configured.
- The text vectors it needs, kept across requests: the patch model's head names per model
  version, and each class text encoded alone (`_class_text_vectors`).

Imports plan, graph, combine and below, and `select.chco`, `select.probe_data`,
`select.reads`; must not import `select.run` or anything above select.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.combine import conse
from mllgraph.combine.rule import class_scores
from mllgraph.errors import FailedPrecondition
from mllgraph.graph.db import Graph
from mllgraph.paths import write_atomic
from mllgraph.plan.request import SelectOptions, TaskClass
from mllgraph.select import chco
from mllgraph.select.probe_data import ProbeOutputCache, probe_matrix
from mllgraph.select.reads import Reads
from mllgraph.settings import Settings

log = logging.getLogger(__name__)

PATCH_MIN_HEADS = 100  # a model this broad (declaring concepts) may patch uncovered classes
OTHER_IMAGES_MAX = 5000  # hub probe images of other concepts read for a noise floor

_PATCH_TEXTS: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()  # head-name vectors
_PATCH_TEXTS_MAX = 8
_CLASS_TEXTS: OrderedDict[str, np.ndarray] = OrderedDict()  # class-text vectors, one per text
_CLASS_TEXTS_MAX = 20_000  # 1.5 KB each
_CLASS_TEXTS_LOCK = threading.Lock()


def _class_text_vectors(encode: Any, texts: list[str]) -> np.ndarray | None:
    """(len(texts), D) vectors of class texts, each encoded ALONE and kept across requests.

    Alone, because a text's vector from a batch depends slightly on the batch (padding,
    kernel shapes): a vector of its own is the same whatever task it comes with, so cached
    and fresh plans agree bit for bit. Encoding a big task's names was most of a warm
    SelectHeads (~200 ms of 100 class names) and names recur across tasks."""
    with _CLASS_TEXTS_LOCK:
        known = {t: _CLASS_TEXTS[t] for t in texts if t in _CLASS_TEXTS}
        for t in known:
            _CLASS_TEXTS.move_to_end(t)
    for t in dict.fromkeys(texts):
        if t in known:
            continue
        vec = encode([t])
        if vec is None:
            return None
        known[t] = np.asarray(vec[0])
        known[t].setflags(write=False)
        with _CLASS_TEXTS_LOCK:
            _CLASS_TEXTS[t] = known[t]
            while len(_CLASS_TEXTS) > _CLASS_TEXTS_MAX:
                _CLASS_TEXTS.popitem(last=False)
    return np.stack([known[t] for t in texts]) if texts else None


def stored_text_vectors(folder: Path, texts: list[str], encode: Any) -> np.ndarray | None:
    """`encode(texts)`, kept in `folder` under a digest of the texts and the encoder's name,
    so that a new process (a `mllgraph select` command) does not encode a broad expert's
    1,000 head names again (~3 s on one core). A file that cannot be read or written is
    recomputed or skipped: the cache never fails a selection."""
    from mllgraph.ground.embed import MODEL_NAME

    digest = hashlib.sha256("\n".join([MODEL_NAME, *texts]).encode()).hexdigest()[:32]
    path = folder / f"{digest}.npy"
    try:
        vectors = np.load(path)
        if vectors.shape[0] == len(texts):
            return vectors
    except (OSError, ValueError):
        pass
    vectors = encode(texts)
    if vectors is None:
        return None
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(vectors))
    try:
        write_atomic(path, buffer.getvalue())  # whole or absent, whoever reads it concurrently
    except OSError as e:
        log.debug("head text vectors not kept in %s: %s", folder, e)
    return vectors


def conse_patch(
    graph: Graph,
    reads: Reads,
    settings: Settings,
    plan: chco.Plan,
    classes: list[TaskClass],
    options: SelectOptions,
    resolver: Any,
    probe_rows: list[dict[str, Any]],
    cache: ProbeOutputCache,
) -> conse.ConsePatch | None:
    """The ConSE patch for the plan's uncovered classes (mllgraph.combine.conse), or None when
    the hub has no broad expert or grounding has no text encoder (then inference falls back
    to the constant rule)."""
    encode = getattr(resolver, "encode_texts", None)
    found = reads.patch_model(PATCH_MIN_HEADS, options)
    if not found or encode is None:
        return None
    mid, version = found[0]["model"], str(found[0]["version"])
    key = (mid, version)
    head_vecs = _PATCH_TEXTS.get(key)
    if head_vecs is None:
        names = [r["name"] for r in graph.read("select/patch_heads", id=mid)]
        head_vecs = stored_text_vectors(
            settings.home / "cache" / "head_texts",
            [conse.TEMPLATE.format(n.replace("_", " ")) for n in names],
            encode,
        )
        if head_vecs is None:
            return None
        _PATCH_TEXTS[key] = head_vecs
        while len(_PATCH_TEXTS) > _PATCH_TEXTS_MAX:
            _PATCH_TEXTS.popitem(last=False)
    class_vecs = _class_text_vectors(encode, [conse.TEMPLATE.format(c.name) for c in classes])
    if class_vecs is None:
        return None
    heads, sim = conse.similarity_table(class_vecs, head_vecs)
    # The mass rule's table: a head the plan uses for a covered class, or one text-closer to
    # a covered class than to the uncovered one, never votes for the uncovered one.
    used = {h for a in plan.assignment for g in a.groups if g.model_id == mid for h in g.heads}
    cosines = np.clip(head_vecs[list(heads)] @ class_vecs.T, 0.0, None)
    heads, sim = conse.never_steal_table(heads, sim, plan.uncovered, used, cosines)
    patch = conse.ConsePatch(
        mid, float(found[0]["temperature"]), heads, sim, model_version=version, rule=conse.MASS
    )
    return replace(patch, **_calibration(settings, plan, patch, probe_rows, cache, len(classes)))


def _calibration(
    settings: Settings,
    plan: chco.Plan,
    patch: conse.ConsePatch,
    probe_rows: list[dict[str, Any]],
    cache: ProbeOutputCache,
    k: int,
) -> dict[str, Any]:
    """The patch's weight, floor and calibration (mllgraph.combine.conse.calibrate) on the
    probe images of the COVERED classes that the plan's models and the patch model all saw,
    the floor also capped by covered classes without such images at their noise level on the
    hub's probe images of other concepts (`conse.noise_floor`); never on task images."""
    try:
        outputs = {m: cache.get(settings, m) for m in {*plan.models, patch.model_id}}
    except FailedPrecondition:
        outputs = {}  # some outputs are gone: nothing to measure on
    if not outputs:
        return {
            "weight": conse.STRUCTURAL_WEIGHT,
            "floor": conse.STRUCTURAL_FLOOR,
            "calibration": conse.Calibration(conse.STRUCTURAL),
        }
    labels, logits, _ = probe_matrix(probe_rows, outputs, k)
    covered = ~np.isin(labels, plan.uncovered)  # an uncovered class's own images are its to take
    rows = {m: v[covered] for m, v in logits.items()}
    if covered.any():
        z = class_scores({m: rows[m] for m in plan.models}, plan.assignment, plan.params)
        evidence = patch.patch_evidence(rows[patch.model_id])
    else:
        z = evidence = np.zeros((0, k))
    seen = set(labels[covered].tolist())
    unseen = [c for c in range(k) if plan.assignment[c].groups and c not in seen]
    cap, other = None, 0
    if unseen:
        z_other = _other_concept_scores(plan, probe_rows, outputs, k)
        cap, other = conse.noise_floor(z_other, unseen), int(z_other.shape[0])
    weight, floor, calibration = conse.calibrate(
        z,
        evidence,
        plan.uncovered,
        plan.params.weights,
        plan.params.biases,
        floor_cap=cap,
        other_images=other if cap is not None else 0,
    )
    return {"weight": weight, "floor": floor, "calibration": calibration}


def _other_concept_scores(
    plan: chco.Plan,
    probe_rows: list[dict[str, Any]],
    outputs: dict[str, Any],
    k: int,
) -> np.ndarray:
    """(N, K) the plan's scores on the hub's probe images of concepts that are none of the
    task's (every probe set the models saw but the task's and its proxies'), at most
    OTHER_IMAGES_MAX of them."""
    task_sets = {r["set_id"] for r in probe_rows}
    sets: dict[str, int] = {}
    for out in outputs.values():
        for set_id, (_, count) in out.sets.items():
            sets[set_id] = min(count, sets.get(set_id, count))
    rows, total = [], 0
    for set_id in sorted(sets):
        if set_id in task_sets or total >= OTHER_IMAGES_MAX:
            continue
        rows.append({"set_id": set_id, "class_index": 0, "distance": 0})
        total += sets[set_id]
    _, logits, _ = probe_matrix(rows, outputs, k)
    if not logits:
        return np.zeros((0, k))
    return class_scores({m: logits[m] for m in plan.models}, plan.assignment, plan.params)
