"""What the command modules share: the rich console, tables of rows, the progress bar, the
comma-separated integer argument type, the --executor and --target flags.

Imports only the standard library, rich and mllgraph.settings: every command module imports
this at CLI start, so nothing heavy (torch, nltk, the library steps) may come in here.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from mllgraph.settings import Settings

# Pipes and CI logs get 120 columns rather than rich's 80, so tables are not cut.
console = Console(width=None if sys.stdout.isatty() else 120)
Handler = Callable[[argparse.Namespace, Settings], int]


class _CountColumn(ProgressColumn):
    """`done/total` with thousands separators; `?` while the total is unknown (a task added
    with `total=None`, as `models label` does until the labeller reports it)."""

    def render(self, task: Task) -> Text:
        total = "?" if task.total is None else f"{int(task.total):,}"
        return Text(f"{int(task.completed):>7,}/{total:<7}")


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        _CountColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def rows_table(rows: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(title=title)
    for key in rows[0] if rows else []:
        table.add_column(str(key))
    for row in rows:
        table.add_row(
            *(json.dumps(v) if isinstance(v, list | dict) else str(v) for v in row.values())
        )
    return table


def ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def executor_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor",
        choices=["local", "ray"],
        default=None,
        help="where labelling runs: this process, or one Ray task per model "
        "(default: MLLGRAPH_EXECUTOR, else local)",
    )


def with_executor(settings: Settings, args: argparse.Namespace) -> Settings:
    """`--executor` overrides MLLGRAPH_EXECUTOR for this command."""
    return replace(settings, executor=args.executor) if args.executor else settings


def target_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--target", help=f"HOST (default ports) or HOST:PORT of the services: {what}"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="deadline, seconds")
