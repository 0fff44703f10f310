"""Input domains (mllgraph.combine.domain) and the rule's out-of-domain masks: pure, no server."""

from __future__ import annotations

import numpy as np
import pytest

from mllgraph.combine import rule
from mllgraph.combine.domain import MIN_IMAGES, DomainProfile, thumbnails
from mllgraph.combine.rule import ClassAssignment, HeadGroup
from mllgraph.errors import InvalidArgument
from mllgraph.eval.photos import PHOTOS, load_photo
from mllgraph.hubs.fashion import data as fashion


@pytest.fixture(scope="module")
def fashion_profile() -> DomainProfile:
    x, _ = fashion.load_split("train")
    return DomainProfile.fit(thumbnails(list(x[:2000])))


def test_fashion_profile_accepts_fashion_and_refuses_every_photo(fashion_profile) -> None:
    x_test, _ = fashion.load_split("test")
    accepted = fashion_profile.accepts(thumbnails(list(x_test[:2000])))
    assert accepted.mean() >= 0.995  # images like the training ones are (almost) never refused
    photos = thumbnails([load_photo(p) for p in PHOTOS])
    assert not fashion_profile.accepts(photos).any(), fashion_profile.distance(photos)


def test_thumbnails_take_gray_rgb_rgba_and_float_images() -> None:
    gray = np.full((28, 28), 255, np.uint8)
    out = thumbnails([gray, np.stack([gray] * 3, 2), np.dstack([gray] * 4), gray / 255.0])
    assert out.shape == (4, 192)
    np.testing.assert_allclose(out, 1.0)
    with pytest.raises(InvalidArgument, match="shape"):
        thumbnails([np.zeros((4, 4, 2), np.uint8)])


def test_profile_round_trips_and_refuses_junk(fashion_profile) -> None:
    back = DomainProfile.from_bytes(fashion_profile.to_bytes())
    assert back.threshold == fashion_profile.threshold and back.images == 2000
    np.testing.assert_array_equal(back.whiten, fashion_profile.whiten)
    with pytest.raises(InvalidArgument, match="not a domain profile"):
        DomainProfile.from_bytes(b"junk")
    with pytest.raises(InvalidArgument, match=f"at least {MIN_IMAGES}"):
        DomainProfile.fit(np.zeros((MIN_IMAGES - 1, 192)))


def _two_model_task() -> tuple[dict[str, np.ndarray], list[ClassAssignment]]:
    rng = np.random.default_rng(0)
    logits = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=(4, 2))}
    assignment = [
        ClassAssignment(
            0, (HeadGroup("a", (0,), "exact", 0.9), HeadGroup("b", (0,), "exact", 0.6))
        ),
        ClassAssignment(1, (HeadGroup("a", (1,), "exact", 0.8),)),
        ClassAssignment(2, (HeadGroup("b", (1,), "exact", 0.7),)),
    ]
    return logits, assignment


def test_refused_models_drop_out_of_the_classes_they_score() -> None:
    logits, assignment = _two_model_task()
    params = rule.default_params(assignment)
    plain = rule.class_scores(logits, assignment, params)
    # Every image accepted: bit for bit the rule selection simulates.
    same = rule.class_scores(logits, assignment, params, in_domain={"a": np.ones(4, bool)})
    np.testing.assert_array_equal(same, plain)

    a_refuses = np.array([True, False, True, False])
    z = rule.class_scores(logits, assignment, params, in_domain={"a": a_refuses})
    np.testing.assert_array_equal(z[a_refuses], plain[a_refuses])
    pb = rule.model_probabilities(logits["b"], 1.0)
    refused = ~a_refuses
    # Class 0 keeps b's evidence alone; class 1 (only a) has no evidence; class 2 unchanged.
    expected0 = rule.score_column(pb[refused, 0], 1.0, params.biases[0])
    np.testing.assert_allclose(z[refused, 0], expected0)
    nothing = rule.score_column(np.zeros(2), 1.0, params.biases[1])
    np.testing.assert_allclose(z[refused, 1], nothing)
    np.testing.assert_array_equal(z[:, 2], plain[:, 2])

    with pytest.raises(InvalidArgument, match=r"in_domain\['a'\]"):
        rule.class_scores(logits, assignment, params, in_domain={"a": np.ones(3, bool)})
