"""`mllgraph hub emoji fetch|stats|probes|tasks`: the emoji world's images.

- `fetch`: the install step (pinned npm packages into the emoji cache; idempotent, offline
  once done). `scripts/run.sh` runs it before the demo and the tests.
- `stats`: what the cache holds (emoji per style, in all styles), raster and augmentation
  time per image, cache size; printed and written to `reports/emoji_data.json`.
- `probes`: augmented probe folders for a concepts file and a held-out style, in the layout
  `mllgraph probes add --folder` reads (one folder per probe style).
- `tasks`: the held-out style's task images, `<out>/<wnid>/<hexcode>-<i>.png`.
- `experts`: small emoji experts, one per concept group and arch, trained on the given styles
  only (cached), registered with heads declared by wnid, a domain profile, and labelled on
  the hub's probe sets (`mllgraph.hubs.emoji.build`).

Imports the library inside the handlers only (the CLI must start fast).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mllgraph.cli.common import console
from mllgraph.settings import Settings


def cmd_fetch(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph.hubs.emoji import catalogue, install

    install.fetch(settings.emoji_cache, log=console.print)
    counts = catalogue.load(settings.emoji_cache).counts()
    console.print(
        f"emoji cache {settings.emoji_cache}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
    )
    return 0


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    import numpy as np

    from mllgraph.hubs.emoji import augment, catalogue, install, raster

    cache = settings.emoji_cache
    cat = catalogue.load(cache)
    args.side = args.side or augment.SIDE
    rng = np.random.default_rng(args.seed)
    per_style = {}
    for style in catalogue.STYLES:
        emoji = cat.with_style(style)
        sample = [emoji[i] for i in rng.choice(len(emoji), min(args.sample, len(emoji)), False)]
        started = time.perf_counter()
        rasters = [raster.rasterize(e.sources[style], args.size) for e in sample]
        raster_s = (time.perf_counter() - started) / len(sample)
        started = time.perf_counter()
        for i, r in enumerate(rasters):
            augment.augment(r, augment.seed_for("stats", style, sample[i].hexcode, i), args.side)
        augment_s = (time.perf_counter() - started) / len(sample)
        per_style[style] = {
            "emoji": len(emoji),
            "licence": catalogue.LICENCE[style],
            "sampled": len(sample),
            "raster_ms_per_image": round(1000 * raster_s, 2),
            "augment_ms_per_image": round(1000 * augment_s, 2),
        }
        console.print(
            f"{style:14s} {len(emoji):5d} emoji ({catalogue.LICENCE[style]}); raster "
            f"{1000 * raster_s:6.2f} ms/image at {args.size} px, augment "
            f"{1000 * augment_s:6.2f} ms/image at {args.side} px (n={len(sample)})"
        )
    counts = cat.counts()
    size = install.cache_bytes(cache)
    console.print(
        f"in all {len(catalogue.STYLES)} styles: {counts['all_styles']} emoji; in any: "
        f"{counts['any_style']}; cache {cache}: {size / 1e6:.1f} MB"
    )
    report = {
        "cache": str(cache),
        "cache_bytes": size,
        "packages": {n: f"{p.name}@{p.version}" for n, p in install.PACKAGES.items()},
        "raster_size": args.size,
        "augment_side": args.side,
        "counts": counts,
        "unmatched_fluent_files": cat.unmatched,
        "styles": per_style,
    }
    out = Path(args.json) if args.json else settings.reports_dir / "emoji_data.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    console.print(f"wrote {out}")
    return 0


def cmd_probes(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph.hubs.emoji import augment, catalogue, split

    args.side = args.side or augment.SIDE
    cat = catalogue.load(settings.emoji_cache)
    rows = split.read_concepts(Path(args.concepts))
    styles = args.styles.split(",") if args.styles else catalogue.STYLES
    style_split = split.split(args.held_out, styles)
    out = Path(args.out)
    manifest = split.write_probe_folders(
        cat, rows, style_split, out, per_style=args.per_style, seed=args.seed, side=args.side
    )
    for style in style_split.probe_styles:
        n = sum(1 for m in manifest if m["style"] == style)
        concepts = len({m["wnid"] for m in manifest if m["style"] == style})
        console.print(f"{style}: {n} images for {concepts} concepts in {out / style}")
    console.print(
        "attach with: "
        + "; ".join(
            f"mllgraph probes add --folder {out / s} --source emoji:{s}"
            for s in style_split.probe_styles
        )
    )
    return 0


def cmd_tasks(args: argparse.Namespace, settings: Settings) -> int:
    from PIL import Image

    from mllgraph.hubs.emoji import augment, catalogue, split

    args.side = args.side or augment.SIDE
    cat = catalogue.load(settings.emoji_cache)
    rows = split.read_concepts(Path(args.concepts))
    style_split = split.split(args.held_out)
    images = split.task_images(
        cat, rows, style_split, per_emoji=args.per_emoji, seed=args.seed, side=args.side
    )
    out = Path(args.out)
    listed = []
    for t in images:
        folder = out / t.wnid
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{t.hexcode}-{t.seed}.png"
        Image.fromarray(t.image, "RGB").save(path)
        listed.append(
            {
                "path": str(path.relative_to(out)),
                "wnid": t.wnid,
                "synset": t.synset,
                "hexcode": t.hexcode,
                "style": t.style,
                "seed": t.seed,
                "source_sha256": t.source_sha256,
            }
        )
    (out / "tasks.json").write_text(
        json.dumps({"style": args.held_out, "images": listed}, indent=1)
    )
    console.print(f"{len(images)} task images of {args.held_out} in {out}")
    return 0


def cmd_experts(args: argparse.Namespace, settings: Settings) -> int:
    from mllgraph.graph import db, sdag
    from mllgraph.graph.wordnet import load_nouns
    from mllgraph.hubs.emoji import build, experts

    recipe = experts.Recipe(epochs=args.epochs, per_emoji=args.per_emoji, size=args.size)
    # Every bad input (group, arch, style, recipe) is refused here, before any work.
    specs, skipped = build.plan(
        train_styles=args.train_styles.split(","),
        groups=args.groups.split(",") if args.groups else None,
        archs=tuple(a.strip() for a in args.archs.split(",")),
        seed=args.seed,
        recipe=recipe,
        held_out=args.held_out,
        concepts=Path(args.concepts) if args.concepts else experts.CONCEPTS_FILE,
    )
    console.print(
        f"{len(specs)} emoji experts ({len({s.group.name for s in specs})} groups x "
        f"{len({s.arch for s in specs})} archs) on {', '.join(specs[0].train_styles)}"
        + (f"; groups skipped: {skipped}" if skipped else "")
    )
    with db.connect(settings) as graph:
        sdag.load(graph, load_nouns(settings.wordnet_dir))
        report = build.build_experts(
            graph,
            settings,
            specs,
            held_out=args.held_out,
            label=not args.no_label,
            samples_per_concept=args.samples_per_concept,
            log=console.print,
        )
    for mid in report.models:
        console.print(f"{mid}: accuracy on unseen augmentations {report.heldout_accuracy[mid]:.3f}")
    console.print(f"labelled {len(report.labelled)} models")
    return 0


def register(hub_actions: argparse._SubParsersAction) -> None:
    """`emoji` under `mllgraph hub`."""
    p = hub_actions.add_parser("emoji", help="the emoji world's images (fetch, stats, probes)")
    s = p.add_subparsers(dest="emoji_action", required=True)
    q = s.add_parser("fetch", help="install the pinned emoji packages into the emoji cache")
    q.set_defaults(handler=cmd_fetch)
    q = s.add_parser("stats", help="emoji per style, raster time, cache size (reports/)")
    q.add_argument("--sample", type=int, default=50, help="emoji per style to time")
    q.add_argument("--size", type=int, default=128, help="raster side (px)")
    q.add_argument("--side", type=int, default=None, help="augmented image side (px; default 224)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--json", help="report path (default reports/emoji_data.json)")
    q.set_defaults(handler=cmd_stats)
    for name, handler in (("probes", cmd_probes), ("tasks", cmd_tasks)):
        q = s.add_parser(name, help=f"write {name} images for a concepts file")
        q.add_argument("--concepts", required=True, help="concepts.tsv (hexcode, name, wnid, ...)")
        q.add_argument("--held-out", required=True, help="the held-out style")
        q.add_argument("--out", required=True, help="folder to write")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--side", type=int, default=None, help="image side (px; default 224)")
        if name == "probes":
            q.add_argument("--styles", help="comma-separated styles (default: all four)")
            q.add_argument("--per-style", type=int, default=10, help="images per (concept, style)")
        else:
            q.add_argument("--per-emoji", type=int, default=5)
        q.set_defaults(handler=handler)
    q = s.add_parser(
        "experts",
        help="train (cached), register and label emoji experts, one per concept group and arch",
    )
    q.add_argument(
        "--train-styles", required=True, help="comma-separated training styles, e.g. A,B"
    )
    q.add_argument("--groups", help="comma-separated concept groups (default: every group)")
    q.add_argument(
        "--archs", default="test_resnet,test_mambaout", help="comma-separated timm archs"
    )
    q.add_argument("--held-out", help="a style to check the training styles against")
    q.add_argument("--concepts", help="concepts file (default: the package's concepts.tsv)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--epochs", type=int, default=12)
    q.add_argument("--per-emoji", type=int, default=16, help="images per emoji and style")
    q.add_argument("--size", type=int, default=64, help="the experts' input side (px)")
    q.add_argument("--no-label", action="store_true", help="register without labelling")
    q.add_argument("--samples-per-concept", type=int, default=200)
    q.set_defaults(handler=cmd_experts)
