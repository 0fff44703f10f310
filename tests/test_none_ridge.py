"""The ridge "none of these" rule alone (mllgraph.combine.none_ridge): pure, no Neo4j.

The synthetic world where the logistic rule of SELECTION_VERSION 14-22 is blind: an image of
another concept puts as much mass on the task's heads, as surely, as a task image does; only
*which other* heads light up with it tells them apart (as an emoji of a mandolin may light up
"guitar" as much as a guitar emoji does, but "banjo" and "lute" with it).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from mllgraph.combine import none_of_these, none_ridge, packed, rule
from mllgraph.combine.combination import Plan
from mllgraph.combine.softmax import log_probabilities
from mllgraph.errors import InvalidArgument
from mllgraph.plan import apply
from mllgraph.plan.document import parse_plan

HEADS = 12  # 0-2: the task's classes; 3-11: other concepts
TASK = (0, 1, 2)


def _logits(rng: np.random.Generator, n: int, inside: bool) -> tuple[np.ndarray, np.ndarray]:
    """(logits, class of each in-task image or -1). Both sides put the same mass on a task head;
    an outside image also lifts one of heads 3-5 (its own concept's look-alikes), an in-task
    image one of heads 6-8; heads 9-11 are noise."""
    z = rng.normal(0.0, 1.0, (n, HEADS))
    label = rng.integers(0, 3, n)
    z[np.arange(n), label] += 4.0
    partner = rng.integers(3, 6, n) if not inside else rng.integers(6, 9, n)
    z[np.arange(n), partner] += 4.0
    return z, (label if inside else np.full(n, -1))


def _columns() -> list[tuple[str, int]]:
    return [("m", h) for h in range(HEADS)]


def _fit(seed: int = 0, n: int = 300, **kw) -> none_ridge.NoneRidge:
    rng = np.random.default_rng(seed)
    zi, yi = _logits(rng, n, True)
    zo, _ = _logits(rng, n, False)
    fitted = none_ridge.fit(
        log_probabilities(zi), yi, log_probabilities(zo), _columns(), {"m": 1.0}, **kw
    )
    assert fitted is not None
    return fitted


def _assignment() -> list[rule.ClassAssignment]:
    return [rule.ClassAssignment(c, (rule.HeadGroup("m", (c,), "exact", 0.9),)) for c in TASK]


def test_ridge_is_weighted_ridge_regression() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 5))
    y = np.r_[np.zeros(10, int), np.ones(20, int), np.full(30, 2)]
    mean, weights = none_ridge.ridge(x, y, 3, strength=0.5)
    w = 1.0 / np.bincount(y)[y]
    centred = x - (w[:, None] * x).sum(0) / w.sum()
    alpha = 0.5 * np.trace(centred.T @ (w[:, None] * centred)) / 5
    ref = Ridge(alpha=alpha).fit(x, np.eye(3)[y], sample_weight=w)
    np.testing.assert_allclose(weights, ref.coef_.T, atol=1e-10)
    # Scores differ from scikit-learn's predictions by the same constant in every column.
    diff = (x - mean) @ weights - ref.predict(x)
    np.testing.assert_allclose(diff, diff[:1].repeat(60, 0), atol=1e-10)


def test_top_columns_keeps_the_telling_columns() -> None:
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1, 2], 50)
    x = rng.normal(size=(150, 10))
    x[:, 7] += 3 * y  # the only column that tells the groups apart
    x[:, 2] += 1 * (y == 2)
    stats = none_ridge.group_sums(x, y, 3)
    assert none_ridge.top_columns(stats, 2).tolist() == [2, 7]
    assert none_ridge.top_columns(stats, 50).tolist() == list(range(10))


def test_the_ridge_rule_sees_what_the_logistic_rule_cannot() -> None:
    rng = np.random.default_rng(3)
    zi, _ = _logits(rng, 300, True)
    zo, _ = _logits(rng, 300, False)
    heads = none_of_these.task_heads(_assignment())
    old = none_of_these.fit(
        none_of_these.features({"m": zi}, ["m"], heads, {"m": 1.0}),
        none_of_these.features({"m": zo}, ["m"], heads, {"m": 1.0}),
        ["m"], heads, {"m": 1.0},
    )  # fmt: skip
    new = _fit(seed=3)
    ti, _ = _logits(np.random.default_rng(4), 400, True)
    to, _ = _logits(np.random.default_rng(5), 400, False)
    assert old is not None
    old_auroc = none_of_these.auroc(old.scores({"m": ti}), old.scores({"m": to}))
    si, so = new.scores({"m": ti}), new.scores({"m": to})
    assert old_auroc < 0.6  # its per-model summaries carry none of it
    assert none_of_these.auroc(si, so) > 0.95
    assert np.all((si >= 0) & (si <= 1))
    assert new.probe_rejected <= none_of_these.MAX_REJECTED
    assert np.mean(si > new.threshold) <= 0.03
    assert np.mean(so > new.threshold) > 0.6
    assert new.positives == new.negatives == 300 and new.held_out == "folds"


def test_held_out_sources_and_too_few_images() -> None:
    rng = np.random.default_rng(6)
    zi, yi = _logits(rng, 200, True)
    zo, _ = _logits(rng, 200, False)
    sources = np.array((["a", "b"] * 100) * 2)
    fitted = none_ridge.fit(
        log_probabilities(zi), yi, log_probabilities(zo), _columns(), {"m": 1.0}, sources=sources
    )
    assert fitted is not None and fitted.held_out == "sources"
    few = none_ridge.fit(
        log_probabilities(zi[:5]), yi[:5], log_probabilities(zo), _columns(), {"m": 1.0}
    )
    assert few is None
    with pytest.raises(InvalidArgument, match="labels has 3 entries"):
        none_ridge.fit(log_probabilities(zi), yi[:3], log_probabilities(zo), _columns(), {})
    with pytest.raises(InvalidArgument, match="features must be"):
        none_ridge.fit(log_probabilities(zi), yi, log_probabilities(zo)[:, :4], _columns(), {})


def test_keeps_only_the_columns_it_reads() -> None:
    fitted = _fit(keep=4)
    assert len(fitted.columns) == 4 and fitted.weights.shape == (4, 4)  # 3 classes + outside
    assert {h for _, h in fitted.columns} <= set(range(9))  # never the silent heads 9-11


def test_out_of_domain_model_is_neutral_and_no_speaking_model_scores_one() -> None:
    fitted = _fit()
    z, _ = _logits(np.random.default_rng(7), 6, True)
    everywhere = fitted.scores({"m": z}, {"m": np.ones(6, bool)})
    np.testing.assert_allclose(everywhere, fitted.scores({"m": z}))
    mask = np.array([True, False, True, False, True, True])
    got = fitted.scores({"m": z}, {"m": mask})
    np.testing.assert_allclose(got[mask], everywhere[mask])
    assert np.all(got[~mask] == 1.0)


def test_round_trip_and_malformed_calibrations() -> None:
    """The arrays are packed (combine/packed) and read back bit for bit; a calibration written
    as JSON numbers (plans of SELECTION_VERSION 23) reads the same; anything malformed is
    InvalidArgument naming the field."""
    fitted = _fit()
    good = json.loads(json.dumps(fitted.to_dict()))
    assert set(good["weights"]) == {"float64", "shape"}
    again = none_ridge.NoneRidge.from_dict(good)
    z, _ = _logits(np.random.default_rng(8), 20, False)
    assert np.array_equal(again.scores({"m": z}), fitted.scores({"m": z}))
    assert np.array_equal(again.weights, fitted.weights) and np.array_equal(again.fill, fitted.fill)
    as_numbers = {
        **good,
        "mean": fitted.mean.tolist(),
        "fill": fitted.fill.tolist(),
        "weights": fitted.weights.tolist(),
    }
    old = none_ridge.NoneRidge.from_dict(json.loads(json.dumps(as_numbers)))
    assert np.array_equal(old.scores({"m": z}), fitted.scores({"m": z}))
    width = len(good["columns"])
    short = packed.pack(fitted.weights[:-1])
    for change, match in [
        ({"rule": "none_logistic"}, "rule must be"),
        ({"models": []}, "models"),
        ({"columns": []}, "columns"),
        ({"columns": [["other", 0]] * width}, "columns must name"),
        ({"columns": [["m", -1]] * width}, "columns must name"),
        ({"weights": short}, "one row per column"),
        ({"weights": as_numbers["weights"][:-1]}, "one row per column"),
        ({"weights": {**short, "shape": [width, 4]}}, "needs .* bytes"),
        ({"weights": {**short, "float64": "not base64!"}}, "not base64"),
        ({"weights": {**short, "shape": [10**6, 10**6]}}, "at most"),
        ({"weights": {"float64": 1}}, "packed array is"),
        ({"weights": packed.pack(np.full((width, 4), np.nan))}, "finite"),
        ({"weights": [[float("nan")] * 4] * width}, "finite"),
        ({"mean": [0.0]}, "mean and fill"),
        ({"mean": packed.pack(np.zeros(1))}, "mean and fill"),
        ({"threshold": 2.0}, "threshold"),
        ({"slope": "x"}, "slope"),
        ({"temperatures": {"m": 0}}, "temperatures"),
    ]:
        with pytest.raises(InvalidArgument, match=match):
            none_ridge.NoneRidge.from_dict({**copy.deepcopy(good), **change})
    with pytest.raises(InvalidArgument, match="logits of model m"):
        fitted.scores({})
    with pytest.raises(InvalidArgument, match="has 2 heads"):
        fitted.scores({"m": np.zeros((1, 2))})


def test_plan_document_carries_either_rule() -> None:
    assignment = _assignment()
    plan = Plan(assignment, rule.default_params(assignment), 0.9, [0.9] * 3, [], ["m"], "x", 0)

    def document(calibration: dict) -> dict:
        return {
            "plan_id": "p",
            "classes": [{"name": f"c{i}"} for i in TASK],
            "combination": {"schema_version": 1, "plan": plan.to_dict(), "none": calibration},
        }

    fitted = _fit()
    parsed = parse_plan(document(fitted.to_dict()))
    assert isinstance(parsed.none, none_ridge.NoneRidge)
    z, _ = _logits(np.random.default_rng(9), 10, True)
    np.testing.assert_allclose(apply.none_scores(parsed, {"m": z}), fitted.scores({"m": z}))
    stranger = {**fitted.to_dict(), "models": ["other"]}
    with pytest.raises(InvalidArgument):
        parse_plan(document(stranger))
    # A plan stored before (SELECTION_VERSION 14-22) keeps its logistic rule.
    heads = none_of_these.task_heads(assignment)
    zi, _ = _logits(np.random.default_rng(10), 50, True)
    zo, _ = _logits(np.random.default_rng(11), 50, False)
    old = none_of_these.fit(
        none_of_these.features({"m": zi}, ["m"], heads, {"m": 1.0}),
        none_of_these.features({"m": zo}, ["m"], heads, {"m": 1.0}),
        ["m"], heads, {"m": 1.0},
    )  # fmt: skip
    assert old is not None
    assert isinstance(parse_plan(document(old.to_dict())).none, none_of_these.NoneCalibration)
