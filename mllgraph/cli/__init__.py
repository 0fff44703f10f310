"""The `mllgraph` command line: `main` (the console script `mllgraph.cli:main`, and
`python -m mllgraph`) and `build_parser`, which lets each command module add its sub-parsers.

One module per command group (neo4j, sdag, models, probes, hub (and emoji, its `hub emoji`
sub-group), query, select (select and classify), serve, tokens, bench, demo), each with
`register(subparsers)`; what they share is
in `common`. They import heavy modules (torch, nltk, the library steps, the services) inside
their handlers only, so the CLI starts fast. Outside this package only mllgraph/__main__.py
(and the console script) import it.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from mllgraph import threads
from mllgraph.cli import (
    bench,
    demo,
    hub,
    models,
    neo4j,
    probes,
    query,
    sdag,
    select,
    serve,
    tokens,
)
from mllgraph.cli.common import Handler
from mllgraph.errors import MllgraphError
from mllgraph.settings import Settings

# The description `mllgraph --help` prints (the docstring of the former single-file CLI).
DESCRIPTION = """The `mllgraph` command line.

Each subcommand is a small function taking parsed args and Settings; domain errors become
one line on stderr and exit status 1 (argparse's usage errors exit 2).
"""

# In `mllgraph --help` order.
COMMAND_MODULES = (neo4j, sdag, models, probes, hub, query, select, serve, tokens, bench, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mllgraph", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings or Settings.from_env()
    handler: Handler = args.handler
    try:
        threads.set_blas_threads(settings.blas_threads)
        threads.work_threads(settings.work_threads)  # a bad count: refused now, not per request
        return handler(args, settings)
    except MllgraphError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        return 130
    finally:
        _shutdown_ray()


def _shutdown_ray() -> None:
    """Shut down a Ray this command started or joined (labelling with the ray executor)."""
    executor = sys.modules.get("mllgraph.hub.executor")  # a no-op unless Ray was started here
    if executor is not None:
        executor.shutdown()
