"""`mllgraph models ...`: register, label, list, show, delete a model, and describe its input
domain; `register --target` goes through a running ingestion service.

Imports the library (mllgraph.graph, hub, label) and the client inside the handlers only (the
CLI must start fast); never mllgraph.web or mllgraph.eval.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from mllgraph.cli.common import (
    console,
    executor_flag,
    progress_bar,
    rows_table,
    target_flags,
    with_executor,
)
from mllgraph.errors import InvalidArgument
from mllgraph.settings import Settings


def _spec_from_args(args: argparse.Namespace) -> Any:  # -> InputSpec | None
    """The input spec the flags give, completed as the ingestion service completes it
    (`preprocess.complete_spec`), so a registration gets the same spec either way."""
    if args.input_size is None:
        return None
    from mllgraph.hub.preprocess import complete_spec

    return complete_spec(
        args.arch or "",
        size=args.input_size,
        channels=args.channels,
        mean=args.mean,
        std=args.std,
        resize=args.resize,
        crop_pct=args.crop_pct,
    )


def _split_list(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",")] if text else None


def _metadata(pairs: list[str] | None) -> dict[str, str]:
    """`--metadata KEY=VALUE` flags as a dict (a key given twice: InvalidArgument)."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidArgument(f"--metadata {pair!r}: write KEY=VALUE, e.g. training_data=...")
        if key in out:
            raise InvalidArgument(f"--metadata: key {key!r} is given twice")
        out[key] = value
    return out


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
        reg = timm_source.registration(
            args.name,
            args.timm,
            version=args.version,
            weights=Path(args.weights) if args.weights else None,
            top1_accuracy=args.top1_accuracy,
        )
        return replace(reg, metadata={**reg.metadata, **_metadata(args.metadata)})
    return registry.Registration(
        name=args.name,
        version=args.version,
        arch=args.arch or "",
        builtin=args.builtin,
        weights_path=Path(args.weights) if args.weights else None,
        class_names=_split_list(args.class_names),
        wnids=_split_list(args.wnids),
        input_spec=_spec_from_args(args),
        metadata=_metadata(args.metadata),
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
    from mllgraph.ground import resolve
    from mllgraph.hub import registry
    from mllgraph.label import run as labeller
    from mllgraph.label import work as label_work

    if args.action == "register" and args.target:
        return _register_through(args, settings)
    with db.connect(settings) as graph:
        if args.action == "register":
            reg = _registration(args)
            ground = resolve.grounder(settings) if reg.class_names else None
            _print_registered(registry.register_model(graph, settings, reg, ground))
        elif args.action == "label":
            from mllgraph.hub import probe_folder

            settings = with_executor(settings, args)
            options = label_work.LabelOptions(samples_per_concept=args.samples_per_concept)
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
            console.print(
                rows_table([{**{k: r.get(k) for k in keys}, **_cost(r)} for r in rows], "models")
            )
        elif args.action == "show":
            record = registry.get_model(graph, args.model_id)
            console.print_json(data={**record, **_cost(record)})
            heads = registry.heads(graph, args.model_id, top_k=3)[: args.heads]
            for h in heads:
                h["labels"] = ", ".join(f"{x['name']} {x['score']:.2f}" for x in h["labels"])
            console.print(rows_table(heads, f"first {len(heads)} heads (best measured labels)"))
        elif args.action == "delete":
            console.print_json(data=registry.delete_model(graph, settings, args.model_id))
        elif args.action == "cost":
            todo = list(args.model_id) or [
                r["id"]
                for r in registry.list_models(graph, limit=1000)
                if args.all or r.get("cost_ms_per_image") is None
            ]
            for mid in todo:
                record = registry.measure_cost(graph, settings, mid)
                console.print(
                    f"{mid}: {record['cost_ms_per_image']:.3g} ms per image on "
                    f"{record['cost_device']} ({record.get('cost_clock', 'wall')} time, "
                    f"{record['cost_threads']} thread(s))"
                )
            if not todo:
                console.print("every model has a measured cost (--all measures them again)")
        elif args.action == "domain":
            from mllgraph.hub import domains

            if args.clear == bool(args.images):
                raise InvalidArgument("models domain: give --images or --clear")
            if args.clear:
                console.print_json(data=domains.clear(graph, settings, args.model_id))
                return 0
            path = Path(args.images)
            if not (path.is_dir() or (path.suffix in (".npy", ".npz") and path.is_file())):
                raise InvalidArgument(f"--images {path}: not a folder or a .npy/.npz file")
            # One image in memory at a time, each checked from its header first.
            console.print_json(
                data=domains.describe_path(graph, settings, args.model_id, path, args.source)
            )
    return 0


def _cost(record: dict[str, Any]) -> dict[str, Any]:
    """The model's cost per image as listed: measured, or estimated (`hub.cost.cost_of`)."""
    from mllgraph.hub import cost as hub_cost

    ms, estimated = hub_cost.cost_of(record)
    return {"ms_per_image": f"{ms:.3g}" + (" (estimated)" if estimated else "")}


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
    with progress_bar() as progress:
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


def register(sub: argparse._SubParsersAction) -> None:
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
    q.add_argument("--channels", type=int, help="input channels (default 3)")
    q.add_argument("--mean", type=float, nargs="+")
    q.add_argument("--std", type=float, nargs="+")
    q.add_argument(
        "--resize", choices=["resize", "resize_crop"], help="default resize_crop (as the service)"
    )
    q.add_argument(
        "--crop-pct", type=float, help="default: timm's for --arch, else 0.875 (1.0 with resize)"
    )
    q.add_argument(
        "--top1-accuracy",
        type=float,
        help="stated top-1 accuracy on its own labels, in (0, 1]: the prior of its declared "
        "(unmeasured) heads; builtins state their own",
    )
    q.add_argument(
        "--metadata",
        action="append",
        metavar="KEY=VALUE",
        help="free-form metadata stored with the model (repeatable), e.g. "
        "training_data=imagenet-1k or licence=apache-2.0",
    )
    target_flags(q, "register through a running ingestion service; --weights is uploaded")
    q = s.add_parser("label", help="run models on the probes and write their labels")
    q.add_argument("model_id", nargs="*")
    q.add_argument(
        "--stale", action="store_true", help="relabel every model new probe images made stale"
    )
    q.add_argument("--samples-per-concept", type=int, default=200)
    executor_flag(q)
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
        "cost",
        help="measure models' cost per image on this machine's serving device and record it "
        "(default: every model without a measured cost)",
    )
    q.add_argument("model_id", nargs="*")
    q.add_argument(
        "--all",
        action="store_true",
        help="measure every model again, one after the other: costs measured on other days "
        "(another load, another machine speed) then compare like with like",
    )
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
