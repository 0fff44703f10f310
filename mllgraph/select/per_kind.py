"""The candidates query's per-kind cut, in Python, so that per-model answers merge exactly.

`select/candidates` keeps, per class and kind, the `per_kind_limit` best rows in its kind's
order (each branch's ORDER BY ... LIMIT). The best rows of a set of models are the best of
each model's own best rows, so a sub-hub's answer is its models' one-model answers, merged
and cut again: `select.reads.Reads.own_candidates` reads and caches them per model.

Pure: no graph, no files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _kind_order(row: dict[str, Any]) -> tuple[Any, ...]:
    """A row's rank within its kind, as the query's ORDER BY: a higher score first (an
    ancestor's and a related head's score are the label score times a positive discount,
    which keeps its order), then for ancestors the deeper concept, then model and heads."""
    if row["kind"] == "ancestor":
        return (-row["score"], -(row["via_depth"] or 0), row["model"], row["heads"])
    return (-row["score"], row["model"], row["heads"])


def _query_order(row: dict[str, Any]) -> tuple[Any, ...]:
    """The query's final ORDER BY class_index, score DESC, model, kind, heads."""
    return (row["class_index"], -row["score"], row["model"], row["kind"], row["heads"])


def top_per_kind(rows: Sequence[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Per class and kind, the `limit` best of `rows`, in the query's order."""
    by_kind: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        by_kind.setdefault((r["class_index"], r["kind"]), []).append(r)
    kept = [r for group in by_kind.values() for r in sorted(group, key=_kind_order)[:limit]]
    return sorted(kept, key=_query_order)
