"""One request's softmaxes are computed once (`combine.softmax.softmax_memo`), read-only, and
only within the block and thread that opened it."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from mllgraph.combine.softmax import EPS, log_probabilities, model_probabilities, softmax_memo


def _logits(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(20, 7)).astype(np.float32)


def test_within_a_block_each_softmax_is_computed_once_and_read_only() -> None:
    x = _logits()
    plain = model_probabilities(x, 2.0)
    with softmax_memo():
        first = model_probabilities(x, 2.0)
        assert model_probabilities(x, 2.0) is first
        assert model_probabilities(x, 1.0) is not first  # another temperature
        np.testing.assert_array_equal(first, plain)  # bit for bit
        with pytest.raises(ValueError, match="read-only"):
            first[0, 0] = 1.0
        logs = log_probabilities(x, 2.0)
        assert log_probabilities(x, 2.0) is logs
        np.testing.assert_array_equal(logs, np.log(plain + EPS))
        # Equal contents in another array: its own entry (the key is the array itself).
        assert model_probabilities(x.copy(), 2.0) is not first


def test_outside_a_block_nothing_is_kept() -> None:
    x = _logits()
    with softmax_memo():
        model_probabilities(x)
    a, b = model_probabilities(x), model_probabilities(x)
    assert a is not b and a.flags.writeable


def test_another_thread_does_not_see_the_block() -> None:
    x = _logits()
    seen: list[np.ndarray] = []
    with softmax_memo():
        mine = model_probabilities(x)
        t = threading.Thread(target=lambda: seen.append(model_probabilities(x)))
        t.start()
        t.join()
    assert seen[0] is not mine and seen[0].flags.writeable
