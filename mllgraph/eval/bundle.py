"""`python -m mllgraph.eval.bundle export-plan`: select (or look up) a plan and write it as a
bundle with Fashion-MNIST test images and the CPU's fp32 predictions on them, for the GPU
check (`scripts/gpu_check.sh`) on a machine without Neo4j. The bundle format itself is
`mllgraph.reuse.bundle`.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from mllgraph.errors import MllgraphError
from mllgraph.hub import loading
from mllgraph.plan import request as plan_request
from mllgraph.plan.document import parse_plan
from mllgraph.reuse.bundle import export_bundle, load_bundle
from mllgraph.reuse.cache import ModelCache, load_from_blob
from mllgraph.reuse.classifier import PlanClassifier
from mllgraph.settings import Settings


def _cmd_export(args: argparse.Namespace) -> int:
    from mllgraph.graph import db
    from mllgraph.hub import registry
    from mllgraph.hubs.fashion import data as fashion
    from mllgraph.select import run as select

    settings = Settings.from_env()
    with db.connect(settings) as graph:
        if args.plan_id:
            plan = select.get_plan(graph, args.plan_id)
        else:
            from mllgraph.ground.resolve import default_resolver

            classes = [
                plan_request.TaskClass(n.strip()) for n in args.classes.split(",") if n.strip()
            ]
            ctx = select.select(
                graph,
                settings,
                classes,
                plan_request.SelectOptions(budget=args.budget),
                default_resolver(settings, use_embeddings=False),
            )
            plan = ctx.plan
        records = {mid: registry.get_model(graph, mid) for mid in parse_plan(plan).models}
    for rec in records.values():  # a model store at a URL: bundle the cached copies
        rec["weights_path"] = str(loading.weights_file(settings, rec))
    images, labels = fashion.load_split("test", settings.fashion_mnist_dir)
    images, labels = images[: args.images], labels[: args.images]
    out = export_bundle(plan, records, args.out, images=images, labels=labels, settings=settings)
    bundle = load_bundle(out)
    cpu = ModelCache(settings, device="cpu", precision="fp32", loader=load_from_blob)
    clf = PlanClassifier(bundle.plan, bundle.records, settings, cpu)
    ref = np.stack([r.probabilities for r in clf.classify(list(images))])
    np.save(out / "reference.npy", ref)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(
        f"bundle {out}: plan {plan.get('plan_id')} ({len(plan['classes'])} classes, models "
        f"{parse_plan(plan).models}), {len(images)} test images, {size / 1e6:.1f} MB"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mllgraph.eval.bundle")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export-plan", help="write a plan bundle for a machine without Neo4j")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--plan-id")
    g.add_argument("--classes", help="comma-separated class names: select (and store) a plan")
    p.add_argument("--budget", type=int, default=3)
    p.add_argument("--images", type=int, default=512, help="Fashion-MNIST test images to include")
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        return _cmd_export(args)
    except MllgraphError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
