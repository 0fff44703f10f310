"""The stacked rule's closed-form fit (mllgraph.combine.ridge, mllgraph.combine.stacked) against
brute-force refits on small data, and the fit cache's key (mllgraph.select.stacked_choice,
mllgraph.select.cache): pure logic, no server."""

from __future__ import annotations

import numpy as np
import pytest

from mllgraph.combine import stacked
from mllgraph.combine.ridge import RidgePath
from mllgraph.errors import InvalidArgument


def _weighted_ridge(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """The textbook solution: normal equations with an unpenalised intercept column."""
    a = np.hstack([np.ones((x.shape[0], 1)), x])
    penalty = lam * np.eye(a.shape[1])
    penalty[0, 0] = 0.0
    beta = np.linalg.solve(a.T @ (w[:, None] * a) + penalty, a.T @ (w[:, None] * y))
    return beta[1:].T, beta[0]


def _brute_loo(x: np.ndarray, y: np.ndarray, w: np.ndarray, lam: float) -> np.ndarray:
    """Refit without each point (the others keep their weights), predict that point."""
    out = np.empty_like(y, dtype=np.float64)
    for i in range(x.shape[0]):
        keep = np.arange(x.shape[0]) != i
        coef, intercept = _weighted_ridge(x[keep], y[keep], w[keep], lam)
        out[i] = x[i] @ coef.T + intercept
    return out


def _data(n: int, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    x = rng.normal(size=(n, d)) + 0.8 * rng.normal(size=(k, d))[labels]
    return x, labels, stacked.balanced_weights(labels, k)


@pytest.mark.parametrize(("n", "d"), [(30, 6), (18, 40)])  # more images than heads, and fewer
def test_leave_one_out_from_one_decomposition_equals_refitting_without_each_point(
    n: int, d: int
) -> None:
    k = 3
    x, labels, w = _data(n, d, k, seed=n)
    w = w * np.random.default_rng(1).uniform(0.5, 2.0, size=n)  # any positive weights
    y = np.eye(k)[labels]
    path = RidgePath.of(x, y, w)
    for lam in (0.05, 1.0, 30.0):
        np.testing.assert_allclose(path.loo(lam), _brute_loo(x, y, w, lam), atol=1e-8, rtol=0)
        coef, intercept = path.coefficients(lam)
        want_coef, want_intercept = _weighted_ridge(x, y, w, lam)
        np.testing.assert_allclose(coef, want_coef, atol=1e-8, rtol=0)
        np.testing.assert_allclose(intercept, want_intercept, atol=1e-8, rtol=0)
        np.testing.assert_allclose(path.fitted(lam), x @ coef.T + intercept, atol=1e-8)


def test_the_strength_chosen_is_the_brute_force_best() -> None:
    k = 3
    x, labels, w = _data(36, 12, k, seed=7)
    y = np.eye(k)[labels]
    path = RidgePath.of(x, y, w)
    alpha, loo = stacked.choose_alpha(path, labels, w)

    def brute_press(a: float) -> float:
        pred = _brute_loo(x, y, w, a * labels.size)
        return float(w @ ((pred - y) ** 2).sum(1))

    scores = [brute_press(a) for a in stacked.ALPHAS]
    best = int(np.argmin(scores))
    assert alpha == stacked.ALPHAS[best]
    assert 0 < best < len(scores) - 1  # an inner optimum: the path's ends lose
    np.testing.assert_allclose(loo, _brute_loo(x, y, w, alpha * labels.size), atol=1e-8)


def test_anova_f_is_scikit_learns() -> None:
    from sklearn.feature_selection import f_classif

    x, labels, _ = _data(40, 9, 4, seed=3)
    x[:, 2] = 5.0  # constant: 0, not NaN
    with (
        np.errstate(divide="ignore", invalid="ignore"),
        pytest.warns(UserWarning, match="constant"),
    ):
        want = np.nan_to_num(f_classif(x, labels)[0], nan=0.0)
    np.testing.assert_allclose(stacked.anova_f(x, labels), want, rtol=1e-9)
    assert stacked.anova_f(x, labels)[2] == 0.0


def test_the_path_at_once_is_each_strength_alone() -> None:
    k = 3
    x, labels, w = _data(24, 30, k, seed=5)
    path = RidgePath.of(x, np.eye(k)[labels], w)
    lams = np.array([1e-3, 0.2, 4.0, 90.0])
    got = path.loo_path(lams)
    for i, lam in enumerate(lams):
        np.testing.assert_allclose(got[i], path.loo(lam), atol=1e-9, rtol=1e-9)


def test_grouped_anova_of_any_set_of_folds_is_anova_of_those_images() -> None:
    x, labels, _ = _data(45, 11, 4, seed=6)
    x[:, 3] = 2.5  # constant: 0
    folds = np.arange(45) % 3
    labels = labels.copy()
    labels[(folds == 2) & (labels == 1)] = 0  # fold 2 has no image of class 1
    stats = stacked.GroupStats.of(x, labels, 4, folds)
    for keep in ((1, 1, 1), (1, 1, 0), (0, 1, 1), (1, 0, 0)):
        groups = np.asarray(keep, dtype=bool)
        rows = groups[folds]
        want = stacked.anova_f(x[rows], labels[rows])
        np.testing.assert_allclose(stats.f(groups), want, rtol=1e-9, atol=1e-12)
    one_class = stacked.GroupStats.of(x, np.zeros(45, dtype=np.int64), 1, folds)
    assert not one_class.f(np.ones(3, dtype=bool)).any()  # one class: no F


def test_the_screens_p_values_are_scikit_learns() -> None:
    from sklearn.feature_selection import f_classif

    from mllgraph.combine import screen

    x, labels, _ = _data(40, 9, 4, seed=4)
    x[:, 0] += 3.0 * labels  # one head that depends on the class beyond doubt
    x[:, 5] = -2.0
    f, p = screen.anova(x, labels)
    with np.errstate(divide="ignore", invalid="ignore"), pytest.warns(UserWarning):
        want_f, want_p = f_classif(x, labels)
    np.testing.assert_allclose(p, np.nan_to_num(want_p, nan=1.0), rtol=1e-9, atol=1e-300)
    assert p[0] < 1e-6 and p[5] == 1.0 and f[5] == 0.0


def test_folds_are_stratified_and_even() -> None:
    labels = np.repeat([0, 1, 2], [7, 5, 11])
    fold = stacked.stratified_folds(labels, 3, 3, seed=0)
    sizes = np.bincount(fold, minlength=3)
    assert sizes.max() - sizes.min() <= 1
    for c in range(3):  # every class in every fold, by at most one image more or less
        per = np.bincount(fold[labels == c], minlength=3)
        assert per.max() - per.min() <= 1
    assert np.array_equal(fold, stacked.stratified_folds(labels, 3, 3, seed=0))
    assert not np.array_equal(fold, stacked.stratified_folds(labels, 3, 3, seed=1))


def _blobs(
    n_per_class: int, k: int, separation: float, seed: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per_class)
    centres = np.random.default_rng(99).normal(size=(k, 12)) * separation
    return {"m@1": centres[y] + rng.normal(size=(y.size, 12))}, y


def test_the_rule_separates_a_separable_task_with_confident_probabilities() -> None:
    logits, y = _blobs(20, 4, separation=8.0, seed=0)
    rule = stacked.fit(logits, y, 4, ["m@1"], {})
    assert rule is not None and rule.method == "ridge_loo"
    assert rule.cv_accuracy == 1.0 and rule.cv_recall == (1.0,) * 4
    test_logits, test_y = _blobs(30, 4, separation=8.0, seed=1)
    p = rule.probabilities(test_logits)
    assert (p.argmax(1) == test_y).all()
    assert p[np.arange(test_y.size), test_y].min() > 0.9  # the temperature makes them sure


def test_probabilities_are_roughly_calibrated_where_classes_overlap() -> None:
    logits, y = _blobs(60, 3, separation=0.6, seed=2)
    rule = stacked.fit(logits, y, 3, ["m@1"], {})
    assert rule is not None and 0.5 < rule.cv_accuracy < 0.95
    test_logits, test_y = _blobs(400, 3, separation=0.6, seed=3)
    p = rule.probabilities(test_logits)
    accuracy = float((p.argmax(1) == test_y).mean())
    confidence = float(p.max(1).mean())
    assert abs(confidence - accuracy) < 0.1, (confidence, accuracy)


def test_a_plan_made_by_the_former_fit_loads_and_scores_as_before() -> None:
    from mllgraph.combine import stacked_logistic

    logits, y = _blobs(12, 3, separation=1.0, seed=4)
    old = stacked_logistic.fit(logits, y, 3, ["m@1"], {})
    assert old is not None and old.method == "logistic_cv"
    d = old.to_dict()
    del d["method"]  # plans written before the field
    again = stacked.StackedRule.from_dict(d, 3)
    assert again.method == "logistic_cv"
    np.testing.assert_allclose(again.probabilities(logits), old.probabilities(logits), atol=1e-5)
    new = stacked.fit(logits, y, 3, ["m@1"], {})
    assert new is not None
    assert stacked.StackedRule.from_dict(new.to_dict(), 3).method == "ridge_loo"
    with pytest.raises(InvalidArgument, match="method"):
        stacked.StackedRule.from_dict({**new.to_dict(), "method": "svm"}, 3)


# -- the fit cache ----------------------------------------------------------------------------


def _problem(order: list[int], probes: list[tuple[tuple[str, int], ...]], temp: float = 1.0):
    """Three classes of 8 probe images each (sets "s0", "s1", "s2" in id order), the task's
    classes listed in `order` (task class i is concept order[i])."""
    from mllgraph.combine.rule import HeadGroup
    from mllgraph.select import chco

    logits, concept = _blobs(8, 3, separation=1.5, seed=5)
    logits["n@1"] = np.random.default_rng(6).normal(size=(concept.size, 4))
    task_class = np.argsort(order)  # concept c is task class task_class[c]
    candidates = [chco.Candidate(i, HeadGroup("m@1", (order[i],), "exact", 0.9)) for i in range(3)]
    return chco.ChcoProblem(
        3, candidates, logits, task_class[concept], {"m@1": temp, "n@1": 1.0}, budget=2,
        class_probes=tuple(probes[c] for c in order),
    )  # fmt: skip


SETS = [(("s0", 8),), (("s1", 8),), (("s2", 8),)]


def test_the_fit_cache_finds_a_task_reordered_and_permutes_the_classes_back() -> None:
    from mllgraph.select import stacked_choice

    stacked_choice.FITS.clear()
    first = stacked_choice.fit_stacked(_problem([0, 1, 2], SETS), ["m@1"])
    misses, hits = stacked_choice.FITS.misses, stacked_choice.FITS.hits
    # The same concepts (same probe sets) listed in another order, under any other names.
    order = [2, 0, 1]
    again = stacked_choice.fit_stacked(_problem(order, SETS), ["m@1"])
    assert stacked_choice.FITS.hits == hits + 1 and stacked_choice.FITS.misses == misses
    assert first is not None and again is not None
    logits = _problem([0, 1, 2], SETS).logits_by_model
    np.testing.assert_allclose(again.probabilities(logits), first.probabilities(logits)[:, order])
    assert again.cv_recall == tuple(first.cv_recall[c] for c in order)
    assert again.cv_accuracy == first.cv_accuracy
    # And a miss fits the same rule: the fit always sees the classes in canonical order.
    stacked_choice.FITS.clear()
    fresh = stacked_choice.fit_stacked(_problem(order, SETS), ["m@1"])
    assert fresh is not None and np.array_equal(fresh.coef, again.coef)


@pytest.mark.parametrize(
    "change",
    [
        {"probes": [(("s0", 8),), (("s1", 8),), (("s2b", 8),)]},  # another probe set
        {"probes": [(("s0", 4), ("s3", 4)), (("s1", 8),), (("s2", 8),)]},  # other sets' images
        {"models": ["m@1", "n@1"]},
        {"temp": 2.0},
    ],
)
def test_the_fit_cache_misses_other_data_models_or_temperatures(change: dict) -> None:
    from mllgraph.select import stacked_choice

    stacked_choice.FITS.clear()
    assert stacked_choice.fit_stacked(_problem([0, 1, 2], SETS), ["m@1"]) is not None
    hits, misses = stacked_choice.FITS.hits, stacked_choice.FITS.misses
    other = _problem([0, 1, 2], change.get("probes", SETS), change.get("temp", 1.0))
    stacked_choice.fit_stacked(other, change.get("models", ["m@1"]))
    assert stacked_choice.FITS.hits == hits and stacked_choice.FITS.misses == misses + 1


def test_the_key_ignores_class_order_and_names_the_partition() -> None:
    temps = {"a@1": 1.5, "b@2": 1.0}
    key = stacked.fit_key(["b@2", "a@1"], temps, SETS)
    assert key == stacked.fit_key(["a@1", "b@2"], temps, SETS[::-1])
    assert key != stacked.fit_key(["a@1", "b@2"], temps, [(("s0", 7),), *SETS[1:]])
    assert key != stacked.fit_key(["a@1", "b@1"], {"a@1": 1.5, "b@1": 1.0}, SETS)
    assert stacked.canonical_order([SETS[2], SETS[0], SETS[1]]) == [1, 2, 0]


def test_the_fit_cache_is_a_bounded_lru() -> None:
    from mllgraph.select.cache import MISSING, FitCache

    cache = FitCache(2)
    cache.put("a", 1)
    cache.put("b", None)  # "no rule possible" is kept too
    assert cache.get("a") == 1 and cache.get("b") is None
    cache.put("c", 3)  # a is now the least recently used
    assert cache.get("a") is MISSING and len(cache) == 2 and cache.get("b") is None
    off = FitCache(0)
    off.put("a", 1)
    assert off.get("a") is MISSING


def test_class_probes_must_match_the_labels() -> None:
    with pytest.raises(InvalidArgument, match="class_probes"):
        _problem([0, 1, 2], [(("s0", 8),), (("s1", 7),), (("s2", 8),)])


def test_selection_fits_without_importing_scikit_learn() -> None:
    """scikit-learn's import costs a one-shot `mllgraph select` most of a second: neither the
    stacked fit nor the screen may pull it in."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "import mllgraph.select.run\n"
        "from mllgraph.combine import screen, stacked\n"
        "y = np.repeat(np.arange(3), 8)\n"
        "logits = {'m@1': np.eye(3)[y] * 3 + np.random.default_rng(0).normal(size=(24, 3))}\n"
        "assert stacked.fit(logits, y, 3, ['m@1'], {}) is not None\n"
        "screen.greedy_models(logits, {}, ['m@1'], y, 3, 1)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
