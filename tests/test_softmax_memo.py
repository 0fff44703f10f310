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


@pytest.mark.parametrize("heads", [7, 1000])  # narrow rows take the column-wise max
def test_the_row_normalisers_are_the_energy_bit_for_bit_and_come_with_the_softmax(
    heads: int,
) -> None:
    """`log_normalizers` is "none of these"'s energy as it was computed before (its own
    exp pass), bit for bit; within a block, the softmax of the same logits leaves it behind."""
    from mllgraph.combine.softmax import log_normalizers

    x = np.random.default_rng(heads).normal(scale=4.0, size=(50, heads)).astype(np.float32)
    z = np.asarray(x, dtype=np.float64) / 1.7
    top = z.max(axis=1)
    energy = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
    np.testing.assert_array_equal(log_normalizers(x, 1.7), energy)
    with softmax_memo():
        model_probabilities(x, 1.7)
        kept = log_normalizers(x, 1.7)
        assert log_normalizers(x, 1.7) is kept and not kept.flags.writeable
        np.testing.assert_array_equal(kept, energy)
