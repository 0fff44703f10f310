"""Where a store lives: a plain path, a `file://` URL, or any other fsspec URL; and
`write_atomic`, how a local file is written whole or not at all.

Dependency-free on purpose: `mllgraph.settings` reads store locations through these helpers,
and settings must import nothing from a subpackage (it sits below every room). The stores
themselves (reading, writing, caching) are `mllgraph.hub.store`.

A URL may carry credentials (`http://user:password@host/...`, a signed query string): every
message here shows it through `redact`, never as given.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from mllgraph.errors import FailedPrecondition, InvalidArgument, Unavailable

MODEL_STORE_VAR = "MLLGRAPH_MODEL_STORE"


PROBE_STORE_VAR = "MLLGRAPH_PROBE_STORE"


LOCAL_PROTOCOLS = ("file", "local")  # fsspec's names for this machine's file system


def is_remote(location: str) -> bool:
    """True for a URL of another file system than this machine's (`s3://...`)."""
    if "://" not in location:
        return False
    return location.split("://", 1)[0].lower() not in LOCAL_PROTOCOLS


def in_store(root: Path, location: str, depth: int = 3) -> Path:
    """The file on this machine that a local store `location` (as the graph records it) names,
    for a store rooted at `root`.

    A path inside `root` is itself. The graph records absolute paths, so a hub whose home was
    copied or moved (or a second machine's home on the same graph) finds another home's paths:
    such a path is taken by its last parts (up to `depth`) under `root`, where that file exists
    — a store's layout below its root is the same everywhere (`<set id>.npz`,
    `blobs/<sha[:2]>/<sha><ext>`), and the names are content-addressed or unique per hub. Else
    the path as given (the files of another home, still there)."""
    path = Path(location)
    if not path.is_absolute():
        return root / path
    if path.is_relative_to(root):
        return path
    for n in range(1, min(depth, len(path.parts) - 1) + 1):
        mine = root.joinpath(*path.parts[-n:])
        if mine.is_file():
            return mine
    return path


_USERINFO = re.compile(r"(://)[^/?#@\s]*@")
_QUERY_VALUE = re.compile(r"([?&][^=&#\s]+=)[^&#\s]*")


def redact(url: str) -> str:
    """`url` for messages: any user and password, and every query value, as `***`."""
    return _QUERY_VALUE.sub(r"\1***", _USERINFO.sub(r"\1***@", url))


def _scrub(text: str, url: str) -> str:
    """`text` (e.g. a library's error message) with `url` and its credentials redacted."""
    text = text.replace(url, redact(url))
    for userinfo in re.findall(r"://([^/?#@\s]*)@", url):
        for secret in {userinfo, *userinfo.split(":", 1)}:
            if len(secret) >= 3:
                text = text.replace(secret, "***")
    return text


def local_path(location: str, variable: str = "the store location") -> Path:
    """The folder a plain path or a `file://` URL names. A file URL must name an absolute
    path (`file:///srv/x`, or `file://localhost/srv/x`): `file://srv/x` names host `srv`."""
    if "://" not in location:
        return Path(location)
    rest = location.split("://", 1)[1]
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    if not rest.startswith("/"):
        host = rest.split("/", 1)[0]
        raise InvalidArgument(
            f"{variable}={redact(location)!r}: a file URL takes an absolute path after "
            f"'file://', as in 'file:///{rest}' (three slashes); this one names host "
            f"{host!r}, and only this machine's files can be a store"
        )
    return Path(rest)


def cache_root(home: Path, url: str) -> Path:
    """The read-through cache of the remote store at `url` (one folder per URL)."""
    return home / "cache" / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


def local_root(home: Path, variable: str, location: str) -> Path:
    """A store's local folder: the store itself, or a remote store's cache (checked first)."""
    if not is_remote(location):
        return local_path(location, variable)
    check(variable, location)
    return cache_root(home, location)


@lru_cache(maxsize=64)
def check(variable: str, url: str) -> None:
    """InvalidArgument for a protocol fsspec does not know; FailedPrecondition naming the pip
    package when its file system is not installed (e.g. s3fs for s3://)."""
    filesystem(variable, url)


def filesystem(variable: str, url: str) -> tuple[Any, str]:
    """(fsspec file system, the store's root path in it). InvalidArgument for a protocol
    fsspec does not know; FailedPrecondition naming what to `pip install` when its package is
    missing, or when the store cannot be opened; Unavailable when it cannot be reached.
    Messages show the URL through `redact`."""
    shown = redact(url)
    try:
        import fsspec.core
        from fsspec.registry import known_implementations, registry
    except ImportError as e:  # a declared dependency; only a broken install lacks it
        raise FailedPrecondition(f"{variable}={shown!r} needs fsspec: pip install fsspec") from e
    protocol = url.split("://", 1)[0].split("::")[-1].lower()
    if protocol not in known_implementations and protocol not in registry:
        raise InvalidArgument(
            f"{variable}={shown!r}: fsspec knows no protocol {protocol!r}; use a local path "
            "or a URL such as s3://bucket/prefix, gs://bucket/prefix or memory://name"
        )
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except ImportError as e:
        raise FailedPrecondition(
            f"{variable}={shown!r}: the {protocol}:// file system needs a package that is not "
            f"installed: pip install {_missing_package(protocol, e)}"
        ) from e
    except OSError as e:
        raise Unavailable(
            f"{variable}={shown!r}: cannot reach the {protocol}:// store: "
            f"{type(e).__name__}: {_scrub(str(e), url)}"
        ) from e
    except Exception as e:  # noqa: BLE001 - each backend fails its own way on a bad URL
        raise FailedPrecondition(
            f"{variable}={shown!r}: cannot open the {protocol}:// store: "
            f"{type(e).__name__}: {_scrub(str(e), url)}"
        ) from e
    return fs, root.rstrip("/")


def _missing_package(protocol: str, error: ImportError) -> str:
    """What to install for a file system whose import failed: the module Python could not
    find, else the backend's own package (s3fs for s3://), else what fsspec's note names."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ModuleNotFoundError) and cause.name:
            return cause.name.split(".")[0]
        cause = cause.__cause__ or cause.__context__
    from fsspec.registry import known_implementations

    known = known_implementations.get(protocol, {})
    package = known.get("class", "").split(".")[0]
    if package and package != "fsspec":
        return package
    named = re.findall(r'"([A-Za-z0-9_.-]+)"', known.get("err", ""))
    return " ".join(named) or f"the fsspec backend for {protocol}://"


def write_atomic(path: Path, data: bytes) -> Path:
    """Write `data` to `path` whole or not at all: a temporary file beside it, then a rename,
    so a reader (another process too) sees the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these files are not secrets
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
