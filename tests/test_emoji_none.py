"""The emoji world's "none of these" negatives: unrelated concepts only."""

from __future__ import annotations

import numpy as np

from mllgraph.eval.emoji_none import negatives
from mllgraph.graph.wordnet import Synset, WordNetNouns

# entity <- animal <- dog <- poodle; animal <- cat; entity <- artifact <- cup
HYPERNYMS = {
    "entity": [],
    "animal": ["entity"],
    "dog": ["animal"],
    "poodle": ["dog"],
    "cat": ["animal"],
    "artifact": ["entity"],
    "cup": ["artifact"],
}
NOUNS = WordNetNouns(
    synsets={
        w: Synset(w, f"{w}.n.01", [w], "", "noun.Tops", list(up)) for w, up in HYPERNYMS.items()
    },
    lemma_index={},
)


def ancestors_of(wnids: list[str]) -> dict[str, set[str]]:
    """As the emoji run builds them: each concept's strict ancestors."""
    return {w: set(NOUNS.with_ancestors(w) - {w}) for w in wnids}


def test_ancestors_are_transitive_and_strict() -> None:
    got = ancestors_of(["poodle", "cup", "entity"])
    assert got == {
        "poodle": {"dog", "animal", "entity"},
        "cup": {"artifact", "entity"},
        "entity": set(),
    }


def test_negatives_skip_the_task_its_descendants_and_its_ancestors() -> None:
    images = np.array(["dog", "poodle", "cat", "cup", "animal", "cup", "dog"])
    ancestors = ancestors_of(sorted(set(images)) + ["dog"])
    # poodle is a dog and every dog is an animal: neither is "none of these" for "dog".
    assert negatives(images, ["dog"], ancestors).tolist() == [2, 3, 5]
    assert negatives(images, ["dog", "cup"], ancestors).tolist() == [2]
    assert negatives(images, ["animal"], ancestors).tolist() == [3, 5]
