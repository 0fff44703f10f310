"""CHCO: exact optimality on a crafted trap, budget, determinism, validation, and the
heuristic-vs-exact gap study."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import numpy as np
import pytest

from mllgraph.combine.rule import (
    ClassAssignment,
    HeadGroup,
    accuracy,
    combine,
    default_params,
    fallback_evidence,
)
from mllgraph.errors import InvalidArgument
from mllgraph.eval.gap_study import gap_study, synthetic_problem
from mllgraph.select import chco
from mllgraph.select import chco_kernels as kernels
from mllgraph.select.chco import (
    Candidate,
    ChcoProblem,
    Plan,
    exact_search_size,
    solve,
    solve_exact,
    solve_heuristic,
)

BAG, TROUSER, SANDAL = 0, 1, 2


def _trap_problem(budget: int = 2, per_class: int = 4) -> ChcoProblem:
    """Closed-set trap: model A knows {bag, trouser} very well (label score 0.95) but calls
    every sandal a bag; model B knows all three a bit less well (0.8). Picking per class the
    best label score (bag, trouser -> A; sandal -> B) loses every sandal image."""
    labels = np.repeat([BAG, TROUSER, SANDAL], per_class)
    a_rows = {BAG: [3.0, 0.0], TROUSER: [0.0, 3.0], SANDAL: [3.0, 0.0]}
    b_rows = {BAG: [2.0, 0.0, 0.0], TROUSER: [0.0, 2.0, 0.0], SANDAL: [0.0, 0.0, 2.0]}
    logits = {
        "A": np.array([a_rows[int(y)] for y in labels]),
        "B": np.array([b_rows[int(y)] for y in labels]),
    }
    cands = [
        Candidate(BAG, HeadGroup("A", (0,), "exact", 0.95)),
        Candidate(TROUSER, HeadGroup("A", (1,), "exact", 0.95)),
        Candidate(BAG, HeadGroup("B", (0,), "exact", 0.8)),
        Candidate(TROUSER, HeadGroup("B", (1,), "exact", 0.8)),
        Candidate(SANDAL, HeadGroup("B", (2,), "exact", 0.8)),
    ]
    return ChcoProblem(3, cands, logits, labels, {"A": 1.0, "B": 1.0}, budget)


def _greedy_by_label_score(problem: ChcoProblem) -> list[ClassAssignment]:
    best: dict[int, HeadGroup] = {}
    for c in problem.candidates:
        if c.class_index not in best or c.group.label_score > best[c.class_index].label_score:
            best[c.class_index] = c.group
    return [ClassAssignment(k, (best[k],) if k in best else ()) for k in range(problem.num_classes)]


def test_exact_beats_greedy_by_label_score_on_closed_set_trap() -> None:
    problem = _trap_problem(budget=2)
    naive = _greedy_by_label_score(problem)
    naive_acc = accuracy(
        combine(problem.logits_by_model, naive, default_params(naive)), problem.labels
    )
    assert naive_acc == pytest.approx(8 / 12)  # every sandal called a bag
    plan = solve_exact(problem)
    assert plan.estimated_accuracy == 1.0
    # Among the perfect assignments, the tie-break takes the highest mean label score:
    # bag -> B (A would take the sandals), trouser -> A, sandal -> B.
    chosen = [(a.groups[0].model_id, a.groups[0].heads) for a in plan.assignment]
    assert chosen == [("B", (0,)), ("A", (1,)), ("B", (2,))]
    assert plan.solver == "exact" and plan.models == ["A", "B"] and plan.uncovered == []
    assert plan.evaluated == exact_search_size(problem) == 3 * 3 * 2
    heur = solve_heuristic(problem)
    assert heur.estimated_accuracy == 1.0
    # Budget 1: only B can cover all three.
    one = solve_exact(_trap_problem(budget=1))
    assert one.models == ["B"] and one.estimated_accuracy == 1.0
    assert solve_heuristic(_trap_problem(budget=1)).models == ["B"]


def test_budget_respected_and_plan_consistent_with_combine() -> None:
    for seed in range(6):
        for budget in (1, 2, 3):
            problem = synthetic_problem(seed, 6, 8, 4, 6, budget)
            plans = [solve_heuristic(problem), solve(problem, fit=False)]
            if exact_search_size(problem) <= 50_000:
                plans.append(solve_exact(problem))
            for plan in plans:
                assert len(plan.models) <= budget
                assert {a.groups[0].model_id for a in plan.assignment if a.groups} == set(
                    plan.models
                )
                assert plan.uncovered == [a.class_index for a in plan.assignment if not a.groups]
                # As inference scores it: uncovered classes at the offline floor.
                floor = fallback_evidence(problem.num_images, plan.uncovered)
                probs = combine(
                    problem.logits_by_model, plan.assignment, plan.params, extra_evidence=floor
                )
                assert accuracy(probs, problem.labels) == plan.estimated_accuracy


def test_internal_evaluator_matches_combine() -> None:
    """The heuristic's incremental top-2 bookkeeping and batched first-order pass agree with
    a from-scratch argmax of combine() scores."""
    problem = synthetic_problem(11, 7, 10, 4, 8, 3)
    prep = chco._prepare(problem)
    state = chco._State(prep)
    rng = np.random.default_rng(0)
    for _ in range(40):
        c = int(rng.integers(0, prep.k))
        ids = np.arange(prep.start[c], prep.start[c + 1])
        cand = int(rng.choice(np.append(ids, -1)))
        state.set(c, cand)
        assignment = [
            ClassAssignment(k, (prep.cands[i].group,) if i >= 0 else ())
            for k, i in enumerate(state.choice)
        ]
        probs = combine(problem.logits_by_model, assignment, default_params(assignment))
        assert state.count == int((probs.argmax(axis=1) == problem.labels).sum())
        first = state.first_order()
        for k in range(prep.k):
            lo, hi = prep.start[k], prep.start[k + 1]
            if hi > lo:
                np.testing.assert_array_equal(first[lo:hi], _totals(state, k, prep.scores[lo:hi]))


def test_determinism_and_candidate_order_invariance() -> None:
    problem = synthetic_problem(5, 8, 12, 4, 10, 2)
    shuffled = list(problem.candidates)
    np.random.default_rng(1).shuffle(shuffled)
    again = ChcoProblem(
        problem.num_classes,
        shuffled,
        problem.logits_by_model,
        problem.labels,
        problem.temperatures,
        problem.budget,
    )
    for solver in (solve_heuristic, solve):
        assert solver(problem).to_dict() == solver(again).to_dict()
    small = synthetic_problem(2, 4, 6, 3, 6, 2)
    assert solve_exact(small) == solve_exact(small)
    assert (
        synthetic_problem(3, 5, 6, 3, 5, 2).candidates
        == synthetic_problem(3, 5, 6, 3, 5, 2).candidates
    )


def test_plan_json_round_trip() -> None:
    plan = solve(synthetic_problem(4, 5, 7, 3, 8, 2))
    back = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert back == plan
    assert back.params == plan.params
    with pytest.raises(InvalidArgument, match="Plan.models is missing"):
        Plan.from_dict({k: v for k, v in plan.to_dict().items() if k != "models"})


def test_uncovered_class_without_candidates() -> None:
    problem = _trap_problem()
    labels = np.append(problem.labels, [3, 3])
    logits = {m: np.vstack([x, x[:2]]) for m, x in problem.logits_by_model.items()}
    four = ChcoProblem(4, problem.candidates, logits, labels, problem.temperatures, 2)
    for plan in (solve_exact(four), solve_heuristic(four)):
        assert plan.uncovered == [3]
        assert plan.assignment[3].groups == ()
        assert plan.per_class_accuracy[3] == 0.0
        assert plan.estimated_accuracy == pytest.approx(12 / 14)


def test_validation_errors() -> None:
    p = _trap_problem()
    args = dict(
        num_classes=3,
        candidates=p.candidates,
        logits_by_model=p.logits_by_model,
        labels=p.labels,
        temperatures={},
        budget=1,
    )
    for bad in (0, -2):
        with pytest.raises(InvalidArgument, match="budget"):
            ChcoProblem(**{**args, "budget": bad})
    bad_head = [Candidate(0, HeadGroup("A", (7,), "exact", 0.5))]
    with pytest.raises(InvalidArgument, match="head 7 is out of range for model 'A'"):
        ChcoProblem(**{**args, "candidates": bad_head})
    unknown = [Candidate(0, HeadGroup("nope", (0,), "exact", 0.5))]
    with pytest.raises(InvalidArgument, match="unknown model 'nope'"):
        ChcoProblem(**{**args, "candidates": unknown})
    with pytest.raises(InvalidArgument, match="labels must lie in 0..2"):
        ChcoProblem(**{**args, "labels": np.append(p.labels[:-1], 3)})
    with pytest.raises(InvalidArgument, match="rows but labels has"):
        ChcoProblem(**{**args, "labels": p.labels[:-1]})
    with pytest.raises(InvalidArgument, match="candidate class_index 5"):
        ChcoProblem(**{**args, "candidates": [Candidate(5, HeadGroup("A", (0,), "exact", 1.0))]})
    with pytest.raises(InvalidArgument, match="temperatures"):
        ChcoProblem(**{**args, "temperatures": {"A": -1.0}})
    with pytest.raises(InvalidArgument, match="model_cost"):
        ChcoProblem(**{**args, "model_cost": {"A": math.nan}})
    with pytest.raises(InvalidArgument, match="num_classes"):
        ChcoProblem(**{**args, "num_classes": 0})
    big = synthetic_problem(0, 12, 30, 5, 2, 2)
    size = exact_search_size(big)
    with pytest.raises(InvalidArgument, match=f"{size} assignments"):
        solve_exact(big, limit=1000)


def test_solve_picks_solver_and_fits_only_when_it_helps() -> None:
    problem = synthetic_problem(7, 5, 8, 4, 20, 2)
    small = solve(problem, fit=False)
    assert small.solver == "exact"
    big = solve(problem, exact_limit=1, fit=False)
    assert big.solver == "heuristic"
    fitted = solve(problem)
    if fitted.params.fitted:  # kept only when the cross-validated accuracy is higher
        assert fitted.estimated_accuracy > small.estimated_accuracy
    else:
        assert fitted == small
    # Too few probes per class: the parameter-free rule is kept.
    few = synthetic_problem(7, 5, 8, 4, 4, 2)
    assert not solve(few).params.fitted


def test_solve_fits_on_miscalibrated_closed_set_experts() -> None:
    """Both experts are closed-set and miscalibrated (see test_combine._miscalibrated):
    the fitted biases fix what no choice of heads can."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 40)
    pa = np.where(labels == 0, 0.9, 0.7) + rng.normal(0, 0.02, labels.size)
    pb = np.where(labels == 0, 0.3, 0.6) + rng.normal(0, 0.02, labels.size)
    logits = {
        "A": np.stack([np.log(pa), np.log(1 - pa)], axis=1),
        "B": np.stack([np.log(pb), np.log(1 - pb)], axis=1),
    }
    cands = [
        Candidate(0, HeadGroup("A", (0,), "exact", 0.9)),
        Candidate(1, HeadGroup("B", (0,), "exact", 0.9)),
    ]
    problem = ChcoProblem(2, cands, logits, labels, {}, 2)
    plan = solve(problem)
    assert plan.params.fitted
    assert plan.estimated_accuracy > 0.9  # 2-fold cross-validated
    assert solve_exact(problem).estimated_accuracy == pytest.approx(0.5)


def test_gap_study_heuristic_vs_exact() -> None:
    t0 = time.perf_counter()
    study = gap_study(200, seed=0)
    elapsed = time.perf_counter() - t0
    print(
        "\ngap study (exact - heuristic accuracy, {n:.0f} instances): mean {mean_gap:.4f}, "
        "median {median_gap:.4f}, p95 {p95_gap:.4f}, max {max_gap:.4f}, "
        "exactly optimal {frac_optimal:.1%}; exact {exact_seconds:.2f}s, "
        "heuristic {heuristic_seconds:.2f}s".format(n=study["n_instances"], **study)
        + f", total {elapsed:.1f}s"
    )
    assert study["n_instances"] == 200
    assert study["min_gap"] >= -1e-12  # exact is optimal: the heuristic never beats it
    assert study["mean_gap"] < 0.05
    assert study["frac_optimal"] > 0.5


def test_heuristic_on_a_large_instance_keeps_the_budget() -> None:
    # Its speed is `mllgraph bench select`'s to measure (no timed asserts in tests).
    problem = synthetic_problem(3, 100, 500, 5, 50, 5)
    assert 1500 <= len(problem.candidates) <= 3000 and problem.num_images == 5000
    plan = solve_heuristic(problem)
    assert 0 < len(plan.models) <= 5
    assert plan.estimated_accuracy >= solve_heuristic(replace(problem, budget=1)).estimated_accuracy


# --- classes without probe images: scored with the prior ----------------------------------------

CAT = 2


def _declared_problem(budget: int, steal: float) -> ChcoProblem:
    """bag and trouser have probe images and a measured expert A; "cat" has none. D and E
    declare a cat head (priors 0.75 and 0.9); E's cat head also fires on every bag image
    (`steal` logits), D's fires on nothing."""
    labels = np.repeat([BAG, TROUSER], 6)
    a = np.array([[4.0, 0.0] if y == BAG else [0.0, 4.0] for y in labels])
    d = np.zeros((labels.size, 5))  # head 3: cat
    e = np.zeros((labels.size, 5))  # head 1: cat
    e[labels == BAG, 1] = steal
    cands = [
        Candidate(BAG, HeadGroup("A", (0,), "exact", 0.9)),
        Candidate(TROUSER, HeadGroup("A", (1,), "exact", 0.9)),
        Candidate(CAT, HeadGroup("D", (3,), "declared", 0.75)),
        Candidate(CAT, HeadGroup("E", (1,), "declared", 0.9)),
    ]
    temps = {"A": 1.0, "D": 1.0, "E": 1.0}
    return ChcoProblem(3, cands, {"A": a, "D": d, "E": e}, labels, temps, budget)


@pytest.mark.parametrize("solver", [solve_exact, solve_heuristic])
def test_a_declared_only_class_is_covered_by_its_prior(solver) -> None:
    problem = _declared_problem(budget=2, steal=0.0)
    assert problem.unprobed.tolist() == [False, False, True] and problem.prior_weight == 6.0
    plan = solver(problem)
    cat = plan.assignment[CAT].groups
    assert [(g.model_id, g.heads) for g in cat] == [("E", (1,))]  # the better prior
    assert plan.per_class_accuracy[CAT] == pytest.approx(0.9)
    # 12 probe images all right, plus the cat class at its prior over 6 pseudo-images.
    assert plan.estimated_accuracy == pytest.approx((12 + 6 * 0.9) / 18)
    assert plan.measured_fraction == pytest.approx(12 / 18)
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


@pytest.mark.parametrize("solver", [solve_exact, solve_heuristic])
def test_a_declared_head_that_steals_probe_images_loses(solver) -> None:
    """E's better prior is not worth the bag images its cat head takes: D covers cat."""
    plan = solver(_declared_problem(budget=2, steal=30.0))
    assert [g.model_id for g in plan.assignment[CAT].groups] == ["D"]
    assert plan.per_class_accuracy[:2] == [1.0, 1.0]


@pytest.mark.parametrize("solver", [solve_exact, solve_heuristic])
def test_the_prior_competes_under_the_same_budget(solver) -> None:
    """Budget 1: A's twelve right probe images beat a cat worth 6 x 0.9 images."""
    plan = solver(_declared_problem(budget=1, steal=0.0))
    assert plan.models == ["A"] and plan.uncovered == [CAT]
    assert math.isnan(plan.per_class_accuracy[CAT]) and plan.measured_fraction == 1.0


@pytest.mark.parametrize("solver", [solve_exact, solve_heuristic])
def test_a_task_without_any_probe_image_is_planned_by_priors(solver) -> None:
    """No probe images at all: D declares both classes (0.75), E and F one each (0.9)."""
    empty = np.zeros(0, dtype=np.int64)
    cands = [
        Candidate(0, HeadGroup("D", (0,), "declared", 0.75)),
        Candidate(1, HeadGroup("D", (1, 2), "declared", 0.75)),
        Candidate(0, HeadGroup("E", (0,), "declared", 0.9)),
        Candidate(1, HeadGroup("F", (0,), "declared", 0.9)),
    ]
    logits = {m: np.zeros((0, 3)) for m in "DEF"}
    temps = dict.fromkeys("DEF", 1.0)
    one = solver(ChcoProblem(2, cands, logits, empty, temps, 1))
    assert one.models == ["D"] and one.uncovered == []  # 2 x 0.75 > 0.9
    assert one.estimated_accuracy == pytest.approx(0.75) and one.measured_fraction == 0.0
    two = solver(ChcoProblem(2, cands, logits, empty, temps, 2))
    assert two.models == ["E", "F"] and two.estimated_accuracy == pytest.approx(0.9)


# --- the exact search's right-image counts, met in the middle (select/exact_counts) -------------


@pytest.mark.parametrize("seed", range(6))
def test_exact_met_in_the_middle_gives_the_direct_plans(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:

    from mllgraph.select import exact_counts

    problem = synthetic_problem(seed, num_classes=3 + seed % 4, num_models=6, budget=2 + seed % 3)
    if seed % 2:  # coarse logits: many exact ties, which must break as the argmax does
        problem = replace(
            problem, logits_by_model={m: np.round(v) for m, v in problem.logits_by_model.items()}
        )
    assert exact_search_size(problem) > 10
    met = solve_exact(problem)
    monkeypatch.setattr(exact_counts, "MAX_HALF_ELEMENTS", 0)  # the direct evaluation
    direct = solve_exact(problem)
    assert met.assignment == direct.assignment and met.models == direct.models
    assert met.estimated_accuracy == direct.estimated_accuracy
    # The met-in-the-middle search skips assignments that cannot reach the best it has.
    assert 0 < met.evaluated <= direct.evaluated


@pytest.mark.parametrize("seed", range(8))
def test_exact_search_skips_only_what_cannot_win(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound-pruned search returns the plan of the search that scores every assignment:
    with exact ties (coarse logits), prior credit (a class without probe images), model
    costs under a cap, and a tight budget."""
    from mllgraph.select import exact_counts

    rng = np.random.default_rng(100 + seed)
    problem = synthetic_problem(seed, num_classes=4 + seed % 3, num_models=7, budget=1 + seed % 3)
    if seed % 2:
        logits = {m: np.round(v) for m, v in problem.logits_by_model.items()}
        problem = replace(problem, logits_by_model=logits)
    if seed % 4 < 2:  # class 0 unprobed: its candidates earn prior credit instead of images
        rows = problem.labels != 0
        logits = {m: v[rows] for m, v in problem.logits_by_model.items()}
        problem = replace(problem, labels=problem.labels[rows], logits_by_model=logits)
    if seed % 3 == 0:
        costs = {m: float(rng.uniform(0.5, 20.0)) for m in problem.logits_by_model}
        problem = replace(
            problem, model_cost=costs, max_cost=float(np.median(list(costs.values()))) * 2
        )
    pruned = solve_exact(problem)
    monkeypatch.setattr(exact_counts, "_BOUND_TOLERANCE", math.inf)  # no pair is skipped
    every = solve_exact(problem)
    assert pruned.assignment == every.assignment and pruned.models == every.models
    assert pruned.estimated_accuracy == every.estimated_accuracy
    assert pruned.evaluated <= every.evaluated


def test_exact_counts_by_halves_match_a_direct_count() -> None:
    from mllgraph.select import exact_counts

    rng = np.random.default_rng(0)
    ext = rng.integers(0, 3, (9, 7)).astype(float)  # small integers: ties everywhere
    options = [np.array([0, 1, 8]), np.array([2, 3, 8]), np.array([4, 5, 6, 8])]
    labels = np.array([0, 1, 2, 0, 1, 2, 2])
    met = exact_counts.halves(ext, options, labels, chunk_elements=5)
    assert met is not None
    counts = met.counts(0, math.prod(len(o) for o in options[: met.split]))
    picks = np.stack(np.unravel_index(np.arange(counts.size), [len(o) for o in options]))
    rows = np.stack([options[c][picks[c]] for c in range(3)])  # (K, assignments)
    direct = (ext[rows.T].argmax(axis=1) == labels).sum(axis=1)
    assert np.array_equal(counts, direct)


def _option_totals(state: chco._State, c: int, ids: np.ndarray, with_none: bool) -> np.ndarray:
    """Right-image counts if class c's column were each candidate `ids`, then uncovered."""
    p = state.p
    return kernels.option_totals(
        c, ids, chco.UNCOVERED_SCORE, with_none, p.scores, p.labels, state.top_val,
        state.top_idx, state.correct, state.zy,
    )  # fmt: skip


def _totals(state: chco._State, c: int, rows: np.ndarray) -> np.ndarray:
    """Right-image counts if class c's column were each row of `rows` (n, N)."""
    p = state.p
    return kernels.option_totals(
        c, np.arange(rows.shape[0]), chco.UNCOVERED_SCORE, False,
        np.ascontiguousarray(rows, dtype=np.float64), p.labels, state.top_val, state.top_idx,
        state.correct, state.zy,
    )  # fmt: skip


def _without_images_of(problem: ChcoProblem, classes: set[int]) -> ChcoProblem:
    """The problem with no probe image of `classes` (their prior credit counts instead)."""
    keep = ~np.isin(problem.labels, list(classes))
    return replace(
        problem,
        labels=problem.labels[keep],
        logits_by_model={m: v[keep] for m, v in problem.logits_by_model.items()},
    )


def test_the_evaluator_follows_moves_and_restores() -> None:
    """`option_totals` (any subset of a class's candidates, with or without "none") counts
    what a state built afresh with the same choice counts, after moves and restores."""
    problem = _without_images_of(synthetic_problem(13, 7, 10, 4, 8, 3), {2})
    prep = chco._prepare(problem)
    state = chco._State(prep)
    rng = np.random.default_rng(3)
    saved = [state.checkpoint()]
    for step in range(60):
        if step % 7 == 6:
            state.restore(saved[int(rng.integers(0, len(saved)))])
        else:
            c = int(rng.integers(0, prep.k))
            ids = np.arange(prep.start[c], prep.start[c + 1])
            state.set(c, int(rng.choice(np.append(ids, -1))))
            saved.append(state.checkpoint())
        fresh = chco._State(prep)
        for k, i in enumerate(state.choice):
            fresh.set(k, int(i))
        for k in range(prep.k):
            ids = np.arange(prep.start[k], prep.start[k + 1])
            picks = [ids, ids[::2], np.sort(rng.choice(ids, ids.size // 2, replace=False))]
            for sub in picks:
                for none in (False, True):
                    options = prep.scores[sub]
                    if none:
                        options = np.vstack([options, prep.none_row])
                    want = _totals(fresh, k, options) if options.size else np.zeros(0)
                    np.testing.assert_array_equal(_option_totals(state, k, sub, none), want)


def _brute_best(state: chco._State, c: int, ids: np.ndarray, with_none: bool) -> tuple:
    """Class c's best option from scratch: each option's column written into a copy of the
    scores, right images counted by argmax, the unprobed classes' credit summed by
    math.fsum; the highest (value, label score), the first among equals."""
    p = state.p
    best = None
    for opt in [*ids.tolist(), *([-1] if with_none else [])]:
        z = state.z.copy()
        z[:, c] = p.none_row[0] if opt < 0 else p.scores[opt]
        choice = state.choice.copy()
        choice[c] = opt
        count = int((z.argmax(axis=1) == p.labels).sum())
        value = count + math.fsum(p.cand_credit[i] for i in choice[p.unprobed] if i >= 0)
        label = 0.0 if opt < 0 else float(p.cand_label[opt])
        if best is None or (value, label) > best[1:]:
            best = (opt, value, label)
    return best


def _tied_prep(seed: int) -> chco._Prepared:
    """A synthetic problem with two classes unprobed and label scores rounded to one digit
    (so options tie on value and label, and the first must win)."""
    problem = _without_images_of(synthetic_problem(seed, 7, 9, 4, 6, 3), {1, 4})
    prep = chco._prepare(problem)
    prep.cand_label[:] = np.round(prep.cand_label, 1)
    prep.cand_credit[:] = np.where(
        prep.is_unprobed[prep.cand_class], problem.prior_weight * prep.cand_label, 0.0
    )
    return prep


def test_the_compiled_moves_make_the_brute_force_choices() -> None:
    """`best_option`, and the moves built on it (`_State.try_model`, `sweep`,
    `remove_model`), choose what a from-scratch search chooses, with exactly rounded credits,
    and leave the state's count, credit and top-2 as a fresh state with that choice has."""
    rng = np.random.default_rng(11)
    checked = 0
    for seed in range(6):
        prep = _tied_prep(seed)
        state = chco._State(prep)
        for _ in range(25):
            c = int(rng.integers(0, prep.k))
            ids = np.arange(prep.start[c], prep.start[c + 1])
            state.set(c, int(rng.choice(np.append(ids, -1))))
            for k in range(prep.k):
                ids = np.arange(prep.start[k], prep.start[k + 1])
                sub = np.sort(rng.choice(ids, int(rng.integers(0, ids.size + 1)), replace=False))
                for none in (False, True) if sub.size else (True,):
                    got = kernels.best_option(
                        k, sub, none, chco.UNCOVERED_SCORE, bool(prep.is_unprobed[k]),
                        state.credit, state.arrays(),
                    )  # fmt: skip
                    assert got == _brute_best(state, k, sub, none)
                    checked += 1
            # The composite moves, against the same moves made one brute-force step at a time.
            cp = state.checkpoint()
            m = int(rng.integers(0, len(prep.model_ids)))
            allowed = rng.random(len(prep.model_ids)) < 0.5
            for move in ("try_model", "sweep", "remove_model"):
                state.restore(cp)
                want = _brute_move(state, move, m, allowed)
                state.restore(cp)
                if move == "try_model":
                    state.try_model(m)
                elif move == "sweep":
                    state.sweep(allowed)
                else:
                    state.remove_model(m, allowed)
                np.testing.assert_array_equal(state.choice, want)
                fresh = chco._State(prep)
                for k, i in enumerate(want):
                    fresh.set(k, int(i))
                fresh._recount()  # count and credit from scratch, not from the moves
                assert (state.count, state.credit, state.value) == (
                    fresh.count,
                    fresh.credit,
                    fresh.value,
                )
                np.testing.assert_array_equal(state.top_idx, fresh.top_idx)
                np.testing.assert_array_equal(state.correct, fresh.correct)
            state.restore(cp)
    assert checked > 500


def _brute_move(state: chco._State, move: str, m: int, allowed: np.ndarray) -> np.ndarray:
    """The choice after `move` (module `chco`'s rules), each class's step by `_brute_best`."""
    p = state.p

    def improve(c: int, ids: np.ndarray, with_none: bool) -> None:
        if ids.size == 0 and not with_none:
            return
        opt, value, label = _brute_best(state, c, ids, with_none)
        cur = int(state.choice[c])
        label_now = 0.0 if cur < 0 else float(p.cand_label[cur])
        if opt != cur and (value, label) > (state.value, label_now):
            state.set(c, opt)

    def allowed_ids(c: int) -> np.ndarray:
        ids = np.arange(p.start[c], p.start[c + 1])
        return ids[allowed[p.cand_model[ids]]]

    if move == "try_model":
        for pi in np.flatnonzero(p.pair_model == m):
            lo = int(p.pair_start[pi])
            hi = int(p.pair_start[pi + 1]) if pi + 1 < p.pair_start.size else len(p.cands)
            improve(int(p.cand_class[lo]), np.arange(lo, hi), False)
    elif move == "sweep":
        for c in range(p.k):
            if allowed_ids(c).size or state.choice[c] >= 0:
                improve(c, allowed_ids(c), True)
    else:
        for c in range(p.k):
            cur = int(state.choice[c])
            if cur >= 0 and p.cand_model[cur] == m:
                state.set(c, _brute_best(state, c, allowed_ids(c), True)[0])
    return state.choice.copy()


def test_restarts_that_meet_an_earlier_search_take_its_end() -> None:
    """The heuristic's memo of converged searches (`ends`) changes how much is evaluated,
    never the plan: the same plans as searches that each run to their own end."""

    def without_memo(*args: object, **kwargs: object) -> None:
        kwargs.pop("ends", None)
        args = args[:6]
        original(*args, **kwargs)

    original = chco._local_search
    saved = 0
    for seed in range(12):
        problem = synthetic_problem(seed, 8, 12, 4, 10, 3)
        if seed % 2:
            problem = _without_images_of(problem, {1, 5})
        for rounds in (1, 2, 50):  # a search cut short by its rounds is not an end
            with_memo = solve_heuristic(problem, max_rounds=rounds)
            chco._local_search = without_memo  # type: ignore[assignment]
            try:
                alone = solve_heuristic(problem, max_rounds=rounds)
            finally:
                chco._local_search = original
            got, want = replace(with_memo, evaluated=0), replace(alone, evaluated=0)
            assert got.to_dict() == want.to_dict()
            saved += alone.evaluated - with_memo.evaluated
    assert saved > 0  # the memo was used


def test_a_recorded_end_is_taken_only_with_rounds_enough_left() -> None:
    """`ends` maps a round's start to where a converged search went from it and in how many
    rounds: a search meeting that start takes it only when it has those rounds left, and
    what is recorded is an end indeed (searching on from it changes nothing)."""
    problem = synthetic_problem(0, 8, 12, 4, 10, 3)
    prep = chco._prepare(problem)
    state = chco._State(prep)
    empty = state.checkpoint()
    chosen: set[int] = set()
    while chco._greedy_add(state, chosen, set(), 4):
        pass
    start = (state.choice.tobytes(), frozenset(chosen))
    first_round = state.checkpoint()
    for rounds_left, taken in ((3, False), (5, True)):
        # A made-up end (every class uncovered), said to need 5 rounds from this start.
        ends: chco._Ends = {start: (empty, frozenset(), 5)}
        state.restore(first_round)
        here = set(chosen)
        chco._local_search(state, here, problem.budget, 4, rounds_left, 3, ends)
        assert (state.choice == -1).all() == taken
    recorded = 0
    for seed in range(6):
        prep = chco._prepare(synthetic_problem(seed, 8, 12, 4, 10, 3))
        state = chco._State(prep)
        empty = state.checkpoint()
        for rounds in (1, 2, 50):  # a search cut short by its rounds records nothing
            ends = {}
            state.restore(empty)
            chco._local_search(state, set(), 3, 4, rounds, 3, ends)
            recorded += len(ends)
            for end, models, n in ends.values():
                assert 1 <= n <= rounds
                state.restore(end)
                chco._local_search(state, set(models), 3, 4, 50, 3, None)
                assert (state.choice == end[0]).all()
    assert recorded
