"""The `mllgraph` command line.

Each subcommand is a small function taking parsed args and Settings; domain errors become
one line on stderr and exit status 1 (argparse's usage errors exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from mllgraph.errors import InvalidArgument, MllgraphError
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


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        _CountColumn(),
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
    from mllgraph.graph import neo4j_server

    if args.action == "start":
        with console.status("starting Neo4j (the first start fetches it from Maven Central)"):
            pid, seconds = neo4j_server.start(settings)
        console.print(
            f"Neo4j {neo4j_server.NEO4J_VERSION} answers on {settings.bolt_uri} "
            f"(pid {pid}, {seconds:.1f} s)"
        )
    elif args.action == "stop":
        stopped = neo4j_server.stop(settings)
        console.print("Neo4j stopped" if stopped else "no project-managed Neo4j was running")
    else:
        console.print_json(data=neo4j_server.status(settings))
    return 0


# -- sdag ------------------------------------------------------------------------------------


def cmd_sdag(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph.graph import db, sdag

    with db.connect(settings) as graph:
        if args.action == "load":
            from mllgraph.graph.wordnet import load_nouns

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
    from mllgraph.graph import sdag

    c = sdag.counts(graph)
    console.print(
        f"concepts {c['concepts']:,} (user-added {c['added']:,}) · IS_A {c['is_a']:,} "
        f"(instance-of {c['instance_of']:,}) · lemmas {c['lemmas']:,}"
    )


# -- models, probes, hub, query --------------------------------------------------------------


def _spec_from_args(args: argparse.Namespace):  # -> InputSpec | None
    from mllgraph.hub.preprocess import InputSpec

    if args.input_size is None:
        return None
    channels = args.channels
    mean = tuple(args.mean) if args.mean else (0.5,) * channels
    std = tuple(args.std) if args.std else (0.5,) * channels
    return InputSpec(
        size=args.input_size,
        resize=args.resize,
        crop_pct=args.crop_pct,
        mean=mean,
        std=std,
        channels=channels,
    )


def _split_list(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",")] if text else None


def _registration(args: argparse.Namespace) -> Any:  # -> registry.Registration
    """What `models register` asks, from its flags (--timm: from timm's metadata)."""
    from pathlib import Path

    from mllgraph.hub import registry

    if args.timm:
        from mllgraph.hub import timm_source

        if args.builtin or args.arch or args.class_names or args.wnids or args.input_size:
            raise InvalidArgument(
                "models register --timm: the arch, labels and input spec come from timm; "
                "no --builtin, --arch, --class-names, --wnids or --input-size"
            )
        return timm_source.registration(
            args.name,
            args.timm,
            version=args.version,
            weights=Path(args.weights) if args.weights else None,
            top1_accuracy=args.top1_accuracy,
        )
    return registry.Registration(
        name=args.name,
        version=args.version,
        arch=args.arch or "",
        builtin=args.builtin,
        weights_path=Path(args.weights) if args.weights else None,
        class_names=_split_list(args.class_names),
        wnids=_split_list(args.wnids),
        input_spec=_spec_from_args(args),
        top1_accuracy=args.top1_accuracy,
    )


def _register_through(args: argparse.Namespace, settings: Settings) -> int:
    """`models register --target`: the same registration sent to a running ingestion
    service; a --weights file is streamed to it (UploadWeights), never named as a path."""
    from mllgraph import client as mc

    reg = _registration(args)
    spec = reg.input_spec
    spec_args: dict[str, Any] = {}
    if spec is not None:
        spec_args = {
            "input_size": spec.size,
            "channels": spec.channels,
            "mean": list(spec.mean),
            "std": list(spec.std),
            "resize": spec.resize,
            "crop_pct": spec.crop_pct,
            "interpolation": spec.interpolation or "",
        }
    with mc.Client(args.target, settings=settings, timeout=args.timeout) as client:
        model = client.register_model(
            reg.name,
            version=reg.version,
            arch=reg.arch,
            builtin=reg.builtin,
            weights=reg.weights_path,
            class_names=reg.class_names or (),
            wnids=reg.wnids or (),
            metadata=reg.metadata,
            top1_accuracy=reg.top1_accuracy,
            **spec_args,
        )
    console.print(
        f"{model.id} registered through {client.addresses['ingestion']}: {model.num_classes} "
        f"heads, weights {model.source}, sha256 {model.sha256[:12]}…"
    )
    return 0


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph.graph import db
    from mllgraph.hub import build as hub
    from mllgraph.hub import registry
    from mllgraph.label import run as labeller

    if args.action == "register" and args.target:
        return _register_through(args, settings)
    with db.connect(settings) as graph:
        if args.action == "register":
            reg = _registration(args)
            ground = hub.grounder(settings) if reg.class_names else None
            _print_registered(registry.register_model(graph, settings, reg, ground))
        elif args.action == "label":
            from mllgraph.hub import probe_folder

            settings = _with_executor(settings, args)
            options = labeller.LabelOptions(samples_per_concept=args.samples_per_concept)
            if args.stale == bool(args.model_id):
                raise InvalidArgument("models label: give model ids or --stale, not both")
            todo = probe_folder.stale_models(graph) if args.stale else list(args.model_id)
            if args.stale and not todo:
                console.print("no stale models: every model's labels are up to date")
            if len(todo) == 1 and settings.executor == "local":
                _label_one(graph, settings, labeller, todo[0], options)
            elif todo:
                labeller.label_models(graph, settings, todo, options, on_done=_print_labelled)
        elif args.action == "list":
            rows = registry.list_models(
                graph,
                name=args.name,
                arch=args.arch,
                covers=args.covers,
                min_score=args.min_score,
                limit=args.limit,
            )
            keys = ["id", "arch", "num_classes", "source", "labelled_at"]
            console.print(_table([{k: r.get(k) for k in keys} for r in rows], "models"))
        elif args.action == "show":
            record = registry.get_model(graph, args.model_id)
            console.print_json(data=record)
            heads = registry.heads(graph, args.model_id, top_k=3)[: args.heads]
            for h in heads:
                h["labels"] = ", ".join(f"{x['name']} {x['score']:.2f}" for x in h["labels"])
            console.print(_table(heads, f"first {len(heads)} heads (best measured labels)"))
        elif args.action == "delete":
            console.print_json(data=registry.delete_model(graph, settings, args.model_id))
        elif args.action == "domain":
            from mllgraph.hub import domains

            if args.clear == bool(args.images):
                raise InvalidArgument("models domain: give --images or --clear")
            if args.clear:
                console.print_json(data=domains.clear(graph, settings, args.model_id))
                return 0
            images = _domain_images(Path(args.images))
            source = args.source or f"{len(images)} images from {args.images}"
            console.print_json(
                data=domains.describe(graph, settings, args.model_id, images, source)
            )
    return 0


def _domain_images(path: Path) -> list[Any]:
    """Images for `models domain`: a .npy/.npz array (N, H, W[, C]) or a folder of JPEG/PNG
    files (searched recursively; at most 5,000, in name order)."""
    import numpy as np
    from PIL import Image

    if path.suffix in (".npy", ".npz") and path.is_file():
        data = np.load(path)
        return list(data["images"] if hasattr(data, "files") else data)
    if not path.is_dir():
        raise InvalidArgument(f"--images {path}: not a folder or a .npy/.npz file")
    files = sorted(f for f in path.rglob("*") if f.suffix.lower() in (".jpg", ".jpeg", ".png"))[
        :5000
    ]
    images = []
    for f in files:
        try:
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB")))
        except (OSError, ValueError) as e:
            raise InvalidArgument(f"--images: {f} is not a readable image: {e}") from e
    return images


def _print_registered(result: Any) -> None:
    state = "registered" if result.created else "already registered (same weights)"
    top1 = result.record.get("top1_accuracy")
    prior = f", stated top-1 {top1:.3f}" if top1 is not None else ""
    console.print(
        f"{result.record['id']} {state}: {result.record['num_classes']} heads{prior}, "
        f"sha256 {result.record['sha256'][:12]}…"
    )


def _label_one(graph: Any, settings: Settings, labeller: Any, mid: str, options: Any) -> None:
    """Label one model on the probe images, with a progress bar and a one-line summary."""
    with _progress() as progress:
        # total 0 until the labeller reports it: the count column cannot format None.
        task = progress.add_task(f"labelling {mid}", total=0)
        result = labeller.label_model(
            graph,
            settings,
            mid,
            options,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    _print_labelled(result)


def _print_labelled(result: Any) -> None:
    console.print(
        f"{result.model_id}: {result.labels} labels + {result.group_labels} "
        f"group labels over {result.concepts} concepts, "
        f"T={result.temperature:.2f}, {result.images_per_second:.0f} img/s"
    )


def _with_executor(settings: Settings, args: argparse.Namespace) -> Settings:
    """`--executor` overrides MLLGRAPH_EXECUTOR for this command."""
    from dataclasses import replace

    return replace(settings, executor=args.executor) if args.executor else settings


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
            from mllgraph.hub import build as hub
            from mllgraph.hub import probe_folder

            if args.images or args.concept or args.id:
                raise InvalidArgument("probes add --folder: no --images, --concept or --id")
            report = probe_folder.add_folder(
                graph,
                settings,
                Path(args.folder),
                ground=hub.grounder(settings),
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
            console.print(_table(rows, "probe sets"))
        elif args.action == "remove":
            probes.remove_probe_set(graph, args.id)
            console.print(f"removed {args.id}")
    return 0


def cmd_hub(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph.graph import db, sdag
    from mllgraph.graph.wordnet import load_nouns
    from mllgraph.hub import build as hub
    from mllgraph.label import run as labeller

    settings = _with_executor(settings, args)
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
            label_options=labeller.LabelOptions(samples_per_concept=args.samples_per_concept),
            log=console.print,
        )
    return 0


def _param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--param wants key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def cmd_query(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph.graph import cypher, db

    if args.list or not args.query:
        for name in cypher.names("cookbook/"):
            console.print(f"[bold]{name.removeprefix('cookbook/')}[/]: {cypher.doc(name)}")
        return 0
    name = f"cookbook/{args.query}"
    text = cypher.load(name) if name in cypher.names("cookbook/") else args.query
    with db.connect(settings) as graph:
        rows = graph.run_user_query(
            text, dict(args.param), timeout_s=args.timeout, max_rows=args.max_rows
        )
    if args.json:
        print(json.dumps(rows, default=str, indent=1))
    elif rows:
        console.print(_table(rows))
    else:
        console.print("(no rows)")
    if rows.truncated:
        Console(stderr=True).print(
            f"[yellow]truncated: only the first {len(rows):,} rows were fetched "
            "(MLLGRAPH_QUERY_MAX_ROWS)[/]"
        )
    return 0


# -- select, serve ---------------------------------------------------------------------------


def _task_classes(texts: list[str]) -> list[str]:
    """One argument: comma-separated class names; several: one class each (commas kept)."""
    if len(texts) == 1:
        return [x.strip() for x in texts[0].split(",") if x.strip()]
    return [x.strip() for x in texts]


def _pins(names: list[str], pins: list[str]) -> dict[str, str]:
    from mllgraph.errors import InvalidArgument

    out: dict[str, str] = {}
    for text in pins:
        name, sep, wnid = text.rpartition("=")
        name, wnid = name.strip(), wnid.strip()
        if not sep or not name or not wnid:
            raise InvalidArgument(f"--pin wants NAME=WNID, got {text!r}")
        match = [n for n in names if n == name] or [n for n in names if n.lower() == name.lower()]
        if not match:
            raise InvalidArgument(f"--pin {text!r}: {name!r} is not one of the classes {names}")
        out[match[0]] = wnid
    return out


def _fmt_acc(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _measured_note(plan: dict[str, Any]) -> str:
    """How much of the estimate rests on probe images, when not all of it does."""
    share = plan.get("measured_fraction")
    if share is None or share >= 1.0 or plan.get("estimated_accuracy") is None:
        return ""
    return f" ({share:.0%} measured, the rest declared priors)"


def print_plan(plan: dict[str, Any], timings: Any | None = None) -> None:
    """A plan document, readably: per class its concept, coverage, heads and accuracy."""
    table = Table(title=f"plan {plan['plan_id']}")
    for col in (
        "class",
        "concept",
        "grounding",
        "coverage",
        "heads (model:head label score)",
        "est. acc",
    ):
        table.add_column(col, overflow="fold")
    for c in plan["classes"]:
        g = c.get("grounding") or {}
        how = "pinned" if g.get("pinned") else f"{g.get('method', '')} {g.get('score', 0):.2f}"
        if g.get("approximate"):
            how += " approx."
        if g.get("ambiguous"):
            how += " ambiguous"
        heads = "\n".join(
            f"{h['model_id']}:{h['head_index']} {h['head_label']} {h['label_score']:.2f}"
            for h in c["heads"]
        )
        table.add_row(
            c["name"],
            f"{c['concept']['name'].split('.')[0].replace('_', ' ')} ({c['concept']['wnid']})",
            how,
            "declared, unmeasured" if c["coverage"] == "declared" else c["coverage"],
            heads or "-",
            _fmt_acc(c.get("estimated_accuracy")),
        )
    console.print(table)
    stacked = plan.get("stacked") or {}
    if plan.get("uncovered"):
        if stacked.get("used"):
            how = "scored by the stacked rule from the other heads"
        elif plan.get("patch"):
            how = f"scored by the ConSE patch of {plan['patch']['model_id']}"
        else:
            how = "scored by the constant fallback (or a VLM, where one is configured)"
        from mllgraph.select.plan import uncovered_names

        why = {c["name"]: c.get("uncovered_why", "") for c in plan["classes"]}
        console.print(f"uncovered: {uncovered_names(plan['uncovered'], why)}; {how}")
    if stacked:
        console.print(
            f"stacked rule over {stacked['features']} heads: out-of-fold accuracy "
            f"{stacked['cv_accuracy']:.3f} against {stacked['per_class_rule_accuracy']:.3f} "
            f"for the per-class rule on the probe images: "
            + ("used" if stacked["used"] else "not used")
        )
    fitted = "fitted" if plan.get("params_fitted") else "default"
    console.print(
        f"models ({len(plan['models'])} of at most {plan['budget']}): "
        f"{', '.join(plan['models']) or 'none'} · solver {plan['solver']} · params {fitted} · "
        f"estimated accuracy {_fmt_acc(plan.get('estimated_accuracy'))}"
        f"{_measured_note(plan)} · "
        f"catalogue v{plan['catalogue_version']}"
    )
    t = timings if timings is not None and timings.total_ms else None
    if t is None:
        console.print(f"stored plan, made {plan.get('created_at')} (same task, same catalogue)")
    else:
        console.print(
            f"timings: grounding {t.grounding_ms:.0f} ms · cypher {t.cypher_ms:.0f} ms · "
            f"load {t.load_ms:.0f} ms · chco {t.chco_ms:.0f} ms · "
            f"stacked {t.stacked_ms:.0f} ms · total {t.total_ms:.0f} ms"
        )


def cmd_select(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph.graph import db
    from mllgraph.select import run as select
    from mllgraph.select.ground import default_resolver

    names = _task_classes(args.classes)
    pins = _pins(names, args.pin)
    classes = [select.TaskClass(n, pins.get(n)) for n in names]
    options = select.SelectOptions(
        budget=args.budget,
        solver=args.solver,
        allow_ancestor=not args.no_ancestor,
        fit_params=not args.no_fit,
        min_label_score=args.min_label_score,
    )
    options.validate()
    select.validate_classes(classes)
    with console.status("loading the grounding resolver"):
        resolver = default_resolver(settings)
    with db.connect(settings) as graph:
        ctx = select.select(graph, settings, classes, options, resolver)
    if args.json:
        print(json.dumps(ctx.plan, indent=1))
    else:
        print_plan(ctx.plan, ctx.timings)
    return 0


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def expand_images(args: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files, folders (their image files, sorted) and globs -> (paths, [(arg, error)])."""
    import glob
    from pathlib import Path

    paths: list[str] = []
    missing: list[tuple[str, str]] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(
                str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                missing.append((arg, "a folder without image files"))
            paths += found
        elif path.exists():
            paths.append(arg)
        elif glob.has_magic(arg):
            found = sorted(p for p in glob.glob(arg, recursive=True) if Path(p).is_file())
            if not found:
                missing.append((arg, "no file matches this pattern"))
            paths += found
        else:
            missing.append((arg, "no such file"))
    return list(dict.fromkeys(paths)), missing


def classification_rows(result: Any) -> list[dict[str, Any]]:
    """One JSON-ready dict per prediction of a `client.Classification`."""
    return [
        {
            "image": p.image_id,
            "class": p.class_name,
            "probability": round(p.probability, 4),
            "top": [{"class": t.class_name, "probability": round(t.probability, 4)} for t in p.top],
            "experts": p.models,
            "heads": [
                {"model_id": h.model_id, "head_index": h.head_index, "head_label": h.head_label}
                for h in p.heads
            ],
            "used_fallback": p.used_fallback,
            "out_of_domain": p.out_of_domain,
            "plan_id": result.plan_id,
        }
        for p in result
    ]


def _short_paths(paths: list[str]) -> list[str]:
    """Paths relative to the folder they all lie in (short table cells)."""
    import os

    try:
        root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    except ValueError:
        return paths
    return [os.path.relpath(os.path.abspath(p), root) for p in paths]


def cmd_classify(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph import client as mc
    from mllgraph.errors import InvalidArgument

    names = mc.split_classes(args.classes)
    pins = _pins(names, args.pin)
    paths, failed = expand_images(args.images)
    messages = []
    for path in paths:
        try:
            messages.append(mc.to_image(path, path))
        except InvalidArgument as e:
            failed.append((path, str(e).removeprefix(f"{path}: ")))
    err = Console(stderr=True)
    for where, why in failed:
        if args.json:
            print(json.dumps({"image": where, "error": why}))
        err.print(f"[bold red]error:[/] {where}: {why}", highlight=False, soft_wrap=True)
    if not messages:
        raise InvalidArgument("no readable image to classify")
    services = None
    if not args.target:
        from services.local import start_local_services

        services = start_local_services(settings, console.status)
    try:
        target = args.target
        addresses = services.ports if services is not None else {}
        with mc.Client(
            target,
            **{name: f"127.0.0.1:{port}" for name, port in addresses.items()},
            settings=settings,
            timeout=args.timeout,
        ) as client:
            result = client.classify(messages, names, budget=args.budget, pins=pins, top_k=args.top)
    finally:
        if services is not None:
            services.stop()
    if args.json:
        for row in classification_rows(result):
            print(json.dumps(row))
        return 1 if failed else 0
    table = Table(title=f"{len(result)} images · plan {result.plan_id}")
    for col in ("image", "class", "probability", f"top-{args.top}", "experts used"):
        table.add_column(col, overflow="fold")
    shown = _short_paths([p.image_id for p in result])
    for p, name in zip(result, shown, strict=True):
        top = ", ".join(f"{t.class_name} {t.probability:.2f}" for t in p.top)
        experts = ", ".join(p.models) or "-"
        if p.used_fallback:
            experts += " (fallback)"
        table.add_row(name, p.class_name, f"{p.probability:.3f}", top, experts)
    console.print(table)
    plan = result.plan
    if plan is not None:
        console.print(
            f"models {', '.join(plan.model_ids) or 'none'} · estimated accuracy "
            f"{plan.estimated_accuracy:.3f} · uncovered: {', '.join(result.uncovered) or 'none'}"
        )
    t = result.timings
    console.print(f"select {t.select_ms:.0f} ms · classify {t.classify_ms:.0f} ms")
    return 1 if failed else 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import importlib

    from mllgraph.errors import FailedPrecondition

    if args.service == "web":
        from mllgraph.web.app import main as web_main

        return web_main(list(args.args), settings)
    module_name = f"services.{args.service}"
    if args.service == "inference" and any(
        a.split("=", 1)[0] in ("--replicas", "--ports") for a in args.args
    ):
        module_name = "services.replicas"  # N inference processes (services/replicas.py)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name not in ("services", module_name):
            raise
        raise FailedPrecondition(
            f"the {args.service} service is not part of this installation ({module_name})"
        ) from e
    return int(module.main(list(args.args)) or 0)


# -- tokens ----------------------------------------------------------------------------------


def cmd_tokens(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph import auth

    token, entry = auth.create_token(args.scope, args.name)
    where = settings.tokens_file or "the file named by MLLGRAPH_TOKENS_FILE"
    print(f"token (shown once; give it to {entry.name}, who sets MLLGRAPH_TOKEN):")
    print(f"  {token}")
    print(f"line for {where} (the server keeps only the SHA-256):")
    print(f"  {entry.line()}")
    return 0


# -- bench -----------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph.eval import bench

    if args.what == "zeroshot":
        return cmd_zeroshot(args, settings)
    figures = bench.run(args.what, settings, args)
    console.print_json(data=figures)
    return 0


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


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
    console.print(
        _table(zeroshot.halves_rows(report), f"{len(report.main)} tasks: mean accuracy per half")
    )
    console.print("wrote " + ", ".join(str(p) for p in paths))
    return 0


# -- demo (README command 1) -----------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph.eval import demo

    return demo.run(settings, console, args)


# -- parser ----------------------------------------------------------------------------------


def _executor_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor",
        choices=["local", "ray"],
        default=None,
        help="where labelling runs: this process, or one Ray task per model "
        "(default: MLLGRAPH_EXECUTOR, else local)",
    )


def _target_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--target", help=f"HOST (default ports) or HOST:PORT of the services: {what}"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="deadline, seconds")


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

    p = sub.add_parser("models", help="the model catalogue")
    s = p.add_subparsers(dest="action", required=True)
    q = s.add_parser("register", help="register an expert (validated; idempotent)")
    q.add_argument("--name", required=True)
    q.add_argument("--version", default="1")
    q.add_argument(
        "--builtin", choices=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    )
    q.add_argument("--weights", help="safetensors (or a weights-only torch checkpoint)")
    q.add_argument(
        "--timm",
        help="a timm ImageNet classifier (e.g. resnet18.a1_in1k): arch, input spec and wnids "
        "from timm's metadata; weights from --weights (else the Hugging Face hub)",
    )
    q.add_argument("--arch", help="timm architecture of --weights")
    q.add_argument("--class-names", help="comma-separated, one per head in logit order")
    q.add_argument("--wnids", help="comma-separated wnids, one per head")
    q.add_argument("--input-size", type=int)
    q.add_argument("--channels", type=int, default=3)
    q.add_argument("--mean", type=float, nargs="+")
    q.add_argument("--std", type=float, nargs="+")
    q.add_argument("--resize", default="resize", choices=["resize", "resize_crop"])
    q.add_argument("--crop-pct", type=float, default=1.0)
    q.add_argument(
        "--top1-accuracy",
        type=float,
        help="stated top-1 accuracy on its own labels, in (0, 1]: the prior of its declared "
        "(unmeasured) heads; builtins state their own",
    )
    _target_flags(q, "register through a running ingestion service; --weights is uploaded")
    q = s.add_parser("label", help="run models on the probes and write their labels")
    q.add_argument("model_id", nargs="*")
    q.add_argument(
        "--stale", action="store_true", help="relabel every model new probe images made stale"
    )
    q.add_argument("--samples-per-concept", type=int, default=200)
    _executor_flag(q)
    q = s.add_parser("list")
    q.add_argument("--name")
    q.add_argument("--arch")
    q.add_argument("--covers", help="a concept (wnid or name) the model has a head under")
    q.add_argument("--min-score", type=float, default=0.0)
    q.add_argument("--limit", type=int, default=50)
    q = s.add_parser("show")
    q.add_argument("model_id")
    q.add_argument("--heads", type=int, default=10)
    q = s.add_parser("delete")
    q.add_argument("model_id")
    q = s.add_parser(
        "domain",
        help="describe a model's input domain from images like its training images: on "
        "images unlike them its heads are set aside",
    )
    q.add_argument("model_id")
    q.add_argument("--images", help="a folder of JPEG/PNG, or a .npy/.npz array")
    q.add_argument("--clear", action="store_true", help="forget the profile: trust every image")
    q.add_argument("--source", help="what the images are (recorded in the catalogue)")
    p.set_defaults(handler=cmd_models)

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
    q.add_argument("--source", default="")
    _target_flags(q, "send --folder's images to a running ingestion service (AddProbes)")
    s.add_parser("list")
    q = s.add_parser("remove")
    q.add_argument("id")
    p.set_defaults(handler=cmd_probes)

    p = sub.add_parser("hub", help="build the standard hub (probes, experts, labels)")
    s = p.add_subparsers(dest="action", required=True)
    q = s.add_parser("build")
    q.add_argument("--experts", type=int, default=20, help="Fashion-MNIST experts to train")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--epochs", type=int, default=2)
    q.add_argument("--no-imagenet", action="store_true", help="skip EfficientNet-Lite0/1/2")
    q.add_argument("--probes-per-class", type=int, default=None)
    q.add_argument("--samples-per-concept", type=int, default=200)
    _executor_flag(q)
    p.set_defaults(handler=cmd_hub)

    p = sub.add_parser("query", help="run a cookbook query or any Cypher, read-only")
    p.add_argument("query", nargs="?", help="cookbook name or Cypher text")
    p.add_argument("--param", action="append", type=_param, default=[], help="key=value (JSON)")
    p.add_argument("--list", action="store_true", help="list the cookbook")
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, help="seconds (default MLLGRAPH_QUERY_TIMEOUT_S)")
    p.add_argument("--max-rows", type=int, help="row cap (default MLLGRAPH_QUERY_MAX_ROWS)")
    p.set_defaults(handler=cmd_query)

    p = sub.add_parser("select", help="choose expert heads for a task (a stored plan)")
    p.add_argument("classes", nargs="+", help='"sandal, sneakers, handbag" or one per argument')
    p.add_argument("--budget", type=int, default=5, help="max distinct models (default 5)")
    p.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="NAME=WNID",
        help="ground class NAME to this concept (repeatable)",
    )
    p.add_argument("--solver", choices=["auto", "exact", "heuristic"], default="auto")
    p.add_argument("--no-ancestor", action="store_true", help="no ancestor-concept heads")
    p.add_argument("--no-fit", action="store_true", help="default combination parameters")
    p.add_argument("--min-label-score", type=float, default=0.05)
    p.add_argument("--json", action="store_true", help="print the plan document")
    p.set_defaults(handler=cmd_select)

    p = sub.add_parser("classify", help="classify images into your class names")
    p.add_argument("images", nargs="+", help="image files, folders of images, or globs")
    p.add_argument("--classes", required=True, help='"sandal, sneaker, handbag"')
    p.add_argument("--budget", type=int, default=5, help="max distinct models (default 5)")
    p.add_argument("--pin", action="append", default=[], metavar="NAME=WNID")
    p.add_argument("--top", type=int, default=3, help="classes listed per image (default 3)")
    p.add_argument(
        "--target",
        help="HOST (default ports) or HOST:PORT of running services; default: start them in "
        "this process over the local hub",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="deadline per call, seconds")
    p.add_argument("--json", action="store_true", help="one JSON line per image")
    p.set_defaults(handler=cmd_classify)

    p = sub.add_parser("serve", help="run a gRPC service or the web page until SIGTERM/SIGINT")
    p.add_argument("service", choices=["selection", "ingestion", "inference", "web"])
    p.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        help="the service's own flags (--port N, --host H, --insecure, --metrics-port N); "
        "inference also --replicas N or --ports P1,P2 (one process each); "
        "web: --host, --port (default 8080), --target, --local-services",
    )
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("tokens", help="bearer tokens for the services")
    s = p.add_subparsers(dest="action", required=True)
    q = s.add_parser("create", help="make a token; prints it once and its tokens-file line")
    q.add_argument("--scope", required=True, choices=["read", "write", "admin"])
    q.add_argument("--name", required=True, help="who holds it (unique in the tokens file)")
    p.set_defaults(handler=cmd_tokens)

    p = sub.add_parser("bench", help="benchmarks (print figures, write reports/*.json)")
    p.add_argument(
        "what", choices=["sdag", "ingest", "label", "select", "infer", "reliability", "zeroshot"]
    )
    p.add_argument(
        "--sizes",
        default=None,
        help="infer: request batch sizes (default 1,32,256); select: hub sizes in models "
        "(default 10,100,1000; 10000 takes long)",
    )
    p.add_argument(
        "--cpu-chunks",
        type=_ints,
        default=None,
        help="infer: also run with these CPU chunk sizes (images per forward pass, 0 = whole "
        "batch), side by side, e.g. 0,4,8,16",
    )
    p.add_argument("--requests", type=int, default=30, help="select/ingest: requests per series")
    p.add_argument("--models", type=int, default=1000, help="ingest: synthetic models")
    p.add_argument("--samples-per-concept", type=int, default=100)
    p.add_argument(
        "--workers",
        type=_ints,
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
    g.add_argument("--seeds", type=_ints, default=(0, 1, 2), help="hub seeds, e.g. 0,1,2")
    g.add_argument("--hub-sizes", type=_ints, default=(5, 10, 20, 50), help="hub sizes to study")
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
    p.set_defaults(handler=cmd_bench)

    p = sub.add_parser("demo", help="the main job, end to end (README command 1)")
    p.add_argument(
        "--serve", action="store_true", help="afterwards, serve the web page until Ctrl-C"
    )
    p.set_defaults(handler=cmd_demo)
    return parser


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings or Settings.from_env()
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except MllgraphError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        return 130
    finally:
        _shutdown_ray()


def _shutdown_ray() -> None:
    """Shut down a Ray this command started or joined (labelling with the ray executor)."""
    ray_exec = sys.modules.get("mllgraph.label.ray_exec")
    if ray_exec is not None:
        ray_exec.shutdown()


if __name__ == "__main__":
    sys.exit(main())
