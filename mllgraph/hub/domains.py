"""Where a model's input-domain profile (mllgraph.combine.domain) is kept.

The profile file lives beside the model's other files, named by its sha256
(`<model dir>/domain-<sha256>.npz`); the Model node records that sha256
(`domain_sha256`, with `domain_threshold`, `domain_images`, `domain_source`). The file is
written first and the graph second, so a reader never finds a sha256 without its file; a
failed graph write removes the new file. Older profile files are removed after the switch.
In a model store at a URL (`store`) the file is put there too, and readers fetch it into
their cache by its sha256.

`describe_path` fits a profile on images in a folder or an array file with bounded memory:
each image is decoded, reduced to its thumbnail and let go before the next (a JPEG decoded
at a reduced scale), so only the 192 numbers per image are kept.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mllgraph.combine.domain import MAX_IMAGES, THUMBNAIL, DomainProfile, thumbnail, thumbnails
from mllgraph.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from mllgraph.hub import registry, store
from mllgraph.settings import Settings

if TYPE_CHECKING:
    from mllgraph.graph.db import Graph

# sha256 -> profile (files never change under a name); models of one domain share one.
_CACHE: dict[str, DomainProfile] = {}
_CACHE_SIZE = 256  # ~300 kB each; the oldest loaded goes first
_CACHE_LOCK = threading.Lock()
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# A JPEG is decoded at the smallest DCT scale that keeps this many pixels a side: the 8x8
# thumbnail still averages dozens of pixels each, so it matches a full decode's closely.
DRAFT_SIDE = THUMBNAIL * 32
ARRAY_SLICE = 64  # images of an array file thumbnailed at once


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


def describe_path(
    graph: Graph, settings: Settings, mid: str, path: Path, source: str | None = None
) -> dict[str, Any]:
    """`describe` from a folder of JPEG/PNG files (searched recursively, in name order, at
    most MAX_IMAGES) or a .npy/.npz array (N, H, W[, C]), one image in memory at a time;
    images over `settings.infer_max_image_pixels` are refused (from their headers)."""
    registry.get_model(graph, mid)  # NotFound before any work
    thumbs = path_thumbnails(Path(path), max_pixels=settings.infer_max_image_pixels)
    source = source or f"{len(thumbs)} images from {path}"
    return record(graph, settings, mid, DomainProfile.fit(thumbs), source)


def path_thumbnails(path: Path, *, max_pixels: int, limit: int = MAX_IMAGES) -> np.ndarray:
    """(N, 192) thumbnails of the images at `path` (see `describe_path`)."""
    if path.suffix in (".npy", ".npz") and path.is_file():
        return _array_thumbnails(path, limit)
    if not path.is_dir():
        raise InvalidArgument(f"images {path}: not a folder or a .npy/.npz file")
    files = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    out = np.empty((len(files), THUMBNAIL * THUMBNAIL * 3))
    for i, f in enumerate(files):
        out[i] = _file_thumbnail(f, max_pixels)
    return out


def _file_thumbnail(path: Path, max_pixels: int) -> np.ndarray:
    """One image file's thumbnail, decoded at a reduced size where the format allows."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ResourceExhausted(
                    f"images: {path} has {w}x{h} pixels, over the limit of {max_pixels:,} "
                    "per image (MLLGRAPH_INFER_MAX_IMAGE_PIXELS); downscale it"
                )
            im.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))  # JPEG only: a no-op for PNG
            return thumbnail(im)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise InvalidArgument(f"images: {path} is not a readable image: {e}") from e


def _array_thumbnails(path: Path, limit: int) -> np.ndarray:
    """Thumbnails of an (N, H, W[, C]) array file (.npz: its `images`), a slice at a time
    (a .npy is memory-mapped, so only the slice is read)."""
    try:
        loaded = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise InvalidArgument(f"images: {path} is not a readable .npy/.npz array: {e}") from e
    try:
        if hasattr(loaded, "files") and "images" not in loaded.files:
            raise InvalidArgument(f"images: {path} has no 'images' array ({loaded.files})")
        images = loaded["images"] if hasattr(loaded, "files") else loaded
        n = min(len(images), limit)
        parts = [thumbnails(list(images[i : i + ARRAY_SLICE])) for i in range(0, n, ARRAY_SLICE)]
    finally:
        if hasattr(loaded, "close"):
            loaded.close()
    return np.concatenate(parts) if parts else np.empty((0, THUMBNAIL * THUMBNAIL * 3))


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
