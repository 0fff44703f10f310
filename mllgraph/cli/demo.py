"""`mllgraph demo`: the main job, end to end (README command 1; mllgraph.eval.demo).

Imports mllgraph.eval.demo inside the handler only (the CLI must start fast).
"""

from __future__ import annotations

import argparse

from mllgraph.cli.common import console
from mllgraph.settings import Settings


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph.eval import demo

    return demo.run(settings, console, args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job, end to end (README command 1)")
    p.add_argument(
        "--serve", action="store_true", help="afterwards, serve the web page until Ctrl-C"
    )
    p.add_argument(
        "--no-emoji",
        action="store_true",
        help="skip the emoji world (a held-out art style, true zero-shot) after the Fashion one",
    )
    p.set_defaults(handler=cmd_demo)
