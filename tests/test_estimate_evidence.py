"""The estimate evidence (`mllgraph.select.evidence`), pure: route calibrations on small
synthetic logits with known answers, each class's evidence kind, and the overall estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mllgraph.select.evidence import (
    Calibration,
    ProbedConcept,
    ancestor_route,
    class_evidence,
    declared_route,
    overall,
    pooled,
)


def _logits(winners: list[int], heads: int, runner_up: list[int] | None = None) -> np.ndarray:
    """One row per image: `winners[i]` scores 5, `runner_up[i]` (if given) 3, others 0."""
    x = np.zeros((len(winners), heads), dtype=np.float32)
    for i, w in enumerate(winners):
        x[i, w] = 5.0
        if runner_up is not None:
            x[i, runner_up[i]] = 3.0
    return x


# Probed concepts: sandal and sneaker under shoe; shirt under garment; all under artifact.
SANDAL = ProbedConcept("sandal", frozenset({"shoe", "artifact"}), np.arange(0, 4))
SNEAKER = ProbedConcept("sneaker", frozenset({"shoe", "artifact"}), np.arange(4, 8))
SHIRT = ProbedConcept("shirt", frozenset({"garment", "artifact"}), np.arange(8, 12))
CONCEPTS = [SANDAL, SNEAKER, SHIRT]
# Heads: 0 Sandal, 1 Sneaker, 2 Shirt.
OWN = {"sandal": [0], "sneaker": [1], "shirt": [2]}


def test_ancestor_route_leaves_the_concept_and_its_heads_out() -> None:
    """Sandal left out: its nearest ancestor with other images is shoe (sneaker's images),
    whose head is Sneaker; scored against the rival Shirt head (shirt is not under shoe),
    3 of 4 sandal images go to Sneaker. Sneaker left out: symmetric, all 4 go to Sandal.
    Shirt has no ancestor with other images short of every image (artifact): not counted."""
    winners = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    runner_up = [1, 1, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0]
    cal = ancestor_route(_logits(winners, 3, runner_up), CONCEPTS, OWN)
    assert cal == Calibration(accuracy=(0.75 + 1.0) / 2, concepts=2, images=8)


def test_ancestor_route_never_credits_a_head_that_only_its_own_images_taught() -> None:
    """Without any other concept's images under an ancestor, nothing is measured."""
    alone = [ProbedConcept("sandal", frozenset({"shoe"}), np.arange(4))]
    assert ancestor_route(_logits([0, 0, 0, 0], 2), alone, {"sandal": [0]}) is None
    assert ancestor_route(np.zeros((0, 3), np.float32), CONCEPTS, OWN) is None


def test_declared_route_is_the_share_its_declared_heads_win_among_the_rivals() -> None:
    """Scored as a task would: sandal's images among the Sandal and Sneaker heads (shirt
    declares none, so its head is no rival): 2 of 4 go to Sandal (one image's overall winner,
    Shirt, is not in the task; its runner-up Sneaker is); sneaker's 4 of 4 to Sneaker."""
    winners = [0, 0, 1, 2, 1, 1, 1, 1, 2, 2, 0, 0]
    runner_up = [1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 2, 2]
    own = {"sandal": [0], "sneaker": [1]}
    cal = declared_route(_logits(winners, 3, runner_up), CONCEPTS, own)
    assert cal == Calibration(accuracy=0.75, concepts=2, images=8)
    assert declared_route(_logits(winners, 3), CONCEPTS, {}) is None
    assert declared_route(_logits(winners, 3), CONCEPTS, {"sandal": [0]}) is None  # no rival


def test_pooled_weighs_models_by_their_concepts() -> None:
    cal = pooled([Calibration(1.0, 1, 10), None, Calibration(0.5, 3, 30)])
    assert cal is not None
    assert math.isclose(cal.accuracy, 0.625) and (cal.concepts, cal.images) == (4, 40)
    assert pooled([None]) is None


ROUTES = {("m", "ancestor"): Calibration(0.4, 5, 50), ("m", "declared"): None}
POOL = {"ancestor": Calibration(0.4, 5, 50), "declared": Calibration(0.3, 2, 20)}


def _evidence(coverage: str, own: int = 0, simulated: float | None = 1.0, model: str = "m"):
    return class_evidence(
        k=4, coverage=coverage, own_images=own, measured_estimate=simulated, model=model,
        calibrations=ROUTES, pool=POOL,
    )  # fmt: skip


def test_an_ancestor_only_class_gets_the_calibration_not_its_proxy_score() -> None:
    e = _evidence("ancestor", own=0, simulated=1.0)
    assert e.kind == "ancestor" and e.estimate == pytest.approx(0.4)
    assert "ancestor route" in e.text and "5 probed concepts" in e.text
    assert _evidence("related").kind == "ancestor"


def test_a_declared_class_borrows_the_hubs_pooled_calibration_when_its_model_has_none() -> None:
    e = _evidence("declared")
    assert e.kind == "declared" and e.pooled and e.estimate == pytest.approx(0.3)
    assert "declared prior of m" in e.text and "pooled" in e.text


def test_nothing_measured_is_chance_and_says_so() -> None:
    e = class_evidence(
        k=4, coverage="declared", own_images=0, measured_estimate=0.9, model="m",
        calibrations={}, pool={},
    )  # fmt: skip
    assert e.estimate == 0.25 and "nothing measured" in e.text
    u = _evidence("uncovered", model=None)
    assert u.kind == "uncovered" and u.estimate == 0.25 and "not estimated" in u.text


def test_own_probe_images_win_over_any_route() -> None:
    e = _evidence("ancestor", own=30, simulated=0.9)
    assert (e.kind, e.estimate, e.images) == ("measured", 0.9, 30)
    assert "measured on 30 probe images" in e.text


def test_overall_weighs_unmeasured_classes_like_a_mean_measured_class() -> None:
    measured = _evidence("exact", own=10, simulated=1.0)
    other = _evidence("exact", own=30, simulated=0.5)
    ancestor = _evidence("ancestor")
    estimate, share = overall([measured, other, ancestor])
    # weights 10, 30 and 20 (the measured classes' mean)
    assert estimate == pytest.approx((10 * 1.0 + 30 * 0.5 + 20 * 0.4) / 60)
    assert share == pytest.approx(40 / 60)
    assert overall([ancestor]) == (pytest.approx(0.4), 0.0)


def test_an_ancestor_with_its_own_probe_images_is_measured_on_them() -> None:
    """ "slacks" under trouser, whose own images CHCO scored: that is measured evidence of the
    route; through a related concept, or with no such images, the calibration instead."""
    e = class_evidence(
        k=4, coverage="ancestor", own_images=0, measured_estimate=0.9, model="m",
        calibrations=ROUTES, pool=POOL, ancestor_images=(50, "n04489008"),
    )  # fmt: skip
    assert (e.kind, e.estimate, e.images) == ("ancestor_images", 0.9, 50)
    assert "ancestor n04489008" in e.text
    related = class_evidence(
        k=4, coverage="related", own_images=0, measured_estimate=0.9, model="m",
        calibrations=ROUTES, pool=POOL, ancestor_images=(50, "n04489008"),
    )  # fmt: skip
    assert related.kind == "ancestor" and related.estimate == pytest.approx(0.4)
