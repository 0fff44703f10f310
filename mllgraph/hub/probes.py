"""Probe sets: labelled images attached to SDAG concepts.

Images live outside Neo4j, one `.npz` per probe set (`images`: uint8, (N,H,W) or
(N,H,W,3)) under the probe store; the graph has `(:ProbeSet {id, count, ...})-[:PROBES]->
(:Concept)` and each concept's `probe_count`. A probe image is addressed as (set id, index),
which is how every model's stored probe outputs line up across models.

A probe store at a URL (`store`) gets the same file, named `<set id>.<sha256[:16]>.npz` there
(a set removed and added again with other images gets another name, so cached copies never go
stale); the graph records its URL and readers (labelling, on any worker) fetch it into their
cache.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from mllgraph import paths
from mllgraph.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from mllgraph.graph.db import Graph
from mllgraph.hub import store
from mllgraph.settings import Settings

SET_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_SIDE = 1024


@dataclass(frozen=True)
class ProbeSet:
    id: str
    wnid: str
    concept: str
    count: int
    path: str
    source: str


def _validate_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise InvalidArgument(f"probe images must be uint8, got {images.dtype}")
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] != 3):
        raise InvalidArgument(
            f"probe images must be (N,H,W) gray or (N,H,W,3) RGB, got shape {images.shape}"
        )
    if images.shape[0] == 0:
        raise InvalidArgument("a probe set needs at least one image")
    if max(images.shape[1:3]) > MAX_SIDE or min(images.shape[1:3]) < 8:
        raise InvalidArgument(f"probe image sides must be 8..{MAX_SIDE}, got {images.shape[1:3]}")
    return np.ascontiguousarray(images)


def add_probe_set(
    graph: Graph,
    settings: Settings,
    *,
    concept: str,
    images: np.ndarray,
    set_id: str | None = None,
    source: str = "",
) -> tuple[ProbeSet, bool]:
    """Register images for a concept; (probe set, created). Same id and same images: no-op."""
    from mllgraph.graph import sdag
    from mllgraph.hub import registry

    registry.ensure_schema(graph)
    images = _validate_images(images)
    wnid = sdag.concept(graph, concept)["wnid"]  # NotFound names an unknown concept
    sha = hashlib.sha256(images.tobytes() + str(images.shape).encode()).hexdigest()
    set_id = set_id or f"{wnid}-{sha[:12]}"
    if not SET_ID_RE.match(set_id):
        raise InvalidArgument(f"probe set id {set_id!r}: letters, digits, '.', '_', ':', '-'")
    existing = graph.read("hub/probe_set_get", id=set_id)
    if existing:
        p = existing[0]["probe_set"]
        if p["sha256"] == sha and p["wnid"] == wnid:
            return _probe_set(p), False
        raise AlreadyExists(f"probe set {set_id!r} already exists with other images or concept")
    remote = store.probe_remote(settings)
    key = f"{set_id}.{sha[:16]}.npz" if remote is not None else f"{set_id}.npz"
    path = settings.probe_store / key
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part.npz")
    np.savez(part, images=images)
    os.replace(part, path)
    location = str(path)
    if remote is not None:
        remote.put(path, key)
        location = remote.url_of(key)
    try:
        graph.write(
            "hub/probe_set_create",
            id=set_id,
            wnid=wnid,
            count=int(images.shape[0]),
            sha256=sha,
            path=location,
            source=source,
            height=int(images.shape[1]),
            width=int(images.shape[2]),
            channels=1 if images.ndim == 3 else 3,
        )
    except Exception:
        path.unlink(missing_ok=True)
        if remote is not None:
            remote.remove(key)
        raise
    return _probe_set(graph.read("hub/probe_set_get", id=set_id)[0]["probe_set"]), True


def _probe_set(p: dict[str, Any]) -> ProbeSet:
    return ProbeSet(p["id"], p["wnid"], p["concept"], p["count"], p["path"], p.get("source", ""))


def probe_sets(graph: Graph) -> list[ProbeSet]:
    return [
        ProbeSet(r["id"], r["wnid"], r["concept"], r["count"], r["path"], r["source"] or "")
        for r in graph.read("hub/probe_sets")
    ]


def remove_probe_set(graph: Graph, set_id: str, settings: Settings) -> None:
    """Remove a probe set from the graph and its file from this home's probe store (never a
    file of another home whose path the graph still records: a copied hub's original)."""
    rows = graph.read("hub/probe_set_get", id=set_id)
    if not rows:
        raise NotFound(f"probe set {set_id!r} does not exist")
    graph.write("hub/probe_set_delete", id=set_id)
    location = rows[0]["probe_set"]["path"]
    if paths.is_remote(location):
        store.remove_url(location)  # cached copies elsewhere are never read again
        return
    root = settings.probe_store
    path = paths.in_store(root, location)
    if path.is_relative_to(root):
        path.unlink(missing_ok=True)


def load_images(
    probe_set: ProbeSet, limit: int | None = None, *, settings: Settings | None = None
) -> np.ndarray:
    """The first `limit` images of a set (sets are stored in a seeded random order). A set in
    a store at a URL is read from the local cache of `settings` (fetched first if needed)."""
    if paths.is_remote(probe_set.path):
        try:
            path = store.fetch_url(settings or Settings.from_env(), probe_set.path)
        except FailedPrecondition as e:
            raise NotFound(f"images of probe set {probe_set.id} are missing: {e}") from e
    else:
        path = paths.in_store((settings or Settings.from_env()).probe_store, probe_set.path)
    if not path.is_file():
        raise NotFound(f"images of probe set {probe_set.id} are missing: {path}")
    with np.load(path) as data:
        images = data["images"]
    return images if limit is None else images[:limit]
