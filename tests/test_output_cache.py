"""Expert outputs kept by image content (mllgraph.reuse.outputs), alone and in the plan
classifier: an image met before runs no model again, under any plan, and the answers are
those of a classifier that keeps nothing. No Neo4j: the records are a mapping, the expert a
small module that counts the images it is run on."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from mllgraph.errors import InvalidArgument
from mllgraph.hub.preprocess import InputSpec
from mllgraph.reuse import cache as model_cache
from mllgraph.reuse import classifier
from mllgraph.reuse.outputs import ROW_OVERHEAD, OutputCache, image_digest
from mllgraph.settings import Settings
from tests.helpers import one_model_plan

SPEC = InputSpec(size=8, resize="resize", mean=(0.5,), std=(0.5,), channels=1)
HEADS = 6


class Counting(torch.nn.Module):
    """A linear expert over 8x8 grey images that notes how many images each pass gets."""

    def __init__(self, seen: list[int], seed: int = 0) -> None:
        super().__init__()
        self.seen = seen
        self.fc = torch.nn.Linear(64, HEADS)
        with torch.no_grad():
            g = torch.Generator().manual_seed(seed)
            self.fc.weight.copy_(torch.randn(HEADS, 64, generator=g))
            self.fc.bias.copy_(torch.randn(HEADS, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(int(x.shape[0]))  # int(): fx cannot trace it, so prepare keeps it
        return self.fc(x.flatten(1))


def record(sha: str = "a" * 64) -> dict[str, Any]:
    return {"id": "m", "version": "1", "num_classes": HEADS, "sha256": sha}


def plan(heads: list[int]) -> dict[str, Any]:
    """A plan document over model m: class i = head heads[i]."""
    return one_model_plan("m", heads, [f"class-{h}" for h in heads])


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(n)]


def classifier_for(doc: dict[str, Any], cache: model_cache.ModelCache, rec: dict[str, Any]):
    return classifier.PlanClassifier(doc, {"m": rec}, cache.settings, cache)


def model_cache_for(seen: list[int], **settings: Any) -> model_cache.ModelCache:
    return model_cache.ModelCache(
        replace(Settings(), **settings), device="cpu", loader=lambda s, r: (Counting(seen), SPEC)
    )


# -- the cache alone -------------------------------------------------------------------------


def test_digest_changes_with_pixels_shape_and_dtype() -> None:
    a = images(1)[0]
    b = a.copy()
    b[3, 4] ^= 1
    assert image_digest(a) == image_digest(a.copy())
    assert image_digest(a) != image_digest(b)
    assert image_digest(a) != image_digest(a.reshape(4, 16))
    assert image_digest(a) != image_digest(a.astype(np.float32))
    assert image_digest(np.asfortranarray(a)) == image_digest(a)  # pixels, not their layout
    assert image_digest(a, "token 'alice'") != image_digest(a, "token 'bob'") != image_digest(a)


def test_rows_are_copies_kept_least_recently_used_by_bytes() -> None:
    row_bytes = HEADS * 4 + ROW_OVERHEAD
    cache = OutputCache(3 * row_bytes)
    rows = np.arange(4 * HEADS, dtype=np.float32).reshape(4, HEADS)
    keys = [bytes([i]) * 16 for i in range(4)]
    cache.put_many("m", keys[:3], rows[:3])
    rows[0] = -1  # the kept row is a copy
    assert cache.get_many("m", keys[:1])[0].tolist() == list(range(HEADS))
    cache.put_many("m", keys[3:], rows[3:])  # evicts the least recently used: key 1
    got = cache.get_many("m", keys)
    assert [r is None for r in got] == [False, True, False, False]
    assert cache.evictions == 1 and cache.nbytes == 3 * row_bytes and len(cache) == 3
    assert cache.get_many("other model", keys[:1]) == [None]
    assert (cache.hits, cache.misses) == (4, 2)


def test_off_keeps_nothing() -> None:
    cache = OutputCache(0)
    cache.put_many("m", [b"x" * 16], np.zeros((1, HEADS), dtype=np.float32))
    assert not cache.enabled and len(cache) == 0 and cache.get_many("m", [b"x" * 16]) == [None]


# -- in the plan classifier ------------------------------------------------------------------


def test_an_image_met_before_runs_no_model_again_under_another_plan() -> None:
    seen: list[int] = []
    cache = model_cache_for(seen)
    x = images(12)
    first = classifier_for(plan([0, 1, 2]), cache, record()).run_batch(x[:8])
    assert sum(seen) == 8 and first.timings["m"].cached == 0

    other = plan([3, 4, 1, 5])  # another task over the same model
    second = classifier_for(other, cache, record()).run_batch(x[4:12], keep_logits=True)
    assert sum(seen) == 12  # only the four new images ran
    assert second.timings["m"].cached == 4 and second.timings["m"].images == 8

    fresh_seen: list[int] = []
    fresh = model_cache_for(fresh_seen, infer_output_cache_mb=0)
    expected = classifier_for(other, fresh, record()).run_batch(x[4:12], keep_logits=True)
    assert sum(fresh_seen) == 8
    np.testing.assert_allclose(second.logits["m"], expected.logits["m"], atol=1e-5)
    got = np.stack([r.probabilities for r in second.results])
    np.testing.assert_allclose(got, np.stack([r.probabilities for r in expected.results]))
    assert [r.class_index for r in second.results] == [r.class_index for r in expected.results]

    again = classifier_for(other, cache, record()).run_batch(x[4:12])
    assert sum(seen) == 12 and again.timings["m"].cached == 8
    assert again.timings["m"].forward_ms == 0.0


def test_new_weights_and_a_cleared_cache_run_the_model_again() -> None:
    seen: list[int] = []
    cache = model_cache_for(seen)
    x = images(4)
    classifier_for(plan([0, 1]), cache, record()).run_batch(x)
    classifier_for(plan([0, 1]), cache, record(sha="b" * 64)).run_batch(x)  # re-registered
    assert sum(seen) == 8
    cache.clear()
    classifier_for(plan([0, 1]), cache, record()).run_batch(x)
    assert sum(seen) == 12


@pytest.mark.parametrize("mb", [0, 256])
def test_the_same_answers_with_the_cache_on_or_off(mb: int) -> None:
    seen: list[int] = []
    cache = model_cache_for(seen, infer_output_cache_mb=mb)
    x = images(6, seed=3)
    clf = classifier_for(plan([2, 0, 5]), cache, record())
    a = clf.run_batch(x, keep_logits=True)
    b = clf.run_batch(x[::-1], keep_logits=True)  # the same images, the other way round
    np.testing.assert_allclose(b.logits["m"], a.logits["m"][::-1], atol=1e-5)
    assert sum(seen) == (6 if mb else 12)


def test_given_digests_key_the_outputs() -> None:
    """run_batch's digests (the service scopes them by caller) are the keys: the same image
    under another digest runs again; a wrong count is refused."""
    seen: list[int] = []
    cache = model_cache_for(seen)
    x = images(3)
    clf = classifier_for(plan([0, 1]), cache, record())
    clf.run_batch(x, digests=[image_digest(im, "a") for im in x])
    clf.run_batch(x, digests=[image_digest(im, "a") for im in x])
    assert sum(seen) == 3
    clf.run_batch(x, digests=[image_digest(im, "b") for im in x])
    assert sum(seen) == 6
    with pytest.raises(InvalidArgument, match="2 digests for 3 images"):
        clf.run_batch(x, digests=[b"x" * 16] * 2)
