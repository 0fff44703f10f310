"""The hub's coverage of candidate senses, for grounding that knows the hub.

One query (`select/sense_coverage`) tells, for the candidate concepts of a task's ambiguous
class names, whether the hub has heads measured on them (or below), declared there, or
measured on a close ancestor. `Resolver.resolve_task` turns that into a score bonus (see
`mllgraph.ground.resolve`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mllgraph.graph.db import Graph

# Coverage strength of a sense, by the best way the hub covers it.
MEASURED, DECLARED, NEAR = 1.0, 0.75, 0.25


def sense_coverage(
    graph: Graph, wnids: Sequence[str], *, min_score: float, models: Sequence[str] | None
) -> dict[str, float]:
    """wnid -> 1.0 (measured on it or below), 0.75 (declared there), 0.25 (measured on a
    parent or grandparent) or 0.0."""
    if not wnids:
        return {}
    rows = graph.read(
        "select/sense_coverage",
        wnids=list(wnids),
        min_score=min_score,
        models=list(models) if models is not None else None,
    )
    out = dict.fromkeys(wnids, 0.0)
    for r in rows:
        out[r["wnid"]] = coverage_of_row(r)
    return out


def coverage_of_row(r: Mapping[str, Any]) -> float:
    """One `select/sense_coverage` row's strength."""
    return MEASURED if r["measured"] else DECLARED if r["declared"] else NEAR if r["near"] else 0.0
