"""What a plan's estimate rests on, class by class, and the measured evidence behind each
kind. Pure numpy: no I/O (`mllgraph.select.estimates` reads the graph and probe outputs).

A class's estimate is only as good as what was measured for it. Four kinds (`KINDS`):

* ``measured``: the class has probe images of its own concept (or below it); its estimate
  is what CHCO or the stacked rule scored on them (its recall).
* ``ancestor_images``: covered through an ancestor A that has probe images of its own
  (A itself probed, not only concepts under it): every image of the class is an image of A,
  so what CHCO scored on A's images (proxy probes) is measured evidence of this route
  ("slacks" on trouser images).
* ``ancestor``: covered through an ancestor whose images are all of other concepts under it,
  or through a related concept (a sibling or cousin), no probe images of its own. CHCO may
  have simulated it on those other concepts' images (proxy probes): that measures the head
  on *them*, not on this class (a clothing head scores 1.0 on clothing images, and says
  nothing of "umbrella"). Its estimate is the model's **ancestor-route
  calibration** (:func:`ancestor_route`), measured leave-one-concept-out on the hub's
  probed concepts.
* ``declared``: covered by declared, unmeasured heads. Its estimate is the model's
  **declared calibration** (:func:`declared_route`): how its declared heads fare on the
  probed concepts they declare, instead of one constant prior for every such class.
* ``uncovered``: no head covers it (the ConSE patch or the offline floor scores it). Without
  probe images of its own nothing was measured: not estimated, and counted at chance, 1/K,
  in the plan's estimate.

A model with no calibration of the kind a class needs borrows the hub's pooled one (every
calibrated model of the request, weighted by the concepts each rests on); with none at all,
the class is estimated at chance and says so.

The plan's overall estimate weighs each class by its probe images (measured classes) or by
the mean number of probe images of the measured classes (the others), as CHCO's prior credit
does (`chco.with_priors`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

KINDS = ("measured", "ancestor_images", "ancestor", "declared", "uncovered")
# Coverage kinds (plan/document.COVERAGES) whose estimate needs a route calibration.
ROUTE_OF_COVERAGE = {"ancestor": "ancestor", "related": "ancestor", "declared": "declared"}
MIN_LABEL_SCORE = 0.05  # as SelectOptions.min_label_score: a weaker label is no route


@dataclass(frozen=True)
class Calibration:
    """One route's measured accuracy: the mean over `concepts` probed concepts (resting on
    `images` probe images) of the share of each concept's images the route gets right."""

    accuracy: float
    concepts: int
    images: int

    def to_dict(self) -> dict[str, float | int]:
        return {"accuracy": self.accuracy, "concepts": self.concepts, "images": self.images}


@dataclass(frozen=True)
class ProbedConcept:
    """A probed concept as the calibration sees one model: its wnid, its strict ancestors,
    and the model's logits on the probe images at or under it (rows of `logits`)."""

    wnid: str
    ancestors: frozenset[str]
    rows: np.ndarray  # (n,) int: row numbers in the model's probe logits


def _mean(values: Sequence[tuple[float, int]]) -> Calibration | None:
    if not values:
        return None
    return Calibration(
        float(np.mean([v for v, _ in values])), len(values), int(sum(n for _, n in values))
    )


def _winners_without(
    logits: np.ndarray, winners: np.ndarray, heads: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(each image's winning head, and which heads may win) with `heads` taken out; only
    the images those heads won are argmaxed again."""
    keep = np.ones(logits.shape[1], dtype=bool)
    keep[list(heads)] = False
    if not heads:
        return winners, keep
    out = winners.copy()
    moved = np.flatnonzero(~keep[winners])
    if moved.size and keep.any():
        out[moved] = np.where(keep, logits[moved], -np.inf).argmax(axis=1)
    return out, keep


def _nested(c: ProbedConcept, d: ProbedConcept) -> bool:
    return c.wnid == d.wnid or c.wnid in d.ancestors or d.wnid in c.ancestors


def _task_winners(logits: np.ndarray, rows: np.ndarray, heads: set[int]) -> np.ndarray:
    """The winning head of each of `rows` among `heads` only: a task's rule compares the
    task's classes' heads, not every head of the model."""
    cols = np.asarray(sorted(heads), dtype=np.int64)
    return cols[logits[np.ix_(rows, cols)].argmax(axis=1)]


def ancestor_route(
    logits: np.ndarray,
    concepts: Sequence[ProbedConcept],
    own_heads: Mapping[str, Sequence[int]],
    min_score: float = MIN_LABEL_SCORE,
) -> Calibration | None:
    """Leave-one-concept-out accuracy of the ancestor route for one model.

    For each probed concept C: leave out C's images and the heads the model has for C (those
    declaring C or a concept under it, `own_heads[C]`: a class covered only through an
    ancestor has no head of its own). Its nearest ancestor A with other probe images (the
    smallest image set above C that is larger than C's, and not every image) gets the head
    labelling would put on A from those other images alone: the best F1 of "wins the image"
    against "is under A", as `label.measure` scores labels (at least `min_score`). C's
    images are then scored as a task would score them: that head for C against the own
    heads of the probed concepts not under A (a task's other classes: a class under A would
    block the ancestor route), and C's result is the share of its images that head wins.
    Concepts without such an ancestor, head or rival concept are not counted. None: no
    concept counted."""
    n_images, n_heads = logits.shape
    if n_images == 0 or n_heads == 0:
        return None
    parts: dict[str, list[np.ndarray]] = {}
    for d in concepts:
        for a in d.ancestors:
            parts.setdefault(a, []).append(d.rows)
    under = {a: np.unique(np.concatenate(rs)) for a, rs in parts.items()}
    all_winners = logits.argmax(axis=1)
    results: list[tuple[float, int]] = []
    for c in concepts:
        mine = np.unique(c.rows)
        sizes = {a: under[a].size for a in c.ancestors if a in under}
        fits = [a for a, n in sizes.items() if mine.size < n < n_images]
        if mine.size == 0 or not fits:
            continue
        nearest = min(fits, key=lambda a: (sizes[a], a))
        own = set(own_heads.get(c.wnid, ()))
        winners, keep = _winners_without(logits, all_winners, sorted(own))
        if not keep.any():
            continue
        rest = np.ones(n_images, dtype=bool)
        rest[mine] = False
        other = under[nearest][rest[under[nearest]]]
        wins = np.bincount(winners[rest], minlength=n_heads)
        hits = np.bincount(winners[other], minlength=n_heads)
        f1 = np.where(keep, 2 * hits / np.maximum(wins + other.size, 1), -1.0)
        head = int(np.argmax(f1))
        if f1[head] < min_score:
            continue
        rivals = (
            {
                h
                for d in concepts
                if not _nested(c, d) and nearest not in d.ancestors and d.wnid != nearest
                for h in own_heads.get(d.wnid, ())
            }
            - own
            - {head}
        )
        if not rivals:
            continue
        got = _task_winners(logits, mine, rivals | {head})
        results.append((float(np.mean(got == head)), int(mine.size)))
    return _mean(results)


def declared_route(
    logits: np.ndarray, concepts: Sequence[ProbedConcept], own_heads: Mapping[str, Sequence[int]]
) -> Calibration | None:
    """How one model's declared heads fare where the hub measured them, scored as a task
    would score them: for each probed concept C with heads declaring C or a concept under it
    (`own_heads[C]`), its images among the declared heads of every other probed concept
    that has some (neither above nor below C): the share of C's images one of C's heads
    wins. None: no probed concept has such heads and a rival."""
    results: list[tuple[float, int]] = []
    for c in concepts:
        heads = set(own_heads.get(c.wnid, ()))
        if c.rows.size == 0 or not heads:
            continue
        rivals = {
            h for d in concepts if not _nested(c, d) for h in own_heads.get(d.wnid, ())
        } - heads
        if not rivals:
            continue
        got = _task_winners(logits, c.rows, heads | rivals)
        results.append((float(np.isin(got, sorted(heads)).mean()), int(c.rows.size)))
    return _mean(results)


def pooled(calibrations: Sequence[Calibration | None]) -> Calibration | None:
    """Several models' calibrations of one route as one, weighted by their concepts."""
    found = [c for c in calibrations if c is not None and c.concepts > 0]
    if not found:
        return None
    concepts = sum(c.concepts for c in found)
    accuracy = math.fsum(c.accuracy * c.concepts for c in found) / concepts
    return Calibration(accuracy, concepts, sum(c.images for c in found))


@dataclass(frozen=True)
class ClassEvidence:
    """What one class's estimate rests on (the plan document's ``estimate_evidence``)."""

    kind: str  # one of KINDS
    estimate: float
    text: str
    model: str | None = None
    images: int = 0  # probe images the estimate rests on
    concepts: int = 0  # probed concepts a calibration rests on
    pooled: bool = False  # the hub's pooled calibration stood in for the model's

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "kind": self.kind,
            "estimate": self.estimate,
            "text": self.text,
            "images": self.images,
        }
        if self.model is not None:
            out["model"] = self.model
        if self.kind in ("ancestor", "declared"):
            out["concepts"] = self.concepts
            out["pooled"] = self.pooled
        return out


def class_evidence(
    *,
    k: int,
    coverage: str,
    own_images: int,
    measured_estimate: float | None,
    model: str | None,
    calibrations: Mapping[tuple[str, str], Calibration | None],
    pool: Mapping[str, Calibration | None],
    ancestor_images: tuple[int, str] | None = None,
) -> ClassEvidence:
    """One class's evidence and estimate. `coverage`: the plan's coverage of the class;
    `own_images`: its own probe images (not proxies); `measured_estimate`: what CHCO or the
    stacked rule scored on them; `model`: the model of its heads; `calibrations[(model,
    route)]` and `pool[route]`: the routes' calibrations ("ancestor", "declared");
    `ancestor_images`: (images, wnid) when its heads' ancestor concept has probe images of
    its own and `measured_estimate` was scored on them."""
    chance = 1.0 / k
    if own_images > 0 and measured_estimate is not None:
        return ClassEvidence(
            "measured",
            float(measured_estimate),
            f"measured on {own_images} probe images",
            model,
            own_images,
        )
    if coverage == "uncovered" or model is None:
        return ClassEvidence(
            "uncovered",
            chance,
            f"uncovered (the patch or the floor scores it), no probe images: not estimated; "
            f"the plan's estimate counts it at chance, 1/{k}",
        )
    if coverage == "ancestor" and ancestor_images and measured_estimate is not None:
        n, wnid = ancestor_images
        return ClassEvidence(
            "ancestor_images",
            float(measured_estimate),
            f"measured on {n} probe images of its ancestor {wnid} (its images are among them)",
            model,
            n,
        )
    route = ROUTE_OF_COVERAGE.get(coverage)
    if route is None:  # exact/descendants heads but no probe images of its own: a label prior
        route = "ancestor"
    own = calibrations.get((model, route))
    cal, is_pooled = (own, False) if own is not None else (pool.get(route), True)
    what = "ancestor route" if route == "ancestor" else f"declared heads of {model}"
    if cal is None:
        return ClassEvidence(
            route, chance, f"{what}: nothing measured of this kind, estimated at chance 1/{k}",
            model,
        )  # fmt: skip
    source = "the hub's calibrated models" if is_pooled else model
    if route == "ancestor":
        text = (
            f"ancestor route of {model}, calibrated on {cal.concepts} probed concepts of "
            f"{source} left out ({cal.images} images)"
        )
    else:
        text = (
            f"declared prior of {model}, calibrated on {cal.concepts} probed concepts its "
            f"declared heads were measured on ({cal.images} images"
            + (", the hub's pooled calibration)" if is_pooled else ")")
        )
    return ClassEvidence(
        route, max(cal.accuracy, chance), text, model, cal.images, cal.concepts, is_pooled
    )


def overall(evidence: Sequence[ClassEvidence]) -> tuple[float, float]:
    """(the plan's estimate, the share of it resting on the classes' own probe images): each
    measured class weighs its images, every other class the measured ones' mean count."""
    measured = [e for e in evidence if e.kind == "measured"]
    w = float(np.mean([e.images for e in measured])) if measured else 1.0
    weights = [float(e.images) if e.kind == "measured" else w for e in evidence]
    total = math.fsum(weights)
    if total <= 0:
        return float("nan"), 0.0
    estimate = math.fsum(x * e.estimate for x, e in zip(weights, evidence, strict=True)) / total
    share = math.fsum(x for x, e in zip(weights, evidence, strict=True) if e.kind == "measured")
    return float(estimate), float(share / total)
