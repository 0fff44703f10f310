"""Selection's fast paths give the very values of the straightforward ones: batched evidence
and score columns, the plan's alternatives from its top 2 and the index path without
pathlib."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mllgraph.combine import rule
from mllgraph.combine.rule import QUALITY_FLOOR, HeadGroup
from mllgraph.errors import InvalidArgument
from mllgraph.hub import probe_outputs
from mllgraph.select import chco
from mllgraph.select.alternatives import alternatives
from mllgraph.select.probe_data import ProbeOutputCache
from mllgraph.settings import Settings


@pytest.mark.parametrize("width", [5, 40])  # narrow rows take another max path than wide ones
def test_head_probabilities_match_group_evidence(width: int) -> None:
    rng = np.random.default_rng(width)
    logits = (rng.normal(size=(200, width)) * 4).astype(np.float16).astype(np.float32)
    stats = rule.softmax_row_stats(logits, 1.3)
    heads = [3, 0, 4, 3, 1]
    rows = rule.head_probabilities_from_stats(logits, stats, heads, 1.3)
    assert rows.shape == (len(heads), 200) and rows.flags.c_contiguous
    for h, row in zip(heads, rows, strict=True):
        assert np.array_equal(row, rule.group_evidence_from_stats(logits, stats, [h], 1.3))


def _problem(row_stats: bool) -> chco.ChcoProblem:
    rng = np.random.default_rng(1)
    k, n_per = 5, 8
    labels = np.repeat(np.arange(k), n_per)
    logits, cands, temps = {}, [], {}
    for j in range(6):
        m = f"m{j}"
        logits[m] = rng.normal(size=(labels.size, 7)).astype(np.float32)
        temps[m] = 1.0 + j / 5
        for c in range(k):
            head = int(rng.integers(0, 7))
            logits[m][labels == c, head] += 1.5 * (j % 3 + 1)
            cands.append(chco.Candidate(c, HeadGroup(m, (head,), "exact", 0.2 + j / 10)))
        cands.append(chco.Candidate(j % k, HeadGroup(m, (0, 2), "descendants", 0.005)))  # floored
    stats = {m: rule.softmax_row_stats(a, temps[m]) for m, a in logits.items()}
    return chco.ChcoProblem(
        k, cands, logits, labels, temps, budget=2, row_stats=stats if row_stats else None
    )


@pytest.mark.parametrize("row_stats", [False, True])
def test_score_vectors_are_each_candidates_score_column(row_stats: bool) -> None:
    problem = _problem(row_stats)
    cands = problem.candidates
    models = sorted({c.group.model_id for c in cands})
    scores = chco._score_vectors(problem, cands, models)
    for i, c in enumerate(cands):
        bias = math.log(max(float(np.mean([c.group.label_score])), QUALITY_FLOOR))
        one = rule.score_column(problem.evidence(c.group), np.float64(1.0), bias)
        assert np.array_equal(scores[i], one)


def test_alternatives_match_a_full_argmax() -> None:
    """Each alternative's figures equal a from-scratch argmax of the served scores: the
    plan as solved, and the same plan with class 0 left uncovered (the floor in play)."""
    import dataclasses

    problem = _problem(True)
    solved = chco.solve_heuristic(problem)
    # Biases lowered so the floor outscores the covered classes on some images.
    p = solved.params
    weights, biases = p.weights.copy(), p.biases - 3.0
    weights[0], biases[0] = 1.0, 0.0  # an uncovered class's own weight and bias
    weak = rule.CombinationParams(p.temperatures, weights, biases, fitted=True)
    dropped = dataclasses.replace(
        solved,
        assignment=[rule.ClassAssignment(0, ()), *solved.assignment[1:]],
        uncovered=[0],
        params=weak,
    )
    checked = 0
    for plan in (solved, dropped):
        info: dict = {}
        alts = alternatives(
            plan, problem.candidates, problem.logits_by_model, problem.labels, info, problem
        )
        floor = rule.fallback_evidence(problem.num_images, plan.uncovered)
        base = rule.class_scores(
            problem.logits_by_model, plan.assignment, plan.params, extra_evidence=floor
        )
        if plan is dropped:  # the floor decides some images
            assert (base.argmax(1) == 0).any()
        for ci, entries in enumerate(alts):
            for e in entries:
                g = next(
                    c.group
                    for c in problem.candidates
                    if c.class_index == ci
                    and c.group.model_id == e["model_id"]
                    and list(c.group.heads) == e["heads"]
                )
                # As the plan's rule sees the model: at the plan's temperature (1 if not in it).
                t = plan.params.temperature(g.model_id)
                probs = rule.model_probabilities(problem.logits_by_model[g.model_id], t)
                evidence = rule.group_evidence(probs, g.heads)
                z = base.copy()
                w, b = float(plan.params.weights[ci]), float(plan.params.biases[ci])
                z[:, ci] = rule.score_column(evidence, w, b)
                right = z.argmax(1) == problem.labels
                assert e["plan_accuracy_if_used"] == float(right.mean())
                assert e["class_accuracy_if_used"] == float(right[problem.labels == ci].mean())
                checked += 1
    assert checked > 10


def test_alternatives_break_ties_as_argmax() -> None:
    """Equal scores go to the lower class index, as numpy's argmax does."""
    z = np.array([[1.0, 2.0, 2.0], [3.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    top_val, top_idx = chco.top2(z)
    for ci in range(3):
        for column in (np.array([2.0, 3.0, 0.0]), np.array([1.0, 0.0, 5.0])):
            other_first = top_idx[:, 0] != ci
            best_val = np.where(other_first, top_val[:, 0], top_val[:, 1])
            best_idx = np.where(other_first, top_idx[:, 0], top_idx[:, 1])
            wins = (column > best_val) | ((column == best_val) & (ci < best_idx))
            swapped = z.copy()
            swapped[:, ci] = column
            assert np.array_equal(np.where(wins, ci, best_idx), swapped.argmax(1))


def test_probe_index_file_is_probe_index_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLLGRAPH_MODEL_STORE", raising=False)
    settings = Settings(home=tmp_path)
    store = str(settings.model_store)
    legacy, versioned = "org/legacy@1", "org/versioned@2"
    for mid in (legacy, versioned):
        (Path(store) / "models" / mid.replace("/", "_")).mkdir(parents=True)
    root = Path(store) / "models" / versioned.replace("/", "_") / probe_outputs.OUTPUTS_DIR
    (root / "v-1").mkdir(parents=True)
    (root / probe_outputs.CURRENT).symlink_to("v-1")
    for mid in (legacy, versioned, "never/registered@1"):
        assert probe_outputs.probe_index_file(store, mid) == str(
            probe_outputs.probe_index_path(settings, mid)
        )
    assert "v-1" in probe_outputs.probe_index_file(store, versioned)


def test_probe_output_cache_knows_which_files_are_finite() -> None:
    cache = ProbeOutputCache()
    settings = Settings()
    good = np.ones((6, 3), dtype=np.float16)
    bad = good.copy()
    bad[4, 1] = np.inf
    outputs = {
        name: probe_outputs.ProbeOutputs(data, {"s": (0, 6)}, 1.0)
        for name, data in (("good", good), ("bad", bad))
    }
    assert not cache.all_finite(outputs["good"])  # not seen yet: unknown, so checked by CHCO
    for o in outputs.values():
        cache.row_stats(settings, o)
    assert cache.all_finite(outputs["good"]) and not cache.all_finite(outputs["bad"])


def test_only_models_known_finite_skip_the_check() -> None:
    labels = np.array([0, 1])
    logits = {"a": np.array([[1.0], [np.nan]]), "b": np.array([[0.0], [1.0]])}
    cands = [chco.Candidate(0, HeadGroup("a", (0,), "exact", 0.5))]
    cands.append(chco.Candidate(1, HeadGroup("b", (0,), "exact", 0.5)))
    with pytest.raises(InvalidArgument, match="non-finite"):
        chco.ChcoProblem(2, cands, logits, labels, {}, 1, finite_models=frozenset({"b"}))
