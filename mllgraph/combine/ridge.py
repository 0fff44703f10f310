"""Weighted multi-output ridge regression along a whole regularisation path, from one SVD,
with exact leave-one-out predictions (pure numpy, no I/O).

The stacked rule (:mod:`mllgraph.combine.stacked`) regresses one-hot class targets on the
heads' standardised log-probabilities. For sample weights w_i (class balance), an
unpenalised intercept and penalty lam * ||W||^2 it minimises

    sum_i w_i ||y_i - b - W x_i||^2 + lam ||W||^2.

With s = sqrt(w), X~ = diag(s) (X - mu_w) (mu_w the weighted column means, so X~ is
orthogonal to s) and X~ = U S V^T, the hat matrix of the weighted problem is

    H(lam) = s s^T / (s^T s) + U diag(S^2 / (S^2 + lam)) U^T,

so every lam on a path costs O(N r K) after one O(N D min(N, D)) SVD, and the exact
leave-one-out prediction (point i left out of the fit, weights and features otherwise as
given) is y_i - (y_i - yhat_i) / (1 - H_ii): the classical PRESS identity, which holds for
ridge with an unpenalised intercept because the fit is linear in the targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# 1 - H_ii is clamped here: a point the fit interpolates (tiny lam, more heads than images)
# would otherwise divide by zero; its leave-one-out prediction is then merely very wrong.
_MIN_LEVERAGE_GAP = 1e-12


@dataclass(frozen=True)
class RidgePath:
    """One decomposition of a weighted, centred design; fits for any lam read from it."""

    x_mean: np.ndarray  # (D,) weighted column means
    y_mean: np.ndarray  # (K,) weighted target means
    sqrt_w: np.ndarray  # (N,)
    u: np.ndarray  # (N, r)
    s: np.ndarray  # (r,)
    vt: np.ndarray  # (r, D)
    uty: np.ndarray  # (r, K) U^T diag(s) (Y - y_mean)
    y: np.ndarray  # (N, K) the targets
    intercept_leverage: np.ndarray  # (N,) w_i / sum(w): the intercept's part of H_ii
    u_sq: np.ndarray  # (N, r) U ** 2, which every lam's hat diagonal reads

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> RidgePath:
        """`x` (N, D) features, `y` (N, K) targets, `weights` (N,) > 0 (None: all 1)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
            raise ValueError(
                f"ridge: x must be (N, D) and y (N, K) with N >= 2, got {x.shape} and {y.shape}"
            )
        w = np.ones(x.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (x.shape[0],) or not np.all(w > 0):
            raise ValueError(f"ridge: weights must be {x.shape[0]} positive numbers")
        total = w.sum()
        x_mean = w @ x / total
        y_mean = w @ y / total
        sqrt_w = np.sqrt(w)
        xt = sqrt_w[:, None] * (x - x_mean)
        u, s, vt = _thin_svd(xt)
        uty = u.T @ (sqrt_w[:, None] * (y - y_mean))
        return cls(x_mean, y_mean, sqrt_w, u, s, vt, uty, y, w / total, u * u)

    def _shrink(self, lam: float) -> np.ndarray:
        return self.s**2 / (self.s**2 + lam)

    def fitted(self, lam: float) -> np.ndarray:
        """(N, K) in-sample predictions at `lam`."""
        centred = self.u @ (self._shrink(lam)[:, None] * self.uty)  # (r, K) scaled, not (N, r)
        return self.y_mean + centred / self.sqrt_w[:, None]

    def leverage(self, lam: float) -> np.ndarray:
        """(N,) the hat matrix's diagonal at `lam`."""
        return self.intercept_leverage + self.u_sq @ self._shrink(lam)

    def loo(self, lam: float) -> np.ndarray:
        """(N, K) exact leave-one-out predictions at `lam` (module doc)."""
        gap = np.maximum(1.0 - self.leverage(lam), _MIN_LEVERAGE_GAP)
        return self.y - (self.y - self.fitted(lam)) / gap[:, None]

    def loo_path(self, lams: np.ndarray) -> np.ndarray:
        """(L, N, K) `loo` at each of `lams`, in one batched product instead of L."""
        lams = np.asarray(lams, dtype=np.float64)
        s2 = self.s**2
        shrink = s2[None, :] / (s2[None, :] + lams[:, None])  # (L, r)
        centred = self.u[None] @ (shrink[:, :, None] * self.uty[None])  # (L, N, K)
        fitted = self.y_mean + centred / self.sqrt_w[:, None]
        leverage = self.intercept_leverage[None, :] + shrink @ self.u_sq.T  # (L, N)
        gap = np.maximum(1.0 - leverage, _MIN_LEVERAGE_GAP)
        return self.y - (self.y - fitted) / gap[:, :, None]

    def coefficients(self, lam: float) -> tuple[np.ndarray, np.ndarray]:
        """(coef (K, D), intercept (K,)) at `lam`: predictions are x @ coef.T + intercept."""
        coef = (self.vt.T * (self.s / (self.s**2 + lam))) @ self.uty  # (D, K)
        return coef.T, self.y_mean - self.x_mean @ coef


def _thin_svd(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """U, S, V^T of `a` (N, D) over the directions it spans, from the eigendecomposition of
    the smaller Gram matrix: about half the cost of LAPACK's SVD at the sizes selection
    fits (a few hundred images and heads), and as exact on every direction whose S^2 is
    above rounding (the rest are dropped: they would enter the hat matrix as U_ij^2 * 0)."""
    n, d = a.shape
    gram = a.T @ a if d <= n else a @ a.T
    s2, vecs = np.linalg.eigh(gram)
    keep = s2 > max(s2.max(initial=0.0), 0.0) * max(n, d) * np.finfo(np.float64).eps
    s2, vecs = s2[keep][::-1], vecs[:, keep][:, ::-1]
    s = np.sqrt(s2)
    if d <= n:  # vecs are V
        return (a @ vecs) / s, s, vecs.T
    return vecs, s, ((a.T @ vecs) / s).T


def leave_groups_out(
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    groups: np.ndarray,
    lams: np.ndarray,
) -> np.ndarray:
    """(L, N, K) each point's prediction, at each of `lams`, by the fit on the other groups
    alone (weights as given): leave-one-group-out, one decomposition per group. Where a
    group's points are near copies of each other (augmented copies of one image, one art
    style), leave-one-out would score each from its copies; this scores it as a new group
    would be."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    groups = np.asarray(groups)
    lams = np.asarray(lams, dtype=np.float64)
    out = np.empty((lams.size, *y.shape))
    for g in np.unique(groups):
        held = groups == g
        path = RidgePath.of(x[~held], y[~held], weights[~held])
        for i, lam in enumerate(lams):
            coef, intercept = path.coefficients(lam)
            out[i, held] = x[held] @ coef.T + intercept
    return out
