"""The "none of these" score: how strongly an image's evidence says it is none of the task's
classes (pure: numpy and scikit-learn, no I/O).

Every rule of :mod:`mllgraph.combine.rule` and :mod:`mllgraph.combine.stacked` normalises over
the task's classes, so an image unlike all of them still gets one. The experts themselves say
more: each plan model spreads its calibrated probability over ALL its heads, and on an image
of a concept outside the task much of it lands on heads no class is mapped to. The score reads
that evidence, per image (:func:`features`):

* per plan model ``m`` (``p_m = softmax(logits_m / T_m)``, the temperature labelling fitted):
  ``log`` of the mass on the heads the plan maps to the task's classes (their subtrees
  included: a group's heads are the concept's and its descendants'), when ``m`` has such heads;
  ``log max_h p_m``; and ``logsumexp(logits_m / T_m)`` (the free energy: closed-set experts
  give OUT-of-domain images lower logits even when their softmax is as sure);
* the log-probabilities of the :data:`HEAD_FEATURES` heads of the plan's models that tell the
  task's probe images from the outside ones best (:func:`head_columns`).

Not the served rule's own class probability: its weights (or stacked rule) were fitted on the
same probe images, so it is surer on them than on new images, and a threshold set on them
refused 14% of new in-task images on a Fashion dev task (1% intended).

A logistic regression over those features (standardised on the in-task images) is fitted at
selection (:func:`fit`) on probe images: the task's own (positives) against probe images of
concepts outside the task (negatives: neither under nor above any class). The score is its
probability of "outside". The default threshold lets at most :data:`MAX_REJECTED` of the
in-task probe images through as "none of these", judged on out-of-fold scores (so the share
is honest), which bounds the accuracy lost on in-task images by that share.

Input domains (:mod:`mllgraph.combine.domain`): a model that refuses an image gives no
evidence on it, so its features take the in-task mean there (neutral); an image every scoring
model refuses has no evidence for any class at all and scores 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mllgraph.combine.rule import EPS, ClassAssignment, model_probabilities
from mllgraph.combine.softmax import log_normalizers, log_probabilities
from mllgraph.combine.stacked import source_folds
from mllgraph.errors import InvalidArgument

# What a prediction that is no class says (Prediction.class_name / class_index).
NONE_CLASS_NAME = "none of these"
NONE_CLASS_INDEX = -1
# Share of in-task probe images the default threshold may call "none of these".
MAX_REJECTED = 0.01
MIN_IMAGES = 10  # per side (in-task, outside): fewer cannot place a threshold
FOLDS = 5
C = 1.0
MAX_MODELS = 64  # a plan's calibration is refused beyond this many models (hostile JSON)
MAX_EXTRA = 256
# Heads read one by one too (`head_columns`): those whose log-probability differs most
# between in-task and outside probe images. Chosen on the Fashion dev tasks (0, 16, 32).
HEAD_FEATURES = 16
FEATURES_PER_MODEL = ("log_task_mass", "log_max_prob", "energy")


def task_heads(assignment: Sequence[ClassAssignment]) -> dict[str, tuple[int, ...]]:
    """Per model, the heads the plan maps to any task class (sorted, each once)."""
    heads: dict[str, set[int]] = {}
    for a in assignment:
        for g in a.groups:
            heads.setdefault(g.model_id, set()).update(g.heads)
    return {m: tuple(sorted(h)) for m, h in sorted(heads.items())}


def _columns(
    models: Sequence[str],
    heads: Mapping[str, Sequence[int]],
    extra: Sequence[tuple[str, int]] = (),
) -> list[tuple[str, str]]:
    """(model or "", feature name) per column, in order."""
    cols = []
    for m in models:
        for name in FEATURES_PER_MODEL:
            if name != "log_task_mass" or heads.get(m):
                cols.append((m, name))
    cols += [(m, f"log_prob_head_{h}") for m, h in extra]
    return cols


def head_columns(
    inside: Mapping[str, np.ndarray],
    outside: Mapping[str, np.ndarray],
    models: Sequence[str],
    temperatures: Mapping[str, float],
    limit: int,
) -> list[tuple[str, int]]:
    """The `limit` heads (model, head) whose log-probability differs most between in-task
    and outside images (two-sample t statistic), in (model, head) order."""
    if limit <= 0:
        return []
    found = []
    for m in models:
        a = log_probabilities(np.asarray(inside[m]), temperatures.get(m, 1.0))
        b = log_probabilities(np.asarray(outside[m]), temperatures.get(m, 1.0))
        se = np.sqrt(a.var(axis=0) / len(a) + b.var(axis=0) / len(b)) + 1e-9
        t = np.abs(a.mean(axis=0) - b.mean(axis=0)) / se
        found += [(float(v), m, h) for h, v in enumerate(t)]
    found.sort(key=lambda x: -x[0])
    return sorted((m, h) for _, m, h in found[:limit])


def features(
    logits: Mapping[str, np.ndarray],
    models: Sequence[str],
    heads: Mapping[str, Sequence[int]],
    temperatures: Mapping[str, float],
    extra: Sequence[tuple[str, int]] = (),
) -> np.ndarray:
    """(N, D) features of the module doc; `extra`: (model, head) whose log-probabilities
    are features too."""
    cols = []
    per_model: dict[str, np.ndarray] = {}
    for m in models:
        p = model_probabilities(np.asarray(logits[m]), temperatures.get(m, 1.0))
        energy = log_normalizers(np.asarray(logits[m]), temperatures.get(m, 1.0))
        per_model[m] = p
        if heads.get(m):
            cols.append(np.log(p[:, list(heads[m])].sum(axis=1) + EPS))
        cols.append(np.log(p.max(axis=1) + EPS))
        cols.append(energy)
    for m, h in extra:
        p = per_model.get(m)
        if p is None:
            p = per_model[m] = model_probabilities(np.asarray(logits[m]), temperatures.get(m, 1.0))
        cols.append(np.log(p[:, h] + EPS))
    return np.stack(cols, axis=1)


@dataclass(frozen=True)
class NoneCalibration:
    """The fitted score and its default threshold (module doc); in a plan document under
    ``combination["none"]``."""

    models: tuple[str, ...]
    heads: dict[str, tuple[int, ...]]  # task heads per model (models without: absent)
    temperatures: dict[str, float]
    mean: np.ndarray  # (D,) in-task mean of each feature
    scale: np.ndarray  # (D,) in-task standard deviation (1 where constant)
    coef: np.ndarray  # (D,)
    intercept: float
    threshold: float  # score > threshold: "none of these"
    extra: tuple[tuple[str, int], ...] = ()  # (model, head) log-probabilities read too
    # On the probe images, out of fold: AUROC, share of in-task images rejected, counts.
    probe_auroc: float = math.nan
    probe_rejected: float = math.nan
    positives: int = 0
    negatives: int = 0
    # How the held-out scores were made: "sources" (one probe source left out at a time) or
    # "folds" (stratified folds: the probe images have one source).
    held_out: str = "folds"

    def heads_read(self) -> list[tuple[str, int]]:
        """(model, head) the score reads one by one (a model must have them)."""
        return [*((m, h) for m, hs in self.heads.items() for h in hs), *self.extra]

    def scores(
        self,
        logits: Mapping[str, np.ndarray],
        in_domain: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """(N,) "none of these" scores in [0, 1]. `in_domain`: model -> (N,) bool mask of the
        images it may speak about (models not in it: all)."""
        for m in self.models:
            if m not in logits:
                raise InvalidArgument(f"the none-of-these score needs the logits of model {m}")
        x = features(logits, self.models, self.heads, self.temperatures, self.extra)
        n = x.shape[0]
        speaking = np.zeros(n, dtype=np.int64)
        cols = _columns(self.models, self.heads, self.extra)
        for m in self.models:
            mask = (in_domain or {}).get(m)
            ok = np.ones(n, bool) if mask is None else np.asarray(mask, bool)
            speaking += ok
            if not ok.all():  # a model that refuses the image gives no evidence: neutral
                for j, (owner, _) in enumerate(cols):
                    if owner == m:
                        x[~ok, j] = self.mean[j]
        z = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        out = 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))
        out[speaking == 0] = 1.0  # no model speaks about it: no evidence for any class
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": "none_logistic",
            "models": list(self.models),
            "heads": {m: list(h) for m, h in self.heads.items()},
            "temperatures": dict(self.temperatures),
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "coef": [float(v) for v in self.coef],
            "intercept": float(self.intercept),
            "threshold": float(self.threshold),
            "extra": [[m, h] for m, h in self.extra],
            **held_out_fields(self),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NoneCalibration:
        """Checked: anything malformed is InvalidArgument naming the field."""

        def bad(what: str) -> InvalidArgument:
            return InvalidArgument(f"the plan's none-of-these calibration: {what}")

        if not isinstance(d, Mapping) or d.get("rule") != "none_logistic":
            raise bad("only rule 'none_logistic' is known")
        models = read_models(d, bad)
        raw_heads, temps = d.get("heads"), d.get("temperatures")
        if not isinstance(raw_heads, Mapping) or not set(raw_heads) <= set(models):
            raise bad("heads must map some of its models to head lists")
        if not isinstance(temps, Mapping):
            raise bad("temperatures must be an object")
        try:
            heads = {str(m): tuple(int(h) for h in hs) for m, hs in raw_heads.items() if hs}
            temperatures = {str(m): float(t) for m, t in temps.items()}
            extra = tuple((str(m), int(h)) for m, h in d.get("extra") or ())
            width = len(_columns(models, heads, extra))
            mean = _vector(d["mean"], width)
            scale = _vector(d["scale"], width)
            coef = _vector(d["coef"], width)
            intercept = float(d["intercept"])
            threshold = float(d["threshold"])
            held_out = read_held_out_fields(d)
        except (TypeError, ValueError, KeyError) as e:
            raise bad(
                f"mean, scale and coef must be {len(models)} models' feature vectors, "
                f"intercept and threshold numbers ({type(e).__name__}: {str(e)[:100]})"
            ) from e
        if any(h < 0 for hs in heads.values() for h in hs) or any(h < 0 for _, h in extra):
            raise bad("head indexes must be >= 0")
        if not {m for m, _ in extra} <= set(models) or len(extra) > MAX_EXTRA:
            raise bad(f"extra must name at most {MAX_EXTRA} heads of its models")
        if not (math.isfinite(intercept) and math.isfinite(threshold) and 0 <= threshold <= 1):
            raise bad("intercept must be finite and threshold in [0, 1]")
        if np.any(scale <= 0):
            raise bad("scale must be > 0")
        if any(not (math.isfinite(t) and t > 0) for t in temperatures.values()):
            raise bad("temperatures must be > 0")
        return cls(
            tuple(models), heads, temperatures, mean, scale, coef, intercept, threshold, extra,
            *held_out,
        )  # fmt: skip


def _vector(values: Any, width: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (width,) or not np.all(np.isfinite(v)):
        raise ValueError(f"expected {width} finite numbers, got shape {v.shape}")
    return v


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _read_float(x: Any) -> float:
    return math.nan if x is None else float(x)


def held_out_fields(c: Any) -> dict[str, Any]:
    """The document fields every "none of these" rule shares: its held-out probe figures."""
    return {
        "probe_auroc": _json_float(c.probe_auroc),
        "probe_rejected": _json_float(c.probe_rejected),
        "positives": c.positives,
        "negatives": c.negatives,
        "held_out": c.held_out,
    }


def read_held_out_fields(d: Mapping[str, Any]) -> tuple[float, float, int, int, str]:
    """`held_out_fields` read back (ValueError/TypeError on a malformed one)."""
    return (
        _read_float(d.get("probe_auroc")),
        _read_float(d.get("probe_rejected")),
        int(d.get("positives", 0)),
        int(d.get("negatives", 0)),
        str(d.get("held_out", "folds")),
    )


def read_models(d: Mapping[str, Any], bad: Any) -> list[str]:
    """The document's model list, checked (`bad(what)` makes the error)."""
    models = d.get("models")
    if (
        not isinstance(models, list)
        or not 0 < len(models) <= MAX_MODELS
        or not all(isinstance(m, str) and m for m in models)
    ):
        raise bad(f"models must be a list of 1 to {MAX_MODELS} model ids")
    return models


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """Area under the ROC curve of a score meant to be higher `outside` than `inside` (the
    Mann-Whitney statistic; ties count half). NaN when either side is empty."""
    a = np.asarray(inside, dtype=np.float64)
    b = np.asarray(outside, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return math.nan
    # Average ranks (ties share their mean rank), as scipy.stats.rankdata; numpy only, so
    # selection never imports scipy.stats.
    _, inverse, counts = np.unique(np.concatenate([a, b]), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]
    return float((ranks[a.size :].sum() - b.size * (b.size + 1) / 2) / (a.size * b.size))


def threshold_for(inside_scores: np.ndarray, max_rejected: float = MAX_REJECTED) -> float:
    """The lowest threshold that calls at most `max_rejected` of `inside_scores` "none"
    (score > threshold)."""
    s = np.sort(np.asarray(inside_scores, dtype=np.float64))
    if s.size == 0:
        raise InvalidArgument("threshold_for needs at least one in-task score")
    allowed = math.floor(max_rejected * s.size)  # images that may score above it
    return float(s[s.size - 1 - allowed])


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each sample's test fold: scikit-learn's `StratifiedKFold(folds, shuffle=True,
    random_state=seed)` for labels 0/1 whose first sample is 0, reproduced exactly (a test
    compares them) so that selection need not import scikit-learn (a second per process)."""
    rng = np.random.RandomState(seed)
    order = np.sort(y)
    allocation = np.array([np.bincount(order[i::folds], minlength=2) for i in range(folds)])
    test_folds = np.empty(len(y), dtype=np.int64)
    for k in (0, 1):
        for_class = np.arange(folds).repeat(allocation[:, k])
        rng.shuffle(for_class)
        test_folds[y == k] = for_class
    return test_folds


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warning for large |z|


def balanced_logistic(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """(coef, intercept) minimising 0.5 |coef|^2 + c * sum_i w_i logloss_i with the classes
    weighted to equal total weight and the intercept not penalised: scikit-learn's
    `LogisticRegression(C=c, class_weight="balanced")` optimum (a test compares them), found
    by Newton's method, exact in a few steps for the handful of features used here."""
    n, d = x.shape
    counts = np.bincount(y, minlength=2).astype(np.float64)
    weight = c * n / (2.0 * counts[y])
    xa = np.hstack([x, np.ones((n, 1))])
    penalty = np.ones(d + 1)
    penalty[-1] = 0.0

    def objective(b: np.ndarray) -> float:
        z = xa @ b
        return float(weight @ (np.logaddexp(0.0, z) - y * z) + 0.5 * penalty @ (b * b))

    beta = np.zeros(d + 1)
    value = objective(beta)
    for _ in range(100):
        p = _sigmoid(xa @ beta)
        grad = xa.T @ (weight * (p - y)) + penalty * beta
        hess = (xa * (weight * p * (1.0 - p))[:, None]).T @ xa + np.diag(penalty)
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            # Singular to working precision: two equal features far out of the in-task scale
            # (their Hessian entries ~1e19 swallow the penalty's 1). The least-squares step
            # splits the weight between them, as the penalised optimum does.
            step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        shrink = 1.0  # halve a step that does not lower the objective (far from the optimum)
        while objective(beta - shrink * step) > value + 1e-12 and shrink > 1e-6:
            shrink /= 2
        beta -= shrink * step
        value = objective(beta)
        if np.max(np.abs(shrink * step)) < 1e-10:
            break
    return beta[:-1].copy(), float(beta[-1])


def fit(
    inside: np.ndarray,
    outside: np.ndarray,
    models: Sequence[str],
    heads: Mapping[str, Sequence[int]],
    temperatures: Mapping[str, float],
    *,
    extra: Sequence[tuple[str, int]] = (),
    max_rejected: float = MAX_REJECTED,
    seed: int = 0,
    sources: np.ndarray | None = None,
) -> NoneCalibration | None:
    """The calibration from `features` of in-task (`inside`) and outside probe images; None
    when either side has fewer than MIN_IMAGES images.

    `sources`: (len(inside) + len(outside),) where each image comes from
    (`select.probe_data.probe_sources`). Where the images come from two sources or more, the
    held-out scores that set the threshold and give the AUROC leave one source out at a time
    (`stacked.source_folds`): the threshold is then placed where a rendering the fit never saw
    falls, not where the fit's own renderings do (in-task images of a new art style look less
    like the task than held-out images of a known one). Otherwise stratified folds."""
    xi = np.asarray(inside, dtype=np.float64)
    xo = np.asarray(outside, dtype=np.float64)
    if xi.ndim != 2 or xo.ndim != 2 or xi.shape[1] != xo.shape[1]:
        raise InvalidArgument(f"features must be (N, D) alike, got {xi.shape} and {xo.shape}")
    if min(len(xi), len(xo)) < MIN_IMAGES:
        return None
    mean = xi.mean(axis=0)
    scale = xi.std(axis=0)
    scale[~(scale > 1e-9)] = 1.0  # a constant feature (e.g. a closed set's full task mass)
    x = (np.concatenate([xi, xo]) - mean) / scale
    y = np.concatenate([np.zeros(len(xi), np.int64), np.ones(len(xo), np.int64)])

    oof = np.empty(len(y))
    folds, held_out = _held_out_folds(y, sources, seed), "sources"
    if folds is None:
        folds, held_out = stratified_folds(y, min(FOLDS, len(xi), len(xo)), seed), "folds"
    for k in np.unique(folds):
        coef, intercept = balanced_logistic(x[folds != k], y[folds != k], C)
        oof[folds == k] = _sigmoid(x[folds == k] @ coef + intercept)
    coef, intercept = balanced_logistic(x, y, C)
    threshold = threshold_for(oof[y == 0], max_rejected)
    return NoneCalibration(
        models=tuple(models),
        heads={m: tuple(int(h) for h in heads[m]) for m in models if heads.get(m)},
        temperatures={m: float(temperatures.get(m, 1.0)) for m in models},
        mean=mean,
        scale=scale,
        coef=coef,
        intercept=intercept,
        threshold=threshold,
        extra=tuple((str(m), int(h)) for m, h in extra),
        probe_auroc=auroc(oof[y == 0], oof[y == 1]),
        probe_rejected=float(np.mean(oof[y == 0] > threshold)),
        positives=int(len(xi)),
        negatives=int(len(xo)),
        held_out=held_out,
    )


def _held_out_folds(y: np.ndarray, sources: np.ndarray | None, seed: int) -> np.ndarray | None:
    """Folds that leave one probe source out at a time (`stacked.source_folds`), or None
    where there is no such split of the in-task images, or a fold would train without one
    side."""
    if sources is None:
        return None
    sources = np.asarray(sources)
    if len(sources) != len(y):
        raise InvalidArgument(f"sources has {len(sources)} entries for {len(y)} images")
    folds = source_folds(y, 2, sources, seed)
    if folds is None or np.unique(sources[y == 0]).size < 2:
        return None
    for k in np.unique(folds):
        if np.unique(y[folds != k]).size < 2:
            return None
    return folds


def measure(
    inside_scores: np.ndarray,
    inside_correct: np.ndarray,
    outside_scores: np.ndarray,
    threshold: float,
) -> dict[str, float]:
    """How "none of these" does on a test: AUROC (outside vs in-task images), the in-task
    accuracy without and with it at `threshold` (a rejected in-task image counts wrong), the
    drop in points, and the shares rejected on each side."""
    si = np.asarray(inside_scores, dtype=np.float64)
    so = np.asarray(outside_scores, dtype=np.float64)
    right = np.asarray(inside_correct, bool)
    if si.shape != right.shape:
        raise InvalidArgument("inside_scores and inside_correct must have the same length")
    if si.size == 0:
        raise InvalidArgument("measure needs at least one in-task image")
    before = float(right.mean())
    after = float((right & (si <= threshold)).mean())
    return {
        "auroc": auroc(si, so),
        "accuracy": before,
        "accuracy_allow_none": after,
        "accuracy_drop_points": 100.0 * (before - after),
        "inside_rejected": float(np.mean(si > threshold)),
        "outside_rejected": float(np.mean(so > threshold)) if so.size else math.nan,
        "inside_images": int(si.size),
        "outside_images": int(so.size),
    }
