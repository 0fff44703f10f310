"""The ConSE patch: evidence for uncovered classes from a broad expert and class names (pure).

Without VLM weights, an uncovered class still gets real evidence instead of the constant
fallback: one broad expert of the hub (the model declaring the most concepts, e.g. an
ImageNet classifier) runs on the image, and its top-``top`` head probabilities are mapped
to the task's class names by text similarity (ConSE, Norouzi et al. 2014):

    score_k(x) = Σ_{t ∈ top(x)} p_t(x) · S[t, k]        p_conse(k | x) = score_k / Σ_j score_j

where ``S[t, k]`` is the cosine between "a photo of a {head label}" and "a photo of a {class
name}" from the text encoder, clipped at 0 and kept sparse (the heads closest to each class).
Like the VLM patch, the distribution is over ALL K classes, so an image the broad expert sees
as a covered class gives the uncovered ones little. Uncovered class c gets the constant
fallback's share plus the patch's evidence, ``FALLBACK_EVIDENCE / U + weight · p_conse(c | x)``:
an uncovered class still wins an image no expert has evidence for (what the constant alone
does: on Fashion-MNIST's 28-pixel images an ImageNet expert's ConSE is close to noise), and
wins more where the broad expert recognises it (on photos).

``weight`` is calibrated at selection on the hub's probe images of the task's covered classes
(:func:`calibrate_weight`): the largest value at which the patch would take at most
``STEAL_RATE`` of the images the constant alone leaves to the covered classes, i.e. the patch
speaks only when the broad expert is surer than the experts are. Without probe images it is
:data:`DEFAULT_WEIGHT`.

Selection writes the patch into the plan's combination (``combination["patch"]``), so
inference needs neither Neo4j nor the text encoder: an inline plan carries it whole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mllgraph.combine.rule import floor_evidence
from mllgraph.errors import InvalidArgument

TEMPLATE = "a photo of a {}"
TOP = 10  # head probabilities per image that vote (ConSE's T)
HEADS_PER_CLASS = 64  # similarities kept per class (the rest count as 0)
STEAL_RATE = 0.05  # the share of covered probe images the patch may take at most
DEFAULT_WEIGHT = 0.5  # without probe images to calibrate on
MIN_WEIGHT = 1e-3
MAX_HEADS = 100_000  # a plan's patch is refused beyond this (malformed or hostile JSON)


@dataclass(frozen=True)
class ConsePatch:
    model_id: str
    temperature: float
    heads: tuple[int, ...]  # head indices with a kept similarity
    similarity: np.ndarray  # (len(heads), K) float, >= 0
    weight: float = DEFAULT_WEIGHT
    top: int = TOP
    model_version: str = ""

    @property
    def num_classes(self) -> int:
        return int(self.similarity.shape[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": "conse",
            "model_id": self.model_id,
            "model_version": self.model_version,
            "temperature": self.temperature,
            "top": self.top,
            "weight": self.weight,
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
        return cls(
            mid, temperature, tuple(heads), matrix, weight, top, str(d.get("model_version", ""))
        )

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """(N, K) p_conse from the broad expert's logits (N, H); a row whose top heads are
        close to no class is all zeros."""
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
        scores = np.einsum("nt,ntk->nk", p[rows, idx], dense[idx])
        total = scores.sum(axis=1, keepdims=True)
        return np.divide(scores, total, out=np.zeros_like(scores), where=total > 0)

    def evidence(self, logits: np.ndarray, uncovered: Sequence[int]) -> dict[int, np.ndarray]:
        """{uncovered class: FALLBACK_EVIDENCE / U + weight · p_conse(class | x)} for the
        rule's extra_evidence (module doc)."""
        p = self.probabilities(logits)
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


def calibrate_weight(
    covered_scores: np.ndarray, patch_probabilities: np.ndarray, uncovered: Sequence[int]
) -> float:
    """The patch's weight from probe images of covered classes (module doc).

    covered_scores: (N, K) the rule's pre-softmax scores z on those images (uncovered columns
    ignored); patch_probabilities: (N, K) p_conse on the same images. With the floor
    ``f = FALLBACK_EVIDENCE / U``, the patch takes image n when ``log(f + weight · p_u) >
    max_c z_c``, i.e. when weight exceeds ``(exp(max_c z_c) - f) / p_u``; images the floor
    takes anyway are left out, and the weight is the threshold's STEAL_RATE quantile over
    the rest."""
    unc = list(uncovered)
    cov = [c for c in range(covered_scores.shape[1]) if c not in set(unc)]
    if not unc or not cov or covered_scores.shape[0] == 0:
        return DEFAULT_WEIGHT
    floor = floor_evidence(len(unc))
    with np.errstate(over="ignore"):
        margin = np.exp(covered_scores[:, cov].max(axis=1)) - floor
    p = patch_probabilities[:, unc].max(axis=1)[margin > 0]
    margin = margin[margin > 0]
    if margin.size == 0:
        return DEFAULT_WEIGHT
    with np.errstate(divide="ignore", over="ignore"):
        threshold = np.where(p > 0, margin / np.maximum(p, 1e-300), np.inf)
    w = float(np.quantile(threshold, STEAL_RATE, method="lower"))  # no inf - inf
    return float(min(1.0, max(MIN_WEIGHT, w))) if math.isfinite(w) else 1.0
