"""The stacked combination rule (pure numpy, no I/O).

The per-class rule (:mod:`mllgraph.combine.rule`) reads only the heads mapped to each class. The
plan's models say more than that: an expert for {shirt, pullover, coat} also tells a T-shirt
from a shirt through heads no class is mapped to. The stacked rule uses them all:

    x(image) = [log(softmax(logits_m / T_m) + EPS) for every plan model m, all its heads]
    p(class | image) = softmax(coef @ x + intercept)

fitted at selection on the hub's probe images of the task's concepts, reading at most
:data:`MAX_COLUMNS` heads: those whose output differs most between the task's classes (ANOVA
F). The fit is closed-form (:func:`fit`, method ``ridge_loo``): class-balanced ridge
regression of one-hot targets on the standardised heads, its strength chosen among
:data:`ALPHAS` by the exact leave-one-out squared error (PRESS) along the whole path from one
decomposition (:mod:`mllgraph.combine.ridge`), and one temperature, fitted on those
leave-one-out scores, that turns its scores into probabilities (folded into coef and
intercept, so inference is the same softmax as for the former logistic rule,
:mod:`mllgraph.combine.stacked_logistic`, whose plans still load and score as they did).
Tens of milliseconds where the nested L-BFGS cross-validation took seconds.

It is only fitted when the request asks for fitted parameters (``fit_params``), the task has at
most :data:`MAX_CLASSES` classes and every class it scores has at least
:data:`MIN_IMAGES_PER_CLASS` probe images. A class without any could not be learnt: selection
fits the rule on the other classes (:attr:`StackedRule.classes`) and leaves that class to the
per-class rule (its heads' priors, or the patch), which decides between it and the rule's
classes at inference (:func:`within`). It is only kept when its out-of-fold accuracy beats the
per-class rule's accuracy on the same images (in-sample, so the bar is high). Its estimate is
honest: nested, :data:`FOLDS` stratified outer folds never used to choose the heads, the
strength or the fit (the strength is chosen by leave-one-out inside each outer training part)
(:attr:`StackedRule.cv_accuracy`). Where classes have probe images from several sources (art
styles of one emoji, a user's folders), the folds hold one source out at a time instead
(:func:`source_folds`, :attr:`StackedRule.cv_folds`): images of one source are near copies of
each other, and folds by image then measure 1.0 for almost any rule.

Inference applies it from the plan (``combination["stacked"]``, schema version 2), so
uncovered classes it scores are scored by the other heads, not by a patch.

A fit depends on the models, their temperatures, which probe images carry which class and
the constants here, not on the class names: :func:`fit_key` names that, with the classes in
a canonical order (:func:`canonical_order`), so selection can keep fits across requests that
word or order the same task differently (`mllgraph.select.cache.FitCache`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mllgraph.combine.ridge import RidgePath, leave_groups_out
from mllgraph.combine.rule import EPS
from mllgraph.combine.softmax import log_probabilities
from mllgraph.errors import FailedPrecondition, InvalidArgument

MIN_IMAGES_PER_CLASS = 5
# Larger tasks keep the per-class rule (a stacked rule's coef grows with the classes, and
# its probe images per class shrink).
MAX_CLASSES = 32
FOLDS = 3
# Ridge strengths, relative: lam = alpha * (number of images), on standardised heads.
ALPHAS = tuple(float(a) for a in np.logspace(-3, 2, 21))
# Softmax temperatures (multipliers of the ridge scores) searched on the leave-one-out scores.
SCALES = tuple(float(t) for t in np.logspace(-1, 3, 81))
METHODS = ("ridge_loo", "logistic_cv")  # how a rule was fitted; the first is today's
CV_FOLDS = ("images", "sources")  # what its out-of-fold estimate held out (`fit`)
MAX_COLUMNS = 256  # heads the regression reads at most (the most class-dependent ones)
IMAGES_PER_COLUMN = 1  # and no more heads than probe images
MAX_FEATURES = 20_000  # a plan's stacked part is refused beyond this (hostile JSON)


def features(
    logits: Mapping[str, np.ndarray], models: Sequence[str], temperatures: Mapping[str, float]
) -> np.ndarray:
    """(N, D) calibrated log-probabilities of every head of `models`, in that order."""
    cols = [log_probabilities(np.asarray(logits[m]), temperatures.get(m, 1.0)) for m in models]
    return np.concatenate(cols, axis=1)


@dataclass(frozen=True)
class StackedRule:
    models: tuple[str, ...]
    heads: tuple[int, ...]  # heads per model, in `models` order
    temperatures: dict[str, float]
    columns: tuple[int, ...]  # the heads it reads, as columns of the concatenated features
    coef: np.ndarray  # (K, len(columns))
    intercept: np.ndarray  # (K,)
    # Inverse regularisation strength: 1 / alpha for ridge_loo, logistic C for logistic_cv.
    c: float
    cv_accuracy: float  # out-of-fold accuracy on the probe images
    # Out-of-fold recall per class (empty for a rule read from an older plan).
    cv_recall: tuple[float, ...] = ()
    method: str = "logistic_cv"  # a plan that names none was fitted before ridge_loo
    # What the out-of-fold estimate held out: "images" (stratified folds) or "sources"
    # (one probe source at a time, `fit`).
    cv_folds: str = "images"
    # The task classes its rows score, ascending; empty: every class, in order. A task class
    # without probe images cannot be learnt: the per-class rule (its heads, else the patch)
    # scores it, and this rule shares out among its own classes the mass that rule gives
    # them (`within`).
    classes: tuple[int, ...] = ()

    def in_class_order(self, order: Sequence[int]) -> StackedRule:
        """The same rule with its classes renumbered: class `i` of the result is class
        `order[i]` of this one."""
        if self.classes:
            row_of = {c: j for j, c in enumerate(self.classes)}
            kept = [(i, row_of[o]) for i, o in enumerate(order) if o in row_of]
            rows = [j for _, j in kept]
            classes = tuple(i for i, _ in kept)
        else:
            rows, classes = list(order), ()
        recall = tuple(self.cv_recall[i] for i in rows) if self.cv_recall else ()
        return replace(
            self, coef=self.coef[rows], intercept=self.intercept[rows], cv_recall=recall,
            classes=classes,
        )  # fmt: skip

    def scores(self, num_classes: int) -> list[int]:
        """The task classes this rule scores (of `num_classes`)."""
        return list(self.classes) if self.classes else list(range(num_classes))

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
            "method": self.method,
            "cv_folds": self.cv_folds,
            **({"classes": list(self.classes)} if self.classes else {}),
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
        classes = d.get("classes", [])
        if (
            not isinstance(classes, list)
            or any(isinstance(c, bool) or not isinstance(c, int) for c in classes)
            or classes != sorted(set(classes))
            or (classes and (len(classes) < 2 or len(classes) >= num_classes))
            or not all(0 <= c < num_classes for c in classes)
        ):
            raise bad(
                f"classes must list, ascending, at least 2 and fewer than all {num_classes} "
                "task classes (or be absent: all of them)"
            )
        rows = len(classes) or num_classes
        try:
            coef = np.asarray(d["coef"], dtype=np.float64).reshape(rows, len(columns))
            intercept = np.asarray(d["intercept"], dtype=np.float64).reshape(rows)
            temperatures = {str(m): float(t) for m, t in temps.items()}
            c, cv = float(d.get("c", 1.0)), float(d.get("cv_accuracy", math.nan))
            recall = tuple(float(r) for r in d.get("cv_recall") or ())
        except (TypeError, ValueError, KeyError) as e:
            raise bad(
                f"coef must be {rows} rows of {len(columns)} numbers and intercept "
                f"{rows} numbers ({type(e).__name__})"
            ) from e
        if not (np.all(np.isfinite(coef)) and np.all(np.isfinite(intercept))):
            raise bad("coef and intercept must be finite")
        if any(not (math.isfinite(t) and t > 0) for t in temperatures.values()):
            raise bad("temperatures must be > 0")
        if recall and len(recall) != rows:
            raise bad(f"cv_recall must list {rows} recalls, one per class it scores")
        method = d.get("method", "logistic_cv")
        if method not in METHODS:
            raise bad(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        folds = d.get("cv_folds", "images")
        if folds not in CV_FOLDS:
            raise bad(f"cv_folds must be one of {', '.join(CV_FOLDS)}, got {folds!r}")
        return cls(
            tuple(models), tuple(heads), temperatures, tuple(columns), coef, intercept, c, cv,
            recall, method, folds, tuple(classes),
        )  # fmt: skip


def within(rule_probs: np.ndarray, base: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """(N, K) class probabilities where a rule scores only `classes` of the task's K:
    `base` (the per-class rule's, over all K) for the others, and for those the rule's
    probabilities `rule_probs` (N, len(classes)) times the mass `base` gives them together.
    So the per-class rule (its heads, its patch) decides between the classes the rule cannot
    score and the rest, the rule among the rest."""
    out = np.array(base, dtype=np.float64, copy=True)
    idx = list(classes)
    out[:, idx] = out[:, idx].sum(axis=1, keepdims=True) * rule_probs
    return out


# -- the closed-form fit ---------------------------------------------------------------------


def anova_f(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(D,) one-way ANOVA F of each column of `x` between the classes present in `y`; a
    column constant overall scores 0, one constant within each class but not between them
    the largest float."""
    x = np.asarray(x, dtype=np.float64)
    _, yi = np.unique(y, return_inverse=True)
    k, n = int(yi.max(initial=-1)) + 1, yi.size
    if k < 2 or n <= k:
        return np.zeros(x.shape[1])
    onehot = np.eye(k)[yi]
    counts = onehot.sum(axis=0)
    means = (onehot.T @ x) / counts[:, None]
    between = counts @ (means - x.mean(axis=0)) ** 2
    within = ((x - means[yi]) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = (between / (k - 1)) / (within / (n - k))
    return np.nan_to_num(f, nan=0.0, posinf=np.finfo(np.float64).max)


@dataclass(frozen=True)
class GroupStats:
    """Every column's count, mean and sum of squared deviations per (group, class) cell of
    the images: the ANOVA F of the images of any set of groups (`f`) without another pass
    over them. `fit` scores its outer folds' training parts and the whole this way, one pass
    over (N, D) heads instead of one per part."""

    counts: np.ndarray  # (G, K)
    means: np.ndarray  # (G, K, D)
    squares: np.ndarray  # (G, K, D) about each cell's own mean

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray, k: int, groups: np.ndarray) -> GroupStats:
        """`x` (N, D), classes `y` (N,) below `k`, `groups` (N,) in 0..G-1."""
        g = int(groups.max(initial=-1)) + 1
        cell = groups * k + y
        onehot = np.zeros((y.size, g * k))
        onehot[np.arange(y.size), cell] = 1.0
        counts = onehot.sum(axis=0)
        means = (onehot.T @ x) / np.maximum(counts, 1.0)[:, None]
        dev = x - means[cell]
        squares = onehot.T @ (dev * dev)
        d = x.shape[1]
        return cls(counts.reshape(g, k), means.reshape(g, k, d), squares.reshape(g, k, d))

    def f(self, keep: np.ndarray) -> np.ndarray:
        """(D,) `anova_f` of the images of the groups where `keep` (G,) is true: the cells
        of a class pooled exactly (Chan et al.'s parallel sums of squares)."""
        n_g, m_g = self.counts[keep][:, :, None], self.means[keep]  # (g, K, 1), (g, K, D)
        counts = n_g.sum(axis=0)  # (K, 1)
        present = counts[:, 0] > 0
        k, n = int(present.sum()), float(counts.sum())
        if k < 2 or n <= k:
            return np.zeros(self.means.shape[2])
        counts, n_g, m_g = counts[present], n_g[:, present], m_g[:, present]
        means = (n_g * m_g).sum(axis=0) / counts  # (k, D)
        within = (self.squares[keep][:, present] + n_g * (m_g - means) ** 2).sum(axis=(0, 1))
        grand = (counts * means).sum(axis=0) / n
        between = (counts * (means - grand) ** 2).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = (between / (k - 1)) / (within / (n - k))
        return np.nan_to_num(f, nan=0.0, posinf=np.finfo(np.float64).max)


def _top_columns(x: np.ndarray, y: np.ndarray, f: np.ndarray | None = None) -> np.ndarray:
    """The heads whose log-probability differs most between the classes (ANOVA F; constant
    heads score 0), in column order, at most MAX_COLUMNS and one per IMAGES_PER_COLUMN
    images: a broad expert has 1,000 heads, a task needs few, and a fit over all of them
    overfits the probe images. `f`: `anova_f(x, y)` where the caller has it (then `x` is
    only read for its width)."""
    keep = max(int(y.max()) + 1, min(MAX_COLUMNS, len(y) // IMAGES_PER_COLUMN))
    if x.shape[1] <= keep:
        return np.arange(x.shape[1])
    f = anova_f(x, y) if f is None else f
    return np.sort(np.argsort(-f, kind="stable")[:keep])


def _fit_part(
    x: np.ndarray, rows: np.ndarray, y: np.ndarray, k: int, folds: np.ndarray | None,
    f: np.ndarray | None,
) -> _RidgeFit:  # fmt: skip
    """`_fit_ridge` on the images `rows` (bool, N) of `x`; with their `anova_f` `f`, only
    the heads it reads are copied out of `x`."""
    if f is None:
        return _fit_ridge(x[rows], y, k, folds)
    columns = _top_columns(x, y, f)
    part = _fit_ridge(x[np.ix_(rows, columns)], y, k, folds)
    return replace(part, columns=columns[part.columns])


def balanced_weights(y: np.ndarray, k: int) -> np.ndarray:
    """(N,) sample weights that give every class present the same total weight (as
    scikit-learn's class_weight="balanced"): n / (classes present * images of its class)."""
    counts = np.bincount(y, minlength=k)
    return y.size / (np.count_nonzero(counts) * counts[y].astype(np.float64))


@dataclass(frozen=True)
class _RidgeFit:
    columns: np.ndarray  # the heads read, as columns of the features
    coef: np.ndarray  # (K, len(columns)), on the unstandardised features
    intercept: np.ndarray  # (K,)
    alpha: float
    loo: np.ndarray  # (N, K) leave-one-out scores at alpha


def choose_alpha(path: RidgePath, y: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
    """The alpha in ALPHAS with the smallest class-weighted leave-one-out squared error
    (PRESS; ties: the first), and its leave-one-out predictions. (Chosen on the dev half
    over the leave-one-out accuracy, which jumps by whole images on a few hundred: 0.52
    points better in the mean, reports/ab_stacked_closed_form.json.)"""
    onehot = np.eye(path.y.shape[1])[y]
    loo = path.loo_path(np.asarray(ALPHAS) * y.size)  # (alphas, N, K)
    press = ((loo - onehot) ** 2).sum(axis=2) @ weights
    best = int(np.argmin(press))  # ties: the first
    return ALPHAS[best], loo[best]


def choose_alpha_by_group(
    x: np.ndarray, y: np.ndarray, k: int, weights: np.ndarray, groups: np.ndarray
) -> tuple[float, np.ndarray]:
    """As :func:`choose_alpha` on the standardised heads `x`, with each image predicted by
    the fit on the other groups (`ridge.leave_groups_out`) instead of by leave-one-out."""
    onehot = np.eye(k)[y]
    lams = np.asarray(ALPHAS) * y.size
    held_out = leave_groups_out(x, onehot, weights, groups, lams)  # (alphas, N, K)
    press = ((held_out - onehot) ** 2).sum(axis=2) @ weights
    best = int(np.argmin(press))  # ties: the first, as choose_alpha
    return ALPHAS[best], held_out[best]


def source_folds(
    y: np.ndarray, k: int, sources: np.ndarray | None, seed: int = 0
) -> np.ndarray | None:
    """(N,) a fold per image that holds one probe source out at a time, or None where no
    class has images from two sources or more (then nothing can be held out by source).

    Fold f holds the images of source f (sources in sorted order) of every class that has
    images from two sources or more; the images of a class from a single source are dealt
    round the same folds (stratified, seeded), so every fold's training part still has
    every class. An estimate over these folds is what the rule does on a source it never
    saw, for the classes where that can be measured."""
    if sources is None:
        return None
    sources = np.asarray(sources)
    names, source = np.unique(sources, return_inverse=True)
    source = source.reshape(-1)
    multi = np.array([np.unique(source[y == c]).size >= 2 for c in range(k)], dtype=bool)
    if names.size < 2 or not multi.any():
        return None
    fold = source.copy()
    single = ~multi[y]
    if single.any():
        dealt = stratified_folds(y[single], k, int(names.size), seed)
        fold[single] = dealt
    return fold


def _fit_ridge(x: np.ndarray, y: np.ndarray, k: int, folds: np.ndarray | None = None) -> _RidgeFit:
    """Heads chosen, standardised, the path decomposed once, alpha chosen by leave-one-out
    (or, with `folds` from `source_folds`, by leaving one of those folds out at a time), all
    on (x, y) alone. `loo`: the held-out scores at the chosen alpha."""
    columns = _top_columns(x, y)
    xs = x[:, columns]
    w = balanced_weights(y, k)
    mean = w @ xs / w.sum()
    sd = np.sqrt(w @ (xs - mean) ** 2 / w.sum())
    sd = np.where(sd > 0, sd, 1.0)  # a constant head: centred to 0, whatever its scale
    xs = (xs - mean) / sd
    path = RidgePath.of(xs, np.eye(k)[y], w)
    if folds is None:
        alpha, loo = choose_alpha(path, y, w)
    else:
        alpha, loo = choose_alpha_by_group(xs, y, k, w, folds)
    coef, intercept = path.coefficients(alpha * y.size)
    coef = coef / sd
    return _RidgeFit(columns, coef, intercept - coef @ mean, alpha, loo)


def softmax_scale(scores: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    """The multiplier in SCALES of `scores` (N, K) whose softmax has the least
    class-weighted log loss on labels `y` (ties: the first)."""
    z = scores - scores.max(axis=1, keepdims=True)
    zt = np.asarray(SCALES)[:, None, None] * z  # (scales, N, K): all at once
    log_p = zt[:, np.arange(y.size), y] - np.log(np.exp(zt).sum(axis=2))
    return SCALES[int(np.argmin(-(log_p @ weights)))]


def stratified_folds(y: np.ndarray, k: int, n_splits: int, seed: int) -> np.ndarray:
    """(N,) the fold of each image: each class's images shuffled (by `seed`) and dealt
    round the folds, each class starting where the previous one stopped, so the folds'
    sizes differ by at most one."""
    rng = np.random.default_rng(seed)
    fold = np.empty(y.size, dtype=np.int64)
    start = 0
    for c in range(k):
        idx = np.flatnonzero(y == c)
        fold[rng.permutation(idx)] = (start + np.arange(idx.size)) % n_splits
        start += idx.size
    return fold


def probed_classes(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The classes (ascending) with at least one probe image: those a rule can be fitted on
    (`StackedRule.classes` where some class has none)."""
    return np.flatnonzero(np.bincount(labels, minlength=num_classes))


def fittable(labels: np.ndarray, num_classes: int, models: Sequence[str]) -> bool:
    """Whether a stacked rule can be fitted at all: some models, at least
    MIN_IMAGES_PER_CLASS images of every class, at most MAX_CLASSES classes."""
    counts = np.bincount(labels, minlength=num_classes)
    return bool(
        models
        and labels.size > 0
        and counts.min() >= MIN_IMAGES_PER_CLASS
        and num_classes <= MAX_CLASSES
    )


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
    """The stacked rule on probe images (closed-form ridge, module doc), with its nested
    out-of-fold accuracy; None when a class has fewer than MIN_IMAGES_PER_CLASS images or
    the task has more than MAX_CLASSES classes.

    `sources` (N,): where each probe image comes from (its probe set's source: a dataset,
    an art style). Where classes have images from two sources or more, the folds hold one
    source out at a time (`source_folds`), inside and out: the estimate is then what the
    rule does on images of a source it never saw, as the user's will be, instead of on near
    copies of its training images (augmented copies of one emoji score 1.0 whatever the
    rule), and the strength is chosen for that too."""
    labels = np.asarray(labels, dtype=np.int64)
    if not fittable(labels, num_classes, models):
        return None
    models = sorted(models)
    temps = {m: float(temperatures.get(m, 1.0)) for m in models}
    x = np.asarray(features(logits, models, temps), dtype=np.float64)
    by_source = source_folds(labels, num_classes, sources, seed)
    # Outer folds estimate; everything the fit chooses (heads, alpha) is chosen inside each
    # outer training part, so the held-out fold never informs its own prediction.
    fold = stratified_folds(labels, num_classes, FOLDS, seed) if by_source is None else by_source
    n_folds = int(fold.max()) + 1
    # The heads' F of every training part and of the whole, from one pass over x (only
    # where there are more heads than a fit reads).
    stats = GroupStats.of(x, labels, num_classes, fold) if x.shape[1] > MAX_COLUMNS else None
    predicted = np.empty_like(labels)
    for f in range(n_folds):
        held = fold == f
        inner = None
        if by_source is not None:  # the training part's own source folds
            inner = source_folds(labels[~held], num_classes, sources[~held], seed)
        part_f = None if stats is None else stats.f(np.arange(n_folds) != f)
        part = _fit_part(x, ~held, labels[~held], num_classes, inner, part_f)
        scores = x[np.ix_(held, part.columns)] @ part.coef.T + part.intercept
        predicted[held] = scores.argmax(axis=1)
    right = predicted == labels
    whole_f = None if stats is None else stats.f(np.ones(n_folds, dtype=bool))
    final = _fit_part(x, np.ones(labels.size, dtype=bool), labels, num_classes, by_source, whole_f)
    scale = softmax_scale(final.loo, labels, balanced_weights(labels, num_classes))
    return StackedRule(
        models=tuple(models),
        heads=tuple(int(np.asarray(logits[m]).shape[1]) for m in models),
        temperatures=temps,
        columns=tuple(int(i) for i in final.columns),
        coef=scale * final.coef,
        intercept=scale * final.intercept,
        c=1.0 / final.alpha,
        cv_accuracy=float(right.mean()),
        cv_recall=tuple(float(right[labels == k].mean()) for k in range(num_classes)),
        method="ridge_loo",
        cv_folds="images" if by_source is None else "sources",
    )


# -- what a fit depends on -------------------------------------------------------------------

# A class's probe images, as selection knows them: its (probe set id, images used) pairs.
ClassProbes = tuple[tuple[str, int], ...]


def row_sources(partition: Sequence[ClassProbes], sources: Mapping[str, str]) -> np.ndarray:
    """(N,) the source of each probe image's set, in the row order selection builds (the
    task's probe sets by id, each set's images together: `select.probe_data.probe_matrix`),
    from each class's (set, images) pairs and {set id: source}."""
    sets = sorted(pair for pairs in partition for pair in pairs)
    return np.array([sources.get(s, "") for s, n in sets for _ in range(n)], dtype=str)


def canonical_order(partition: Sequence[ClassProbes]) -> list[int]:
    """The task's classes in an order that depends only on their probe images:
    `order[i]` is the class that comes i-th (`partition[c]`: class c's probe images)."""
    return sorted(range(len(partition)), key=lambda c: partition[c])


def fit_key(
    models: Sequence[str],
    temperatures: Mapping[str, float],
    partition: Sequence[ClassProbes],
    *,
    seed: int = 0,
    sources: Mapping[str, str] | None = None,
) -> tuple[Any, ...]:
    """What :func:`fit` depends on, the same for any wording or order of the task's classes
    when the fit sees them in `canonical_order`: the models (their ids carry the version)
    and temperatures, which probe images form each class (as a set of classes), the source
    of each of those probe sets (`sources`: set id -> source, which decides the folds), and
    the rule's constants."""
    constants = (
        MIN_IMAGES_PER_CLASS, MAX_CLASSES, FOLDS, MAX_COLUMNS, IMAGES_PER_COLUMN, ALPHAS,
        SCALES, EPS, seed,
    )  # fmt: skip
    temps = tuple((m, float(temperatures.get(m, 1.0))) for m in sorted(models))
    used = sorted({s for sets in partition for s, _ in sets})
    origin = tuple((s, (sources or {}).get(s, "")) for s in used)
    return (temps, tuple(sorted(partition)), origin, constants)
