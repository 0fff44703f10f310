"""The "none of these" score as one more class (pure: numpy, no I/O).

The logistic score of :mod:`mllgraph.combine.none_of_these` reads a handful of summaries per
model (task mass, top probability, energy, 16 telling heads). On the emoji world's held-out
style it told outside images from in-task ones at AUROC 0.75 (dev half): an image of another
concept often puts as much mass on the task's heads as a task image does, and which *other*
heads light up is what differs. This rule reads them: a ridge regression, one output per task
class and one for "outside", over the calibrated log-probabilities of the :data:`COLUMNS`
heads of the plan's models that best separate those K + 1 groups (ANOVA F on the probe
images). An image's raw score is the "outside" output minus the best class's output: it is
"none of these" when no class explains it better than the outside concepts do. Measured side
by side with the logistic rule on the emoji world's held-out style and the Fashion probe pool
(`reports/none_of_these_emoji.md`, `reports/none_of_these_fashion_ab.md`).

Fitted at selection (:func:`fit`) on probe images: the task's own (each with its class) and
probe images of concepts outside the task. Classes are weighted equally, and "outside" as one
class, so a task's many outside images do not drown its classes. As the logistic rule: where
the images come from two sources or more, held-out scores leave one source out at a time
(`none_of_these._held_out_folds`), and they place the default threshold (at most
`none_of_these.MAX_REJECTED` of in-task images refused) and map the raw score to [0, 1] (a
balanced logistic fit of the held-out raw scores, so the score reads as "how likely outside").

Input domains: a model that refuses an image gives no evidence on it, so its columns take the
in-task mean there (neutral); an image every model refuses scores 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mllgraph.combine import packed
from mllgraph.combine.none_of_these import (
    FOLDS,
    MAX_REJECTED,
    MIN_IMAGES,
    C,
    _held_out_folds,
    _sigmoid,
    _vector,
    auroc,
    balanced_logistic,
    held_out_fields,
    read_held_out_fields,
    read_models,
    stratified_folds,
    threshold_for,
)
from mllgraph.combine.softmax import log_probabilities
from mllgraph.errors import InvalidArgument

RULE = "none_ridge"
# Heads read (by ANOVA F over the task's classes and "outside"), and the ridge strength as a
# share of the features' mean variance. Chosen on the emoji world's dev half (AUROC): F-ranked
# 256 / 512 heads 0.891 / 0.896, t-ranked 128 / 256 / 512 0.850 / 0.877 / 0.889, every head
# 0.902; strength 0.3 / 1 (F, 512) 0.893 / 0.896. 256 keeps a plan's weights small.
COLUMNS = 256
RIDGE = 1.0
MAX_COLUMNS = 2048  # a plan's calibration is refused beyond this many heads (hostile JSON)
MAX_CLASSES = 4096


def group_sums(
    x: np.ndarray, y: np.ndarray, groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts (G,), sums (G, D), sums of squares (G, D)) of `x`'s rows by group `y`: what
    :func:`anova_f` needs, additive over rows (a fold's are the whole's minus its held-out
    part's, so no fold copies the wide matrix)."""
    onehot = np.zeros((groups, len(y)))
    onehot[y, np.arange(len(y))] = 1.0
    return onehot.sum(axis=1), onehot @ x, onehot @ (x * x)


def anova_f(counts: np.ndarray, sums: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """(D,) ANOVA F of each column over the groups with rows."""
    has = counts > 0
    n, k = counts[has], int(has.sum())
    total = n.sum()
    means = sums[has] / n[:, None]
    grand = sums[has].sum(axis=0) / total
    between = (n[:, None] * (means - grand) ** 2).sum(axis=0) / max(k - 1, 1)
    within = (squares[has] - n[:, None] * means**2).sum(axis=0) / max(total - k, 1)
    return between / (np.maximum(within, 0.0) + 1e-9)


def top_columns(stats: tuple[np.ndarray, np.ndarray, np.ndarray], limit: int) -> np.ndarray:
    """The `limit` columns with the largest ANOVA F, from `group_sums` (sorted column numbers;
    all of them where there are fewer)."""
    f = anova_f(*stats)
    if f.size <= limit:
        return np.arange(f.size)
    return np.sort(np.argsort(-f, kind="stable")[:limit])


def ridge(
    x: np.ndarray, y: np.ndarray, outputs: int, strength: float
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, weights): ridge regression of one-hot `y` (0..outputs-1) on `x`, every group
    weighted to equal total weight, penalty `strength` times the features' mean weighted
    variance. Scores are `(x - mean) @ weights`."""
    counts = np.bincount(y, minlength=outputs).astype(np.float64)
    w = 1.0 / counts[y]
    mean = (w[:, None] * x).sum(axis=0) / w.sum()
    xc = x - mean
    gram = xc.T @ (w[:, None] * xc)
    scale = np.trace(gram) / gram.shape[0] if gram.shape[0] else 1.0
    target = np.zeros((len(y), outputs))
    target[np.arange(len(y)), y] = 1.0
    rhs = xc.T @ (w[:, None] * target)
    weights = np.linalg.solve(gram + strength * max(scale, 1e-12) * np.eye(gram.shape[0]), rhs)
    return mean, weights


def raw_scores(x: np.ndarray, mean: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The "outside" output (the last) minus the best class's output."""
    out = (x - mean) @ weights
    if out.shape[1] < 2:
        return out[:, -1]
    return out[:, -1] - out[:, :-1].max(axis=1)


@dataclass(frozen=True)
class NoneRidge:
    """The fitted rule and its default threshold (module doc); in a plan document under
    ``combination["none"]`` with ``"rule": "none_ridge"``."""

    models: tuple[str, ...]
    temperatures: dict[str, float]
    columns: tuple[tuple[str, int], ...]  # (model, head) read, in the weights' row order
    mean: np.ndarray  # (D,) weighted mean of each column on the probe images
    fill: np.ndarray  # (D,) in-task mean: a refusing model's columns take it (neutral)
    weights: np.ndarray  # (D, G + 1): one output per class with probe images, then "outside"
    slope: float  # score = sigmoid(slope * raw + intercept)
    intercept: float
    threshold: float  # score > threshold: "none of these"
    probe_auroc: float = math.nan
    probe_rejected: float = math.nan
    positives: int = 0
    negatives: int = 0
    held_out: str = "folds"

    def heads_read(self) -> list[tuple[str, int]]:
        """(model, head) the score reads (a model must have them)."""
        return list(self.columns)

    def raw(
        self, logits: Mapping[str, np.ndarray], in_domain: Mapping[str, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(raw scores, how many models speak about each image)."""
        for m in self.models:
            if m not in logits:
                raise InvalidArgument(f"the none-of-these score needs the logits of model {m}")
        n = np.asarray(logits[self.models[0]]).shape[0]
        x = np.empty((n, len(self.columns)))
        speaking = np.zeros(n, dtype=np.int64)
        for m in self.models:
            where = [j for j, (owner, _) in enumerate(self.columns) if owner == m]
            heads = [self.columns[j][1] for j in where]
            lp = log_probabilities(np.asarray(logits[m]), self.temperatures.get(m, 1.0))
            if heads and max(heads) >= lp.shape[1]:
                raise InvalidArgument(
                    f"model {m} has {lp.shape[1]} heads; the calibration reads head {max(heads)}"
                )
            x[:, where] = lp[:, heads]
            mask = (in_domain or {}).get(m)
            ok = np.ones(n, bool) if mask is None else np.asarray(mask, bool)
            speaking += ok
            if not ok.all() and where:
                x[np.ix_(~ok, where)] = self.fill[where]
        return raw_scores(x, self.mean, self.weights), speaking

    def scores(
        self,
        logits: Mapping[str, np.ndarray],
        in_domain: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """(N,) "none of these" scores in [0, 1]; `in_domain` as `NoneCalibration.scores`."""
        raw, speaking = self.raw(logits, in_domain)
        out = _sigmoid(self.slope * raw + self.intercept)
        out[speaking == 0] = 1.0  # no model speaks about it: no evidence for any class
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": RULE,
            "models": list(self.models),
            "temperatures": dict(self.temperatures),
            "columns": [[m, h] for m, h in self.columns],
            "mean": packed.pack(self.mean),
            "fill": packed.pack(self.fill),
            "weights": packed.pack(self.weights),
            "slope": float(self.slope),
            "intercept": float(self.intercept),
            "threshold": float(self.threshold),
            **held_out_fields(self),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NoneRidge:
        """Checked: anything malformed is InvalidArgument naming the field."""

        def bad(what: str) -> InvalidArgument:
            return InvalidArgument(f"the plan's none-of-these calibration ({RULE}): {what}")

        if not isinstance(d, Mapping) or d.get("rule") != RULE:
            raise bad(f"rule must be '{RULE}'")
        models = read_models(d, bad)
        raw_columns, temps, raw_weights = d.get("columns"), d.get("temperatures"), d.get("weights")
        if not isinstance(raw_columns, list) or not 0 < len(raw_columns) <= MAX_COLUMNS:
            raise bad(f"columns must list 1 to {MAX_COLUMNS} [model, head] pairs")
        if not isinstance(temps, Mapping):
            raise bad("temperatures must be an object")
        try:
            columns = tuple((str(m), int(h)) for m, h in raw_columns)
            temperatures = {str(m): float(t) for m, t in temps.items()}
            width = len(columns)
            mean = _vector(packed.unpack(d["mean"]), width)
            fill = _vector(packed.unpack(d["fill"]), width)
            weights = packed.unpack(raw_weights)
            numbers = [float(d[k]) for k in ("slope", "intercept", "threshold")]
            held_out = read_held_out_fields(d)
        except (TypeError, ValueError, KeyError) as e:
            raise bad(
                "columns must be [model, head] pairs; mean and fill one number per column and "
                "weights a number matrix (as JSON numbers or packed); slope, intercept and "
                f"threshold numbers ({type(e).__name__}: {str(e)[:100]})"
            ) from e
        if weights.ndim != 2 or weights.shape[0] != width:
            raise bad("weights must have one row per column")
        if not 1 <= weights.shape[1] <= MAX_CLASSES + 1:
            raise bad(f"weights must be {width} rows of 1 to {MAX_CLASSES + 1} numbers")
        if not np.all(np.isfinite(weights)):
            raise bad("weights must be finite")
        if not {m for m, _ in columns} <= set(models) or any(h < 0 for _, h in columns):
            raise bad("columns must name heads (>= 0) of its models")
        slope, intercept, threshold = numbers
        if not (all(math.isfinite(v) for v in numbers) and 0 <= threshold <= 1):
            raise bad("slope and intercept must be finite and threshold in [0, 1]")
        if any(not (math.isfinite(t) and t > 0) for t in temperatures.values()):
            raise bad("temperatures must be > 0")
        return cls(
            tuple(models), temperatures, columns, mean, fill, weights, slope, intercept,
            threshold, *held_out,
        )  # fmt: skip


def fit(
    inside: np.ndarray,
    labels: np.ndarray,
    outside: np.ndarray,
    columns: Sequence[tuple[str, int]],
    temperatures: Mapping[str, float],
    *,
    sources: np.ndarray | None = None,
    max_rejected: float = MAX_REJECTED,
    keep: int = COLUMNS,
    strength: float = RIDGE,
    seed: int = 0,
) -> NoneRidge | None:
    """The rule from the calibrated log-probabilities of in-task (`inside`, (N, D), with each
    image's task class in `labels`) and outside probe images (`outside`, (M, D)); `columns`
    names the D columns (model, head). None when either side has fewer than MIN_IMAGES images.
    `sources` as `none_of_these.fit`."""
    xi = np.asarray(inside, dtype=np.float64)
    xo = np.asarray(outside, dtype=np.float64)
    if xi.ndim != 2 or xo.ndim != 2 or xi.shape[1] != xo.shape[1] or xi.shape[1] != len(columns):
        raise InvalidArgument(
            f"features must be (N, {len(columns)}) alike, got {xi.shape} and {xo.shape}"
        )
    if len(labels) != len(xi):
        raise InvalidArgument(f"labels has {len(labels)} entries for {len(xi)} images")
    if min(len(xi), len(xo)) < MIN_IMAGES:
        return None
    # Outputs: the classes that have images (renumbered), then "outside".
    _, classes = np.unique(np.asarray(labels), return_inverse=True)
    groups = int(classes.max()) + 1
    x = np.concatenate([xi, xo])
    y = np.concatenate([classes.reshape(-1), np.full(len(xo), groups)])
    side = (y == groups).astype(np.int64)  # 0 in-task, 1 outside

    folds, held_out = _held_out_folds(side, sources, seed), "sources"
    if folds is None:
        folds, held_out = stratified_folds(side, min(FOLDS, len(xi), len(xo)), seed), "folds"
    stats = group_sums(x, y, groups + 1)
    oof = np.empty(len(y))
    for k in np.unique(folds):
        train, test = folds != k, folds == k
        # Stats of the training part: the whole's minus the held-out part's.
        held = group_sums(x[test], y[test], groups + 1)
        part = (stats[0] - held[0], stats[1] - held[1], stats[2] - held[2])
        cols = top_columns(part, keep)
        # A fold may lack a class: renumber its groups so every output has images.
        present, part_y = np.unique(y[train], return_inverse=True)
        if present[-1] != groups:  # no outside image to train on: nothing to score with
            oof[test] = 0.0
            continue
        narrow = x[:, cols]
        mean, weights = ridge(narrow[train], part_y.reshape(-1), present.size, strength)
        oof[test] = raw_scores(narrow[test], mean, weights)
    cols = top_columns(stats, keep)
    mean, weights = ridge(x[:, cols], y, groups + 1, strength)
    slope, intercept = balanced_logistic(oof[:, None], side, C)
    mapped = _sigmoid(slope[0] * oof + intercept)
    threshold = threshold_for(mapped[side == 0], max_rejected)
    picked = [columns[j] for j in cols]
    models = tuple(dict.fromkeys(m for m, _ in picked))
    return NoneRidge(
        models=models,
        temperatures={m: float(temperatures.get(m, 1.0)) for m in models},
        columns=tuple((str(m), int(h)) for m, h in picked),
        mean=mean,
        fill=xi[:, cols].mean(axis=0),
        weights=weights,
        slope=float(slope[0]),
        intercept=float(intercept),
        threshold=threshold,
        probe_auroc=auroc(oof[side == 0], oof[side == 1]),
        probe_rejected=float(np.mean(mapped[side == 0] > threshold)),
        positives=int(len(xi)),
        negatives=int(len(xo)),
        held_out=held_out,
    )
