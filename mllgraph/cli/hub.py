"""`mllgraph hub build`: the standard hub (the SDAG, probes, experts, labels); `mllgraph hub
emoji ...`: the emoji world's images (`mllgraph.cli.emoji`).

Imports the library (mllgraph.graph, hub, label) inside the handler only (the CLI must start
fast); never mllgraph.web or mllgraph.eval.
"""

from __future__ import annotations

import argparse

from mllgraph.cli import emoji
from mllgraph.cli.common import console, executor_flag, with_executor
from mllgraph.settings import Settings


def cmd_hub(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph.graph import db, sdag
    from mllgraph.graph.wordnet import load_nouns
    from mllgraph.hubs.fashion import build as hub
    from mllgraph.label import work as label_work

    settings = with_executor(settings, args)
    with db.connect(settings) as graph:
        sdag.load(graph, load_nouns(settings.wordnet_dir))
        hub.build(
            graph,
            settings,
            experts=args.experts,
            seed=args.seed,
            epochs=args.epochs,
            imagenet=() if args.no_imagenet else hub.registry.BUILTINS,
            probes_per_class=args.probes_per_class,
            max_train_per_expert=args.max_train,
            label_options=label_work.LabelOptions(samples_per_concept=args.samples_per_concept),
            log=console.print,
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hub", help="build the standard hub (probes, experts, labels)")
    s = p.add_subparsers(dest="action", required=True)
    q = s.add_parser("build")
    q.add_argument("--experts", type=int, default=20, help="Fashion-MNIST experts to train")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--epochs", type=int, default=2)
    q.add_argument("--no-imagenet", action="store_true", help="skip EfficientNet-Lite0/1/2")
    q.add_argument(
        "--probes-per-class",
        type=int,
        default=None,
        help="Fashion-MNIST probe images per class (default: all 1,000; the demo's hub: 300; "
        "a hub keeps one size: another is refused)",
    )
    q.add_argument(
        "--max-train",
        type=int,
        default=None,
        help="training images per expert (default: all; the demo's hub: 4000, epochs 1, 300 "
        "probes per class, 50 samples per concept, so `--experts 50 --epochs 1 --max-train "
        "4000 --probes-per-class 300 --samples-per-concept 50` on it trains and labels only "
        "the new experts)",
    )
    q.add_argument("--samples-per-concept", type=int, default=200)
    executor_flag(q)
    q.set_defaults(handler=cmd_hub)
    emoji.register(s)
