"""Plan bundles: a plan with everything it needs, for machines without Neo4j.

A bundle is a self-contained folder (plan document, model records, weight blobs, optional
test images and CPU reference probabilities) that ``mllgraph serve inference --bundle`` and
``scripts/gpu_check.py`` serve with no Neo4j. This module reads and writes the format;
``python -m mllgraph.eval.bundle export-plan`` makes one from the catalogue.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph import paths
from mllgraph.errors import (
    FailedPrecondition,
)
from mllgraph.hub import domains
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
        if settings is not None:  # a copied or moved home: its own blob (paths.in_store)
            src = paths.in_store(settings.model_store, str(src))
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
