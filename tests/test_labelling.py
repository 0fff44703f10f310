"""Model labelling measurements: hand-computed numbers on tiny hierarchies, temperature, limits."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from mllgraph.errors import InvalidArgument
from mllgraph.label.measure import (
    ConceptHierarchy,
    GroupLabel,
    HeadLabel,
    fit_temperature,
    group_labels,
    label_model,
    measure,
    summary,
)

LN3 = math.log(3.0)
PROBED = ["sandal", "sneaker", "boot", "shirt", "trouser", "bag"]
PER = 10  # images per probed concept


def _hierarchy() -> ConceptHierarchy:
    """entity > artifact > {footwear > {sandal, sneaker, boot}, garment > {shirt, trouser},
    container > bag}."""
    top = {"artifact", "entity"}
    ancestors = {
        "sandal": {"footwear", *top},
        "sneaker": {"footwear", *top},
        "boot": {"footwear", *top},
        "shirt": {"garment", *top},
        "trouser": {"garment", *top},
        "bag": {"container", *top},
        "footwear": top,
        "garment": top,
        "container": top,
        "artifact": {"entity"},
        "entity": set(),
    }
    depth = {"entity": 0, "artifact": 1, "footwear": 2, "garment": 2, "container": 2}
    depth.update({w: 3 for w in PROBED})
    names = {w: f"{w}.n.01" for w in ancestors}
    return ConceptHierarchy(ancestors=ancestors, names=names, depth=depth)


def _concepts() -> np.ndarray:
    return np.repeat(np.arange(len(PROBED)), PER)


def _logits_from_winners(winners: np.ndarray, h: int) -> np.ndarray:
    """Winner logit log 3, others 0: with 2 heads at T=1, p(winner) = 3/4."""
    logits = np.zeros((winners.size, h))
    logits[np.arange(winners.size), winners] = LN3
    return logits


def _sandal_bag_expert() -> tuple[np.ndarray, list[str | None]]:
    """Head 0 'sandal' wins every sandal and sneaker image and 8 of 10 boot images;
    head 1 'bag' wins the 2 other boots, the bags, shirts and trousers."""
    winners = np.ones(len(PROBED) * PER, dtype=int)
    winners[: 2 * PER + 8] = 0
    return _logits_from_winners(winners, 2), ["sandal", "bag"]


def _by(labels: list[HeadLabel]) -> dict[tuple[int, str], HeadLabel]:
    return {(lb.head, lb.wnid): lb for lb in labels}


def test_sandal_bag_expert_hand_computed() -> None:
    logits, declared = _sandal_bag_expert()
    labels = measure(logits, _concepts(), PROBED, declared, _hierarchy(), temperature=1.0)
    got = _by(labels)
    # Head 0 wins 28 images: 10 sandal, 10 sneaker, 8 boot.
    sandal = got[(0, "sandal")]
    assert sandal.method == "probe" and sandal.n_probe == 10
    assert sandal.recall == pytest.approx(1.0)
    assert sandal.precision == pytest.approx(10 / 28)
    assert sandal.score == pytest.approx(2 * 10 / (28 + 10))
    assert sandal.mean_prob == pytest.approx(0.75)
    footwear = got[(0, "footwear")]
    assert footwear.method == "propagated" and footwear.n_probe == 30
    assert footwear.precision == pytest.approx(1.0)
    assert footwear.recall == pytest.approx(28 / 30)
    assert footwear.score == pytest.approx(2 * 28 / (28 + 30))
    assert footwear.mean_prob == pytest.approx((28 * 0.75 + 2 * 0.25) / 30)
    boot = got[(0, "boot")]
    assert (boot.precision, boot.recall) == pytest.approx((8 / 28, 0.8))
    # Ranking of head 0: footwear first, then sandal/sneaker (tie -> wnid), then boot.
    assert [lb.wnid for lb in labels if lb.head == 0] == ["footwear", "sandal", "sneaker", "boot"]
    # Head 1 wins 32: 2 boots, 10 shirts, 10 trousers, 10 bags; top 5 by score.
    assert [lb.wnid for lb in labels if lb.head == 1] == [
        "garment",
        "bag",
        "shirt",
        "trouser",
        "boot",
    ]
    garment = got[(1, "garment")]
    assert (garment.precision, garment.recall) == pytest.approx((20 / 32, 1.0))
    assert garment.score == pytest.approx(2 * 20 / (32 + 20))
    # footwear for head 1: 2*2/(32+30) ~ 0.065 >= min_score, but cut by top_k=5.
    assert (1, "footwear") not in got
    # Uninformative (all images) and add-nothing (bag only) ancestors are not measured.
    assert not {lb.wnid for lb in labels} & {"entity", "artifact", "container"}


def test_perfect_expert_scores_one() -> None:
    h = len(PROBED)
    logits = _logits_from_winners(_concepts(), h)
    labels = measure(logits, _concepts(), PROBED, PROBED, _hierarchy(), temperature=1.0)
    top = {lb.head: lb for lb in labels if lb.method == "probe"}
    for head, wnid in enumerate(PROBED):
        assert top[head].wnid == wnid
        assert top[head].score == 1.0 and top[head].precision == 1.0 and top[head].recall == 1.0
    # Each head's best label is its own concept (probe ranks before the propagated parent).
    firsts = {}
    for lb in labels:
        firsts.setdefault(lb.head, lb)
    assert [firsts[i].wnid for i in range(h)] == PROBED
    # The propagated parent gets precision 1 and the head's share of its images.
    fw = _by(labels)[(0, "footwear")]
    assert (fw.precision, fw.recall) == pytest.approx((1.0, 1 / 3))


def test_top_k_and_min_score() -> None:
    logits, declared = _sandal_bag_expert()
    args = (logits, _concepts(), PROBED, declared, _hierarchy())
    one = measure(*args, temperature=1.0, top_k=1)
    assert [(lb.head, lb.wnid) for lb in one] == [(0, "footwear"), (1, "garment")]
    strict = measure(*args, temperature=1.0, min_score=0.6)
    assert {(lb.head, lb.wnid) for lb in strict} == {(0, "footwear"), (1, "garment")}
    loose = measure(*args, temperature=1.0, min_score=0.0, top_k=100)
    # Only concepts with at least one winning image: head 1 never wins sandal/sneaker.
    assert {lb.wnid for lb in loose if lb.head == 1} == {
        "garment",
        "bag",
        "shirt",
        "trouser",
        "boot",
        "footwear",
    }
    assert all(lb.score >= 0.05 for lb in measure(*args, temperature=1.0, top_k=100))


def test_min_images_and_heads_that_never_win() -> None:
    logits, _ = _sandal_bag_expert()
    logits = np.hstack([logits, np.full((logits.shape[0], 1), -5.0)])  # head 2 never wins
    declared = ["sandal", "bag", "shirt"]
    labels = measure(
        logits, _concepts(), PROBED, declared, _hierarchy(), temperature=1.0, min_images=11
    )
    assert {lb.head for lb in labels} == {0, 1}
    assert {lb.wnid for lb in labels} == {"footwear", "garment"}  # 10-image concepts skipped


def test_declared_ancestor_is_measured_even_if_it_adds_nothing() -> None:
    logits, _ = _sandal_bag_expert()
    labels = measure(
        logits, _concepts(), PROBED, ["sandal", "container"], _hierarchy(), temperature=1.0
    )
    container = _by(labels)[(1, "container")]
    bag = _by(labels)[(1, "bag")]
    assert container.method == "propagated"
    assert (container.score, container.recall) == pytest.approx((bag.score, bag.recall))
    assert [lb.wnid for lb in labels if lb.head == 1].index("bag") < [
        lb.wnid for lb in labels if lb.head == 1
    ].index("container")  # tie: probe before propagated


def test_probed_ancestor_includes_descendant_images() -> None:
    probed = ["footwear", "sandal"]
    concepts = np.repeat([0, 1], [6, 6])
    winners = np.zeros(12, dtype=int)  # head 0 wins everything; head 1 never
    logits = _logits_from_winners(winners, 2)
    labels = measure(
        logits, concepts, probed, ["footwear", "sandal"], _hierarchy(), temperature=1.0
    )
    fw = _by(labels)[(0, "footwear")]
    assert fw.method == "probe" and fw.n_probe == 12 and fw.score == 1.0


def test_temperature_scales_mean_prob_only() -> None:
    logits, declared = _sandal_bag_expert()
    args = (logits, _concepts(), PROBED, declared, _hierarchy())
    a = _by(measure(*args, temperature=1.0))
    b = _by(measure(*args, temperature=2.0))
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].score == b[key].score
    p = math.sqrt(3) / (math.sqrt(3) + 1)  # softmax([ln3, 0] / 2)
    assert b[(0, "sandal")].mean_prob == pytest.approx(p)


def test_group_labels_footwear() -> None:
    # Heads: 0 sandal, 1 sneaker, 2 bag. Boots: 5 to head 0, 5 to head 2.
    winners = np.repeat([0, 1, 0, 2, 2, 2, 2], [PER, PER, 5, 5, PER, PER, PER])
    logits = _logits_from_winners(winners, 3)
    groups = group_labels(
        logits, _concepts(), PROBED, ["sandal", "sneaker", "bag"], _hierarchy(), temperature=1.0
    )
    assert [g.wnid for g in groups] == ["footwear"]
    g = groups[0]
    assert isinstance(g, GroupLabel) and g.heads == (0, 1) and g.n_probe == 30
    assert g.precision == pytest.approx(1.0)
    assert g.recall == pytest.approx(25 / 30)
    assert g.score == pytest.approx(2 * 25 / (25 + 30))
    # softmax([ln3, 0, 0]) = [3/5, 1/5, 1/5]: group mass 4/5 when 0 or 1 wins, 2/5 otherwise.
    assert g.mean_prob == pytest.approx((25 * 0.8 + 5 * 0.4) / 30)
    none = group_labels(
        logits, _concepts(), PROBED, ["sandal", None, "bag"], _hierarchy(), temperature=1.0
    )
    assert none == []
    # Shirt and trouser heads that never win: their garment group scores 0, left out unless
    # min_score is 0.
    silent = np.hstack([logits, np.full((logits.shape[0], 2), -5.0)])
    decl = ["sandal", "sneaker", "bag", "shirt", "trouser"]
    args = (silent, _concepts(), PROBED, decl, _hierarchy())
    assert [g.wnid for g in group_labels(*args, temperature=1.0)] == ["footwear"]
    zero = group_labels(*args, temperature=1.0, min_score=0.0)
    assert [(g.wnid, g.heads, g.score) for g in zero][1] == ("garment", (3, 4), 0.0)


def test_label_model_matches_parts_and_summary() -> None:
    logits, declared = _sandal_bag_expert()
    args = (logits, _concepts(), PROBED, declared, _hierarchy())
    result = label_model(*args)
    t, n = fit_temperature(*args)
    assert (result.temperature, result.n_calibration) == (t, n)
    assert result.labels == measure(*args, temperature=t)
    assert result.groups == group_labels(*args, temperature=t)
    s = summary(result.labels, result.groups)
    assert s["labels"] == 9 and s["heads_labelled"] == 2
    assert s["probe"] + s["propagated"] == 9 and s["propagated"] == 2
    assert s["mean_score"] == pytest.approx(np.mean([lb.score for lb in result.labels]))
    assert summary([])["mean_score"] == 0.0
    assert result.labels[0].to_dict()["wnid"] == "footwear"


def _calibrated(rng: np.random.Generator, n: int, h: int, true_t: float) -> np.ndarray:
    """Logits whose softmax at `true_t` is the distribution the labels are drawn from."""
    z = 1.5 * rng.normal(size=(n, h))
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return true_t * z, y


def test_fit_temperature_recovers_known_temperature() -> None:
    rng = np.random.default_rng(0)
    wnids = [f"c{i}" for i in range(8)]
    hier = ConceptHierarchy({w: {"root"} for w in wnids})
    logits, y = _calibrated(rng, 4000, 8, 3.0)
    t, n = fit_temperature(logits, y, wnids, wnids, hier)
    assert n == 4000
    assert t == pytest.approx(3.0, rel=0.1)
    # Deterministic.
    assert fit_temperature(logits, y, wnids, wnids, hier) == (t, n)


def test_fit_temperature_sums_heads_declared_above_and_ignores_unmatched() -> None:
    rng = np.random.default_rng(1)
    wnids = [f"c{i}" for i in range(6)]
    hier = ConceptHierarchy(
        {**{w: {"a"} for w in wnids[:3]}, **{w: {"b"} for w in wnids[3:]}, "a": (), "b": ()}
    )
    logits, y = _calibrated(rng, 3000, 6, 3.0)
    # Head 0 claims the parent "a": images of c0..c2 have target p0 + p1 + p2 (heads 1, 2
    # still claim c1, c2); images of c5 match no head and are ignored.
    declared = ["a", "c1", "c2", "c3", "c4", None]
    t, n = fit_temperature(logits, y, wnids, declared, hier)
    assert n == int(np.sum(y != 5))
    assert 0.05 <= t <= 20.0


def test_fit_temperature_without_matches_is_one() -> None:
    logits, _ = _sandal_bag_expert()
    assert fit_temperature(logits, _concepts(), PROBED, [None, None], _hierarchy()) == (1.0, 0)
    unrelated = fit_temperature(logits, _concepts(), PROBED, ["x", "y"], _hierarchy())
    assert unrelated == (1.0, 0)
    empty = fit_temperature(
        np.zeros((0, 2)), np.zeros(0, int), PROBED, ["sandal", "bag"], _hierarchy()
    )
    assert empty == (1.0, 0)


def test_deterministic() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(60, 5)) * 3
    declared = ["sandal", "sneaker", "shirt", None, "bag"]
    args = (logits, _concepts(), PROBED, declared, _hierarchy())
    assert label_model(*args) == label_model(*args)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"logits": np.zeros(60)}, "logits"),
        ({"logits": np.full((60, 2), np.nan)}, "logits"),
        ({"image_concepts": np.zeros(59, int)}, "image_concepts"),
        ({"image_concepts": np.full(60, 6)}, "image_concepts"),
        ({"image_concepts": np.full(60, -1)}, "image_concepts"),
        ({"image_concepts": np.zeros(60)}, "image_concepts"),
        ({"declared": ["sandal"]}, "declared"),
        ({"declared": ["sandal", 3]}, "declared"),
        ({"probed": [*PROBED[:-1], "sandal"]}, "probed"),
        ({"probed": [*PROBED[:-1], "unknown"]}, "hierarchy.ancestors"),
        ({"hierarchy": {"sandal": ()}}, "hierarchy"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"min_images": 0}, "min_images"),
        ({"min_score": 1.5}, "min_score"),
    ],
)
def test_validation_names_the_field(change: dict, field: str) -> None:
    logits, declared = _sandal_bag_expert()
    kwargs = {
        "logits": logits,
        "image_concepts": _concepts(),
        "probed": PROBED,
        "declared": declared,
        "hierarchy": _hierarchy(),
        "temperature": 1.0,
    }
    kwargs.update(change)
    with pytest.raises(InvalidArgument, match=field):
        measure(**kwargs)


def test_hierarchy_rejects_string_ancestors() -> None:
    with pytest.raises(InvalidArgument, match="ancestors"):
        ConceptHierarchy({"sandal": "footwear"})


def test_timing_smoke_imagenet_sized() -> None:
    """H=1000 heads x N=5000 images x ~40 measured concepts; prints the time, asserts none."""
    rng = np.random.default_rng(3)
    n_probed, n, h = 30, 5000, 1000
    probed = [f"p{i}" for i in range(n_probed)]
    ancestors = {
        w: {f"g{i % 10}", f"s{i % 3}", "root"} for i, w in enumerate(probed)
    }  # 10 + 3 groups (+ root, dropped): 43 measured concepts
    hier = ConceptHierarchy(ancestors)
    concepts = rng.integers(0, n_probed, n)
    logits = rng.normal(size=(n, h)).astype(np.float32)
    logits[np.arange(n), concepts] += 4.0
    declared: list[str | None] = [probed[i] if i < n_probed else None for i in range(h)]
    t0 = time.perf_counter()
    labels = measure(logits, concepts, probed, declared, hier, temperature=1.5)
    t1 = time.perf_counter()
    groups = group_labels(logits, concepts, probed, declared, hier, temperature=1.5)
    t2 = time.perf_counter()
    temp, used = fit_temperature(logits, concepts, probed, declared, hier)
    t3 = time.perf_counter()
    print(
        f"\nlabelling H={h} N={n}: measure {t1 - t0:.3f}s ({len(labels)} labels), "
        f"group_labels {t2 - t1:.3f}s ({len(groups)} groups), "
        f"fit_temperature {t3 - t2:.3f}s (T={temp:.3f}, {used} images)"
    )
    assert labels and used == n
