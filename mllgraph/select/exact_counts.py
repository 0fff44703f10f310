"""How many probe images each assignment of CHCO's exact search gets right, met in the middle.

An assignment picks one option (a candidate's score row, or the uncovered row) per class;
an image is right when its own class's row scores highest (the first class on ties, as the
combination's argmax). Evaluating every assignment directly costs classes x images per
assignment. Split the classes into a leading half A and a trailing half B: for every
combination of A's options keep, per image, A's best score and which class of A holds it
(the first on ties), and the same for B. An assignment is then a pair (a, b), and image n is
right when its class is in A, A's best is that class and it is not beaten by B's
(best_A >= best_B: A's classes come first), or its class is in B, B's best is that class and
it beats A's (best_B > best_A). That is one comparison per image and pair, independent of the
number of classes: about 100x fewer operations on the real hub's 9-class screens.

Pure numpy, no I/O; `chco.solve_exact` uses it and checks give the same plans
(`tests/test_chco.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

# One half's (best, which) tables above this many entries: the direct evaluation instead
# (a lopsided space, e.g. one class with most of the options).
MAX_HALF_ELEMENTS = 8_000_000
# Bounds and totals add the same credits in other orders: skip only pairs clearly below.
_BOUND_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Halves:
    split: int  # classes [0, split) form A, [split, K) form B
    size_b: int  # combinations of B's options: assignment flat = a * size_b + b
    best_a: np.ndarray  # (|A|, N) A's best score per image
    hit_a: np.ndarray  # (|A|, N) bool: A's best class is the image's own class
    best_b: np.ndarray  # (|B|, N)
    hit_b: np.ndarray  # (|B|, N)

    def counts(self, a_lo: int, a_hi: int) -> np.ndarray:
        """Right images of the assignments flat in [a_lo * size_b, a_hi * size_b), in order."""
        ge = self.best_a[a_lo:a_hi, None, :] >= self.best_b[None, :, :]
        right = (self.hit_a[a_lo:a_hi, None, :] & ge) | (self.hit_b[None, :, :] & ~ge)
        return right.sum(axis=2).reshape(-1)

    def counts_of(self, a_rows: np.ndarray, b_rows: np.ndarray) -> np.ndarray:
        """(len(a_rows), len(b_rows)): right images of each pair of A's and B's combinations."""
        ge = self.best_a[a_rows][:, None, :] >= self.best_b[b_rows][None, :, :]
        right = (self.hit_a[a_rows][:, None, :] & ge) | (self.hit_b[b_rows][None, :, :] & ~ge)
        return right.sum(axis=2)


def option_sums(values: np.ndarray, options: Sequence[np.ndarray]) -> np.ndarray:
    """Per combination of `options` (one row of each, in flat order), the sum of `values`
    over the rows it picks."""
    sizes = [len(o) for o in options]
    picks = np.unravel_index(np.arange(math.prod(sizes)), sizes)
    out = np.zeros(math.prod(sizes))
    for c, o in enumerate(options):
        out += values[o[picks[c]]]
    return out


def best_first(
    met: Halves,
    extra_a: np.ndarray,
    extra_b: np.ndarray,
    rows_per_block: int,
    floor: Callable[[], float],
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Blocks of (flat assignment indexes, right images), skipping every pair that cannot
    reach `floor()` — the best total (right images + extra) of an assignment the caller has
    kept so far.

    A pair's right images are at most A's hits plus B's hits (an image of A's classes can
    only be right through A, and likewise for B), so `hits + extra` bounds its total, and
    `extra` (the prior credit of unprobed classes) splits exactly into A's and B's parts.
    A's combinations go in decreasing order of their bound, the first alone, so that a high
    floor is set early and the rest are mostly skipped unscored. A pair whose bound equals
    the floor is kept: it may tie the best, and the caller breaks ties over all of them."""
    bound_a = met.hit_a.sum(axis=1) + extra_a
    bound_b = met.hit_b.sum(axis=1) + extra_b
    order = np.argsort(-bound_a, kind="stable")
    top_b = float(bound_b.max())
    # The best-bounded row alone first: a floor before the first full block.
    starts = [0, *range(1, order.size, max(1, rows_per_block))]
    for lo, hi in zip(starts, [*starts[1:], order.size], strict=True):
        rows = order[lo:hi]
        least = floor() - _BOUND_TOLERANCE
        if bound_a[rows[0]] + top_b < least:
            return  # every later row has a bound no higher
        cols = np.flatnonzero(bound_b >= least - bound_a[rows[0]])
        keep = bound_a[rows][:, None] + bound_b[cols][None, :] >= least
        if not keep.any():
            continue
        flat = rows[:, None] * met.size_b + cols[None, :]
        yield flat[keep], met.counts_of(rows, cols)[keep]


def split_point(sizes: Sequence[int]) -> int:
    """The split 1..K-1 whose larger half has the fewest combinations."""
    return min(range(1, len(sizes)), key=lambda h: max(math.prod(sizes[:h]), math.prod(sizes[h:])))


def _half(
    ext: np.ndarray,
    options: Sequence[np.ndarray],
    labels: np.ndarray,
    first_class: int,
    chunk_elements: int,
) -> tuple[np.ndarray, np.ndarray]:
    sizes = [len(o) for o in options]
    total, n, h = math.prod(sizes), ext.shape[1], len(options)
    best = np.empty((total, n), dtype=ext.dtype)
    hit = np.empty((total, n), dtype=bool)
    step = max(1, chunk_elements // max(1, h * n))
    for lo in range(0, total, step):
        hi = min(total, lo + step)
        picks = np.unravel_index(np.arange(lo, hi), sizes)
        rows = np.stack([options[c][picks[c]] for c in range(h)], axis=1)  # (B, h)
        values = ext[rows]  # (B, h, N)
        which = values.argmax(axis=1)  # first class of the half on ties
        best[lo:hi] = np.take_along_axis(values, which[:, None, :], axis=1)[:, 0, :]
        hit[lo:hi] = (which + first_class) == labels
    return best, hit


def halves(
    ext: np.ndarray,
    options: Sequence[np.ndarray],
    labels: np.ndarray,
    chunk_elements: int,
) -> Halves | None:
    """The two halves' tables for the score rows `ext` (rows, N), each class's option rows
    `options` (in the search's order) and the images' classes `labels`; None when there is
    a single class or a half would be too large (evaluate directly then)."""
    sizes = [len(o) for o in options]
    if len(sizes) < 2:
        return None
    h = split_point(sizes)
    size_a, size_b = math.prod(sizes[:h]), math.prod(sizes[h:])
    if max(size_a, size_b) * ext.shape[1] > MAX_HALF_ELEMENTS:
        return None
    best_a, hit_a = _half(ext, options[:h], labels, 0, chunk_elements)
    best_b, hit_b = _half(ext, options[h:], labels, h, chunk_elements)
    return Halves(h, size_b, best_a, hit_a, best_b, hit_b)
