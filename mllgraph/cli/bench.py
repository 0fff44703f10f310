"""`mllgraph bench WHAT`: the benchmarks (mllgraph.eval.bench) and the zero-shot study
(`bench zeroshot`, mllgraph.eval.zeroshot); they print figures and write reports/.

Imports mllgraph.eval and the library inside the handlers only (the CLI must start fast);
never mllgraph.web.
"""

from __future__ import annotations

import argparse

from mllgraph.cli.common import console, ints, rows_table
from mllgraph.eval.bench import BENCHES
from mllgraph.settings import Settings


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph.eval import bench

    if args.what == "zeroshot" and args.world == "emoji":
        return cmd_zeroshot_emoji(args, settings)
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
        test_per_class=args.test_per_class or 300,
        budget=args.budget,
        imagenet=not args.no_imagenet,
        expert_recipe=not args.no_expert_recipe,
        supervised=not args.no_supervised,
        supervised_arch=args.supervised_arch,
        references=not args.no_references,
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


def cmd_zeroshot_emoji(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from mllgraph.eval import emoji_suite, emoji_world
    from mllgraph.graph import db, sdag
    from mllgraph.graph.wordnet import load_nouns
    from mllgraph.hubs.emoji.catalogue import STYLES, check_style
    from mllgraph.hubs.emoji.experts import Recipe

    suite = emoji_suite.load_suite(args.tasks)  # refuses an invalid file before any work
    held_out = (
        tuple(check_style(s.strip()) for s in args.held_out.split(",")) if args.held_out else STYLES
    )
    config = emoji_world.EmojiConfig(
        held_out=held_out,
        per_style=args.per_style,
        per_emoji=args.per_emoji,
        tasks_per_half=args.tasks_per_half,
        budget=args.budget,
        seed=args.seed,
        hindsight=not args.no_references,
        out_dir=Path(args.out),
        name=args.name if args.name != "zeroshot" else "zeroshot_emoji",
        emoji_experts=args.emoji_experts,
        expert_groups=tuple(args.expert_groups.split(",")) if args.expert_groups else None,
        expert_archs=tuple(a.strip() for a in args.expert_archs.split(",")),
        expert_recipe=Recipe(epochs=args.expert_epochs, per_emoji=args.expert_per_emoji),
        train_styles=tuple(args.train_styles.split(",")) if args.train_styles else None,
        curve=not args.no_curve,
    )
    with db.connect(settings) as graph:
        sdag.load(graph, load_nouns(settings.wordnet_dir))
        report = emoji_world.run(graph, settings, suite, config, log=console.print)
    paths = emoji_world.write(report, config.out_dir, config.name)
    console.print(emoji_world.first_line(report))
    title = (
        f"{report.counts['suite_tasks']} tasks x {len(report.runs)} held-out styles: mean accuracy"
    )
    console.print(rows_table(emoji_world.halves_rows(report), title))
    for half, c in report.hub_comparison.items():
        console.print(
            f"MLL {half} ({c['tasks']} tasks): ImageNet experts only {c['imagenet_only']:.3f}, "
            f"with emoji experts {c['with_emoji_experts']:.3f} ({c['difference']:+.3f})"
        )
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
        # The registered benchmarks, and the two this module runs itself.
        choices=[*BENCHES, "zeroshot", "none"],
    )
    p.add_argument(
        "--sizes",
        default=None,
        help="infer: request batch sizes (default 1,32,256); select: hub sizes in models "
        "(default 10,100,1000; 10000 takes long); grounding: task sizes (default 3,10,30)",
    )
    p.add_argument(
        "--cpu-chunks",
        type=ints,
        default=None,
        help="infer: also run with these CPU chunk sizes (images per forward pass, 0 = whole "
        "batch), side by side, e.g. 0,4,8,16",
    )
    p.add_argument("--requests", type=int, default=30, help="select/ingest: requests per series")
    g = p.add_argument_group("select on a real hub")
    g.add_argument(
        "--hub",
        metavar="NAME",
        help="select: measure the real hub at MLLGRAPH_HOME (served by `mllgraph serve`) as "
        "series NAME, e.g. main, fashion50: new and repeated tasks through gRPC, and whole "
        "commands; merged into reports/bench_select.{json,md}",
    )
    g.add_argument(
        "--runs",
        type=int,
        default=5,
        help="select --hub: runs of each whole command (0: none); cost-repeat: measurements "
        "per model, quiet and again loaded",
    )
    g.add_argument(
        "--series-budget-s",
        type=float,
        default=None,
        help="select --hub: stop a series (or a command's runs) after this many seconds, one "
        "request at least (a loaded machine); default: no limit",
    )
    g = p.add_argument_group("cost-repeat")
    g.add_argument(
        "--load",
        type=int,
        default=2,
        help="cost-repeat: CPU-bound processes beside the loaded half (default 2)",
    )
    g.add_argument(
        "--models-like",
        default="",
        help="cost-repeat: only models whose id contains this (default: every model)",
    )
    g.add_argument(
        "--fronts",
        nargs="+",
        metavar="REPORT",
        help="cost-repeat: reports whose tasks carry their cost_front (e.g. a bench zeroshot "
        "JSON): how often the served plan changes with the measured costs",
    )
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
    g = p.add_argument_group("patch")
    g.add_argument(
        "--before",
        help="patch: a report of the same study on the previous code, shown side by side",
    )
    g = p.add_argument_group("grounding")
    g.add_argument(
        "--tasks-per-size",
        type=int,
        default=500,
        help="random tasks per half (dev, test) and task size, in each mode",
    )
    g.add_argument(
        "--names",
        action="append",
        help="an extra name list (JSON [{name, wnid}] or TSV name<TAB>wnid), e.g. the emoji "
        "world's concept names; repeatable",
    )
    g = p.add_argument_group("zeroshot")
    g.add_argument(
        "--tasks",
        help="task suite JSON (default: the shipped dev + test suite; cost: the demo's tasks)",
    )
    g.add_argument("--experts", type=int, default=50, help="Fashion experts per hub seed")
    g.add_argument("--seeds", type=ints, default=(0, 1, 2), help="hub seeds, e.g. 0,1,2")
    g.add_argument("--hub-sizes", type=ints, default=(5, 10, 20, 50), help="hub sizes to study")
    g.add_argument("--epochs", type=int, default=2)
    g.add_argument("--max-train", type=int, default=None, help="training images per expert")
    g.add_argument("--probes-per-class", type=int, default=None)
    g.add_argument(
        "--test-per-class", type=int, default=None, help="test images per class (300; cost: 50)"
    )
    g.add_argument("--budget", type=int, default=5)
    g.add_argument("--no-imagenet", action="store_true")
    g.add_argument(
        "--no-expert-recipe",
        "--no-oracle",  # its old name
        dest="no_expert_recipe",
        action="store_true",
        help="skip the expert-recipe model (the hub's expert architecture trained per task)",
    )
    g.add_argument("--no-supervised", action="store_true", help="skip the supervised reference")
    g.add_argument(
        "--supervised-arch",
        choices=("mlp", "cnn"),
        default="mlp",
        help="the supervised reference's network (eval/supervised; cnn: ~10x the CPU time)",
    )
    g.add_argument(
        "--no-references",
        action="store_true",
        help="skip the hindsight, stack-all and summed-subtree references",
    )
    g.add_argument("--in-process", action="store_true", help="library calls instead of gRPC")
    g.add_argument(
        "--no-photos", action="store_true", help="skip the photos suite (real photos, gRPC only)"
    )
    g.add_argument("--name", default="zeroshot", help="report file stem under --out")
    g.add_argument(
        "--world",
        choices=("fashion", "emoji"),
        default="fashion",
        help="fashion: the Fashion-MNIST suite (probe-pool); emoji: leave one style out",
    )
    g = p.add_argument_group("none (also --tasks, --budget)")
    g.add_argument(
        "--none-per-class", type=int, default=100, help="Fashion-MNIST test images per class"
    )
    g.add_argument("--logits-dir", help="keep the models' test-image logits here (reruns reuse)")
    g = p.add_argument_group("zeroshot --world emoji")
    g.add_argument("--held-out", help="held-out styles, comma-separated (default: all four)")
    g.add_argument("--per-style", type=int, default=4, help="probe images per concept and style")
    g.add_argument("--per-emoji", type=int, default=20, help="task images per held-out emoji")
    g.add_argument(
        "--tasks-per-half", type=int, default=None, help="first N tasks of each half (all)"
    )
    g.add_argument(
        "--emoji-experts",
        action="store_true",
        help="train (cached) and add emoji experts per held-out style: experts, probes and "
        "tasks then come from three different styles",
    )
    g.add_argument("--expert-groups", help="comma-separated concept groups (default: all)")
    g.add_argument(
        "--expert-archs", default="test_resnet,test_mambaout", help="comma-separated archs"
    )
    g.add_argument("--expert-epochs", type=int, default=12)
    g.add_argument("--expert-per-emoji", type=int, default=16, help="training images per emoji")
    g.add_argument(
        "--train-styles",
        help="the experts' training styles for every held-out style (default: a rotation; "
        "the probes come from the styles left)",
    )
    g.add_argument("--no-curve", action="store_true", help="skip the group-by-group hub curve")
    p.set_defaults(handler=cmd_bench)
