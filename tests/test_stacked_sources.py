"""The stacked rule's estimate when probe images come from several sources (pure, no server):
leave-one-group-out ridge, folds by source, and the fit cache's key naming the sources."""

from __future__ import annotations

import numpy as np
import pytest

from mllgraph.combine import stacked
from mllgraph.combine.ridge import RidgePath, leave_groups_out
from mllgraph.errors import InvalidArgument


def _weighted_ridge(x: np.ndarray, y: np.ndarray, w: np.ndarray, lam: float) -> np.ndarray:
    """(D+1, K) the textbook solution, intercept first (normal equations, intercept free)."""
    a = np.hstack([np.ones((x.shape[0], 1)), x])
    penalty = lam * np.eye(a.shape[1])
    penalty[0, 0] = 0.0
    return np.linalg.solve(a.T @ (w[:, None] * a) + penalty, a.T @ (w[:, None] * y))


def test_leave_groups_out_is_refitting_without_each_group() -> None:
    rng = np.random.default_rng(0)
    n, d, k = 30, 8, 3
    x, y = rng.normal(size=(n, d)), np.eye(k)[np.arange(n) % k]
    w = rng.uniform(0.5, 2.0, size=n)
    groups = rng.integers(0, 4, size=n)
    lams = np.array([0.1, 3.0, 50.0])
    got = leave_groups_out(x, y, w, groups, lams)
    for i, lam in enumerate(lams):
        for g in np.unique(groups):
            held = groups == g
            beta = _weighted_ridge(x[~held], y[~held], w[~held], lam)
            want = np.hstack([np.ones((held.sum(), 1)), x[held]]) @ beta
            np.testing.assert_allclose(got[i, held], want, atol=1e-8)


def test_one_point_per_group_is_leave_one_out() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 5)), np.eye(2)[np.arange(20) % 2]
    w = rng.uniform(0.5, 2.0, size=20)
    path = RidgePath.of(x, y, w)
    got = leave_groups_out(x, y, w, np.arange(20), np.array([0.5, 5.0]))
    np.testing.assert_allclose(got[0], path.loo(0.5), atol=1e-8)
    np.testing.assert_allclose(got[1], path.loo(5.0), atol=1e-8)


def _styles(sources: int, per: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits of one model with 40 heads for 3 classes: in each source (an art style) each
    class is one drawing copied `per` times with small noise (its own random look), plus a
    weak signal all sources share. Within a source the copies give the class away; only the
    shared signal carries over to a new source."""
    rng = np.random.default_rng(seed)
    k, heads = 3, 40
    shared = rng.normal(size=(k, heads))
    rows, labels, source = [], [], []
    for s in range(sources):
        look = rng.normal(size=(k, heads)) * 2.0
        for c in range(k):
            copies = 0.35 * shared[c] + look[c] + 0.1 * rng.normal(size=(per, heads))
            rows.append(copies)
            labels += [c] * per
            source += [f"style{s}"] * per
    return np.vstack(rows), np.array(labels), np.array(source)


def test_folds_by_source_estimate_a_new_source_where_folds_by_image_do_not() -> None:
    x, y, src = _styles(sources=4, per=8, seed=3)
    by_image = stacked.fit({"m@1": x}, y, 3, ["m@1"], {})
    by_source = stacked.fit({"m@1": x}, y, 3, ["m@1"], {}, sources=src)
    assert by_image is not None and by_source is not None
    assert by_image.cv_folds == "images" and by_source.cv_folds == "sources"
    # Images of sources no fit has seen: what the user's images are.
    new_x, new_y, _ = _styles(sources=30, per=8, seed=99)
    truth = float((by_source.probabilities({"m@1": new_x}).argmax(1) == new_y).mean())
    assert by_image.cv_accuracy > 0.95  # copies on both sides of each fold: saturated
    assert truth < 0.9
    assert abs(by_source.cv_accuracy - truth) < abs(by_image.cv_accuracy - truth)
    assert abs(by_source.cv_accuracy - truth) < 0.15


def test_a_class_from_one_source_is_dealt_round_the_source_folds() -> None:
    x, y, src = _styles(sources=3, per=6, seed=4)
    src = src.copy()
    src[y == 0] = "style0"  # class 0 seen in one source only: it cannot be held out by source
    fold = stacked.source_folds(y, 3, src)
    assert fold is not None
    np.testing.assert_array_equal(fold[y != 0], [int(s[-1]) for s in src[y != 0]])
    assert np.bincount(fold[y == 0], minlength=3).tolist() == [6, 6, 6]  # every fold keeps it
    rule = stacked.fit({"m@1": x}, y, 3, ["m@1"], {}, sources=src)
    assert rule is not None and rule.cv_folds == "sources"


def test_without_a_class_from_two_sources_the_folds_are_by_image() -> None:
    x, y, _ = _styles(sources=3, per=6, seed=4)
    one_each = np.array([f"style{c}" for c in y])  # each class from its own source
    assert stacked.source_folds(y, 3, one_each) is None
    assert stacked.source_folds(y, 3, None) is None
    assert stacked.source_folds(y, 3, np.full(y.size, "fashion")) is None
    rule = stacked.fit({"m@1": x}, y, 3, ["m@1"], {}, sources=one_each)
    plain = stacked.fit({"m@1": x}, y, 3, ["m@1"], {})
    assert rule is not None and plain is not None and rule.cv_folds == "images"
    np.testing.assert_array_equal(rule.coef, plain.coef)


def test_cv_folds_round_trips_and_is_checked() -> None:
    x, y, src = _styles(sources=3, per=6, seed=5)
    rule = stacked.fit({"m@1": x}, y, 3, ["m@1"], {}, sources=src)
    assert rule is not None
    again = stacked.StackedRule.from_dict(rule.to_dict(), 3)
    assert again.cv_folds == "sources"
    older = {k: v for k, v in rule.to_dict().items() if k != "cv_folds"}
    assert stacked.StackedRule.from_dict(older, 3).cv_folds == "images"
    with pytest.raises(InvalidArgument, match="cv_folds"):
        stacked.StackedRule.from_dict({**rule.to_dict(), "cv_folds": "emoji"}, 3)


def test_the_fit_key_names_each_sets_source() -> None:
    sets = [(("s0", 8),), (("s1", 8),)]
    temps = {"m@1": 1.0}
    one = stacked.fit_key(["m@1"], temps, sets, sources={"s0": "a", "s1": "a"})
    other = stacked.fit_key(["m@1"], temps, sets, sources={"s0": "a", "s1": "b"})
    assert one != other
    assert one == stacked.fit_key(["m@1"], temps, sets[::-1], sources={"s1": "a", "s0": "a"})


def _sourced_problem(x: np.ndarray, y: np.ndarray, src: np.ndarray, *, sources: bool = True):
    """A 3-class ChcoProblem (head c mapped to class c) whose probe sets are "<source>-<class>",
    rows in probe_matrix's order (the sets by id, each set's images together); and each row's
    source in that order."""
    from mllgraph.combine.rule import HeadGroup
    from mllgraph.select import chco

    order = np.lexsort((np.arange(y.size), y, src))
    x, y, src = x[order], y[order], src[order]
    ids = [f"{s}-{c}" for s, c in zip(src, y, strict=True)]
    class_probes = tuple(
        tuple((sid, ids.count(sid)) for sid in sorted(set(ids)) if sid.endswith(f"-{c}"))
        for c in range(3)
    )
    problem = chco.ChcoProblem(
        3, [chco.Candidate(c, HeadGroup("m@1", (c,), "exact", 0.9)) for c in range(3)],
        {"m@1": x}, y, {"m@1": 1.0}, budget=1, class_probes=class_probes,
        probe_sources={sid: sid.split("-")[0] for sid in ids} if sources else None,
    )  # fmt: skip
    return problem, src


def test_selection_passes_each_rows_source_in_row_order() -> None:
    from mllgraph.select import stacked_choice

    problem, src = _sourced_problem(*_styles(sources=2, per=6, seed=6))
    assert list(stacked_choice.row_sources(problem)) == list(src)
    stacked_choice.FITS.clear()
    rule = stacked_choice.fit_stacked(problem, ["m@1"])
    assert rule is not None and rule.cv_folds == "sources"


def test_the_screen_measures_each_image_against_the_other_sources_class_means() -> None:
    from mllgraph.combine import screen

    x, y, src = _styles(sources=3, per=5, seed=7)
    got = screen.class_mean_distances(x, y, 3, src)
    sd = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    for i in range(y.size):
        others = src != src[i]
        means = np.stack([z[others & (y == c)].mean(axis=0) for c in range(3)])
        want = ((z[i] - means) ** 2).sum(axis=1) / z.shape[1]
        np.testing.assert_allclose(got[i], want, atol=1e-9)
    # Near copies within a source: leave-one-out finds every image's class (a screen would
    # stop at the first model); leave one source out does not.
    loo = screen.class_mean_distances(x, y, 3)
    assert (loo.argmin(1) == y).mean() == 1.0
    assert (got.argmin(1) == y).mean() < 0.9


def test_explain_selection_and_the_cli_say_what_the_estimate_held_out() -> None:
    from mllgraph.cli.common import console
    from mllgraph.cli.select import print_plan
    from services import plan_messages
    from tests.test_conse import _patch, _plan_with_patch  # a small printable plan

    made = _patch([[0.9, 0.1]], heads=(0,))
    base = _plan_with_patch({**made.to_dict(), "classes": ["coffee"]})
    for folds, said in (("sources", "one probe source held out at a time"),
                        ("images", "folds of probe images")):  # fmt: skip
        stacked_note = {"used": True, "cv_accuracy": 0.8, "cv_folds": folds,
                        "per_class_rule_accuracy": 0.7, "c": 1.0, "features": 12}  # fmt: skip
        plan = {**base, "stacked": stacked_note}
        notes = plan_messages.explain(plan, plan_messages.Concepts(None)).notes
        line = next(n for n in notes if n.startswith("Stacked rule"))
        assert said in line and "ridge" in line and "0.800" in line
        with console.capture() as out:
            print_plan({**plan, "params_fitted": True, "created_at": "t"})
        cli = next(x for x in out.get().splitlines() if x.startswith("stacked rule"))
        assert ("one probe source held out at a time" in cli) == (folds == "sources")


@pytest.mark.parametrize("by_source", [True, False])
def test_a_stacked_rule_estimated_on_held_out_sources_is_kept(by_source: bool) -> None:
    """Folds by image: kept only when its out-of-fold accuracy beats the per-class rule's
    in-sample accuracy (here both are 1.0: not kept). Folds by source: kept, since the
    in-sample figure is no fair bar for a new source."""
    from mllgraph.select import chco, stacked_choice

    rng = np.random.default_rng(8)
    y = np.repeat(np.arange(3), 12)
    x = rng.normal(size=(36, 6))
    x[np.arange(36), y] += 8.0  # head c says class c, in every source
    src = np.tile(np.repeat(["a", "b", "c"], 4), 3)
    problem, _ = _sourced_problem(x, y, src, sources=by_source)
    stacked_choice.FITS.clear()
    plan = chco.solve(problem)
    rule, note = stacked_choice._stacked(problem, plan)
    assert note["per_class_rule_accuracy"] == 1.0 and note["cv_accuracy"] == 1.0
    assert note["cv_folds"] == ("sources" if by_source else "images")
    assert note["used"] is by_source and (rule is not None) is by_source


def test_only_a_concept_probed_from_two_sources_names_its_sources() -> None:
    from mllgraph.select.probe_data import probe_sources

    rows = [
        {"set_id": "dog-a", "wnid": "n1", "source": "emoji:openmoji"},
        {"set_id": "dog-b", "wnid": "n1", "source": "emoji:fluent-flat"},
        # A task class "shirt" with the pools of two concepts under it: not two sources.
        {"set_id": "shirt", "wnid": "n2", "source": "Fashion-MNIST: Shirt"},
        {"set_id": "tee", "wnid": "n3", "source": "Fashion-MNIST: T-shirt/top"},
        {"set_id": "old", "wnid": "n4", "source": None},
    ]
    assert probe_sources(rows) == {
        "dog-a": "emoji:openmoji", "dog-b": "emoji:fluent-flat", "shirt": "", "tee": "", "old": "",
    }  # fmt: skip


def test_row_sources_name_each_row_probe_matrix_gives() -> None:
    # The none-of-these calibration leaves one source out at a time: each of its rows must
    # carry its own set's source, in the order probe_matrix lays the rows out (sets by id,
    # only the images every model has outputs for).
    from mllgraph.hub.probe_outputs import ProbeOutputs
    from mllgraph.select.none_calibration import _row_sources
    from mllgraph.select.probe_data import probe_matrix

    rows = [
        {"class_index": 0, "set_id": "dog-b", "wnid": "n1", "distance": 0, "source": "emoji:b"},
        {"class_index": 0, "set_id": "dog-a", "wnid": "n1", "distance": 0, "source": "emoji:a"},
        {"class_index": 1, "set_id": "cup", "wnid": "n2", "distance": 0, "source": "photos"},
        {"class_index": 1, "set_id": "gone", "wnid": "n3", "distance": 0, "source": "x"},
    ]
    # Row values say which set and image they are: 10 * set number + image.
    layout = {"cup": (0, 3), "dog-a": (3, 2), "dog-b": (5, 4)}
    data = np.array([[10 * k + i] for k, (_, n) in enumerate(layout.values()) for i in range(n)])
    short = {"cup": (0, 3), "dog-a": (3, 2), "dog-b": (5, 1)}  # a model with one dog-b image
    outputs = {
        "m": ProbeOutputs(data.astype(np.float16), layout, 1.0),
        "n": ProbeOutputs(data[:6].astype(np.float16), short, 1.0),
    }
    labels, logits, _ = probe_matrix(rows, outputs, 2)
    sources = _row_sources(rows, outputs, 2)
    assert logits["m"][:, 0].tolist() == [0, 1, 2, 10, 11, 20]
    assert labels.tolist() == [1, 1, 1, 0, 0, 0]
    assert sources.tolist() == ["", "", "", "emoji:a", "emoji:a", "emoji:b"]
