"""Grounding names WordNet lacks by reading them as noun phrases (issue #23, item 1-2):
`words.parse_name` (pure), the phrase candidates of `ground.approximate` on a hand-made
lexicon with a toy text encoder, the same on the real WordNet, and how ExplainSelection states
the reading. No Neo4j.
"""

from __future__ import annotations

import json
import re
import zlib

import numpy as np
import pytest

from mllgraph.errors import InvalidArgument
from mllgraph.graph.wordnet import ROOT_WNID, Synset, WordNetNouns
from mllgraph.ground.overrides import Overrides
from mllgraph.ground.records import APPROXIMATE_ROLES, ScoreWeights
from mllgraph.ground.resolve import Resolver, default_resolver
from mllgraph.ground.words import parse_name, stem, stems_of
from mllgraph.settings import Settings

# -- parse_name (pure) -------------------------------------------------------------------------

THINGS = {"leaf", "wind", "glass", "magnifying_glass", "building", "office", "playing_card"}


def _is_thing(key: str) -> bool:
    return key in THINGS or key.rstrip("s") in THINGS


def test_a_preposition_starts_the_context() -> None:
    p = parse_name("umbrella with rain drops", _is_thing)
    assert p.words == ("umbrella", "with", "rain", "drops")
    assert (p.object_end, p.head) == (1, 0)
    assert p.role(0, 1) == "head" and p.role(2, 4) == "context" and p.role(3, 4) == "context"


def test_a_participle_or_negation_after_the_object_starts_its_state() -> None:
    leaf = parse_name("leaf fluttering in wind", _is_thing)
    assert (leaf.object_end, leaf.head) == (1, 0)
    glass = parse_name("magnifying glass tilted left", _is_thing)
    assert (glass.object_end, glass.head) == (2, 1)  # a leading participle is a modifier
    assert glass.role(0, 2) == "head" and glass.role(0, 1) == "modifier"
    assert parse_name("hourglass not done", _is_thing).object_end == 1


def test_nouns_and_compounds_that_look_like_participles_are_kept() -> None:
    # "building" names a thing; "playing cards" is a compound that does.
    assert parse_name("office building", _is_thing).head == 1
    assert parse_name("brick building", lambda _: False).object_end == 1  # the contrast
    cards = parse_name("flower playing cards", _is_thing)
    assert (cards.object_end, cards.head) == (3, 2)
    # a participle inside a hyphenated word modifies the noun after it
    mountain = parse_name("snow-capped mountain", lambda _: False)
    assert mountain.words == ("snow", "capped", "mountain") and mountain.head == 2


def test_noise_words_articles_and_possessives() -> None:
    assert parse_name("a photo of a dog", _is_thing).words == ("dog",)
    helmet = parse_name("rescue worker's helmet", _is_thing)
    assert helmet.words == ("rescue", "worker", "helmet") and helmet.head == 2
    hen = parse_name("hen of the woods mushroom", _is_thing)
    assert hen.object_end == 1 and hen.role(0, 4) == "head"  # "hen of the woods" holds it
    # sub-phrases start and end on content words only
    assert (0, 2) not in hen.phrases() and (0, 4) in hen.phrases()
    assert parse_name("the", _is_thing).words == ("the",)  # nothing to drop it for


def test_stems_match_a_definitions_words_to_a_names() -> None:
    assert [stem(w) for w in ("babies", "humped", "potted", "flats", "dresses", "glass")] == [
        "baby", "hump", "pot", "flat", "dress", "glass",
    ]  # fmt: skip
    assert stem("bus") == "bus" and stem("running") == "run" and stem("electrical") == "electric"
    assert stems_of("two-humped camel_hair") == {"two", "hump", "camel", "hair"}


# -- the rule on a hand-made lexicon ---------------------------------------------------------

STOP = {"a", "an", "the", "of", "photo", "with", "in", "on"}


class BagOfWords:
    """A toy text encoder: hashed counts of a text's words (stop words out), L2-normalised, so
    texts sharing words are close."""

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 256), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                if word not in STOP:
                    out[row, zlib.crc32(word.rstrip("s").encode()) % 256] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def _synset(wnid: str, lemmas: list[str], parent: str, lexname: str, gloss: str) -> Synset:
    return Synset(wnid, "", lemmas, gloss, lexname, hypernyms=[parent] if parent else [])


@pytest.fixture
def small() -> Resolver:
    synsets = [
        _synset(ROOT_WNID, ["entity"], "", "noun.Tops", "that which exists"),
        _synset("a1", ["animal"], ROOT_WNID, "noun.animal", "a living organism"),
        _synset("a2", ["monkey"], "a1", "noun.animal", "a long tailed primate monkey"),
        _synset("b1", ["face"], ROOT_WNID, "noun.body", "the front of the head"),
        _synset("t1", ["artifact"], ROOT_WNID, "noun.artifact", "a man-made object"),
        _synset("t2", ["umbrella"], "t1", "noun.artifact", "a canopy that shields from rain"),
        _synset("t3", ["train"], "t1", "noun.artifact", "a line of railway cars coupled"),
        _synset("t4", ["bullet_train"], "t3", "noun.artifact", "a high speed passenger train"),
        _synset("t5", ["freight_train"], "t3", "noun.artifact", "a train that carries freight"),
        _synset("o1", ["raindrop"], ROOT_WNID, "noun.object", "a drop of rain"),
        _synset("p1", ["leaf"], ROOT_WNID, "noun.plant", "a green leaf of a plant"),
        _synset("w1", ["wind"], ROOT_WNID, "noun.phenomenon", "air moving over the earth"),
    ]
    index: dict[str, list[str]] = {}
    for s in synsets:
        for lemma in s.lemmas:
            index.setdefault(lemma.lower(), []).append(s.wnid)
    for s in synsets:
        s.name = f"{s.lemmas[0].lower()}.n.01"
    nouns = WordNetNouns(synsets={s.wnid: s for s in synsets}, lemma_index=index)
    # This hierarchy is 3 levels deep: no context floor.
    return Resolver(
        nouns,
        embedder=BagOfWords(),
        overrides=Overrides(names={}, senses={}),
        weights=ScoreWeights(context_floor=0.0),
    )


def _reading(g) -> str:  # the role term the grounding records
    roles = [k for k in APPROXIMATE_ROLES.values() if k in g.reasons]
    assert len(roles) == 1, g.reasons
    return roles[0]


def test_a_body_part_head_yields_to_its_modifier(small: Resolver) -> None:
    g = small.resolve_name("monkey face")
    assert g.wnid == "a2" and g.approximate and g.method == "embedding"
    assert _reading(g) == "modifier_phrase"
    assert small.resolve_name("face").wnid == "b1"  # the lemma itself is untouched


def test_the_head_wins_over_its_context_also_in_the_plural(small: Resolver) -> None:
    g = small.resolve_name("umbrellas with rain drops")
    assert g.wnid == "t2" and g.approximate and _reading(g) == "head_phrase"
    assert "o1" in {w for w, _, _ in g.alternatives}  # the raindrop was a candidate
    leaf = small.resolve_name("leaf fluttering in wind")
    assert leaf.wnid == "p1" and _reading(leaf) == "head_phrase"


def test_modifiers_may_name_a_kind_of_the_head(small: Resolver) -> None:
    g = small.resolve_name("high-speed train")
    assert g.wnid == "t4" and _reading(g) == "narrower"
    assert g.reasons["runner_up_head_phrase"] > g.reasons["narrower"]  # it won on meaning
    # no modifier, no kind: the context says nothing about which train
    assert small.resolve_name("train in wind").wnid == "t3"


def test_a_kind_must_match_clearly_better_than_the_head(small: Resolver) -> None:
    strict = Resolver(
        small.nouns,
        embedder=BagOfWords(),
        overrides=Overrides(names={}, senses={}),
        weights=ScoreWeights(context_floor=0.0, approx_narrower_margin=2.0, approx_defined=0.0),
    )
    assert strict.resolve_name("high-speed train").wnid == "t3"  # (t4's definition holds
    # "high speed": without the definition term, only the meaning margin admits a kind)


def test_a_kind_whose_definition_holds_the_modifiers_is_read_without_embeddings() -> None:
    """ "two-hump camel": the kind of camel whose definition says "two-humped" (and not the
    one-humped one, which holds only one of the two words), even with no text encoder to
    compare meanings; the term is recorded. Without the term, the camel itself."""
    synsets = [
        _synset(ROOT_WNID, ["entity"], "", "noun.Tops", "that which exists"),
        _synset("a1", ["animal"], ROOT_WNID, "noun.animal", "a living organism"),
        _synset("c1", ["camel"], "a1", "noun.animal", "cud-chewing mammal of the deserts"),
        _synset("c2", ["arabian_camel"], "c1", "noun.animal", "one-humped camel of Africa"),
        _synset("c3", ["bactrian_camel"], "c1", "noun.animal", "two-humped camel of Asia"),
    ]
    index = {s.lemmas[0]: [s.wnid] for s in synsets}
    for s in synsets:
        s.name = f"{s.lemmas[0]}.n.01"
    nouns = WordNetNouns(synsets={s.wnid: s for s in synsets}, lemma_index=index)

    def resolver(weights: ScoreWeights) -> Resolver:
        return Resolver(nouns, embedder=None, overrides=Overrides(names={}, senses={}),
                        weights=weights)  # fmt: skip

    g = resolver(ScoreWeights(context_floor=0.0)).resolve_name("two-hump camel")
    assert (g.wnid, _reading(g), g.method) == ("c3", "narrower", "fuzzy")
    assert g.reasons["defined"] == 1.0 and "c2" not in {w for w, _, _ in g.alternatives}
    plain = resolver(ScoreWeights(context_floor=0.0, approx_defined=0.0))
    with pytest.raises(InvalidArgument, match="bactrian camel"):  # no meaning to go by
        plain.resolve_name("two-hump camel")


def test_hub_coverage_does_not_trade_one_reading_for_another(small: Resolver) -> None:
    # The hub covers only the plain train: coverage may choose among one phrase's senses, but
    # must not swap the reading the name's words chose ("pool 8 ball" is no generic ball).
    def covers_train(wnids: list[str]) -> dict[str, float]:
        return {w: 1.0 if w == "t3" else 0.0 for w in wnids}

    g = small.resolve_task(["high-speed train", "monkey"], sense_coverage=covers_train)[0]
    assert g.wnid == "t4" and not g.hub_preferred and g.coverage["t3"] == 1.0


def test_names_with_no_plausible_concept_are_refused(small: Resolver) -> None:
    for name in ("xqzvbnm qwrtp", "with the of"):
        with pytest.raises(InvalidArgument, match="closest lemmas"):
            small.resolve_name(name)
    with pytest.raises(InvalidArgument, match="is not a WordNet noun"):
        small.resolve_name("monkey face", allow_approximate=False)


# -- the real WordNet ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resolver() -> Resolver:
    r = default_resolver(Settings.from_env())
    assert r.embeddings_available
    return r


@pytest.mark.parametrize(
    ("name", "wnid", "reading"),
    [
        ("cow face", "n02403454", "modifier_phrase"),  # cow.n.01
        ("frog head", "n01639765", "modifier_phrase"),  # frog.n.01
        ("dog with a bone", "n02084071", "head_phrase"),  # dog.n.01
        ("bicycles with baskets", "n02834778", "head_phrase"),  # bicycle.n.01
        ("flag fluttering in wind", "n03354903", "head_phrase"),  # flag.n.01
        ("teapots not used", "n04398044", "head_phrase"),  # teapot.n.01
        ("flower playing cards", "n03963982", "head_phrase"),  # playing_card.n.01
        ("a photo of a sailboat on a lake", "n04128499", "head_phrase"),  # sailboat.n.01
        ("two-hump camel", "n02437482", "narrower"),  # bactrian_camel.n.01, "two-humped"
        ("one-piece swimsuit", "n03710721", "narrower"),  # maillot.n.01, "one-piece"
    ],
)
def test_phrases_on_the_real_wordnet(resolver: Resolver, name: str, wnid: str, reading: str):
    g = resolver.resolve_name(name)
    assert (g.wnid, g.approximate, _reading(g)) == (wnid, True, reading), g.concept_name


def test_phrases_in_a_task_keep_their_reasons(resolver: Resolver) -> None:
    gs = resolver.resolve_task(["frog head", "umbrella with rain drops", "banana"])
    assert [g.approximate for g in gs] == [True, True, False]
    assert all(_reading(g) for g in gs[:2])


def test_explain_selection_says_how_the_name_was_read(resolver: Resolver) -> None:
    from services.plan_messages import _grounding_reason

    g = resolver.resolve_name("frog head")
    planned = {
        "name": "frog head",
        "concept": {"wnid": g.wnid, "name": g.concept_name},
        "grounding": json.loads(json.dumps(g.to_dict())),
    }
    text = _grounding_reason(planned)
    assert "approximate: read from a word qualifying the name's head" in text


def test_lemmas_spelt_alike_up_to_punctuation_are_one_word(resolver: Resolver) -> None:
    # CLDR writes "jack-o-lantern"; WordNet has that spelling only for a fungus, and the
    # carved pumpkin as "jack-o'-lantern": both are candidates, the score chooses.
    assert resolver._spellings("jack-o-lantern") == ["jack-o-lantern", "jack-o'-lantern"]
    g = resolver.resolve_name("jack-o-lantern")
    assert g.wnid == "n03590841" and not g.approximate  # jack-o'-lantern.n.02
    assert "n13005329" in {w for w, _, _ in g.alternatives}  # jack-o-lantern_fungus.n.01
