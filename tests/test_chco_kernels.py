"""The CHCO heuristic's compiled counts (select/chco_kernels) against a from-scratch argmax,
on scores with many exact ties (where the tie rule decides: the lower class index wins)."""

from __future__ import annotations

import math

import numpy as np

from mllgraph.select import chco_kernels as kernels
from mllgraph.select.chco import top2

UNCOVERED = -1000.0


def _right(z: np.ndarray, labels: np.ndarray) -> int:
    return int((z.argmax(axis=1) == labels).sum())  # argmax: first index on ties


def _state(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    top_val, top_idx = top2(z)
    correct = top_idx[:, 0] == labels
    zy = z[np.arange(labels.size), labels]
    return top_val, top_idx, correct, zy


def _tied_case(seed: int, n: int = 60, k: int = 5, c: int = 9) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    # Few distinct values: most comparisons meet an equal score somewhere.
    z = rng.integers(0, 4, size=(n, k)).astype(np.float64)
    z[rng.random((n, k)) < 0.1] = UNCOVERED
    labels = rng.integers(0, k, size=n).astype(np.int64)
    scores = rng.integers(0, 4, size=(c, n)).astype(np.float64)
    return z, labels, scores


def test_option_totals_count_what_argmax_counts() -> None:
    for seed in range(20):
        z, labels, scores = _tied_case(seed)
        for cls in range(z.shape[1]):
            ids = np.arange(scores.shape[0], dtype=np.int64)
            got = kernels.option_totals(
                cls, ids, UNCOVERED, True, scores, labels, *_state(z, labels)
            )
            want = []
            for row in [*scores, np.full(labels.size, UNCOVERED)]:
                swapped = z.copy()
                swapped[:, cls] = row
                want.append(_right(swapped, labels))
            np.testing.assert_array_equal(got, want)


def test_first_order_is_option_totals_per_class() -> None:
    z, labels, scores = _tied_case(3, c=12)
    start = np.array([0, 3, 3, 7, 10, 12], dtype=np.int64)  # class 1 has no candidate
    state = _state(z, labels)
    got = kernels.first_order(start, scores, labels, *state)
    for cls in range(5):
        ids = np.arange(start[cls], start[cls + 1], dtype=np.int64)
        want = kernels.option_totals(cls, ids, UNCOVERED, False, scores, labels, *state)
        np.testing.assert_array_equal(got[ids], want)


def test_set_column_keeps_top2_and_rightness_exact() -> None:
    rng = np.random.default_rng(5)
    z, labels, scores = _tied_case(7)
    top_val, top_idx, correct, zy = _state(z, labels)
    for _ in range(200):
        cls = int(rng.integers(0, z.shape[1]))
        row = scores[int(rng.integers(0, scores.shape[0]))] if rng.random() < 0.8 else None
        v = np.full(labels.size, UNCOVERED) if row is None else row
        right = kernels.set_column(cls, v, z, labels, top_val, top_idx, zy, correct)
        want_val, want_idx = top2(z)
        np.testing.assert_array_equal(top_idx, want_idx)
        np.testing.assert_array_equal(top_val, want_val)
        np.testing.assert_array_equal(zy, z[np.arange(labels.size), labels])
        assert right == _right(z, labels) == int(correct.sum())


def test_a_single_class_keeps_the_sentinel_second() -> None:
    z = np.array([[2.0], [0.5]])
    labels = np.zeros(2, dtype=np.int64)
    top_val, top_idx, correct, zy = _state(z, labels)
    kernels.set_column(0, np.array([1.0, 3.0]), z, labels, top_val, top_idx, zy, correct)
    np.testing.assert_array_equal(top_idx, [[0, 1], [0, 1]])
    np.testing.assert_array_equal(top_val, [[1.0, -np.inf], [3.0, -np.inf]])


def test_the_kernels_warm_up_on_a_tiny_problem() -> None:
    kernels.warm_up()  # loads or compiles every loop; must not raise on any of them


def test_fsum_is_bit_equal_to_math_fsum() -> None:
    """The compiled exact sum gives math.fsum's very bits, on sums where a naive or
    compensated sum rounds otherwise (huge cancellations, half-way cases, many tiny terms)."""
    rng = np.random.default_rng(0)
    cases = [
        [], [0.0], [-0.0], [1e16, 1.0, 1e-16], [1e307, 1e307, -1e307], [0.1] * 10,
        [1.0, 1e100, 1.0, -1e100], [2.0**53, 1.0, 2.0**-60], [2.0**53, -1.0, -(2.0**-60)],
        [1.0, 2.0**-53, 2.0**-106], [1.0, -(2.0**-53), -(2.0**-106)],
    ]  # fmt: skip
    for _ in range(3000):
        n = int(rng.integers(1, 12))
        mant = rng.standard_normal(n)
        cases.append(list(mant * 10.0 ** rng.integers(-30, 30, size=n)))
        cases.append(list(np.round(rng.random(n), int(rng.integers(1, 4)))))  # credits alike
        big = float(rng.standard_normal()) * 1e20
        cases.append([big, *rng.random(n), -big])
    for xs in cases:
        arr = np.asarray(xs, dtype=np.float64)
        got = kernels.fsum(np.append(arr, 7.0), len(xs))  # only the first n are summed
        assert got.hex() == math.fsum(xs).hex(), xs


_AFTER_WARM_UP = """
import json
from dataclasses import replace
from mllgraph.eval.gap_study import synthetic_problem
from mllgraph.select import chco, chco_kernels
chco_kernels.warm_up()
loops = {n: f for n, f in vars(chco_kernels).items() if hasattr(f, "signatures")}
before = {n: len(f.signatures) for n, f in loops.items()}
problem = synthetic_problem(0, 7, 9, 4, 6, 3)
labels = problem.labels.copy()
labels.flags.writeable = False  # as a selection's cached arrays may be
chco.solve_heuristic(replace(problem, labels=labels), restarts=2)
print(json.dumps({n: len(f.signatures) - before[n] for n, f in loops.items()}))
"""


def test_a_solve_after_warm_up_needs_no_other_compiled_loop() -> None:
    """The loops are typed by their arguments' dtypes, layouts and write flags: a solve must
    call them as `warm_up` does, else the service's first request compiles for seconds. In a
    fresh process (this one's loops hold every variant the tests have called)."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _AFTER_WARM_UP], capture_output=True, text=True, check=True
    ).stdout
    added = json.loads(out.strip().splitlines()[-1])
    assert sum(added.values()) == 0, added
