"""`mllgraph sdag ...`: load and browse the WordNet concept graph (SDAG) in Neo4j.

Imports mllgraph.graph inside the handlers only (the CLI must start fast); never mllgraph.web
or mllgraph.eval.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.progress import TaskID

from mllgraph.cli.common import console, progress_bar, rows_table
from mllgraph.settings import Settings


def cmd_sdag(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph.graph import db, sdag

    with db.connect(settings) as graph:
        if args.action == "load":
            from mllgraph.graph.wordnet import load_nouns

            wn = load_nouns(settings.wordnet_dir)
            with progress_bar() as progress:
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
            console.print(rows_table(list(found.values())))
        elif args.action == "ancestors":
            console.print(
                rows_table(sdag.ancestors(graph, args.concept), f"ancestors of {args.concept}")
            )
        elif args.action == "descendants":
            total, rows = sdag.descendants(graph, args.concept, limit=args.limit)
            console.print(
                rows_table(rows, f"{total} descendants of {args.concept} (first {len(rows)})")
            )
        elif args.action == "lca":
            rows = sdag.lowest_common_ancestors(graph, args.concepts)
            console.print(rows_table(rows, "lowest common ancestors"))
        elif args.action == "lemma":
            console.print(
                rows_table(sdag.by_lemma(graph, args.text), f"concepts named {args.text!r}")
            )
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
    from mllgraph.graph import sdag

    c = sdag.counts(graph)
    console.print(
        f"concepts {c['concepts']:,} (user-added {c['added']:,}) · IS_A {c['is_a']:,} "
        f"(instance-of {c['instance_of']:,}) · lemmas {c['lemmas']:,}"
    )


def register(sub: argparse._SubParsersAction) -> None:
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
