"""How a sense of a class name fares as an image class: two terms of the sense score
(`mllgraph.ground.resolve`'s docstring).

- `visual`: how likely a concept of its lexicographer file is to be an image class at all.
- `pictured`: among the senses of one name, which of an organism and the food it gives a
  photo of that name shows.

Pure functions of a `Synset` (or its lexicographer file); imports only `graph.wordnet`'s
record type.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mllgraph.graph.wordnet import Synset

# How likely a concept in each lexicographer file is to be an image class: the share of the
# file's synsets that ImageNet-21k uses (artifact 68%, food 72%, plant 54%, animal 53%,
# shape 36%, person 26%, object 15%; act, location, substance, attribute, body 2-4%; state,
# cognition, quantity, time, feeling ... ~0%), coarsened into tiers. Animals get the artifact
# tier on purpose: their lower share reflects WordNet's many obscure species, and
# "crane"/"mouse"/"bat" must not lean towards machines merely for being artifacts. Plants get
# the lowest tier that still counts as imageable (0.5): a name with a plant and a food sense
# ("broccoli", "fig", "acorn squash") is photographed as the food, as ImageNet files it (dev
# half of `bench grounding`, 150 tasks per size: words alone +1.8/+0.9/+0.5 points for 3/10/30
# names); a name with only plant senses is unaffected.
VISUAL_TIER: dict[str, float] = {
    "noun.artifact": 1.0,
    "noun.food": 1.0,
    "noun.plant": 0.5,
    "noun.animal": 1.0,
    "noun.object": 0.8,
    "noun.shape": 0.5,
    "noun.person": 0.5,
    "noun.body": 0.4,
    "noun.Tops": 0.3,
    "noun.substance": 0.3,
    "noun.location": 0.2,
    "noun.act": 0.15,
    "noun.attribute": 0.15,
    "noun.communication": 0.15,
    "noun.phenomenon": 0.15,
    "noun.event": 0.1,
    "noun.group": 0.1,
}
VISUAL_OTHER = 0.0
INSTANCE_FACTOR = 0.3  # named individuals (Stephen Crane, New Jersey) are rarely image classes


def visual(synset: Synset) -> float:
    """The visual tier of a concept (0..1): its lexicographer file's, less for an instance."""
    v = VISUAL_TIER.get(synset.lexname, VISUAL_OTHER)
    return v * INSTANCE_FACTOR if synset.instance_hypernyms and not synset.hypernyms else v


# Which sense a name pictures when it names both an organism and the food it gives (WordNet
# links 257 such same-name pairs as food part-of plant, 99 as food part-of animal): a plant is
# named after its produce and photographed as it ("peach", "garlic", "head cabbage": the fruit,
# bulb or head one buys, as ImageNet files them), while an animal's food is named after the
# animal and a photo of the name shows the animal ("lobster", "squid", "duck"). Only whole
# organisms count as the plant or the animal: "wing" (a bird's, beside the fowl's wing as food)
# and "egg" are parts, and get nothing. A preference between the senses of one name only: it
# adds nothing where the name lacks the other kind.
ORGANISM = "n00004475"  # organism.n.01
PICTURED_OVER: dict[str, str] = {
    "food": "plant",  # the food, where the name also names the plant
    "animal": "food",  # the animal, where the name also names its food
}


def sense_kind(synset: Synset, is_organism: bool) -> str | None:
    """'food', 'plant' or 'animal' (an organism of that lexicographer file), else None."""
    if synset.lexname == "noun.food":
        return "food"
    if is_organism and synset.lexname in ("noun.plant", "noun.animal"):
        return synset.lexname.removeprefix("noun.")
    return None


def pictured(kind: str | None, name_kinds: Collection[str | None]) -> float:
    """1.0 for the sense a photo of the name shows when the name's senses (their
    `sense_kind`s, `name_kinds`) name both an organism and its food, else 0.0."""
    other = PICTURED_OVER.get(kind) if kind else None
    return 1.0 if other is not None and other in name_kinds else 0.0
