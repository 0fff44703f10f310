"""The photos suite's pieces: the packaged photos load offline, and an ImageNet expert alone,
restricted to a task's classes through WordNet subtrees, names what the photos show."""

from __future__ import annotations

import numpy as np
import pytest

from mllgraph.eval import photos
from mllgraph.graph.wordnet import load_nouns
from mllgraph.settings import Settings


def test_every_photo_loads_offline_as_uint8() -> None:
    for pid in photos.PHOTOS:
        img = photos.load_photo(pid)
        assert img.dtype == np.uint8 and img.ndim in (2, 3) and min(img.shape[:2]) >= 256


def test_tasks_name_only_their_own_classes() -> None:
    for task in photos.PHOTO_TASKS:
        assert 3 <= len(task.names) <= 6
        truths = [c for _, c in task.photos] + [c for _, c in task.fashion]
        assert set(truths) <= set(task.names), task.name


def test_restricted_predictions_sum_each_class_subtree() -> None:
    children = {"animal": ["cat", "dog"], "cat": ["tabby", "persian"], "dog": ["pug"]}
    subtrees = [photos.descendants_of(children, w) for w in ("cat", "dog")]
    assert subtrees[0] == {"cat", "tabby", "persian"}
    heads = ["tabby", "persian", "pug", "car"]
    # tabby + persian (0.5) beat pug (0.4); the car head belongs to no class.
    probs = np.array([[0.25, 0.25, 0.4, 0.1], [0.0, 0.1, 0.2, 0.7]])
    pred, covered = photos.restricted_predictions(probs, heads, subtrees)
    assert pred.tolist() == [0, 1] and covered == [True, True]
    _, covered = photos.restricted_predictions(probs, heads, [{"fish"}, subtrees[1]])
    assert covered == [False, True]


@pytest.mark.slow
def test_efficientnet_lite0_alone_names_the_cat_and_the_coffee() -> None:
    nouns = load_nouns(Settings.from_env().wordnet_dir)
    children = photos.children_index(nouns.synsets)
    task = photos.PHOTO_TASKS[0]  # cat, coffee, motorbike, tripod, flower
    concepts = [nouns.lemma_index[n.replace(" ", "_")][0] for n in task.names]
    subtrees = [photos.descendants_of(children, w) for w in concepts]
    alone = photos.ExpertsAlone(["efficientnet_lite0"])
    wnids = alone.head_wnids("efficientnet_lite0")
    for pid, truth in [("chelsea", "cat"), ("coffee", "coffee")]:
        p = alone.probabilities("efficientnet_lite0", pid, photos.load_photo(pid))
        pred, covered = photos.restricted_predictions(p[None], wnids, subtrees)
        assert all(covered[:2]), "ImageNet declares cat and coffee (espresso) heads"
        assert task.names[int(pred[0])] == truth, pid
