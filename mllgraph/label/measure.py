"""Model labelling, the measurement part: what each head of one expert really recognises.
Pure numpy/scipy, no I/O (the I/O layer runs the model on the probe images, fills a
:class:`ConceptHierarchy` from Neo4j and writes the ``LABELED`` edges).

Inputs for one model: its raw ``logits`` (N, H) on N probe images, ``image_concepts`` (N,)
indexing ``probed`` (the wnid of each image's probed concept), ``declared`` (the wnid each of
the H heads claims, or None) and the IS_A ``hierarchy``.

Definitions (exactly what the code computes):

* **Image set** ``I_v`` of a concept v: the images whose probed concept is v or a descendant
  of v (c is a descendant of v iff ``v in hierarchy.ancestors[c]``). A sandal image is a
  footwear image.
* **Measured concepts**: every probed concept (``method="probe"``) and every ancestor of a
  probed concept (``method="propagated"``: propagation along IS_A, its images are the union
  of those of the probed concepts under it), except propagated ancestors that

  - cover all N images (``entity``, ``artifact``...): every head would be perfectly precise, or
  - add nothing: their image set is exactly that of one probed concept (e.g. ``shoe`` when
    ``sandal`` is the only probed concept under it; the numbers would repeat sandal's),
    unless some head declares that ancestor (a head's own claim is always measured).

  Propagated ancestors reached through two or more probed concepts are all kept, even when
  several share one image set (``shoe`` and ``footwear`` above sandal and sneaker): they are
  distinct claims the probes cannot tell apart; ties rank the more specific first and
  ``top_k`` bounds the edges per head. Concepts with fewer than ``min_images`` images are
  skipped.
* **Winner**: ``argmax_h logits[i, h]`` (first head on ties); the same as the argmax of
  ``p = softmax(logits / T)`` for every T > 0, so it does not depend on the temperature.
* For head h and measured concept v: ``recall = |{i in I_v: winner_i = h}| / |I_v|``;
  ``precision = |{i in I_v: winner_i = h}| / |{i: winner_i = h}|`` (0 when h never wins);
  ``score = F1(precision, recall) = 2 hits / (wins_h + |I_v|)`` - the label quality that
  selection uses; ``mean_prob = mean_{i in I_v} p[i, h]`` with ``p`` the softmax of
  :func:`mllgraph.combine.rule.model_probabilities` at the model's temperature; ``n_probe = |I_v|``.
* **Head labels** (:func:`measure`): per head, the ``top_k`` measured concepts with at least
  one winning image and ``score >= min_score``, ranked by score, then probe before
  propagated, then the smaller image set, then the deeper concept, then wnid. A head that
  never wins gets no label.
* **Group labels** (:func:`group_labels`), "heads under a concept together recognise it":
  for measured v, ``G`` = the heads whose declared concept is v or a descendant of v (only
  when ``|G| >= 2``); the predictor "winner in G" gets precision, recall and F1 as above
  (``wins_G`` = images won by any head of G), and ``mean_prob`` is the mean over ``I_v`` of
  ``sum_{h in G} p[i, h]`` (the group evidence of the combination rule). Groups with
  ``score < min_score`` (default 0.05, as for heads) are left out.
* **Temperature** (:func:`fit_temperature`): the T in [0.05, 20] minimising the mean NLL of
  the "right heads": an image whose concept c equals, or descends from, the declared concept
  of at least one head has target ``log sum_{h right} p[i, h]``; other images are ignored.
  Bounded Brent search on log T (deterministic); T = 1.0 when no image matches.

A declared wnid missing from ``hierarchy.ancestors`` is taken to have no known ancestors
(it still matches itself); every probed wnid must be in it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse
from scipy.optimize import minimize_scalar

from mllgraph.combine.rule import model_probabilities
from mllgraph.errors import InvalidArgument

TEMPERATURE_BOUNDS = (0.05, 20.0)
METHODS = ("probe", "propagated")


@dataclass(frozen=True)
class ConceptHierarchy:
    """IS_A facts for the wnids involved (probed and declared concepts).

    ``ancestors[w]``: every ancestor of w, excluding w itself. ``names`` (wnid -> 'sandal.n.01')
    and ``depth`` (shortest IS_A path to the root) are optional extras for ranking and display.
    """

    ancestors: Mapping[str, Iterable[str]]
    names: Mapping[str, str] = field(default_factory=dict)
    depth: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.ancestors, Mapping):
            raise InvalidArgument("ConceptHierarchy.ancestors must be a mapping wnid -> ancestors")
        anc: dict[str, frozenset[str]] = {}
        for wnid, ups in self.ancestors.items():
            if isinstance(ups, str):
                raise InvalidArgument(
                    f"ConceptHierarchy.ancestors[{wnid!r}] is a string; expected a set of wnids"
                )
            anc[str(wnid)] = frozenset(str(a) for a in ups) - {str(wnid)}
        object.__setattr__(self, "ancestors", anc)
        object.__setattr__(self, "names", {str(k): str(v) for k, v in dict(self.names).items()})
        object.__setattr__(self, "depth", {str(k): int(v) for k, v in dict(self.depth).items()})

    def name(self, wnid: str) -> str:
        """The synset name when known, else the wnid."""
        return self.names.get(wnid, wnid)


@dataclass(frozen=True)
class HeadLabel:
    """One ``(:Head)-[:LABELED]->(:Concept)`` edge: head ``head`` recognises ``wnid``."""

    head: int
    wnid: str
    score: float
    precision: float
    recall: float
    mean_prob: float
    n_probe: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "wnid": self.wnid,
            "score": self.score,
            "precision": self.precision,
            "recall": self.recall,
            "mean_prob": self.mean_prob,
            "n_probe": self.n_probe,
            "method": self.method,
        }


@dataclass(frozen=True)
class GroupLabel:
    """Heads declared under ``wnid`` measured together as one predictor of ``wnid``."""

    heads: tuple[int, ...]
    wnid: str
    score: float
    precision: float
    recall: float
    mean_prob: float
    n_probe: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "heads": list(self.heads),
            "wnid": self.wnid,
            "score": self.score,
            "precision": self.precision,
            "recall": self.recall,
            "mean_prob": self.mean_prob,
            "n_probe": self.n_probe,
        }


@dataclass(frozen=True)
class ModelLabelling:
    """Everything :func:`label_model` measures for one model."""

    temperature: float
    n_calibration: int
    labels: list[HeadLabel]
    groups: list[GroupLabel]


# ---------------------------------------------------------------------------------------------
# Validation and shared preparation.


@dataclass(frozen=True)
class _Inputs:
    logits: np.ndarray  # (N, H) float64, finite
    concepts: np.ndarray  # (N,) intp in 0..P-1
    probed: tuple[str, ...]
    declared: tuple[str | None, ...]
    hierarchy: ConceptHierarchy

    @property
    def n(self) -> int:
        return int(self.logits.shape[0])

    @property
    def h(self) -> int:
        return int(self.logits.shape[1])

    @property
    def p(self) -> int:
        return len(self.probed)

    def up(self, wnid: str) -> frozenset[str]:
        """Ancestors of ``wnid`` (empty when the hierarchy does not know it)."""
        return self.hierarchy.ancestors.get(wnid, frozenset())


def _validate(
    logits: np.ndarray,
    image_concepts: np.ndarray,
    probed: Sequence[str],
    declared: Sequence[str | None],
    hierarchy: ConceptHierarchy,
) -> _Inputs:
    try:
        arr = np.asarray(logits, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"logits must be a numeric (N, H) array: {exc}") from None
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise InvalidArgument(f"logits must be a 2-D (N, H) array with H >= 1, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InvalidArgument("logits has non-finite values (NaN or inf)")
    n, h = arr.shape
    if isinstance(probed, str) or not isinstance(probed, Sequence):
        raise InvalidArgument("probed must be a list of wnids")
    probed_t = tuple(probed)
    for w in probed_t:
        if not isinstance(w, str) or not w:
            raise InvalidArgument(f"probed has {w!r}; expected non-empty wnid strings")
    if len(set(probed_t)) != len(probed_t):
        dup = sorted({w for w in probed_t if probed_t.count(w) > 1})
        raise InvalidArgument(f"probed lists a wnid more than once: {dup}")
    ic = np.asarray(image_concepts)
    if ic.ndim != 1 or ic.shape[0] != n:
        raise InvalidArgument(
            f"image_concepts must be ({n},) to match logits' {n} rows, got shape {ic.shape}"
        )
    if n and (not np.issubdtype(ic.dtype, np.integer) or ic.dtype == np.bool_):
        raise InvalidArgument(f"image_concepts must be integers, got dtype {ic.dtype}")
    if n and (ic.min() < 0 or ic.max() >= len(probed_t)):
        raise InvalidArgument(
            f"image_concepts has values outside 0..{len(probed_t) - 1} "
            f"(indexes into the {len(probed_t)} probed concepts)"
        )
    if isinstance(declared, str) or not isinstance(declared, Sequence):
        raise InvalidArgument("declared must be a list of wnids (or None), one per head")
    if len(declared) != h:
        raise InvalidArgument(f"declared has {len(declared)} entries but logits have {h} heads")
    for i, w in enumerate(declared):
        if w is not None and (not isinstance(w, str) or not w):
            raise InvalidArgument(f"declared[{i}] is {w!r}; expected a wnid string or None")
    if not isinstance(hierarchy, ConceptHierarchy):
        raise InvalidArgument(
            f"hierarchy must be a ConceptHierarchy, got {type(hierarchy).__name__}"
        )
    missing = [w for w in probed_t if w not in hierarchy.ancestors]
    if missing:
        raise InvalidArgument(
            f"hierarchy.ancestors has no entry for probed concept(s) {missing[:5]}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    return _Inputs(arr, ic.astype(np.intp), probed_t, tuple(declared), hierarchy)


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise InvalidArgument(f"temperature is {temperature!r}; expected a number > 0")
    return t


def _check_int(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidArgument(f"{name} is {value!r}; expected an integer >= {minimum}")
    return int(value)


def _check_score(value: float, name: str) -> float:
    v = float(value)
    if not (0.0 <= v <= 1.0):
        raise InvalidArgument(f"{name} is {value!r}; expected a number in [0, 1]")
    return v


@dataclass(frozen=True)
class _Measured:
    """The measured concepts: wnids, method, membership over probed concepts, image counts."""

    wnids: list[str]
    probe: np.ndarray  # (V,) bool: method == "probe"
    membership: sparse.csr_matrix  # (V, P) 0/1
    n_images: np.ndarray  # (V,) int
    depth: np.ndarray  # (V,) int, -1 unknown
    order: np.ndarray  # (V,) rank of the wnid in sorted order (tie-break)


def _measured_concepts(inp: _Inputs, min_images: int) -> _Measured:
    """Probed concepts and their informative ancestors, as in the module docstring."""
    counts = np.bincount(inp.concepts, minlength=inp.p)
    members: dict[str, list[int]] = {}
    for c, w in enumerate(inp.probed):
        for v in (w, *sorted(inp.up(w))):
            members.setdefault(v, []).append(c)
    probed_set = set(inp.probed)
    declared_set = {w for w in inp.declared if w is not None}
    # Image-bearing member sets of the probed concepts: an ancestor with one of these adds nothing.
    probed_keys = {frozenset(c for c in members[w] if counts[c]) for w in inp.probed}
    wnids: list[str] = []
    rows: list[list[int]] = []
    for v in sorted(members):
        cs = members[v]
        n_v = int(counts[cs].sum())
        if n_v < min_images:
            continue
        if v not in probed_set:
            if n_v == inp.n:
                continue
            if v not in declared_set and frozenset(c for c in cs if counts[c]) in probed_keys:
                continue
        wnids.append(v)
        rows.append(cs)
    nnz = sum(len(r) for r in rows)
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    indices = np.fromiter((c for r in rows for c in r), dtype=np.int64, count=nnz)
    membership = sparse.csr_matrix(
        (np.ones(nnz), indices, indptr), shape=(len(wnids), inp.p), dtype=np.float64
    )
    n_images = np.asarray(membership @ counts.astype(np.float64)).round().astype(np.int64)
    return _Measured(
        wnids=wnids,
        probe=np.array([w in probed_set for w in wnids], dtype=bool),
        membership=membership,
        n_images=n_images.reshape(len(wnids)),
        depth=np.array([inp.hierarchy.depth.get(w, -1) for w in wnids], dtype=np.int64),
        order=np.arange(len(wnids)),  # wnids are already sorted
    )


@dataclass(frozen=True)
class _Stats:
    """Winner counts and per-concept sums shared by head and group labels."""

    measured: _Measured
    wins: np.ndarray  # (H,) images won per head
    hits: sparse.csr_matrix  # (H, V) images of I_v won by h
    prob_sums: np.ndarray  # (V, H) sum over I_v of p[i, h]


def _stats(inp: _Inputs, temperature: float, min_images: int) -> _Stats:
    measured = _measured_concepts(inp, min_images)
    n, h, p = inp.n, inp.h, inp.p
    winner = inp.logits.argmax(axis=1) if n else np.zeros(0, dtype=np.intp)
    wins = np.bincount(winner, minlength=h)
    ones = np.ones(n)
    # (H, P) images of each probed concept won by each head; duplicates sum on conversion.
    won = sparse.csr_matrix((ones, (winner, inp.concepts)), shape=(h, p))
    hits = (won @ measured.membership.T).tocsr()
    # (P, N) image indicator -> (P, H) per-probed-concept probability sums -> (V, H).
    indicator = sparse.csr_matrix((ones, (inp.concepts, np.arange(n))), shape=(p, n))
    probs = model_probabilities(inp.logits, temperature) if n else np.zeros((0, h))
    per_probed = np.asarray(indicator @ probs)
    prob_sums = np.asarray(measured.membership @ per_probed)
    return _Stats(measured, wins, hits, prob_sums)


def _head_labels(stats: _Stats, min_score: float, top_k: int) -> list[HeadLabel]:
    m = stats.measured
    coo = stats.hits.tocoo()
    heads = coo.row.astype(np.int64)
    cols = coo.col.astype(np.int64)
    hits = coo.data
    keep = hits > 0
    heads, cols, hits = heads[keep], cols[keep], hits[keep]
    n_v = m.n_images[cols].astype(np.float64)
    wins = stats.wins[heads].astype(np.float64)
    score = 2.0 * hits / (wins + n_v)
    keep = score >= min_score
    heads, cols, hits, score, n_v, wins = (a[keep] for a in (heads, cols, hits, score, n_v, wins))
    # Last key is primary: head, then score desc, probe first, smaller set, deeper, wnid.
    order = np.lexsort((m.order[cols], -m.depth[cols], n_v, ~m.probe[cols], -score, heads))
    heads_sorted = heads[order]
    first = np.searchsorted(heads_sorted, heads_sorted, side="left")
    order = order[np.arange(order.size) - first < top_k]
    out: list[HeadLabel] = []
    for i in order:
        hd, v = int(heads[i]), int(cols[i])
        out.append(
            HeadLabel(
                head=hd,
                wnid=m.wnids[v],
                score=float(score[i]),
                precision=float(hits[i] / wins[i]),
                recall=float(hits[i] / n_v[i]),
                mean_prob=float(stats.prob_sums[v, hd] / n_v[i]),
                n_probe=int(m.n_images[v]),
                method=METHODS[0] if m.probe[v] else METHODS[1],
            )
        )
    return out


def _group_labels(inp: _Inputs, stats: _Stats, min_score: float) -> list[GroupLabel]:
    m = stats.measured
    by_declared: dict[str, list[int]] = {}
    for hd, w in enumerate(inp.declared):
        if w is not None:
            by_declared.setdefault(w, []).append(hd)
    under: dict[str, set[int]] = {}  # measured concept -> heads declared at or below it
    measured_set = set(m.wnids)
    for w, hs in by_declared.items():
        for v in (w, *inp.up(w)):
            if v in measured_set:
                under.setdefault(v, set()).update(hs)
    hits_csc = stats.hits.tocsc()
    out: list[GroupLabel] = []
    for v_idx, v in enumerate(m.wnids):
        group = sorted(under.get(v, ()))
        if len(group) < 2:
            continue
        g = np.array(group, dtype=np.int64)
        n_v = float(m.n_images[v_idx])
        column = hits_csc[:, v_idx].toarray().ravel()
        hits = float(column[g].sum())
        wins = float(stats.wins[g].sum())
        score = 2.0 * hits / (wins + n_v)
        if score < min_score:
            continue
        out.append(
            GroupLabel(
                heads=tuple(group),
                wnid=v,
                score=score,
                precision=hits / wins if wins else 0.0,
                recall=hits / n_v,
                mean_prob=float(stats.prob_sums[v_idx, g].sum() / n_v),
                n_probe=int(n_v),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# Public API.


def fit_temperature(
    logits: np.ndarray,
    image_concepts: np.ndarray,
    probed: Sequence[str],
    declared: Sequence[str | None],
    hierarchy: ConceptHierarchy,
) -> tuple[float, int]:
    """(T, number of images used): the temperature minimising the right heads' NLL."""
    inp = _validate(logits, image_concepts, probed, declared, hierarchy)
    return _fit_temperature(inp)


def _fit_temperature(inp: _Inputs) -> tuple[float, int]:
    by_declared: dict[str, list[int]] = {}
    for hd, w in enumerate(inp.declared):
        if w is not None:
            by_declared.setdefault(w, []).append(hd)
    right: list[np.ndarray] = []  # per probed concept: heads declared at or above it
    for w in inp.probed:
        hs = {hd for v in (w, *inp.up(w)) for hd in by_declared.get(v, ())}
        right.append(np.array(sorted(hs), dtype=np.int64))
    n_right = np.array([r.size for r in right], dtype=np.int64)
    rows = np.flatnonzero(n_right[inp.concepts] > 0) if inp.n else np.zeros(0, np.int64)
    if rows.size == 0:
        return 1.0, 0
    used_concepts = inp.concepts[rows]
    if np.all(n_right[used_concepts] == inp.h):
        return 1.0, int(rows.size)  # every head is right: the NLL is 0 for every T
    d = inp.logits[rows]
    d = d - d.max(axis=1, keepdims=True)  # <= 0, row max 0
    # (image, right head) pairs, grouped by image position.
    per = n_right[used_concepts]
    pair_row = np.repeat(np.arange(rows.size), per)
    starts = np.concatenate([[0], np.cumsum(per)[:-1]])
    offset = np.arange(pair_row.size) - np.repeat(starts, per)
    # Each image's right heads, via its concept's list (packed once per concept).
    packed = np.concatenate(right)
    concept_start = np.concatenate([[0], np.cumsum(n_right)[:-1]])
    pair_head = packed[concept_start[used_concepts][pair_row] + offset]
    pair_d = d[pair_row, pair_head]
    pair_max = np.maximum.reduceat(pair_d, starts)  # per image, T-independent
    pair_shift = pair_d - pair_max[pair_row]  # <= 0, one 0 per image
    buf = np.empty_like(d)

    def nll(log_t: float) -> float:
        inv = math.exp(-log_t)
        np.multiply(d, inv, out=buf)
        np.exp(buf, out=buf)
        log_total = np.log(buf.sum(axis=1))
        right_sum = np.bincount(pair_row, weights=np.exp(pair_shift * inv), minlength=rows.size)
        log_right = pair_max * inv + np.log(right_sum)
        return float(np.mean(log_total - log_right))

    lo, hi = (math.log(b) for b in TEMPERATURE_BOUNDS)
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(math.exp(res.x)), int(rows.size)


def measure(
    logits: np.ndarray,
    image_concepts: np.ndarray,
    probed: Sequence[str],
    declared: Sequence[str | None],
    hierarchy: ConceptHierarchy,
    *,
    temperature: float,
    min_score: float = 0.05,
    top_k: int = 5,
    min_images: int = 5,
) -> list[HeadLabel]:
    """Head labels: per head, its best ``top_k`` measured concepts (ordered by head, rank)."""
    inp = _validate(logits, image_concepts, probed, declared, hierarchy)
    t = _check_temperature(temperature)
    ms = _check_score(min_score, "min_score")
    k = _check_int(top_k, "top_k", 1)
    mi = _check_int(min_images, "min_images", 1)
    return _head_labels(_stats(inp, t, mi), ms, k)


def group_labels(
    logits: np.ndarray,
    image_concepts: np.ndarray,
    probed: Sequence[str],
    declared: Sequence[str | None],
    hierarchy: ConceptHierarchy,
    *,
    temperature: float,
    min_score: float = 0.05,
    min_images: int = 5,
) -> list[GroupLabel]:
    """Group labels: heads declared at or under a measured concept, as one predictor of it."""
    inp = _validate(logits, image_concepts, probed, declared, hierarchy)
    t = _check_temperature(temperature)
    ms = _check_score(min_score, "min_score")
    mi = _check_int(min_images, "min_images", 1)
    return _group_labels(inp, _stats(inp, t, mi), ms)


def label_model(
    logits: np.ndarray,
    image_concepts: np.ndarray,
    probed: Sequence[str],
    declared: Sequence[str | None],
    hierarchy: ConceptHierarchy,
    *,
    temperature: float | None = None,
    min_score: float = 0.05,
    top_k: int = 5,
    min_images: int = 5,
    group_min_score: float = 0.05,
) -> ModelLabelling:
    """Fit the temperature (unless given), then head and group labels, sharing one pass."""
    inp = _validate(logits, image_concepts, probed, declared, hierarchy)
    ms = _check_score(min_score, "min_score")
    gms = _check_score(group_min_score, "group_min_score")
    k = _check_int(top_k, "top_k", 1)
    mi = _check_int(min_images, "min_images", 1)
    if temperature is None:
        t, n_cal = _fit_temperature(inp)
    else:
        t, n_cal = _check_temperature(temperature), 0
    stats = _stats(inp, t, mi)
    return ModelLabelling(t, n_cal, _head_labels(stats, ms, k), _group_labels(inp, stats, gms))


def summary(labels: Sequence[HeadLabel], groups: Sequence[GroupLabel] = ()) -> dict[str, Any]:
    """Counts and mean quality of a model's labels, for the CLI."""
    scores = [lb.score for lb in labels]
    return {
        "labels": len(labels),
        "heads_labelled": len({lb.head for lb in labels}),
        "concepts": len({lb.wnid for lb in labels}),
        "probe": sum(lb.method == "probe" for lb in labels),
        "propagated": sum(lb.method == "propagated" for lb in labels),
        "mean_score": float(np.mean(scores)) if scores else 0.0,
        "mean_precision": float(np.mean([lb.precision for lb in labels])) if labels else 0.0,
        "mean_recall": float(np.mean([lb.recall for lb in labels])) if labels else 0.0,
        "groups": len(groups),
        "mean_group_score": float(np.mean([g.score for g in groups])) if groups else 0.0,
    }
