"""`mllgraph bench zeroshot --world emoji`: leave-one-style-out zero-shot evaluation on the
emoji world (issue #22, items 2-4, first cut).

For each held-out style S:
1. every emoji probe set in the hub is removed, and probe folders are written from the other
   styles only (`hubs.emoji.split.write_probe_folders`: S refused by the split's guard, and a
   source with the bytes of an S source skipped) and attached through the code
   `mllgraph probes add --folder` uses (`hub.probe_folder.add_folder`, one probe set per
   concept and style, source `emoji:<style>`). The suite's unprobed concepts get none.
2. :func:`check_no_leak`: no probe set in the graph comes from S, and no probe image shares a
   style, source bytes or augmentation seed with a task image (`split.leaks`). The run stops
   otherwise.
3. The hub's ImageNet experts (EfficientNet-Lite0/1/2, `registry.BUILTINS`) are labelled on
   those probe sets (measured labels), with at most `per_style` x probe styles images per
   concept (the same cap applies to the hub's other probe sets).
4. Tasks are scored on S's task images only (`split.task_images`, its own seed stream).

Methods, one scoring path (`evaluate.run_suite`, selection through the library
`select.select`, not the gRPC services): MLL (budget 5), single, uniform, hindsight,
stack_all, imagenet_subtree, and chance (1/K).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.errors import FailedPrecondition, InvalidArgument
from mllgraph.eval import emoji_none, evalset, summary
from mllgraph.eval import evaluate as ev
from mllgraph.eval import references as references_mod
from mllgraph.eval.emoji_suite import EmojiSuite, EmojiTask
from mllgraph.eval.tasks import SPLITS
from mllgraph.graph.db import Graph
from mllgraph.hub import probe_folder, probes, registry
from mllgraph.hubs.emoji import augment as emoji_augment
from mllgraph.hubs.emoji import build as emoji_build
from mllgraph.hubs.emoji import catalogue as emoji_catalogue
from mllgraph.hubs.emoji import experts as emoji_experts_mod
from mllgraph.hubs.emoji import split as emoji_split
from mllgraph.settings import Settings

Log = ev.Log
SOURCE_PREFIX = "emoji:"
CONCEPTS_FILE = Path(emoji_split.__file__).with_name("concepts.tsv")
METHODS = ("single", "uniform", "hindsight", "stack_all", "imagenet_subtree")


@dataclass
class EmojiConfig:
    held_out: tuple[str, ...] = emoji_catalogue.STYLES
    per_style: int = 4  # probe images per concept and probe style
    per_emoji: int = 20  # task images per emoji in the held-out style
    side: int = emoji_augment.SIDE  # probe and task image side (px)
    tasks_per_half: int | None = None  # None: the whole suite
    budget: int = 5
    seed: int = 0
    hindsight: bool = True
    models: tuple[str, ...] = ()  # empty: the ImageNet experts (registry.BUILTINS)
    # Emoji experts (hubs.emoji.experts): trained per held-out style S on training styles
    # that hold neither S nor a probe style (`style_plan`, or `train_styles` for every S).
    emoji_experts: bool = False
    expert_groups: tuple[str, ...] | None = None  # None: every planned group
    expert_archs: tuple[str, ...] = emoji_experts_mod.DEFAULT_ARCHS
    expert_recipe: emoji_experts_mod.Recipe = emoji_experts_mod.Recipe()
    train_styles: tuple[str, ...] | None = None  # None: the rotation of `style_plan`
    curve: bool = True  # MLL as the emoji experts join group by group (no relabelling)
    none_of_these: bool = True  # measure "none of these" on the held-out style (emoji_none)
    work_dir: Path | None = None  # probe folders (default: under the home)
    out_dir: Path = Path("reports")
    name: str = "zeroshot_emoji"


@dataclass(frozen=True)
class EmojiImages:
    """The held-out style's task images and the concept each shows (duck-types
    `evalset.EvalImages` for `evaluate.run_suite` and `evalset.LogitCache`)."""

    images: np.ndarray  # uint8 (N, side, side, 3)
    wnids: np.ndarray  # (N,) str

    def for_task(self, task: EmojiTask) -> tuple[np.ndarray, np.ndarray]:
        mapping = {w: i for i, w in enumerate(task.wnids)}
        idx = np.flatnonzero(np.isin(self.wnids, list(mapping)))
        return idx, np.array([mapping[w] for w in self.wnids[idx]], dtype=np.int64)


@dataclass
class StyleRun:
    held_out: str
    probe_styles: list[str]
    probe_images: int
    probe_concepts: int
    task_images: int
    label_s: dict[str, dict[str, float]]  # per model: total_s, forward_s, images
    eval_logits_s: dict[str, float]
    selection_ms_mean: float
    results: list[dict[str, Any]] = field(default_factory=list)
    halves: dict[str, Any] = field(default_factory=dict)
    train_styles: list[str] = field(default_factory=list)  # the emoji experts' (none: off)
    experts: dict[str, Any] = field(default_factory=dict)  # per emoji expert, see expert_summary
    curve: list[dict[str, Any]] = field(default_factory=list)  # MLL by hub (curve_point)
    # "None of these" on the held-out style's images (eval/emoji_none.measure).
    none_of_these: dict[str, Any] = field(default_factory=dict)


@dataclass
class EmojiReport:
    config: dict[str, Any]
    counts: dict[str, Any]
    runs: list[StyleRun] = field(default_factory=list)
    overall: dict[str, Any] = field(default_factory=dict)  # every style's tasks pooled
    targets: dict[str, Any] = field(default_factory=dict)
    # Every method with the ImageNet experts only (the emoji run's first hub), pooled; and
    # MLL with vs without the emoji experts, paired by task (see compare_hubs).
    imagenet_only: dict[str, Any] = field(default_factory=dict)
    hub_comparison: dict[str, Any] = field(default_factory=dict)
    imagenet_only_results: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def emoji_probe_sets(graph: Graph) -> list[probes.ProbeSet]:
    return [p for p in probes.probe_sets(graph) if p.source.startswith(SOURCE_PREFIX)]


def attach_probes(
    graph: Graph,
    settings: Settings,
    cat: emoji_catalogue.Catalogue,
    rows: list[emoji_split.ConceptRow],
    style_split: emoji_split.StyleSplit,
    folder: Path,
    *,
    per_style: int,
    seed: int,
    side: int = emoji_augment.SIDE,
) -> list[dict]:
    """Replace the hub's emoji probe sets by ones from the split's probe styles; the
    manifest of the images attached."""
    for ps in emoji_probe_sets(graph):  # every style: sets from an earlier split go too
        probes.remove_probe_set(graph, ps.id, settings)
    if folder.exists():
        shutil.rmtree(folder)
    manifest = emoji_split.write_probe_folders(
        cat, rows, style_split, folder, per_style=per_style, seed=seed, side=side
    )
    for style in style_split.probe_styles:
        if (folder / style).is_dir():
            probe_folder.add_folder(graph, settings, folder / style, source=SOURCE_PREFIX + style)
    return manifest


def check_no_leak(
    graph: Graph, manifest: list[dict], tasks: list[emoji_split.TaskImage], held_out: str
) -> None:
    """FailedPrecondition naming the first leaks: a probe set in the graph from the held-out
    style, or a probe image sharing a style, source bytes or seed with a task image."""
    found = [
        f"probe set {p.id} ({p.source})"
        for p in emoji_probe_sets(graph)
        if p.source[len(SOURCE_PREFIX) :] == held_out
    ]
    found += emoji_split.leaks(manifest, tasks)
    if found:
        raise FailedPrecondition(
            f"held-out style {held_out} reachable from the probes: {'; '.join(found[:5])}"
        )


def styles_for(config: EmojiConfig, held_out: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training styles of the emoji experts, probe styles) for one held-out style. Without
    emoji experts: no training styles, probes from every other style."""
    if not config.emoji_experts:
        return (), emoji_split.split(held_out).probe_styles
    if config.train_styles is None:
        return emoji_experts_mod.style_plan(held_out)
    train = emoji_experts_mod.check_train_styles(config.train_styles, held_out)
    probe = tuple(s for s in emoji_catalogue.STYLES if s not in (held_out, *train))
    if not probe:
        raise InvalidArgument(
            f"training styles {', '.join(train)} with held-out {held_out}: no style left for probes"
        )
    return train, probe


def check_experts(
    graph: Graph, models: list[str], held_out: str, probe_styles: tuple[str, ...]
) -> None:
    """FailedPrecondition naming the emoji experts whose training styles hold the held-out
    style or a probe style (a leak, or probes that measure an expert on its own data)."""
    found = []
    for mid in models:
        seen = emoji_build.train_styles_of(registry.get_model(graph, mid))
        bad = seen & {held_out, *probe_styles}
        if bad:
            found.append(f"{mid} trained on {', '.join(sorted(bad))}")
    if found:
        raise FailedPrecondition(
            f"held-out style {held_out} (probes {', '.join(probe_styles)}): {'; '.join(found[:5])}"
        )


def groundable(
    settings: Settings, suite: EmojiSuite, log: Log
) -> tuple[EmojiSuite, dict[str, str]]:
    """The suite without the tasks holding a class name the resolver cannot ground (selection
    would refuse the whole task), and those tasks with the reason. Reported, never hidden:
    such a task is a grounding failure of MLL, not a task it was scored on."""
    from mllgraph.errors import MllgraphError
    from mllgraph.ground.resolve import default_resolver

    resolver = default_resolver(settings)
    failed: dict[str, str] = {}
    for name in sorted({c.name for t in suite.tasks for c in t.classes}):
        try:
            resolver.resolve_name(name, allow_approximate=True)
        except MllgraphError as e:
            failed[name] = str(e)
    not_scored = {
        t.name: "; ".join(failed[c.name] for c in t.classes if c.name in failed)
        for t in suite.tasks
        if any(c.name in failed for c in t.classes)
    }
    for task, why in not_scored.items():
        log(f"task {task} not scored: {why}")
    kept = tuple(t for t in suite.tasks if t.name not in not_scored)
    return EmojiSuite(suite.name, kept, suite.unprobed, suite.groups), not_scored


def run(
    graph: Graph,
    settings: Settings,
    suite: EmojiSuite,
    config: EmojiConfig,
    log: Log = print,
) -> EmojiReport:
    from mllgraph.eval.bench.common import git_commit
    from mllgraph.label import run as labeller
    from mllgraph.label.work import LabelOptions

    t_all = time.perf_counter()
    suite = suite.limited(config.tasks_per_half)
    suite, not_scored = groundable(settings, suite, log)
    cat = emoji_catalogue.load(settings.emoji_cache)
    wanted = suite.concepts()
    rows = [r for r in emoji_split.read_concepts(CONCEPTS_FILE) if r.wnid in wanted]
    probed_rows = [r for r in rows if r.wnid not in suite.unprobed]
    models = config.models or tuple(registry.model_id(b, "1") for b in registry.BUILTINS)
    for m in models:
        registry.get_model(graph, m)  # NotFound before any work
    # Every held-out style's styles and expert plan, checked before any work.
    plans = {}
    for held_out in config.held_out:
        train_styles, probe_styles = styles_for(config, held_out)
        specs: list[emoji_experts_mod.ExpertSpec] = []
        skipped: dict[str, str] = {}
        if config.emoji_experts:
            # Unprobed concepts stay uncovered: the suite's "class nothing covers" tasks.
            specs, skipped = emoji_build.plan(
                train_styles=train_styles, groups=config.expert_groups,
                archs=config.expert_archs, seed=config.seed, recipe=config.expert_recipe,
                held_out=held_out, exclude=suite.unprobed,
            )  # fmt: skip
        plans[held_out] = (train_styles, probe_styles, specs, skipped)
    folder = config.work_dir or settings.home / "emoji_eval" / "probes"
    report = EmojiReport(
        config={**asdict(config), "commit": git_commit(), "models": list(models)},
        counts={
            "suite_tasks": len(suite.tasks),
            "concepts": len(wanted),
            "unprobed_concepts": len(wanted & suite.unprobed),
            "emoji": len(rows),
            "styles": list(emoji_catalogue.STYLES),
            "tasks_not_scored": not_scored,
        },
    )
    pooled: list[ev.TaskResult] = []
    pooled_base: list[ev.TaskResult] = []
    for held_out in config.held_out:
        train_styles, probe_styles, specs, skipped = plans[held_out]
        style_split = emoji_split.split(held_out, (held_out, *probe_styles))
        log(
            f"held-out style {held_out}: probes from {', '.join(style_split.probe_styles)}"
            + (f"; emoji experts trained on {', '.join(train_styles)}" if train_styles else "")
        )
        manifest = attach_probes(
            graph, settings, cat, probed_rows, style_split, folder,
            per_style=config.per_style, seed=config.seed, side=config.side,
        )  # fmt: skip
        tasks = emoji_split.task_images(
            cat, rows, style_split, per_emoji=config.per_emoji, seed=config.seed, side=config.side
        )
        check_no_leak(graph, manifest, tasks, held_out)
        experts = emoji_build.ExpertsReport()
        if specs:
            experts = emoji_build.build_experts(
                graph, settings, specs, held_out=held_out, label=False, log=log
            )
            experts.skipped_groups = skipped
            check_experts(graph, experts.models, held_out, style_split.probe_styles)
        hub = (*models, *experts.models)
        label_s = {}
        options = LabelOptions(samples_per_concept=config.per_style * len(style_split.probe_styles))
        for m in hub:
            result = labeller.label_model(graph, settings, m, options)
            label_s[m] = {
                "total_s": round(result.seconds, 1),
                "forward_s": round(result.forward_seconds, 1),
                "images": result.images,
            }
            log(f"  labelled {m}: {result.images} probe images, {result.labels} labels, "
                f"{result.seconds:.0f} s ({result.forward_seconds:.0f} s forward)")  # fmt: skip
        images = EmojiImages(
            np.stack([t.image for t in tasks]), np.array([t.wnid for t in tasks], dtype=str)
        )
        logits = evalset.LogitCache(graph, settings, images)  # type: ignore[arg-type]
        results, logit_s = run_style(graph, settings, suite, images, hub, config, log, logits)
        none: dict[str, Any] = {}
        if config.none_of_these:
            none = emoji_none.measure(
                graph, settings, suite.tasks, images, logits, config.budget, hub, log
            )
        curve: list[dict[str, Any]] = []
        base: list[ev.TaskResult] = []
        if experts.models:
            base, _ = run_style(graph, settings, suite, images, models, config, log, logits)
            curve = hub_curve(graph, settings, suite, images, models, experts, config, log, logits)
            curve.insert(0, curve_point("ImageNet experts", models, base))
            curve.append(curve_point("+ every emoji expert", hub, results))
        for r in (*results, *base):
            r.task = f"{held_out}/{r.task}"
        pooled += results
        pooled_base += base
        report.runs.append(
            StyleRun(
                held_out=held_out,
                probe_styles=list(style_split.probe_styles),
                probe_images=len(manifest),
                probe_concepts=len({m["wnid"] for m in manifest}),
                task_images=len(tasks),
                label_s=label_s,
                eval_logits_s={m: round(v, 1) for m, v in logit_s.items()},
                selection_ms_mean=round(float(np.mean([r.selection_ms for r in results])), 1),
                results=summary.results_json(results),
                halves=summary.summarise_halves(results),
                train_styles=list(train_styles),
                experts=expert_summary(experts, logits),
                curve=curve,
                none_of_these=none,
            )
        )
        report.counts.setdefault("task_images", {})[held_out] = len(tasks)
        report.counts.setdefault("probe_images", {})[held_out] = len(manifest)
    report.overall = summary.summarise_halves(pooled)
    report.targets = targets(pooled)
    if pooled_base:
        report.imagenet_only = summary.summarise_halves(pooled_base)
        report.hub_comparison = compare_hubs(pooled_base, pooled)
        report.imagenet_only_results = summary.results_json(pooled_base)
    report.seconds = round(time.perf_counter() - t_all, 1)
    return report


def run_style(
    graph: Graph,
    settings: Settings,
    suite: EmojiSuite,
    images: EmojiImages,
    models: tuple[str, ...],
    config: EmojiConfig,
    log: Log,
    logits: evalset.LogitCache | None = None,
    *,
    references: bool = True,
) -> tuple[list[ev.TaskResult], dict[str, float]]:
    """Every task of `suite` on one held-out style's images, every method (MLL alone without
    `references`); and each model's seconds for its logits on those images. A shared
    `logits` cache lets several model subsets be scored with one forward pass per model."""
    if logits is None:
        logits = evalset.LogitCache(graph, settings, images)  # type: ignore[arg-type]
    logits.prefetch(models)
    methods = METHODS if config.hindsight else tuple(m for m in METHODS if m != "hindsight")
    stack_all = subtree = None
    if references:
        stack_all = references_mod.StackAll(graph, settings, logits, models)
        subtree = references_mod.SubtreeSum(graph, settings, logits, models)
    results = ev.run_suite(
        graph, settings, suite, ev.LibraryPipeline(graph, settings, logits),  # type: ignore[arg-type]
        images, logits, budget=config.budget, models=models,  # type: ignore[arg-type]
        stack_all=stack_all, subtree=subtree, baselines=methods if references else (),
        seed=config.seed, log=log,
    )  # fmt: skip
    for r in results:
        r.baselines["chance"] = 1.0 / len(r.classes)
    log("  eval logits: " + ", ".join(f"{m} {s:.0f} s" for m, s in logits.seconds.items()))
    return results, {m: logits.seconds[m] for m in models if m in logits.seconds}


def compare_hubs(base: list[ev.TaskResult], full: list[ev.TaskResult]) -> dict[str, Any]:
    """MLL with the ImageNet experts only against with the emoji experts too, on the same
    tasks: means and the paired difference's task-bootstrap interval, per half."""
    out: dict[str, Any] = {}
    for half in (*SPLITS, "all"):
        pairs = [
            (b.mll, f.mll)
            for b, f in zip(base, full, strict=True)
            if half == "all" or b.split == half
        ]
        if not pairs:
            continue
        b_v, f_v = (list(v) for v in zip(*pairs, strict=True))
        diff = [f - b for b, f in pairs]
        out[half] = {
            "tasks": len(pairs),
            "imagenet_only": float(np.mean(b_v)),
            "imagenet_only_95": summary.bootstrap_interval(b_v),
            "with_emoji_experts": float(np.mean(f_v)),
            "with_emoji_experts_95": summary.bootstrap_interval(f_v),
            "difference": float(np.mean(diff)),
            "difference_95": summary.bootstrap_interval(diff),
        }
    return out


def curve_point(step: str, models: tuple[str, ...], results: list[ev.TaskResult]) -> dict:
    """MLL's mean per half with task-bootstrap intervals, for one hub (a step of the curve)."""
    point: dict[str, Any] = {"step": step, "models": len(models)}
    for half in (*SPLITS, "all"):
        values = [r.mll for r in results if half == "all" or r.split == half]
        point[half] = {
            "tasks": len(values),
            "mll": float(np.mean(values)) if values else None,
            "interval_95": summary.bootstrap_interval(values),
        }
    return point


def hub_curve(
    graph: Graph,
    settings: Settings,
    suite: EmojiSuite,
    images: EmojiImages,
    base: tuple[str, ...],
    experts: emoji_build.ExpertsReport,
    config: EmojiConfig,
    log: Log,
    logits: evalset.LogitCache,
) -> list[dict]:
    """MLL as the emoji experts join one group at a time (selection restricted to a model
    subset: the labels stay as they are). The first and last steps are added by the caller."""
    if not config.curve:
        return []
    points, hub = [], base
    groups = list(experts.groups.items())
    for group, mids in groups[:-1]:  # the last step is the full hub
        hub = (*hub, *mids)
        results, _ = run_style(
            graph, settings, suite, images, hub, config, lambda _m: None, logits, references=False
        )
        points.append(curve_point(f"+ {group}", hub, results))
        log(f"  hub +{group}: {len(hub)} models, MLL {points[-1]['all']['mll']:.3f}")
    return points


def expert_summary(experts: emoji_build.ExpertsReport, logits: evalset.LogitCache) -> dict:
    """Per emoji expert: its group, the sanity figure, and the share of the held-out style's
    task images its domain profile accepts (refused images get no say from its heads)."""
    out = {}
    for group, mids in experts.groups.items():
        for mid in mids:
            mask = logits.in_domain(mid)
            out[mid] = {
                "group": group,
                "heldout_accuracy_training_styles": experts.heldout_accuracy.get(mid),
                "task_images_in_domain": None if mask is None else round(float(mask.mean()), 4),
            }
    return {"models": out, "skipped_groups": experts.skipped_groups}


def targets(results: list[ev.TaskResult]) -> dict[str, Any]:
    """Issue #22's done-criteria on the pooled tasks: each figure and its margin (positive:
    met). Best single expert: `hindsight` (an upper bound on any one expert)."""
    out: dict[str, Any] = {"mll": float(np.mean([r.mll for r in results])) if results else None}
    if not results:
        return out

    def margin(method: str, offset: float) -> dict[str, Any] | None:
        # Paired: MLL on the tasks the reference has a figure for (stack-all has none where
        # fewer than two classes have probe images).
        both = [(r.mll, r.baselines[method]) for r in results if method in r.baselines]
        if not both:
            return None
        mll, ref = (float(np.mean(v)) for v in zip(*both, strict=True))
        return {"tasks": len(both), "mll": mll, method: ref, "margin": mll - (ref + offset)}

    out["mll_vs_best_single_plus_10"] = margin("hindsight", 0.10)
    out["mll_vs_imagenet_subtree_plus_10"] = margin("imagenet_subtree", 0.10)
    out["mll_vs_stack_all_minus_1"] = margin("stack_all", -0.01)
    small = [r.mll for r in results if len(r.classes) <= 10]
    out["mll_tasks_le_10_classes"] = float(np.mean(small)) if small else None
    out["tasks_le_10_vs_0.85"] = None if not small else round(float(np.mean(small)) - 0.85, 4)
    gaps = [abs(r.estimated - r.mll) for r in results if r.estimated is not None]
    out["mean_abs_estimate_gap"] = float(np.mean(gaps)) if gaps else None
    out["estimate_gap_vs_0.05"] = None if not gaps else round(0.05 - float(np.mean(gaps)), 4)
    return out


# -- the report --------------------------------------------------------------------------------


def first_line(report: EmojiReport) -> str:
    parts = []
    for r in report.runs:
        part = f"S = {r.held_out}: probe images from {', '.join(r.probe_styles)}"
        if r.train_styles:
            part += f", emoji experts trained on {', '.join(r.train_styles)}"
        parts.append(part + f" (never {r.held_out})")
    experts = any(r.train_styles for r in report.runs)
    return (
        "MLL used: the task's class names, and the hub's emoji probe images from styles "
        "other than the held-out one ("
        + "; ".join(parts)
        + "), on which the ImageNet "
        + ("and emoji " if experts else "")
        + "experts were labelled and combination weights fitted; no image or label of the "
        "held-out style."
    )


def _with_iv(value: float, iv: list[float] | None, sign: bool = False) -> str:
    fmt = "+.3f" if sign else ".3f"
    return f"{value:{fmt}}" + ("" if iv is None else f" [{iv[0]:{fmt}}, {iv[1]:{fmt}}]")


def curve_table(curve: list[dict[str, Any]]) -> str:
    """The hub-size curve as a markdown table: MLL per half with 95% intervals."""
    lines = [
        "| hub | models | dev | test | all |",
        "|---|---:|---|---|---|",
    ]
    for p in curve:
        cells = []
        for half in (*SPLITS, "all"):
            c = p[half]
            iv = c["interval_95"]
            cells.append("-" if c["mll"] is None else f"{c['mll']:.3f} [{iv[0]:.3f}, {iv[1]:.3f}]")
        lines.append(f"| {p['step']} | {p['models']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def experts_table(experts: dict[str, Any]) -> str:
    lines = [
        "| emoji expert | group | accuracy, unseen augmentations of its training styles "
        "| task images in its domain |",
        "|---|---|---:|---:|",
    ]
    for mid, e in experts.get("models", {}).items():
        dom = e["task_images_in_domain"]
        lines.append(
            f"| {mid} | {e['group']} | {e['heldout_accuracy_training_styles']:.3f} | "
            + ("no profile" if dom is None else f"{dom:.3f}")
            + " |"
        )
    return "\n".join(lines)


def write(report: EmojiReport, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = summary.write_json(out_dir / f"{name}.json", asdict(report))
    cfg = {k: v for k, v in report.config.items() if k not in ("out_dir", "name", "work_dir")}
    commit = cfg.pop("commit", "unknown")
    md = [
        f"{first_line(report)}",
        "",
        "# Zero-shot on the emoji world (leave one style out)",
        "",
        f"Code: commit `{commit}`. Config: " + ", ".join(f"{k} {v}" for k, v in cfg.items()),
        "",
        "Counts: " + ", ".join(f"{k} {v}" for k, v in report.counts.items()),
        "",
        "Methods, one scoring path (evaluate.run_suite; selection through the library): "
        "`mll` (budget as configured), `single`/`uniform` (candidate heads, parameter-free "
        "rule), `hindsight` (best single expert through MLL's own selection, picked with the "
        "task's labels), `stack_all` (stacked rule over every head of the models, same probe "
        "images; classes without probe images scored by MLL's own plan), `imagenet_subtree` "
        "(best ImageNet expert, probabilities summed over each class's WordNet subtree), "
        "`chance` (1/K).",
        "",
        "## All held-out styles pooled (tasks × styles; task-bootstrap 95% intervals)",
        "",
    ]
    pooled = [ev.TaskResult(**r) for run in report.runs for r in run.results]
    md += [summary.halves_table(pooled), "", "## Issue #22 targets (pooled)", "", "```"]
    md += [summary_json(report.targets), "```", ""]
    if report.hub_comparison:
        md += [
            "## MLL: ImageNet experts only vs with the emoji experts (pooled, paired by task)",
            "",
            "| half | tasks | ImageNet only | with emoji experts | difference |",
            "|---|---:|---|---|---|",
        ]
        for half, c in report.hub_comparison.items():
            md.append(
                f"| {half} | {c['tasks']} | {_with_iv(c['imagenet_only'], c['imagenet_only_95'])}"
                f" | {_with_iv(c['with_emoji_experts'], c['with_emoji_experts_95'])}"
                f" | {_with_iv(c['difference'], c['difference_95'], sign=True)} |"
            )
        base = [ev.TaskResult(**r) for r in report.imagenet_only_results]
        md += [
            "",
            "Every method with the ImageNet experts only:",
            "",
            summary.halves_table(base),
            "",
        ]
    for run in report.runs:
        results = [ev.TaskResult(**r) for r in run.results]
        md += [
            f"## Held-out style {run.held_out}",
            "",
            f"Probe styles {', '.join(run.probe_styles)}: {run.probe_images} probe images of "
            f"{run.probe_concepts} concepts; {run.task_images} task images. Labelling "
            + ", ".join(
                f"{m} {v['total_s']} s ({v['forward_s']} s forward, {v['images']} images)"
                for m, v in run.label_s.items()
            )
            + "; eval logits "
            + ", ".join(f"{m} {s} s" for m, s in run.eval_logits_s.items())
            + f"; selection {run.selection_ms_mean:.0f} ms per task (mean).",
            "",
            summary.halves_table(results),
            "",
        ]
        if run.curve:
            md += [
                "Hub-size curve: MLL with the ImageNet experts only, then as the emoji experts "
                "join group by group (selection restricted to the models; same labels), "
                "task-bootstrap 95% intervals:",
                "",
                curve_table(run.curve),
                "",
            ]
        if run.experts.get("models"):
            md += [
                f"Emoji experts (trained on {', '.join(run.train_styles)}; groups skipped: "
                f"{run.experts.get('skipped_groups') or 'none'}):",
                "",
                experts_table(run.experts),
                "",
            ]
        if run.none_of_these:
            md += [
                '"None of these" at each plan\'s default threshold (in-task: the held-out '
                "style's images of the task's concepts; negatives: its images of unrelated "
                "concepts; calibrated on the probe styles only; targets AUROC >= 0.90, "
                "drop <= 1 point):",
                "",
                "| half | tasks calibrated | AUROC mean | AUROC min | drop mean (pt) | "
                "drop max (pt) | negatives refused |",
                "|---|---|---|---|---|---|---|",
            ]
            for half, h in {**run.none_of_these["halves"], "all": run.none_of_these["all"]}.items():
                md.append(
                    f"| {half} | {h['calibrated']} of {h['tasks']} | {_num(h['auroc_mean'])} | "
                    f"{_num(h['auroc_min'])} | {_num(h['accuracy_drop_points_mean'], 2)} | "
                    f"{_num(h['accuracy_drop_points_max'], 2)} | "
                    f"{_num(h['outside_rejected_mean'])} |"
                )
            md.append("")
        md += [
            "Per task (`mll estimated` is the plan's estimate, `mll` the measured accuracy):",
            "",
            summary.markdown_table(results),
            "",
        ]
    md += [f"Total {report.seconds:.0f} s."]
    path = out_dir / f"{name}.md"
    path.write_text("\n".join(md) + "\n")
    return [path, json_path]


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_json(data: Any) -> str:
    import json

    return json.dumps(data, indent=1, default=str)


def halves_rows(report: EmojiReport) -> list[dict[str, Any]]:
    """Per method: pooled mean accuracy per half (a console table)."""
    rows = []
    for m in report.overall.get("all", {}).get("mean_accuracy", {}):
        row: dict[str, Any] = {"method": m}
        for h in (*SPLITS, "all"):
            acc = report.overall[h]["mean_accuracy"].get(m)
            row[f"{h} ({report.overall[h]['tasks']})"] = "" if acc is None else f"{acc:.3f}"
        rows.append(row)
    return rows
