"""A stacked rule over the classes that have probe images, the per-class rule for the others
(`StackedRule.classes`, `stacked.within`, `plan.apply`, `select.stacked_choice`): pure logic on
synthetic logits with known answers, no server."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from mllgraph.combine import stacked
from mllgraph.combine.rule import ClassAssignment, HeadGroup, default_params
from mllgraph.errors import InvalidArgument
from mllgraph.plan import apply
from mllgraph.plan.document import STACKED_SCHEMA_VERSION, parse_plan, split_uncovered
from mllgraph.select import chco, stacked_choice
from tests.test_stacked import _doc as _stacked_doc
from tests.test_stacked import _shirts as _images

SHIRT = HeadGroup("m@1", (0,), "exact", 0.9)
COAT = HeadGroup("m@1", (1,), "exact", 0.8)


def _problem(logits: dict[str, np.ndarray], y: np.ndarray) -> chco.ChcoProblem:
    candidates = [chco.Candidate(0, SHIRT), chco.Candidate(2, COAT)]
    return chco.ChcoProblem(3, candidates, logits, y, {"m@1": 1.0}, budget=1)


def _without_tshirts() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Probe images of shirts and coats only: the T-shirt concept has no probe set."""
    logits, y = _images()
    keep = y != 1
    return {"m@1": logits["m@1"][keep]}, y[keep]


def _doc(rule: stacked.StackedRule) -> dict[str, Any]:
    """test_stacked's plan document (shirt, T-shirt uncovered, coat) with `rule`."""
    return _stacked_doc({"stacked": rule.to_dict()}, STACKED_SCHEMA_VERSION)


def test_a_class_without_probe_images_leaves_the_stacked_rule_to_the_others() -> None:
    logits, y = _without_tshirts()
    rule = stacked_choice.fit_stacked(_problem(logits, y), ["m@1"])
    assert rule is not None and rule.classes == (0, 2)
    assert rule.coef.shape[0] == 2 and len(rule.cv_recall) == 2
    assert rule.scores(3) == [0, 2]
    # Every class with images: the rule scores them all, as before.
    full_logits, full_y = _images()
    whole = stacked_choice.fit_stacked(_problem(full_logits, full_y), ["m@1"])
    assert whole is not None and whole.classes == () and whole.scores(3) == [0, 1, 2]
    # One class with images is no task for a rule.
    only = y == 0
    assert (
        stacked_choice.fit_stacked(_problem({"m@1": logits["m@1"][only]}, y[only]), ["m@1"]) is None
    )


def test_within_keeps_the_per_class_rule_outside_the_rule_and_its_mass_inside() -> None:
    base = np.array([[0.5, 0.3, 0.2], [0.1, 0.8, 0.1]])
    rule = np.array([[0.25, 0.75], [0.9, 0.1]])
    out = stacked.within(rule, base, [0, 2])
    np.testing.assert_allclose(out[:, 1], base[:, 1])
    np.testing.assert_allclose(out[:, [0, 2]], (base[:, [0, 2]].sum(1, keepdims=True)) * rule)
    np.testing.assert_allclose(out.sum(1), 1.0)
    np.testing.assert_allclose(base, [[0.5, 0.3, 0.2], [0.1, 0.8, 0.1]])  # not modified


def test_a_plan_with_a_partial_rule_round_trips_and_scores_every_class() -> None:
    logits, y = _without_tshirts()
    rule = stacked_choice.fit_stacked(_problem(logits, y), ["m@1"])
    assert rule is not None
    plan = parse_plan(_doc(rule))
    assert plan.stacked is not None and plan.stacked.classes == (0, 2)
    np.testing.assert_allclose(plan.stacked.coef, rule.coef, atol=1e-5)
    # T-shirt is no class of the rule's: the patch (here the constant fallback) scores it.
    assert apply.patch_rule(plan) == "constant"
    all_logits, all_y = _images(seed=5)  # the task's images, T-shirts among them
    p = apply.probabilities(plan, all_logits, len(all_y))
    np.testing.assert_allclose(p.sum(1), 1.0)
    # The per-class rule's share for T-shirt is kept as it is ...
    without = parse_plan({**_doc(rule), "combination": {**_doc(rule)["combination"],
                                                       "schema_version": 1}})  # fmt: skip
    base = apply.probabilities(without, all_logits, len(all_y))
    np.testing.assert_allclose(p[:, 1], base[:, 1])
    # ... and shirts and coats are told apart by the rule.
    shirts_coats = all_y != 1
    assert (p[shirts_coats].argmax(1) == all_y[shirts_coats]).mean() > 0.95


def test_a_malformed_partial_rule_is_refused_by_name() -> None:
    logits, y = _without_tshirts()
    rule = stacked_choice.fit_stacked(_problem(logits, y), ["m@1"])
    assert rule is not None
    d = rule.to_dict()
    for bad in ([2, 0], [0], [0, 1, 2], [0, 3], [0, "1"], [0, 0, 2], "0,2"):
        with pytest.raises(InvalidArgument, match="classes"):
            stacked.StackedRule.from_dict({**d, "classes": bad}, 3)
    with pytest.raises(InvalidArgument, match="coef must be 2 rows"):
        stacked.StackedRule.from_dict({**d, "coef": d["coef"] * 2}, 3)


def test_a_partial_rule_renumbers_with_its_task() -> None:
    logits, y = _without_tshirts()
    rule = stacked_choice.fit_stacked(_problem(logits, y), ["m@1"])
    assert rule is not None
    # The task worded in another order: coat, shirt, T-shirt (class i = old order[i]).
    moved = rule.in_class_order([2, 0, 1])
    assert moved.classes == (0, 1)
    np.testing.assert_allclose(moved.coef, rule.coef[[1, 0]])
    assert moved.cv_recall == (rule.cv_recall[1], rule.cv_recall[0])


def test_a_served_partial_rule_leaves_its_unscored_class_to_the_patch() -> None:
    logits, y = _without_tshirts()
    problem = _problem(logits, y)
    rule = stacked_choice.fit_stacked(problem, ["m@1"])
    assert rule is not None
    assignment = [ClassAssignment(0, (SHIRT,)), ClassAssignment(1), ClassAssignment(2, (COAT,))]
    plan = chco.Plan(
        assignment, default_params(assignment), 0.6, [0.9, 0.4, 0.8], [1], ["m@1"], "exact", 1
    )
    # Even a candidate on a head the rule reads does not make the rule score T-shirt.
    related = chco.Candidate(1, HeadGroup("m@1", (0,), "related", 0.4))
    with_related = replace(problem, candidates=[*problem.candidates, related])
    note = {"used": True, "scored_classes": [0, 2], "cv_accuracy": rule.cv_accuracy}
    served, _ = stacked_choice._as_stacked_serves(plan, (rule, note), with_related, None)
    assert served.uncovered == [1]
    assert served.per_class_accuracy == [rule.cv_recall[0], 0.4, rule.cv_recall[1]]


def test_the_plan_document_says_which_uncovered_classes_the_rule_scores() -> None:
    classes = [{"name": n} for n in ("shirt", "T-shirt", "coat", "hat")]
    plan = {"classes": classes, "uncovered": ["T-shirt", "hat"]}
    assert split_uncovered(plan) == ([], ["T-shirt", "hat"])
    plan["stacked"] = {"used": True}
    assert split_uncovered(plan) == (["T-shirt", "hat"], [])
    plan["stacked"] = {"used": True, "scored_classes": [0, 1, 2]}
    assert split_uncovered(plan) == (["T-shirt"], ["hat"])
    plan["stacked"] = {"used": False, "scored_classes": [0, 1, 2]}
    assert split_uncovered(plan) == ([], ["T-shirt", "hat"])


def test_explain_selection_and_the_cli_say_which_classes_a_partial_rule_scores() -> None:
    from mllgraph.cli.common import console
    from mllgraph.cli.select import print_plan
    from services import plan_messages
    from tests.test_conse import _patch, _plan_with_patch  # cat (covered), coffee (uncovered)

    made = _patch([[0.9, 0.1]], heads=(0,))
    base = _plan_with_patch({**made.to_dict(), "classes": ["coffee"]})
    note = {"used": True, "cv_accuracy": 0.8, "cv_folds": "sources",
            "per_class_rule_accuracy": 0.7, "c": 1.0, "features": 12}  # fmt: skip
    partial = {**base, "stacked": {**note, "scored_classes": [0]}}
    whole = {**base, "stacked": note}
    said = plan_messages.explain(partial, plan_messages.Concepts(None)).notes
    assert any("'coffee'" in n and "ConSE patch" in n for n in said)
    assert not any("scored by the stacked rule" in n for n in said)
    assert any(n.startswith("The stacked rule scores 1 of the 2 classes") for n in said)
    said = plan_messages.explain(whole, plan_messages.Concepts(None)).notes
    assert any("'coffee'" in n and "scored by the stacked rule" in n for n in said)
    with console.capture() as out:
        print_plan({**partial, "params_fitted": True, "created_at": "t"})
    text = out.get()
    assert (
        "ConSE patch" in text
        and "patch: " in text
        and "1 of the 2 classes" in text
        and "coffee (no probe images)" in text
    )


def test_an_estimate_that_held_out_one_of_two_sources_says_it_is_likely_low() -> None:
    from mllgraph.plan.document import held_out_text

    assert held_out_text({"cv_folds": "images"}) == "folds of probe images"
    assert held_out_text({"cv_folds": "sources", "cv_sources": 3}) == (
        "one probe source held out at a time"
    )
    two = held_out_text({"cv_folds": "sources", "cv_sources": 2})
    assert two.startswith("one probe source held out at a time") and "likely low" in two
    # The note records how many sources the folds held out (two styles, three classes).
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(3), 8)
    x = rng.normal(size=(24, 6))
    x[np.arange(24), y] += 4.0
    src = np.tile(np.repeat(["a", "b"], 4), 3)
    from tests.test_stacked_sources import _sourced_problem

    problem, _ = _sourced_problem(x, y, src, sources=True)
    stacked_choice.FITS.clear()
    _, note = stacked_choice._stacked(problem, chco.solve(problem))
    assert note["cv_folds"] == "sources" and note["cv_sources"] == 2
