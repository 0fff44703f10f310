"""Where a model's input-domain profile (mllgraph.combine.domain) is kept.

The profile file lives beside the model's other files, named by its sha256
(`<model dir>/domain-<sha256>.npz`); the Model node records that sha256
(`domain_sha256`, with `domain_threshold`, `domain_images`, `domain_source`). The file is
written first and the graph second, so a reader never finds a sha256 without its file; a
failed graph write removes the new file. Older profile files are removed after the switch.
In a model store at a URL (`store`) the file is put there too, and readers fetch it into
their cache by its sha256.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mllgraph.combine.domain import DomainProfile, thumbnails
from mllgraph.errors import FailedPrecondition, InvalidArgument, NotFound
from mllgraph.hub import registry, store
from mllgraph.settings import Settings

if TYPE_CHECKING:
    from mllgraph.graph.db import Graph

# sha256 -> profile (files never change under a name); models of one domain share one.
_CACHE: dict[str, DomainProfile] = {}
_CACHE_SIZE = 256  # ~300 kB each; the oldest loaded goes first
_CACHE_LOCK = threading.Lock()


def profile_path(settings: Settings, mid: str, sha256: str) -> Path:
    """The profile's file in the model store's local folder (a remote store's cache)."""
    return registry.model_dir(settings, mid) / _name(sha256)


def _name(sha256: str) -> str:
    return f"domain-{sha256}.npz"


def describe(
    graph: Graph,
    settings: Settings,
    mid: str,
    images: Sequence[np.ndarray],
    source: str,
) -> dict[str, Any]:
    """Fit `mid`'s domain profile on `images` (a sample of what it was trained on) and
    record it. `source` says what the images were, for people reading the catalogue."""
    registry.get_model(graph, mid)  # NotFound before any work
    return record(graph, settings, mid, DomainProfile.fit(thumbnails(images)), source)


def record(
    graph: Graph, settings: Settings, mid: str, profile: DomainProfile, source: str
) -> dict[str, Any]:
    """Record a fitted profile as `mid`'s domain (several models of one domain share one)."""
    if not source.strip():
        raise InvalidArgument("source is empty: say what the domain images are")
    data = profile.to_bytes()
    sha = hashlib.sha256(data).hexdigest()
    path = profile_path(settings, mid, sha)
    existed = path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    part.write_bytes(data)
    part.replace(path)
    remote = store.model_remote(settings)
    try:
        if remote is not None:
            remote.put(path, f"{registry.model_key(mid)}/{_name(sha)}")
        rows = graph.write(
            "hub/model_set_domain",
            id=mid,
            sha256=sha,
            threshold=profile.threshold,
            images=profile.images,
            source=source.strip(),
        )
    except BaseException:
        if not existed:
            path.unlink(missing_ok=True)
            if remote is not None:
                remote.remove(f"{registry.model_key(mid)}/{_name(sha)}")
        raise
    if not rows:  # deleted meanwhile
        path.unlink(missing_ok=True)
        raise NotFound(f"model {mid!r} is not registered (ids look like 'name@version')")
    _remove_others(settings, mid, keep=path.name)
    return {
        "model": mid,
        "domain_sha256": sha,
        "domain_threshold": profile.threshold,
        "domain_images": profile.images,
        "domain_source": source.strip(),
        "catalogue_version": rows[0]["catalogue_version"],
    }


def clear(graph: Graph, settings: Settings, mid: str) -> dict[str, Any]:
    """Forget `mid`'s domain profile: its heads speak about every image again."""
    rows = graph.write("hub/model_clear_domain", id=mid)
    if not rows:
        raise NotFound(f"model {mid!r} is not registered (ids look like 'name@version')")
    _remove_others(settings, mid, keep=None)
    return {
        "model": mid,
        "cleared": rows[0]["previous"] is not None,
        "catalogue_version": rows[0]["catalogue_version"],
    }


def _remove_others(settings: Settings, mid: str, keep: str | None) -> None:
    """Profile files of `mid` other than `keep`, here and in a remote store."""
    for old in registry.model_dir(settings, mid).glob("domain-*.npz"):
        if old.name != keep:
            old.unlink(missing_ok=True)
    remote = store.model_remote(settings)
    if remote is not None:
        root = registry.model_key(mid)
        for name in remote.listdir(root):
            if name.startswith("domain-") and name != keep:
                remote.remove(f"{root}/{name}")


def profile_file(settings: Settings, mid: str, record: dict[str, Any]) -> Path:
    """The local file of the profile a record names: a bundle's copy (`domain_path`), the
    file in a local store, or a remote store's, fetched into its cache."""
    if record.get("domain_path"):
        return Path(record["domain_path"])
    sha = str(record["domain_sha256"])
    path = profile_path(settings, mid, sha)
    remote = store.model_remote(settings)
    if remote is not None and not path.is_file():
        return remote.fetch(f"{registry.model_key(mid)}/{_name(sha)}", sha256=sha)
    return path


def load(settings: Settings, mid: str, record: dict[str, Any]) -> DomainProfile:
    """The profile a model record names (cached by sha256): the record's `domain_path` (a
    plan bundle's copy), else the file beside the model in the store."""
    sha = str(record["domain_sha256"])
    with _CACHE_LOCK:
        if sha in _CACHE:
            return _CACHE[sha]
    path = profile_file(settings, mid, record)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise FailedPrecondition(
            f"model {mid} names domain profile {sha[:12]} but {path} is missing: "
            "describe its domain again (mllgraph models domain)"
        ) from e
    if hashlib.sha256(data).hexdigest() != sha:
        raise FailedPrecondition(f"model {mid}'s domain profile {path} does not match its sha256")
    profile = DomainProfile.from_bytes(data)
    with _CACHE_LOCK:
        _CACHE[sha] = profile
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
    return profile
