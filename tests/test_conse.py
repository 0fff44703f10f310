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
    p = rng.dirichlet(np.ones(3), size=n)
    w = conse.calibrate_weight(z, p, [2])
    floor = rule.FALLBACK_EVIDENCE
    left = np.exp(z[:, :2].max(axis=1)) > floor  # what the constant alone leaves covered
    taken = np.log(floor + w * p[:, 2]) > z[:, :2].max(axis=1)
    assert 0 < (taken & left).sum() <= conse.STEAL_RATE * left.sum()
    assert conse.calibrate_weight(z[:0], p[:0], [2]) == conse.DEFAULT_WEIGHT
    # The patch never close to an uncovered class: it may speak at full weight.
    assert conse.calibrate_weight(z, np.zeros_like(p), [2]) == 1.0


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
