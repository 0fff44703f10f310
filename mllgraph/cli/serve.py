"""`mllgraph serve SERVICE`: run a gRPC service (services.*) or the web page until
SIGTERM/SIGINT.

Imports the service module or mllgraph.web.app inside the handler only (the CLI must start
fast); never mllgraph.eval.
"""

from __future__ import annotations

import argparse

from mllgraph.settings import Settings


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import importlib

    from mllgraph.errors import FailedPrecondition

    if args.service == "web":
        from mllgraph.web.app import main as web_main

        return web_main(list(args.args), settings)
    module_name = f"services.{args.service}"
    if args.service == "inference" and any(
        a.split("=", 1)[0] in ("--replicas", "--ports") for a in args.args
    ):
        module_name = "services.replicas"  # N inference processes (services/replicas.py)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name not in ("services", module_name):
            raise
        raise FailedPrecondition(
            f"the {args.service} service is not part of this installation ({module_name})"
        ) from e
    return int(module.main(list(args.args)) or 0)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run a gRPC service or the web page until SIGTERM/SIGINT")
    p.add_argument("service", choices=["selection", "ingestion", "inference", "web"])
    p.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        help="the service's own flags (--port N, --host H, --insecure, --metrics-port N); "
        "inference also --replicas N or --ports P1,P2 (one process each); "
        "web: --host, --port (default 8080), --target, --local-services",
    )
    p.set_defaults(handler=cmd_serve)
