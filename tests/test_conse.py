"""The ConSE patch (mllgraph.combine.conse) and the text-close neighbour test
(mllgraph.select.nearby): pure logic on small arrays with known answers, no server."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mllgraph.combine import conse, rule
from mllgraph.errors import InvalidArgument
from mllgraph.select import nearby


def _patch(sim: list[list[float]], heads: tuple[int, ...], **kw: Any) -> conse.ConsePatch:
    return conse.ConsePatch("broad@1", 1.0, heads, np.asarray(sim, dtype=np.float64), **kw)


def test_probabilities_follow_the_top_heads_similarities() -> None:
    # 4 heads, 2 classes: head 0 ~ class 0, head 2 ~ class 1; heads 1 and 3 near nothing.
    patch = _patch([[0.9, 0.0], [0.0, 0.8]], heads=(0, 2), top=2)
    logits = np.log(np.asarray([[0.7, 0.2, 0.05, 0.05], [0.05, 0.05, 0.8, 0.1]]))
    p = patch.probabilities(logits)
    assert p.shape == (2, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert p[0, 0] == pytest.approx(1.0) and p[1, 1] == pytest.approx(1.0)
    # Only the top heads vote: with top=1, an image whose best head is near nothing is 0.
    lone = _patch([[0.9, 0.0]], heads=(0,), top=1).probabilities(np.log([[0.1, 0.9]]))
    np.testing.assert_array_equal(lone, [[0.0, 0.0]])


def test_evidence_is_the_constant_share_plus_weight_times_probability() -> None:
    from mllgraph.combine.rule import FALLBACK_EVIDENCE

    patch = _patch([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0]], heads=(0, 1), weight=0.25, top=2)
    logits = np.log([[0.6, 0.4]])
    ev = patch.evidence(logits, [1, 2])
    assert list(ev) == [1, 2]
    p = patch.probabilities(logits)[0]
    assert ev[1][0] == pytest.approx(FALLBACK_EVIDENCE / 2 + 0.25 * p[1])
    assert ev[2][0] == pytest.approx(FALLBACK_EVIDENCE / 2)  # nothing close: the constant


def test_a_stale_head_index_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="stale"):
        _patch([[1.0, 0.0]], heads=(7,)).probabilities(np.zeros((1, 3)))


def test_similarity_table_keeps_the_closest_heads_per_class_clipped_at_zero() -> None:
    classes = np.eye(2)
    heads = np.asarray([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
    kept, sim = conse.similarity_table(classes, heads, per_class=1)
    assert kept == (0, 2)  # head 1 is nobody's closest; head 3 is negative everywhere
    np.testing.assert_allclose(sim, [[1.0, 0.0], [0.0, 1.0]])


def test_calibrated_weight_lets_the_patch_take_at_most_the_steal_rate() -> None:
    rng = np.random.default_rng(0)
    n = 400
    z = np.log(rng.uniform(0.2, 0.9, size=(n, 3)))  # covered classes 0, 1; 2 uncovered
    e = rng.uniform(0, 1, size=(n, 3))
    ones, zeros = np.ones(3), np.zeros(3)

    def taken(w: float, floor: float, scores: np.ndarray = z) -> np.ndarray:
        return np.log(floor + w * e[:, 2] + rule.EPS) > scores[:, :2].max(axis=1)

    w, floor, cal = conse.calibrate(z, e, [2], ones, zeros)
    assert floor == rule.FALLBACK_EVIDENCE  # the constant takes none of these: kept
    assert cal.method == conse.PROBE_IMAGES and cal.images == n
    assert 0 < taken(w, floor).sum() <= conse.STEAL_RATE * n
    assert cal.steal_share == pytest.approx(taken(w, floor).mean()) and cal.floor_share == 0
    # A little more weight and the rate is passed: the weight is the largest that keeps to it.
    assert taken(w * 1.01, floor).sum() > conse.STEAL_RATE * n
    # The patch close to no uncovered class: it may speak at full weight, taking nothing.
    assert conse.calibrate(z, np.zeros_like(e), [2], ones, zeros)[0] == 1.0
    # Too few covered-class images: the structural weight and floor, nothing measured.
    w, floor, cal = conse.calibrate(z[:5], e[:5], [2], ones, zeros)
    assert (w, floor, cal.method, cal.images, cal.steal_share) == (
        conse.STRUCTURAL_WEIGHT, conse.STRUCTURAL_FLOOR, conse.STRUCTURAL, 5, None
    )  # fmt: skip


def test_a_floor_that_would_steal_is_lowered_to_half_the_steal_rate() -> None:
    """Images whose covered evidence is below the rule's constant floor (a 1000-head expert
    with 0.4% of its mass on the right class's heads) would go to the uncovered class by the
    floor alone: the floor drops until it takes at most half the allowance."""
    rng = np.random.default_rng(1)
    n = 400
    z = np.log(rng.uniform(0.2, 0.9, size=(n, 3)))
    z[:40, :2] = np.log(rng.uniform(0.001, 0.04, size=(40, 2)))  # 10%: weak but right
    e = rng.uniform(0, 1, size=(n, 3))
    w, floor, cal = conse.calibrate(z, e, [2], np.ones(3), np.zeros(3))
    best = z[:, :2].max(axis=1)
    assert 0 < floor < rule.FALLBACK_EVIDENCE
    assert np.sum(np.log(floor + rule.EPS) > best) <= conse.STEAL_RATE / 2 * n
    assert cal.floor_share is not None and cal.floor_share <= conse.STEAL_RATE / 2
    took = np.log(floor + w * e[:, 2] + rule.EPS) > best
    assert took.sum() <= conse.STEAL_RATE * n and cal.steal_share == pytest.approx(took.mean())
    # The old floor alone would have taken all of the weak images.
    assert np.sum(np.log(rule.FALLBACK_EVIDENCE) > best) >= 40


def test_covered_classes_without_probe_images_cap_the_floor_at_their_noise_level() -> None:
    """No covered-class probe images (declared ImageNet heads): the floor is what the weakest
    covered class shows on hub probe images of other concepts (its 99th percentile), so it
    wins only images no covered class explains better than it explains unrelated ones."""
    rng = np.random.default_rng(2)
    other = np.log(rng.uniform(0.0, 0.002, size=(500, 3)))  # 1000 heads: ~chance everywhere
    other[:, 1] = np.log(rng.uniform(0.0, 0.02, size=500))  # class 1 has more heads
    cap = conse.noise_floor(other, [0, 1])
    assert cap == pytest.approx(np.quantile(np.exp(other[:, 0]), conse.NOISE_QUANTILE))
    assert conse.noise_floor(other[:5], [0, 1]) is None  # too few images to say
    assert conse.noise_floor(other, []) is None
    w, floor, cal = conse.calibrate(
        np.zeros((0, 3)), np.zeros((0, 3)), [2], np.ones(3), np.zeros(3),
        floor_cap=cap, other_images=500,
    )  # fmt: skip
    assert (w, floor) == (conse.STRUCTURAL_WEIGHT, cap) and cal.method == conse.HUB_PROBES
    assert cal.other_images == 500 and "500 hub probe image(s)" in cal.describe()
    # With covered-class probe images as well, the cap still bounds the rule's constant.
    z = np.log(rng.uniform(0.2, 0.9, size=(100, 3)))
    _, floor, cal = conse.calibrate(
        z, np.zeros((100, 3)), [2], np.ones(3), np.zeros(3), floor_cap=cap, other_images=500
    )
    assert floor == cap and cal.method == conse.PROBE_IMAGES and cal.steal_share == 0


def test_never_steal_table_keeps_only_heads_that_speak_for_the_uncovered_class() -> None:
    # heads 10 (used by a covered class), 11 (closer to covered class 0), 12 and 13 (closer
    # to uncovered class 1); class 2 uncovered, nearest nobody.
    cos = np.asarray([[0.2, 0.9, 0.0], [0.6, 0.5, 0.0], [0.1, 0.8, 0.0], [0.1, 0.4, 0.0]])
    heads, sim = conse.never_steal_table((10, 11, 12, 13), cos, [1, 2], covered_heads={10})
    assert heads == (12, 13)
    np.testing.assert_allclose(sim, [[0.0, 1.0, 0.0], [0.0, 0.5, 0.0]])  # nearest counts 1
    # The full cosines decide "closer", not the sparse table (where 0 may mean "not kept").
    sparse = cos.copy()
    sparse[1, 0] = 0.0
    assert conse.never_steal_table((10, 11, 12, 13), sparse, [1], {10}, cos)[0] == (12, 13)
    assert conse.never_steal_table((10, 11, 12, 13), sparse, [1], {10})[0] == (11, 12, 13)


# -- a synthetic hub where the old patch steals ----------------------------------------------------

# The broad expert's heads and their cosines to the task's classes (cat, flower, coffee); coffee
# is uncovered, cat and flower are covered by heads 0 and 1 of the same expert.
_HEADS = {
    "tabby": [0.8, 0.1, 0.1],
    "daisy": [0.1, 0.8, 0.2],
    "espresso": [0.1, 0.1, 0.8],
    "coffee mug": [0.1, 0.1, 0.7],
    "vase": [0.1, 0.5, 0.35],
    "pot": [0.1, 0.3, 0.4],
    "bee": [0.2, 0.4, 0.3],
    "pizza": [0.1, 0.1, 0.3],
}
_COVERED_BY = {0: [0], 1: [1]}  # class -> the expert's heads the plan sums for it


def _images(rng: np.random.Generator, n: int, main: list[int], mass: tuple[float, float]) -> Any:
    """(n, H) logits of the broad expert: `mass` (a range) on the `main` heads, the rest spread
    at random over all heads (a photo is never only its class)."""
    h = len(_HEADS)
    probs = np.zeros((n, h))
    share = rng.uniform(*mass, size=n)
    for i in range(n):
        on = rng.dirichlet(np.ones(len(main)))
        probs[i, main] = share[i] * on
        rest = rng.dirichlet(np.full(h, 0.5))
        probs[i] += (1 - share[i]) * rest
    return np.log(probs + 1e-9)


def _plan_scores(logits: np.ndarray) -> np.ndarray:
    """The rule's scores of the covered classes (quality 0.8, defaults), as class_scores does."""
    from mllgraph.combine.rule import (
        ClassAssignment,
        CombinationParams,
        HeadGroup,
        class_scores,
    )

    assignment = [
        ClassAssignment(c, (HeadGroup("broad@1", tuple(h), "declared", 0.8),))
        for c, h in _COVERED_BY.items()
    ] + [ClassAssignment(2, ())]
    params = rule.default_params(assignment)
    assert isinstance(params, CombinationParams)
    return class_scores({"broad@1": logits}, assignment, params), params


def _taken(patch: conse.ConsePatch, logits: np.ndarray) -> float:
    z, params = _plan_scores(logits)
    ev = patch.evidence(logits, [2])
    z[:, 2] = rule.score_column(ev[2], params.weights[2], params.biases[2])
    return float(np.mean(z.argmax(axis=1) == 2))


def test_the_old_patch_steals_covered_images_and_the_calibrated_one_does_not() -> None:
    rng = np.random.default_rng(7)
    heads, sim = tuple(range(len(_HEADS))), np.asarray(list(_HEADS.values()))
    covered = np.concatenate(
        [_images(rng, 200, [0], (0.2, 0.9)), _images(rng, 200, [1], (0.2, 0.9))]
    )  # probe images of cat and flower: the expert holds 20-90% on their heads
    coffee = _images(rng, 100, [2, 3], (0.5, 0.95))  # photos of coffee
    fresh = np.concatenate([_images(rng, 200, [0], (0.2, 0.9)), _images(rng, 200, [1], (0.2, 0.9))])

    # Before: the normalised share at its default weight (no covered-class probe images).
    old = conse.ConsePatch("broad@1", 1.0, heads, sim, weight=conse.DEFAULT_WEIGHT, top=8)
    assert _taken(old, covered) > conse.STEAL_RATE and _taken(old, fresh) > conse.STEAL_RATE

    # Now: the mass rule over the never-steal table, calibrated on the covered images.
    used = {h for hs in _COVERED_BY.values() for h in hs}
    nh, ns = conse.never_steal_table(heads, sim, [2], used)
    new = conse.ConsePatch("broad@1", 1.0, nh, ns, top=8, rule=conse.MASS)
    z, params = _plan_scores(covered)
    weight, floor, cal = conse.calibrate(
        z, new.patch_evidence(covered), [2], params.weights, params.biases
    )
    new = conse.ConsePatch(
        "broad@1", 1.0, nh, ns, weight, 8, rule=conse.MASS, calibration=cal, floor=floor
    )
    assert cal.images == 400 and cal.steal_share is not None
    assert cal.steal_share <= conse.STEAL_RATE
    assert _taken(new, covered) == pytest.approx(cal.steal_share)
    assert _taken(new, fresh) <= 2 * conse.STEAL_RATE  # held out: close to the target
    # ... and coffee still wins the images no covered class explains.
    assert _taken(new, coffee) >= 0.9
    assert _taken(old, coffee) >= 0.9


def test_a_plan_from_before_keeps_its_share_rule_and_says_it_is_uncalibrated() -> None:
    from mllgraph.plan.document import patch_summary

    before = _patch([[0.9, 0.1], [0.1, 0.9]], heads=(0, 1), weight=0.25).to_dict()
    for key in ("evidence", "calibration", "floor"):
        before.pop(key)
    parsed = conse.ConsePatch.from_dict(before, 2)
    assert parsed.rule == conse.SHARE and parsed.calibration.method == conse.UNCALIBRATED
    logits = np.log([[0.6, 0.4]])
    p = parsed.probabilities(logits)[0]
    assert parsed.evidence(logits, [1])[1][0] == pytest.approx(rule.FALLBACK_EVIDENCE + 0.25 * p[1])
    summary = patch_summary({"model_id": "broad@1", "weight": 0.25})
    assert "uncalibrated" in summary and "floor the rule's constant" in summary
    made = _patch([[0.9, 0.1]], heads=(0,), rule=conse.MASS, weight=0.4, floor=0.0,
                  calibration=conse.Calibration(conse.PROBE_IMAGES, 300, 0.0167, 0.0))  # fmt: skip
    again = conse.ConsePatch.from_dict(made.to_dict(), 2)
    assert again.rule == conse.MASS and again.calibration == made.calibration
    assert again.floor == 0.0 and again.evidence(logits, [1])[1][0] == pytest.approx(
        0.4 * again.patch_evidence(logits)[0, 1]
    )
    line = patch_summary({"model_id": "broad@1", **made.to_dict()})
    assert "mass rule" in line and "300 covered-class probe image(s)" in line and "1.7%" in line


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rule": "vlm"}, "only rule 'conse'"),
        ({"model_id": ""}, "model_id"),
        ({"heads": [0, 1]}, "same length"),
        ({"heads": [-1]}, "non-negative"),
        ({"similarity": [[0.5]]}, "rows of 2 numbers"),
        ({"similarity": [[0.5, -0.1]]}, ">= 0"),
        ({"temperature": 0}, "temperature"),
        ({"weight": float("nan")}, "weight"),
        ({"top": 0}, "top"),
        ({"evidence": "votes"}, "evidence must be one of"),
        ({"calibration": {"method": "guess"}}, "calibration.method"),
        ({"floor": -0.1}, r"floor must be in \[0, 1\]"),
        ({"floor": "low"}, "floor must be a number"),
        ({"calibration": {"method": "probe images", "images": "many"}}, "must be numbers"),
        ({"calibration": {"method": "probe images", "steal_share": 1.5}}, r"shares in \[0, 1\]"),
    ],
)
def test_a_malformed_patch_is_invalid_argument(change: dict[str, Any], message: str) -> None:
    good = _patch([[0.5, 0.0]], heads=(3,)).to_dict()
    assert conse.ConsePatch.from_dict(good, 2).heads == (3,)
    with pytest.raises(InvalidArgument, match=message):
        conse.ConsePatch.from_dict({**good, **change}, 2)


def test_a_plan_document_carries_its_patch_to_inference() -> None:
    from mllgraph.plan.document import parse_plan

    doc = {
        "plan_id": "p",
        "classes": [{"name": "cat", "heads": []}, {"name": "coffee", "heads": []}],
        "combination": {
            "schema_version": 1,
            "plan": {
                "assignment": [
                    {"class_index": 0, "groups": [{"model_id": "m@1", "heads": [1],
                                                   "kind": "exact", "label_score": 0.9}]},
                    {"class_index": 1, "groups": []},
                ],
                "params": {"temperatures": {"m@1": 1.0}, "weights": [1.0, 1.0],
                           "biases": [0.0, 0.0], "fitted": False},
                "estimated_accuracy": 1.0, "per_class_accuracy": [1.0, None],
                "uncovered": [1], "models": ["m@1"], "solver": "exact", "evaluated": 1,
            },
            "patch": _patch([[0.0, 0.7]], heads=(5,)).to_dict(),
        },
    }  # fmt: skip
    parsed = parse_plan(doc)
    assert parsed.patch is not None and parsed.patch.model_id == "broad@1"
    doc["combination"]["patch"]["similarity"] = [["x", 1]]
    with pytest.raises(InvalidArgument, match="patch"):
        parse_plan(doc)


# -- text-close neighbours (select/nearby) --------------------------------------------------------


def _encoder(vectors: dict[str, list[float]]) -> Any:
    def encode(texts: list[str]) -> np.ndarray:
        rows = np.asarray([vectors[t.removeprefix("a photo of a ")] for t in texts], dtype=float)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    return encode


def _row(index: int, lemmas: list[str], kind: str = "related") -> dict[str, Any]:
    return {"class_index": index, "kind": kind, "score": 0.8, "via": "n0", "via_lemmas": lemmas}


def test_a_neighbour_close_in_text_is_kept_discounted() -> None:
    encode = _encoder({"handbag": [1, 0.3, 0], "coffee mug": [0, 1, 0], "bag": [1, 0.2, 0.1]})
    kept = nearby.keep_text_close(
        [_row(0, ["bag"]), _row(0, ["bag"], "declared_related")],
        ["handbag", "coffee mug"],
        encode,
        discount=0.4,
    )
    assert [r["kind"] for r in kept] == ["related", "declared_related"]
    assert kept[0]["score"] == pytest.approx(0.32) and kept[0]["text_similarity"] > 0.9


def test_a_neighbour_far_in_text_or_closer_to_another_class_is_dropped() -> None:
    encode = _encoder(
        {"cat": [1, 0, 0], "dog": [0.6, 0.8, 0], "kitten": [0.9, 0, 0.44], "lion": [1, 0.05, 0]}
    )
    rows = [_row(0, ["dog"])]
    assert nearby.keep_text_close(rows, ["cat", "kitten"], encode, discount=0.4) == []
    # "lion" is close to "cat" (0.99): kept for cat alone ...
    assert len(nearby.keep_text_close([_row(0, ["lion"])], ["cat"], encode, discount=1)) == 1
    # ... but as a neighbour of "kitten" it is nearer another class (cat): dropped.
    assert nearby.keep_text_close([_row(1, ["lion"])], ["cat", "kitten"], encode, discount=1) == []
    # No text encoder: no test, nothing kept.
    assert nearby.keep_text_close(rows, ["cat"], lambda t: None, discount=1) == []


def test_class_texts_are_encoded_alone_and_kept_across_tasks() -> None:
    """The patch's class-name vectors: each text encoded on its own (the real MiniLM), so a
    name's vector does not depend on the task it comes with, and encoded once per process."""
    from mllgraph.ground.embed import default_embedder
    from mllgraph.select import patch

    calls: list[list[str]] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return default_embedder().encode(texts)

    patch._CLASS_TEXTS.clear()
    a = patch._class_text_vectors(encode, ["a photo of a cat", "a photo of a long wool overcoat"])
    b = patch._class_text_vectors(encode, ["a photo of a sandal", "a photo of a cat"])
    assert a is not None and b is not None
    np.testing.assert_array_equal(a[0], b[1])  # same bits in either task
    np.testing.assert_array_equal(a[0], default_embedder().encode(["a photo of a cat"])[0])
    assert all(len(c) == 1 for c in calls) and len(calls) == 3  # "cat" encoded once
    assert patch._class_text_vectors(lambda texts: None, ["a photo of a dog"]) is None


def _plan_with_patch(patch: dict[str, Any]) -> dict[str, Any]:
    cls = {"grounding": {"method": "exact", "score": 1.0}, "estimated_accuracy": None}
    return {
        "plan_id": "p", "budget": 5, "models": ["m@1"], "solver": "exact",
        "estimated_accuracy": 0.8, "catalogue_version": 1, "uncovered": ["coffee"],
        "classes": [
            {**cls, "name": "cat", "concept": {"wnid": "n02121620", "name": "cat.n.01"},
             "coverage": "declared", "heads": [{"model_id": "m@1", "head_index": 1,
             "head_label": "tabby", "label_score": 0.8, "label_wnid": "n02123045"}]},
            {**cls, "name": "coffee", "concept": {"wnid": "n07929519", "name": "coffee.n.01"},
             "coverage": "uncovered", "heads": []},
        ],
        "patch": patch,
    }  # fmt: skip


def test_explain_selection_and_the_cli_say_how_the_patch_was_calibrated() -> None:
    from mllgraph.cli.common import console
    from services import plan_messages

    made = _patch([[0.9, 0.1]], heads=(0,), rule=conse.MASS, weight=1.0, floor=0.0009,
                  calibration=conse.Calibration(conse.HUB_PROBES, 0, other_images=500))  # fmt: skip
    plan = _plan_with_patch({**made.to_dict(), "classes": ["coffee"]})
    notes = plan_messages.explain(plan, plan_messages.Concepts(None)).notes
    line = next(n for n in notes if n.startswith("Uncovered classes"))
    assert "mass rule" in line and "floor 0.0009" in line and "500 hub probe image(s)" in line
    from mllgraph.cli.select import print_plan

    with console.capture() as out:
        print_plan({**plan, "params_fitted": False, "created_at": "t"})
    patch_lines = [x for x in out.get().splitlines() if x.startswith("patch: ")]
    assert len(patch_lines) == 1 and "hub probes" in patch_lines[0]
