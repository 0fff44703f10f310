"""mllgraph.ground.resolve and its parts (words, overrides, records, approximate): grounding
class names to WordNet noun concepts (no Neo4j).

Every expected wnid below was checked against /usr/share/wordnet/data.noun (and the override
table is checked against WordNet by `test_override_table_matches_wordnet`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mllgraph.errors import InvalidArgument, NotFound
from mllgraph.graph.wordnet import ROOT_WNID, Synset, WordNetNouns
from mllgraph.ground.overrides import Overrides, load_override_file
from mllgraph.ground.records import METHODS, Grounding, ScoreWeights
from mllgraph.ground.resolve import Resolver, default_resolver
from mllgraph.ground.words import normalise_name
from mllgraph.plan.document import MAX_CLASSES
from mllgraph.settings import Settings

FASHION_MNIST = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_WNIDS = {
    "T-shirt/top": "n03595614",  # jersey.n.03 (jersey, T-shirt, tee_shirt)
    "Trouser": "n04489008",  # trouser.n.01 (trouser, pant)
    "Pullover": "n04021028",  # pullover.n.01 (pullover, slipover)
    "Dress": "n03236735",  # dress.n.01 (dress, frock)
    "Coat": "n03057021",  # coat.n.01, the outer garment
    "Sandal": "n04133789",  # sandal.n.01
    "Shirt": "n04197391",  # shirt.n.01
    "Sneaker": "n03472535",  # gym_shoe.n.01 (gym_shoe, sneaker, tennis_shoe)
    "Bag": "n02773037",  # bag.n.01, the generic container (parent of purse, backpack)
    "Ankle boot": "n02872752",  # boot.n.01 (WordNet has no ankle boot)
}
BOOT = "n02872752"
SNEAKER = "n03472535"
T_SHIRT = "n03595614"
HANDBAG = "n02774152"  # bag.n.04 (bag, handbag, pocketbook, purse)
SWEATER = "n04370048"
PULLOVER = "n04021028"
SWEATSHIRT = "n04370456"
CRANE_BIRD = "n02012849"  # crane.n.05
CRANE_MACHINE = "n03126707"  # crane.n.04
BAT_CLUB = "n02806379"  # bat.n.05, 'a club used for hitting a ball in various games'
BAT_ANIMAL = "n02139199"  # bat.n.01
CRICKET_BAT = "n03132076"  # cricket_bat.n.01 (cricket_bat, bat)
COMPUTER_MOUSE = "n03793489"  # mouse.n.04
MOUSE_ANIMAL = "n02330245"  # mouse.n.01
INJECTION = '"}) MATCH (n) DETACH DELETE n //'


@pytest.fixture(scope="module")
def resolver() -> Resolver:
    """The real resolver: WordNet morphology and MiniLM, loaded once for the module."""
    r = default_resolver(Settings.from_env())
    assert r.embeddings_available, "the MiniLM embedder must load in tests"
    r.warm_up()
    return r


def _is_a(resolver: Resolver, wnid: str, ancestor: str) -> bool:
    return any(a == ancestor for a, _ in resolver._ancestors(wnid))


# -- the override table ------------------------------------------------------------------------


def test_override_table_matches_wordnet(resolver: Resolver) -> None:
    data = load_override_file()
    assert data["names"] and data["senses"]
    for section in ("names", "senses"):
        for key, entry in data[section].items():
            synset = resolver.nouns.synsets.get(entry["wnid"])
            assert synset is not None, (section, key, entry)
            assert synset.name == entry["concept"], (section, key, entry, synset.name)
            assert entry["why"].strip()
    for key in data["names"]:
        assert normalise_name(key) == key  # keys are written in normalised form


# -- Fashion-MNIST and friends -----------------------------------------------------------------


@pytest.mark.parametrize("name", FASHION_MNIST)
def test_fashion_mnist_names_alone(resolver: Resolver, name: str) -> None:
    g = resolver.resolve_name(name, allow_approximate=False)
    assert g.wnid == FASHION_WNIDS[name], g
    assert not g.approximate and not g.pinned
    assert g.concept_name == resolver.nouns.synsets[g.wnid].name


def test_fashion_mnist_task(resolver: Resolver) -> None:
    gs = resolver.resolve_task(FASHION_MNIST)
    assert [g.wnid for g in gs] == [FASHION_WNIDS[n] for n in FASHION_MNIST]
    assert [g.name for g in gs] == FASHION_MNIST
    by_name = {g.name: g for g in gs}
    assert by_name["Ankle boot"].method == "override"
    assert by_name["Sandal"].method == "lemma" and not by_name["Sandal"].ambiguous
    assert by_name["Bag"].ambiguous and by_name["Bag"].method == "context"
    assert all(g.method in METHODS and 0.0 < g.score <= 1.0 for g in gs)


@pytest.mark.parametrize(
    ("name", "wnid"),
    [
        ("sneakers", SNEAKER),
        ("trousers", "n04489008"),
        ("handbag", HANDBAG),
        ("handbags", HANDBAG),
        ("tee shirt", T_SHIRT),
        ("boots", BOOT),
        ("ankle boots", BOOT),
        ("ankle-boots", BOOT),  # the override table's key, hyphenated
        ("Ankle-Boot", BOOT),
        ("footwear", "n03380867"),  # footwear.n.02, the parent of boot and shoe
        ("garment", "n03419014"),
        ("bag", "n02773037"),
        ("shoes", "n04199027"),  # shoe.n.01, not the lemma 'shoes' (place.n.06)
        ("pants", "n04489008"),
        ("top", "n04453666"),  # the garment, by the override table's preferred sense
        ("mice", MOUSE_ANIMAL),  # nltk's irregular plural
        # apparel.n.01 holds only workwear; the garments sit under clothing.n.01 (override table)
        ("apparel", "n03051540"),
        ("Clothes", "n03051540"),
    ],
)
def test_plurals_and_synonyms(resolver: Resolver, name: str, wnid: str) -> None:
    g = resolver.resolve_name(name, allow_approximate=False)
    assert g.wnid == wnid, g
    assert not g.approximate


def test_trainers_are_shoes_among_shoes_and_people_among_people(resolver: Resolver) -> None:
    # WordNet 3.0 lacks the British sports-shoe sense; the override table adds it as a prior.
    shoes = resolver.resolve_task(["trainers", "sandal", "ankle boot"])
    assert shoes[0].wnid == SNEAKER and shoes[0].method == "context"
    people = resolver.resolve_task(["trainer", "athlete", "referee"])
    assert people[0].concept_name == "trainer.n.01"


def test_morphology_method_is_reported(resolver: Resolver) -> None:
    g = resolver.resolve_name("sandals")
    assert g.wnid == "n04133789" and g.method == "morphology" and not g.approximate


@pytest.mark.parametrize(
    "name", ["T-shirt", "t-shirt", "T_SHIRT", "  t   shirt ", "tshirt", "T-Shirts", "tee-shirt"]
)
def test_spelling_variants(resolver: Resolver, name: str) -> None:
    g = resolver.resolve_name(name, allow_approximate=False)
    assert g.wnid == T_SHIRT and not g.approximate


def test_unicode_quotes_and_accents_are_fine(resolver: Resolver) -> None:
    assert resolver.resolve_name("Café").wnid == resolver.resolve_name("cafe").wnid
    assert resolver.resolve_name("jack-o\u2019-lantern").concept_name.startswith("jack-o'")
    gs = resolver.resolve_task(['"sandal"', "‘gym shoe’", "Bäg"])
    assert [g.wnid for g in gs] == ["n04133789", SNEAKER, "n02773037"]


# -- alternatives ------------------------------------------------------------------------------


def test_slash_alternatives(resolver: Resolver) -> None:
    # 'purse' and 'handbag' share bag.n.04: the agreeing sense wins over purse.n.01 (money).
    g = resolver.resolve_name("handbag/purse")
    assert g.wnid == HANDBAG and g.method in ("lemma", "embedding")
    # an alternative that grounds nowhere costs nothing
    assert resolver.resolve_name("t-shirt/xqzvbnm").wnid == T_SHIRT


def test_comma_alternatives_prefer_the_sense_consistent_with_all(resolver: Resolver) -> None:
    # A pullover is a sweater: pullover.n.01 satisfies both names, sweater.n.01 only one.
    g = resolver.resolve_name("sweater, pullover")
    assert g.wnid == PULLOVER and g.ambiguous
    assert SWEATER in [w for w, _, _ in g.alternatives]
    # ImageNet-style synonym lists
    assert resolver.resolve_name("tench, Tinca tinca").wnid == "n01440764"
    assert resolver.resolve_name("maillot, tank suit").wnid == "n03710721"


def test_qualifiers_select_the_sense(resolver: Resolver) -> None:
    assert resolver.resolve_name("crane (bird)").wnid == CRANE_BIRD
    assert resolver.resolve_name("crane (machine)").wnid == CRANE_MACHINE
    bird = resolver.resolve_name("crane bird")
    assert bird.wnid == CRANE_BIRD and not bird.approximate


# -- context -----------------------------------------------------------------------------------


def test_crane_among_birds_is_the_bird(resolver: Resolver) -> None:
    crane, heron, stork = resolver.resolve_task(["crane", "heron", "stork"])
    assert crane.wnid == CRANE_BIRD and crane.method == "context" and crane.ambiguous
    assert heron.wnid == "n02008041" and stork.wnid == "n02002075"
    assert CRANE_MACHINE in [w for w, _, _ in crane.alternatives]


def test_crane_among_machines_is_the_machine(resolver: Resolver) -> None:
    assert resolver.resolve_task(["crane", "bulldozer", "forklift"])[0].wnid == CRANE_MACHINE


def test_bat_among_baseball_gear_is_the_club(resolver: Resolver) -> None:
    bat = resolver.resolve_task(["bat", "baseball", "glove"])[0]
    # WordNet files cricket_bat.n.01 under sports_equipment (with baseball and baseball_glove)
    # but bat.n.05 under club/stick/implement, so context favours the cricket bat; either is
    # the sports sense, the animal is not.
    assert bat.wnid in (CRICKET_BAT, BAT_CLUB), bat
    assert bat.method == "context"
    assert resolver.resolve_task(["bat", "owl", "moth"])[0].wnid == BAT_ANIMAL


def test_mouse_follows_its_neighbours(resolver: Resolver) -> None:
    assert resolver.resolve_task(["mouse", "keyboard", "monitor"])[0].wnid == COMPUTER_MOUSE
    assert resolver.resolve_task(["mouse", "rat", "hamster"])[0].wnid == MOUSE_ANIMAL


# -- pinning -----------------------------------------------------------------------------------


def test_pinned_wnid_wins(resolver: Resolver) -> None:
    gs = resolver.resolve_task(["crane", "heron", "stork"], pinned={0: CRANE_MACHINE})
    assert gs[0].wnid == CRANE_MACHINE and gs[0].pinned and gs[0].method == "pinned"
    assert gs[0].score == 1.0
    assert not gs[1].pinned
    # an nltk-style name is accepted too
    g = resolver.resolve_task(["crane", "heron"], pinned={0: "crane.n.04"})[0]
    assert g.wnid == CRANE_MACHINE and g.pinned


def test_unknown_pinned_wnid_is_not_found(resolver: Resolver) -> None:
    with pytest.raises(NotFound, match="n99999999"):
        resolver.resolve_task(["crane", "heron"], pinned={1: "n99999999"})
    with pytest.raises(InvalidArgument, match="out of range"):
        resolver.resolve_task(["crane", "heron"], pinned={2: CRANE_BIRD})


# -- names WordNet lacks -----------------------------------------------------------------------


def test_misspelling_is_approximate(resolver: Resolver) -> None:
    g = resolver.resolve_name("sneakerz")
    assert g.wnid == SNEAKER and g.approximate and g.method == "embedding"
    gs = resolver.resolve_task(["sneakerz", "sandal"])
    assert gs[0].wnid == SNEAKER and gs[0].approximate and not gs[1].approximate


def test_descriptive_name_finds_its_head(resolver: Resolver) -> None:
    g = resolver.resolve_name("hoodie sweatshirt thing")
    assert g.wnid == SWEATSHIRT and g.approximate
    assert resolver.resolve_name("bucket hat").wnid == "n03497657"  # hat.n.01


def test_refusing_approximation_lists_close_lemmas(resolver: Resolver) -> None:
    with pytest.raises(InvalidArgument) as err:
        resolver.resolve_name("sneakerz", allow_approximate=False)
    message = str(err.value)
    assert "'sneakerz'" in message and "sneaker" in message
    listed = message.split("closest lemmas: ")[1].split(", ")
    assert len(listed) == 5


def test_gibberish_cannot_be_grounded(resolver: Resolver) -> None:
    for allow in (False, True):
        with pytest.raises(InvalidArgument) as err:
            resolver.resolve_name("xqzvbnm", allow_approximate=allow)
        assert "'xqzvbnm'" in str(err.value)
        assert len(str(err.value).split("closest lemmas: ")[1].split(", ")) == 5
    with pytest.raises(InvalidArgument, match=r"class 1 \('xqzvbnm'\)"):
        resolver.resolve_task(["sandal", "xqzvbnm"])


def test_cypher_text_is_harmless(resolver: Resolver) -> None:
    for call in (
        lambda: [resolver.resolve_name(INJECTION)],
        lambda: resolver.resolve_task(["sandal", INJECTION]),
    ):
        try:
            gs = call()
        except InvalidArgument as e:
            assert "closest lemmas" in str(e)
        else:
            g = gs[-1]
            assert g.approximate and g.wnid in resolver.nouns.synsets


# -- task validation ---------------------------------------------------------------------------


def test_task_size_limits(resolver: Resolver) -> None:
    with pytest.raises(InvalidArgument, match="no class names"):
        resolver.resolve_task([])
    with pytest.raises(InvalidArgument, match="at least 2"):
        resolver.resolve_task(["sandal"])
    with pytest.raises(InvalidArgument, match="1001 classes"):
        resolver.resolve_task(["sandal"] * (MAX_CLASSES + 1))
    with pytest.raises(InvalidArgument, match="list of strings"):
        resolver.resolve_task("sandal, shirt")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("names", "pattern"),
    [
        (["sandal", ""], r"class 1 \(''\).*empty"),
        (["sandal", "   "], r"class 1 \('   '\).*empty"),
        (["shi\x00rt", "sandal"], r"class 0 .*control characters"),
        (["sandal", "shirt", "co\nat"], r"class 2 .*control characters"),
        (["sandal", 3], r"class 1: a class name must be a string"),
        (["sandal", "x" * 300], r"class 1 .*300 characters"),
    ],
)
def test_bad_names_are_named(resolver: Resolver, names: list[object], pattern: str) -> None:
    with pytest.raises(InvalidArgument, match=pattern):
        resolver.resolve_task(names)  # type: ignore[arg-type]


def test_bad_single_name(resolver: Resolver) -> None:
    with pytest.raises(InvalidArgument, match="empty"):
        resolver.resolve_name(" ")
    with pytest.raises(InvalidArgument, match="control characters"):
        resolver.resolve_name("bag\x07")


def test_two_names_on_one_concept(resolver: Resolver) -> None:
    with pytest.raises(InvalidArgument) as err:
        resolver.resolve_task(["sandal", "sneaker", "gym shoe"])
    message = str(err.value)
    assert "class 1 ('sneaker')" in message and "class 2 ('gym shoe')" in message
    assert SNEAKER in message and "gym_shoe.n.01" in message
    with pytest.raises(InvalidArgument, match="both ground to"):
        resolver.resolve_task(["crane", "heron"], pinned={0: "n02008041"})


# -- the answer --------------------------------------------------------------------------------


def test_grounding_to_dict_is_json(resolver: Resolver) -> None:
    g = resolver.resolve_task(["crane", "heron", "stork"])[0]
    d = g.to_dict()
    assert set(d) == {
        "name",
        "wnid",
        "concept_name",
        "score",
        "ambiguous",
        "approximate",
        "pinned",
        "alternatives",
        "method",
        "coverage",
        "hub_preferred",
        "reasons",
    }
    assert d["alternatives"][0].keys() == {"wnid", "concept_name", "score"}
    assert json.loads(json.dumps(d)) == d
    assert isinstance(g, Grounding)


def test_deterministic(resolver: Resolver) -> None:
    names = [*FASHION_MNIST, "crane", "mouse", "bat", "laptopp"]
    first = [g.to_dict() for g in resolver.resolve_task(names)]
    assert [g.to_dict() for g in resolver.resolve_task(names)] == first
    fresh = Resolver(
        resolver.nouns,
        morphology=resolver._morphology,
        embedder=resolver._embedder,
        tag_counts=resolver.tag_counts,
    )
    again = [g.to_dict() for g in fresh.resolve_task(names)]
    assert [(d["wnid"], d["method"]) for d in again] == [(d["wnid"], d["method"]) for d in first]
    for a, b in zip(again, first, strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_warm_task_encodes_nothing_again(resolver: Resolver, monkeypatch) -> None:
    # What makes a repeated task fast (timings are benchmarks' business, not tests'): the
    # second grounding of the same names reuses every text embedding.
    first = [g.to_dict() for g in resolver.resolve_task(FASHION_MNIST)]
    calls: list[int] = []
    embedder = resolver._embedder
    encode = embedder.encode
    monkeypatch.setattr(embedder, "encode", lambda texts: calls.append(len(texts)) or encode(texts))
    assert [g.to_dict() for g in resolver.resolve_task(FASHION_MNIST)] == first
    assert sum(calls) == 0


# -- without embeddings, and with a lexicon of one's own ----------------------------------------


class _BrokenEmbedder:
    def encode(self, texts: list[str]) -> np.ndarray:
        raise RuntimeError("no model here")


def test_default_resolver_loads_no_encoder_and_no_nltk_until_needed() -> None:
    # A stored plan's names are unambiguous: building the shared resolver and grounding such
    # a name must not load nltk's WordNet reader or the sentence encoder (tens of seconds).
    code = (
        "import sys\n"
        "from mllgraph.ground.resolve import default_resolver\n"
        "from mllgraph.settings import Settings\n"
        "r = default_resolver(Settings.from_env())\n"
        "g = r.resolve_name('sandals')\n"
        "heavy = ('nltk', 'torch', 'sentence_transformers', 'transformers')\n"
        "print(g.wnid, g.method, [m for m in heavy if m in sys.modules], r.embeddings_available)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [FASHION_WNIDS["Sandal"], "morphology", "[]", "True"]


def test_encode_texts_drops_an_encoder_that_fails(resolver: Resolver) -> None:
    lexical = Resolver(resolver.nouns, morphology=resolver._morphology, embedder=_BrokenEmbedder())
    assert lexical.embeddings_available  # loaded lazily: not known to fail yet
    assert lexical.encode_texts(["a sandal"]) is None
    assert not lexical.embeddings_available  # not tried again on every call


def test_lexical_only_when_the_embedder_fails(
    resolver: Resolver, caplog: pytest.LogCaptureFixture
) -> None:
    lexical = Resolver(resolver.nouns, morphology=resolver._morphology, embedder=_BrokenEmbedder())
    with caplog.at_level("WARNING", logger="mllgraph.ground.resolve"):
        gs = lexical.resolve_task(FASHION_MNIST)
    assert "embedder unavailable" in caplog.text
    assert not lexical.embeddings_available
    assert [g.wnid for g in gs] == [FASHION_WNIDS[n] for n in FASHION_MNIST]
    bag = gs[FASHION_MNIST.index("Bag")]
    assert bag.ambiguous and bag.score <= 0.5  # lexical-only confidence is marked down
    crane = lexical.resolve_task(["crane", "heron", "stork"])[0]
    assert crane.wnid == CRANE_BIRD
    g = lexical.resolve_name("sneakerz")
    assert g.wnid == SNEAKER and g.approximate and g.method == "fuzzy"


def _synset(wnid: str, lemmas: list[str], parents: list[str], lexname: str) -> Synset:
    return Synset(wnid, "", lemmas, f"a {lemmas[0]}", lexname, hypernyms=parents)


@pytest.fixture
def tiny() -> Iterator[WordNetNouns]:
    """A hand-made lexicon: two 'crane' senses, a bird family and a machine family."""
    synsets = [
        _synset(ROOT_WNID, ["entity"], [], "noun.Tops"),
        _synset("n1", ["animal"], [ROOT_WNID], "noun.animal"),
        _synset("n2", ["bird"], ["n1"], "noun.animal"),
        _synset("n3", ["wading_bird"], ["n2"], "noun.animal"),
        _synset("n4", ["crane"], ["n3"], "noun.animal"),
        _synset("n5", ["heron"], ["n3"], "noun.animal"),
        _synset("n6", ["machine"], [ROOT_WNID], "noun.artifact"),
        _synset("n7", ["crane", "derrick_crane"], ["n6"], "noun.artifact"),
        _synset("n8", ["forklift"], ["n6"], "noun.artifact"),
        _synset("n9", ["T-shirt", "tee_shirt"], [ROOT_WNID], "noun.artifact"),
    ]
    index: dict[str, list[str]] = {}
    for s in synsets:
        for lemma in s.lemmas:
            index.setdefault(lemma.lower(), []).append(s.wnid)
    index["crane"] = ["n7", "n4"]  # the machine is the first sense here
    for s in synsets:
        first = s.lemmas[0].lower()
        s.name = f"{first}.n.{index[first].index(s.wnid) + 1:02d}"
    yield WordNetNouns(synsets={s.wnid: s for s in synsets}, lemma_index=index)


def test_pure_logic_on_a_custom_lexicon(tiny: WordNetNouns) -> None:
    # The default context floor is set for WordNet's depths; this hierarchy is 4 levels deep.
    weights = ScoreWeights(context_floor=0.0)
    r = Resolver(tiny, overrides=Overrides(names={}, senses={}), weights=weights)
    assert r.resolve_name("crane").wnid == "n7"  # first sense, no context
    assert r.resolve_task(["crane", "heron"])[0].wnid == "n4"
    assert r.resolve_task(["crane", "forklift"])[0].wnid == "n7"
    assert r.resolve_name("cranes").wnid == "n7"  # suffix rules without nltk
    assert r.resolve_name("tshirts").wnid == "n9"
    assert r.resolve_task(["crane", "heron"], pinned={0: "crane.n.01"})[0].wnid == "n7"
    # a concept added after the resolver was built is found (indexes follow the lexicon)
    tiny.synsets["u1"] = Synset("u1", "hoodie.n.01", ["hoodie"], "a hood", "noun.artifact", ["n9"])
    tiny.lemma_index["hoodie"] = ["u1"]
    g = r.resolve_name("hoodies")
    assert g.wnid == "u1" and not g.approximate
    assert r.resolve_task(["hoodie", "crane"], pinned={0: "u1"})[0].pinned


# -- grounding that knows the hub --------------------------------------------------------------

SWEATER = "n04370048"  # sweater.n.01, lemmas sweater and jumper
JUMPER_PINAFORE = "n03604763"  # jumper.n.04, under coverall
GARMENTS = ["T-shirt", "trousers", "jumper", "dress", "coat"]


def _covering(*wnids: str):
    calls: list[list[str]] = []

    def coverage(candidates: list[str]) -> dict[str, float]:
        calls.append(candidates)
        return {w: 1.0 if w in wnids else 0.0 for w in candidates}

    coverage.calls = calls  # type: ignore[attr-defined]
    return coverage


def test_hub_coverage_decides_between_senses_that_fit(resolver: Resolver) -> None:
    plain = resolver.resolve_task(GARMENTS)[2]
    assert plain.wnid != SWEATER and not plain.hub_preferred
    coverage = _covering(SWEATER)
    g = resolver.resolve_task(GARMENTS, sense_coverage=coverage)[2]
    assert g.wnid == SWEATER and g.hub_preferred
    assert g.coverage[SWEATER] == 1.0 and g.coverage[plain.wnid] == 0.0
    assert plain.wnid in [a[0] for a in g.alternatives]  # the sense it beat stays listed
    assert SWEATER in coverage.calls[0]  # type: ignore[attr-defined]


def test_hub_coverage_never_overrides_the_context(resolver: Resolver) -> None:
    # The hub covers only the sense that does not fit the task: the context still decides.
    assert (
        resolver.resolve_task(["bat", "owl", "moth"], sense_coverage=_covering(BAT_CLUB))[0].wnid
        == BAT_ANIMAL
    )
    assert (
        resolver.resolve_task(
            ["mouse", "keyboard", "monitor"], sense_coverage=_covering(MOUSE_ANIMAL)
        )[0].wnid
        == COMPUTER_MOUSE
    )
    crane = resolver.resolve_task(
        ["crane", "heron", "stork"], sense_coverage=_covering(CRANE_MACHINE)
    )[0]
    assert crane.wnid == CRANE_BIRD and not crane.hub_preferred


def test_hub_coverage_keeps_a_covered_choice_and_skips_unambiguous_names(
    resolver: Resolver,
) -> None:
    coverage = _covering(CRANE_BIRD)
    gs = resolver.resolve_task(["crane", "heron", "stork"], sense_coverage=coverage)
    assert gs[0].wnid == CRANE_BIRD and not gs[0].hub_preferred
    assert gs[0].coverage[CRANE_BIRD] == 1.0
    # Only ambiguous names' senses are asked about, in one call.
    assert len(coverage.calls) == 1  # type: ignore[attr-defined]
