"""WordNet's sense frequencies as grounding's prior (`graph.wordnet.noun_tag_counts`,
`Resolver._sense_priors`), the cases of issue #23, the Fashion suite's groundings, and a
small run of `mllgraph bench grounding` (mllgraph.eval.bench.grounding). No Neo4j.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mllgraph.errors import FailedPrecondition, InvalidArgument
from mllgraph.eval.bench import grounding as bench
from mllgraph.eval.tasks import load_suite
from mllgraph.graph.wordnet import ROOT_WNID, Synset, WordNetNouns, noun_tag_counts
from mllgraph.ground.overrides import Overrides
from mllgraph.ground.resolve import Resolver, default_resolver
from mllgraph.settings import Settings

WORDNET = Path("/usr/share/wordnet")
COFFEE_DRINK = "n07929519"  # coffee.n.01, 46 tags in index.sense
COFFEE_SHRUB = "n12662772"  # coffee.n.02, none
BAT_ANIMAL, BAT_CLUB, CRICKET_BAT = "n02139199", "n02806379", "n03132076"
MOUSE_ANIMAL, COMPUTER_MOUSE = "n02330245", "n03793489"
PINNED = Path(__file__).parent / "data" / "fashion_suite_groundings.json"


@pytest.fixture(scope="module")
def resolver() -> Resolver:
    r = default_resolver(Settings.from_env())
    assert r.embeddings_available and r.tag_counts
    return r


# -- the tag counts ----------------------------------------------------------------------------


def test_tag_counts_of_the_real_sense_index() -> None:
    counts = noun_tag_counts(WORDNET)
    assert counts["coffee"][COFFEE_DRINK] == 46 and counts["coffee"][COFFEE_SHRUB] == 0
    assert counts["mouse"][MOUSE_ANIMAL] == 14 and counts["mouse"][COMPUTER_MOUSE] == 0
    assert all(w.startswith("n") for senses in counts.values() for w in senses)


def test_tag_counts_parse_nouns_only_and_name_a_bad_line(tmp_path: Path) -> None:
    (tmp_path / "index.sense").write_text(
        "coffee%1:13:00:: 07929519 1 46\n"
        "coffee%1:20:00:: 12662772 2 0\n"
        "run%2:38:00:: 01926311 1 90\n"  # a verb: skipped
        "Crane%1:05:00:: 02012849 5 3\n"  # lemma keys are lower-cased
    )
    assert noun_tag_counts(tmp_path) == {
        "coffee": {"n07929519": 46, "n12662772": 0},
        "crane": {"n02012849": 3},
    }
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "index.sense").write_text("coffee%1:13:00:: 07929519 1 many\n")
    with pytest.raises(FailedPrecondition, match="line 1"):
        noun_tag_counts(broken)
    with pytest.raises(FailedPrecondition, match="wordnet-sense-index"):
        noun_tag_counts(tmp_path / "nowhere")


def _tiny() -> WordNetNouns:
    def synset(wnid: str, lemma: str, parent: str, lexname: str) -> Synset:
        return Synset(wnid, "", [lemma], f"a {lemma}", lexname, hypernyms=[parent])

    synsets = [
        Synset(ROOT_WNID, "entity.n.01", ["entity"], "all", "noun.Tops"),
        synset("n1", "food", ROOT_WNID, "noun.food"),
        synset("n2", "plant", ROOT_WNID, "noun.plant"),
        synset("n3", "brew", "n1", "noun.food"),  # 'brew': the shrub is listed first here
        synset("n4", "brew", "n2", "noun.food"),  # same file: only the prior differs
        synset("n5", "sprout", "n2", "noun.plant"),
        synset("n6", "sprout", "n1", "noun.food"),
        synset("n7", "sprout", "n1", "noun.food"),
    ]
    index = {"food": ["n1"], "plant": ["n2"], "brew": ["n4", "n3"], "sprout": ["n5", "n6", "n7"]}
    for s in synsets[1:]:
        s.name = f"{s.lemmas[0]}.n.{index[s.lemmas[0]].index(s.wnid) + 1:02d}"
    return WordNetNouns(synsets={s.wnid: s for s in synsets}, lemma_index=index)


def test_smoothed_prior_follows_the_counts_and_keeps_untagged_senses() -> None:
    counts = {"brew": {"n4": 0, "n3": 40}}
    r = Resolver(_tiny(), overrides=Overrides(names={}, senses={}), tag_counts=counts)
    alpha = r.weights.prior_alpha
    priors = r._sense_priors("brew")
    assert [w for w, _, _ in priors] == ["n4", "n3"]  # WordNet's order is kept
    total = 40 + alpha + alpha / 2
    assert priors[0][2] == pytest.approx(alpha / total)  # untagged, first: alpha / 1
    assert priors[1][2] == pytest.approx((40 + alpha / 2) / total)
    assert sum(p for _, _, p in priors) == pytest.approx(1.0)
    # No sense of the lemma tagged: the pseudo-counts alone, never zero, and WordNet's order
    # (by tag counts, so saying little here) counts as `prior_untagged_order` says: not at all
    # by default, fully at 1.
    untagged = [p for _, _, p in r._sense_priors("sprout")]
    assert untagged == pytest.approx([1 / 3] * 3)
    r.weights = dataclasses.replace(r.weights, prior_untagged_order=1.0)
    ordered = [p for _, _, p in r._sense_priors("sprout")]
    assert ordered[0] > ordered[1] > ordered[2] > 0
    assert sum(ordered) == pytest.approx(1.0)
    # The tagged sense wins a name alone although WordNet lists it second.
    g = r.resolve_name("brew")
    assert g.wnid == "n3" and g.reasons["tag_count"] == 40
    assert g.reasons["prior_p"] == pytest.approx(priors[1][2], abs=1e-5)
    assert g.reasons["runner_up_tag_count"] == 0
    # Without counts, the first listed sense wins.
    plain = Resolver(_tiny(), overrides=Overrides(names={}, senses={}))
    assert plain.resolve_name("brew").wnid == "n4"


def test_an_override_sense_is_certain_in_the_prior() -> None:
    counts = {"brew": {"n4": 0, "n3": 40}}
    overrides = Overrides(names={}, senses={"brew": "n4"})
    r = Resolver(_tiny(), overrides=overrides, tag_counts=counts)
    priors = {w: p for w, _, p in r._sense_priors("brew")}
    assert priors["n4"] == 1.0 and 0.0 < priors["n3"] < 1.0
    assert r.resolve_name("brew").wnid == "n4"


# -- the cases of the issue --------------------------------------------------------------------


def test_coffee_among_cat_motorbike_tripod_flower_is_the_beverage(resolver: Resolver) -> None:
    gs = resolver.resolve_task(["cat", "coffee", "motorbike", "tripod", "flower"])
    coffee = gs[1]
    assert coffee.wnid == COFFEE_DRINK, coffee
    assert coffee.reasons["tag_count"] == 46 and coffee.reasons["runner_up_tag_count"] == 0
    assert coffee.reasons["prior"] > coffee.reasons["runner_up_prior"]
    # The flower still pulls the shrub up: context favours it, the prior outweighs that.
    assert coffee.reasons["runner_up_context"] > coffee.reasons["context"]


@pytest.mark.parametrize(
    "task",
    [["bat", "owl", "moth"], ["bat", "squirrel", "hedgehog", "fox"]],
)
def test_bat_among_animals_is_the_animal(resolver: Resolver, task: list[str]) -> None:
    assert resolver.resolve_task(task)[0].wnid == BAT_ANIMAL


def test_bat_among_sports_gear_overrules_the_prior(resolver: Resolver) -> None:
    bat = resolver.resolve_task(["bat", "baseball", "glove"])[0]
    assert bat.wnid in (CRICKET_BAT, BAT_CLUB)
    assert bat.reasons["context"] > bat.reasons["runner_up_context"]


@pytest.mark.parametrize(
    "task",
    [["mouse", "keyboard", "monitor"], ["mouse", "keyboard", "printer", "scanner"]],
)
def test_mouse_among_computer_parts_is_the_device(resolver: Resolver, task: list[str]) -> None:
    mouse = resolver.resolve_task(task)[0]
    assert mouse.wnid == COMPUTER_MOUSE
    # The animal is the dominant sense (14 tags, the device none): context overruled it.
    assert mouse.reasons["tag_count"] == 0 and mouse.reasons["runner_up_tag_count"] == 14


ALTAR_TABLE, ALTAR_STRUCTURE = "n02699629", "n02699494"  # altar.n.01, .n.02: both untagged


@pytest.mark.parametrize(
    ("task", "wnid"),
    [
        (["altar", "goldfish", "broom"], ALTAR_STRUCTURE),  # ImageNet's altar
        (["pajama", "goldfish", "broom"], "n03877472"),  # pajama.n.02, ImageNet's nightclothes
    ],
)
def test_untagged_senses_are_not_ranked_by_order(
    resolver: Resolver, task: list[str], wnid: str
) -> None:
    g = resolver.resolve_task(task)[0]
    assert g.wnid == wnid, g
    assert g.reasons["tag_count"] == g.reasons["runner_up_tag_count"] == 0
    assert g.reasons["prior"] == pytest.approx(g.reasons["runner_up_prior"])
    # WordNet's first sense won where its order still counted.
    ordered = dataclasses.replace(resolver.weights, prior_untagged_order=1.0)
    old = Resolver(
        resolver.nouns, embedder=resolver._embedder, weights=ordered, tag_counts=resolver.tag_counts
    )
    assert old.resolve_task(task)[0].wnid != wnid


def test_altar_among_church_furniture_is_the_communion_table(resolver: Resolver) -> None:
    altar = resolver.resolve_task(["altar", "church", "pew", "font"])[0]
    assert altar.wnid == ALTAR_TABLE  # context decides where the prior no longer does
    assert altar.reasons["context"] > altar.reasons["runner_up_context"]


def test_fashion_suite_wordings_keep_their_groundings(resolver: Resolver) -> None:
    """Every task of the shipped Fashion suite grounds as it did under the sense-order prior
    (tests/data/fashion_suite_groundings.json, recorded from that rule before the change)."""
    pinned = json.loads(PINNED.read_text())
    suite = load_suite(None)
    assert {t.name for t in suite.tasks} == set(pinned)
    for task in suite.tasks:
        names = [c.name for c in task.classes]
        got = {g.name: f"{g.wnid} {g.concept_name}" for g in resolver.resolve_task(names)}
        assert got == pinned[task.name], task.name


# -- the benchmark -----------------------------------------------------------------------------


def test_imagenet_name_lists() -> None:
    wnids = bench.imagenet_wnids()
    assert len(wnids) == 1000 and wnids[0] == "n01440764" and len(set(wnids)) == 1000
    for source in bench.IMAGENET_LISTS:
        kept, dropped = bench.imagenet_names(source)
        assert len(kept) + len(dropped) == 1000
        assert {e.wnid for e in kept + dropped} == set(wnids)
        assert len({e.name.lower() for e in kept}) == len(kept)
    assert bench.imagenet_names("imagenet")[0][0] == bench.NameEntry("tench", "n01440764")
    with pytest.raises(InvalidArgument, match="unknown ImageNet name list"):
        bench.imagenet_names("imagenet-22k")


def test_halves_and_tasks_are_stable_and_distinct() -> None:
    kept, _ = bench.imagenet_names("imagenet")
    halves = {bench.half_of(e.wnid) for e in kept}
    assert halves == {"dev", "test"}
    dev = [e for e in kept if bench.half_of(e.wnid) == "dev"]
    assert 400 < len(dev) < 600
    tasks = bench.sample_tasks(dev, 10, 20, seed=3)
    assert tasks == bench.sample_tasks(dev, 10, 20, seed=3)
    assert tasks != bench.sample_tasks(dev, 10, 20, seed=4)
    for t in tasks:
        assert len(t) == 10 and len({e.wnid for e in t}) == 10 and set(t) <= set(dev)
    with pytest.raises(InvalidArgument, match="exceeds"):
        bench.sample_tasks(dev[:5], 10, 1, seed=0)


def test_hub_coverage_of_the_imagenet_experts(resolver: Resolver) -> None:
    cover = bench.wnid_set_coverage(resolver.nouns, bench.imagenet_wnids())
    got = cover([COMPUTER_MOUSE, "n02084071", COFFEE_SHRUB, "n02012849", "n03126707"])
    assert got[COMPUTER_MOUSE] == 1.0  # an ImageNet class
    assert got["n02084071"] == 1.0  # dog.n.01: ImageNet classes below it
    assert got[COFFEE_SHRUB] == 0.0
    assert got["n02012849"] == got["n03126707"] == 1.0  # both cranes: coverage cannot decide


def test_name_files(tmp_path: Path, resolver: Resolver) -> None:
    tsv = tmp_path / "emoji.tsv"
    tsv.write_text("# name<TAB>wnid\ncoffee\tn07929519\nbat\tn02139199\nmouse\tn02330245\n")
    entries = bench.load_name_file(tsv, resolver.nouns)
    assert entries[0] == bench.NameEntry("coffee", COFFEE_DRINK) and len(entries) == 3
    js = tmp_path / "pairs.json"
    js.write_text(json.dumps([["coffee", COFFEE_DRINK], {"name": "bat", "wnid": BAT_ANIMAL}] * 2))
    assert len(bench.load_name_file(js, resolver.nouns)) == 4
    bad = tmp_path / "bad.tsv"
    bad.write_text("coffee\tn99999999\nbat\tn02139199\nmouse\tn02330245\n")
    with pytest.raises(InvalidArgument, match="not a WordNet noun wnid"):
        bench.load_name_file(bad, resolver.nouns)
    bad.write_text("coffee n07929519\n")
    with pytest.raises(InvalidArgument, match="line 1"):
        bench.load_name_file(bad, resolver.nouns)
    with pytest.raises(InvalidArgument, match="cannot read"):
        bench.load_name_file(tmp_path / "missing.tsv", resolver.nouns)
    # A table whose header names its name and wnid columns (the emoji world's concepts.tsv).
    table = tmp_path / "concepts.tsv"
    rows = ["hexcode\tname\twnid\tgroup", "2615\tcoffee\tn07929519\tdrinks"]
    table.write_text("\n".join([*rows, "1F987\tbat\tn02139199\tmammals", "x\tmouse\tn02330245\t-"]))
    assert bench.load_name_file(table, resolver.nouns)[0] == bench.NameEntry("coffee", COFFEE_DRINK)
    assert len(bench.load_name_file(table, resolver.nouns)) == 3
    table.write_text("\n".join([*rows, "1F987\tbat\tn02139199"]))
    with pytest.raises(InvalidArgument, match="line 3 is not 4 columns"):
        bench.load_name_file(table, resolver.nouns)


def test_a_small_benchmark_run_scores_and_explains_misses(resolver: Resolver) -> None:
    # The truth of 'crane' here is the machine: among birds, grounding must miss it.
    entries = [
        bench.NameEntry("crane", "n03126707"),
        bench.NameEntry("heron", "n02008041"),
        bench.NameEntry("stork", "n02002075"),
        bench.NameEntry("xqzvbnmw", "n02084071"),  # refused: no concept is close
    ]
    right, total, misses = bench.score_tasks(resolver, [entries])
    assert (right, total) == (2, 4)
    by_name = {m.name: m for m in misses}
    assert by_name["crane"].chosen.startswith("n02012849") and by_name["crane"].truth.startswith(
        "n03126707"
    )
    assert "runner-up" in by_name["crane"].why or "alternative" in by_name["crane"].why
    assert by_name["crane"].context == ["heron", "stork", "xqzvbnmw"]
    assert by_name["xqzvbnmw"].chosen == "(refused)"
    series = bench.run_series(
        resolver,
        bench.imagenet_names("imagenet")[0][:120],
        sizes=(3,),
        tasks_per_size=4,
        seed=0,
        coverages={"language": None},
    )
    rows = series["results"]
    assert [(r["mode"], r["half"], r["size"], r["tasks"], r["names"]) for r in rows] == [
        ("language", "dev", 3, 4, 12),
        ("language", "test", 3, 4, 12),
    ]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    for r in rows:
        assert sum(m["times"] for m in r["misses"]) == round((1 - r["accuracy"]) * r["names"])
    grouped = bench.group_misses(misses + misses[:1])
    assert grouped[0]["times"] == 2 and grouped[0]["name"] == misses[0].name
    text = bench.markdown(
        {
            "commit": "x",
            "at": "now",
            "seed": 0,
            "tasks_per_size": 4,
            "embeddings": True,
            "seconds": 1.0,
            "sizes": [3],
            "left_out": {},
            "series": {"imagenet": series},
        }
    )
    assert "| imagenet | language | dev |" in text


def test_explain_selection_states_the_prior_and_the_context(resolver: Resolver) -> None:
    from services.plan_messages import _grounding_reason

    coffee = resolver.resolve_task(["cat", "coffee", "motorbike", "tripod", "flower"])[1]
    planned = {
        "name": "coffee",
        "concept": {"wnid": coffee.wnid, "name": coffee.concept_name},
        "grounding": json.loads(json.dumps(coffee.to_dict())),  # as the plan document keeps it
    }
    text = _grounding_reason(planned)
    assert "WordNet tags this sense 46 time(s)" in text and "the next sense 0" in text
    assert "task context" in text
