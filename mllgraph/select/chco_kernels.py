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
    idx: np.ndarray,
    sign: np.ndarray,
    thr: np.ndarray,
) -> int:
    """The images a new column v for class c can make right, as one test each: image
    idx[t] is right iff sign[t] * v[idx[t]] > thr[t], for t below the count returned.
    An image of class c: right iff v > its threshold (ties folded in: v >= the best other
    column when c wins ties against it). An image of another class that is right now or
    blocked only by c: right iff v < its threshold (v <= its own score when its class wins
    ties against c), tested negated (exact) so both kinds take one comparison. Any other
    image the column cannot change, and it is left out."""
    m = 0
    for i in range(labels.size):
        y = labels[i]
        t1 = top_idx[i, 0]
        if y == c:
            if t1 != c:
                mv, mi = top_val[i, 0], t1
            else:
                mv, mi = top_val[i, 1], top_idx[i, 1]
            idx[m], sign[m] = i, 1.0
            thr[m] = np.nextafter(mv, -np.inf) if c < mi else mv
            m += 1
        elif correct[i] or (t1 == c and top_idx[i, 1] == y):
            idx[m], sign[m] = i, -1.0
            thr[m] = -(np.nextafter(zy[i], np.inf) if y < c else zy[i])
            m += 1
    return m


@njit(cache=True, nogil=True)
def _count(v: np.ndarray, idx: np.ndarray, sign: np.ndarray, thr: np.ndarray, m: int) -> int:
    right = 0
    for t in range(m):
        right += sign[t] * v[idx[t]] > thr[t]
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
    idx, sign, thr = np.empty(n, dtype=np.int64), np.empty(n), np.empty(n)
    m = _roles(c, labels, top_val, top_idx, correct, zy, idx, sign, thr)
    out = np.empty(ids.size + (1 if with_none else 0), dtype=np.int64)
    for j in range(ids.size):
        out[j] = _count(scores[ids[j]], idx, sign, thr, m)
    if with_none:
        out[ids.size] = _count(np.full(n, none_score), idx, sign, thr, m)
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
    idx, sign, thr = np.empty(n, dtype=np.int64), np.empty(n), np.empty(n)
    out = np.zeros(scores.shape[0], dtype=np.int64)
    for c in range(start.size - 1):
        if start[c + 1] == start[c]:
            continue
        m = _roles(c, labels, top_val, top_idx, correct, zy, idx, sign, thr)
        for j in range(start[c], start[c + 1]):
            out[j] = _count(scores[j], idx, sign, thr, m)
    return out


@njit(cache=True, nogil=True)
def model_gains(
    first: np.ndarray, count: int, choice: np.ndarray, cand_class: np.ndarray,
    cand_label: np.ndarray, cand_credit: np.ndarray, pair_start: np.ndarray,
    pair_model: np.ndarray, n_models: int,
) -> np.ndarray:  # fmt: skip
    """(M,) each model's first-order gain (`chco._rank_models`) from the candidates'
    first-order counts `first`: per candidate, the change in value when only its class
    switches to it, plus its label-score change / (K + 1), kept where the value does not
    fall and floored at 0; per (class, model) pair the best; per model the sum, in pair
    order (the same additions as numpy's maximum.reduceat and bincount)."""
    k = choice.size
    gain = np.empty(first.size)
    for j in range(first.size):
        cur = choice[cand_class[j]]
        cur_credit = cand_credit[cur] if cur >= 0 else 0.0
        cur_label = cand_label[cur] if cur >= 0 else 0.0
        g = (first[j] - count) + (cand_credit[j] - cur_credit)
        x = g + (cand_label[j] - cur_label) / (k + 1)
        gain[j] = (x if x >= 0.0 else 0.0) if g >= 0 else 0.0
    out = np.zeros(n_models)
    for p in range(pair_start.size):
        lo = pair_start[p]
        hi = pair_start[p + 1] if p + 1 < pair_start.size else first.size
        best = gain[lo]
        for j in range(lo + 1, hi):
            best = best if best >= gain[j] else gain[j]
        out[pair_model[p]] += best
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


# -- a class's best option, and the moves built from it ----------------------------------------
# The objective a move compares (`chco._State`): value = right-image count + the prior credit
# of the unprobed classes' choices, an exactly rounded sum (`fsum`) so that equal choices give
# bit-equal values whatever the order; then the option's label score; then candidate order.
# `state` is the tuple of arrays a move reads and writes (`chco._State.arrays`), in this order:
# scores (C, N), labels (N,), z (N, K), top_val (N, 2), top_idx (N, 2), correct (N,),
# zy (N,), choice (K,), cand_label (C,), cand_credit (C,), unprobed (U,).


@njit(cache=True, nogil=True)
def fsum(xs: np.ndarray, n: int) -> float:
    """The exactly rounded sum of xs[:n] (finite, as every partial sum): CPython's `math.fsum`
    (Shewchuk's partials, then half-even rounding across them), so bit-equal to it."""
    partials = np.empty(max(n, 1))
    m = 0
    for t in range(n):
        x = xs[t]
        i = 0
        for j in range(m):
            y = partials[j]
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                partials[i] = lo
                i += 1
            x = hi
        m = i
        if x != 0.0:
            partials[m] = x
            m += 1
    if m == 0:
        return 0.0
    m -= 1
    hi = partials[m]
    lo = 0.0
    while m > 0:
        x = hi
        m -= 1
        y = partials[m]
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            break
    if m > 0 and ((lo < 0.0 and partials[m - 1] < 0.0) or (lo > 0.0 and partials[m - 1] > 0.0)):
        y = lo * 2.0
        x = hi + y
        if y == x - hi:
            hi = x
    return hi


@njit(cache=True, nogil=True)
def credit(state: tuple, skip: int) -> tuple:
    """(the chosen credits of the unprobed classes but class `skip` (-1: none skipped), in a
    buffer with one free slot at the end, how many there are)."""
    choice, cand_credit, unprobed = state[7], state[9], state[10]
    buf = np.empty(unprobed.size + 1)
    m = 0
    for u in unprobed:
        if u != skip and choice[u] >= 0:
            buf[m] = cand_credit[choice[u]]
            m += 1
    return buf, m


@njit(cache=True, nogil=True)
def best_option(
    c: int, ids: np.ndarray, with_none: bool, none_score: float, unprobed_class: bool,
    state_credit: float, state: tuple,
) -> tuple:  # fmt: skip
    """(option, its value, its label score) for class c among candidates `ids` and, with
    `with_none`, uncovered (-1, last): the highest value, then label score, then the first.
    An unprobed class's option adds its own prior credit to the other unprobed classes';
    any other class's keeps the state's credit."""
    scores, labels, _, top_val, top_idx, correct, zy, _, cand_label, cand_credit, _ = state
    totals = option_totals(c, ids, none_score, with_none, scores, labels, top_val, top_idx,
                           correct, zy)  # fmt: skip
    if unprobed_class:
        buf, m = credit(state, c)
    else:
        buf, m = np.empty(1), 0
    best, best_val, best_label = -2, 0.0, 0.0
    for j in range(totals.size):
        opt = ids[j] if j < ids.size else -1
        label = cand_label[opt] if opt >= 0 else 0.0
        if not unprobed_class:
            val = totals[j] + state_credit
        elif opt >= 0:
            buf[m] = cand_credit[opt]
            val = totals[j] + fsum(buf, m + 1)
        else:
            val = totals[j] + fsum(buf, m)
        if best == -2 or val > best_val or (val == best_val and label > best_label):
            best, best_val, best_label = opt, val, label
    return best, best_val, best_label


@njit(cache=True, nogil=True)
def move(
    c: int, cand: int, none_score: float, count: int, state_credit: float, state: tuple
) -> tuple:
    """Give class c candidate `cand` (-1: uncovered): (right-image count, credit) after."""
    scores, labels, z, top_val, top_idx, correct, zy, choice, _, _, _ = state
    if choice[c] == cand:
        return count, state_credit
    choice[c] = cand
    v = np.full(labels.size, none_score) if cand < 0 else scores[cand]
    count = set_column(c, v, z, labels, top_val, top_idx, zy, correct)
    buf, m = credit(state, -1)
    return count, fsum(buf, m)


@njit(cache=True, nogil=True)
def improve(
    c: int, ids: np.ndarray, with_none: bool, none_score: float, unprobed_class: bool,
    count: int, state_credit: float, state: tuple,
) -> tuple:  # fmt: skip
    """Move class c to its best option if that strictly raises (value, label score):
    (moved, count, credit, options weighed)."""
    if ids.size == 0 and not with_none:
        return False, count, state_credit, 0
    opt, val, label = best_option(
        c, ids, with_none, none_score, unprobed_class, state_credit, state
    )
    weighed = ids.size + (1 if with_none else 0)
    choice, cand_label = state[7], state[8]
    cur = choice[c]
    value = count + state_credit  # the state's (`chco._State.value`)
    cur_label = cand_label[cur] if cur >= 0 else 0.0
    if opt != cur and (val > value or (val == value and label > cur_label)):
        count, state_credit = move(c, opt, none_score, count, state_credit, state)
        return True, count, state_credit, weighed
    return False, count, state_credit, weighed


@njit(cache=True, nogil=True)
def _allowed(lo: int, hi: int, cand_model: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The candidates lo..hi-1 whose model is flagged in `allowed`, in order."""
    out = np.empty(hi - lo, dtype=np.int64)
    m = 0
    for j in range(lo, hi):
        if allowed[cand_model[j]]:
            out[m] = j
            m += 1
    return out[:m]


@njit(cache=True, nogil=True)
def try_model(
    model: int, pair_start: np.ndarray, pair_model: np.ndarray, cand_class: np.ndarray,
    is_unprobed: np.ndarray, none_score: float, count: int, state_credit: float, state: tuple,
) -> tuple:  # fmt: skip
    """Move each class `model` can cover to its best candidate there, one class after the
    other in candidate order, where that strictly improves: (classes moved, count, credit,
    options weighed)."""
    moved, weighed = 0, 0
    for p in range(pair_model.size):
        if pair_model[p] != model:
            continue
        lo = pair_start[p]
        hi = pair_start[p + 1] if p + 1 < pair_start.size else cand_class.size
        c = cand_class[lo]
        ok, count, state_credit, w = improve(
            c, np.arange(lo, hi), False, none_score, is_unprobed[c], count, state_credit, state
        )
        moved += ok
        weighed += w
    return moved, count, state_credit, weighed


@njit(cache=True, nogil=True)
def sweep(
    allowed: np.ndarray, start: np.ndarray, cand_model: np.ndarray, is_unprobed: np.ndarray,
    none_score: float, count: int, state_credit: float, state: tuple,
) -> tuple:  # fmt: skip
    """One pass over the classes in order, each moved to its best option among the
    `allowed` (M,) models' candidates or uncovered where that strictly improves:
    (improved, count, credit, options weighed)."""
    choice = state[7]
    improved, weighed = False, 0
    for c in range(start.size - 1):
        ids = _allowed(start[c], start[c + 1], cand_model, allowed)
        if ids.size == 0 and choice[c] < 0:
            continue  # only uncovered is possible, and it is the choice already
        ok, count, state_credit, w = improve(
            c, ids, True, none_score, is_unprobed[c], count, state_credit, state
        )
        improved |= ok
        weighed += w
    return improved, count, state_credit, weighed


@njit(cache=True, nogil=True)
def remove_model(
    model: int, allowed: np.ndarray, start: np.ndarray, cand_model: np.ndarray,
    is_unprobed: np.ndarray, none_score: float, count: int, state_credit: float, state: tuple,
) -> tuple:  # fmt: skip
    """Move each class using `model` to its best option among the `allowed` models'
    candidates or uncovered, better or not: (count, credit, options weighed)."""
    choice = state[7]
    weighed = 0
    for c in range(start.size - 1):
        if choice[c] < 0 or cand_model[choice[c]] != model:
            continue
        ids = _allowed(start[c], start[c + 1], cand_model, allowed)
        opt, _, _ = best_option(c, ids, True, none_score, is_unprobed[c], state_credit, state)
        weighed += ids.size + 1
        count, state_credit = move(c, opt, none_score, count, state_credit, state)
    return count, state_credit, weighed


@njit(cache=True, nogil=True)
def restore(
    choice_at: np.ndarray, zy_at: np.ndarray, top_val_at: np.ndarray, top_idx_at: np.ndarray,
    correct_at: np.ndarray, none_score: float, state: tuple,
) -> None:  # fmt: skip
    """Put the state's arrays back as a checkpoint holds them: the score column of each
    class whose choice differs, then choice, own-class scores, top-2 and rightness."""
    scores, _, z, top_val, top_idx, correct, zy, choice, _, _, _ = state
    for c in range(choice.size):
        if choice_at[c] == choice[c]:
            continue
        cand = choice_at[c]
        for i in range(z.shape[0]):
            z[i, c] = none_score if cand < 0 else scores[cand, i]
    choice[:] = choice_at
    zy[:] = zy_at
    top_val[:] = top_val_at
    top_idx[:] = top_idx_at
    correct[:] = correct_at


def warm_up() -> None:
    """Load (or compile, the first time after an install) every loop on a tiny problem: a
    long-running service calls this at start-up, so no request pays the ~0.5-2.5 s."""
    n, k = 3, 2
    labels = np.zeros(n, dtype=np.int64)
    z = np.zeros((n, k))
    top_val, top_idx = np.zeros((n, 2)), np.zeros((n, 2), dtype=np.int64)
    correct, zy, scores = np.zeros(n, dtype=bool), np.zeros(n), np.zeros((1, n))
    ids, start = np.zeros(1, dtype=np.int64), np.array([0, 1, 1])
    option_totals(0, ids, 0.0, True, scores, labels, top_val, top_idx, correct, zy)
    first = first_order(start, scores, labels, top_val, top_idx, correct, zy)
    set_column(0, np.zeros(n), z, labels, top_val, top_idx, zy, correct)
    choice, unprobed = np.full(k, -1, dtype=np.int64), np.array([1])
    cand = np.zeros(1)  # one candidate's label score and credit
    state = (scores, labels, z, top_val, top_idx, correct, zy, choice, cand, cand, unprobed)
    model_gains(first, 0, choice, ids, cand, cand, ids, ids, 1)
    is_unprobed, allowed = np.array([False, True]), np.ones(1, dtype=bool)
    move(0, 0, 0.0, 0, 0.0, state)
    try_model(0, ids, ids, ids, is_unprobed, 0.0, 0, 0.0, state)
    sweep(allowed, start, ids, is_unprobed, 0.0, 0, 0.0, state)
    remove_model(0, allowed, start, ids, is_unprobed, 0.0, 0, 0.0, state)
    restore(choice.copy(), zy.copy(), top_val.copy(), top_idx.copy(), correct.copy(), 0.0, state)
