"""The stacked combination rule (pure: numpy and scikit-learn, no I/O).

The per-class rule (:mod:`mllgraph.combine.rule`) reads only the heads mapped to each class. The
plan's models say more than that: an expert for {shirt, pullover, coat} also tells a T-shirt
from a shirt through heads no class is mapped to. The stacked rule uses them all:

    x(image) = [log(softmax(logits_m / T_m) + EPS) for every plan model m, all its heads]
    p(class | image) = softmax(coef @ x + intercept)

a multinomial logistic regression over the task's classes, fitted at selection on the hub's
probe images of the task's concepts (class-balanced, L2 strength C chosen by cross-validation
among :data:`CS`, reading at most :data:`MAX_COLUMNS` heads: those whose output differs
most between the task's classes). It is only fitted when the request asks for fitted
parameters (``fit_params``), the task has at most :data:`MAX_CLASSES` classes and every class
has at least :data:`MIN_IMAGES_PER_CLASS` probe images (a class without images could not be
learnt; such plans keep the per-class rule, whose priors cover it), and only kept when its
out-of-fold accuracy beats the per-class rule's accuracy on the same images (in-sample, so
the bar is high). Its estimate is honest: nested cross-validation, the outer folds never used
to choose C or to fit (:attr:`StackedRule.cv_accuracy`).

Inference applies it from the plan (``combination["stacked"]``, schema version 2), so
uncovered classes of such a plan are scored by the other heads, not by a patch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mllgraph.combine.rule import EPS, model_probabilities
from mllgraph.errors import FailedPrecondition, InvalidArgument

MIN_IMAGES_PER_CLASS = 5
# Beyond this many classes the nested cross-validation costs seconds per SelectHeads: such
# tasks keep the per-class rule.
MAX_CLASSES = 32
FOLDS = 3
CS = (0.1, 1.0, 10.0)
MAX_COLUMNS = 256  # heads the regression reads at most (the most class-dependent ones)
IMAGES_PER_COLUMN = 1  # and no more heads than probe images
MAX_FEATURES = 20_000  # a plan's stacked part is refused beyond this (hostile JSON)


def features(
    logits: Mapping[str, np.ndarray], models: Sequence[str], temperatures: Mapping[str, float]
) -> np.ndarray:
    """(N, D) calibrated log-probabilities of every head of `models`, in that order."""
    cols = [
        np.log(model_probabilities(np.asarray(logits[m]), temperatures.get(m, 1.0)) + EPS)
        for m in models
    ]
    return np.concatenate(cols, axis=1)


@dataclass(frozen=True)
class StackedRule:
    models: tuple[str, ...]
    heads: tuple[int, ...]  # heads per model, in `models` order
    temperatures: dict[str, float]
    columns: tuple[int, ...]  # the heads it reads, as columns of the concatenated features
    coef: np.ndarray  # (K, len(columns))
    intercept: np.ndarray  # (K,)
    c: float
    cv_accuracy: float  # out-of-fold accuracy on the probe images
    # Out-of-fold recall per class (empty for a rule read from an older plan).
    cv_recall: tuple[float, ...] = ()

    def read_heads(self) -> set[tuple[str, int]]:
        """(model, head) of every head the rule reads (its columns)."""
        owners = [(m, h) for m, n in zip(self.models, self.heads, strict=True) for h in range(n)]
        return {owners[i] for i in self.columns}

    def probabilities(self, logits: Mapping[str, np.ndarray]) -> np.ndarray:
        for m, h in zip(self.models, self.heads, strict=True):
            got = np.asarray(logits[m]).shape[1]
            if got != h:
                raise FailedPrecondition(
                    f"the plan's stacked rule expects {h} heads of {m}, the model has {got}: "
                    "the plan is stale, select again"
                )
        x = features(logits, self.models, self.temperatures)[:, list(self.columns)]
        z = x @ self.coef.T + self.intercept
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": "stacked_logistic",
            "models": list(self.models),
            "heads": list(self.heads),
            "temperatures": dict(self.temperatures),
            "columns": list(self.columns),
            "coef": [[round(float(v), 6) for v in row] for row in self.coef],
            "intercept": [round(float(v), 6) for v in self.intercept],
            "c": self.c,
            "cv_accuracy": self.cv_accuracy,
            "cv_recall": [round(float(r), 6) for r in self.cv_recall],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], num_classes: int) -> StackedRule:
        """Checked: anything malformed is InvalidArgument naming the field."""

        def bad(what: str) -> InvalidArgument:
            return InvalidArgument(f"the plan's stacked rule: {what}")

        if not isinstance(d, Mapping) or d.get("rule") != "stacked_logistic":
            raise bad("only rule 'stacked_logistic' is known")
        models, heads, temps = d.get("models"), d.get("heads"), d.get("temperatures")
        if (
            not isinstance(models, list)
            or not models
            or not all(isinstance(m, str) and m for m in models)
        ):
            raise bad("models must be a non-empty list of model ids")
        if not isinstance(heads, list) or len(heads) != len(models):
            raise bad("heads must list a head count per model")
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in heads):
            raise bad("head counts must be positive integers")
        if sum(heads) > MAX_FEATURES:
            raise bad(f"{sum(heads)} features, at most {MAX_FEATURES}")
        if not isinstance(temps, Mapping):
            raise bad("temperatures must be an object")
        columns = d.get("columns")
        if (
            not isinstance(columns, list)
            or not columns
            or any(isinstance(i, bool) or not isinstance(i, int) for i in columns)
            or not all(0 <= i < sum(heads) for i in columns)
        ):
            raise bad(f"columns must be a non-empty list of head columns below {sum(heads)}")
        try:
            coef = np.asarray(d["coef"], dtype=np.float64).reshape(num_classes, len(columns))
            intercept = np.asarray(d["intercept"], dtype=np.float64).reshape(num_classes)
            temperatures = {str(m): float(t) for m, t in temps.items()}
            c, cv = float(d.get("c", 1.0)), float(d.get("cv_accuracy", math.nan))
            recall = tuple(float(r) for r in d.get("cv_recall") or ())
        except (TypeError, ValueError, KeyError) as e:
            raise bad(
                f"coef must be {num_classes} rows of {len(columns)} numbers and intercept "
                f"{num_classes} numbers ({type(e).__name__})"
            ) from e
        if not (np.all(np.isfinite(coef)) and np.all(np.isfinite(intercept))):
            raise bad("coef and intercept must be finite")
        if any(not (math.isfinite(t) and t > 0) for t in temperatures.values()):
            raise bad("temperatures must be > 0")
        if recall and len(recall) != num_classes:
            raise bad(f"cv_recall must list {num_classes} recalls, one per class")
        return cls(
            tuple(models), tuple(heads), temperatures, tuple(columns), coef, intercept, c, cv,
            recall,
        )  # fmt: skip


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


def fit(
    logits: Mapping[str, np.ndarray],
    labels: np.ndarray,
    num_classes: int,
    models: Sequence[str],
    temperatures: Mapping[str, float],
    *,
    seed: int = 0,
) -> StackedRule | None:
    """The stacked rule on probe images, with its nested cross-validated accuracy; None when
    a class has fewer than MIN_IMAGES_PER_CLASS images or the task has more than MAX_CLASSES
    classes (module doc)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    # An unconverged fit is still a valid (regularised) model and the nested CV judges it: the
    # warning says nothing a user can act on.
    # No BLAS thread limit here: OpenBLAS's count is process-wide, and a request that set it
    # raced with overlapping ones (mllgraph.threads). Since the fit reads at most MAX_COLUMNS
    # heads it gains nothing from one: 200 images x 1,000 heads took 0.87-1.13 s on one BLAS
    # thread and 0.95-1.18 s on two, with the same coefficients (busy 2-core machine).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = np.asarray(labels, dtype=np.int64)
        counts = np.bincount(labels, minlength=num_classes)
        if (
            not models
            or labels.size == 0
            or counts.min() < MIN_IMAGES_PER_CLASS
            or num_classes > MAX_CLASSES
        ):
            return None
        models = sorted(models)
        temps = {m: float(temperatures.get(m, 1.0)) for m in models}
        x = features(logits, models, temps)
        # Outer folds estimate; inner folds (inside each outer training part) choose C.
        # Feature selection is part of the fit, so it too happens inside each outer fold.
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
        )


def _top_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The heads whose log-probability differs most between the classes (ANOVA F; constant
    heads score 0), in column order, at most MAX_COLUMNS and one per IMAGES_PER_COLUMN
    images: a broad expert has 1,000 heads, a task needs few, and a fit over all of them is
    slow and overfits the probe images."""
    keep = max(int(y.max()) + 1, min(MAX_COLUMNS, len(y) // IMAGES_PER_COLUMN))
    if x.shape[1] <= keep:
        return np.arange(x.shape[1])
    from sklearn.feature_selection import f_classif

    with np.errstate(divide="ignore", invalid="ignore"):
        f, _ = f_classif(x, y)
    f = np.nan_to_num(f, nan=0.0, posinf=np.finfo(np.float64).max)
    return np.sort(np.argsort(-f, kind="stable")[:keep])
