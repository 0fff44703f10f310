"""`mllgraph tokens create`: a bearer token for the services and its tokens-file line.

Imports mllgraph.auth inside the handler only (the CLI must start fast); never mllgraph.web or
mllgraph.eval.
"""

from __future__ import annotations

import argparse

from mllgraph.settings import Settings


def cmd_tokens(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph import auth

    token, entry = auth.create_token(args.scope, args.name)
    where = settings.tokens_file or "the file named by MLLGRAPH_TOKENS_FILE"
    print(f"token (shown once; give it to {entry.name}, who sets MLLGRAPH_TOKEN):")
    print(f"  {token}")
    print(f"line for {where} (the server keeps only the SHA-256):")
    print(f"  {entry.line()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokens", help="bearer tokens for the services")
    s = p.add_subparsers(dest="action", required=True)
    q = s.add_parser("create", help="make a token; prints it once and its tokens-file line")
    q.add_argument("--scope", required=True, choices=["read", "write", "admin"])
    q.add_argument("--name", required=True, help="who holds it (unique in the tokens file)")
    p.set_defaults(handler=cmd_tokens)
