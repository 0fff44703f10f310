"""`mllgraph bench zeroshot` and the demo: the whole pipeline end to end, with baselines,
accuracy against hub size, and cost.

The main run goes through the gRPC services (selection and inference started in-process on
free ports, each a real grpc.aio server); the hub-size study runs the same selection and
combination code in-process, since it makes hundreds of selections over model subsets.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.eval import evalset, references, summary
from mllgraph.eval import evaluate as ev
from mllgraph.eval.supervised import Supervised, SupervisedRecipe
from mllgraph.eval.tasks import SPLITS, Suite
from mllgraph.graph.db import Graph
from mllgraph.hub import registry
from mllgraph.hubs.fashion import build as hub
from mllgraph.plan.document import UNCOVERED_WHY
from mllgraph.settings import Settings

Log = ev.Log


@dataclass
class ZeroShotConfig:
    experts: int = 50  # experts per hub seed (the hub-size study uses prefixes of it)
    seeds: tuple[int, ...] = (0, 1, 2)
    hub_sizes: tuple[int, ...] = (5, 10, 20, 50)
    epochs: int = 2
    max_train_per_expert: int | None = None
    probes_per_class: int | None = None  # Fashion-MNIST probe images per class (all 1,000)
    samples_per_concept: int = 200  # probe images per concept used to label a model
    test_per_class: int = 300  # Fashion-MNIST test images per class
    budget: int = 5
    imagenet: bool = True
    expert_recipe: bool = True  # recipe: references.ExpertRecipe, derived from the experts' own
    supervised: bool = True  # eval/supervised: a network trained on all labelled train images
    supervised_arch: str = "mlp"  # "mlp" or "cnn" (eval/supervised)
    references: bool = True  # hindsight, stack_all and imagenet_subtree (evaluate's doc)
    grpc: bool = True
    photos: bool = True  # the photos suite (eval/photos.py), through gRPC with the ImageNet experts
    out_dir: Path = Path("reports")
    name: str = "zeroshot"


@dataclass
class ZeroShotReport:
    config: dict[str, Any]
    main: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    hub_size: list[dict[str, Any]] = field(default_factory=list)
    cost: dict[str, Any] = field(default_factory=dict)
    expert_recipe: dict[str, Any] | None = None  # the recipe, and its description
    supervised: dict[str, Any] | None = None  # its recipe, description and training figures
    halves: dict[str, Any] = field(default_factory=dict)  # summarise_halves of the main run
    photos: list[dict[str, Any]] = field(default_factory=list)  # photos.PhotoResult per task


def version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Natural order of version strings: digit runs compare as numbers (`e2` < `e10`)."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", version)
        if part
    )


def pick_versions(rows: list[dict[str, Any]], recipe: str | None = None) -> dict[str, str]:
    """{expert name: model id}, one version per name: the version of `recipe` (the one this
    run trained) when the name has it, else the newest registration (`created_at`), ties by
    the version's natural order (:func:`version_key`)."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_name.setdefault(r["name"], []).append(r)
    out = {}
    for name, versions in by_name.items():
        exact = [r for r in versions if recipe is not None and _version(r) == recipe]
        best = (
            exact[0]
            if exact
            else max(
                versions, key=lambda r: (str(r.get("created_at") or ""), version_key(_version(r)))
            )
        )
        out[name] = best["id"]
    return out


def _version(row: dict[str, Any]) -> str:
    return str(row.get("version") or row["id"].split("@", 1)[-1])


def _fashion_ids(graph: Graph, seed: int, n: int, recipe: str | None = None) -> list[str]:
    """The first `n` experts of hub `seed` (by name), one version each (:func:`pick_versions`)."""
    prefix = f"fashion-{seed}-"
    rows = registry.list_models(graph, name=prefix, limit=1000)
    by_name = pick_versions([r for r in rows if r["name"].startswith(prefix)], recipe)
    return [by_name[k] for k in sorted(by_name)][:n]


def _recipe(config: ZeroShotConfig) -> str:
    """The version string of the experts this config trains (`hub.recipe_version`)."""
    return hub.recipe_version(
        {"epochs": config.epochs, "max_train": config.max_train_per_expert, "hub_seed": 0}
    )


def run(
    graph: Graph, settings: Settings, suite: Suite, config: ZeroShotConfig, log: Log = print
) -> ZeroShotReport:
    t_all = time.perf_counter()
    from mllgraph.eval.bench.common import git_commit

    report = ZeroShotReport(
        config={**asdict(config), "out_dir": str(config.out_dir), "commit": git_commit()}
    )
    imagenet = registry.BUILTINS if config.imagenet else ()
    t = time.perf_counter()
    for i, seed in enumerate(config.seeds):
        hub.build(
            graph,
            settings,
            experts=config.experts,
            seed=seed,
            split_seed=0,
            epochs=config.epochs,
            imagenet=imagenet if i == 0 else (),
            probes_per_class=config.probes_per_class,
            max_train_per_expert=config.max_train_per_expert,
            label_options=_label_options(config),
            log=log,
        )
    hub_s = time.perf_counter() - t

    images = evalset.eval_images(settings, config.test_per_class)
    logits = evalset.LogitCache(graph, settings, images)
    builtins = tuple(registry.model_id(b, "1") for b in imagenet)
    main_models = (
        tuple(_fashion_ids(graph, config.seeds[0], config.experts, _recipe(config))) + builtins
    )
    # Every model the runs below read, in one batch (one Ray task each with
    # MLLGRAPH_EXECUTOR=ray; in this process otherwise).
    every_seed = [
        m
        for seed in config.seeds
        for m in _fashion_ids(graph, seed, config.experts, _recipe(config))
    ]
    logits.prefetch([*main_models, *every_seed])
    expert_recipe = (
        _expert_recipe_model(graph, settings, config, main_models) if config.expert_recipe else None
    )
    if expert_recipe is not None:
        described = expert_recipe.recipe.describe()
        report.expert_recipe = {**asdict(expert_recipe.recipe), "description": described}
        log(f"expert-recipe model: {described}")
    conse = references.ConSE(graph, settings, logits) if config.imagenet else None
    supervised = None
    if config.supervised:
        supervised = Supervised(settings, SupervisedRecipe(config.supervised_arch))
        supervised.model()  # trained (or read from its cache) before the timed run
        report.supervised = {
            **asdict(supervised.recipe),
            "description": supervised.recipe.describe(),
            "training_s": round(supervised.seconds, 1),
            "final_train_loss": supervised.final_loss,
        }
        log(f"supervised reference: {supervised.recipe.describe()}")
    stack_all = subtree = None
    if config.references:
        stack_all = references.StackAll(graph, settings, logits, main_models)
        subtree = (
            references.SubtreeSum(graph, settings, logits, main_models) if config.imagenet else None
        )

    log(
        f"main run: {len(suite.tasks)} tasks, hub of {len(main_models)} models, "
        f"budget {config.budget}, {'gRPC' if config.grpc else 'in-process'}"
    )

    def run_main(pipeline: ev.Pipeline) -> list[ev.TaskResult]:
        return ev.run_suite(
            graph,
            settings,
            suite,
            pipeline,
            images,
            logits,
            budget=config.budget,
            models=main_models,
            expert_recipe=expert_recipe,
            conse=conse,
            supervised=supervised,
            stack_all=stack_all,
            subtree=subtree,
            baselines=ev.BASELINES if config.references else _without(ev.BASELINES, "hindsight"),
            log=log,
        )

    if expert_recipe is not None:  # every task's, side by side on the cores
        expert_recipe.train(suite.tasks)
        log(f"expert-recipe models trained ({expert_recipe.seconds:.0f} s)")

    if config.grpc:
        from mllgraph.eval.grpc_pipeline import GrpcPipeline

        with GrpcPipeline(settings) as pipeline:
            listed = pipeline.list_models()
            log(f"ingestion service lists {len(listed)} models")
            main = run_main(pipeline)
            report.cost["inference"] = pipeline.stats()
            if config.photos and config.imagenet:
                from mllgraph.eval import photos

                log("photos suite: real photos, the whole hub, through gRPC")
                report.photos = [
                    asdict(r)
                    for r in photos.run_suite(
                        pipeline,
                        settings.fashion_mnist_dir,
                        settings.wordnet_dir,
                        budget=config.budget,
                        log=log,
                    )
                ]
    else:
        main = run_main(ev.LibraryPipeline(graph, settings, logits))
    report.main = summary.results_json(main)
    report.summary = summary.summarise(main)
    report.halves = summary.summarise_halves(main)
    for h in ("dev", "test", "all"):
        acc, share = (
            report.halves[h][k].get("mll") for k in ("mean_accuracy", "share_of_supervised")
        )
        if acc is not None:
            log(
                f"{h:>4}: {report.halves[h]['tasks']} tasks, MLL {acc:.3f}"
                + ("" if share is None else f" = {share:.1%} of the supervised reference")
            )

    # The supervised reference does not depend on the hub: each hub size's rows carry it.
    supervised_by_task = {r.task: r.baselines.get("supervised") for r in main}
    for size in config.hub_sizes:
        for seed in config.seeds:
            ids = _fashion_ids(graph, seed, size, _recipe(config))
            if len(ids) < size:
                continue
            models = tuple(ids) + tuple(registry.model_id(b, "1") for b in imagenet)
            pipeline = ev.LibraryPipeline(graph, settings, logits)
            res = ev.run_suite(
                graph,
                settings,
                suite,
                pipeline,
                images,
                logits,
                budget=config.budget,
                models=models,
                baselines=("random", "single", "uniform"),
                seed=seed,
                log=lambda _m: None,
            )
            for r in res:
                if supervised_by_task.get(r.task) is not None:
                    r.baselines["supervised"] = supervised_by_task[r.task]
            s = summary.summarise(res)["mean_accuracy"]
            report.hub_size.append({"experts": size, "seed": seed, **s})
            halves = summary.summarise_halves(res)
            for h in SPLITS:
                half = halves[h]
                if half["tasks"]:
                    row = {"experts": size, "seed": seed, "split": h, **half["mean_accuracy"]}
                    report.hub_size.append(row)
            log(
                f"hub size {size:>3} seed {seed}: "
                + "  ".join(f"{m} {v:.3f}" for m, v in s.items() if v is not None)
            )

    report.cost.update(_cost(graph, main, logits, hub_s, time.perf_counter() - t_all))
    if expert_recipe is not None:
        report.cost["expert_recipe_training_s"] = round(expert_recipe.seconds, 1)
    return report


def _without(names: tuple[str, ...], name: str) -> tuple[str, ...]:
    return tuple(n for n in names if n != name)


def _label_options(config: ZeroShotConfig):  # -> labeller.LabelOptions
    from mllgraph.label.work import LabelOptions

    return LabelOptions(samples_per_concept=config.samples_per_concept)


def _expert_recipe_model(
    graph: Graph, settings: Settings, config: ZeroShotConfig, models: tuple[str, ...]
) -> references.ExpertRecipeModel:
    """The expert-recipe model (`references.ExpertRecipe`) for the Fashion experts among
    `models`."""
    return references.ExpertRecipeModel(settings, expert_recipe_for(graph, config, models))


def expert_recipe_for(
    graph: Graph, config: ZeroShotConfig, models: tuple[str, ...]
) -> references.ExpertRecipe:
    """The hub's largest expert architecture (by parameter count), the experts' epochs and
    their per-class image budget (from each expert's registered Fashion classes)."""
    import json

    from mllgraph.hub import loading

    records = [registry.get_model(graph, m) for m in models if m.startswith("fashion-")]
    archs = {r["arch"] for r in records}
    sizes = {a: sum(p.numel() for p in loading.build_timm(a, 10, 1).parameters()) for a in archs}
    arch = max(sorted(sizes), key=sizes.__getitem__) if sizes else "test_resnet"
    counts = [len(json.loads(r["metadata"]["fashion_classes"])) for r in records]
    per_class = (
        references.expert_per_class_budget(config.max_train_per_expert, counts) if counts else None
    )
    return references.ExpertRecipe(arch, config.epochs, per_class, seed=0, split_seed=0)


def _cost(
    graph: Graph,
    main: list[ev.TaskResult],
    logits: evalset.LogitCache,
    hub_s: float,
    total_s: float,
) -> dict[str, Any]:
    rows = registry.list_models(graph, limit=1000)
    label_s = [r["label_seconds"] for r in rows if r.get("label_seconds") is not None]
    return {
        "hub_build_s": round(hub_s, 1),
        "labelling_s_per_model": {
            "mean": round(float(np.mean(label_s)), 2) if label_s else None,
            "max": round(float(np.max(label_s)), 2) if label_s else None,
            "models": len(label_s),
        },
        "selection_ms_per_task": {
            "mean": round(float(np.mean([r.selection_ms for r in main])), 1),
            "p95": round(float(np.percentile([r.selection_ms for r in main], 95)), 1),
        },
        "classify_images_per_s": round(
            sum(r.images for r in main) / (sum(r.classify_ms for r in main) / 1000), 1
        )
        if main
        else None,
        "eval_logits_s_per_model": {m: round(s, 2) for m, s in logits.seconds.items()},
        "total_s": round(total_s, 1),
    }


def write(report: ZeroShotReport, out_dir: Path, name: str = "zeroshot") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [summary.write_json(out_dir / f"{name}.json", asdict(report))]
    md = [f"# Zero-shot evaluation ({name})", "", f"{ev.MLL_USES}; {ev.REFERENCES_USE}.", ""]
    run = {k: v for k, v in report.config.items() if k not in ("out_dir", "name")}
    md += ["## Run", "", f"Code: commit `{run.pop('commit', 'unknown')}`. Config: " + ", ".join(
        f"{k} {v}" for k, v in run.items()
    ) + ".", ""]  # fmt: skip
    if report.expert_recipe:
        md += ["## Expert-recipe model", "", report.expert_recipe["description"], ""]
    if report.supervised:
        md += ["## Supervised reference", "", report.supervised["description"], ""]
    results = [ev.TaskResult(**r) for r in report.main]
    md += [
        "## Both halves of the suite (main hub)",
        "",
        "`dev` tasks may be looked at while changing a rule; `test` tasks are run only to "
        "report. Means with task-bootstrap 95% intervals; share of supervised: the method's mean "
        "accuracy over the supervised reference's; dev − test with its interval.",
        "",
        summary.halves_table(results),
        "",
        _uncovered_line(summary.summarise_halves(results)),
        "",
        "## Per task (main hub)",
        "",
        summary.markdown_table(results),
    ]
    if report.hub_size:
        md += ["", "## Accuracy against hub size (mean over tasks)", ""]
        md += _hub_size_table(report.hub_size)
        for h in ("dev", "test"):
            if any(r.get("split") == h for r in report.hub_size):
                md += ["", f"`{h}` half:", ""] + _hub_size_table(report.hub_size, h)
        png = out_dir / f"{name}_hub_size.png"
        _plot(report.hub_size, png)
        paths.append(png)
        md += ["", f"![accuracy against hub size]({png.name})"]
    if report.photos:
        from mllgraph.eval import photos

        md += ["", photos.markdown([photos.PhotoResult(**r) for r in report.photos])]
    md += ["", "## Cost", "", "```", _pretty(report.cost), "```"]
    path = out_dir / f"{name}.md"
    path.write_text("\n".join(md) + "\n")
    return [path, *paths]


def _uncovered_line(halves: dict[str, dict[str, Any]]) -> str:
    """Tasks with a class left uncovered, per half: although the hub has heads for it (the
    coverage goal) and because it has none."""
    parts = []
    for why in UNCOVERED_WHY:
        counts = [f"{h} {halves[h]['tasks_with_uncovered'][why]}" for h in SPLITS]
        parts.append(f"{why}: " + ", ".join(counts))
    of = "/".join(str(halves[h]["tasks"]) for h in SPLITS)
    return f"Tasks with an uncovered class ({'; '.join(parts)} of {of} tasks)."


def halves_rows(report: ZeroShotReport) -> list[dict[str, Any]]:
    """Per method: mean accuracy and share of the supervised reference on the dev half, the
    test half and all tasks (for a console table)."""
    halves = report.halves
    methods = list(halves.get("all", {}).get("mean_accuracy", {}))
    rows = []
    for m in methods:
        row: dict[str, Any] = {"method": m}
        for h in ("dev", "test", "all"):
            acc = halves[h]["mean_accuracy"].get(m)
            share = halves[h]["share_of_supervised"].get(m)
            row[f"{h} ({halves[h]['tasks']})"] = "" if acc is None else f"{acc:.3f}"
            row[f"{h}: % of supervised"] = "" if share is None else f"{share:.1%}"
        rows.append(row)
    return rows


def _pretty(data: Any) -> str:
    import json

    return json.dumps(data, indent=1, default=str)


def _aggregate(
    rows: list[dict[str, Any]], split: str = "all"
) -> dict[int, dict[str, tuple[float, float]]]:
    """{hub size: {method: (mean, std) over seeds}} of the rows of one suite half (rows
    without a `split` are the whole suite, "all")."""
    rows = [r for r in rows if r.get("split", "all") == split]
    methods = sorted({k for r in rows for k in r if k not in ("experts", "seed", "split")})
    out: dict[int, dict[str, tuple[float, float]]] = {}
    for size in sorted({r["experts"] for r in rows}):
        sel = [r for r in rows if r["experts"] == size]
        out[size] = {}
        for m in methods:
            vals = [r[m] for r in sel if r.get(m) is not None]
            if vals:
                out[size][m] = (float(np.mean(vals)), float(np.std(vals)))
    return out


def _hub_size_table(rows: list[dict[str, Any]], split: str = "all") -> list[str]:
    agg = _aggregate(rows, split)
    methods = sorted({m for v in agg.values() for m in v})
    lines = ["| experts | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for size, vals in agg.items():
        cells = [f"{vals[m][0]:.3f} ± {vals[m][1]:.3f}" if m in vals else "" for m in methods]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return lines


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = _aggregate(rows)
    sizes = sorted(agg)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for m in sorted({m for v in agg.values() for m in v}):
        xs = [s for s in sizes if m in agg[s]]
        ys = [agg[s][m][0] for s in xs]
        es = [agg[s][m][1] for s in xs]
        ax.errorbar(
            xs,
            ys,
            yerr=es,
            marker="o",
            capsize=3,
            label=m.upper() if m == "mll" else m,
            linewidth=2.5 if m == "mll" else 1.2,
        )
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("Fashion-MNIST experts in the hub")
    ax.set_ylabel("mean task accuracy")
    ax.set_title("Zero-shot accuracy against hub size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
