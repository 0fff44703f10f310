"""`mllgraph query`: a cookbook query or any Cypher, read-only.

Imports mllgraph.graph inside the handler only (the CLI must start fast); never mllgraph.web or
mllgraph.eval.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from rich.console import Console

from mllgraph.cli.common import console, rows_table
from mllgraph.settings import Settings

T = TypeVar("T")


def _param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--param wants key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def cmd_query(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph.graph import cypher, db

    if args.list or not args.query:
        for name in cypher.names("cookbook/"):
            console.print(f"[bold]{name.removeprefix('cookbook/')}[/]: {cypher.doc(name)}")
        return 0
    name = f"cookbook/{args.query}"
    text = cypher.load(name) if name in cypher.names("cookbook/") else args.query
    with db.connect(settings) as graph:
        rows = _interruptible(
            lambda: graph.run_user_query(
                text, dict(args.param), timeout_s=args.timeout, max_rows=args.max_rows
            )
        )
    if args.json:
        print(json.dumps(rows, default=str, indent=1))
    elif rows:
        console.print(rows_table(rows))
    else:
        console.print("(no rows)")
    if rows.truncated:
        Console(stderr=True).print(
            f"[yellow]truncated: only the first {len(rows):,} rows were fetched "
            "(MLLGRAPH_QUERY_MAX_ROWS)[/]"
        )
    return 0


def _interruptible(work: Callable[[], T]) -> T:
    """`work()` in a thread, so that Ctrl-C ends the command at once: in the main thread the
    driver's clean-up on KeyboardInterrupt waits for the running query, and the first Ctrl-C
    seemed ignored. The process exits (130) without that clean-up; closing its connection
    ends the transaction on the server."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = work()
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            out["error"] = e

    thread = threading.Thread(target=run, name="user-query", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
    except KeyboardInterrupt:
        print(
            "interrupted: the query is abandoned (closing the connection ends it)", file=sys.stderr
        )
        sys.stderr.flush()
        os._exit(130)
    if "error" in out:
        raise out["error"]
    return out["value"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("query", help="run a cookbook query or any Cypher, read-only")
    p.add_argument("query", nargs="?", help="cookbook name or Cypher text")
    p.add_argument("--param", action="append", type=_param, default=[], help="key=value (JSON)")
    p.add_argument("--list", action="store_true", help="list the cookbook")
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, help="seconds (default MLLGRAPH_QUERY_TIMEOUT_S)")
    p.add_argument("--max-rows", type=int, help="row cap (default MLLGRAPH_QUERY_MAX_ROWS)")
    p.set_defaults(handler=cmd_query)
