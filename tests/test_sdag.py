"""The SDAG in a real Neo4j: load, verification, lookups, user concepts."""

from __future__ import annotations

import pytest

from mllgraph.errors import AlreadyExists, InvalidArgument, NotFound
from mllgraph.graph import sdag
from mllgraph.graph.wordnet import ROOT_WNID

pytestmark = pytest.mark.neo4j

DOG, ANIMAL, SANDAL = "n02084071", "n00015388", "n04133789"


def test_full_wordnet_is_loaded_as_one_dag(sdag_graph) -> None:
    c = sdag.counts(sdag_graph)
    assert c["concepts"] - c["added"] == 82_115
    assert c["is_a"] >= 84_427 and c["instance_of"] == 8_577
    assert [r["wnid"] for r in sdag_graph.read("graph/roots")] == [ROOT_WNID]
    sdag.verify(sdag_graph, expect_concepts=82_115)
    assert sdag.meta(sdag_graph)["concepts"] >= 82_115


def test_second_load_changes_nothing(sdag_graph, wordnet) -> None:
    before = sdag.counts(sdag_graph)
    report = sdag.load(sdag_graph, wordnet, force=True)  # every MERGE batch runs again
    assert not report.skipped
    assert sdag.counts(sdag_graph) == before


def test_concept_properties(sdag_graph) -> None:
    dog = sdag.concept(sdag_graph, "dog.n.01")
    assert dog["wnid"] == DOG
    assert dog["lemmas"] == ["dog", "domestic_dog", "Canis_familiaris"]
    assert dog["lexname"] == "noun.animal" and dog["depth"] == 8
    assert "domesticated" in dog["definition"]
    assert [r["wnid"] for r in sdag.by_lemma(sdag_graph, "Domestic dog")] == [DOG]
    senses = sdag.by_lemma(sdag_graph, "crane")
    assert [r["sense"] for r in senses] == sorted(r["sense"] for r in senses)


def test_ancestors_descendants_lca(sdag_graph) -> None:
    names = [r["name"] for r in sdag.ancestors(sdag_graph, SANDAL)]
    assert names[0] == "shoe.n.01" and names[-1] == "entity.n.01"
    assert len(names) == len(set(names))  # DISTINCT despite multiple inheritance
    # dog.n.01 has two parents (canine, domestic animal): both lines appear once.
    dog_anc = {r["name"] for r in sdag.ancestors(sdag_graph, DOG)}
    assert {"canine.n.02", "domestic_animal.n.01", "animal.n.01"} <= dog_anc
    total, rows = sdag.descendants(sdag_graph, ANIMAL, limit=10)
    assert total > 3_000 and len(rows) == 10
    assert [r["depth"] for r in rows] == sorted(r["depth"] for r in rows)  # nearest first
    lca = sdag.lowest_common_ancestors(sdag_graph, ["dog.n.01", "cat.n.01"])
    assert [r["name"] for r in lca] == ["carnivore.n.01"]
    lca = sdag.lowest_common_ancestors(sdag_graph, [SANDAL, "boot.n.01"])
    assert [r["name"] for r in lca] == ["footwear.n.02"]


def test_unknown_concept_is_named(sdag_graph) -> None:
    with pytest.raises(NotFound, match="n99999999"):
        sdag.ancestors(sdag_graph, "n99999999")
    with pytest.raises(NotFound, match="no_such_thing.n.01"):
        sdag.lowest_common_ancestors(sdag_graph, ["dog.n.01", "no_such_thing.n.01"])


@pytest.fixture
def added(sdag_graph):
    made: list[str] = []
    yield made
    for wnid in made:
        sdag.remove_user_concept(sdag_graph, wnid)


def test_add_concept_under_parents(sdag_graph, added) -> None:
    before = sdag.counts(sdag_graph)
    row = sdag.add_concept(
        sdag_graph,
        name="hoodie.n.01",
        definition="a sweatshirt with a hood",
        parents=["n04370048"],  # sweater.n.01
        lemmas=["hoodie", "hooded sweatshirt"],
    )
    added.append(row["wnid"])
    assert row["wnid"].startswith("u") and row["depth"] > 0
    assert sdag.counts(sdag_graph)["added"] == before["added"] + 1
    assert "sweater.n.01" in [r["name"] for r in sdag.ancestors(sdag_graph, row["wnid"])]
    assert [r["wnid"] for r in sdag.by_lemma(sdag_graph, "hooded sweatshirt")] == [row["wnid"]]
    sdag.verify(sdag_graph)  # still one DAG with one root


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"parents": ["n99999999"]}, NotFound, "unknown parent.*n99999999"),
        ({"parents": [DOG], "name": "dog.n.01"}, AlreadyExists, "dog.n.01"),
        ({"parents": [DOG], "wnid": DOG}, AlreadyExists, DOG),
        ({"parents": [DOG], "children": [ANIMAL]}, InvalidArgument, "cycle"),
        ({"parents": [DOG], "children": [DOG]}, InvalidArgument, "cycle"),
        ({"parents": []}, InvalidArgument, "parent"),
        ({"parents": [DOG], "definition": "  "}, InvalidArgument, "definition"),
        ({"parents": [DOG], "wnid": "x1; DROP"}, InvalidArgument, "wnid"),
    ],
)
def test_add_concept_refusals_leave_graph_unchanged(sdag_graph, kwargs, error, match) -> None:
    before = sdag.counts(sdag_graph)
    args = {"name": "puppyish_thing.n.01", "definition": "a test concept", **kwargs}
    with pytest.raises(error, match=match):
        sdag.add_concept(sdag_graph, **args)
    assert sdag.counts(sdag_graph) == before


def test_interrupted_load_is_completed_by_a_rerun(sdag_graph, wordnet) -> None:
    """Remove part of the graph as a crashed load would have left it, interrupt the
    re-load midway, then re-run: the graph ends complete and correct."""
    before = sdag.counts(sdag_graph)
    # Test scaffolding only: damage the graph the way a crash between batches would.
    victims = [
        r["wnid"]
        for r in sdag_graph.driver.execute_query(
            "MATCH (c:Concept {source: 'wordnet-3.0'}) WHERE NOT ()-[:IS_A]->(c) "
            "AND NOT (c)<-[:DECLARED|LABELED]-() RETURN c.wnid AS wnid ORDER BY wnid LIMIT 200",
            database_=sdag_graph.database,
        ).records
    ]
    assert len(victims) == 200
    sdag_graph.driver.execute_query(
        "MATCH (m:SdagMeta) DELETE m WITH 1 AS x "
        "UNWIND $wnids AS w MATCH (c:Concept {wnid: w}) DETACH DELETE c",
        wnids=victims,
        database_=sdag_graph.database,
    )
    calls = {"n": 0}

    def crash_midway(phase: str, done: int, total: int) -> None:
        calls["n"] += 1
        if phase == "is_a":
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        sdag.load(sdag_graph, wordnet, progress=crash_midway)
    assert sdag.meta(sdag_graph) is None  # no completion record after a crash
    report = sdag.load(sdag_graph, wordnet)
    assert not report.skipped
    assert sdag.counts(sdag_graph) == before
    sdag.verify(sdag_graph, expect_concepts=82_115)
    assert sdag.meta(sdag_graph) is not None


def test_find_cycle() -> None:
    assert sdag.find_cycle([("a", "b"), ("b", "c"), ("a", "c")]) is None
    cycle = sdag.find_cycle([("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")])
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
