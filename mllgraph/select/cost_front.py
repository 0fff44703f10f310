"""The accuracy-cost front of a CHCO problem, and the plan served from it.

A plan's cost is the sum of its models' cost per image (ms, `ChcoProblem.model_cost`). CHCO
maximises accuracy under the model count and the cost cap; the front is found by solving again
under a lower cap (the epsilon-constraint method), so each solve yields the best plan the
solver finds that is cheaper than the one before. The plan served is the cheapest on the front
whose estimate lies within `accuracy_slack` of the best estimate (`cheapest_within`): a point
of accuracy is rarely worth ten times the compute. Costs within `COST_TIE` of each other are
not told apart (measurement noise), the estimate decides; so the front is searched at that
resolution: each next cap lies below the last plan's cost divided by 1 + `COST_TIE`, and no
solve is spent telling apart plans the band counts as equally cheap.

Pure: no graph, no files. Imports plan and below, and `select.chco`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mllgraph.plan.request import ACCURACY_SLACK
from mllgraph.select import chco

# Solves per front at most (the first included): each is one CHCO run (on the main hub's
# 10-class tasks, about 100-200 ms of a request's CPU each).
FRONT_MAX_PLANS = 6
# Costs within this fraction of the cheapest eligible plan's count as equal when the plan to
# serve is picked (the better estimate wins among them). A model's measured cost moves
# between measurements (another time, another load); without the band, a rebuilt hub could
# serve another plan for the same task because of that noise alone. 0.25: two measurements of
# one model's cost fell 1.22x apart at the 95th percentile (1.46x at most) on this project's
# 2-core machine (`mllgraph bench cost-repeat`, reports/bench_cost-repeat.json, `pair_ratio`).
COST_TIE = 0.25
# Solves at most, after the walk, looking inside the band below the plan to serve for one
# as good and cheaper (`solve_front`). One found the main job's case; each costs a CHCO solve.
BAND_LOOKS = 1
# A cap just below a plan's cost excludes it: `chco._within_cost` allows 1e-9 relative.
_BELOW = 1e-6


@dataclass(frozen=True)
class FrontPoint:
    """One plan CHCO considered: its models, estimated accuracy and cost (ms per image)."""

    models: tuple[str, ...]
    estimate: float
    cost_ms: float

    def to_dict(self, chosen: bool = False) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "estimated_accuracy": None if math.isnan(self.estimate) else self.estimate,
            "cost_ms_per_image": self.cost_ms,
            "chosen": chosen,
        }


def _score(estimate: float) -> float:
    return -math.inf if estimate is None or math.isnan(estimate) else float(estimate)


def cheapest_within(
    points: Sequence[tuple[float, float]], slack: float, cost_tie: float = COST_TIE
) -> int:
    """Index of the plan to serve among (estimate, cost) points: of those whose estimate is
    within `slack` of the best, the cheapest; but costs within `cost_tie` (relative) of that
    cheapest one count as equal, and of those the higher estimate wins (then the lower cost,
    then the earlier point). A NaN estimate ranks last."""
    if not points:
        raise ValueError("cheapest_within: no points")
    best = max(_score(e) for e, _ in points)
    ok = [i for i, (e, _) in enumerate(points) if _score(e) >= best - slack or best == -math.inf]
    floor = min(points[i][1] for i in ok)
    tied = [i for i in ok if points[i][1] <= floor * (1 + cost_tie)]
    return min(tied, key=lambda i: (-_score(points[i][0]), points[i][1], i))


def non_dominated(points: Sequence[FrontPoint]) -> list[FrontPoint]:
    """The points no other point beats on both estimate and cost (one of equal pairs kept),
    cheapest first."""
    out: list[FrontPoint] = []
    for p in sorted(points, key=lambda p: (p.cost_ms, -_score(p.estimate), p.models)):
        if not out or _score(p.estimate) > _score(out[-1].estimate):
            out.append(p)
    return out


def solve_front(
    problem: chco.ChcoProblem,
    solve_one: Callable[[chco.ChcoProblem], chco.Plan],
    slack: float = ACCURACY_SLACK,
    max_plans: int = FRONT_MAX_PLANS,
    step: float = COST_TIE,
) -> tuple[chco.Plan, list[FrontPoint]]:
    """The plan to serve and the front considered (non-dominated, cheapest first).

    The first solve is under the problem's own budgets; each next one caps the cost below the
    previous plan's divided by 1 + `step` (0: just below it; by default the cost band, within
    which plans count as equally cheap). Stops at a plan with no cost (nothing cheaper
    exists), at one whose estimate falls more than `slack` below the best (no cheaper plan
    could be served), or after `max_plans` solves. Then, with a band, up to BAND_LOOKS
    solves just below the cost of the plan to serve (of two models or more), each kept
    while it finds a plan with an estimate as high: that one is served instead."""
    if not (math.isfinite(slack) and slack >= 0):
        raise ValueError(f"slack is {slack}; expected a finite number >= 0")
    if not (math.isfinite(step) and step >= 0):
        raise ValueError(f"step is {step}; expected a finite number >= 0")
    plans = [solve_one(problem)]
    best = _score(plans[0].estimated_accuracy)
    while len(plans) < max_plans:
        last = plans[-1]
        cost = problem.plan_cost(last.models)
        if not last.models or cost <= 0 or _score(last.estimated_accuracy) < best - slack:
            break
        cap = _cap_below(problem, cost / (1 + step))
        if cap < 0:
            break
        plans.append(solve_one(problem.with_max_cost(cap)))
        best = max(best, _score(plans[-1].estimated_accuracy))
    points = [(p.estimated_accuracy, problem.plan_cost(p.models)) for p in plans]
    chosen = plans[cheapest_within(points, slack)]
    # Inside the band the walk above does not look, and a plan there that is as good as the
    # one to serve (its models less a redundant one, say) is simply better: cheaper at an
    # equal estimate. Whether the walk's caps happened to reach it followed cost noise (the
    # main job's reworded-british-b served 3 or 4 Fashion experts from run to run), so look
    # just below the served plan's cost, while that finds one as good (at most BAND_LOOKS).
    for _ in range(BAND_LOOKS):
        cost = problem.plan_cost(chosen.models)
        if step <= 0 or len(chosen.models) < 2 or cost <= 0:
            break
        found = solve_one(problem.with_max_cost(_cap_below(problem, cost)))
        if not found.models or _score(found.estimated_accuracy) < _score(chosen.estimated_accuracy):
            break
        plans.append(found)
        points.append((found.estimated_accuracy, problem.plan_cost(found.models)))
        chosen = plans[cheapest_within(points, slack)]
    front = non_dominated(
        [FrontPoint(tuple(p.models), float(e), c) for p, (e, c) in zip(plans, points, strict=True)]
    )
    return chosen, front


def _cap_below(problem: chco.ChcoProblem, cost: float) -> float:
    """A cost cap just below `cost` (that cost itself excluded), within the problem's own."""
    cap = cost * (1 - _BELOW) - 1e-9
    return cap if problem.max_cost is None else min(cap, problem.max_cost)


def front_document(front: Sequence[FrontPoint], served: Sequence[str]) -> list[dict[str, Any]]:
    """The plan document's `cost_front`: each point, the served plan's models marked."""
    return [p.to_dict(chosen=set(p.models) == set(served)) for p in front]
