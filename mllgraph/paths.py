"""Where a store lives: a plain path, a `file://` URL, or any other fsspec URL.

Dependency-free on purpose: `mllgraph.settings` reads store locations through these helpers,
and settings must import nothing from a subpackage (it sits below every room). The stores
themselves (reading, writing, caching) are `mllgraph.hub.store`.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from mllgraph.errors import FailedPrecondition, InvalidArgument

MODEL_STORE_VAR = "MLLGRAPH_MODEL_STORE"


PROBE_STORE_VAR = "MLLGRAPH_PROBE_STORE"


LOCAL_PROTOCOLS = ("file", "local")  # fsspec's names for this machine's file system


def is_remote(location: str) -> bool:
    """True for a URL of another file system than this machine's (`s3://...`)."""
    if "://" not in location:
        return False
    return location.split("://", 1)[0].lower() not in LOCAL_PROTOCOLS


def local_path(location: str) -> Path:
    """The folder a plain path or a `file://` URL names."""
    if "://" in location:
        return Path(location.split("://", 1)[1])
    return Path(location)


def cache_root(home: Path, url: str) -> Path:
    """The read-through cache of the remote store at `url` (one folder per URL)."""
    return home / "cache" / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


def local_root(home: Path, variable: str, location: str) -> Path:
    """A store's local folder: the store itself, or a remote store's cache (checked first)."""
    if not is_remote(location):
        return local_path(location)
    check(variable, location)
    return cache_root(home, location)


@lru_cache(maxsize=64)
def check(variable: str, url: str) -> None:
    """InvalidArgument for a protocol fsspec does not know; FailedPrecondition naming the pip
    package when its file system is not installed (e.g. s3fs for s3://)."""
    filesystem(variable, url)


def filesystem(variable: str, url: str) -> tuple[Any, str]:
    """(fsspec file system, the store's root path in it)."""
    try:
        import fsspec.core
        from fsspec.registry import known_implementations
    except ImportError as e:  # a declared dependency; only a broken install lacks it
        raise FailedPrecondition(f"{variable}={url!r} needs fsspec: pip install fsspec") from e
    protocol = url.split("://", 1)[0].split("::")[-1].lower()
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except ImportError as e:
        known = known_implementations.get(protocol, {})
        package = known.get("class", "").split(".")[0] or f"the fsspec backend for {protocol}"
        raise FailedPrecondition(
            f"{variable}={url!r}: the {protocol}:// file system needs a package that is not "
            f"installed: pip install {package} ({e})"
        ) from e
    except ValueError as e:
        raise InvalidArgument(
            f"{variable}={url!r}: fsspec knows no protocol {protocol!r} ({e}); use a local "
            "path or a URL such as s3://bucket/prefix, gs://bucket/prefix or memory://name"
        ) from e
    return fs, root.rstrip("/")
