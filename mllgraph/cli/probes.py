"""`mllgraph probes add|list|remove`: probe images attached to concepts; `add --folder
--target` streams a folder to a running ingestion service.

Imports numpy, the library (mllgraph.graph, hub) and the client inside the handler only (the
CLI must start fast); never mllgraph.web or mllgraph.eval.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mllgraph.cli.common import console, rows_table, target_flags
from mllgraph.errors import InvalidArgument
from mllgraph.settings import Settings


def _print_probe_report(attached: list[dict[str, Any]], refused: list, stale: list[str]) -> None:
    for a in attached:
        state = "added" if a["created"] else "already there"
        console.print(
            f"{state}: {a['folder']}/ → {a['concept']} ({a['wnid']}): {a['images']} "
            f"images as {a['set_id']}"
        )
    for path, reason in refused:
        console.print(f"refused: {path}: {reason}")
    if stale:
        console.print(f"stale (relabel with `mllgraph models label --stale`): {', '.join(stale)}")


def cmd_probes(args: argparse.Namespace, settings: Settings) -> int:
    import numpy as np

    from mllgraph.graph import db
    from mllgraph.hub import probes

    if args.action == "add" and getattr(args, "target", None):
        from mllgraph import client as mc

        if not args.folder or args.images or args.concept or args.id:
            raise InvalidArgument("probes add --target: --folder only (streamed with AddProbes)")
        with mc.Client(args.target, settings=settings, timeout=args.timeout) as client:
            report = client.add_probes(Path(args.folder), source=args.source)
        _print_probe_report(report.attached, report.refused, report.stale_models)
        return 0
    with db.connect(settings) as graph:
        if args.action == "add" and args.folder:
            from mllgraph.ground import resolve
            from mllgraph.hub import probe_folder

            if args.images or args.concept or args.id:
                raise InvalidArgument("probes add --folder: no --images, --concept or --id")
            report = probe_folder.add_folder(
                graph,
                settings,
                Path(args.folder),
                ground=resolve.grounder(settings),
                source=args.source,
            )
            _print_probe_report(
                report.attached,
                [(r["path"], r["reason"]) for r in report.refused],
                report.stale_models,
            )
        elif args.action == "add":
            if not args.images or not args.concept:
                raise InvalidArgument("probes add: --concept and --images (or --folder)")
            data = np.load(args.images)
            images = data["images"] if hasattr(data, "files") else data
            ps, created = probes.add_probe_set(
                graph,
                settings,
                concept=args.concept,
                images=images,
                set_id=args.id,
                source=args.source,
            )
            console.print(
                f"{'added' if created else 'already there'}: {ps.id} → {ps.concept} "
                f"({ps.count} images)"
            )
        elif args.action == "list":
            rows = [p.__dict__ for p in probes.probe_sets(graph)]
            console.print(rows_table(rows, "probe sets"))
        elif args.action == "remove":
            probes.remove_probe_set(graph, args.id, settings)
            console.print(f"removed {args.id}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probes", help="probe images attached to concepts")
    s = p.add_subparsers(dest="action", required=True)
    q = s.add_parser("add", help="register images (.npy, or .npz with 'images') for a concept")
    q.add_argument("--concept", help="wnid or name")
    q.add_argument("--images")
    q.add_argument(
        "--folder",
        help="one sub-folder per concept (wnid, name.n.NN or a class name) of JPEG/PNG files",
    )
    q.add_argument("--id")
    q.add_argument(
        "--source",
        default="",
        help="where the images come from (a dataset, an art style); where a concept has probe "
        "sets from two sources or more, selection's stacked-rule estimate holds one out at a time",
    )
    target_flags(q, "send --folder's images to a running ingestion service (AddProbes)")
    s.add_parser("list")
    q = s.add_parser("remove")
    q.add_argument("id")
    p.set_defaults(handler=cmd_probes)
