"""The ConSE patch: evidence for uncovered classes from a broad expert and class names (pure).

Without VLM weights, an uncovered class still gets real evidence instead of the constant
fallback: one broad expert of the hub (the model declaring the most concepts, e.g. an
ImageNet classifier) runs on the image, and its head probabilities ``p_t(x)`` (softmax at the
expert's temperature) are mapped to the task's class names by text similarity (ConSE,
Norouzi et al. 2014). ``S[t, k]`` is the cosine between "a photo of a {head label}" and "a
photo of a {class name}" from the text encoder, clipped at 0 and kept sparse (the heads
closest to each class). Two evidence rules exist:

- ``mass`` (plans made now): the expert's probability MASS on the heads that speak for the
  uncovered class, in the same currency as a covered class's evidence (its heads' summed
  probability). A head speaks for uncovered class u only where it is text-closer to u than to
  every covered class and no covered class of the plan uses it (:func:`never_steal_table`);
  ``S[:, u]`` is then scaled so u's nearest head counts 1::

      m_u(x) = Σ_{t ∈ top(x)} p_t(x) · S[t, u]          (in [0, 1])

  So an image the expert sees as a covered class (its mass on that class's heads, or on heads
  named like it) gives u nothing, and u wins only an image whose mass sits on u's own heads.
- ``share`` (plans from before; kept so they still load and classify as they did): the
  ConSE distribution normalised over the K classes, ``p_conse(k | x) = score_k / Σ_j
  score_j`` with ``score_k = Σ_{t ∈ top(x)} p_t(x) · S[t, k]``. Normalised, a photo whose
  expert mass sits on heads close to NO class still hands the uncovered class a share near 1:
  it outbid covered classes whose heads held a real but modest mass (photos-5's flower).

Uncovered class c gets the constant fallback's share plus the patch's evidence,
``FALLBACK_EVIDENCE / U + weight · m_c(x)`` (``p_conse`` under ``share``).

``weight`` is calibrated at selection (:func:`calibrate`) on the hub's probe images of the
task's COVERED classes (never on task images): the largest weight (at most 1) at which an
uncovered class takes at most ``STEAL_RATE`` of those images, measured with the plan's own
scores, the constant floor included. The plan records how (:class:`Calibration`): method
``probe images`` with the number of images and the measured share; ``structural`` where the
covered classes have fewer than ``MIN_CALIBRATION_IMAGES`` probe images (declared ImageNet
heads): weight 1, i.e. u's nearest head's mass counts as much as a covered class's heads'
mass, and the never-steal table alone keeps covered images from u (not measured).

Selection writes the patch into the plan's combination (``combination["patch"]``), so
inference needs neither Neo4j nor the text encoder: an inline plan carries it whole.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mllgraph.combine.rule import EPS, floor_evidence
from mllgraph.errors import InvalidArgument

TEMPLATE = "a photo of a {}"
TOP = 10  # head probabilities per image that vote (ConSE's T)
HEADS_PER_CLASS = 64  # similarities kept per class (the rest count as 0)
STEAL_RATE = 0.02  # the share of covered-class probe images uncovered classes may take at most
MIN_CALIBRATION_IMAGES = 20  # fewer covered-class probe images: the structural weight
DEFAULT_WEIGHT = 0.5  # the dataclass default; selection always sets a calibrated weight
STRUCTURAL_WEIGHT = 1.0
MIN_WEIGHT = 1e-3
MAX_HEADS = 100_000  # a plan's patch is refused beyond this (malformed or hostile JSON)
MASS, SHARE = "mass", "share"
EVIDENCE_RULES = (MASS, SHARE)
PROBE_IMAGES, STRUCTURAL, UNCALIBRATED = "probe images", "structural", "uncalibrated"
CALIBRATION_METHODS = (PROBE_IMAGES, STRUCTURAL, UNCALIBRATED)


@dataclass(frozen=True)
class Calibration:
    """How a patch's weight was set, and what it was measured to take (module doc)."""

    method: str  # one of CALIBRATION_METHODS; "uncalibrated": a plan from before
    images: int = 0  # covered-class probe images it was measured on
    steal_share: float | None = None  # share of them an uncovered class takes at the weight
    floor_share: float | None = None  # ... the constant floor alone takes (weight -> 0)
    steal_rate: float = STEAL_RATE  # the target

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "images": self.images,
            "steal_share": None if self.steal_share is None else round(self.steal_share, 4),
            "floor_share": None if self.floor_share is None else round(self.floor_share, 4),
            "steal_rate": self.steal_rate,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Calibration:
        if not isinstance(d, Mapping) or d.get("method") not in CALIBRATION_METHODS:
            raise InvalidArgument(
                f"the plan's patch: calibration.method must be one of {CALIBRATION_METHODS}"
            )
        try:
            images = int(d.get("images", 0))
            shares = [
                None if d.get(k) is None else float(d[k]) for k in ("steal_share", "floor_share")
            ]
            rate = float(d.get("steal_rate", STEAL_RATE))
        except (TypeError, ValueError) as e:
            raise InvalidArgument(
                f"the plan's patch: calibration images, shares and rate must be numbers "
                f"({type(e).__name__})"
            ) from e
        if images < 0 or any(s is not None and not 0 <= s <= 1 for s in [*shares, rate]):
            raise InvalidArgument(
                "the plan's patch: calibration images must be >= 0 and shares in [0, 1]"
            )
        return cls(str(d["method"]), images, shares[0], shares[1], rate)

    def describe(self) -> str:
        """One line for the CLI and ExplainSelection."""
        if self.method == PROBE_IMAGES:
            text = (
                f"calibrated on {self.images} covered-class probe image(s): uncovered classes "
                f"take {self.steal_share:.1%} of them (target <= {self.steal_rate:.0%})"
            )
            if self.floor_share is not None and self.floor_share > self.steal_rate:
                text += f"; the constant floor alone takes {self.floor_share:.1%}"
            return text
        if self.method == STRUCTURAL:
            return (
                f"structural weight: fewer than {MIN_CALIBRATION_IMAGES} covered-class probe "
                f"images ({self.images}), so the share it takes is not measured; it counts only "
                "heads closer to an uncovered class than to any covered one"
            )
        return "uncalibrated (a plan from before the steal calibration)"


@dataclass(frozen=True)
class ConsePatch:
    model_id: str
    temperature: float
    heads: tuple[int, ...]  # head indices with a kept similarity
    similarity: np.ndarray  # (len(heads), K) float, >= 0
    weight: float = DEFAULT_WEIGHT
    top: int = TOP
    model_version: str = ""
    rule: str = SHARE  # MASS or SHARE (module doc); a plan without one is from before: SHARE
    calibration: Calibration = Calibration(UNCALIBRATED)

    @property
    def num_classes(self) -> int:
        return int(self.similarity.shape[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": "conse",
            "evidence": self.rule,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "temperature": self.temperature,
            "top": self.top,
            "weight": self.weight,
            "calibration": self.calibration.to_dict(),
            "heads": list(self.heads),
            "similarity": [[round(float(v), 4) for v in row] for row in self.similarity],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], num_classes: int) -> ConsePatch:
        """Checked: anything malformed is InvalidArgument naming the field."""

        def bad(what: str) -> InvalidArgument:
            return InvalidArgument(f"the plan's patch: {what}")

        if not isinstance(d, Mapping) or d.get("rule") != "conse":
            raise bad("only rule 'conse' is known")
        mid = d.get("model_id")
        if not isinstance(mid, str) or not mid:
            raise bad("model_id must be a non-empty string")
        evidence = d.get("evidence", SHARE)  # absent: a plan from before the mass rule
        if evidence not in EVIDENCE_RULES:
            raise bad(f"evidence must be one of {EVIDENCE_RULES}, got {evidence!r}")
        heads, sim = d.get("heads"), d.get("similarity")
        if not isinstance(heads, list) or not isinstance(sim, list) or len(heads) != len(sim):
            raise bad("heads and similarity must be lists of the same length")
        if len(heads) > MAX_HEADS:
            raise bad(f"{len(heads)} heads, at most {MAX_HEADS}")
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 0 for h in heads):
            raise bad("heads must be non-negative integers")
        try:
            matrix = np.asarray(sim, dtype=np.float64).reshape(len(heads), num_classes)
            temperature, weight, top = float(d["temperature"]), float(d["weight"]), int(d["top"])
        except (TypeError, ValueError, KeyError) as e:
            raise bad(
                f"similarity must be {len(heads)} rows of {num_classes} numbers, and "
                f"temperature, weight, top numbers ({type(e).__name__})"
            ) from e
        if not np.all(np.isfinite(matrix)) or np.any(matrix < 0):
            raise bad("similarities must be finite and >= 0")
        if not (math.isfinite(temperature) and temperature > 0):
            raise bad(f"temperature must be > 0, got {temperature}")
        if not (math.isfinite(weight) and weight > 0):
            raise bad(f"weight must be > 0, got {weight}")
        if top < 1:
            raise bad(f"top must be >= 1, got {top}")
        raw_calibration = d.get("calibration")
        calibration = (
            Calibration(UNCALIBRATED)
            if raw_calibration is None
            else Calibration.from_dict(raw_calibration)
        )
        return cls(
            mid,
            temperature,
            tuple(heads),
            matrix,
            weight,
            top,
            str(d.get("model_version", "")),
            evidence,
            calibration,
        )

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """(N, K) ``Σ_{t ∈ top(x)} p_t(x) · S[t, k]`` from the broad expert's logits (N, H)."""
        z = np.asarray(logits, dtype=np.float64) / self.temperature
        if self.heads and max(self.heads) >= z.shape[1]:
            raise InvalidArgument(
                f"the plan's patch uses head {max(self.heads)} of {self.model_id}, which has "
                f"{z.shape[1]} heads: the plan is stale, select again"
            )
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        dense = np.zeros((z.shape[1], self.num_classes))
        dense[list(self.heads)] = self.similarity
        top = min(self.top, z.shape[1])
        idx = np.argpartition(-p, top - 1, axis=1)[:, :top]  # (N, top), any order
        rows = np.arange(len(p))[:, None]
        return np.einsum("nt,ntk->nk", p[rows, idx], dense[idx])

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """(N, K) p_conse, the ``share`` rule's normalised distribution; a row whose top heads
        are close to no class is all zeros."""
        scores = self.scores(logits)
        total = scores.sum(axis=1, keepdims=True)
        return np.divide(scores, total, out=np.zeros_like(scores), where=total > 0)

    def patch_evidence(self, logits: np.ndarray) -> np.ndarray:
        """(N, K) what ``weight`` multiplies: the mass ``m`` or the share ``p_conse``."""
        if self.rule == MASS:
            return np.clip(self.scores(logits), 0.0, 1.0)
        return self.probabilities(logits)

    def evidence(self, logits: np.ndarray, uncovered: Sequence[int]) -> dict[int, np.ndarray]:
        """{uncovered class: FALLBACK_EVIDENCE / U + weight · evidence(class | x)} for the
        rule's extra_evidence (module doc)."""
        p = self.patch_evidence(logits)
        floor = floor_evidence(max(len(uncovered), 1))
        return {int(c): floor + self.weight * p[:, c] for c in uncovered}


def similarity_table(
    class_vectors: np.ndarray, head_vectors: np.ndarray, per_class: int = HEADS_PER_CLASS
) -> tuple[tuple[int, ...], np.ndarray]:
    """Sparse S: the `per_class` heads closest to each class (cosines of L2-normalised rows,
    clipped at 0), as (head indices, (len, K) similarities; 0 where a head is not kept)."""
    cos = np.clip(head_vectors @ class_vectors.T, 0.0, None)  # (H, K)
    keep = np.zeros_like(cos, dtype=bool)
    n = min(per_class, cos.shape[0])
    for k in range(cos.shape[1]):
        keep[np.argpartition(-cos[:, k], n - 1)[:n], k] = True
    cos = np.where(keep, cos, 0.0)
    heads = np.flatnonzero(cos.max(axis=1) > 0)
    return tuple(int(h) for h in heads), cos[heads]


def never_steal_table(
    heads: Sequence[int],
    similarity: np.ndarray,
    uncovered: Sequence[int],
    covered_heads: Collection[int] = (),
    cosines: np.ndarray | None = None,
) -> tuple[tuple[int, ...], np.ndarray]:
    """The ``mass`` rule's table from :func:`similarity_table`'s (module doc).

    Head t keeps its similarity to uncovered class u only where no covered class uses it
    (`covered_heads`: the broad expert's heads in the plan's groups) and it is text-closer
    to u than to every covered class (by `cosines`, the full (len(heads), K) cosines, when
    given: the sparse table drops a head's similarity to a class it is not among the closest
    of); each uncovered column is then scaled so its nearest head counts 1. Covered columns
    are zero (the mass rule reads uncovered columns only) and heads left with nothing are
    dropped."""
    sim = np.asarray(similarity, dtype=np.float64)
    ref = sim if cosines is None else np.asarray(cosines, dtype=np.float64)
    k = sim.shape[1]
    unc = sorted({int(c) for c in uncovered})
    cov = [c for c in range(k) if c not in set(unc)]
    closest_covered = ref[:, cov].max(axis=1) if cov else np.zeros(len(heads))
    used = np.isin(np.asarray(heads, dtype=np.int64), np.fromiter(covered_heads, np.int64))
    out = np.zeros_like(sim)
    for u in unc:
        column = np.where(~used & (ref[:, u] > closest_covered), sim[:, u], 0.0)
        top = column.max(initial=0.0)
        if top > 0:
            out[:, u] = column / top
    kept = np.flatnonzero(out.max(axis=1, initial=0.0) > 0)
    return tuple(int(heads[i]) for i in kept), out[kept]


def steal_thresholds(
    covered_scores: np.ndarray,
    patch_evidence: np.ndarray,
    uncovered: Sequence[int],
    weights: np.ndarray,
    biases: np.ndarray,
) -> np.ndarray:
    """(N,) per covered-class image, the patch weight above which an uncovered class takes
    it: 0 where the constant floor alone takes it, inf where no weight <= any does.

    covered_scores: (N, K) the rule's scores z on those images (uncovered columns ignored);
    patch_evidence: (N, K) what the weight multiplies; weights/biases: the rule's per-class
    parameters. Uncovered class u's score ``a_u log(f + w e_u + EPS) + b_u`` beats ``Z =
    max_c z_c`` once ``w > (exp((Z - b_u) / a_u) - f - EPS) / e_u``."""
    unc = sorted({int(c) for c in uncovered})
    cov = [c for c in range(covered_scores.shape[1]) if c not in set(unc)]
    n = covered_scores.shape[0]
    if not unc or not cov or n == 0:
        return np.full(n, np.inf)
    best = covered_scores[:, cov].max(axis=1)
    floor = floor_evidence(len(unc))
    out = np.full(n, np.inf)
    for u in unc:
        with np.errstate(over="ignore"):
            need = np.exp((best - biases[u]) / weights[u]) - floor - EPS  # evidence u must add
        e = patch_evidence[:, u]
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(need < 0, 0.0, np.where(e > 0, need / np.maximum(e, 1e-300), np.inf))
        out = np.minimum(out, w)
    return out


def calibrate(
    covered_scores: np.ndarray,
    patch_evidence: np.ndarray,
    uncovered: Sequence[int],
    weights: np.ndarray,
    biases: np.ndarray,
    steal_rate: float = STEAL_RATE,
) -> tuple[float, Calibration]:
    """The patch's weight from probe images of covered classes, and what it takes there.

    The largest weight in [MIN_WEIGHT, 1] at which uncovered classes take at most
    `steal_rate` of the images (the floor's own takings included; where the floor alone
    takes more, MIN_WEIGHT, and the calibration says so). Fewer than MIN_CALIBRATION_IMAGES
    images: STRUCTURAL_WEIGHT, unmeasured. Arguments as :func:`steal_thresholds`."""
    n = int(covered_scores.shape[0])
    if n < MIN_CALIBRATION_IMAGES:
        return STRUCTURAL_WEIGHT, Calibration(STRUCTURAL, images=n)
    t = steal_thresholds(covered_scores, patch_evidence, uncovered, weights, biases)
    allowed = int(math.floor(steal_rate * n))  # images it may take
    limit = float(np.sort(t)[allowed]) if allowed < n else math.inf
    # Just under the (allowed + 1)-th smallest threshold: that image stays covered (a tie
    # would go to the lower class index, whichever it is).
    weight = min(1.0, max(MIN_WEIGHT, limit * (1 - 1e-9)))
    share = float(np.mean(t < weight))
    floor_share = float(np.mean(t <= 0))
    return weight, Calibration(PROBE_IMAGES, n, share, floor_share, steal_rate)
