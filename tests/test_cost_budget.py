"""The cost budget (ms per image) in CHCO, on a synthetic hub with a known best plan: a cheap
expert that misses a few images against an expensive model that misses none. Pure: no server."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from mllgraph.combine.rule import HeadGroup
from mllgraph.errors import InvalidArgument
from mllgraph.plan.request import ACCURACY_SLACK, SelectOptions
from mllgraph.select import chco
from mllgraph.select.chco import Candidate, ChcoProblem
from mllgraph.select.cost_front import (
    COST_TIE,
    FrontPoint,
    cheapest_within,
    non_dominated,
    solve_front,
)

PER_CLASS = 100
COSTS = {"cheap": 0.5, "big": 20.0, "mid": 8.0}


def _hub(misses: int, *, max_cost: float | None = None, budget: int = 5) -> ChcoProblem:
    """Three classes of 100 probe images. `big` (20 ms/image) is right on all of them;
    `cheap` (0.5 ms) calls the first `misses` images of class 0 class 1; `mid` (8 ms) is right
    on classes 1 and 2 only and calls every class-0 image class 1. Known best plan: `big`
    alone (accuracy 1, fewest models); cheapest near it: `cheap` (1 - misses / 300)."""
    labels = np.repeat([0, 1, 2], PER_CLASS)
    big = np.eye(3)[labels] * 6.0
    cheap = big.copy()
    cheap[:misses] = np.array([0.0, 6.0, 0.0])
    mid = big.copy()
    mid[labels == 0] = np.array([0.0, 6.0, 0.0])
    logits = {"big": big, "cheap": cheap, "mid": mid}
    cands = [
        Candidate(c, HeadGroup(m, (c,), "exact", 0.9))
        for m in ("big", "cheap", "mid")
        for c in range(3)
    ]
    temps = dict.fromkeys(logits, 1.0)
    return ChcoProblem(3, cands, logits, labels, temps, budget, model_cost=COSTS, max_cost=max_cost)


def _exact(p: ChcoProblem) -> chco.Plan:
    return chco.solve_exact(p)


def _heuristic(p: ChcoProblem) -> chco.Plan:
    return chco.solve_heuristic(p)


@pytest.mark.parametrize("solver", [_exact, _heuristic])
def test_without_cost_cap_the_best_plan_is_the_expensive_one(solver) -> None:
    plan = solver(_hub(misses=1))
    assert plan.models == ["big"]
    assert plan.estimated_accuracy == 1.0


@pytest.mark.parametrize("solver", [_exact, _heuristic])
def test_cost_cap_excludes_the_expensive_plan(solver) -> None:
    plan = solver(_hub(misses=3, max_cost=10.0))
    assert plan.models == ["cheap"]
    assert plan.estimated_accuracy == pytest.approx(1 - 3 / 300)
    # A cap under every model: only the all-uncovered plan fits.
    assert solver(_hub(misses=3, max_cost=0.1)).models == []


@pytest.mark.parametrize("solver", [_exact, _heuristic])
def test_cost_cap_bounds_the_sum_of_the_models_costs(solver) -> None:
    # A budget that fits `mid` or `cheap` alone but not `big`: every plan's total stays under.
    for cap in (0.5, 8.0, 8.5, 19.9, 20.0, 28.5):
        plan = solver(_hub(misses=3, max_cost=cap))
        assert sum(COSTS[m] for m in plan.models) <= cap + 1e-9


@pytest.mark.parametrize("solver", [_exact, _heuristic])
def test_slack_serves_the_cheap_plan_within_half_a_point(solver) -> None:
    # 1 miss in 300: 0.33 points below the best, within 0.5: the cheap plan is served.
    plan, front = solve_front(_hub(misses=1), solver, ACCURACY_SLACK)
    assert plan.models == ["cheap"]
    costs = [p.cost_ms for p in front]
    assert costs == sorted(costs)
    by_models = {p.models: p for p in front}
    assert by_models[("big",)].estimate == 1.0
    assert by_models[("cheap",)].cost_ms == 0.5


@pytest.mark.parametrize("solver", [_exact, _heuristic])
def test_slack_keeps_the_accurate_plan_beyond_half_a_point(solver) -> None:
    # 3 misses in 300: 1 point below the best, outside 0.5: the accurate plan is served.
    plan, front = solve_front(_hub(misses=3), solver, ACCURACY_SLACK)
    assert plan.models == ["big"]
    assert {p.models for p in front} >= {("big",), ("cheap",)}
    # With a wider slack, the cheap one; with none at all, the best (the model-count budget).
    assert solve_front(_hub(misses=3), solver, 0.02)[0].models == ["cheap"]
    assert solve_front(_hub(misses=1), solver, 0.0)[0].models == ["big"]


def test_slack_under_a_cost_cap_stays_under_it() -> None:
    plan, front = solve_front(_hub(misses=3, max_cost=10.0), _exact, ACCURACY_SLACK)
    assert plan.models == ["cheap"]
    assert all(p.cost_ms <= 10.0 for p in front)


def test_costs_break_ties_between_equally_accurate_plans() -> None:
    # Only classes 1 and 2 on probe images: `mid` and `big` are equally right there, and the
    # exact solver keeps the cheaper (`cheap` misses nothing on them either, cheaper still).
    p = _hub(misses=3)
    keep = p.labels != 0
    sub = ChcoProblem(
        3,
        [c for c in p.candidates if c.group.model_id in ("big", "mid") and c.class_index != 0],
        {m: x[keep] for m, x in p.logits_by_model.items()},
        p.labels[keep],
        p.temperatures,
        5,
        model_cost=COSTS,
    )
    assert chco.solve_exact(sub).models == ["mid"]


def test_cheapest_within_and_non_dominated() -> None:
    pts = [(0.90, 30.0), (0.897, 2.0), (0.80, 0.5), (float("nan"), 0.0)]
    assert cheapest_within(pts, 0.005) == 1
    assert cheapest_within(pts, 0.0) == 0
    assert cheapest_within(pts, 0.2) == 2
    # Equal costs: the higher estimate.
    assert cheapest_within([(0.5, 1.0), (0.6, 1.0)], 0.5) == 1
    front = non_dominated(
        [
            FrontPoint(("a",), 0.9, 30.0),
            FrontPoint(("b",), 0.8, 40.0),  # dominated by a
            FrontPoint(("c",), 0.85, 2.0),
        ]
    )
    assert [p.models for p in front] == [("c",), ("a",)]


def test_costs_within_the_tie_band_count_as_equal_and_the_estimate_decides() -> None:
    # Two plans a measurement's noise apart in cost: the better estimate is served.
    near = [(0.900, 27.0), (0.902, 28.0)]
    assert cheapest_within(near, 0.005) == 1
    assert cheapest_within(near, 0.005, cost_tie=0.0) == 0  # the rule without the band
    # Clearly cheaper (beyond the band): the cheaper plan, as before.
    assert cheapest_within([(0.900, 20.0), (0.902, 28.0)], 0.005) == 0
    # The band is measured from the cheapest plan within the slack, not from one outside it.
    assert cheapest_within([(0.80, 1.0), (0.900, 27.0), (0.902, 28.0)], 0.005) == 2
    # Equal estimates in the band: the cheaper.
    assert cheapest_within([(0.90, 28.0), (0.90, 27.0)], 0.005) == 1


def test_cost_noise_within_the_band_does_not_change_the_plan_served() -> None:
    """Costs remeasured with up to 10% error each (less than the band): one plan, always.
    Without the band the same noise flips the choice (so the test can fail)."""
    rng = np.random.default_rng(0)
    chosen, chosen_no_band = set(), set()
    for _ in range(200):
        lite01, lite2 = 27.0 * rng.uniform(0.9, 1.1), 28.0 * rng.uniform(0.9, 1.1)
        pts = [(0.900, lite01), (0.902, lite2), (0.70, 0.5)]
        chosen.add(cheapest_within(pts, 0.005))
        chosen_no_band.add(cheapest_within(pts, 0.005, cost_tie=0.0))
    assert chosen == {1}
    assert chosen_no_band == {0, 1}


# (models, estimate, cost): plans a solver could find, each a little cheaper and worse.
LADDER = {"a": (0.900, 10.0), "b": (0.899, 9.0), "c": (0.898, 7.5), "d": (0.897, 5.0)}
LADDER["e"] = (0.800, 1.0)


def _solver(
    estimates: dict[tuple[str, ...], float], caps: list[float | None]
) -> Callable[[ChcoProblem], chco.Plan]:
    """A solver over these plans (models -> estimate): the best whose cost (the problem's
    `plan_cost`) fits its cap, ties to the bigger plan; records each cap."""
    from dataclasses import replace

    from mllgraph.select.alternatives import uncovered_plan

    def solve(p: ChcoProblem) -> chco.Plan:
        caps.append(p.max_cost)
        fits = [m for m in estimates if p.max_cost is None or p.plan_cost(m) <= p.max_cost]
        best = max(fits, key=lambda m: (estimates[m], len(m)))
        return replace(uncovered_plan(1), models=list(best), estimated_accuracy=estimates[best])

    return solve


def _ladder_solver(caps: list[float | None]) -> Callable[[ChcoProblem], chco.Plan]:
    """A solver over LADDER (its problems' model costs are LADDER's)."""
    return _solver({(m,): estimate for m, (estimate, _) in LADDER.items()}, caps)


def test_the_front_is_searched_at_the_cost_bands_resolution() -> None:
    """Each next cap lies below the last plan's cost / 1.25: `b` (9.0, within the band of
    `a` at 10.0) is never solved for; `c` (7.5) is. The served plan is the same as with the
    fine walk (step 0): the cheapest within the slack, `d`; one solve fewer."""
    costs = {m: cost for m, (_, cost) in LADDER.items()}
    problem = ChcoProblem(1, [], {}, np.zeros(0, dtype=np.int64), {}, 5, model_cost=costs)
    caps: list[float | None] = []
    plan, front = solve_front(problem, _ladder_solver(caps), ACCURACY_SLACK)
    assert plan.models == ["d"]
    assert [p.models for p in front] == [("e",), ("d",), ("c",), ("a",)]
    assert caps[0] is None and len(caps) == 4
    for cap, (_, last_cost) in zip(caps[1:], (LADDER["a"], LADDER["c"], LADDER["d"]), strict=True):
        assert cap is not None and cap < last_cost / (1 + COST_TIE)
    fine: list[float | None] = []
    plan, front = solve_front(problem, _ladder_solver(fine), ACCURACY_SLACK, step=0.0)
    assert plan.models == ["d"] and len(fine) == 5 and ("b",) in [p.models for p in front]
    with pytest.raises(ValueError, match="step"):
        solve_front(problem, _ladder_solver([]), ACCURACY_SLACK, step=-0.1)


# Plans a solver could find (their estimates): the best one carries a model that adds nothing,
# which makes it 19% dearer, inside the band.
REDUNDANT = {("x", "y", "z"): 0.935, ("x", "y"): 0.935, ("x",): 0.90}


def _redundant_solver(caps: list[float | None]) -> Callable[[ChcoProblem], chco.Plan]:
    return _solver(REDUNDANT, caps)


def test_a_plan_as_good_and_cheaper_inside_the_band_is_served() -> None:
    """The walk's second cap (1.90 / 1.25 = 1.52) passes over ("x", "y") at 1.60, as good as
    ("x", "y", "z"); the look just below the served plan's cost finds it, whatever the
    measured costs' noise within the band."""
    costs = {"x": 1.0, "y": 0.6, "z": 0.3}
    problem = ChcoProblem(1, [], {}, np.zeros(0, dtype=np.int64), {}, 5, model_cost=costs)
    caps: list[float | None] = []
    plan, front = solve_front(problem, _redundant_solver(caps), ACCURACY_SLACK)
    assert plan.models == ["x", "y"]
    assert [p.models for p in front] == [("x",), ("x", "y")]
    assert caps[1] is not None and caps[1] < 1.60  # the walk passed over ("x", "y")
    assert caps[2] is not None and 1.60 < caps[2] < 1.90  # the look inside the band
    # Other rounds of measured costs, each within 10%: the same plan.
    rng = np.random.default_rng(1)
    for _ in range(20):
        noisy = {m: c * rng.uniform(0.9, 1.1) for m, c in costs.items()}
        again = ChcoProblem(1, [], {}, np.zeros(0, dtype=np.int64), {}, 5, model_cost=noisy)
        assert solve_front(again, _redundant_solver([]), ACCURACY_SLACK)[0].models == ["x", "y"]


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "5"])
def test_a_bad_max_cost_is_refused_naming_it(bad) -> None:
    with pytest.raises(InvalidArgument, match="max_cost"):
        _hub(misses=1, max_cost=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="max_cost_ms"):
        SelectOptions(max_cost_ms=bad).validate()  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan])
def test_a_bad_accuracy_slack_is_refused_naming_it(bad) -> None:
    with pytest.raises(InvalidArgument, match="accuracy_slack"):
        SelectOptions(accuracy_slack=bad).validate()


def test_select_options_cost_cap() -> None:
    assert SelectOptions().cost_cap is None
    assert SelectOptions(max_cost_ms=12.5).cost_cap == 12.5
    assert SelectOptions().accuracy_slack == ACCURACY_SLACK == 0.005
