"""Softmax of one model's logits at a temperature, and one request's memo of them.

The building block of the combination rule (`combine.rule`), the stacked rule and "none of
these": all read calibrated probabilities, or their logs, of whole models' probe logits. A
selection weighs the same models in many fits and plans, so within `softmax_memo` each is
computed once. Pure numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

EPS = 1e-6  # added before a log: log(p + EPS)


def shifted_exp(logits: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """exp(logits / T - row max) and the row maxima; (N, H) and (N,) float64."""
    a = np.asarray(logits, dtype=np.float64) / float(temperature)
    if a.shape[1] <= 32:
        # Column-wise max: numpy's axis-1 reduction is slow on narrow rows (same result).
        m = a[:, 0].copy()
        for h in range(1, a.shape[1]):
            np.maximum(m, a[:, h], out=m)
    else:
        m = a.max(axis=1)
    a -= m[:, None]
    np.exp(a, out=a)
    return a, m


# One request's softmaxes, by (what, id(logits), T) -> (the logits, the result): a selection
# weighs the same models' probe logits in many fits and plans (CHCO's scores, each stacked
# fit's features, the screen, "none of these"), ~0.6 ms per ImageNet expert each time.
_MEMO: ContextVar[dict[tuple[str, int, float], tuple[Any, np.ndarray]] | None] = ContextVar(
    "mllgraph_softmax_memo", default=None
)


@contextmanager
def softmax_memo() -> Iterator[None]:
    """Within this block (this thread or task only), `model_probabilities` and
    `log_probabilities` of one logits array at one temperature are computed once. Results are
    read-only then; the block keeps its arrays alive, so an id is never reused within it."""
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def _memoized(
    what: str, logits: np.ndarray, temperature: float, compute: Callable[[], np.ndarray]
) -> np.ndarray:
    memo = _MEMO.get()
    if memo is None:
        return compute()
    key = (what, id(logits), float(temperature))
    known = memo.get(key)
    if known is not None and known[0] is logits:
        return known[1]
    out = compute()
    _remember(what, logits, temperature, out)
    return out


def _remember(what: str, logits: np.ndarray, temperature: float, out: np.ndarray) -> None:
    """Keep `out` as `what` of (logits, T) where a `softmax_memo` block is open (read-only:
    shared by every caller of the block)."""
    memo = _MEMO.get()
    if memo is not None:
        out.flags.writeable = False
        memo[(what, id(logits), float(temperature))] = (logits, out)


def model_probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax over all heads of one model, at temperature ``temperature``; (N, H) float64
    (read-only within a `softmax_memo` block)."""

    def compute() -> np.ndarray:
        a, m = shifted_exp(logits, temperature)
        total = a.sum(axis=1, keepdims=True)
        a /= total
        # The row normalisers come free here ("none of these" reads them as the energy).
        _remember("lse", logits, temperature, m + np.log(total[:, 0]))
        return a

    return _memoized("p", logits, temperature, compute)


def log_normalizers(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(N,) the log of each row's softmax normaliser, max(z) + log(sum(exp(z - max(z))))
    for z = logits / T: the energy ("none of these"). Within a `softmax_memo` block, read
    from `model_probabilities` of the same logits where it ran first."""

    def compute() -> np.ndarray:
        a, m = shifted_exp(logits, temperature)
        return m + np.log(a.sum(axis=1))

    return _memoized("lse", logits, temperature, compute)


def log_probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """log(`model_probabilities` + EPS): the calibrated log-probabilities the stacked rule and
    "none of these" read (read-only within a `softmax_memo` block)."""
    return _memoized(
        "log", logits, temperature, lambda: np.log(model_probabilities(logits, temperature) + EPS)
    )
