"""The stacked rule's model screen (mllgraph.combine.screen): pure, no server."""

from __future__ import annotations

from typing import Any

import numpy as np

from mllgraph.combine.screen import class_mean_distances, greedy_models, shortlist
from mllgraph.plan import request as plan_request


def test_leave_one_out_distances_equal_the_brute_force() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    y = np.repeat([0, 1, 2], 10)
    d = class_mean_distances(x, y, 3)
    z = (x - x.mean(0)) / x.std(0)
    for i in range(len(y)):
        for c in range(3):
            members = (y == c) & (np.arange(len(y)) != i)
            expected = ((z[i] - z[members].mean(0)) ** 2).mean()
            assert np.isclose(d[i, c], expected)


def _hub(n_per_class: int = 30, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Three classes. "narrow" has one head per class but sees classes 1 and 2 alike;
    "broad" has 50 heads, a few of which tell all three apart; "noise" tells nothing."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], n_per_class)
    narrow = rng.normal(0, 1.0, size=(y.size, 3))
    narrow[y == 0, 0] += 4
    narrow[y >= 1, 1] += 4
    broad = rng.normal(0, 1.0, size=(y.size, 50))
    for c in range(3):
        broad[y == c, 10 + c] += 3
    return {"narrow": narrow, "broad": broad, "noise": rng.normal(size=(y.size, 5))}, y


def test_the_screen_picks_the_models_that_separate_the_classes() -> None:
    logits, y = _hub()
    temps = {m: 1.0 for m in logits}
    picked, acc = greedy_models(logits, temps, sorted(logits), y, 3, budget=1)
    assert picked == ["broad"] and acc > 0.9
    picked, _ = greedy_models(logits, temps, sorted(logits), y, 3, budget=3)
    assert "broad" in picked and "noise" not in picked  # no model that adds nothing
    assert greedy_models(logits, temps, [], y, 3, budget=3) == ([], 0.0)


def test_a_second_pool_reuses_the_first_pools_distances() -> None:
    """`known` carries each model's distances from one screen to the next of the same task:
    the same picks as screens that compute their own, and a model's distances are computed
    once (the same array object is read by the second screen)."""
    logits, y = _hub(seed=3)
    temps = {m: 1.0 for m in logits}
    known: dict[str, np.ndarray] = {}
    first = greedy_models(logits, temps, sorted(logits), y, 3, 2, None, known)
    assert first == greedy_models(logits, temps, sorted(logits), y, 3, 2)
    assert sorted(known) == sorted(logits)
    held = dict(known)
    second = greedy_models(logits, temps, ["narrow", "noise"], y, 3, 2, None, known)
    assert second == greedy_models(logits, temps, ["narrow", "noise"], y, 3, 2)
    assert all(known[m] is held[m] for m in held)  # nothing computed again


def test_the_shortlist_keeps_the_models_covering_most_of_the_task() -> None:
    coverage = {"a": {0: 0.9}, "b": {0: 0.5, 1: 0.5}, "c": {0: 0.9, 1: 0.9}, "d": {2: 1.0}}
    assert shortlist(coverage, keep=2) == ["b", "c"]
    assert shortlist(coverage, keep=10) == ["a", "b", "c", "d"]


def _narrow_candidates_broad_unmapped(budget: int) -> tuple[Any, Any, Any]:
    """`_hub`'s narrow model as the only candidates (head 1 for both classes 1 and 2), its
    broad model loaded but mapped to nothing; CHCO's plan for them."""
    from mllgraph.combine.rule import HeadGroup
    from mllgraph.select import chco
    from mllgraph.select.alternatives import solve

    logits, y = _hub(n_per_class=40)
    logits = {"narrow@1": logits["narrow"], "broad@1": logits["broad"]}
    candidates = [
        chco.Candidate(c, HeadGroup("narrow@1", (head,), "exact", 0.9))
        for c, head in ((0, 0), (1, 1), (2, 1))
    ]
    problem = chco.ChcoProblem(3, candidates, logits, y, {m: 1.0 for m in logits}, budget=budget)
    options = plan_request.SelectOptions(budget=budget)
    return problem, options, solve(problem, options)


def test_selection_screens_a_broad_expert_that_has_no_candidate_heads() -> None:
    """In a big hub the candidates query keeps narrow experts' heads only (they outscore a
    broad expert's); selection hands the sub-hub's broadest experts to the screen beside
    them (select/broad_models), and the stacked rule may then read one with no head mapped
    to any class."""
    from mllgraph.select.stacked_choice import stacked_choice

    problem, options, plan = _narrow_candidates_broad_unmapped(budget=2)
    assert plan.models == ["narrow@1"]

    alone, _ = stacked_choice(problem, plan, options)
    assert alone.models == ["narrow@1"]  # the broad expert is not among the candidates
    served, fit = stacked_choice(problem, plan, options, ["broad@1"])
    assert "broad@1" in served.models
    assert fit is not None and fit[0] is not None and fit[1]["used"]
    assert fit[1]["cv_accuracy"] > 0.9 and "broad@1" in fit[0].models


def test_a_screened_broad_expert_is_mapped_to_the_classes_through_its_own_heads() -> None:
    """The plan served for the screen's models maps each class to those models' own best
    heads (selection asks the candidates query for them alone), so a class the broad expert
    has a head for is covered, not left to the stacked rule as 'uncovered'."""
    from mllgraph.combine.rule import HeadGroup
    from mllgraph.select import chco
    from mllgraph.select.stacked_choice import stacked_choice

    problem, options, plan = _narrow_candidates_broad_unmapped(budget=1)
    asked: list[list[str]] = []

    def own(models: list[str]) -> list[chco.Candidate]:
        asked.append(sorted(models))
        if "broad@1" not in models:
            return []
        return [chco.Candidate(c, HeadGroup("broad@1", (10 + c,), "exact", 0.3)) for c in range(3)]

    without, _ = stacked_choice(problem, plan, options, ["broad@1"])
    assert without.models == ["broad@1"] and without.uncovered == [0, 1, 2]
    served, fit = stacked_choice(problem, plan, options, ["broad@1"], own)
    assert asked and all("broad@1" in a for a in asked)
    assert served.models == ["broad@1"] and served.uncovered == []
    assert [g.model_id for a in served.assignment for g in a.groups] == ["broad@1"] * 3
    # Its own heads serve it best through the per-class rule here, which beats CHCO's plan.
    assert fit is not None and fit[0] is None and not fit[1]["used"]
    assert served.estimated_accuracy > fit[1]["chco_served_estimate"]


def _costed(budget: int) -> tuple[Any, Any, Any]:
    """`_narrow_candidates_broad_unmapped` with model costs (the broad expert the dearer),
    so that the screen runs over both pools and three stacked fits are compared."""
    from dataclasses import replace

    problem, options, plan = _narrow_candidates_broad_unmapped(budget)
    return replace(problem, model_cost={"narrow@1": 1.0, "broad@1": 20.0}), options, plan


def test_the_stacked_fits_on_the_work_pool_give_the_same_plan() -> None:
    """stacked_choice's fits run at once on a pool while it screens: the plan, the rule and
    the note are those of the fits run one after another."""
    from mllgraph import threads
    from mllgraph.select import stacked_choice as sc

    problem, options, plan = _costed(budget=2)
    sc.FITS.clear()  # every fit computed, on both sides
    alone = sc.stacked_choice(problem, plan, options, ["broad@1"], pool=None)
    sc.FITS.clear()
    pooled = sc.stacked_choice(problem, plan, options, ["broad@1"], pool=threads.work_pool(2))
    assert pooled[0] == alone[0]
    (rule_a, note_a), (rule_p, note_p) = alone[1], pooled[1]
    assert note_p == note_a and "screens" in note_a
    assert rule_a is not None and rule_p is not None
    assert rule_p.to_dict() == rule_a.to_dict()


def test_a_passed_deadline_stops_the_fits_on_the_work_pool() -> None:
    """The request's deadline travels with its fits into the pool's threads: one that has
    passed ends the selection with DEADLINE_EXCEEDED's error, not a plan."""
    import pytest

    from mllgraph import threads
    from mllgraph.errors import DeadlineExceeded
    from mllgraph.graph import deadline
    from mllgraph.select import stacked_choice as sc

    problem, options, plan = _costed(budget=2)
    sc.FITS.clear()
    with deadline.within(-1.0), pytest.raises(DeadlineExceeded, match="stacked rule's fit"):
        sc.stacked_choice(problem, plan, options, ["broad@1"], pool=threads.work_pool(2))
