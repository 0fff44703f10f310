"""`mllgraph bench WHAT`: the benchmarks (mllgraph.eval.bench) and the zero-shot study
(`bench zeroshot`, mllgraph.eval.zeroshot); they print figures and write reports/.

Imports mllgraph.eval and the library inside the handlers only (the CLI must start fast);
never mllgraph.web.
"""

from __future__ import annotations

import argparse

from mllgraph.cli.common import console, ints, rows_table
from mllgraph.settings import Settings


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph.eval import bench

    if args.what == "zeroshot":
        return cmd_zeroshot(args, settings)
    if args.what == "none":
        return cmd_none(args, settings)
    figures = bench.run(args.what, settings, args)
    console.print_json(data=figures)
    return 0


def cmd_zeroshot(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from mllgraph.eval import zeroshot
    from mllgraph.eval.tasks import load_suite
    from mllgraph.graph import db, sdag
    from mllgraph.graph.wordnet import load_nouns

    suite = load_suite(args.tasks)  # refuses an invalid file before any work
    config = zeroshot.ZeroShotConfig(
        experts=args.experts,
        seeds=args.seeds,
        hub_sizes=args.hub_sizes,
        epochs=args.epochs,
        max_train_per_expert=args.max_train,
        probes_per_class=args.probes_per_class,
        samples_per_concept=args.samples_per_concept,
        test_per_class=args.test_per_class,
        budget=args.budget,
        imagenet=not args.no_imagenet,
        oracle=not args.no_oracle,
        grpc=not args.in_process,
        photos=not args.no_photos,
        out_dir=Path(args.out),
        name=args.name,
    )
    with db.connect(settings) as graph:
        sdag.load(graph, load_nouns(settings.wordnet_dir))
        report = zeroshot.run(graph, settings, suite, config, log=console.print)
    paths = zeroshot.write(report, config.out_dir, config.name)
    title = f"{len(report.main)} tasks: mean accuracy per half"
    console.print(rows_table(zeroshot.halves_rows(report), title))
    console.print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_none(args: argparse.Namespace, settings: Settings) -> int:
    """ "None of these" on the Fashion probe pool (mllgraph.eval.none_study)."""
    from pathlib import Path

    from mllgraph.eval import none_study
    from mllgraph.eval.summary import write_json
    from mllgraph.eval.tasks import load_suite
    from mllgraph.graph import db

    suite = load_suite(args.tasks)
    out = Path(args.out) / "none_of_these.json"
    with db.connect(settings) as graph:
        report = none_study.run_fashion(
            graph,
            settings,
            suite,
            per_class=args.none_per_class,
            budget=args.budget,
            log=console.print,
            logits_dir=Path(args.logits_dir) if args.logits_dir else None,
            out=out,
        )
    path = write_json(out, report)
    console.print_json(data={"halves": report["halves"], "all": report["all"]})
    console.print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (print figures, write reports/*.json)")
    p.add_argument(
        "what",
        choices=["sdag", "ingest", "label", "select", "infer", "reliability", "zeroshot", "none"],
    )
    p.add_argument(
        "--sizes",
        default=None,
        help="infer: request batch sizes (default 1,32,256); select: hub sizes in models "
        "(default 10,100,1000; 10000 takes long)",
    )
    p.add_argument(
        "--cpu-chunks",
        type=ints,
        default=None,
        help="infer: also run with these CPU chunk sizes (images per forward pass, 0 = whole "
        "batch), side by side, e.g. 0,4,8,16",
    )
    p.add_argument("--requests", type=int, default=30, help="select/ingest: requests per series")
    p.add_argument("--models", type=int, default=1000, help="ingest: synthetic models")
    p.add_argument("--samples-per-concept", type=int, default=100)
    p.add_argument(
        "--workers",
        type=ints,
        default=None,
        help="label: also label the models on a local Ray of N workers for each N, e.g. 1,2",
    )
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reports")
    g = p.add_argument_group("reliability")
    g.add_argument("--quick", action="store_true", help="a few seconds per check, fewer checks")
    g.add_argument("--checks", help="comma-separated subset, e.g. load,bad_inputs,auth")
    g.add_argument("--seconds", type=float, default=10.0, help="seconds per load series")
    g.add_argument(
        "--deadline", type=float, default=10.0, help="client deadline (s) of the fault checks' RPCs"
    )
    g = p.add_argument_group("zeroshot")
    g.add_argument("--tasks", help="task suite JSON (default: the shipped dev + test suite)")
    g.add_argument("--experts", type=int, default=50, help="Fashion experts per hub seed")
    g.add_argument("--seeds", type=ints, default=(0, 1, 2), help="hub seeds, e.g. 0,1,2")
    g.add_argument("--hub-sizes", type=ints, default=(5, 10, 20, 50), help="hub sizes to study")
    g.add_argument("--epochs", type=int, default=2)
    g.add_argument("--max-train", type=int, default=None, help="training images per expert")
    g.add_argument("--probes-per-class", type=int, default=None)
    g.add_argument("--test-per-class", type=int, default=300)
    g.add_argument("--budget", type=int, default=5)
    g.add_argument("--no-imagenet", action="store_true")
    g.add_argument("--no-oracle", action="store_true")
    g.add_argument("--in-process", action="store_true", help="library calls instead of gRPC")
    g.add_argument(
        "--no-photos", action="store_true", help="skip the photos suite (real photos, gRPC only)"
    )
    g.add_argument("--name", default="zeroshot", help="report file stem under --out")
    g = p.add_argument_group("none (also --tasks, --budget)")
    g.add_argument(
        "--none-per-class", type=int, default=100, help="Fashion-MNIST test images per class"
    )
    g.add_argument("--logits-dir", help="keep the models' test-image logits here (reruns reuse)")
    p.set_defaults(handler=cmd_bench)
