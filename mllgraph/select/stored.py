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


def stored_now(
    graph: Graph, classes: list[TaskClass], options: SelectOptions, guess: int | None = None
) -> tuple[dict[str, Any] | None, int]:
    """The stored plan for exactly this request at the catalogue version now (None: select()
    makes one), and that version. `guess`: the version the caller saw last. Where it is still
    current this is one round trip (`select/plan_get_at_version` reads the plan id at the guess
    together with the version now); else a second one, at the version the first read found."""
    if guess is None:  # read as `hub.registry.catalogue_version` does (it would bring torch in)
        guess = int(graph.read("hub/catalogue_version")[0]["version"])
    row = _at_version(graph, classes, options, guess)
    if int(row["version"]) != guess:  # the catalogue moved since: once more, at the version now
        row = _at_version(graph, classes, options, int(row["version"]))
    body = row["body"]
    return (None if body is None else json.loads(body)), int(row["version"])


def _at_version(
    graph: Graph, classes: list[TaskClass], options: SelectOptions, version: int
) -> dict[str, Any]:
    pid = plan_id_for(classes, options, version)
    return graph.read("select/plan_get_at_version", id=pid, version=version)[0]


def find_stored(
    graph: Graph, classes: list[TaskClass], options: SelectOptions
) -> dict[str, Any] | None:
    """The stored plan for exactly this request at the current catalogue version, or None
    (select() makes one)."""
    options.validate()
    validate_classes(classes)
    return stored_now(graph, classes, options)[0]
