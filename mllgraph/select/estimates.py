"""Selection's estimate step: what each class's estimate rests on (`mllgraph.select.evidence`,
pure), with the graph reads and probe outputs behind it; and the domain gate on candidates.

* `calibrations`: per model, its ancestor-route and declared calibrations, computed from its
  stored probe outputs (at most :data:`ROWS_PER_SET` images per probe set) and the heads it
  declares on probed concepts (`select/declared_heads`). Kept per model, catalogue version
  and probe-output file: computed at selection time rather than stored by labelling, so a
  hub labelled before them has them too, and they follow the hub's probe sets as they grow.
* `revise` (through `estimate_plan`, which reads only the calibrations a plan needs): the
  plan document's estimates, per class and overall, from that evidence; what
  CHCO or the stacked rule scored on the probe images (proxies and label-score priors
  included) stays beside it as ``simulated_accuracy``.
* `domain_gate`: a model that states an input domain (`mllgraph.combine.domain`) does not
  cover a class whose probe images (its own, else the proxy ones it borrows) its domain
  mostly refuses: inference would set the model aside on such images. The task's own
  images are unknown at selection time; the class's probe images are the evidence used. A
  class with no probe images at all leaves the model's candidates as they are.

Imports hub (probe outputs, probe sets, domain profiles), combine and below, and
`select.evidence`, `select.probe_data`, `select.reads`; must not import `select.run`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mllgraph.combine.domain import DomainProfile, thumbnails
from mllgraph.errors import FailedPrecondition, NotFound
from mllgraph.graph.db import Graph
from mllgraph.hub import domains, probes
from mllgraph.select import chco
from mllgraph.select.evidence import (
    Calibration,
    ClassEvidence,
    ProbedConcept,
    ancestor_route,
    class_evidence,
    declared_route,
    overall,
    pooled,
)
from mllgraph.select.probe_data import ProbeOutputCache
from mllgraph.select.reads import Reads
from mllgraph.settings import Settings

ROWS_PER_SET = 64  # probe images per set a calibration reads: bounds its cost on big hubs
MAX_MODELS = 32  # models calibrated per request (the plan's first, then candidates', by id)
PROBE_SET_LIMIT = 20_000  # as none_calibration: probe sets the graph read looks at, by id
# The domain gate: a model covers a class only if its domain accepts at least this share of
# the class's probe images (at most GATE_IMAGES_PER_SET per set are thumbnailed).
MIN_ACCEPTED = 0.5
GATE_IMAGES_PER_SET = 32

Routes = dict[tuple[str, str], Calibration | None]
_CAL: OrderedDict[tuple[str, int], tuple[Any, dict[str, Calibration | None]]] = OrderedDict()
_CAL_SIZE = 1024  # models; each entry holds its (memory-mapped) probe outputs open
_THUMBS: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
_THUMBS_SIZE = 4096
# Which of a probe set's thumbnails a domain profile accepts, by (profile sha256, set, count):
# the same for every task that meets that model and set, so a new task pays only new pairs.
_ACCEPTED: OrderedDict[tuple[str, str, int], np.ndarray] = OrderedDict()
_ACCEPTED_SIZE = 65536  # pairs; each at most GATE_IMAGES_PER_SET booleans
_LOCK = threading.Lock()


def _model_calibrations(
    outputs: Any, sets: list[dict[str, Any]], own: Mapping[str, list[int]]
) -> dict[str, Calibration | None]:
    """One model's route calibrations from its stored probe logits (the first ROWS_PER_SET
    images of each probe set it was labelled on)."""
    layout = outputs.sets
    used = [s for s in sets if layout.get(s["set_id"], (0, 0))[1] > 0]
    if not used:
        return {"ancestor": None, "declared": None}
    file_rows, set_rows, start = [], {}, 0
    for s in used:
        first, n = layout[s["set_id"]]
        n = min(n, ROWS_PER_SET)
        file_rows.append(np.arange(first, first + n))
        set_rows[s["set_id"]] = np.arange(start, start + n)
        start += n
    logits = np.asarray(outputs.data)[np.concatenate(file_rows)].astype(np.float32)
    ancestors = {s["wnid"]: frozenset(s["ancestors"]) for s in used}
    concepts = []
    for w in sorted(ancestors):
        under = [set_rows[s["set_id"]] for s in used if s["wnid"] == w or w in s["ancestors"]]
        concepts.append(ProbedConcept(w, ancestors[w], np.concatenate(under)))
    return {
        "ancestor": ancestor_route(logits, concepts, own),
        "declared": declared_route(logits, concepts, own),
    }


def calibrations(
    reads: Reads, settings: Settings, cache: ProbeOutputCache, model_ids: Sequence[str]
) -> tuple[Routes, dict[str, Calibration | None]]:
    """({(model, route): its calibration or None}, {route: the pooled one}) for these models
    (at most MAX_MODELS, in the order given); a model without probe outputs has none."""
    wanted = list(dict.fromkeys(model_ids))[:MAX_MODELS]
    sets = reads.probe_set_concepts(PROBE_SET_LIMIT)
    own = reads.declared_heads(wanted)
    out: Routes = {}
    for mid in wanted:
        try:
            outputs = cache.get(settings, mid)
        except FailedPrecondition:
            out[(mid, "ancestor")] = out[(mid, "declared")] = None
            continue
        key = (mid, reads.version)
        with _LOCK:
            hit = _CAL.get(key)
        if hit is not None and hit[0] is outputs.data:
            found = hit[1]
        else:
            found = _model_calibrations(outputs, sets, own.get(mid) or {})
            with _LOCK:
                _CAL[key] = (outputs.data, found)  # holding data keeps the check sound
                while len(_CAL) > _CAL_SIZE:
                    _CAL.popitem(last=False)
        for route, cal in found.items():
            out[(mid, route)] = cal
    pool = {
        route: pooled([c for (_, r), c in out.items() if r == route])
        for route in ("ancestor", "declared")
    }
    return out, pool


def own_probe_images(
    class_sets: Sequence[Sequence[tuple[str, int]]], probe_rows: Sequence[Mapping[str, Any]]
) -> list[int]:
    """Per class, its probe images from sets under its own concept (proxies left out)."""
    proxies = {r["set_id"] for r in probe_rows if r.get("proxy")}
    return [sum(n for s, n in sets if s not in proxies) for sets in class_sets]


def ancestor_probe_images(
    class_sets: Sequence[Sequence[tuple[str, int]]], probe_rows: Sequence[Mapping[str, Any]]
) -> list[tuple[int, str] | None]:
    """Per class without sets of its own, (images, concept) of the proxy sets that sit at
    the concept it borrowed them from (not under it): that concept's own images."""
    at_via = {
        r["set_id"]: r["proxy"]
        for r in probe_rows
        if r.get("proxy") and r.get("wnid") == r["proxy"]
    }
    out: list[tuple[int, str] | None] = []
    for sets in class_sets:
        mine = [(n, at_via[s]) for s, n in sets if s in at_via]
        out.append((sum(n for n, _ in mine), mine[0][1]) if mine else None)
    return out


def estimate_plan(
    reads: Reads,
    settings: Settings,
    cache: ProbeOutputCache,
    body: dict[str, Any],
    candidates: Sequence[chco.Candidate],
    own_images: Sequence[int],
    ancestor_images: Sequence[tuple[int, str] | None] | None = None,
) -> list[ClassEvidence]:
    """`revise` the plan document with the calibrations its classes need: those of the
    models covering a class without probe images of its own; when one of them has none, the
    pool of the candidates' models too (at most MAX_MODELS). A plan whose classes all have
    probe images reads nothing."""
    needed = sorted(
        {
            c["heads"][0]["model_id"]
            for c, n in zip(body["classes"], own_images, strict=True)
            if n == 0 and c.get("heads")
        }
    )
    routes: Routes = {}
    pool: dict[str, Calibration | None] = {"ancestor": None, "declared": None}
    if needed:
        routes, pool = calibrations(reads, settings, cache, needed)
        if any(cal is None for cal in routes.values()):
            others = sorted({c.group.model_id for c in candidates} - set(needed))
            more, _ = calibrations(reads, settings, cache, needed + others)
            pool = {
                route: pooled([c for (_, r), c in more.items() if r == route])
                for route in ("ancestor", "declared")
            }
    return revise(body, own_images, routes, pool, ancestor_images)


def revise(
    body: dict[str, Any],
    own_images: Sequence[int],
    routes: Routes,
    pool: Mapping[str, Calibration | None],
    ancestor_images: Sequence[tuple[int, str] | None] | None = None,
) -> list[ClassEvidence]:
    """Rewrite the plan document's estimates from each class's evidence (in place)."""
    k = len(body["classes"])
    found = []
    for i, c in enumerate(body["classes"]):
        model = c["heads"][0]["model_id"] if c.get("heads") else None
        parent = ancestor_images[i] if ancestor_images is not None else None
        if parent is not None and parent[1] not in {h.get("label_wnid") for h in c["heads"]}:
            parent = None  # its heads are labelled elsewhere: the proxy measured other heads
        e = class_evidence(
            k=k,
            coverage=c["coverage"],
            own_images=int(own_images[i]),
            measured_estimate=c.get("estimated_accuracy"),
            model=model,
            calibrations=routes,
            pool=pool,
            ancestor_images=parent,
        )
        if c["coverage"] == "uncovered" and c.get("domain_set_aside"):
            e = ClassEvidence(
                e.kind, e.estimate, e.text + "; " + c["domain_set_aside"], e.model, e.images
            )
        c["simulated_accuracy"] = c.get("estimated_accuracy")
        # An uncovered class without probe images is not estimated (the overall estimate
        # counts it at chance: leaving it out would claim the plan is better than it is).
        c["estimated_accuracy"] = None if e.kind == "uncovered" else e.estimate
        c["estimate_evidence"] = e.to_dict()
        c["own_probe_images"] = int(own_images[i])
        c["measured"] = e.kind == "measured"
        found.append(e)
    body["simulated_accuracy"] = body.get("estimated_accuracy")
    body["estimated_accuracy"], body["measured_fraction"] = overall(found)
    return found


# -- the domain gate ---------------------------------------------------------------------------


def _accepted(
    graph: Graph,
    settings: Settings,
    sha: str,
    profile: DomainProfile,
    set_id: str,
    count: int,
) -> np.ndarray | None:
    """Which of the set's gate thumbnails the profile accepts (None: no images)."""
    key = (sha, set_id, count)
    with _LOCK:
        if key in _ACCEPTED:
            _ACCEPTED.move_to_end(key)
            return _ACCEPTED[key]
    thumbs = _thumbnails(graph, settings, set_id, count)
    if thumbs is None:
        return None
    accepted = profile.accepts(thumbs) if len(thumbs) else np.zeros(0, dtype=bool)
    with _LOCK:
        _ACCEPTED[key] = accepted
        while len(_ACCEPTED) > _ACCEPTED_SIZE:
            _ACCEPTED.popitem(last=False)
    return accepted


def _thumbnails(graph: Graph, settings: Settings, set_id: str, count: int) -> np.ndarray | None:
    key = (set_id, count)
    with _LOCK:
        if key in _THUMBS:
            return _THUMBS[key]
    rows = graph.read("hub/probe_set_get", id=set_id)
    if not rows:
        return None
    p = rows[0]["probe_set"]
    ps = probes.ProbeSet(p["id"], p["wnid"], p["concept"], p["count"], p["path"], "")
    try:
        thumbs = thumbnails(probes.load_images(ps, GATE_IMAGES_PER_SET, settings=settings))
    except NotFound:
        return None
    with _LOCK:
        _THUMBS[key] = thumbs
        while len(_THUMBS) > _THUMBS_SIZE:
            _THUMBS.popitem(last=False)
    return thumbs


def domain_gate(
    reads: Reads,
    settings: Settings,
    candidates: list[chco.Candidate],
    probe_rows: Sequence[Mapping[str, Any]],
) -> tuple[list[chco.Candidate], dict[tuple[int, str], dict[str, Any]]]:
    """(the candidates a model's input domain lets cover their class, {(class, model): what
    was set aside and why}). See the module doc."""
    records = reads.model_domains(sorted({c.group.model_id for c in candidates}))
    profiled = {m: r for m, r in records.items() if r}
    if not profiled:
        return candidates, {}
    sets_of: dict[int, dict[str, int]] = {}
    for r in probe_rows:
        sets_of.setdefault(r["class_index"], {})[r["set_id"]] = int(r.get("count") or 0)
    verdict: dict[tuple[int, str], dict[str, Any]] = {}
    kept = []
    for cand in candidates:
        mid, ci = cand.group.model_id, cand.class_index
        if mid not in profiled or ci not in sets_of:
            kept.append(cand)
            continue
        if (ci, mid) not in verdict:
            verdict[(ci, mid)] = _gate(reads, settings, mid, profiled[mid], sets_of[ci])
        if verdict[(ci, mid)]["covers"]:
            kept.append(cand)
    aside = {key: v for key, v in verdict.items() if not v["covers"]}
    return kept, aside


def _gate(
    reads: Reads, settings: Settings, mid: str, record: Mapping[str, Any], sets: Mapping[str, int]
) -> dict[str, Any]:
    try:
        profile = domains.load(settings, mid, dict(record))
    except FailedPrecondition:
        return {"covers": True, "why": "profile unreadable"}  # inference will say so itself
    sha = str(record["domain_sha256"])
    parts = [_accepted(reads.graph, settings, sha, profile, s, n) for s, n in sorted(sets.items())]
    verdicts = [a for a in parts if a is not None and a.size]
    if not verdicts:
        return {"covers": True, "why": "no probe images to check"}
    accepted = np.concatenate(verdicts)
    share = float(accepted.mean())
    return {
        "covers": share >= MIN_ACCEPTED,
        "accepted": share,
        "images": int(accepted.size),
        "why": (
            f"{mid} set aside by its input domain: it accepts {int(accepted.sum())} of "
            f"{accepted.size} of the class's probe images"
        ),
    }
