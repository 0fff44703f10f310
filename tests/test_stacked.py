"""The stacked combination rule (mllgraph.combine.stacked) and the one place that applies a
plan (mllgraph.plan.apply): pure logic on synthetic logits with known answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mllgraph.combine import stacked
from mllgraph.errors import FailedPrecondition, InvalidArgument
from mllgraph.plan import apply
from mllgraph.plan.document import STACKED_SCHEMA_VERSION, parse_plan


def _shirts(n_per_class: int = 40, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Model "m@1" has heads (shirt, coat, other). Class 0 "shirt" fires head 0; class 1
    "T-shirt" ALSO fires head 0 (no T-shirt head), but pushes head 2 up: only a rule that
    reads head 2, which no class is mapped to, tells them apart."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], n_per_class)
    z = rng.normal(0, 0.3, size=(y.size, 3))
    z[y == 0, 0] += 3
    z[y == 1, 0] += 3
    z[y == 1, 2] += 1.5
    z[y == 2, 1] += 3
    return {"m@1": z}, y


def test_the_stacked_rule_reads_heads_no_class_is_mapped_to() -> None:
    logits, y = _shirts()
    rule = stacked.fit(logits, y, 3, ["m@1"], {"m@1": 1.0})
    assert rule is not None and rule.heads == (3,) and rule.coef.shape == (3, 3)
    assert rule.cv_accuracy > 0.9  # out of fold
    test_logits, test_y = _shirts(seed=1)
    p = rule.probabilities(test_logits)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert (p.argmax(1) == test_y).mean() > 0.9
    # Head 0 alone (what the per-class rule sees for shirt and T-shirt) is at chance between them.
    shirtish = test_y < 2
    assert abs(np.corrcoef(test_logits["m@1"][shirtish, 0], test_y[shirtish])[0, 1]) < 0.3


def test_two_classes_become_two_softmax_rows() -> None:
    logits, y = _shirts()
    keep = y < 2
    rule = stacked.fit({"m@1": logits["m@1"][keep]}, y[keep], 2, ["m@1"], {})
    assert rule is not None and rule.coef.shape == (2, 3) and rule.intercept.shape == (2,)
    p = rule.probabilities({"m@1": logits["m@1"][keep]})
    assert (p.argmax(1) == y[keep]).mean() > 0.85


def test_no_rule_without_enough_images_of_every_class() -> None:
    logits, y = _shirts(n_per_class=stacked.MIN_IMAGES_PER_CLASS - 1)
    assert stacked.fit(logits, y, 3, ["m@1"], {}) is None
    logits, y = _shirts()
    assert stacked.fit(logits, y, 4, ["m@1"], {}) is None  # class 3 has no images at all


def test_a_stale_model_is_refused_and_a_malformed_rule_is_invalid() -> None:
    logits, y = _shirts()
    rule = stacked.fit(logits, y, 3, ["m@1"], {"m@1": 1.0})
    assert rule is not None
    with pytest.raises(FailedPrecondition, match="stale"):
        rule.probabilities({"m@1": np.zeros((2, 5))})
    d = rule.to_dict()
    again = stacked.StackedRule.from_dict(d, 3)
    np.testing.assert_allclose(again.probabilities(logits), rule.probabilities(logits), atol=1e-5)
    for change, message in (
        ({"rule": "mean"}, "stacked_logistic"),
        ({"models": []}, "models"),
        ({"heads": [0]}, "positive"),
        ({"coef": [[1.0]]}, "rows of 3"),
        ({"intercept": [float("inf")] * 3}, "finite"),
        ({"temperatures": {"m@1": -1}}, "temperatures"),
    ):
        with pytest.raises(InvalidArgument, match=message):
            stacked.StackedRule.from_dict({**d, **change}, 3)


def _doc(combination_extra: dict[str, Any], version: int) -> dict[str, Any]:
    group = {"model_id": "m@1", "heads": [0], "kind": "exact", "label_score": 0.9}
    return {
        "plan_id": "p",
        "classes": [{"name": n, "heads": []} for n in ("shirt", "T-shirt", "coat")],
        "combination": {
            "schema_version": version,
            "plan": {
                "assignment": [
                    {"class_index": 0, "groups": [group]},
                    {"class_index": 1, "groups": []},
                    {"class_index": 2, "groups": [{**group, "heads": [1]}]},
                ],
                "params": {"temperatures": {"m@1": 1.0}, "weights": [1.0] * 3,
                           "biases": [0.0] * 3, "fitted": False},
                "estimated_accuracy": 1.0, "per_class_accuracy": [1.0, None, 1.0],
                "uncovered": [1], "models": ["m@1"], "solver": "exact", "evaluated": 1,
            },
            **combination_extra,
        },
    }  # fmt: skip


def test_a_schema_2_plan_is_applied_by_its_stacked_rule_and_schema_1_still_served() -> None:
    logits, y = _shirts()
    rule = stacked.fit(logits, y, 3, ["m@1"], {"m@1": 1.0})
    assert rule is not None
    plan = parse_plan(_doc({"stacked": rule.to_dict()}, STACKED_SCHEMA_VERSION))
    assert apply.patch_rule(plan) == "stacked" and apply.models_to_run(plan) == ["m@1"]
    p = apply.probabilities(plan, logits, len(y))
    assert (p.argmax(1) == y).mean() > 0.9  # T-shirts found although no head is mapped to them
    old = parse_plan(_doc({}, 1))
    assert old.stacked is None and apply.patch_rule(old) == "constant"
    assert (apply.probabilities(old, logits, len(y)).argmax(1) == 1).sum() == 0
    with pytest.raises(InvalidArgument, match="stacked"):
        parse_plan(_doc({}, STACKED_SCHEMA_VERSION))


def test_a_broad_model_is_read_through_its_most_class_dependent_heads() -> None:
    logits, y = _shirts()
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 1, size=(y.size, 500))  # 500 heads that say nothing of the task
    wide = {"m@1": logits["m@1"], "broad@1": noise}
    rule = stacked.fit(wide, y, 3, ["m@1", "broad@1"], {})
    assert rule is not None and rule.models == ("broad@1", "m@1")
    # 120 probe images: at most one head per IMAGES_PER_COLUMN of them.
    assert len(rule.columns) == 120 // stacked.IMAGES_PER_COLUMN == rule.coef.shape[1]
    assert len(rule.columns) <= stacked.MAX_COLUMNS
    assert {500, 501, 502} <= set(rule.columns)  # m@1's heads come after broad@1's 500
    # Noise heads that look class-dependent by chance still cost some accuracy (0.94 without
    # them): selection keeps the stacked rule only when it beats the per-class rule.
    assert rule.cv_accuracy > 0.6
    with pytest.raises(InvalidArgument, match="columns"):
        stacked.StackedRule.from_dict({**rule.to_dict(), "columns": [9999]}, 3)


def test_no_rule_beyond_max_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    logits, y = _shirts()
    monkeypatch.setattr(stacked, "MAX_CLASSES", 2)
    assert stacked.fit(logits, y, 3, ["m@1"], {}) is None


def test_an_image_a_plan_model_refuses_is_scored_by_the_per_class_rule_without_it() -> None:
    logits, y = _shirts()
    rule = stacked.fit(logits, y, 3, ["m@1"], {"m@1": 1.0})
    assert rule is not None
    plan = parse_plan(_doc({"stacked": rule.to_dict()}, STACKED_SCHEMA_VERSION))
    refuses = np.zeros(len(y), bool)
    refuses[::7] = True
    p = apply.probabilities(plan, logits, len(y), in_domain={"m@1": ~refuses})
    np.testing.assert_allclose(p[~refuses], apply.probabilities(plan, logits, len(y))[~refuses])
    # The only model refuses those images: the covered classes have no evidence, so the
    # uncovered class (at the offline floor) takes them.
    assert (p[refuses].argmax(1) == 1).all()
    np.testing.assert_allclose(p[refuses][:, 0], p[refuses][:, 2])


def test_the_stacked_rule_may_read_a_model_no_class_is_mapped_to() -> None:
    logits, y = _shirts()
    logits["x@1"] = logits["m@1"][:, ::-1] + np.random.default_rng(1).normal(size=(len(y), 3))
    rule = stacked.fit(logits, y, 3, ["m@1", "x@1"], {"m@1": 1.0, "x@1": 1.0})
    assert rule is not None and rule.models == ("m@1", "x@1")
    doc = _doc({"stacked": rule.to_dict()}, STACKED_SCHEMA_VERSION)
    with pytest.raises(InvalidArgument, match="does not list"):
        parse_plan(doc)  # x@1 is neither mapped to a class nor listed among the models
    doc["combination"]["plan"]["models"] = ["m@1", "x@1"]
    plan = parse_plan(doc)
    assert plan.models == ["m@1", "x@1"] and apply.models_to_run(plan) == ["m@1", "x@1"]
    # (The plan's copy of the rule went through JSON-sized rounding.)
    p = apply.probabilities(plan, logits, len(y))
    np.testing.assert_allclose(p, rule.probabilities(logits), rtol=1e-5)


def test_out_of_fold_recall_per_class_and_the_heads_read() -> None:
    logits, y = _shirts()
    rule = stacked.fit(logits, y, 3, ["m@1"], {"m@1": 1.0})
    assert rule is not None and len(rule.cv_recall) == 3
    # Classes are balanced: the mean recall is the out-of-fold accuracy.
    assert np.mean(rule.cv_recall) == pytest.approx(rule.cv_accuracy)
    assert rule.read_heads() == {("m@1", h) for h in rule.columns}
    again = stacked.StackedRule.from_dict(rule.to_dict(), 3)
    assert again.cv_recall == pytest.approx(rule.cv_recall)
    older = {k: v for k, v in rule.to_dict().items() if k != "cv_recall"}
    assert stacked.StackedRule.from_dict(older, 3).cv_recall == ()  # plans made before it
    with pytest.raises(InvalidArgument, match="cv_recall"):
        stacked.StackedRule.from_dict({**rule.to_dict(), "cv_recall": [1.0]}, 3)


def test_a_plan_served_by_its_stacked_rule_covers_classes_through_the_heads_it_reads() -> None:
    """CHCO left "T-shirt" (class 1) uncovered; the stacked rule reads heads 0 and 1 of m@1.
    A candidate on a head the rule reads covers it (the rule scores it through that head);
    one on a head the rule does not read leaves it uncovered."""
    from dataclasses import replace

    from mllgraph.combine.rule import ClassAssignment, HeadGroup, default_params
    from mllgraph.select import chco, stacked_choice

    logits, y = _shirts()
    shirt, coat = HeadGroup("m@1", (0,), "exact", 0.9), HeadGroup("m@1", (1,), "exact", 0.8)
    assignment = [ClassAssignment(0, (shirt,)), ClassAssignment(1), ClassAssignment(2, (coat,))]
    plan = chco.Plan(
        assignment, default_params(assignment), 0.6, [1.0, 0.0, 1.0], [1], ["m@1"], "exact", 1
    )
    fitted = stacked.fit(logits, y, 3, ["m@1"], {"m@1": 1.0})
    assert fitted is not None
    rule = replace(fitted, columns=(0, 1))  # reads heads 0 and 1, not head 2
    note = {"used": True, "cv_accuracy": rule.cv_accuracy}

    def problem(*candidates: chco.Candidate) -> chco.ChcoProblem:
        base = [chco.Candidate(0, shirt), chco.Candidate(2, coat)]
        return chco.ChcoProblem(3, [*base, *candidates], logits, y, {"m@1": 1.0}, budget=1)

    related = chco.Candidate(1, HeadGroup("m@1", (0, 2), "related", 0.4))
    served, _ = stacked_choice._as_stacked_serves(plan, (rule, note), problem(related), None)
    assert served.uncovered == [] and served.assignment[1].groups == (related.group,)
    assert served.params.biases[1] == pytest.approx(np.log(0.4))
    assert served.per_class_accuracy == list(rule.cv_recall)
    assert served.assignment[0] == assignment[0] and served.assignment[2] == assignment[2]

    unread = chco.Candidate(1, HeadGroup("m@1", (2,), "related", 0.4))
    served, _ = stacked_choice._as_stacked_serves(plan, (rule, note), problem(unread), None)
    assert served.uncovered == [1] and not served.assignment[1].groups
    # A plan its stacked rule does not serve is returned as it is.
    same, _ = stacked_choice._as_stacked_serves(plan, (None, note), problem(related), None)
    assert same is plan
