"""The stacked rule's choice: which models it reads, and the plan as it serves it.

- `broad_models`: the sub-hub's broadest labelled experts, which the screen considers beside
  the candidates' models (`select/broad_models`, through `select.reads`).
- `fit_stacked`: the stacked rule over some models, kept across requests (`FITS`) by what
  the fit depends on (`stacked.fit_key`).
- `stacked_choice`: CHCO's plan with the stacked rule (`mllgraph.combine.stacked`) over its
  models, or the plan over the models the screen (`mllgraph.combine.screen`) picks, whichever
  serves the probe images better; the plan as that rule serves it (`StackedFit`: the rule,
  kept or not, and the plan document's `stacked` note). Its fits run at once on the work pool
  (`threads.work_pool`) while the screen goes on.

Imports threads, graph.deadline, plan, combine and below, and `select.alternatives`,
`select.cache`, `select.chco`, `select.reads`; must not import `select.run` or anything above
select.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import replace
from typing import Any

import numpy as np

from mllgraph import threads
from mllgraph.combine import screen as feature_sets
from mllgraph.combine import stacked
from mllgraph.combine.rule import (
    QUALITY_FLOOR,
    ClassAssignment,
    HeadGroup,
    class_scores,
    fallback_evidence,
)
from mllgraph.graph import deadline
from mllgraph.plan.request import SelectOptions, TaskClass
from mllgraph.select import chco
from mllgraph.select.alternatives import solve, uncovered_plan
from mllgraph.select.cache import MISSING, FitCache
from mllgraph.select.cost_front import cheapest_within
from mllgraph.select.reads import Reads

StackedFit = tuple[stacked.StackedRule | None, dict[str, Any]]

# This process's fitted stacked rules (a rule is at most 32 x 256 numbers: 64 KiB).
FITS = FitCache(256)


def broad_models(
    reads: Reads, classes: Sequence[TaskClass], options: SelectOptions
) -> list[dict[str, Any]]:
    """The sub-hub's broadest labelled experts, which the stacked rule's screen considers
    beside the candidates' models (`select/broad_models`); none where no stacked rule is
    fitted."""
    if not options.fit_params or len(classes) > stacked.MAX_CLASSES:
        return []
    return reads.broad_models(feature_sets.BROAD_MIN_HEADS, feature_sets.BROAD_MODELS, options)


def stacked_choice(
    problem: chco.ChcoProblem,
    plan: chco.Plan,
    options: SelectOptions,
    broad: Sequence[str] = (),
    own_candidates: Callable[[Sequence[str]], list[chco.Candidate]] | None = None,
    pool: Executor | None = None,
) -> tuple[chco.Plan, StackedFit | None]:
    """CHCO's plan with the stacked rule over its models, or, when the screen
    (`feature_sets.greedy_models`, over the candidates' best-covering models, CHCO's and the
    `broad` experts) picks other models for the stacked rule, CHCO's plan restricted to
    those with the stacked rule over them: whichever serves the probe images better (the
    stacked rule's out-of-fold accuracy where it is kept, else the per-class rule's
    estimate, for either plan), by the same rule as CHCO's front: the cheapest (ms per
    image) unless another is more than `options.accuracy_slack` better, costs within
    `cost_front.COST_TIE` counted as equal (the better estimate). Ties keep CHCO's.
    With model costs the screen runs twice: over every model, and over the models no
    costlier than CHCO's whole plan. The screen's models must fit the problem's cost cap.
    `own_candidates(models)`: those models' own candidate heads, for CHCO's plan restricted
    to them (the problem's candidates may hold none of a broad expert's).

    The stacked fits, independent of each other, run on `pool` (`threads.work_pool`; None:
    one after another in this thread) while this thread screens: the same plan either way."""
    if not plan.models or not can_fit(problem, plan.models):
        return plan, None  # no stacked rule possible (fewer than two classes with images, ...)
    first_at = threads.run_in(pool, _stacked, problem, plan)
    coverage: dict[str, dict[int, float]] = {}
    for c in problem.candidates:
        best = coverage.setdefault(c.group.model_id, {})
        best[c.class_index] = max(best.get(c.class_index, 0.0), c.group.label_score)
    screened = sorted({*feature_sets.shortlist(coverage), *plan.models, *broad})
    # Each screen's option, CHCO's restricted to its models: (models, plan, its fit's future).
    pending: list[tuple[list[str], chco.Plan, Future[StackedFit | None]]] = []
    tried: list[list[str]] = []
    over_cost: float | None = None
    # The screen over every screened model, and again over those no costlier than CHCO's
    # whole plan: the first finds the most separating models whatever they cost, the second
    # the cheap ones that might serve within the slack of it.
    chco_cost = problem.plan_cost(plan.models)
    cheap = [m for m in screened if problem.plan_cost([m]) <= chco_cost]
    groups = stacked.source_folds(problem.labels, problem.num_classes, row_sources(problem))
    distances: dict[str, np.ndarray] = {}  # per model, for both pools (the cheap within all)
    for models in (screened, cheap) if problem.model_cost else (screened,):
        picked, _ = feature_sets.greedy_models(
            problem.logits_by_model, problem.temperatures, models, problem.labels,
            problem.num_classes, problem.budget, groups, distances,
        )  # fmt: skip
        if not picked or set(picked) == set(plan.models) or picked in tried:
            continue
        tried.append(picked)
        if problem.max_cost is not None and problem.plan_cost(picked) > problem.max_cost:
            over_cost = problem.plan_cost(picked)
            continue
        pending.append((picked, *_screened(problem, options, picked, own_candidates, pool)))
    first = first_at.result()
    if first is None:  # (a fitter that refuses what `can_fit` allows: the plan as it is)
        return plan, None
    if over_cost is not None:
        first[1]["screened_over_cost"] = over_cost
    # Each option as it would be served, CHCO's first: (plan, fit, estimate, screened models).
    options_: list[tuple[chco.Plan, StackedFit, float, list[str]]] = []
    for picked, solved, second_at in pending:
        found = _as_screened(solved, picked, second_at.result())
        if found is not None:
            options_.append((*found, picked))
    current = first[1]["cv_accuracy"] if first[0] is not None else plan.estimated_accuracy
    if tried:
        first[1]["screened_models"] = tried[0]
    screens = [
        {"models": m, "served_estimate": e, "cost_ms_per_image": problem.plan_cost(o.models)}
        for o, _, e, m in options_
    ]
    # As CHCO's front: the cheapest unless another is more than the slack better (ties, and
    # costs equal: CHCO's).
    points = [(current, chco_cost)] + [(e, problem.plan_cost(o.models)) for o, _, e, _ in options_]
    best = cheapest_within(points, options.accuracy_slack)
    if best == 0:
        first[1]["screens"] = screens
        return _as_stacked_serves(plan, first, problem, own_candidates)
    other, second, _, picked = options_[best - 1]
    second[1]["screens"] = screens
    second[1]["screened_models"] = picked
    second[1]["chco_models"] = list(plan.models)
    second[1]["chco_served_estimate"] = current
    return _as_stacked_serves(other, second, problem, own_candidates)


def _screened(
    problem: chco.ChcoProblem,
    options: SelectOptions,
    picked: list[str],
    own_candidates: Callable[[Sequence[str]], list[chco.Candidate]] | None,
    pool: Executor | None,
) -> tuple[chco.Plan, Future[StackedFit | None]]:
    """CHCO's plan restricted to the screen's `picked` models, and the future of the
    stacked rule over them (on `pool`)."""
    kept = [c for c in problem.candidates if c.group.model_id in picked]
    if own_candidates is not None:
        kept += own_candidates(picked)  # (ChcoProblem drops duplicates)
    sub = replace(problem, candidates=kept)
    solved = solve(sub, options) if sub.candidates else uncovered_plan(problem.num_classes)
    # The stacked rule reads every picked model, even one CHCO maps no class to (a broad
    # expert may have no candidate heads at all).
    return solved, threads.run_in(pool, _stacked, sub, replace(solved, models=picked))


def _as_screened(
    solved: chco.Plan, picked: list[str], second: StackedFit | None
) -> tuple[chco.Plan, StackedFit, float] | None:
    """A screen's option as it would be served: (the plan, its fit, its served estimate):
    its stacked rule where kept, else its per-class rule (which reads only the models it
    maps); None when no stacked rule fits."""
    if second is None:
        return None
    if second[0] is not None:
        return replace(solved, models=picked), second, second[1]["cv_accuracy"]
    return solved, second, solved.estimated_accuracy


def _as_stacked_serves(
    plan: chco.Plan,
    fit: StackedFit,
    problem: chco.ChcoProblem,
    own_candidates: Callable[[Sequence[str]], list[chco.Candidate]] | None,
) -> tuple[chco.Plan, StackedFit]:
    """The plan as its stacked rule serves it (unchanged when the rule is not kept): per
    class, the rule's out-of-fold recall as the estimate; and a class CHCO left uncovered
    covered by its best candidate head group (the class's concept, below or above it, in the
    plan's models) of which the rule reads a head, since the rule scores the class through
    it. A class with no such group stays uncovered (the rule scores it from other heads)."""
    rule = fit[0]
    if rule is None:
        return plan, fit
    scored = rule.scores(problem.num_classes)
    per_class = list(plan.per_class_accuracy)
    for c, recall in zip(scored, rule.cv_recall or (), strict=False):
        per_class[c] = recall
    plan = replace(plan, per_class_accuracy=per_class)
    if not set(plan.uncovered) & set(scored):
        return plan, fit
    read = rule.read_heads()
    pool = [*problem.candidates, *(own_candidates(rule.models) if own_candidates else ())]
    pool.sort(key=lambda c: (-c.group.label_score, c.sort_key()))
    found: dict[int, HeadGroup] = {}
    for c in pool:
        if c.class_index not in plan.uncovered or c.class_index in found:
            continue
        if c.class_index not in scored:  # the per-class rule's patch scores it
            continue
        if any((c.group.model_id, h) in read for h in c.group.heads):
            found[c.class_index] = c.group
    if not found:
        return plan, fit
    assignment = [
        ClassAssignment(a.class_index, (found[a.class_index],)) if a.class_index in found else a
        for a in plan.assignment
    ]
    biases = plan.params.biases.copy()
    temperatures = dict(plan.params.temperatures)
    for ci, g in found.items():  # the parameter-free rule's bias (reuse.rule.default_params)
        biases[ci] = math.log(max(g.label_score, QUALITY_FLOOR))
        temperatures.setdefault(g.model_id, problem.temperatures.get(g.model_id, 1.0))
    params = replace(plan.params, temperatures=temperatures, biases=biases)
    uncovered = [c for c in plan.uncovered if c not in found]
    return replace(plan, assignment=assignment, params=params, uncovered=uncovered), fit


def fit_stacked(problem: chco.ChcoProblem, models: Sequence[str]) -> stacked.StackedRule | None:
    """`stacked.fit` over `models` on the problem's probe images, kept in `FITS` when the
    problem says which probe images form each class: fitted with the classes in their
    canonical order (so a task worded or ordered otherwise finds the same fit) and
    returned in the problem's order. Where some classes have no probe images at all, the
    rule is fitted on the others (at least two) and scores only those
    (`StackedRule.classes`): the per-class rule, with its heads or its patch, scores the
    rest (`plan.apply`). Before, one such class cost the whole task the stacked rule."""
    if not can_fit(problem, models):
        return None
    probed = stacked.probed_classes(problem.labels, problem.num_classes).tolist()
    if len(probed) < problem.num_classes:
        rule = _fit_stacked(_restricted(problem, probed), models)
        return None if rule is None else replace(rule, classes=tuple(probed))
    return _fit_stacked(problem, models)


def can_fit(problem: chco.ChcoProblem, models: Sequence[str]) -> bool:
    """Whether `fit_stacked` can fit a rule over `models` (`stacked.fittable` on the classes
    that have probe images, at least two of them), without fitting it."""
    probed = stacked.probed_classes(problem.labels, problem.num_classes)
    if probed.size < 2:
        return False
    return stacked.fittable(np.searchsorted(probed, problem.labels), int(probed.size), models)


def _restricted(problem: chco.ChcoProblem, classes: Sequence[int]) -> chco.ChcoProblem:
    """The problem on `classes` only (renumbered 0..), every probe image kept: the other
    classes have none."""
    remap = np.full(problem.num_classes, -1, dtype=np.int64)
    remap[list(classes)] = np.arange(len(classes))
    probes = problem.class_probes
    return replace(
        problem,
        num_classes=len(classes),
        candidates=[
            replace(c, class_index=int(remap[c.class_index]))
            for c in problem.candidates
            if remap[c.class_index] >= 0
        ],
        labels=remap[problem.labels],
        class_probes=None if probes is None else tuple(probes[c] for c in classes),
    )


def _fit_stacked(problem: chco.ChcoProblem, models: Sequence[str]) -> stacked.StackedRule | None:
    fitter = stacked.fit
    if problem.class_probes is None:
        return fitter(
            problem.logits_by_model, problem.labels, problem.num_classes, models,
            problem.temperatures,
        )  # fmt: skip
    order = stacked.canonical_order(problem.class_probes)
    rank = np.empty(problem.num_classes, dtype=np.int64)
    rank[order] = np.arange(problem.num_classes)  # rank[c]: class c's canonical position
    # The fitter is part of the key: the side-by-side comparison swaps it (scripts/).
    key = (
        fitter.__module__,
        *stacked.fit_key(
            models, problem.temperatures, problem.class_probes, sources=problem.probe_sources
        ),
    )
    canonical = FITS.get(key)
    if canonical is MISSING:
        canonical = fitter(
            problem.logits_by_model, rank[problem.labels], problem.num_classes, models,
            problem.temperatures, sources=row_sources(problem),
        )  # fmt: skip
        FITS.put(key, canonical)
    return None if canonical is None else canonical.in_class_order(rank)


def row_sources(problem: chco.ChcoProblem) -> np.ndarray | None:
    """(N,) the source of each probe image (`stacked.row_sources`); None when the problem
    does not say which sets its images come from."""
    if problem.class_probes is None or problem.probe_sources is None:
        return None
    return stacked.row_sources(problem.class_probes, problem.probe_sources)


def _stacked(problem: chco.ChcoProblem, plan: chco.Plan) -> StackedFit | None:
    """The stacked rule for the chosen models, kept only when its out-of-fold accuracy on the
    probe images beats the per-class rule's (in-sample) accuracy there (combine/stacked).

    Where its estimate holds probe sources out (`StackedRule.cv_folds` "sources"), it is kept
    whenever it fits: the per-class rule's figure is then no fair bar, measured on the very
    sources its heads and weights were chosen on, and an image of a new source (an unseen
    art style) is what the plan will meet. So every plan `stacked_choice` compares is then
    estimated the same way. (Emoji world, dev half, three probe styles, held-out twemoji:
    MLL 0.784 -> 0.793 over 19 tasks; scripts/ab_emoji.py --experiment source-folds.)"""
    if not plan.models:
        return None
    deadline.check("the stacked rule's fit")
    rule = fit_stacked(problem, plan.models)
    if rule is None:
        return None
    logits = {m: problem.logits_by_model[m] for m in plan.models}
    extra = fallback_evidence(problem.num_images, plan.uncovered) if plan.uncovered else None
    z = class_scores(logits, plan.assignment, plan.params, extra_evidence=extra)
    per_class = float((z.argmax(1) == problem.labels).mean())
    used = rule.cv_folds == "sources" or rule.cv_accuracy > per_class
    # A probe set keeps its source only where its concept has sets from two sources or more
    # (select.probe_data.probe_sources): the named sources are those the folds hold out.
    sources = row_sources(problem) if rule.cv_folds == "sources" else None
    held_out = len({s for s in sources if s}) if sources is not None else None
    note = {
        "used": used,
        **({"scored_classes": list(rule.classes)} if rule.classes else {}),
        "cv_accuracy": rule.cv_accuracy,
        "cv_folds": rule.cv_folds,
        # How many sources the folds hold out in turn: with two, each fold's rule learns from
        # one source only, and the estimate is low for a rule that learns from both.
        **({"cv_sources": held_out} if held_out else {}),
        "per_class_rule_accuracy": per_class,
        "c": rule.c,
        "features": len(rule.columns),
    }
    return (rule if used else None), note
