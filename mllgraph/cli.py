"""The `mllgraph` command line.

Each subcommand is a small function taking parsed args and Settings; domain errors become
one line on stderr and exit status 1 (argparse's usage errors exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from mllgraph.errors import MllgraphError
from mllgraph.settings import Settings

console = Console()
Handler = Callable[[argparse.Namespace, Settings], int]


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        TextColumn("{task.completed:>7,}/{task.total:<7,}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _table(rows: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(title=title)
    for key in rows[0] if rows else []:
        table.add_column(str(key))
    for row in rows:
        table.add_row(
            *(json.dumps(v) if isinstance(v, list | dict) else str(v) for v in row.values())
        )
    return table


# -- neo4j -----------------------------------------------------------------------------------


def cmd_neo4j(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph import neo4j_server

    if args.action == "start":
        with console.status("starting Neo4j (the first start fetches it from Maven Central)"):
            pid, seconds = neo4j_server.start(settings)
        console.print(f"Neo4j {neo4j_server.NEO4J_VERSION} answers on {settings.bolt_uri} "
                      f"(pid {pid}, {seconds:.1f} s)")  # fmt: skip
    elif args.action == "stop":
        stopped = neo4j_server.stop(settings)
        console.print("Neo4j stopped" if stopped else "no project-managed Neo4j was running")
    else:
        console.print_json(data=neo4j_server.status(settings))
    return 0


# -- sdag ------------------------------------------------------------------------------------


def cmd_sdag(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph import db, sdag

    with db.connect(settings) as graph:
        if args.action == "load":
            from mllgraph.wordnet import load_nouns

            wn = load_nouns(settings.wordnet_dir)
            with _progress() as progress:
                tasks: dict[str, TaskID] = {}

                def report(phase: str, done: int, total: int) -> None:
                    if phase not in tasks:
                        tasks[phase] = progress.add_task(phase, total=total)
                    progress.update(tasks[phase], completed=done)

                report_ = sdag.load(graph, wn, force=args.force, progress=report)
            state = "already complete" if report_.skipped else f"loaded in {report_.seconds:.1f} s"
            console.print(f"SDAG {state}: verified DAG rooted at entity.n.01")
            _print_stats(graph)
        elif args.action == "stats":
            _print_stats(graph)
        elif args.action == "show":
            found = sdag.concepts(graph, args.concepts)
            console.print(_table(list(found.values())))
        elif args.action == "ancestors":
            console.print(
                _table(sdag.ancestors(graph, args.concept), f"ancestors of {args.concept}")
            )
        elif args.action == "descendants":
            total, rows = sdag.descendants(graph, args.concept, limit=args.limit)
            console.print(
                _table(rows, f"{total} descendants of {args.concept} (first {len(rows)})")
            )
        elif args.action == "lca":
            rows = sdag.lowest_common_ancestors(graph, args.concepts)
            console.print(_table(rows, "lowest common ancestors"))
        elif args.action == "lemma":
            console.print(_table(sdag.by_lemma(graph, args.text), f"concepts named {args.text!r}"))
        elif args.action == "add-concept":
            row = sdag.add_concept(
                graph,
                name=args.name,
                definition=args.definition,
                parents=args.parent,
                children=args.child,
                lemmas=args.lemma,
                wnid=args.wnid,
            )
            console.print(f"added {row['name']} ({row['wnid']}) at depth {row['depth']}")
    return 0


def _print_stats(graph: Any) -> None:
    from mllgraph import sdag

    c = sdag.counts(graph)
    console.print(
        f"concepts {c['concepts']:,} (user-added {c['added']:,}) · IS_A {c['is_a']:,} "
        f"(instance-of {c['instance_of']:,}) · lemmas {c['lemmas']:,}"
    )


# -- bench -----------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph import bench

    figures = bench.run(args.what, settings, args)
    console.print_json(data=figures)
    return 0


# -- demo (README command 1) -----------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph import demo

    return demo.run(settings, console, args)


# -- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mllgraph", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("neo4j", help="run the project-managed local Neo4j")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.set_defaults(handler=cmd_neo4j)

    p = sub.add_parser("sdag", help="the WordNet concept graph in Neo4j")
    s = p.add_subparsers(dest="action", required=True)
    q = s.add_parser("load", help="load WordNet 3.0 nouns (idempotent, resumable)")
    q.add_argument("--force", action="store_true", help="re-run every batch even if complete")
    s.add_parser("stats", help="counts")
    q = s.add_parser("show", help="concepts by wnid or name")
    q.add_argument("concepts", nargs="+")
    q = s.add_parser("ancestors")
    q.add_argument("concept")
    q = s.add_parser("descendants")
    q.add_argument("concept")
    q.add_argument("--limit", type=int, default=20)
    q = s.add_parser("lca", help="lowest common ancestors")
    q.add_argument("concepts", nargs="+")
    q = s.add_parser("lemma", help="concepts a word names")
    q.add_argument("text")
    q = s.add_parser("add-concept", help="attach a concept WordNet lacks")
    q.add_argument("--name", required=True, help="e.g. 'hoodie.n.01'")
    q.add_argument("--definition", required=True)
    q.add_argument("--parent", action="append", required=True, help="wnid (repeatable)")
    q.add_argument("--child", action="append", default=[], help="wnid to put under it")
    q.add_argument("--lemma", action="append", default=None, help="word naming it")
    q.add_argument("--wnid", default=None, help="default: 'u' + 8 digits from the name")
    p.set_defaults(handler=cmd_sdag)

    p = sub.add_parser("bench", help="benchmarks (print figures, write reports/*.json)")
    p.add_argument("what", choices=["sdag"])
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reports")
    p.set_defaults(handler=cmd_bench)

    p = sub.add_parser("demo", help="the main job, end to end (README command 1)")
    p.set_defaults(handler=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except MllgraphError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
