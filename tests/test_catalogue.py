"""The model catalogue through the library and its Cypher (no gRPC): the packaged builtin's
declared heads, `mllgraph query` semantics (cookbook queries run, writes are refused), and
labelling's promise to touch only the labelled model's LABELED edges.

Runs against the real Neo4j of the fixtures; what it creates carries a unique `cattest-<hex>`
prefix and is removed afterwards.
"""

from __future__ import annotations

import ast
import contextlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from mllgraph import cli
from mllgraph.cli.common import progress_bar
from mllgraph.errors import InvalidArgument, NotFound
from mllgraph.graph import cypher
from mllgraph.hub import loading, probe_outputs, probes, registry
from mllgraph.hubs.fashion import experts as fashion_experts
from mllgraph.label import run as labeller
from mllgraph.label import work as label_work
from mllgraph.settings import Settings
from tests.helpers import random_probe_sets

pytestmark = pytest.mark.neo4j

SANDAL, GYM_SHOE = "n04133789", "n03472535"
PREFIX = f"cattest-{uuid.uuid4().hex[:8]}"
BUILTIN = "efficientnet_lite0"


@pytest.fixture(scope="module")
def probe_sets(sdag_graph, neo4j_settings) -> Iterator[list[probes.ProbeSet]]:
    """20 random 28x28 images each for sandal and gym shoe, under unique ids."""
    with random_probe_sets(
        sdag_graph,
        neo4j_settings,
        (SANDAL, GYM_SHOE),
        prefix=PREFIX,
        seed=1,
        n=20,
        source="tests/test_catalogue.py",
    ) as made:
        yield made


def _count(graph, query: str, **params: Any) -> int:
    return graph.run_user_query(query, params)[0]["n"]


# --- the packaged builtin -------------------------------------------------------------------


def test_builtin_declares_the_imagenet_wnids(sdag_graph, neo4j_settings) -> None:
    mid = registry.model_id(BUILTIN, "1")
    try:
        registry.get_model(sdag_graph, mid)
        already = True  # registered by someone else: read it, leave it
    except NotFound:
        already = False
    try:
        result = registry.register_model(
            sdag_graph, neo4j_settings, registry.Registration(name=BUILTIN, builtin=BUILTIN)
        )
        assert result.created is not already
        record = result.record
        assert record["id"] == mid and record["arch"] == BUILTIN
        assert record["source"] == "builtin" and record["num_classes"] == 1000
        assert record["input_spec"]["size"] == 224 and record["input_spec"]["channels"] == 3
        declared = _count(
            sdag_graph,
            "MATCH (:Model {id: $id})-[:HAS_HEAD]->(h:Head)-[:DECLARED]->(:Concept) "
            "RETURN count(DISTINCT h) AS n",
            id=mid,
        )
        assert declared == 1000
        heads = registry.heads(sdag_graph, mid, top_k=0)
        assert len(heads) == 1000
        assert heads[0]["index"] == 0 and heads[0]["declared_wnid"] == "n01440764"  # tench
        assert [h["declared_wnid"] for h in heads] == loading.imagenet_wnids()
    finally:
        if not already:
            with contextlib.suppress(NotFound):
                registry.delete_model(sdag_graph, neo4j_settings, mid)
    if not already:
        with pytest.raises(NotFound):
            registry.get_model(sdag_graph, mid)


# --- `mllgraph query` semantics -------------------------------------------------------------


def test_user_query_runs_a_cookbook_query(sdag_graph) -> None:
    rows = sdag_graph.run_user_query(
        cypher.load("cookbook/hub_coverage_at_quality"), {"min_score": 0.5}
    )
    assert len(rows) == 1
    assert set(rows[0]) == {"concepts_covered", "model_concept_pairs", "models_per_concept"}
    assert rows[0]["concepts_covered"] >= 0


def test_user_query_refuses_writes(sdag_graph) -> None:
    with pytest.raises(InvalidArgument, match=r"(?i)read[- ]?only|reads only"):
        sdag_graph.run_user_query("CREATE (n:Oops) RETURN n")
    assert _count(sdag_graph, "MATCH (n:Oops) RETURN count(n) AS n") == 0


def test_user_query_reports_cypher_errors(sdag_graph) -> None:
    with pytest.raises(InvalidArgument, match="Cypher error"):
        sdag_graph.run_user_query("MATCH (n RETURN n")


def cookbook_params(name: str) -> dict[str, Any]:
    """The example values in a cookbook file's `// params: a (e.g. 1), b (e.g. 'x' note)`."""
    path = Path(cypher._root()) / f"{name}.cypher"
    header = [ln for ln in path.read_text().splitlines() if ln.lstrip().startswith("// params:")]
    if not header:
        return {}
    params: dict[str, Any] = {}
    for key, example in re.findall(r"(\w+) \(e\.g\. (.*?)\)(?:,\s*|$)", header[0]):
        words = example.split(" ")
        # The example may trail a comment ("'n04133789' sandal"): the longest literal prefix.
        for end in range(len(words), 0, -1):
            try:
                params[key] = ast.literal_eval(" ".join(words[:end]))
                break
            except (ValueError, SyntaxError):
                continue
        else:
            raise AssertionError(f"{name}: cannot read the example of {key!r}: {example!r}")
    return params


@pytest.mark.parametrize("name", cypher.names("cookbook/"))
def test_every_cookbook_query_runs_with_its_documented_params(sdag_graph, name: str) -> None:
    text = cypher.load(name)
    params = cookbook_params(name)
    used = set(re.findall(r"\$(\w+)", text))
    assert used <= set(params), f"{name}: params used but not documented: {used - set(params)}"
    rows = sdag_graph.run_user_query(text, params)  # InvalidArgument on any Cypher error
    assert isinstance(rows, list)
    assert cypher.doc(name)  # each file says what it answers


def test_cookbook_params_parsing() -> None:
    assert cookbook_params("cookbook/best_heads_for_concept") == {"wnid": SANDAL, "limit": 10}
    assert cookbook_params("cookbook/models_for_concepts")["wnids"][0] == SANDAL


# --- labelling touches only its own model ---------------------------------------------------


def _register(graph, settings, tmp: Path, name: str) -> str:
    path = loading.save_weights(loading.build_timm("test_efficientnet", 2, 1), tmp / f"{name}.st")
    return registry.register_model(
        graph,
        settings,
        registry.Registration(
            name=name,
            arch="test_efficientnet",
            weights_bytes=path.read_bytes(),
            wnids=[SANDAL, GYM_SHOE],
            input_spec=fashion_experts.FASHION_INPUT_SPEC,
        ),
    ).record["id"]


def _edges(graph, mid: str) -> list[tuple[Any, ...]]:
    rows = graph.run_user_query(
        "MATCH (:Model {id: $id})-[:HAS_HEAD]->(h:Head)-[l:LABELED]->(c:Concept) "
        "RETURN h.index AS head, c.wnid AS wnid, l.score AS score, l.method AS method "
        "ORDER BY head, wnid, method, score",
        {"id": mid},
    )
    return [tuple(r.values()) for r in rows]


def _edges_outside(graph, mid: str) -> int:
    return _count(
        graph,
        "MATCH (m:Model)-[:HAS_HEAD]->(:Head)-[l:LABELED]->() WHERE m.id <> $id "
        "RETURN count(l) AS n",
        id=mid,
    )


def test_labelling_touches_only_its_own_model(
    sdag_graph, neo4j_settings, probe_sets, cleanup, tmp_path
) -> None:
    torch.manual_seed(0)
    a = _register(sdag_graph, neo4j_settings, tmp_path, f"{PREFIX}-a")
    cleanup.append(a)
    b = _register(sdag_graph, neo4j_settings, tmp_path, f"{PREFIX}-b")
    cleanup.append(b)
    options = label_work.LabelOptions(samples_per_concept=20)
    labeller.label_model(sdag_graph, neo4j_settings, b, options)
    b_edges, b_at = _edges(sdag_graph, b), registry.get_model(sdag_graph, b)["labelled_at"]
    assert b_edges
    outside = _edges_outside(sdag_graph, a)
    version = registry.catalogue_version(sdag_graph)

    result = labeller.label_model(sdag_graph, neo4j_settings, a, options)
    a_edges = _edges(sdag_graph, a)
    assert a_edges and result.labels > 0 and result.catalogue_version > version
    assert _edges(sdag_graph, b) == b_edges
    assert registry.get_model(sdag_graph, b)["labelled_at"] == b_at
    assert _edges_outside(sdag_graph, a) == outside
    assert probe_outputs.probe_outputs_path(neo4j_settings, a).is_file()

    # Relabelling replaces a's edges (same probes, same model: the same edges), not adds.
    labeller.label_model(sdag_graph, neo4j_settings, a, options)
    assert len(_edges(sdag_graph, a)) == len(a_edges)
    assert _edges(sdag_graph, b) == b_edges
    assert _edges_outside(sdag_graph, a) == outside


# --- the documented `mllgraph models` commands, run as a person would ------------------------


def test_progress_bar_renders_an_unknown_total() -> None:
    """`models label` adds its task with total=None until the labeller reports one."""
    progress = progress_bar()
    task = progress.add_task("labelling", total=None)
    progress.update(task, completed=3)
    count = progress.columns[2].render(progress.tasks[0])
    assert str(count).split() == ["3/?"]


def test_documented_model_commands_run(
    sdag_graph, neo4j_settings, probe_sets, cleanup, tmp_path, capsys
) -> None:
    """register, label, list, show and `query --list` through `mllgraph.cli.main`, against
    the suite's own server (Settings.from_env() names it)."""
    assert Settings.from_env().bolt_uri == neo4j_settings.bolt_uri
    torch.manual_seed(0)
    name = f"{PREFIX}-cli"
    mid = f"{name}@1"
    cleanup.append(mid)
    weights = loading.save_weights(
        loading.build_timm("test_efficientnet", 2, 1), tmp_path / "w.safetensors"
    )
    register = ["models", "register", "--name", name, "--weights", str(weights)]
    register += ["--arch", "test_efficientnet", "--wnids", f"{SANDAL},{GYM_SHOE}"]
    # A bad --metadata flag names itself, and nothing is registered.
    assert cli.main([*register, "--metadata", "no-equals-sign"]) == 1
    assert "--metadata 'no-equals-sign': write KEY=VALUE" in capsys.readouterr().err
    assert not registry.list_models(sdag_graph, name=name)
    meta = ["--metadata", "training_data=fashion-mnist", "--metadata", "licence=mit"]
    assert cli.main([*register, "--input-size", "28", "--channels", "1", *meta]) == 0
    assert f"{mid} registered: 2 heads" in capsys.readouterr().out
    stored = registry.get_model(sdag_graph, mid)["metadata"]
    assert stored == {"training_data": "fashion-mnist", "licence": "mit"}

    assert cli.main(["models", "label", mid, "--samples-per-concept", "20"]) == 0
    out = capsys.readouterr()
    assert re.search(rf"{re.escape(mid)}: \d+ labels \+ \d+ group labels", out.out), out
    assert registry.get_model(sdag_graph, mid)["labelled_at"]
    assert _edges(sdag_graph, mid)

    assert cli.main(["models", "list", "--name", name]) == 0
    assert mid in capsys.readouterr().out
    assert cli.main(["models", "show", mid, "--heads", "2"]) == 0
    out = capsys.readouterr().out
    assert f'"id": "{mid}"' in out and "first 2 heads" in out
    assert cli.main(["query", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(n.removeprefix("cookbook/") in out for n in cypher.names("cookbook/"))
