"""Candidate heads beyond the measured ones, and CHCO candidates from the query rows.

- `declared_candidates`: declared, unmeasured heads for the classes no measured label covers
  (`select/declared_candidates`, through `select.reads`).
- `nearby_candidates`: heads on a text-close sibling or cousin for the classes nothing else
  covers (`select/nearby_candidates`, read past the catalogue cache; `select.nearby` keeps
  the text-close ones).
- `candidates_of_rows`: CHCO candidates from candidate-query rows, and what the plan document
  says of each (`CandidateInfo`).

Imports plan, graph, combine and below, and `select.chco`, `select.nearby`, `select.reads`;
must not import `select.run` or anything above select.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mllgraph.combine.rule import HeadGroup
from mllgraph.graph.db import Graph
from mllgraph.plan.document import COVERAGE_OF_QUERY_KIND
from mllgraph.plan.request import SelectOptions, TaskClass
from mllgraph.select import chco, nearby
from mllgraph.select.reads import Reads

CandidateInfo = dict[tuple[int, str, tuple[int, ...]], dict[str, Any]]


def candidates_of_rows(
    rows: list[dict[str, Any]],
    logits: dict[str, np.ndarray],
    declared_only: dict[str, int],
    info: CandidateInfo,
) -> list[chco.Candidate]:
    """CHCO candidates from candidate-query rows (models with logits only); what the plan
    document says of each goes into `info`, and rows for heads already in it are skipped."""
    candidates: list[chco.Candidate] = []
    for r in rows:
        if r["model"] not in logits:
            continue
        if r["model"] in declared_only and not r["kind"].startswith("declared"):
            continue
        heads = tuple(sorted(int(h) for h in r["heads"]))
        key = (r["class_index"], r["model"], heads)
        if key in info:
            continue  # the same heads found through two kinds: keep the first (best) one
        kind = COVERAGE_OF_QUERY_KIND[r["kind"]]
        group = HeadGroup(r["model"], heads, kind, float(min(1.0, r["score"])))
        candidates.append(chco.Candidate(r["class_index"], group))
        info[key] = {"labels": r["labels"], "via": r["via"], "kind": r["kind"]}
        if "text_similarity" in r:
            info[key]["text_similarity"] = r["text_similarity"]
    return candidates


def declared_candidates(
    reads: Reads, rows: list[dict[str, Any]], wnids: list[str], options: SelectOptions
) -> list[dict[str, Any]]:
    """Declared, unmeasured candidates for the classes no measured label covers.

    "Covers" means an exact, group or descendants candidate: a class with only measured
    ancestor/related candidates gets declared ones too, and CHCO weighs both."""
    covered = {r["class_index"] for r in rows if r["kind"] in ("exact", "group", "descendants")}
    todo = [{"index": i, "wnid": w} for i, w in enumerate(wnids) if i not in covered]
    if not todo:
        return []
    return reads.declared_candidates(todo, list(wnids), options)


def nearby_candidates(
    graph: Graph,
    rows: list[dict[str, Any]],
    wnids: list[str],
    classes: list[TaskClass],
    options: SelectOptions,
    resolver: Any,
) -> list[dict[str, Any]]:
    """Heads on a text-close sibling or cousin, for the classes no candidate covers at all
    (select/nearby: the text encoder decides where a shared ancestor blocked `related`).
    Read past the catalogue cache: it runs only for classes nothing else covers."""
    have = {r["class_index"] for r in rows}
    todo = [{"index": i, "wnid": w} for i, w in enumerate(wnids) if i not in have]
    encode = getattr(resolver, "encode_texts", None)
    if not todo or not options.allow_ancestor or encode is None:
        return []
    found = graph.read(
        "select/nearby_candidates",
        targets=todo,
        all_wnids=list(wnids),
        min_score=options.min_label_score,
        per_kind_limit=options.per_kind_limit,
        declared_prior=options.declared_prior,
        models=sorted(options.models) if options.models is not None else None,
    )
    if not found:
        return []

    return nearby.keep_text_close(
        found, [c.name for c in classes], encode, discount=options.related_discount
    )
