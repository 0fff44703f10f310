"""The combination rule: hand-computed numbers, uncovered classes, fallback evidence, fitting."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import check_grad

from mllgraph.combine import rule as cb
from mllgraph.combine.rule import (
    EPS,
    ClassAssignment,
    CombinationParams,
    HeadGroup,
    accuracy,
    balanced_accuracy,
    class_scores,
    combine,
    default_params,
    fit_params,
    per_class_accuracy,
)
from mllgraph.errors import InvalidArgument

LN2, LN3 = math.log(2.0), math.log(3.0)


def _hand_logits() -> dict[str, np.ndarray]:
    # a: row0 softmax [1/4, 3/4], row1 [3/4, 1/4]; b: row0 [1/4, 1/4, 1/2], row1 [1/2, 1/4, 1/4].
    return {
        "a": np.array([[0.0, LN3], [LN3, 0.0]]),
        "b": np.array([[0.0, 0.0, LN2], [LN2, 0.0, 0.0]]),
    }


def _hand_assignment() -> list[ClassAssignment]:
    return [
        ClassAssignment(0, (HeadGroup("a", (0,), "exact", 1.0),)),
        ClassAssignment(1, (HeadGroup("b", (0, 1), "descendants", 0.5),)),
        ClassAssignment(2, ()),
    ]


def _flat_params(k: int, temps: dict[str, float] | None = None) -> CombinationParams:
    return CombinationParams(temps or {}, np.ones(k), np.zeros(k))


def test_hand_example_with_unit_weights() -> None:
    probs = combine(_hand_logits(), _hand_assignment(), _flat_params(3))
    # Row 0: s = [1/4, 1/4 + 1/4 (two heads summed), none] -> softmax of logs = ratio of s.
    d0 = 0.25 + 0.5 + 2 * EPS
    np.testing.assert_allclose(probs[0], [(0.25 + EPS) / d0, (0.5 + EPS) / d0, 0.0], atol=1e-12)
    # Row 1: s = [3/4, 1/2 + 1/4] -> a tie.
    np.testing.assert_allclose(probs[1], [0.5, 0.5, 0.0], atol=1e-12)
    assert probs[:, 2].max() < 1e-300  # uncovered: constant -1000 score


def test_default_params_bias_is_log_label_score() -> None:
    params = default_params(_hand_assignment())
    np.testing.assert_allclose(params.weights, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(params.biases, [0.0, math.log(0.5), 0.0])
    assert not params.fitted
    probs = combine(_hand_logits(), _hand_assignment(), params)
    # prob_c ∝ q_c * (s_c + eps): row 0 -> 1 * 1/4 vs 0.5 * 1/2.
    e0, e1 = 1.0 * (0.25 + EPS), 0.5 * (0.5 + EPS)
    np.testing.assert_allclose(probs[0, :2], [e0 / (e0 + e1), e1 / (e0 + e1)], atol=1e-12)
    # Floor: a zero label score gives log(QUALITY_FLOOR), not -inf.
    a = [ClassAssignment(0, (HeadGroup("a", (0,), "ancestor", 0.0),))]
    assert default_params(a).biases[0] == pytest.approx(math.log(cb.QUALITY_FLOOR))


def test_weighted_mean_of_groups_temperature_and_weight() -> None:
    assignment = [
        ClassAssignment(
            0, (HeadGroup("a", (1,), "exact", 0.8), HeadGroup("b", (2,), "exact", 0.2))
        ),
        ClassAssignment(1, (HeadGroup("a", (0,), "exact", 1.0),)),
    ]
    z = class_scores(_hand_logits(), assignment, _flat_params(2))
    # Row 0: 0.8 * 3/4 + 0.2 * 1/2 = 0.7.
    assert z[0, 0] == pytest.approx(math.log(0.7 + EPS), abs=1e-12)
    # Temperature 2 on a: softmax([0, ln 3] / 2) = [1, sqrt 3] / (1 + sqrt 3).
    z = class_scores(_hand_logits(), assignment, _flat_params(2, {"a": 2.0}))
    assert z[0, 1] == pytest.approx(math.log(1 / (1 + math.sqrt(3)) + EPS), abs=1e-12)
    # Weight 2, bias 0.5: z = 2 log(s + eps) + 0.5.
    params = CombinationParams({}, np.array([1.0, 2.0]), np.array([0.0, 0.5]))
    z = class_scores(_hand_logits(), assignment, params)
    assert z[1, 1] == pytest.approx(2 * math.log(0.75 + EPS) + 0.5, abs=1e-12)


def test_descendant_heads_summed_beat_a_single_stronger_head() -> None:
    # Heads 0-2 sandal, sneaker, boot; head 3 bag. No footwear head beats bag alone (0.2 < 0.4),
    # their sum (0.6) does.
    logits = {"m": np.log(np.array([[0.2, 0.2, 0.2, 0.4]]))}
    assignment = [
        ClassAssignment(0, (HeadGroup("m", (0, 1, 2), "descendants", 1.0),)),
        ClassAssignment(1, (HeadGroup("m", (3,), "exact", 1.0),)),
    ]
    probs = combine(logits, assignment, default_params(assignment))
    np.testing.assert_allclose(probs[0], [0.6, 0.4], atol=1e-5)
    assert probs.argmax(axis=1).tolist() == [0]


def test_uncovered_classes_never_win_and_all_uncovered_is_uniform() -> None:
    logits = {"m": np.array([[-50.0, 50.0]])}  # head 0 has ~zero probability
    assignment = [
        ClassAssignment(0, ()),
        ClassAssignment(1, (HeadGroup("m", (0,), "exact", 0.01),)),
    ]
    probs = combine(logits, assignment, default_params(assignment))
    assert probs.argmax(axis=1).tolist() == [1]
    empty = [ClassAssignment(0, ()), ClassAssignment(1, ())]
    probs = combine(logits, empty, default_params(empty))
    np.testing.assert_allclose(probs, [[0.5, 0.5]])


def test_extra_evidence_for_uncovered_class() -> None:
    assignment = _hand_assignment()
    params = _flat_params(3)
    extra = {2: np.array([0.9, 0.0])}
    probs = combine(_hand_logits(), assignment, params, extra_evidence=extra)
    d0 = 0.25 + 0.5 + 0.9 + 3 * EPS
    np.testing.assert_allclose(probs[0], (np.array([0.25, 0.5, 0.9]) + EPS) / d0, atol=1e-12)
    assert probs.argmax(axis=1).tolist() == [2, 0]
    with pytest.raises(InvalidArgument, match="class 0, which is covered"):
        combine(_hand_logits(), assignment, params, extra_evidence={0: np.ones(2)})
    with pytest.raises(InvalidArgument, match="extra_evidence\\[2\\]"):
        combine(_hand_logits(), assignment, params, extra_evidence={2: np.ones(3)})
    with pytest.raises(InvalidArgument, match="outside"):
        combine(_hand_logits(), assignment, params, extra_evidence={7: np.ones(2)})


def test_validation_names_the_bad_field() -> None:
    with pytest.raises(InvalidArgument, match="kind"):
        HeadGroup("m", (0,), "cousin", 0.5)
    with pytest.raises(InvalidArgument, match="label_score"):
        HeadGroup("m", (0,), "exact", 1.5)
    with pytest.raises(InvalidArgument, match="heads"):
        HeadGroup("m", (-1,), "exact", 0.5)
    with pytest.raises(InvalidArgument, match="heads is empty"):
        HeadGroup("m", (), "exact", 0.5)
    with pytest.raises(InvalidArgument, match="model_id"):
        HeadGroup("", (0,), "exact", 0.5)
    bad_model = [ClassAssignment(0, (HeadGroup("zz", (0,), "exact", 1.0),))]
    with pytest.raises(InvalidArgument, match="'zz'"):
        combine(_hand_logits(), bad_model, _flat_params(1))
    bad_head = [ClassAssignment(0, (HeadGroup("a", (5,), "exact", 1.0),))]
    with pytest.raises(InvalidArgument, match="head 5 out of range"):
        combine(_hand_logits(), bad_head, _flat_params(1))
    with pytest.raises(InvalidArgument, match="exactly once"):
        combine(_hand_logits(), [ClassAssignment(1, ())], _flat_params(1))
    with pytest.raises(InvalidArgument, match="3 classes"):
        combine(_hand_logits(), _hand_assignment(), _flat_params(2))
    with pytest.raises(InvalidArgument, match="temperatures"):
        CombinationParams({"a": 0.0}, np.ones(1), np.zeros(1))
    with pytest.raises(InvalidArgument, match="biases"):
        CombinationParams({}, np.ones(2), np.zeros(3))
    with pytest.raises(InvalidArgument, match="HeadGroup.kind is missing"):
        HeadGroup.from_dict({"model_id": "m", "heads": [0], "label_score": 1.0})


def test_json_round_trip() -> None:
    assignment = _hand_assignment()
    params = default_params(assignment, {"a": 1.5})
    for a in assignment:
        assert ClassAssignment.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    back = CombinationParams.from_dict(json.loads(json.dumps(params.to_dict())))
    assert back == params
    assert HeadGroup("m", (2, 0), "exact", 0.5).heads == (0, 2)  # normalised order


def test_accuracy_metrics() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    labels = np.array([0, 1, 1, 1])
    assert accuracy(probs, labels) == pytest.approx(0.5)
    assert per_class_accuracy(probs, labels) == pytest.approx([1.0, 1 / 3])
    assert balanced_accuracy(probs, labels) == pytest.approx((1.0 + 1 / 3) / 2)
    per = per_class_accuracy(np.array([[0.9, 0.1, 0.0]]), np.array([0]))
    assert per[0] == 1.0 and math.isnan(per[1])
    with pytest.raises(InvalidArgument, match="labels"):
        accuracy(probs, np.array([0, 1, 2, 0]))


def _miscalibrated(n_per_class: int = 60, seed: int = 0) -> tuple[dict, np.ndarray, list]:
    """Closed-set experts whose raw evidence misleads the parameter-free rule.

    Model A (heads: class 0, a distractor) puts ~0.7 on its class-0 head for class-1 images;
    model B (heads: class 1, a distractor) gives class-1 images only ~0.6. Unit weights send
    class-1 images to class 0; a fitted bias separates them (0.7/0.6 < ratio < 0.9/0.3).
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n_per_class)
    pa = np.where(labels == 0, 0.9, 0.7) + rng.normal(0, 0.02, labels.size)
    pb = np.where(labels == 0, 0.3, 0.6) + rng.normal(0, 0.02, labels.size)
    logits = {
        "A": np.stack([np.log(pa), np.log(1 - pa)], axis=1),
        "B": np.stack([np.log(pb), np.log(1 - pb)], axis=1),
    }
    assignment = [
        ClassAssignment(0, (HeadGroup("A", (0,), "exact", 0.9),)),
        ClassAssignment(1, (HeadGroup("B", (0,), "exact", 0.9),)),
    ]
    return logits, labels, assignment


def test_fit_params_raises_accuracy_on_miscalibrated_experts() -> None:
    logits, labels, assignment = _miscalibrated()
    base = default_params(assignment)
    base_acc = accuracy(combine(logits, assignment, base), labels)
    fitted = fit_params(logits, labels, assignment, base)
    fit_acc = accuracy(combine(logits, assignment, fitted), labels)
    assert base_acc == pytest.approx(0.5)
    assert fit_acc > 0.95
    assert fitted.fitted and fitted.num_classes == 2
    assert fitted == fit_params(logits, labels, assignment, base)  # deterministic
    with_t = fit_params(logits, labels, assignment, base, fit_temperatures=True)
    assert accuracy(combine(logits, assignment, with_t), labels) > 0.95
    assert set(with_t.temperatures) == {"A", "B"}


def test_fit_params_strong_l2_stays_at_base_and_uncovered_rows_are_ignored() -> None:
    logits, labels, assignment = _miscalibrated()
    base = default_params(assignment)
    stiff = fit_params(logits, labels, assignment, base, l2=1e6)
    np.testing.assert_allclose(stiff.weights, base.weights, atol=1e-4)
    np.testing.assert_allclose(stiff.biases, base.biases, atol=1e-4)
    # A third, uncovered class: its images are left out; its params stay at the base.
    a3 = [*assignment, ClassAssignment(2, ())]
    labels3 = labels.copy()
    labels3[:5] = 2
    fitted = fit_params(logits, labels3, a3, default_params(a3))
    assert fitted.weights[2] == 1.0 and fitted.biases[2] == 0.0
    with pytest.raises(InvalidArgument, match="covered class"):
        fit_params(logits, np.full(labels.size, 2), a3, default_params(a3))


def test_fit_gradient_matches_finite_differences() -> None:
    logits, labels, _ = _miscalibrated(n_per_class=15, seed=3)
    logits["C"] = np.random.default_rng(1).normal(size=(labels.size, 3))
    assignment = [
        ClassAssignment(
            0, (HeadGroup("A", (0,), "exact", 0.9), HeadGroup("C", (0, 1), "descendants", 0.4))
        ),
        ClassAssignment(1, (HeadGroup("B", (0,), "exact", 0.7),)),
        ClassAssignment(2, ()),
    ]
    ordered = assignment
    covered = np.array([0, 1])
    models = ["A", "B", "C"]
    data = cb._FitData(
        covered=covered,
        y=labels,
        rows=np.arange(labels.size),
        onehot=np.eye(2)[labels],
        uncovered_scores=np.array([math.log(cb.FALLBACK_EVIDENCE + cb.EPS)]),  # the floor
        models=models,
        logits={m: logits[m] for m in models},
    )
    groups = [ordered[c].groups for c in covered]
    theta0 = np.array([1.0, 1.0, 0.0, -0.3, 0.0, 0.0, 0.0])
    rng = np.random.default_rng(2)
    temps = dict.fromkeys(models, 1.0)
    for _ in range(3):
        theta = theta0 + rng.normal(0, 0.3, theta0.size)

        def f(t: np.ndarray) -> float:
            return cb._fit_objective(t, theta0, 0.01, data, groups, temps, None)[0]

        def g(t: np.ndarray) -> np.ndarray:
            return cb._fit_objective(t, theta0, 0.01, data, groups, temps, None)[1]

        assert check_grad(f, g, theta, epsilon=1e-6) < 1e-5


def test_fit_against_the_floor_inference_gives_uncovered_classes() -> None:
    """Weak but right evidence (an expert far from its domain puts ~2 % on the right head)
    loses every image to the uncovered class's constant floor at inference. Fitted with the
    floor in the softmax, the covered classes' biases rise above it and their images are
    theirs again."""
    rng = np.random.default_rng(0)
    n = 40
    labels = np.repeat([0, 1], n)
    logits = rng.normal(0, 0.1, size=(2 * n, 50))
    logits[labels == 0, 0] += 0.8  # p(head 0) ~ 0.04 on class-0 images, ~0.02 elsewhere
    logits[labels == 1, 1] += 0.8
    assignment = [
        ClassAssignment(0, (HeadGroup("far", (0,), "exact", 0.5),)),
        ClassAssignment(1, (HeadGroup("far", (1,), "exact", 0.5),)),
        ClassAssignment(2, ()),  # uncovered: the floor
    ]
    base = cb.default_params(assignment)
    floor = cb.fallback_evidence(2 * n, [2])

    def served(params: cb.CombinationParams) -> np.ndarray:
        return cb.combine({"far": logits}, assignment, params, extra_evidence=floor).argmax(1)

    assert (served(base) == 2).all()  # the trap: the floor takes everything
    blind = cb.fit_params({"far": logits}, labels, assignment, base)  # uncovered at -1000
    fitted = cb.fit_params(
        {"far": logits}, labels, assignment, base, uncovered_evidence=cb.FALLBACK_EVIDENCE
    )
    assert (served(fitted) == labels).mean() >= 0.9
    assert (served(fitted) == labels).mean() > (served(blind) == labels).mean()
