"""`mllgraph neo4j start|stop|status`: the project-managed local Neo4j.

Imports mllgraph.graph.neo4j_server inside the handler only (the CLI must start fast); never
mllgraph.web or mllgraph.eval at import time.
"""

from __future__ import annotations

import argparse

from mllgraph.cli.common import console
from mllgraph.settings import Settings


def cmd_neo4j(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph.graph import neo4j_server

    if args.action == "start":
        with console.status("starting Neo4j (the first start fetches it from Maven Central)"):
            pid, seconds = neo4j_server.start(settings)
        console.print(
            f"Neo4j {neo4j_server.NEO4J_VERSION} answers on {settings.bolt_uri} "
            f"(pid {pid}, {seconds:.1f} s)"
        )
    elif args.action == "stop":
        stopped = neo4j_server.stop(settings)
        console.print("Neo4j stopped" if stopped else "no project-managed Neo4j was running")
    else:
        console.print_json(data=neo4j_server.status(settings))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("neo4j", help="run the project-managed local Neo4j")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.set_defaults(handler=cmd_neo4j)
