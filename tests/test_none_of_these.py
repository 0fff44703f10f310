"""The "none of these" score alone (mllgraph.combine.none_of_these): pure, no Neo4j.

Synthetic experts: an in-task image puts most of a model's mass on the task's heads, an image
of another concept on the other heads, with the same kind of noise, so the score must learn
which features separate them; the plan contract carries the calibration (plan.document).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mllgraph.combine import none_of_these as none
from mllgraph.combine import rule
from mllgraph.combine.combination import Plan
from mllgraph.errors import InvalidArgument
from mllgraph.plan import apply
from mllgraph.plan.document import parse_plan

HEADS = 8  # heads 0-2 are the task's three classes, 3-7 other concepts
TASK = (0, 1, 2)


def _logits(rng: np.random.Generator, n: int, hot: np.ndarray) -> np.ndarray:
    z = rng.normal(0.0, 1.0, (n, HEADS))
    z[np.arange(n), hot] += 4.0
    return z


def _assignment(models: tuple[str, ...] = ("m",)) -> list[rule.ClassAssignment]:
    return [
        rule.ClassAssignment(c, tuple(rule.HeadGroup(m, (c,), "exact", 0.9) for m in models))
        for c in TASK
    ]


def _data(seed: int, n: int = 300) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    inside = {"m": _logits(rng, n, rng.integers(0, 3, n))}
    outside = {"m": _logits(rng, n, rng.integers(3, HEADS, n))}
    return inside, outside


def _features(logits: dict[str, np.ndarray], assignment: list[rule.ClassAssignment]):
    return none.features(logits, ["m"], none.task_heads(assignment), {"m": 1.0})


def _fitted(seed: int = 0) -> none.NoneCalibration:
    assignment = _assignment()
    inside, outside = _data(seed)
    xi = _features(inside, assignment)
    xo = _features(outside, assignment)
    fitted = none.fit(xi, xo, ["m"], none.task_heads(assignment), {"m": 1.0})
    assert fitted is not None
    return fitted


def test_auroc_matches_sklearn_and_threshold_rejects_at_most_the_share() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 200), rng.normal(1, 1, 150)
    a[:10] = b[:10]  # ties across the sides count half
    want = roc_auc_score(np.r_[np.zeros(200), np.ones(150)], np.r_[a, b])
    assert none.auroc(a, b) == pytest.approx(want)
    assert math.isnan(none.auroc(a, np.array([])))
    for share in (0.0, 0.01, 0.05, 0.2):
        t = none.threshold_for(a, share)
        assert np.mean(a > t) <= share
        assert np.mean(a >= t) > share or share == 0.0  # the lowest such threshold
    with pytest.raises(InvalidArgument, match="at least one"):
        none.threshold_for(np.array([]))


def test_fit_separates_outside_images_and_keeps_the_in_task_share() -> None:
    fitted = _fitted()
    assert fitted.probe_auroc > 0.95
    assert fitted.probe_rejected <= none.MAX_REJECTED
    assert fitted.positives == fitted.negatives == 300
    # New images from the same experts: the threshold still lets nearly all in-task ones by.
    inside, outside = _data(seed=1)
    si, so = fitted.scores(inside), fitted.scores(outside)
    assert np.all((si >= 0) & (si <= 1))
    assert np.mean(si > fitted.threshold) <= 0.03
    assert np.mean(so > fitted.threshold) > 0.8
    assert none.auroc(si, so) > 0.95


def _styled(rng: np.random.Generator, n: int, hot: np.ndarray, blur: float) -> np.ndarray:
    """Logits of one art style: the more `blur`, the less sure the experts are of anything."""
    z = rng.normal(0.0, 1.0, (n, HEADS))
    z[np.arange(n), hot] += 4.0 - blur
    return z


def test_threshold_is_placed_where_an_unseen_source_falls() -> None:
    # Two probe styles, the second blurrier; the task's images will come in a third, blurrier
    # still. Held-out scores from stratified folds place the threshold where the known styles
    # fall, and refuse many in-task images of the new one; leaving one style out at a time
    # measures what a new style does to the score, and places it above that.
    rng = np.random.default_rng(5)
    n = 200
    assignment = _assignment()
    heads = none.task_heads(assignment)

    def side(inside: bool, blur: float) -> np.ndarray:
        hot = rng.integers(0, 3, n) if inside else rng.integers(3, HEADS, n)
        return _features({"m": _styled(rng, n, hot, blur)}, assignment)

    xi = np.concatenate([side(True, 0.0), side(True, 1.5)])
    xo = np.concatenate([side(False, 0.0), side(False, 1.5)])
    sources = np.array(["a"] * n + ["b"] * n + ["a"] * n + ["b"] * n)
    by_folds = none.fit(xi, xo, ["m"], heads, {"m": 1.0})
    by_sources = none.fit(xi, xo, ["m"], heads, {"m": 1.0}, sources=sources)
    assert by_folds is not None and by_sources is not None
    assert (by_folds.held_out, by_sources.held_out) == ("folds", "sources")
    # The final fit is the same (all images); only the held-out scores differ.
    np.testing.assert_allclose(by_sources.coef, by_folds.coef)
    assert by_sources.threshold > by_folds.threshold
    new_style = {"m": _styled(rng, 400, rng.integers(0, 3, 400), 3.0)}
    refused = {
        f.held_out: float(np.mean(f.scores(new_style) > f.threshold))
        for f in (by_folds, by_sources)
    }
    assert refused["sources"] < refused["folds"]
    assert none.NoneCalibration.from_dict(by_sources.to_dict()).held_out == "sources"
    # One source only, or none given: stratified folds, as before.
    one = none.fit(xi, xo, ["m"], heads, {"m": 1.0}, sources=np.array(["a"] * (4 * n)))
    assert one is not None and one.held_out == "folds" and one.threshold == by_folds.threshold
    with pytest.raises(InvalidArgument, match="sources has 3 entries"):
        none.fit(xi, xo, ["m"], heads, {"m": 1.0}, sources=np.array(["a", "b", "a"]))


@pytest.mark.parametrize("seed", [0, 3])
def test_folds_and_logistic_fit_are_scikit_learns(seed: int) -> None:
    # Selection fits without importing scikit-learn; the answers must be the ones it gave.
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 1, (37, 4)), rng.normal(0.8, 1.3, (61, 4))])
    y = np.concatenate([np.zeros(37, np.int64), np.ones(61, np.int64)])
    folds = none.stratified_folds(y, 5, seed)
    for k, (_, test) in enumerate(StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y)):
        assert np.array_equal(np.flatnonzero(folds == k), test)
    for c in (0.05, 1.0, 30.0):
        coef, intercept = none.balanced_logistic(x, y, c)
        ref = LogisticRegression(C=c, class_weight="balanced", tol=1e-10, max_iter=10_000)
        ref.fit(x, y)
        np.testing.assert_allclose(coef, ref.coef_[0], atol=1e-5)
        assert intercept == pytest.approx(ref.intercept_[0], abs=1e-5)


def test_logistic_fit_survives_equal_features_far_out_of_scale() -> None:
    # Seen in a selection: two equal features ~1e9 on the outside images made the Newton
    # system singular to working precision.
    rng = np.random.default_rng(1)
    inside = rng.normal(0, 1, (20, 3))
    outside = np.column_stack([rng.normal(-2.4e9, 1e8, 60), rng.normal(0, 1, 60), np.zeros(60)])
    x = np.concatenate([inside, outside])
    x = np.column_stack([x, x[:, 0]])  # a duplicate
    y = np.concatenate([np.zeros(20, np.int64), np.ones(60, np.int64)])
    coef, intercept = none.balanced_logistic(x, y, 1.0)
    assert np.all(np.isfinite(coef)) and math.isfinite(intercept)
    assert coef[0] == pytest.approx(coef[3], rel=1e-6)  # equal features, equal weights


def test_logistic_fit_stays_finite_on_separable_data() -> None:
    x = np.array([[-3.0], [-2.0], [-1.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 0, 1, 1, 1])
    coef, intercept = none.balanced_logistic(x * 100, y, 1.0)
    assert np.all(np.isfinite(coef)) and math.isfinite(intercept) and coef[0] > 0


def test_too_few_images_give_no_calibration() -> None:
    x = np.zeros((none.MIN_IMAGES - 1, 4))
    assert none.fit(x, np.ones((50, 4)), ["m"], {}, {}) is None
    with pytest.raises(InvalidArgument, match="alike"):
        none.fit(np.zeros((20, 4)), np.zeros((20, 3)), ["m"], {}, {})


def test_out_of_domain_model_is_neutral_and_no_speaking_model_scores_one() -> None:
    fitted = _fitted()
    inside, _ = _data(seed=2, n=6)
    everywhere = fitted.scores(inside, {"m": np.ones(6, bool)})
    np.testing.assert_allclose(everywhere, fitted.scores(inside))
    mask = np.array([True, False, True, False, True, True])
    got = fitted.scores(inside, {"m": mask})
    np.testing.assert_allclose(got[mask], everywhere[mask])
    assert np.all(got[~mask] == 1.0)  # the only model refused them: no evidence at all


def test_round_trip_and_malformed_calibrations() -> None:
    fitted = _fitted()
    again = none.NoneCalibration.from_dict(fitted.to_dict())
    inside, _ = _data(seed=4, n=20)
    np.testing.assert_allclose(again.scores(inside), fitted.scores(inside))
    good = fitted.to_dict()
    for change, match in [
        ({"rule": "other"}, "none_logistic"),
        ({"models": []}, "models"),
        ({"coef": [1.0]}, "coef"),
        ({"scale": [0.0] * len(good["scale"])}, "scale"),
        ({"threshold": 2.0}, "threshold"),
        ({"heads": {"x": [0]}}, "heads"),
        ({"temperatures": {"m": -1}}, "temperatures"),
        ({"mean": ["a"] * len(good["mean"])}, "mean"),
    ]:
        with pytest.raises(InvalidArgument, match=match):
            none.NoneCalibration.from_dict({**copy.deepcopy(good), **change})
    with pytest.raises(InvalidArgument, match="logits of model m"):
        fitted.scores({})


def _document(calibration: dict | None) -> dict:
    assignment = _assignment()
    plan = Plan(assignment, rule.default_params(assignment), 0.9, [0.9] * 3, [], ["m"], "x", 0)
    doc = {
        "plan_id": "p",
        "classes": [{"name": f"c{i}"} for i in TASK],
        "combination": {"schema_version": 1, "plan": plan.to_dict()},
    }
    if calibration is not None:
        doc["combination"]["none"] = calibration
    return doc


def test_plan_document_carries_the_calibration_and_old_plans_have_none() -> None:
    fitted = _fitted()
    parsed = parse_plan(_document(fitted.to_dict()))
    assert parsed.none is not None and parsed.none.threshold == fitted.threshold
    inside, _ = _data(seed=5, n=10)
    np.testing.assert_allclose(apply.none_scores(parsed, inside), fitted.scores(inside))
    old = parse_plan(_document(None))
    assert old.none is None and apply.none_scores(old, inside) is None
    stranger = {**fitted.to_dict(), "models": ["other"], "heads": {"other": [0, 1, 2]}}
    with pytest.raises(InvalidArgument, match="does not"):
        parse_plan(_document(stranger))


def test_measure_counts_a_rejected_in_task_image_as_wrong() -> None:
    got = none.measure(
        inside_scores=np.array([0.1, 0.2, 0.9, 0.95]),
        inside_correct=np.array([True, True, True, False]),
        outside_scores=np.array([0.8, 0.99]),
        threshold=0.5,
    )
    assert got["accuracy"] == 0.75
    assert got["accuracy_allow_none"] == 0.5  # image 2 was right, now "none"
    assert got["accuracy_drop_points"] == pytest.approx(25.0)
    assert got["inside_rejected"] == 0.5 and got["outside_rejected"] == 1.0
    assert got["auroc"] == pytest.approx(0.75)
    with pytest.raises(InvalidArgument, match="same length"):
        none.measure(np.zeros(2), np.zeros(3, bool), np.zeros(1), 0.5)


def test_head_columns_pick_the_telling_heads_and_travel_with_the_plan() -> None:
    assignment = _assignment()
    inside, outside = _data(seed=6)
    # Only head 5 tells the sides apart here: outside images all put their mass on it.
    rng = np.random.default_rng(7)
    outside = {"m": _logits(rng, 300, np.full(300, 5))}
    picked = none.head_columns(inside, outside, ["m"], {"m": 1.0}, 1)
    assert picked == [("m", 5)]
    assert none.head_columns(inside, outside, ["m"], {"m": 1.0}, 0) == []
    xi = _features(inside, assignment)
    heads = none.task_heads(assignment)
    fi = none.features(inside, ["m"], heads, {"m": 1.0}, picked)
    fo = none.features(outside, ["m"], heads, {"m": 1.0}, picked)
    assert fi.shape[1] == xi.shape[1] + 1
    fitted = none.fit(fi, fo, ["m"], heads, {"m": 1.0}, extra=picked)
    assert fitted is not None and fitted.extra == (("m", 5),)
    again = none.NoneCalibration.from_dict(fitted.to_dict())
    np.testing.assert_allclose(again.scores(outside), fitted.scores(outside))
    with pytest.raises(InvalidArgument, match="extra"):
        none.NoneCalibration.from_dict({**fitted.to_dict(), "extra": [["other", 1]]})
