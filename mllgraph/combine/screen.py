"""Which models the stacked rule should read (pure: numpy and scipy, no I/O).

CHCO chooses models by the per-class rule: the heads mapped to each class. The stacked rule
(:mod:`mllgraph.combine.stacked`) reads every head of the chosen models, so the best models for
it are those whose heads, together, separate the task's classes, whether or not a head is
mapped to a class. The two choices differ: in a bigger hub CHCO finds narrow experts with an
exact head per class, while a broad expert's 1,000 heads separate the classes better. So a
hub that grew could serve a task worse than the smaller hub did.

:func:`greedy_models` screens the candidate models cheaply and picks a set for the stacked
rule to be fitted on beside CHCO's own set (selection keeps whichever serves better, by the
stacked rule's out-of-fold accuracy). The screen is a nearest-class-mean classifier on each
model's most class-dependent calibrated log-probabilities (ANOVA F, only heads whose
p-value says they depend on the class), z-scored, with leave-one-out
distances (an image's own class mean without it), so it costs one (N, K) distance matrix per
model, and distances add over models: a set is scored by summing its models' matrices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import special

from mllgraph.combine.stacked import anova_f, features

SCREEN_MODELS = 16  # models screened at most: those covering most of the task (`shortlist`)
# ... and the sub-hub's broadest labelled experts beside them (`select/broad_models`): the
# candidates query keeps the best-scored heads per class, so in a big hub narrow experts crowd
# a broad expert out of the candidates although its heads serve the stacked rule best.
BROAD_MODELS = 4
BROAD_MIN_HEADS = 100
SCREEN_COLUMNS = 32  # per model: its most class-dependent heads (ANOVA F) ...
SCREEN_P_VALUE = 1e-3  # ... among those that depend on the class at all


def shortlist(coverage: Mapping[str, Mapping[int, float]], keep: int = SCREEN_MODELS) -> list[str]:
    """The `keep` models worth screening, from {model: {class: its best label score}}: most
    classes covered first, then the summed label scores, then the id. A big hub has hundreds
    of candidate models for a task; the screen's cost grows with each."""
    ranked = sorted(coverage, key=lambda m: (-len(coverage[m]), -sum(coverage[m].values()), m))
    return sorted(ranked[:keep])


def class_mean_distances(
    x: np.ndarray, y: np.ndarray, k: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """(N, K) mean squared z-scored distance of each image to each class mean; the image's
    own class mean leaves the image out (with `groups`: every class mean leaves out the
    image's whole group, e.g. its probe source). NaN-free; a class without images is at
    +inf."""
    sd = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    sums = np.zeros((k, z.shape[1]))
    np.add.at(sums, y, z)
    counts = np.bincount(y, minlength=k).astype(np.float64)
    if groups is not None:
        return _group_out_distances(z, y, sums, counts, np.asarray(groups))
    d = _squared_distances(z, sums / np.maximum(counts, 1)[:, None])
    # Leave one out: ||x - m'||^2 = (n / (n - 1))^2 ||x - m||^2 for the image's own class.
    own = counts[y]
    scale = np.where(own > 1, (own / np.maximum(own - 1, 1)) ** 2, np.inf)
    d[np.arange(len(y)), y] *= scale
    d[:, counts == 0] = np.inf
    return d / z.shape[1]


def _squared_distances(z: np.ndarray, means: np.ndarray) -> np.ndarray:
    """(N, K) squared distance of each row of `z` to each class mean (never below 0)."""
    d = (z * z).sum(1)[:, None] - 2 * z @ means.T + (means * means).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _group_out_distances(
    z: np.ndarray, y: np.ndarray, sums: np.ndarray, counts: np.ndarray, groups: np.ndarray
) -> np.ndarray:
    """`class_mean_distances` with each image measured against class means of the other
    groups only (`sums`, `counts`: every image's, per class): near copies within a group
    (augmented copies of one drawing) then tell nothing, as for an image of a new source."""
    k = counts.size
    d = np.empty((y.size, k))
    for g in np.unique(groups):
        mine = groups == g
        g_sums = np.zeros_like(sums)
        np.add.at(g_sums, y[mine], z[mine])
        left = counts - np.bincount(y[mine], minlength=k)
        d[mine] = _squared_distances(z[mine], (sums - g_sums) / np.maximum(left, 1)[:, None])
        d[np.ix_(mine, left == 0)] = np.inf
    return d / z.shape[1]


def anova(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F, p-value) of each column of `x` between the classes present in `y` (as
    scikit-learn's f_classif, whose import alone costs a one-shot `mllgraph select` most of a
    second); a constant column has F 0 and p 1."""
    f = anova_f(x, y)
    k = np.unique(y).size
    if k < 2 or y.size <= k:
        return f, np.ones_like(f)
    return f, special.fdtrc(k - 1, y.size - k, f)


def model_distances(
    logits: Mapping[str, np.ndarray],
    temperatures: Mapping[str, float],
    model: str,
    y: np.ndarray,
    k: int,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """`class_mean_distances` of one model's SCREEN_COLUMNS most class-dependent heads."""
    x = features(logits, [model], temperatures)
    f, p = anova(x, y)
    order = np.argsort(-f, kind="stable")[:SCREEN_COLUMNS]
    # Heads that do not depend on the class only add noise to a nearest-mean distance.
    keep = order[p[order] < SCREEN_P_VALUE]
    x = x[:, np.sort(keep if keep.size else order[:1])]
    return class_mean_distances(x, y, k, groups)


def greedy_models(
    logits: Mapping[str, np.ndarray],
    temperatures: Mapping[str, float],
    models: Sequence[str],
    y: np.ndarray,
    k: int,
    budget: int,
    groups: np.ndarray | None = None,
    known: dict[str, np.ndarray] | None = None,
) -> tuple[list[str], float]:
    """Up to `budget` of `models`, added one at a time while the screen's leave-one-out
    accuracy rises (ties: the model id), and that accuracy. With `groups` (folds that hold
    one probe source out at a time: `stacked.source_folds`), leave one such fold out
    instead: where each source's images are near copies, leave-one-out accuracy is 1.0 for
    almost any model, and the screen would stop at the first.

    `known`: each model's `model_distances` from an earlier screen with the same logits,
    temperatures, labels and groups (a second pool of the same task), filled in here."""
    y = np.asarray(y, dtype=np.int64)
    if y.size == 0 or not models:
        return [], 0.0
    known = {} if known is None else known
    for m in models:
        if m not in known:
            known[m] = model_distances(logits, temperatures, m, y, k, groups)
    dist = {m: known[m] for m in sorted(models)}
    chosen: list[str] = []
    total = np.zeros((y.size, k))
    best = 0.0
    while len(chosen) < budget:
        step = None
        for m, d in dist.items():
            if m in chosen:
                continue
            acc = float(((total + d).argmin(1) == y).mean())
            if acc > best + 1e-12:
                best, step = acc, m
        if step is None:
            break
        chosen.append(step)
        total += dist[step]
    return sorted(chosen), best
