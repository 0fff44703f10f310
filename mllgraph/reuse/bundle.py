"""Plan bundles: a plan with everything it needs, for machines without Neo4j.

``python -m mllgraph.reuse.bundle export-plan`` writes a self-contained folder (plan document,
model records, weight blobs, Fashion-MNIST test images, CPU reference probabilities) that
``scripts/gpu_check.py`` and ``mllgraph serve inference --bundle`` serve with no Neo4j.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.errors import (
    FailedPrecondition,
    MllgraphError,
)
from mllgraph.hub import domains
from mllgraph.reuse.cache import (
    ModelCache,
    load_from_blob,
)
from mllgraph.reuse.classifier import PlanClassifier
from mllgraph.select.plan import parse_plan
from mllgraph.settings import Settings


@dataclass
class Bundle:
    root: Path
    plan: dict[str, Any]
    records: dict[str, dict[str, Any]]


def load_bundle(root: str | Path) -> Bundle:
    """A folder written by `export-plan`: plan.json, records.json, blobs/."""
    root = Path(root).resolve()
    try:
        plan = json.loads((root / "plan.json").read_text())
        records = json.loads((root / "records.json").read_text())
    except FileNotFoundError as e:
        raise FailedPrecondition(f"{root} is not a plan bundle: {e}") from e
    for rec in records.values():
        rec["weights_path"] = str(root / rec["weights_path"])
        if rec.get("domain_path"):
            rec["domain_path"] = str(root / rec["domain_path"])
    return Bundle(root, plan, records)


def export_bundle(
    plan: dict[str, Any],
    records: Mapping[str, dict[str, Any]],
    out: str | Path,
    *,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    settings: Settings | None = None,
) -> Path:
    """Write a bundle: the plan, its models' records and weight blobs (and domain profiles,
    read from `settings`' model store), optional test images and reference probabilities
    (used by scripts/gpu_check.py)."""
    out = Path(out)
    (out / "blobs").mkdir(parents=True, exist_ok=True)
    portable = {}
    for mid, rec in records.items():
        src = Path(rec["weights_path"])
        if not src.is_file():
            raise FailedPrecondition(f"the weights of model {mid} are missing: {src}")
        dst = out / "blobs" / src.name
        if not dst.exists():
            shutil.copyfile(src, dst)
        portable[mid] = {**_jsonable(rec), "weights_path": f"blobs/{src.name}"}
        if rec.get("domain_sha256"):
            if settings is None:
                raise FailedPrecondition(
                    f"model {mid} has a domain profile: export_bundle needs the settings "
                    "whose model store holds it"
                )
            name = f"domain-{rec['domain_sha256']}.npz"
            shutil.copyfile(domains.profile_file(settings, mid, rec), out / name)
            portable[mid]["domain_path"] = name
    (out / "plan.json").write_text(json.dumps(plan, indent=1))
    (out / "records.json").write_text(json.dumps(portable, indent=1, sort_keys=True))
    if images is not None:
        np.savez_compressed(
            out / "images.npz",
            images=images,
            labels=labels if labels is not None else np.zeros(0, np.int64),
        )
    if reference is not None:
        np.save(out / "reference.npy", reference)
    return out


def _jsonable(rec: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(rec), default=str))


def _cmd_export(args: argparse.Namespace) -> int:
    from mllgraph.graph import db
    from mllgraph.hub import fashion, registry
    from mllgraph.select import run as select

    settings = Settings.from_env()
    with db.connect(settings) as graph:
        if args.plan_id:
            plan = select.get_plan(graph, args.plan_id)
        else:
            from mllgraph.select.ground import default_resolver

            classes = [select.TaskClass(n.strip()) for n in args.classes.split(",") if n.strip()]
            ctx = select.select(
                graph,
                settings,
                classes,
                select.SelectOptions(budget=args.budget),
                default_resolver(settings, use_embeddings=False),
            )
            plan = ctx.plan
        records = {mid: registry.get_model(graph, mid) for mid in parse_plan(plan).models}
    for rec in records.values():  # a model store at a URL: bundle the cached copies
        rec["weights_path"] = str(registry.weights_file(settings, rec))
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
    parser = argparse.ArgumentParser(prog="python -m mllgraph.reuse.bundle")
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
