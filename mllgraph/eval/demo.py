"""The main job (README command 1): MLL end to end on the project-managed local Neo4j.

Start Neo4j, load the SDAG, register the EfficientNet-Lite experts and train a small
Fashion-MNIST hub, label every model on the probe pool, start the three gRPC services, run a
handful of zero-shot tasks through them and print MLL against the baselines (the Fashion
world: probe-pool). Then a small emoji world beside it (`demo_emoji`: a held-out art style,
true zero-shot, with its references and a hub-size curve), which leaves the catalogue as the
Fashion world found it. A second run reuses the graph, the trained experts and labels.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from mllgraph.settings import Settings

if TYPE_CHECKING:
    from mllgraph.eval.zeroshot import ZeroShotReport

DEMO_TASKS = (
    "footwear-garment-bag",
    "tee-trousers-handbag",
    "footwear-3",
    "lookalike-tops",
    "mixed-6a",
    "all-ten-synonyms",
    "reworded-british-a",
    "reworded-british-b",
)


def run(settings: Settings, console: Console, args: argparse.Namespace) -> int:
    from mllgraph.eval import zeroshot
    from mllgraph.eval.tasks import Suite, load_suite
    from mllgraph.graph import db, neo4j_server, sdag
    from mllgraph.graph.wordnet import load_nouns

    t0 = time.perf_counter()
    console.rule("1. Neo4j")
    if settings.uses_local_neo4j:
        with console.status("starting Neo4j (the first start fetches it from Maven Central)"):
            pid, seconds = neo4j_server.start(settings)
        console.print(f"Neo4j answers on {settings.bolt_uri} (pid {pid}, {seconds:.1f} s)")
    console.rule("2. The SDAG: WordNet 3.0 nouns")
    with db.connect(settings, start_local=False) as graph, console.status("loading the SDAG"):
        loaded = sdag.load(graph, load_nouns(settings.wordnet_dir))
    console.print(
        "SDAG " + ("already complete" if loaded.skipped else f"loaded in {loaded.seconds:.1f} s")
    )
    with db.connect(settings, start_local=False) as graph:
        rows = sdag.ancestors(graph, "sandal.n.01")
        console.print("ancestors of sandal.n.01: " + " → ".join(r["name"] for r in rows))

        console.rule("3. The hub: EfficientNet-Lite0/1/2 + Fashion-MNIST experts, labelled")
        suite = load_suite()
        suite = Suite(suite.name, tuple(t for t in suite.tasks if t.name in DEMO_TASKS))
        config = zeroshot.ZeroShotConfig(
            experts=12,
            seeds=(0,),
            hub_sizes=(3, 6, 12),
            epochs=1,
            max_train_per_expert=4000,
            probes_per_class=300,
            samples_per_concept=50,
            test_per_class=50,
            budget=5,
            out_dir=Path("reports"),
            name="demo",
        )
        console.rule("4. Zero-shot tasks through gRPC (selection + inference services)")
        report = zeroshot.run(graph, settings, suite, config, log=console.print)
    paths = zeroshot.write(report, config.out_dir, config.name)
    show_fashion(console, report)
    if not getattr(args, "no_emoji", False):
        from mllgraph.eval import demo_emoji

        console.rule("6. The emoji world: a held-out art style, true zero-shot")
        with db.connect(settings, start_local=False) as graph:
            paths += demo_emoji.run(graph, settings, console)[1]
    console.print(f"reports: {', '.join(str(p) for p in paths)}")
    console.print(f"done in {time.perf_counter() - t0:.0f} s")
    url = f"http://127.0.0.1:{settings.web_port}/"
    if getattr(args, "serve", False):
        from mllgraph.web import app as web

        console.rule(f"7. The web page: {url} (Ctrl-C stops it)")
        return web.main(["--local-services", "--port", str(settings.web_port)], settings)
    console.print(
        f"Try your own images and class names in a browser: `mllgraph serve web "
        f"--local-services`, then {url} (or `mllgraph demo --serve`)"
    )
    return 0


FASHION_WORLD = (
    "Fashion-MNIST world (probe-pool): probes drawn from the same distribution as the test "
    "images (Fashion-MNIST train split; tasks on its test split)"
)


def show_fashion(console: Console, report: ZeroShotReport) -> None:
    """The Fashion world's results: every task against the
    references, both halves, the hub-size study, the photos tasks and the cost."""
    from mllgraph.eval import evaluate, zeroshot

    console.rule("5. Results: the Fashion-MNIST world (probe-pool)")
    console.print(f"{FASHION_WORLD}.")
    methods = [
        "mll", "stack_all", "hindsight", "imagenet_subtree", "supervised", "expert_recipe",
        "uniform", "single", "random", "conse",
    ]  # fmt: skip
    table = Table(title="Fashion world: accuracy on Fashion-MNIST test images")
    table.add_column("task")
    table.add_column("half")
    for m in methods:
        table.add_column(m.upper() if m == "mll" else m, justify="right")
    table.add_column("models", justify="right")
    table.add_column("uncovered (why; scored by)")
    for r in report.main:
        vals = [r["mll"]] + [r["baselines"].get(m) for m in methods[1:]]
        table.add_row(
            r["task"],
            r.get("split") or "-",
            *[_fmt(v) for v in vals],
            str(len(r["models"])),
            evaluate.TaskResult(**r).uncovered_text(),
        )
    mean = report.summary["mean_accuracy"]
    table.add_row("[bold]mean", "", *[f"[bold]{_fmt(mean.get(m))}" for m in methods], "", "")
    console.print(table)
    rows = zeroshot.halves_rows(report)
    halves = Table(
        title="both halves of the suite: mean accuracy and share of the supervised reference"
    )
    for key in rows[0] if rows else []:
        halves.add_column(key, justify="left" if key == "method" else "right")
    for row in rows:
        halves.add_row(*row.values())
    console.print(halves)
    console.print(f"{evaluate.MLL_USES}; {evaluate.REFERENCES_USE}.")
    for row in report.hub_size:
        half = row.get("split", "all tasks")
        console.print(
            f"hub of {row['experts']:>2} Fashion experts, {half}: MLL {_fmt(row.get('mll'))}"
        )
    for task in report.photos:
        photo_table = Table(
            title=f"photos: {task['task']} ({', '.join(task['classes'])}); "
            f"models {', '.join(task['models']) or '-'}"
        )
        for col in ("image", "truth", "MLL", "p", "heads that decided"):
            photo_table.add_column(col)
        for im in task["per_image"]:
            heads = ", ".join(f"{h['model_id']}:{h['head_label']}" for h in im["heads"][:3])
            photo_table.add_row(
                im["image"],
                im["truth"],
                ("" if im["right"] else "[red]") + im["mll"],
                f"{im['probability']:.2f}",
                "fallback (uncovered)" if im["used_fallback"] else heads,
            )
        console.print(photo_table)
    console.print(f"cost: {report.cost}")


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"
