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
  expert mass sits on heads close to NO class can still hand the uncovered class a share near
  1, outbidding covered classes whose heads hold a real but modest mass.

Uncovered class c gets a floor plus the patch's evidence, ``floor + weight · m_c(x)``
(``p_conse`` under ``share``). Under ``share`` the floor is the rule's constant
``FALLBACK_EVIDENCE / U``; under ``mass`` it is the patch's own, calibrated with the weight:
the constant alone outbids any covered class whose heads hold less than ~6% of an expert's
mass, which a 1000-head ImageNet expert often does on a photo it still ranks right (photos-5's
flower: 0.4% on daisy and lady's slipper; its motorbike: 6% on moped), so it stole those.

Both are calibrated at selection (:func:`calibrate`) on the hub's probe images of the task's
COVERED classes (never on task images), measured with the plan's own scores: the floor is the
rule's constant unless that alone would take more than half of ``STEAL_RATE`` of the images
(then the largest floor that takes at most half), and the weight is the largest (at most 1) at
which uncovered classes take at most ``STEAL_RATE`` of them, floor included. The plan records
how (:class:`Calibration`): method ``probe images`` with the number of images and the measured
shares. Where the covered classes have fewer than ``MIN_CALIBRATION_IMAGES`` probe images
(e.g. declared ImageNet heads) the weight is 1: an uncovered class wins where the expert's
mass on its own heads (its nearest head counting fully) exceeds that on every covered
class's heads (times their quality). A covered class without probe images also caps the
floor at its noise level (:func:`noise_floor`): its evidence's ``NOISE_QUANTILE`` on the
hub's probe images of concepts that are none of the task's (method ``hub probes``, with
their number), so the floor wins only an image no such class explains better than it
explains images of other things; with no such images either, floor 0 (``structural``).

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
STRUCTURAL_FLOOR = 0.0
MIN_WEIGHT = 1e-3
MAX_HEADS = 100_000  # a plan's patch is refused beyond this (malformed or hostile JSON)
MASS, SHARE = "mass", "share"
EVIDENCE_RULES = (MASS, SHARE)
PROBE_IMAGES, HUB_PROBES = "probe images", "hub probes"
STRUCTURAL, UNCALIBRATED = "structural", "uncalibrated"
CALIBRATION_METHODS = (PROBE_IMAGES, HUB_PROBES, STRUCTURAL, UNCALIBRATED)
NOISE_QUANTILE = 1 - STEAL_RATE / 2  # a class's evidence on images of other concepts, at most


@dataclass(frozen=True)
class Calibration:
    """How a patch's weight was set, and what it was measured to take (module doc)."""

    method: str  # one of CALIBRATION_METHODS; "uncalibrated": a plan from before
    images: int = 0  # covered-class probe images it was measured on
    steal_share: float | None = None  # share of them an uncovered class takes at the weight
    floor_share: float | None = None  # ... the floor alone takes (weight -> 0)
    steal_rate: float = STEAL_RATE  # the target
    other_images: int = 0  # hub probe images of other concepts the floor was measured on

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "images": self.images,
            "other_images": self.other_images,
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
            images, other = int(d.get("images", 0)), int(d.get("other_images", 0))
            shares = [
                None if d.get(k) is None else float(d[k]) for k in ("steal_share", "floor_share")
            ]
            rate = float(d.get("steal_rate", STEAL_RATE))
        except (TypeError, ValueError) as e:
            raise InvalidArgument(
                f"the plan's patch: calibration images, shares and rate must be numbers "
                f"({type(e).__name__})"
            ) from e
        if min(images, other) < 0 or any(
            s is not None and not 0 <= s <= 1 for s in [*shares, rate]
        ):
            raise InvalidArgument(
                "the plan's patch: calibration images must be >= 0 and shares in [0, 1]"
            )
        return cls(str(d["method"]), images, shares[0], shares[1], rate, other)

    def describe(self) -> str:
        """One line for the CLI and ExplainSelection."""
        noise = (
            f"; floor: the covered classes' {NOISE_QUANTILE:.0%} evidence on "
            f"{self.other_images} hub probe image(s) of other concepts"
            if self.other_images
            else ""
        )
        if self.method == PROBE_IMAGES:
            text = (
                f"calibrated on {self.images} covered-class probe image(s): uncovered classes "
                f"take {self.steal_share:.1%} of them (target <= {self.steal_rate:.0%})"
            )
            if self.floor_share is not None and self.floor_share > self.steal_rate:
                text += f"; the floor alone takes {self.floor_share:.1%}"
            return text + noise
        if self.method in (HUB_PROBES, STRUCTURAL):
            return (
                f"{self.method}: {self.images} covered-class probe image(s) (< "
                f"{MIN_CALIBRATION_IMAGES}), so what it takes of them is not measured"
                + (noise or "; no floor")
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
    floor: float | None = None  # the uncovered classes' floor; None: the rule's constant / U

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
            "floor": self.floor,
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
        floor = d.get("floor")
        if floor is not None:
            try:
                floor = float(floor)
            except (TypeError, ValueError) as e:
                raise bad(f"floor must be a number or null ({type(e).__name__})") from e
            if not (math.isfinite(floor) and 0 <= floor <= 1):
                raise bad(f"floor must be in [0, 1], got {floor}")
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
            floor,
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
        """{uncovered class: floor + weight · evidence(class | x)} for the rule's
        extra_evidence (module doc)."""
        p = self.patch_evidence(logits)
        floor = self.floor if self.floor is not None else floor_evidence(max(len(uncovered), 1))
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


def evidence_needed(
    covered_scores: np.ndarray, uncovered: Sequence[int], weights: np.ndarray, biases: np.ndarray
) -> np.ndarray:
    """(N, U) the evidence each uncovered class needs to take each image: its score
    ``a_u log(e + EPS) + b_u`` beats ``Z = max_c z_c`` once ``e > exp((Z - b_u) / a_u) - EPS``.

    covered_scores: (N, K) the rule's scores z on covered-class images (uncovered columns
    ignored); weights/biases: the rule's per-class parameters."""
    unc = sorted({int(c) for c in uncovered})
    cov = [c for c in range(covered_scores.shape[1]) if c not in set(unc)]
    best = covered_scores[:, cov].max(axis=1, keepdims=True)
    with np.errstate(over="ignore"):
        return np.exp((best - biases[unc]) / weights[unc]) - EPS


def steal_thresholds(need: np.ndarray, patch_evidence: np.ndarray, floor: float) -> np.ndarray:
    """(N,) per image, the weight above which an uncovered class takes it: 0 where the floor
    alone takes it, inf where no weight does. need: (N, U) from :func:`evidence_needed`;
    patch_evidence: (N, U) what the weight multiplies, same columns."""
    gap = need - floor
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(
            gap < 0,
            0.0,
            np.where(patch_evidence > 0, gap / np.maximum(patch_evidence, 1e-300), np.inf),
        )
    return w.min(axis=1) if w.shape[1] else np.full(w.shape[0], np.inf)


def _largest_below(values: np.ndarray, allowed: int) -> float:
    """The largest x with at most `allowed` of `values` below it (just under the next one:
    a tie would go to the lower class index, whichever that is)."""
    if allowed >= values.size:
        return math.inf
    return float(np.sort(values)[allowed]) * (1 - 1e-9)


def noise_floor(other_scores: np.ndarray, classes: Sequence[int]) -> float | None:
    """The floor that no covered class loses to where it explains an image: the least, over
    `classes`, of the NOISE_QUANTILE of a class's evidence ``exp(z_c)`` on hub probe images of
    OTHER concepts (none of the task's); above that, its heads say something. None with
    fewer than MIN_CALIBRATION_IMAGES such images or no class."""
    cols = sorted({int(c) for c in classes})
    if other_scores.shape[0] < MIN_CALIBRATION_IMAGES or not cols:
        return None
    evidence = np.exp(other_scores[:, cols])
    return float(np.quantile(evidence, NOISE_QUANTILE, axis=0).min())


def calibrate(
    covered_scores: np.ndarray,
    patch_evidence: np.ndarray,
    uncovered: Sequence[int],
    weights: np.ndarray,
    biases: np.ndarray,
    steal_rate: float = STEAL_RATE,
    *,
    floor_cap: float | None = None,
    other_images: int = 0,
) -> tuple[float, float, Calibration]:
    """(weight, floor, calibration) from probe images of covered classes (module doc).

    The floor: the rule's constant (at most `floor_cap`: :func:`noise_floor` for covered
    classes without probe images, measured on `other_images`), unless that alone takes more
    than half of `steal_rate` of the images (then the largest that takes at most half); the
    weight: the largest in [MIN_WEIGHT, 1] at which uncovered classes take at most
    `steal_rate`, floor included. Fewer than MIN_CALIBRATION_IMAGES images: weight 1 and the
    floor `floor_cap` ("hub probes") or 0 ("structural"), unmeasured. patch_evidence: (N, K)
    what the weight multiplies; the rest as :func:`evidence_needed`."""
    n = int(covered_scores.shape[0])
    unc = sorted({int(c) for c in uncovered})
    if n < MIN_CALIBRATION_IMAGES or not unc:
        if floor_cap is None:
            return STRUCTURAL_WEIGHT, STRUCTURAL_FLOOR, Calibration(STRUCTURAL, images=n)
        calibration = Calibration(HUB_PROBES, images=n, other_images=other_images)
        return STRUCTURAL_WEIGHT, floor_cap, calibration
    need = evidence_needed(covered_scores, unc, weights, biases)
    floor_limit = _largest_below(need.min(axis=1), int(math.floor(steal_rate / 2 * n)))
    floor = (
        floor_evidence(len(unc)) if floor_cap is None else min(floor_cap, floor_evidence(len(unc)))
    )
    floor = max(0.0, min(floor, floor_limit))
    t = steal_thresholds(need, patch_evidence[:, unc], floor)
    weight = min(1.0, max(MIN_WEIGHT, _largest_below(t, int(math.floor(steal_rate * n)))))
    share, floor_share = float(np.mean(t < weight)), float(np.mean(t <= 0))
    calibration = Calibration(PROBE_IMAGES, n, share, floor_share, steal_rate, other_images)
    return weight, floor, calibration
