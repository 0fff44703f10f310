"""The stacked rule's former fit: multinomial logistic regression with nested L-BFGS
cross-validation (pure: numpy and scikit-learn, imported lazily; no I/O).

Selection no longer calls it: :func:`mllgraph.combine.stacked.fit` (closed-form ridge with
leave-one-out) replaced it at equal dev-half accuracy for a fraction of the time. It stays
only so that the side-by-side comparison (`scripts/ab_stacked_closed_form.py`) can fit
both rules on the same probe data; plans it made load and score as before
(`StackedRule.method == "logistic_cv"`).

C is chosen among :data:`CS` by inner stratified CV; the estimate is nested: the outer folds
are never used to choose the heads read, C or the fit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mllgraph.combine.stacked import (
    FOLDS,
    IMAGES_PER_COLUMN,
    MAX_COLUMNS,
    StackedRule,
    features,
    fittable,
)

CS = (0.1, 1.0, 10.0)


def _model(c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, class_weight="balanced", max_iter=300)


def _folds(labels: np.ndarray, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))


def _choose_c(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    """C with the best mean held-out accuracy over FOLDS stratified folds (first on ties)."""
    folds = _folds(y, min(FOLDS, int(np.bincount(y).min())), seed)
    best_c, best = CS[0], -1.0
    for c in CS:
        acc = np.mean(
            [(_model(c).fit(x[tr], y[tr]).predict(x[te]) == y[te]).mean() for tr, te in folds]
        )
        if acc > best:
            best_c, best = c, float(acc)
    return best_c


def _top_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """As the former rule chose its heads (scikit-learn's ANOVA F)."""
    keep = max(int(y.max()) + 1, min(MAX_COLUMNS, len(y) // IMAGES_PER_COLUMN))
    if x.shape[1] <= keep:
        return np.arange(x.shape[1])
    from sklearn.feature_selection import f_classif

    with np.errstate(divide="ignore", invalid="ignore"):
        f, _ = f_classif(x, y)
    f = np.nan_to_num(f, nan=0.0, posinf=np.finfo(np.float64).max)
    return np.sort(np.argsort(-f, kind="stable")[:keep])


def fit(
    logits: Mapping[str, np.ndarray],
    labels: np.ndarray,
    num_classes: int,
    models: Sequence[str],
    temperatures: Mapping[str, float],
    *,
    seed: int = 0,
    sources: np.ndarray | None = None,
) -> StackedRule | None:
    """The former stacked rule, same contract as :func:`mllgraph.combine.stacked.fit`, but
    its folds are always stratified by image (`sources` is accepted and not read: the
    former rule is kept as it was, for side-by-side comparisons)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    # An unconverged fit is still a valid (regularised) model and the nested CV judges it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = np.asarray(labels, dtype=np.int64)
        if not fittable(labels, num_classes, models):
            return None
        models = sorted(models)
        temps = {m: float(temperatures.get(m, 1.0)) for m in models}
        x = features(logits, models, temps)
        predicted = np.empty_like(labels)
        for tr, te in _folds(labels, FOLDS, seed):
            cols = _top_columns(x[tr], labels[tr])
            xt = x[tr][:, cols]
            c = _choose_c(xt, labels[tr], seed)
            predicted[te] = _model(c).fit(xt, labels[tr]).predict(x[te][:, cols])
        right = predicted == labels
        columns = _top_columns(x, labels)
        x = x[:, columns]
        c = _choose_c(x, labels, seed)
        final = _model(c).fit(x, labels)
        coef = np.asarray(final.coef_, dtype=np.float64)
        intercept = np.asarray(final.intercept_, dtype=np.float64)
        if num_classes == 2:  # sklearn's binary form, as two softmax rows: sigmoid(w.x + b)
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        return StackedRule(
            models=tuple(models),
            heads=tuple(int(np.asarray(logits[m]).shape[1]) for m in models),
            temperatures=temps,
            columns=tuple(int(i) for i in columns),
            coef=coef,
            intercept=intercept,
            c=c,
            cv_accuracy=float(right.mean()),
            cv_recall=tuple(float(right[labels == k].mean()) for k in range(num_classes)),
            method="logistic_cv",
        )
