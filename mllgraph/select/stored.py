"""A task's stored plan, found by its key alone: the request's class names and options and
the catalogue version (`mllgraph.plan.document.plan_id_for`), so nothing is grounded, no
model or probe output is read and neither torch nor the text encoder is loaded. What
`select()` answers first, and what `mllgraph select` tries before loading anything else.

Imports plan and graph only (kept light on purpose: the CLI imports it at start-up).
"""

from __future__ import annotations

import json
from typing import Any

from mllgraph.errors import InvalidArgument
from mllgraph.graph.db import Graph
from mllgraph.plan.document import MAX_CLASSES, plan_id_for
from mllgraph.plan.request import SelectOptions, TaskClass


def validate_classes(classes: list[TaskClass]) -> None:
    if not classes:
        raise InvalidArgument("classes: the task has no classes")
    if len(classes) < 2:
        raise InvalidArgument(
            f"classes: a task needs at least two classes, got one ({classes[0].name!r})"
        )
    if len(classes) > MAX_CLASSES:
        raise InvalidArgument(f"classes: {len(classes)} is over the limit of {MAX_CLASSES}")


def plan_key(graph: Graph, classes: list[TaskClass], options: SelectOptions) -> str:
    """The id a plan for this request has at the current catalogue version (read as
    `hub.registry.catalogue_version` reads it; that module would bring torch in)."""
    version = int(graph.read("hub/catalogue_version")[0]["version"])
    return plan_id_for(classes, options, version)


def stored_plan(graph: Graph, plan_id: str) -> dict[str, Any] | None:
    """The stored plan `plan_id` (a document), or None."""
    rows = graph.read("select/plan_get", id=plan_id)
    return json.loads(rows[0]["body"]) if rows else None


def find_stored(
    graph: Graph, classes: list[TaskClass], options: SelectOptions
) -> dict[str, Any] | None:
    """The stored plan for exactly this request at the current catalogue version, or None
    (select() makes one)."""
    options.validate()
    validate_classes(classes)
    return stored_plan(graph, plan_key(graph, classes, options))
