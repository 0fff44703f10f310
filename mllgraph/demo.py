"""The main job (README command 1), end to end on the project-managed local Neo4j.

Today: start Neo4j, load the SDAG, print its statistics and example hierarchy queries. Later
steps (hub, labelling, selection, inference) extend this same script.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from mllgraph.settings import Settings


def run(settings: Settings, console: Console, args: argparse.Namespace) -> int:
    from mllgraph import cli, db, sdag

    console.rule("1. Neo4j")
    if settings.uses_local_neo4j:
        cli.cmd_neo4j(argparse.Namespace(action="start"), settings)
    with db.connect(settings) as graph:
        console.print(f"connected to {settings.bolt_uri} (database {settings.neo4j_database})")
    console.rule("2. The SDAG: WordNet 3.0 nouns")
    cli.cmd_sdag(argparse.Namespace(action="load", force=False), settings)
    with db.connect(settings, start_local=False) as graph:
        console.rule("3. Example queries")
        rows = sdag.ancestors(graph, "sandal.n.01")
        console.print("ancestors of sandal.n.01: " + " → ".join(r["name"] for r in rows))
        total, rows = sdag.descendants(graph, "footwear.n.02", limit=8)
        names = ", ".join(r["name"] for r in rows)
        console.print(f"footwear.n.02 has {total} descendants, e.g. {names}")
        rows = sdag.lowest_common_ancestors(graph, ["sandal.n.01", "bag.n.04", "jean.n.01"])
        console.print(
            "lowest common ancestor of sandal, bag, jean: " + ", ".join(r["name"] for r in rows)
        )
    return 0
