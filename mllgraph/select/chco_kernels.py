"""The CHCO heuristic's inner loops, compiled (numba): counting options and moving a class.

The heuristic weighs tens of thousands of options per solve, each over a few hundred probe
images; in numpy every such step costs ~20 array calls of fixed overhead (~70 us), more than
the arithmetic. These loops do the same counts in one pass (`select.chco._State` holds the
rule they implement). Compiled on first use and cached beside this file (numba `cache=True`).

Argmax semantics throughout, as `combine`: the higher score wins, ties go to the lower
class index.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _roles(
    c: int,
    labels: np.ndarray,
    top_val: np.ndarray,
    top_idx: np.ndarray,
    correct: np.ndarray,
    zy: np.ndarray,
    thr: np.ndarray,
    kind: np.ndarray,
) -> None:
    """What a new column for class c must do on each image, written into `kind` and `thr`:
    1: an image of class c, right iff v > thr (ties folded in: v >= the best other column
    when c wins ties against it); 2: an image of another class that is right now or blocked
    only by c, right iff v < thr (v <= its own score when its class wins ties against c);
    0: an image the column cannot change."""
    for i in range(labels.size):
        y = labels[i]
        t1 = top_idx[i, 0]
        if y == c:
            if t1 != c:
                mv, mi = top_val[i, 0], t1
            else:
                mv, mi = top_val[i, 1], top_idx[i, 1]
            kind[i] = 1
            thr[i] = np.nextafter(mv, -np.inf) if c < mi else mv
        elif correct[i] or (t1 == c and top_idx[i, 1] == y):
            kind[i] = 2
            thr[i] = np.nextafter(zy[i], np.inf) if y < c else zy[i]
        else:
            kind[i] = 0


@njit(cache=True, nogil=True)
def _count(v: np.ndarray, thr: np.ndarray, kind: np.ndarray) -> int:
    right = 0
    for i in range(v.size):
        k = kind[i]
        if (k == 1 and v[i] > thr[i]) or (k == 2 and v[i] < thr[i]):
            right += 1
    return right


@njit(cache=True, nogil=True)
def option_totals(
    c: int,
    ids: np.ndarray,
    none_score: float,
    with_none: bool,
    scores: np.ndarray,
    labels: np.ndarray,
    top_val: np.ndarray,
    top_idx: np.ndarray,
    correct: np.ndarray,
    zy: np.ndarray,
) -> np.ndarray:
    """Right-image count if class c's column were each candidate `ids` (rows of `scores`),
    then, with `with_none`, the uncovered column (`none_score` everywhere)."""
    n = labels.size
    thr = np.empty(n)
    kind = np.empty(n, dtype=np.int8)
    _roles(c, labels, top_val, top_idx, correct, zy, thr, kind)
    out = np.empty(ids.size + (1 if with_none else 0), dtype=np.int64)
    for j in range(ids.size):
        out[j] = _count(scores[ids[j]], thr, kind)
    if with_none:
        out[ids.size] = _count(np.full(n, none_score), thr, kind)
    return out


@njit(cache=True, nogil=True)
def first_order(
    start: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    top_val: np.ndarray,
    top_idx: np.ndarray,
    correct: np.ndarray,
    zy: np.ndarray,
) -> np.ndarray:
    """(C,) right-image counts if each candidate alone replaced its class's column."""
    n = labels.size
    thr = np.empty(n)
    kind = np.empty(n, dtype=np.int8)
    out = np.zeros(scores.shape[0], dtype=np.int64)
    for c in range(start.size - 1):
        if start[c + 1] == start[c]:
            continue
        _roles(c, labels, top_val, top_idx, correct, zy, thr, kind)
        for j in range(start[c], start[c + 1]):
            out[j] = _count(scores[j], thr, kind)
    return out


@njit(cache=True, nogil=True)
def _row_top2(z: np.ndarray, i: int, top_val: np.ndarray, top_idx: np.ndarray) -> None:
    """Row i's best two (value, class), as `chco.top2`: (-inf, K) where K = 1."""
    k = z.shape[1]
    b0, i0, b1, i1 = -np.inf, k, -np.inf, k
    for j in range(k):
        x = z[i, j]
        if i0 == k or x > b0:
            b1, i1, b0, i0 = b0, i0, x, j
        elif i1 == k or x > b1:
            b1, i1 = x, j
    top_val[i, 0], top_idx[i, 0], top_val[i, 1], top_idx[i, 1] = b0, i0, b1, i1


@njit(cache=True, nogil=True)
def set_column(
    c: int,
    v: np.ndarray,
    z: np.ndarray,
    labels: np.ndarray,
    top_val: np.ndarray,
    top_idx: np.ndarray,
    zy: np.ndarray,
    correct: np.ndarray,
) -> int:
    """Write v into class c's column of z and update each row's top-2, own-class score and
    rightness in place; returns the right-image count."""
    right = 0
    for i in range(labels.size):
        x = v[i]
        z[i, c] = x
        if labels[i] == c:
            zy[i] = x
        if top_idx[i, 0] == c or top_idx[i, 1] == c:
            _row_top2(z, i, top_val, top_idx)
        elif x > top_val[i, 1] or (x == top_val[i, 1] and c < top_idx[i, 1]):
            if x > top_val[i, 0] or (x == top_val[i, 0] and c < top_idx[i, 0]):
                top_val[i, 1], top_idx[i, 1] = top_val[i, 0], top_idx[i, 0]
                top_val[i, 0], top_idx[i, 0] = x, c
            else:
                top_val[i, 1], top_idx[i, 1] = x, c
        ok = top_idx[i, 0] == labels[i]
        correct[i] = ok
        right += ok
    return right


def warm_up() -> None:
    """Load (or compile, the first time after an install) every loop on a tiny problem: a
    long-running service calls this at start-up, so no request pays the ~0.5-2.5 s."""
    n, k = 3, 2
    labels = np.zeros(n, dtype=np.int64)
    z = np.zeros((n, k))
    top_val, top_idx = np.zeros((n, 2)), np.zeros((n, 2), dtype=np.int64)
    correct, zy, scores = np.zeros(n, dtype=bool), np.zeros(n), np.zeros((1, n))
    option_totals(0, np.zeros(1, dtype=np.int64), 0.0, True, scores, labels, top_val, top_idx,
                  correct, zy)  # fmt: skip
    first_order(np.array([0, 1, 1]), scores, labels, top_val, top_idx, correct, zy)
    set_column(0, np.zeros(n), z, labels, top_val, top_idx, zy, correct)
