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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# One half's (best, which) tables above this many entries: the direct evaluation instead
# (a lopsided space, e.g. one class with most of the options).
MAX_HALF_ELEMENTS = 8_000_000


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
