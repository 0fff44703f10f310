"""The evaluation's methods on small synthetic logits with known answers, and the equal
treatment of MLL and the baselines (same calibration, same fallback for uncovered classes)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from mllgraph.combine.rule import (
    EPS,
    FALLBACK_EVIDENCE,
    ClassAssignment,
    CombinationParams,
    HeadGroup,
    default_params,
)
from mllgraph.errors import FailedPrecondition, InvalidArgument
from mllgraph.eval import baselines, references, scoring, summary
from mllgraph.eval import evaluate as ev
from mllgraph.plan import document as plan_doc
from mllgraph.select import chco


def _logits_of(table: dict[str, np.ndarray]):
    return lambda mid: table[mid]


def _cand(ci: int, mid: str, head: int, score: float = 1.0) -> chco.Candidate:
    return chco.Candidate(ci, HeadGroup(mid, (head,), "exact", score))


def _view(cands, logits, labels, temps=None) -> baselines.TaskView:
    labels = np.asarray(labels)
    temps = temps if temps is not None else dict.fromkeys(logits, 1.0)
    k = int(labels.max()) + 1
    return baselines.TaskView(k, cands, temps, _logits_of(logits), np.arange(len(labels)), labels)


# Two classes, two models with a head per class; probabilities of head 0 (class 0) per image.
# A (label score 0.9) is right on images 0, 1, 2; B (0.1) only on image 0 and 3.
P_A = np.array([0.9, 0.6, 0.2, 0.4])
P_B = np.array([0.3, 0.2, 0.4, 0.3])
LABELS_2 = [0, 0, 1, 1]


def _two_head_logits(p0: np.ndarray) -> np.ndarray:
    return np.log(np.stack([p0, 1 - p0], axis=1))


def test_uniform_averages_evidence_with_equal_weights():
    logits = {"A": _two_head_logits(P_A), "B": _two_head_logits(P_B)}
    cands = [_cand(0, "A", 0, 0.9), _cand(1, "A", 1, 0.9)]
    cands += [_cand(0, "B", 0, 0.1), _cand(1, "B", 1, 0.1)]
    # Plain mean of head-0 evidence: 0.6, 0.4, 0.3, 0.35 -> predictions 0, 1, 1, 1.
    assert baselines.baseline_uniform(_view(cands, logits, LABELS_2)) == pytest.approx(0.75)
    # The label-weighted mean (what MLL's rule would do with these scores) gets all four.
    view = _view(cands, logits, LABELS_2)
    weighted = [
        ClassAssignment(c, tuple(x.group for x in cands if x.class_index == c)) for c in (0, 1)
    ]
    assert view.accuracy(weighted) == pytest.approx(1.0)


def test_random_draws_one_candidate_per_class():
    logits = {"A": _two_head_logits(P_A), "B": _two_head_logits(P_B)}
    # Class 1 has only A's head 1 (evidence 0.1, 0.4, 0.8, 0.6); class 0 has A's head 0
    # (0.9, 0.6, 0.2, 0.4: all four right) or B's (0.3, 0.2, 0.4, 0.3: image 1 lost).
    cands = [_cand(0, "A", 0), _cand(0, "B", 0), _cand(1, "A", 1)]
    view = _view(cands, logits, LABELS_2)
    seen = {round(baselines.baseline_random(view, seed, draws=1), 6) for seed in range(20)}
    assert seen == {1.0, 0.75}
    mean5 = baselines.baseline_random(view, 0, draws=5)
    assert any(mean5 == pytest.approx((j * 1.0 + (5 - j) * 0.75) / 5) for j in range(6))


# Three classes; model A has heads for classes 0 and 1 and a third head for something else
# (no task class), model B one head for class 2. Images: two per class.
A_LOGITS = np.array(
    [
        [4.0, 0.0, 0.0],  # class 0
        [4.0, 1.0, 0.0],
        [0.0, 4.0, 0.0],  # class 1
        [1.0, 4.0, 0.0],
        [2.0, 0.0, 3.0],  # class 2: A's own "other" head wins, class 0 second
        [0.0, 2.0, 3.0],
    ]
)
B_LOGITS = np.zeros((6, 1))
LABELS_3 = [0, 0, 1, 1, 2, 2]


def test_single_picks_the_widest_expert_and_gives_its_gaps_the_fallback():
    cands = [_cand(0, "A", 0), _cand(1, "A", 1), _cand(2, "B", 0)]
    logits = {"A": A_LOGITS, "B": B_LOGITS}
    assert baselines.single_expert(cands)[0] == "A"
    # At T = 0.1, A gives class 0 / 1 evidence ~e^-10 on the class-2 images: the fallback
    # (0.05 for the one uncovered class) wins there, so every image is right.
    assert baselines.baseline_single(_view(cands, logits, LABELS_3, {"A": 0.1, "B": 1.0})) == 1.0
    # At T = 1 the same images give class 0 (p = e^2 / (e^2 + 1 + e^3) = 0.26) and class 1
    # evidence above 0.05: both class-2 images are lost.
    assert baselines.baseline_single(_view(cands, logits, LABELS_3, {"A": 1.0, "B": 1.0})) == (
        pytest.approx(4 / 6)
    )


def test_baselines_use_the_calibrated_temperature():
    cands = [_cand(0, "A", 0), _cand(1, "A", 1)]
    logits = {"A": A_LOGITS}
    calibrated = {"A": 0.1}
    for method in (baselines.baseline_uniform, lambda v: baselines.baseline_random(v, 0)):
        assert method(_view(cands, logits, LABELS_3, calibrated)) == 1.0
        assert method(_view(cands, logits, LABELS_3, {"A": 1.0})) == pytest.approx(4 / 6)


def test_a_model_without_calibration_is_refused():
    cands = [_cand(0, "A", 0), _cand(1, "A", 1)]
    view = _view(cands, {"A": A_LOGITS}, LABELS_3, {})
    with pytest.raises(FailedPrecondition, match="'A'"):
        baselines.baseline_uniform(view)


def test_nothing_covered_predicts_the_first_class():
    view = _view([], {}, LABELS_3)
    assert baselines.baseline_single(view) == pytest.approx(2 / 6)
    assert baselines.baseline_uniform(view) == pytest.approx(2 / 6)
    assert baselines.baseline_random(view, 0) == pytest.approx(2 / 6)


def _plan(assignment: list[ClassAssignment], params: CombinationParams) -> dict:
    plan = chco.Plan(
        assignment=assignment,
        params=params,
        estimated_accuracy=0.0,
        per_class_accuracy=[math.nan] * len(assignment),
        uncovered=[a.class_index for a in assignment if not a.groups],
        models=sorted({g.model_id for a in assignment for g in a.groups}),
        solver="test",
        evaluated=0,
    )
    return {
        "plan_id": "p",
        "classes": [{"name": f"class {a.class_index}"} for a in assignment],
        "combination": {"schema_version": plan_doc.PLAN_SCHEMA_VERSION, "plan": plan.to_dict()},
    }


def test_an_uncovered_class_gets_the_same_evidence_in_mll_and_the_baselines():
    a0 = HeadGroup("A", (0,), "exact", 0.8)
    a1 = HeadGroup("A", (1,), "exact", 0.6)
    assignment = [ClassAssignment(0, (a0,)), ClassAssignment(1, (a1,)), ClassAssignment(2, ())]
    temps = {"A": 0.1}
    baseline = default_params(assignment, temps)
    # An MLL plan's parameters as selection fits them: covered classes move, class 2 keeps
    # weight 1 and bias 0.
    fitted = CombinationParams(temps, np.array([2.0, 0.5, 1.0]), np.array([0.3, -0.2, 0.0]), True)
    logits_of = _logits_of({"A": A_LOGITS})
    idx = np.arange(6)
    z_base = scoring.task_scores(assignment, baseline, logits_of, idx)
    z_mll = scoring.task_scores(assignment, fitted, logits_of, idx)
    expected = math.log(FALLBACK_EVIDENCE + EPS)
    assert np.allclose(z_base[:, 2], expected) and np.array_equal(z_mll[:, 2], z_base[:, 2])
    assert not np.allclose(z_mll[:, :2], z_base[:, :2])  # only the combination differs
    # MLL's path from a plan document scores the same way as the single baseline with the
    # same heads: the fallback wins the class-2 images in both.
    mll = scoring.classify_plan(_plan(assignment, baseline), logits_of, idx)
    view = _view([_cand(0, "A", 0, 0.8), _cand(1, "A", 1, 0.6)], {"A": A_LOGITS}, LABELS_3, temps)
    assert np.array_equal(mll, [0, 0, 1, 1, 2, 2])
    assert baselines.baseline_single(view) == float(np.mean(mll == np.array(LABELS_3)))


# -- the expert-recipe model ----------------------------------------------------------------


def test_expert_per_class_budget():
    assert references.expert_per_class_budget(None, [2, 5]) is None  # uncapped experts: every image
    assert references.expert_per_class_budget(4000, [2, 3, 4, 5]) == round(4000 / 3.5)
    assert references.expert_per_class_budget(4000, [2]) == 2000
    with pytest.raises(InvalidArgument, match="at least one expert"):
        references.expert_per_class_budget(4000, [])


def _task(*fashion: tuple[int, ...]):
    from mllgraph.eval.tasks import SuiteClass, Task

    return Task("t", tuple(SuiteClass(f"c{i}", f) for i, f in enumerate(fashion)))


def test_expert_recipe_model_trains_on_the_task_classes_with_the_per_class_budget():
    pool = np.arange(100, 160)
    pool_labels = np.repeat(np.arange(6), 10)  # 10 pool images of each Fashion class 0..5
    task = _task((1,), (3, 4))  # class 1 against classes 3 + 4 (a hypernym)
    capped = references.ExpertRecipeModel(
        None, references.ExpertRecipe("test_resnet", 2, per_class_images=4)
    )
    picked = capped.training_indices(task, pool, pool_labels)
    assert np.all(np.diff(picked) > 0)
    assert np.bincount(pool_labels[picked], minlength=6).tolist() == [0, 4, 0, 4, 4, 0]
    again = references.ExpertRecipeModel(
        None, references.ExpertRecipe("test_resnet", 2, per_class_images=4)
    )
    assert np.array_equal(again.training_indices(task, pool, pool_labels), picked)
    every = references.ExpertRecipeModel(
        None, references.ExpertRecipe("test_resnet", 2, per_class_images=None)
    )
    assert np.bincount(pool_labels[every.training_indices(task, pool, pool_labels)]).tolist() == [
        0,
        10,
        0,
        10,
        10,
    ]


def test_expert_recipe_models_train_in_workers_as_they_do_here() -> None:
    """`ExpertRecipeModel.train` with two worker processes gives the weights one process
    gives (one torch thread each way), one model per class set, and `accuracy` reuses them."""
    import os

    import torch

    from mllgraph.eval.evalset import EvalImages
    from mllgraph.hubs.fashion import data as fashion
    from mllgraph.settings import Settings

    settings = Settings.from_env()
    if not (settings.fashion_mnist_dir / "train-images-idx3-ubyte.gz").is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and no Fashion-MNIST under {settings.fashion_mnist_dir}")
        pytest.skip(f"no Fashion-MNIST under {settings.fashion_mnist_dir}")
    recipe = references.ExpertRecipe("test_mambaout", 1, per_class_images=60)
    tasks = [_task((5,), (7,)), _task((1,), (3, 4)), _task((5,), (7,))]  # two class sets
    here = references.ExpertRecipeModel(settings, recipe)
    there = references.ExpertRecipeModel(settings, recipe)
    here.train(tasks, workers=1)
    there.train(tasks, workers=2)
    assert len(here._cache) == len(there._cache) == 2
    for key, model in here._cache.items():
        a, b = model.state_dict(), there._cache[key].state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), key
    x, y = fashion.load_split("test", settings.fashion_mnist_dir)
    idx = np.flatnonzero(np.isin(y, [5, 7]))[:40]
    labels = (y[idx] == 7).astype(np.int64)
    images = EvalImages(x, y)
    trained = there.seconds
    accuracy = there.accuracy(tasks[2], images, idx, labels)
    assert accuracy == here.accuracy(tasks[0], images, idx, labels) and accuracy > 0.5
    assert there.seconds == trained  # nothing trained again


def test_expert_recipe_is_described():
    text = references.ExpertRecipe("test_resnet", 3, per_class_images=1143).describe()
    assert "test_resnet" in text and "3 epoch" in text and "1143" in text
    assert "every" in references.ExpertRecipe("test_resnet", 3, per_class_images=None).describe()


# -- summaries per suite half ----------------------------------------------------------------


def _result(name: str, split: str | None, mll: float, **baselines: float) -> ev.TaskResult:
    return ev.TaskResult(name, ["a", "b"], 10, mll, None, [], [], 1.0, 1.0, baselines, split)


RESULTS = [
    _result("d1", "dev", 0.8, supervised=1.0, random=0.5),
    _result("d2", "dev", 0.6, supervised=0.8, random=0.3),
    _result("t1", "test", 0.45, supervised=0.9),
    _result("x", None, 0.15),  # in neither half; in "all", but not in any share
]


def test_summary_has_mean_accuracy_and_share_of_the_supervised_reference():
    s = summary.summarise(RESULTS[:2])
    assert s["tasks"] == 2
    assert s["mean_accuracy"] == pytest.approx({"mll": 0.7, "supervised": 0.9, "random": 0.4})
    share = {"mll": 0.7 / 0.9, "supervised": 1.0, "random": 0.4 / 0.9}
    assert s["share_of_supervised"] == pytest.approx(share)
    lo, hi = s["interval_95"]["mll"]
    assert 0.6 <= lo < 0.7 < hi <= 0.8  # two tasks, 0.6 and 0.8: resampled means in between
    # No supervised figure: no share.
    assert summary.summarise(RESULTS[3:])["share_of_supervised"] == {"mll": None}


def test_halves_side_by_side():
    h = summary.summarise_halves(RESULTS)
    assert [h[k]["tasks"] for k in ("dev", "test", "all")] == [2, 1, 4]
    assert h["test"]["share_of_supervised"]["mll"] == pytest.approx(0.5)
    assert "random" not in h["test"]["mean_accuracy"]  # no random figure on that half
    assert h["dev"]["mean_accuracy"]["mll"] == pytest.approx(0.7)
    assert h["dev_minus_test"]["mll"]["difference"] == pytest.approx(0.25)
    table = summary.halves_table(RESULTS).splitlines()
    assert table[0].startswith(
        "| method | dev (2 tasks) | dev: share of supervised | test (1 tasks)"
    )
    assert table[0].endswith("| dev − test |")
    # all: mean of 0.8, 0.6, 0.45, 0.15; share over the three tasks with a supervised figure.
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert cells[0] == "mll" and cells[1].startswith("0.700 [") and cells[2] == "77.8%"
    assert cells[3] == "0.450 [0.450, 0.450]" and cells[4] == "50.0%"
    assert cells[5].startswith("0.500 [") and cells[6] == "68.5%"
    assert cells[7].startswith("+0.250 [+0.150, +0.350]")
    md = summary.markdown_table(RESULTS)
    assert "| d1 | dev | 2 | 10 |" in md and "| x | - | 2 | 10 |" in md


def test_uncovered_classes_say_why_and_are_counted_per_half():
    none_left = _result("a", "dev", 0.9)
    budget = replace(
        _result("b", "dev", 0.8),
        uncovered=["b"],
        patch="stacked",
        uncovered_why={"b": "not chosen"},
    )
    no_head = replace(
        _result("c", "test", 0.7), uncovered=["a", "b"], patch="conse:m@1",
        uncovered_why={"a": "no head", "b": "not chosen"},
    )  # fmt: skip
    assert none_left.uncovered_text() == "-"
    assert budget.uncovered_text() == "b (not chosen); scored by stacked"
    assert no_head.uncovered_text() == "a (no head), b (not chosen); scored by conse:m@1"
    # A result read back from an older report has no reasons: the names alone.
    assert replace(budget, uncovered_why={}).uncovered_text() == "b; scored by stacked"
    halves = summary.summarise_halves([none_left, budget, no_head])
    assert halves["dev"]["tasks_with_uncovered"] == {"no head": 0, "not chosen": 1}
    assert halves["test"]["tasks_with_uncovered"] == {"no head": 1, "not chosen": 1}
    assert halves["all"]["tasks_with_uncovered"] == {"no head": 1, "not chosen": 2}
    assert "b (not chosen); scored by stacked |" in summary.markdown_table([budget])


def test_bootstrap_intervals_have_known_answers():
    assert summary.bootstrap_interval([]) is None
    assert summary.bootstrap_interval([0.5, 0.5, 0.5]) == pytest.approx([0.5, 0.5])
    values = list(np.linspace(0.0, 1.0, 41))
    lo, hi = summary.bootstrap_interval(values)
    # The mean's standard error is sd/sqrt(n) = 0.296/6.4 = 0.046: about ±0.09 at 95%.
    assert 0.40 < lo < 0.43 and 0.57 < hi < 0.60
    assert summary.bootstrap_interval(values) == [lo, hi]  # seeded
    d = summary.difference_interval([0.9] * 5, [0.7] * 5)
    assert d == pytest.approx([0.2, 0.2])
    assert summary.difference_interval([0.9], []) is None
