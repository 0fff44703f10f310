"""The emoji world's "none of these" negatives: unrelated concepts only."""

from __future__ import annotations

import numpy as np

from mllgraph.eval.emoji_none import ancestors_of, negatives

# entity <- animal <- dog <- poodle; animal <- cat; entity <- artifact <- cup
HYPERNYMS = {
    "animal": ["entity"],
    "dog": ["animal"],
    "poodle": ["dog"],
    "cat": ["animal"],
    "artifact": ["entity"],
    "cup": ["artifact"],
}


def test_ancestors_are_transitive_and_strict() -> None:
    got = ancestors_of(["poodle", "cup", "entity"], HYPERNYMS)
    assert got == {
        "poodle": {"dog", "animal", "entity"},
        "cup": {"artifact", "entity"},
        "entity": set(),
    }


def test_negatives_skip_the_task_its_descendants_and_its_ancestors() -> None:
    images = np.array(["dog", "poodle", "cat", "cup", "animal", "cup", "dog"])
    ancestors = ancestors_of(sorted(set(images)) + ["dog"], HYPERNYMS)
    # poodle is a dog and every dog is an animal: neither is "none of these" for "dog".
    assert negatives(images, ["dog"], ancestors).tolist() == [2, 3, 5]
    assert negatives(images, ["dog", "cup"], ancestors).tolist() == [2]
    assert negatives(images, ["animal"], ancestors).tolist() == [3, 5]
