"""The `pictured` term of the sense score (`mllgraph.ground.depict`): a name that names both
an organism and the food it gives grounds to the food where the organism is a plant and to the
animal where it is an animal, unless the task's context says otherwise. Pure cases on a small
lexicon without an encoder, then the real resolver (WordNet, MiniLM); no Neo4j."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mllgraph.graph.wordnet import ROOT_WNID, Synset, WordNetNouns
from mllgraph.ground import depict
from mllgraph.ground.overrides import Overrides
from mllgraph.ground.resolve import Resolver, default_resolver
from mllgraph.settings import Settings

# -- the term alone ----------------------------------------------------------------------------


def test_pictured_prefers_the_food_of_a_plant_and_the_animal_over_its_food() -> None:
    assert depict.pictured("food", {"food", "plant"}) == 1.0
    assert depict.pictured("plant", {"food", "plant"}) == 0.0
    assert depict.pictured("animal", {"animal", "food"}) == 1.0
    assert depict.pictured("food", {"animal", "food"}) == 0.0
    # A name without the other kind of sense gets nothing: not a bonus for food or animals.
    assert depict.pictured("food", {"food", None}) == 0.0
    assert depict.pictured("animal", {"animal", None}) == 0.0
    assert depict.pictured(None, {None, "food", "plant"}) == 0.0


def test_only_whole_organisms_are_the_plant_or_the_animal() -> None:
    def synset(lexname: str) -> Synset:
        return Synset("n1", "x.n.01", ["x"], "an x", lexname, hypernyms=["n0"])

    assert depict.sense_kind(synset("noun.food"), is_organism=False) == "food"
    assert depict.sense_kind(synset("noun.plant"), is_organism=True) == "plant"
    assert depict.sense_kind(synset("noun.animal"), is_organism=True) == "animal"
    # A bird's wing or an egg (noun.animal) and an onion bulb (noun.plant) are parts.
    assert depict.sense_kind(synset("noun.animal"), is_organism=False) is None
    assert depict.sense_kind(synset("noun.plant"), is_organism=False) is None
    assert depict.sense_kind(synset("noun.artifact"), is_organism=False) is None


def test_visual_tiers_and_instances() -> None:
    def synset(lexname: str, instance: bool = False) -> Synset:
        parents = {"instance_hypernyms": ["n0"]} if instance else {"hypernyms": ["n0"]}
        return Synset("n1", "x.n.01", ["x"], "an x", lexname, **parents)

    assert depict.visual(synset("noun.food")) == depict.visual(synset("noun.animal")) == 1.0
    assert depict.visual(synset("noun.plant")) == 0.5
    assert depict.visual(synset("noun.feeling")) == 0.0
    assert depict.visual(synset("noun.artifact", instance=True)) == pytest.approx(0.3)


# -- on a small lexicon, no encoder ------------------------------------------------------------


def _lexicon() -> WordNetNouns:
    """Two deep branches, so that sharing a parent with other classes counts as context
    (the context term ignores the top four levels): foods under shellfish and fruit, plants
    under fruit tree, animals under crustacean; 'lobster' and 'plum' each name an organism
    and its food."""
    tree = {  # wnid: (lemma, parent, lexname)
        "n01": ("physical", ROOT_WNID, "noun.Tops"),
        "n02": ("matter", "n01", "noun.Tops"),
        "n03": ("solid", "n02", "noun.Tops"),
        "n04": ("food", "n03", "noun.food"),
        "n05": ("seafood", "n04", "noun.food"),
        "n06": ("shellfish", "n05", "noun.food"),
        "n10": ("lobster", "n06", "noun.food"),  # listed first, as WordNet does
        "n11": ("crabmeat", "n06", "noun.food"),
        "n12": ("scampi", "n06", "noun.food"),
        "n00004475": ("organism", "n01", "noun.Tops"),  # depict.ORGANISM
        "n21": ("animal", "n00004475", "noun.animal"),
        "n22": ("invertebrate", "n21", "noun.animal"),
        "n23": ("arthropod", "n22", "noun.animal"),
        "n24": ("crustacean", "n23", "noun.animal"),
        "n25": ("lobster", "n24", "noun.animal"),
        "n26": ("crab", "n24", "noun.animal"),
        "n27": ("shrimp", "n24", "noun.animal"),
        "n30": ("plant", "n00004475", "noun.plant"),
        "n31": ("woody plant", "n30", "noun.plant"),
        "n32": ("tree", "n31", "noun.plant"),
        "n33": ("angiospermous tree", "n32", "noun.plant"),
        "n34": ("fruit tree", "n33", "noun.plant"),
        "n35": ("plum", "n34", "noun.plant"),  # listed first, and the only tagged sense
        "n36": ("cherry", "n34", "noun.plant"),
        "n37": ("apricot", "n34", "noun.plant"),
        "n40": ("produce", "n04", "noun.food"),
        "n41": ("edible fruit", "n40", "noun.food"),
        "n42": ("plum", "n41", "noun.food"),
        "n43": ("kiwi", "n41", "noun.food"),
    }
    synsets = {ROOT_WNID: Synset(ROOT_WNID, "entity.n.01", ["entity"], "all", "noun.Tops")}
    index: dict[str, list[str]] = {"entity": [ROOT_WNID]}
    for wnid, (lemma, parent, lexname) in tree.items():
        key = lemma.replace(" ", "_")
        index.setdefault(key, []).append(wnid)
        synsets[wnid] = Synset(wnid, "", [key], f"a {lemma}", lexname, hypernyms=[parent])
    for key, wnids in index.items():
        for rank, wnid in enumerate(wnids, 1):
            synsets[wnid].name = f"{key}.n.{rank:02d}"
    return WordNetNouns(synsets=synsets, lemma_index=index)


def _resolver(pictured: float | None = None) -> Resolver:
    r = Resolver(
        _lexicon(),
        overrides=Overrides(names={}, senses={}),
        tag_counts={"plum": {"n35": 10, "n42": 0}},
    )
    if pictured is not None:
        r.weights = dataclasses.replace(r.weights, pictured=pictured)
    return r


def test_the_food_of_a_plant_wins_where_the_plant_is_the_likelier_sense() -> None:
    # The plant is listed first and tagged: prior and visual alone keep it; the term turns it.
    assert _resolver(pictured=0.0).resolve_name("plum").wnid == "n35"
    plum = _resolver().resolve_name("plum")
    assert plum.wnid == "n42"
    assert plum.reasons["pictured"] == 1.0 and "runner_up_pictured" not in plum.reasons
    assert plum.reasons["runner_up_tag_count"] == 10


def test_the_animal_wins_over_its_food_listed_first() -> None:
    assert _resolver(pictured=0.0).resolve_name("lobster").wnid == "n10"
    lobster = _resolver().resolve_name("lobster")
    assert lobster.wnid == "n25" and lobster.reasons["pictured"] == 1.0
    # Among crustaceans all the more.
    assert _resolver().resolve_task(["lobster", "crab", "shrimp"])[0].wnid == "n25"


def test_context_still_wins_over_the_pictured_sense() -> None:
    r = _resolver()
    lobster = r.resolve_task(["lobster", "crabmeat", "scampi"])[0]
    assert lobster.wnid == "n10"  # among shellfish dishes: the food
    assert lobster.reasons["context"] > lobster.reasons["runner_up_context"]
    assert lobster.reasons["runner_up_pictured"] == 1.0
    plum = r.resolve_task(["plum", "cherry", "apricot"])[0]
    assert plum.wnid == "n35"  # among fruit trees: the tree
    assert plum.reasons["context"] > plum.reasons["runner_up_context"]
    assert r.resolve_task(["plum", "kiwi", "crabmeat"])[0].wnid == "n42"  # among foods


# -- WordNet and the encoder -------------------------------------------------------------------


@pytest.fixture(scope="module")
def resolver() -> Resolver:
    r = default_resolver(Settings.from_env())
    assert r.embeddings_available and r.tag_counts
    return r


@pytest.mark.parametrize(
    ("task", "wnid"),
    [
        # The fruit, bulb or vegetable one buys, not its plant (emoji and ImageNet files them so).
        (["peach", "battery", "rice cracker"], "n07751004"),  # peach.n.03
        (["garlic", "top hat", "dolphin"], "n07818277"),  # garlic.n.02
        (["banana", "hibiscus", "seal"], "n07753592"),  # banana.n.02, beside a flower
        (["head cabbage", "bulbul", "Angora"], "n07714571"),  # head_cabbage.n.02
        # The animal, not its flesh as food (listed first by WordNet).
        (["squid", "folding hand fan", "cockroach"], "n01971280"),  # squid.n.02
        (["octopus", "microscope", "ear of corn"], "n01970164"),  # octopus.n.02
    ],
)
def test_names_of_an_organism_and_its_food(resolver: Resolver, task: list[str], wnid: str) -> None:
    g = resolver.resolve_task(task)[0]
    assert g.wnid == wnid, g
    assert g.reasons["pictured"] == 1.0


@pytest.mark.parametrize("name", ["wing", "egg"])
def test_parts_of_an_animal_are_not_the_animal(resolver: Resolver, name: str) -> None:
    # A bird's wing (beside the fowl's wing as food) and an egg are filed under noun.animal
    # but are no organism: the term leaves them to the other terms.
    g = resolver.resolve_name(name)
    assert "pictured" not in g.reasons and "runner_up_pictured" not in g.reasons


def test_a_modifier_of_a_phrase_gets_no_pictured_term(resolver: Resolver) -> None:
    # "cherry blossom" (WordNet lacks it) is a flower; its word "cherry" names no class.
    g = resolver.resolve_task(["cherry blossom", "lemon", "tent"])[0]
    assert g.approximate and g.wnid == "n11669335"  # flower.n.02
    assert "pictured" not in g.reasons and "runner_up_pictured" not in g.reasons


def test_peach_among_fruit_trees_is_the_tree(resolver: Resolver) -> None:
    peach = resolver.resolve_task(["peach", "oak", "maple", "birch"])[0]
    assert peach.wnid == "n12648045"  # peach.n.01, the tree: context overrules the term
    assert peach.reasons["runner_up_pictured"] == 1.0
    assert peach.reasons["context"] > peach.reasons["runner_up_context"]


def test_coffee_bat_and_mouse_keep_their_senses(resolver: Resolver) -> None:
    coffee = resolver.resolve_task(["cat", "coffee", "motorbike", "tripod", "flower"])[1]
    assert coffee.wnid == "n07929519"  # the beverage (the term agrees: the shrub is a plant)
    assert resolver.resolve_task(["bat", "owl", "moth"])[0].wnid == "n02139199"
    assert resolver.resolve_task(["mouse", "keyboard", "monitor"])[0].wnid == "n03793489"


def test_explain_selection_states_the_pictured_sense(resolver: Resolver) -> None:
    from services.plan_messages import _grounding_reason

    garlic = resolver.resolve_task(["garlic", "top hat", "dolphin"])[0]
    planned = {
        "name": "garlic",
        "concept": {"wnid": garlic.wnid, "name": garlic.concept_name},
        "grounding": json.loads(json.dumps(garlic.to_dict())),  # as the plan document keeps it
    }
    text = _grounding_reason(planned)
    assert "names both an organism and the food it gives" in text
    assert "shows this sense (pictured 1.00 against 0.00)" in text
