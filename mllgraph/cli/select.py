"""`mllgraph select` (choose expert heads for a task: a stored plan, printed by `print_plan`)
and `mllgraph classify` (images into class names, through running services or the three
services started in this process by services.local).

Imports the library (mllgraph.graph, select), the client and services.local inside the
handlers only (the CLI must start fast); never mllgraph.web or mllgraph.eval.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from mllgraph.cli.common import console
from mllgraph.plan.request import ACCURACY_SLACK
from mllgraph.settings import Settings


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
    return f" ({share:.0%} measured on the classes' own probe images)"


def cost_line(plan: dict[str, Any]) -> str:
    """The plan's cost per image, per model, and the accuracy-cost front it was chosen from."""
    if plan.get("cost_ms_per_image") is None:
        return "cost: not recorded (a plan made before costs were)"
    costs = plan.get("model_costs") or {}
    each = ", ".join(
        f"{m} {c['ms_per_image']:.3g}" + (" est." if c.get("estimated") else "")
        for m, c in sorted(costs.items())
    )
    text = f"cost {plan['cost_ms_per_image']:.3g} ms/image" + (f" ({each})" if each else "")
    front = plan.get("cost_front") or []
    if len(front) > 1:
        text += " · front: " + " | ".join(
            f"{_fmt_acc(p.get('estimated_accuracy'))} @ {p['cost_ms_per_image']:.3g} ms"
            + (" *" if p.get("chosen") else "")
            for p in front
        )
    return text


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
        "estimate rests on",
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
            (c.get("estimate_evidence") or {}).get("text", "-"),
        )
    console.print(table)
    stacked = plan.get("stacked") or {}
    if plan.get("uncovered"):
        from mllgraph.plan.document import patch_summary, split_uncovered, uncovered_names

        why = {c["name"]: c.get("uncovered_why", "") for c in plan["classes"]}
        by_stacked, patched = split_uncovered(plan)
        if by_stacked:
            console.print(
                f"uncovered: {uncovered_names(by_stacked, why)}; "
                "scored by the stacked rule from the other heads"
            )
        if patched:
            if plan.get("patch"):
                how = f"scored by the ConSE patch of {plan['patch']['model_id']}"
            else:
                how = "scored by the constant fallback (or a VLM, where one is configured)"
            console.print(f"uncovered: {uncovered_names(patched, why)}; {how}")
            if plan.get("patch"):
                console.print(f"patch: {patch_summary(plan['patch'])}")
    if stacked:
        from mllgraph.plan.document import held_out_text

        console.print(
            f"stacked rule over {stacked['features']} heads: out-of-fold accuracy "
            f"{stacked['cv_accuracy']:.3f}"
            + (f" ({held_out_text(stacked)})" if stacked.get("cv_folds") == "sources" else "")
            + f" against {stacked['per_class_rule_accuracy']:.3f} "
            f"for the per-class rule on the probe images (in-sample): "
            + ("used" if stacked["used"] else "not used")
            + _partial_note(plan)
        )
    fitted = "fitted" if plan.get("params_fitted") else "default"
    console.print(cost_line(plan))
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
    names = _task_classes(args.classes)
    pins = _pins(names, args.pin)
    if args.target:
        return _select_through_service(args, settings, names, pins)
    from mllgraph.graph import db
    from mllgraph.plan import request as plan_request
    from mllgraph.select import stored

    classes = [plan_request.TaskClass(n, pins.get(n)) for n in names]
    options = plan_request.SelectOptions(
        budget=args.budget,
        solver=args.solver,
        allow_ancestor=not args.no_ancestor,
        fit_params=not args.no_fit,
        min_label_score=args.min_label_score,
        max_cost_ms=args.max_cost_ms,
        accuracy_slack=args.accuracy_slack,
    )
    options.validate()
    stored.validate_classes(classes)
    warn_slow_start(settings, "select")
    with db.connect(settings) as graph:
        # A stored plan is found by its key: no grounding, no torch, no probe outputs.
        plan, timings = stored.find_stored(graph, classes, options), None
        if plan is None:
            from mllgraph.ground.resolve import default_resolver
            from mllgraph.select import run as select

            ctx = select.select(graph, settings, classes, options, default_resolver(settings))
            plan, timings = ctx.plan, ctx.timings
    if args.json:
        print(json.dumps(plan, indent=1))
    else:
        print_plan(plan, timings)
    return 0


def _select_through_service(
    args: argparse.Namespace, settings: Settings, names: list[str], pins: dict[str, str]
) -> int:
    """`select --target`: SelectHeads on a running selection service (nothing to load here)."""
    import math
    import time
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from mllgraph import client as mc

    with mc.Client(args.target, settings=settings, timeout=args.timeout) as client:
        plan = client.select(
            names,
            args.budget,
            pins=pins,
            solver=args.solver,
            allow_ancestor=not args.no_ancestor,
            fit_params=not args.no_fit,
            min_label_score=args.min_label_score,
        )
        address = client.addresses["selection"]
    doc = plan.document
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    # The answer does not say whether the plan came from the store: one made before this
    # call started is a stored one (its timings_ms are those of the request that made it);
    # created_at has whole seconds.
    started = time.time() - plan.select_ms / 1000.0
    made = plan.created_at.timestamp() if plan.created_at is not None else started
    fresh = math.floor(started) <= made <= datetime.now(UTC).timestamp()
    timings = SimpleNamespace(**doc["timings_ms"]) if fresh and doc.get("timings_ms") else None
    print_plan(doc, timings)
    console.print(f"SelectHeads at {address}: {plan.select_ms:.0f} ms")
    return 0


def warn_slow_start(settings: Settings, command: str, services: bool = False) -> None:
    """One line on stderr when this command is about to start slow things itself: the local
    Neo4j (seconds to tens of seconds) and, for `classify`, the services in this process.
    Running services answer without either: say so."""
    starts = []
    if settings.uses_local_neo4j:
        from mllgraph.graph import neo4j_server

        if neo4j_server.running_pid(settings) is None:
            starts.append("the local Neo4j")
    if services:
        starts.append("the three services in this process")
    if starts:
        Console(stderr=True).print(
            f"starting {' and '.join(starts)} (slow); with the services running "
            "(`mllgraph serve selection`, `... inference`), "
            f"`mllgraph {command} --target 127.0.0.1 ...` starts nothing",
            highlight=False,
            soft_wrap=True,
        )


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
    """One JSON-ready dict per prediction of a `client.Classification` (with
    "none_of_these" and "none_score" when allow_none was asked for)."""
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
        | (
            {"none_of_these": p.none_of_these, "none_score": round(p.none_score, 4)}
            if p.none_score is not None
            else {}
        )
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

        warn_slow_start(settings, "classify", services=True)

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
            result = client.classify(
                messages,
                names,
                budget=args.budget,
                pins=pins,
                top_k=args.top,
                allow_none=args.allow_none,
            )
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
    if result.none_threshold is not None:
        rejected = sum(p.none_of_these for p in result)
        console.print(
            f'"none of these": {rejected} of {len(result)} images '
            f"(threshold {result.none_threshold:.3f}{_none_check(plan)})"
        )
    console.print(f"select {t.select_ms:.0f} ms · classify {t.classify_ms:.0f} ms")
    return 1 if failed else 0


def _none_check(plan: Any) -> str:
    """How the plan's "none of these" score did on held-out probe images, as a clause: what
    a user can expect of the threshold (`select/none_calibration`)."""
    summary = (plan.document.get("none_of_these") or {}) if plan is not None else {}
    auroc = summary.get("probe_auroc")
    if not isinstance(auroc, int | float):
        return ""
    how = {
        "sources": "one probe source held out at a time",
        "folds": "held-out folds",
    }.get(str(summary.get("held_out", "folds")), "held out")
    return f"; probe images, {how}: AUROC {auroc:.2f}"


def register(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument(
        "--max-cost-ms",
        type=float,
        default=0.0,
        help="cap on the plan's compute: its models' cost, ms per image (default 0: no cap)",
    )
    p.add_argument(
        "--accuracy-slack",
        type=float,
        default=ACCURACY_SLACK,
        help="serve the cheapest plan within this of the best estimate (default "
        f"{ACCURACY_SLACK}, half a point; 0: the most accurate plan)",
    )
    p.add_argument("--json", action="store_true", help="print the plan document")
    p.add_argument(
        "--target",
        help="HOST (default ports) or HOST:PORT of a running selection service: select there "
        "(fast: nothing to start or load here); default: in this process over the local hub",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="with --target: deadline, s")
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
    p.add_argument(
        "--allow-none",
        action="store_true",
        help='answer "none of these" for an image the experts\' evidence fits no class well '
        "(the plan's calibrated threshold)",
    )
    p.add_argument("--json", action="store_true", help="one JSON line per image")
    p.set_defaults(handler=cmd_classify)


def _partial_note(plan: dict[str, Any]) -> str:
    """Which classes a stacked rule leaves to the per-class rule (no probe images)."""
    from mllgraph.plan.document import stacked_unscored

    others = stacked_unscored(plan)
    if others is None:
        return ""
    k = len(plan["classes"])
    return (
        f"; it scores {k - len(others)} of the {k} classes, the per-class rule "
        f"the others: {', '.join(others)} (no probe images)"
    )
