"""The one head-combination rule, shared by selection (simulated on stored probe logits) and
inference (real model outputs). Pure numpy/scipy, no I/O.

The rule, exactly (K task classes, N images):

1. Per model m, a temperature-calibrated softmax over ALL of its heads:
   ``p_m = softmax(logits_m / T_m)`` (``T_m`` from ``params.temperatures``, 1.0 when absent).
   Closed-set experts put their whole mass on their own heads even for images they never saw;
   we keep that (no renormalisation over the heads in use) because the selection simulates
   exactly this behaviour on probe images of every task class.
2. Group evidence: ``g = sum of p_m[:, h] for h in group.heads`` (descendant heads are summed,
   e.g. sandal + sneaker + boot = footwear).
3. Class evidence ``s_c``: one group -> ``g`` itself; several groups -> the label-quality
   weighted mean ``sum_j q_j g_j / sum_j q_j`` (plain mean when every ``q_j`` is 0).
   An uncovered class with ``extra_evidence[c]`` (a fallback's (N,) evidence in [0, 1]) uses
   that vector as ``s_c``.
4. Class score ``z_c = weights[c] * log(s_c + EPS) + biases[c]``.
   A class with no evidence at all (uncovered, no extra evidence) gets the constant
   ``UNCOVERED_SCORE`` (-1000), far below any covered score (the lowest default covered
   score is ``log(EPS) + log(QUALITY_FLOOR)``, about -18.4), so it never wins.
5. Class probabilities ``softmax_c(z)``; a prediction is ``argmax`` (first index on ties).

Out of domain (``in_domain``, inference only: :mod:`mllgraph.combine.domain`): on an image a
model's domain profile refuses, that model's groups drop out of step 3's mean; a covered class
left with no group on the image has no evidence for it: ``s_c = 0``. (Not the offline floor
of uncovered classes: that would outweigh a real but small probability of another class, e.g.
an ImageNet expert's "coffee mug" on a photo a Fashion expert refused.)

``HeadGroup.kind`` ("exact", "descendants", "ancestor", "related", "declared") is descriptive
only: the rule never looks at it; ancestor/related discounts are expected inside
``label_score``, and a declared group's ``label_score`` is its prior.

Parameter-free default (:func:`default_params`): ``weights[c] = 1`` and
``biases[c] = log(max(q_c, QUALITY_FLOOR))`` with ``q_c`` the mean label score of the class's
groups, i.e. ``prob_c ∝ q_c * s_c``: evidence from a poorly labelled head counts less.
Uncovered classes get weight 1 and bias 0 (used only when a fallback supplies evidence).
:func:`fit_params` refits weights, biases (and optionally temperatures) on probe data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mllgraph.combine.softmax import EPS, model_probabilities, shifted_exp
from mllgraph.errors import InvalidArgument

UNCOVERED_SCORE = -1000.0
# Total constant evidence the uncovered classes share when nothing better is known
# (mllgraph.reuse.vlm's offline fallback; the ConSE patch adds its evidence on top of it).
FALLBACK_EVIDENCE = 0.05
QUALITY_FLOOR = 0.01
# "declared": heads that cover a class only by what they declare (their quality a prior,
# not measured); the rule treats them like any other group.
KINDS = ("exact", "descendants", "ancestor", "related", "declared")
# Bounds keep fitted parameters meaningful: a weight <= 0 would invert the evidence.
_WEIGHT_BOUNDS = (1e-3, 100.0)
_LOG_TEMPERATURE_BOUNDS = (math.log(0.05), math.log(20.0))


def fallback_evidence(n: int, uncovered: Sequence[int]) -> dict[int, np.ndarray]:
    """The offline floor: FALLBACK_EVIDENCE / U for every uncovered class, as `extra_evidence`.

    Inference always gives uncovered classes at least this (mllgraph.reuse.vlm, conse), so
    selection fits and estimates a plan with it too: the same rule on both sides."""
    if not uncovered:
        return {}
    value = floor_evidence(len(uncovered))
    return {int(c): np.full(n, value) for c in uncovered}


def floor_evidence(num_uncovered: int) -> float:
    """The constant evidence each of `num_uncovered` uncovered classes gets offline."""
    return FALLBACK_EVIDENCE / num_uncovered


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(mapping, Mapping):
        raise InvalidArgument(f"{where} must be an object, got {type(mapping).__name__}")
    if key not in mapping:
        raise InvalidArgument(f"{where}.{key} is missing")
    return mapping[key]


@dataclass(frozen=True)
class HeadGroup:
    """Heads of ONE model whose probabilities are summed as evidence for one class."""

    model_id: str
    heads: tuple[int, ...]
    kind: str
    label_score: float

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, str) or not self.model_id:
            raise InvalidArgument("HeadGroup.model_id must be a non-empty string")
        heads = tuple(self.heads)
        if not heads:
            raise InvalidArgument(f"HeadGroup.heads is empty (model {self.model_id!r})")
        for h in heads:
            if isinstance(h, bool) or not isinstance(h, int | np.integer) or h < 0:
                raise InvalidArgument(
                    f"HeadGroup.heads has {h!r} (model {self.model_id!r}); "
                    "heads are non-negative integers"
                )
        if len(set(heads)) != len(heads):
            raise InvalidArgument(f"HeadGroup.heads has duplicates: {heads} ({self.model_id!r})")
        if self.kind not in KINDS:
            raise InvalidArgument(f"HeadGroup.kind is {self.kind!r}; expected one of {KINDS}")
        score = float(self.label_score)
        if not (0.0 <= score <= 1.0):
            raise InvalidArgument(
                f"HeadGroup.label_score is {self.label_score!r} (model {self.model_id!r}); "
                "expected a number in [0, 1]"
            )
        # Sorted plain ints: equal groups compare and hash equal, and JSON is stable.
        object.__setattr__(self, "heads", tuple(sorted(int(h) for h in heads)))
        object.__setattr__(self, "label_score", score)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "heads": list(self.heads),
            "kind": self.kind,
            "label_score": self.label_score,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HeadGroup:
        heads = _require(d, "heads", "HeadGroup")
        if not isinstance(heads, list | tuple):
            raise InvalidArgument("HeadGroup.heads must be a list of integers")
        return cls(
            model_id=_require(d, "model_id", "HeadGroup"),
            heads=tuple(heads),
            kind=_require(d, "kind", "HeadGroup"),
            label_score=_require(d, "label_score", "HeadGroup"),
        )


@dataclass(frozen=True)
class ClassAssignment:
    """The head groups covering task class ``class_index``; no groups = uncovered."""

    class_index: int
    groups: tuple[HeadGroup, ...] = ()

    def __post_init__(self) -> None:
        ci = self.class_index
        if isinstance(ci, bool) or not isinstance(ci, int | np.integer) or ci < 0:
            raise InvalidArgument(f"ClassAssignment.class_index is {ci!r}; expected an int >= 0")
        groups = tuple(self.groups)
        for g in groups:
            if not isinstance(g, HeadGroup):
                raise InvalidArgument(
                    f"ClassAssignment.groups of class {ci} holds a {type(g).__name__}"
                )
        object.__setattr__(self, "class_index", int(ci))
        object.__setattr__(self, "groups", groups)

    @property
    def covered(self) -> bool:
        return bool(self.groups)

    @property
    def label_score(self) -> float:
        """Mean label score of the groups; 0 for an uncovered class."""
        if not self.groups:
            return 0.0
        return float(np.mean([g.label_score for g in self.groups]))

    def to_dict(self) -> dict[str, Any]:
        return {"class_index": self.class_index, "groups": [g.to_dict() for g in self.groups]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassAssignment:
        groups = _require(d, "groups", "ClassAssignment")
        if not isinstance(groups, list | tuple):
            raise InvalidArgument("ClassAssignment.groups must be a list")
        return cls(
            class_index=_require(d, "class_index", "ClassAssignment"),
            groups=tuple(HeadGroup.from_dict(g) for g in groups),
        )


def _float_vector(value: Any, name: str) -> np.ndarray:
    arr = np.array(value, dtype=np.float64)
    if arr.ndim != 1:
        raise InvalidArgument(f"{name} must be a 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InvalidArgument(f"{name} has non-finite values")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class CombinationParams:
    """Per-model temperatures and per-class weights/biases of the combination rule."""

    temperatures: dict[str, float]
    weights: np.ndarray
    biases: np.ndarray
    fitted: bool = False

    def __post_init__(self) -> None:
        temps: dict[str, float] = {}
        for model_id in sorted(self.temperatures):
            t = float(self.temperatures[model_id])
            if not (math.isfinite(t) and t > 0):
                raise InvalidArgument(
                    f"CombinationParams.temperatures[{model_id!r}] is {t}; expected > 0"
                )
            temps[model_id] = t
        weights = _float_vector(self.weights, "CombinationParams.weights")
        biases = _float_vector(self.biases, "CombinationParams.biases")
        if weights.shape != biases.shape:
            raise InvalidArgument(
                f"CombinationParams.weights has {weights.size} entries but biases has {biases.size}"
            )
        object.__setattr__(self, "temperatures", temps)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "biases", biases)
        object.__setattr__(self, "fitted", bool(self.fitted))

    @property
    def num_classes(self) -> int:
        return int(self.weights.size)

    def temperature(self, model_id: str) -> float:
        return self.temperatures.get(model_id, 1.0)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CombinationParams):
            return NotImplemented
        return (
            self.temperatures == other.temperatures
            and np.array_equal(self.weights, other.weights)
            and np.array_equal(self.biases, other.biases)
            and self.fitted == other.fitted
        )

    __hash__ = None  # type: ignore[assignment]  # holds arrays: not hashable

    def to_dict(self) -> dict[str, Any]:
        return {
            "temperatures": dict(self.temperatures),
            "weights": [float(x) for x in self.weights],
            "biases": [float(x) for x in self.biases],
            "fitted": self.fitted,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CombinationParams:
        temps = _require(d, "temperatures", "CombinationParams")
        if not isinstance(temps, Mapping):
            raise InvalidArgument("CombinationParams.temperatures must be an object")
        return cls(
            temperatures=dict(temps),
            weights=np.asarray(_require(d, "weights", "CombinationParams"), dtype=np.float64),
            biases=np.asarray(_require(d, "biases", "CombinationParams"), dtype=np.float64),
            fitted=bool(d.get("fitted", False)),
        )


# ---------------------------------------------------------------------------------------------
# Building blocks. The solver (chco.py) calls these same functions so that its simulated
# scores are bit-for-bit the ones `combine` produces.


def softmax_row_stats(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Each row's maximum of logits / T and its sum of exp(logits / T - max); (N, 2) float64.

    The softmax is row-wise, so these computed once on all of a model's probe rows give any
    subset of rows, and any heads, the very values `model_probabilities` would: see
    `group_evidence_from_stats`."""
    a, m = shifted_exp(logits, temperature)
    return np.stack([m, a.sum(axis=1)], axis=1)


def group_evidence_from_stats(
    logits: np.ndarray, stats: np.ndarray, heads: Sequence[int], temperature: float = 1.0
) -> np.ndarray:
    """`group_evidence(model_probabilities(logits, T), heads)`, bit for bit, reading only the
    group's columns: `stats` are `softmax_row_stats` of the same rows at the same T."""
    cols = np.asarray(logits[:, list(heads)], dtype=np.float64) / float(temperature)
    cols -= stats[:, 0:1]
    np.exp(cols, out=cols)
    cols /= stats[:, 1:2]
    if len(heads) == 1:
        return cols[:, 0].copy()
    return cols.sum(axis=1)


def head_probabilities_from_stats(
    logits: np.ndarray, stats: np.ndarray, heads: Sequence[int], temperature: float = 1.0
) -> np.ndarray:
    """(len(heads), N): row j is `group_evidence_from_stats(logits, stats, [heads[j]], T)`,
    bit for bit (the same element-wise float ops), from one gather and one exp for all."""
    cols = np.asarray(logits[:, list(heads)], dtype=np.float64) / float(temperature)
    cols -= stats[:, 0:1]
    np.exp(cols, out=cols)
    cols /= stats[:, 1:2]
    return np.ascontiguousarray(cols.T)


def group_evidence(probs: np.ndarray, heads: Sequence[int]) -> np.ndarray:
    """Sum of the group's head probabilities; (N,)."""
    if len(heads) == 1:
        return probs[:, heads[0]].copy()
    return probs[:, list(heads)].sum(axis=1)


def _mean_weights(label_scores: Sequence[float]) -> np.ndarray:
    """Weights of the label-quality-weighted mean (plain mean when all scores are 0)."""
    q = np.asarray(label_scores, dtype=np.float64)
    if q.sum() <= 0:
        q = np.ones_like(q)
    return q / q.sum()


def _group_weights(groups: Sequence[HeadGroup]) -> np.ndarray:
    if len(groups) == 1:
        return np.ones(1)
    return _mean_weights([g.label_score for g in groups])


def class_evidence(evidence: Sequence[np.ndarray], label_scores: Sequence[float]) -> np.ndarray:
    """Label-quality-weighted mean of group evidences (one group: itself, exactly)."""
    if len(evidence) == 1:
        return evidence[0]
    return np.tensordot(_mean_weights(label_scores), np.stack(evidence), axes=1)


def score_column(s: np.ndarray, weight: float, bias: float) -> np.ndarray:
    """``weight * log(s + EPS) + bias`` for one class; (N,)."""
    return weight * np.log(s + EPS) + bias


def softmax_rows(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax (numerically stable)."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _check_assignment(assignment: Sequence[ClassAssignment]) -> list[ClassAssignment]:
    """Return the assignment ordered by class index; it must cover 0..K-1 exactly once."""
    if not assignment:
        raise InvalidArgument("assignment is empty: a task needs at least one class")
    ordered = sorted(assignment, key=lambda a: a.class_index)
    indexes = [a.class_index for a in ordered]
    if indexes != list(range(len(ordered))):
        raise InvalidArgument(
            f"assignment must list each class index 0..{len(ordered) - 1} exactly once, "
            f"got {indexes}"
        )
    return ordered


def _check_logits(
    logits_by_model: Mapping[str, np.ndarray], assignment: Sequence[ClassAssignment]
) -> int:
    """Check every referenced model has 2-D finite logits with in-range heads; return N."""
    n: int | None = None
    for a in assignment:
        for g in a.groups:
            if g.model_id not in logits_by_model:
                raise InvalidArgument(
                    f"class {a.class_index} uses model {g.model_id!r}, which has no logits"
                )
            arr = np.asarray(logits_by_model[g.model_id])
            if arr.ndim != 2:
                raise InvalidArgument(
                    f"logits of model {g.model_id!r} must be (N, H), got shape {arr.shape}"
                )
            if max(g.heads) >= arr.shape[1]:
                raise InvalidArgument(
                    f"class {a.class_index}: head {max(g.heads)} out of range for model "
                    f"{g.model_id!r} with {arr.shape[1]} heads"
                )
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                raise InvalidArgument(
                    f"logits of model {g.model_id!r} have {arr.shape[0]} rows, others {n}"
                )
    if n is None:  # nothing covered: take N from any logits given
        for arr in logits_by_model.values():
            return int(np.asarray(arr).shape[0])
        return 0
    return n


def _class_evidence_matrix(
    logits_by_model: Mapping[str, np.ndarray],
    assignment: Sequence[ClassAssignment],
    temperatures: Mapping[str, float],
    n: int,
    in_domain: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """(K, N) class evidence s, one contiguous row per class; NaN rows for uncovered classes.

    Rows (not columns) so every class's log() runs on contiguous memory, exactly as in the
    solver's precomputed score vectors: identical float ops give bit-identical scores.
    """
    probs: dict[str, np.ndarray] = {}
    s = np.full((len(assignment), n), np.nan)
    for a in assignment:
        if not a.groups:
            continue
        ev = []
        for g in a.groups:
            if g.model_id not in probs:
                probs[g.model_id] = model_probabilities(
                    logits_by_model[g.model_id], temperatures.get(g.model_id, 1.0)
                )
            ev.append(group_evidence(probs[g.model_id], g.heads))
        scores = [g.label_score for g in a.groups]
        masks = [None if in_domain is None else in_domain.get(g.model_id) for g in a.groups]
        if all(m is None for m in masks):
            s[a.class_index] = class_evidence(ev, scores)  # the exact path selection simulates
        else:
            s[a.class_index] = _in_domain_evidence(ev, scores, masks)
    return s


def _in_domain_evidence(
    evidence: Sequence[np.ndarray],
    label_scores: Sequence[float],
    masks: Sequence[np.ndarray | None],
) -> np.ndarray:
    """`class_evidence` over the groups whose model accepts each image; 0 where none does."""
    n = evidence[0].shape[0]
    w = _mean_weights(label_scores)[:, None] * np.stack(
        [np.ones(n, bool) if m is None else np.asarray(m, bool) for m in masks]
    )
    total = w.sum(axis=0)
    return np.divide((w * np.stack(evidence)).sum(axis=0), total, out=np.zeros(n), where=total > 0)


def class_scores(
    logits_by_model: Mapping[str, np.ndarray],
    assignment: Sequence[ClassAssignment],
    params: CombinationParams,
    *,
    extra_evidence: Mapping[int, np.ndarray] | None = None,
    in_domain: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Pre-softmax class scores z (N, K) of the rule in the module docstring.

    ``in_domain`` maps a model to an (N,) bool mask of the images it may speak about (models
    not in it: every image)."""
    ordered = _check_assignment(assignment)
    k = len(ordered)
    if params.num_classes != k:
        raise InvalidArgument(
            f"params have {params.num_classes} class weights but the assignment has {k} classes"
        )
    n = _check_logits(logits_by_model, ordered)
    extra = {int(c): np.asarray(e, dtype=np.float64) for c, e in (extra_evidence or {}).items()}
    if n == 0 and extra and not any(a.groups for a in ordered):
        n = next(iter(extra.values())).shape[0]  # nothing covered: N comes from the fallback
    for c, arr in extra.items():
        if not (0 <= c < k):
            raise InvalidArgument(f"extra_evidence has class {c}, outside 0..{k - 1}")
        if ordered[c].groups:
            raise InvalidArgument(
                f"extra_evidence given for class {c}, which is covered by heads; "
                "fallback evidence is only for uncovered classes"
            )
        if arr.shape != (n,) or not np.all(np.isfinite(arr)):
            raise InvalidArgument(f"extra_evidence[{c}] must be a finite ({n},) vector")
        if np.any(arr < 0):
            raise InvalidArgument(f"extra_evidence[{c}] has negative values")
    for mid, mask in (in_domain or {}).items():
        if np.shape(mask) != (n,):
            raise InvalidArgument(f"in_domain[{mid!r}] must be a ({n},) mask")
    # Only models that refuse some image change anything (checked once, not per class).
    refusing = {m: v for m, v in (in_domain or {}).items() if not np.all(v)}
    s = _class_evidence_matrix(logits_by_model, ordered, params.temperatures, n, refusing)
    z = np.full((n, k), UNCOVERED_SCORE)
    for c in range(k):
        if ordered[c].groups:
            z[:, c] = score_column(s[c], params.weights[c], params.biases[c])
        elif c in extra:
            z[:, c] = score_column(extra[c], params.weights[c], params.biases[c])
    return z


def combine(
    logits_by_model: Mapping[str, np.ndarray],
    assignment: Sequence[ClassAssignment],
    params: CombinationParams,
    *,
    extra_evidence: Mapping[int, np.ndarray] | None = None,
    in_domain: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Class probabilities (N, K) by the rule in the module docstring.

    ``extra_evidence`` maps an UNCOVERED class index to a fallback's (N,) evidence;
    ``in_domain`` a model to the images it may speak about (see `class_scores`).
    """
    return softmax_rows(
        class_scores(
            logits_by_model,
            assignment,
            params,
            extra_evidence=extra_evidence,
            in_domain=in_domain,
        )
    )


def default_params(
    assignment: Sequence[ClassAssignment], temperatures: Mapping[str, float] | None = None
) -> CombinationParams:
    """The parameter-free rule: weight 1, bias log(max(mean label score, QUALITY_FLOOR))."""
    ordered = _check_assignment(assignment)
    weights = np.ones(len(ordered))
    biases = np.array(
        [math.log(max(a.label_score, QUALITY_FLOOR)) if a.groups else 0.0 for a in ordered]
    )
    return CombinationParams(dict(temperatures or {}), weights, biases, fitted=False)


# ---------------------------------------------------------------------------------------------
# Metrics.


def _check_labels(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs)
    y = np.asarray(labels)
    if p.ndim != 2:
        raise InvalidArgument(f"probs must be (N, K), got shape {p.shape}")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise InvalidArgument(f"labels must be ({p.shape[0]},), got shape {y.shape}")
    if y.size == 0:
        raise InvalidArgument("labels is empty: accuracy needs at least one image")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]:
        raise InvalidArgument(f"labels must be integers in 0..{p.shape[1] - 1}")
    return p, y


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of images whose argmax class (first index on ties) is the label."""
    p, y = _check_labels(probs, labels)
    return float(np.mean(p.argmax(axis=1) == y))


def per_class_accuracy(probs: np.ndarray, labels: np.ndarray) -> list[float]:
    """Recall per class; NaN for a class without images."""
    p, y = _check_labels(probs, labels)
    hit = p.argmax(axis=1) == y
    k = p.shape[1]
    total = np.bincount(y, minlength=k)
    correct = np.bincount(y, weights=hit, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return [float(x) for x in np.where(total > 0, correct / np.maximum(total, 1), np.nan)]


def balanced_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean per-class recall over the classes that have images."""
    per = np.array(per_class_accuracy(probs, labels))
    return float(np.nanmean(per))


# ---------------------------------------------------------------------------------------------
# Fitting.


@dataclass
class _FitData:
    """Everything the fit objective needs, precomputed once."""

    covered: np.ndarray  # (Kc,) class indexes covered
    y: np.ndarray  # (n,) labels of the images used, as positions in `covered`
    rows: np.ndarray  # (n,) image rows used
    onehot: np.ndarray  # (n, Kc)
    uncovered_scores: np.ndarray  # (U,) constant scores of the uncovered classes, in the softmax
    models: list[str]  # models whose temperature is fitted
    logits: dict[str, np.ndarray] = field(default_factory=dict)  # (n, H) rows used


def fit_params(
    logits_by_model: Mapping[str, np.ndarray],
    labels: np.ndarray,
    assignment: Sequence[ClassAssignment],
    base_params: CombinationParams,
    *,
    l2: float = 1e-2,
    iters: int = 200,
    fit_temperatures: bool = False,
    uncovered_evidence: float | None = None,
) -> CombinationParams:
    """Fit per-class weights and biases (and optionally per-model temperatures) on probes.

    Minimises mean cross-entropy of :func:`combine` + ``l2 * ||theta - theta_base||^2`` with
    L-BFGS-B (deterministic). Temperatures are fitted in log space. Images whose label is an
    uncovered class are left out: no parameter here can make them right. Uncovered classes
    keep their base weight/bias and stay in the softmax: at ``uncovered_evidence``, the
    constant evidence inference gives them (the offline floor, `fallback_evidence`), else at
    ``UNCOVERED_SCORE``. Fitting without the floor that inference applies would let the
    covered classes' biases sink below it unnoticed, and the floor would then take every
    image. Returns params with ``fitted=True``.
    """
    ordered = _check_assignment(assignment)
    k = len(ordered)
    if base_params.num_classes != k:
        raise InvalidArgument(
            f"base_params have {base_params.num_classes} classes, the assignment has {k}"
        )
    if not (math.isfinite(l2) and l2 >= 0):
        raise InvalidArgument(f"l2 is {l2}; expected a number >= 0")
    if iters < 1:
        raise InvalidArgument(f"iters is {iters}; expected >= 1")
    n = _check_logits(logits_by_model, ordered)
    y_all = np.asarray(labels)
    if y_all.ndim != 1 or y_all.shape[0] != n:
        raise InvalidArgument(f"labels must be ({n},), got shape {y_all.shape}")
    if y_all.size and (y_all.min() < 0 or y_all.max() >= k):
        raise InvalidArgument(f"labels must be integers in 0..{k - 1}")
    covered = np.array([a.class_index for a in ordered if a.groups], dtype=np.int64)
    pos = np.full(k, -1)
    pos[covered] = np.arange(covered.size)
    rows = np.flatnonzero(pos[y_all] >= 0) if y_all.size else np.zeros(0, dtype=np.int64)
    if rows.size == 0:
        raise InvalidArgument("fit_params needs probe images of at least one covered class")
    y = pos[y_all[rows]]
    models = sorted({g.model_id for a in ordered for g in a.groups})
    data = _FitData(
        covered=covered,
        y=y,
        rows=rows,
        onehot=np.eye(covered.size)[y],
        uncovered_scores=np.array(
            [
                UNCOVERED_SCORE
                if uncovered_evidence is None
                else float(
                    score_column(
                        np.float64(uncovered_evidence),
                        base_params.weights[a.class_index],
                        base_params.biases[a.class_index],
                    )
                )
                for a in ordered
                if not a.groups
            ],
            dtype=np.float64,
        ),
        models=models if fit_temperatures else [],
        logits={m: np.asarray(logits_by_model[m], dtype=np.float64)[rows] for m in models},
    )
    w0 = base_params.weights[covered]
    b0 = base_params.biases[covered]
    u0 = np.array([math.log(base_params.temperature(m)) for m in data.models])
    theta0 = np.concatenate([w0, b0, u0])
    base_temps = {m: base_params.temperature(m) for m in models}
    groups = [ordered[c].groups for c in covered]
    fixed_log_s = None
    if not fit_temperatures:
        fixed_log_s = np.log(
            _class_evidence_matrix(data.logits, ordered, base_temps, rows.size)[covered].T + EPS
        )

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        return _fit_objective(theta, theta0, l2, data, groups, base_temps, fixed_log_s)

    bounds = (
        [_WEIGHT_BOUNDS] * covered.size
        + [(None, None)] * covered.size
        + [_LOG_TEMPERATURE_BOUNDS] * len(data.models)
    )
    from scipy.optimize import minimize  # here: reading a stored plan needs no optimiser

    res = minimize(
        objective,
        theta0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": int(iters)},
    )
    theta = res.x
    kc = covered.size
    weights = base_params.weights.copy()
    biases = base_params.biases.copy()
    weights[covered] = theta[:kc]
    biases[covered] = theta[kc : 2 * kc]
    temps = dict(base_params.temperatures)
    for i, m in enumerate(data.models):
        temps[m] = float(math.exp(theta[2 * kc + i]))
    return CombinationParams(temps, weights, biases, fitted=True)


def _fit_objective(
    theta: np.ndarray,
    theta0: np.ndarray,
    l2: float,
    data: _FitData,
    groups: list[tuple[HeadGroup, ...]],
    base_temps: Mapping[str, float],
    fixed_log_s: np.ndarray | None,
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy + L2 to theta0, and its analytic gradient."""
    kc = data.covered.size
    n = data.rows.size
    w = theta[:kc]
    b = theta[kc : 2 * kc]
    temps = dict(base_temps)
    for i, m in enumerate(data.models):
        temps[m] = math.exp(theta[2 * kc + i])

    # Forward: model softmaxes (kept for the temperature gradient), class evidence, scores.
    probs: dict[str, np.ndarray] = {}
    scaled: dict[str, np.ndarray] = {}
    if fixed_log_s is None:
        s = np.empty((n, kc))
        for j, gs in enumerate(groups):
            ev = []
            for g in gs:
                if g.model_id not in probs:
                    scaled[g.model_id] = data.logits[g.model_id] / temps[g.model_id]
                    probs[g.model_id] = model_probabilities(
                        data.logits[g.model_id], temps[g.model_id]
                    )
                ev.append(group_evidence(probs[g.model_id], g.heads))
            s[:, j] = class_evidence(ev, [g.label_score for g in gs])
        log_s = np.log(s + EPS)
    else:
        s = None
        log_s = fixed_log_s
    z = log_s * w + b
    # Uncovered classes stay in the softmax at the constant score.
    zmax = z.max(axis=1, keepdims=True)
    if data.uncovered_scores.size:
        zmax = np.maximum(zmax, data.uncovered_scores.max())
    e = np.exp(z - zmax)
    denom = e.sum(axis=1, keepdims=True)
    if data.uncovered_scores.size:
        denom += np.exp(data.uncovered_scores[None, :] - zmax).sum(axis=1, keepdims=True)
    log_p = z - zmax - np.log(denom)
    loss = -float(np.mean(log_p[np.arange(n), data.y]))
    diff = theta - theta0
    loss += l2 * float(diff @ diff)

    dz = (e / denom - data.onehot) / n  # dLoss/dz, (n, Kc)
    grad = np.empty_like(theta)
    grad[:kc] = (dz * log_s).sum(axis=0)
    grad[kc : 2 * kc] = dz.sum(axis=0)
    if data.models:
        assert s is not None
        dls = dz * w / (s + EPS)  # dLoss/ds_c
        gu = dict.fromkeys(data.models, 0.0)
        for j, gs in enumerate(groups):
            alpha = _group_weights(gs)
            for g, a_j in zip(gs, alpha, strict=True):
                p = probs[g.model_id]
                a = scaled[g.model_id]
                abar = (p * a).sum(axis=1)
                heads = list(g.heads)
                # d g / d log T = sum_h p_h (abar - a_h) over the group's heads.
                dg = (p[:, heads] * (abar[:, None] - a[:, heads])).sum(axis=1)
                gu[g.model_id] += a_j * float(dls[:, j] @ dg)
        grad[2 * kc :] = [gu[m] for m in data.models]
    grad += 2 * l2 * diff
    return loss, grad
