"""The SDAG in Neo4j: WordNet 3.0's noun hierarchy as (:Concept)-[:IS_A]->(:Concept).

`load` is idempotent and resumable: every statement MERGEs in `UNWIND` batches (one
transaction each), and the `SdagMeta` record is written only after the whole graph has been
verified, so an interrupted load is simply run again.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from mllgraph.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from mllgraph.graph.db import Graph
from mllgraph.graph.wordnet import ROOT_WNID, WordNetNouns, lemma_key

SOURCE = "wordnet-3.0"
BATCH = 10_000
WNID_RE = re.compile(r"^[a-z]\d{8}$")
ProgressFn = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class LoadReport:
    concepts: int
    is_a: int
    instance_of: int
    lemmas: int
    seconds: float
    skipped: bool  # the graph was already complete


def _batches(rows: list[dict[str, Any]], size: int = BATCH) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def concept_rows(wn: WordNetNouns) -> list[dict[str, Any]]:
    return [
        {
            "wnid": s.wnid,
            "name": s.name,
            "lemmas": s.lemmas,
            "definition": s.definition,
            "lexname": s.lexname,
            "depth": s.depth,
            "source": SOURCE,
        }
        for s in wn.synsets.values()
    ]


def is_a_rows(wn: WordNetNouns) -> list[dict[str, Any]]:
    rows = []
    for s in wn.synsets.values():
        rows += [{"child": s.wnid, "parent": p, "instance": False} for p in s.hypernyms]
        rows += [{"child": s.wnid, "parent": p, "instance": True} for p in s.instance_hypernyms]
    return rows


def lemma_rows(wn: WordNetNouns) -> list[dict[str, Any]]:
    return [
        {"key": key, "wnid": wnid, "sense": rank}
        for key, wnids in wn.lemma_index.items()
        for rank, wnid in enumerate(wnids, start=1)
    ]


def ensure_schema(graph: Graph) -> None:
    graph.ensure_schema("graph/schema")


def meta(graph: Graph) -> dict[str, Any] | None:
    return graph.read("graph/meta")[0]["meta"]


def load(
    graph: Graph, wn: WordNetNouns, *, force: bool = False, progress: ProgressFn | None = None
) -> LoadReport:
    """Load (or complete) the SDAG; a no-op when a verified load is recorded."""
    t0 = time.monotonic()
    ensure_schema(graph)
    recorded = meta(graph)
    if recorded and not force and recorded.get("concepts") == len(wn.synsets):
        c = counts(graph)
        return LoadReport(
            c["concepts"], c["is_a"], c["instance_of"], c["lemmas"], time.monotonic() - t0, True
        )
    # Diff against what is there and create only the rest: as idempotent as MERGE, resumable
    # after a crash between batches, and much cheaper than MERGE on a fresh database.
    have = set(graph.read("graph/all_wnids")[0]["wnids"])
    concepts_missing = [r for r in concept_rows(wn) if r["wnid"] not in have]
    have_edges = set(edge_pairs(graph))
    edges_missing = [r for r in is_a_rows(wn) if (r["child"], r["parent"]) not in have_edges]
    links = graph.read("graph/all_lemma_links")[0]
    have_links = set(zip(links["keys"], links["wnids"], strict=True))
    links_missing = [r for r in lemma_rows(wn) if (r["key"], r["wnid"]) not in have_links]
    phases = [
        ("concepts", "graph/create_concepts", concepts_missing),
        ("is_a", "graph/create_is_a", edges_missing),
        ("lemmas", "graph/create_lemma_links", links_missing),
    ]
    for phase, statement, rows in phases:
        if progress:
            progress(phase, 0, len(rows))
        for done, batch in enumerate(_batches(rows), start=1):
            graph.write(statement, rows=batch)
            if progress:
                progress(phase, min(done * BATCH, len(rows)), len(rows))
    verify(graph, expect_concepts=len(wn.synsets))
    c = counts(graph)
    graph.write(
        "graph/mark_loaded",
        source=SOURCE,
        concepts=c["concepts"],
        is_a=c["is_a"],
        lemmas=c["lemmas"],
    )
    return LoadReport(
        c["concepts"], c["is_a"], c["instance_of"], c["lemmas"], time.monotonic() - t0, False
    )


def counts(graph: Graph) -> dict[str, int]:
    return graph.read("graph/counts")[0]


def edge_pairs(graph: Graph) -> list[tuple[str, str]]:
    row = graph.read("graph/all_edges")[0]
    return list(zip(row["children"], row["parents"], strict=True))


def find_cycle(edges: Iterable[tuple[str, str]]) -> list[str] | None:
    """A cycle in child→parent edges, or None (Kahn's algorithm, then a walk to show one)."""
    parents: dict[str, list[str]] = {}
    indegree: dict[str, int] = {}
    for child, parent in edges:
        parents.setdefault(child, []).append(parent)
        indegree[parent] = indegree.get(parent, 0) + 1
        indegree.setdefault(child, 0)
    queue = [n for n, d in indegree.items() if d == 0]
    seen = 0
    while queue:
        node = queue.pop()
        seen += 1
        for p in parents.get(node, ()):
            indegree[p] -= 1
            if indegree[p] == 0:
                queue.append(p)
    if seen == len(indegree):
        return None
    # Every node left has an unremoved child; walking parents among them must loop.
    left = {n for n, d in indegree.items() if d > 0}
    node = next(iter(sorted(left)))
    path: list[str] = []
    while node not in path:
        path.append(node)
        node = next(p for p in parents.get(node, ()) if p in left)
    return path[path.index(node) :] + [node]


def verify(graph: Graph, *, expect_concepts: int | None = None) -> None:
    """The SDAG is a DAG with entity.n.01 as its one root (and complete, if told the size)."""
    roots = graph.read("graph/roots")
    if [r["wnid"] for r in roots] != [ROOT_WNID]:
        shown = ", ".join(f"{r['wnid']} ({r['name']})" for r in roots[:10])
        raise FailedPrecondition(
            f"the SDAG must have exactly one root, entity.n.01; found {len(roots)}: {shown}"
        )
    cycle = find_cycle(edge_pairs(graph))
    if cycle:
        raise FailedPrecondition(f"the SDAG has a cycle: {' -> '.join(cycle)}")
    if expect_concepts is not None:
        c = counts(graph)
        wordnet_concepts = c["concepts"] - c["added"]
        if wordnet_concepts != expect_concepts:
            raise FailedPrecondition(
                f"the SDAG has {wordnet_concepts} WordNet concepts, expected {expect_concepts}: "
                "run `mllgraph sdag load` again to complete it"
            )


# -- lookups ---------------------------------------------------------------------------------


def concepts(graph: Graph, keys: list[str]) -> dict[str, dict[str, Any]]:
    """Concepts by wnid or name; NotFound naming every key that matches nothing."""
    rows = graph.read("graph/concept", keys=keys)
    found = {r["key"]: r for r in rows}
    missing = [k for k in keys if k not in found]
    if missing:
        raise NotFound(
            f"unknown concept(s): {', '.join(missing)} (give a wnid or a 'dog.n.01' name)"
        )
    return found


def concept(graph: Graph, key: str) -> dict[str, Any]:
    return concepts(graph, [key])[key]


def ancestors(graph: Graph, key: str) -> list[dict[str, Any]]:
    return graph.read("graph/ancestors", wnid=concept(graph, key)["wnid"])


def descendants(graph: Graph, key: str, limit: int = 100) -> tuple[int, list[dict[str, Any]]]:
    wnid = concept(graph, key)["wnid"]
    total = graph.read("graph/descendant_count", wnid=wnid)[0]["descendants"]
    return total, graph.read("graph/descendants", wnid=wnid, limit=limit)


def lowest_common_ancestors(graph: Graph, keys: list[str]) -> list[dict[str, Any]]:
    if not keys:
        raise InvalidArgument("lowest common ancestors need at least one concept")
    found = concepts(graph, keys)
    wnids = sorted({found[k]["wnid"] for k in keys})
    return graph.read("graph/lowest_common_ancestors", wnids=wnids)


def by_lemma(graph: Graph, text: str) -> list[dict[str, Any]]:
    return graph.read("graph/by_lemma", key=lemma_key(text))


# -- user concepts ---------------------------------------------------------------------------


def user_wnid(name: str) -> str:
    """A stable id for a user concept: 'u' + 8 digits (WordNet's are 'n' + offset)."""
    return "u" + str(int(hashlib.sha1(name.encode()).hexdigest(), 16) % 10**8).zfill(8)


def add_concept(
    graph: Graph,
    *,
    name: str,
    definition: str,
    parents: list[str],
    children: list[str] | None = None,
    lemmas: list[str] | None = None,
    wnid: str | None = None,
) -> dict[str, Any]:
    """Attach a concept WordNet lacks under existing parents (checked and written in one
    transaction: a refused concept leaves the graph as it was)."""
    children = children or []
    name = name.strip()
    if not name or any(ord(ch) < 32 for ch in name):
        raise InvalidArgument("add-concept: `name` must be a non-empty printable name")
    if not definition.strip():
        raise InvalidArgument(f"add-concept {name!r}: `definition` must not be empty")
    if not parents:
        raise InvalidArgument(f"add-concept {name!r}: at least one parent is required")
    wnid = wnid or user_wnid(name)
    if not WNID_RE.match(wnid):
        raise InvalidArgument(f"add-concept: wnid {wnid!r} must look like 'u12345678'")
    lemmas = lemmas or [name.split(".")[0]]
    params = {
        "wnid": wnid,
        "name": name,
        "definition": definition.strip(),
        "parents": sorted(set(parents)),
        "children": sorted(set(children)),
        "lemmas": lemmas,
        "lemma_keys": sorted({lemma_key(x) for x in lemmas}),
    }

    def work(tx: Any) -> dict[str, Any]:
        from mllgraph.graph.db import run

        check = run(tx, "graph/add_concept_check", **params)[0]
        if check["taken"]:
            raise AlreadyExists(f"concept {name!r} / {wnid} already exists: {check['taken']}")
        if check["missing_parents"]:
            raise NotFound(f"add-concept {name!r}: unknown parent(s) {check['missing_parents']}")
        if check["missing_children"]:
            raise NotFound(f"add-concept {name!r}: unknown child(ren) {check['missing_children']}")
        if check["cyclic_children"]:
            raise InvalidArgument(
                f"add-concept {name!r}: would create a cycle — child(ren) "
                f"{check['cyclic_children']} are ancestors of (or equal to) a parent"
            )
        return run(tx, "graph/add_concept", depth=check["min_parent_depth"] + 1, **params)[0]

    return graph.write_tx(work)


def remove_user_concept(graph: Graph, wnid: str) -> None:
    """Delete a concept added with `add_concept`; WordNet's own concepts are refused."""
    row = concept(graph, wnid)
    if not row["wnid"].startswith("u") and row["lexname"] != "user":
        raise InvalidArgument(f"{wnid} is a WordNet concept; only user-added concepts can go")
    graph.write("graph/delete_user_concept", wnid=row["wnid"])
