"""Where the model store and the probe store live: a local folder, or any fsspec URL.

`MLLGRAPH_MODEL_STORE` / `MLLGRAPH_PROBE_STORE` take a plain path or a `file://` URL (a local
folder: the code paths of `registry`, `probes` and `label.run` as they always were, with an
`flock`, symlinks and memory maps in that folder), or any other URL fsspec knows (`s3://`,
`gs://`, `memory://`, ...): a remote store, so that workers on other machines read and write
the same files. This module holds everything that differs for a remote store.

A remote store is never changed in place, so copies of it never go stale:

- weight blobs are named by their sha256 (`blobs/<sha[:2]>/<sha>.<ext>`), probe images by
  set id and sha256, and a labelling writes its probe outputs as a new version folder
  (`models/<mid>/probe_outputs/<version>/`);
- the one object that changes is a model's `CURRENT` (the name of its current version), a
  single small put, written only after its version is complete (one put is atomic on object
  stores: a reader sees the old name or the new one).

Readers therefore keep a read-through cache under `<MLLGRAPH_HOME>/cache/<hash of the URL>/`
with the store's layout, and memory-map from there: selection never reads arrays from the
remote, only a model's small `CURRENT`, at most once per `MLLGRAPH_STORE_REFRESH_S`. That
cache folder is also the store's local folder (`settings.model_store`): the mirror of
`CURRENT` is a symlink there, switched as in a local store.

Writes are plain puts, with no lock: an object's name is published (in the graph, or in
`CURRENT`) only after its put has finished, and an object is never rewritten with other
bytes, so a reader never sees a part-written object, and two writers of one blob write the
same bytes. Weights are checked against their sha256 when fetched all the same. Removing a
shared blob races registering it again; `registry` settles that through the graph (see
`registry._remove_remote_blob`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from mllgraph.errors import FailedPrecondition
from mllgraph.paths import (
    MODEL_STORE_VAR,
    PROBE_STORE_VAR,
    cache_root,
    filesystem,
    is_remote,
    local_path,
    redact,
)

if TYPE_CHECKING:
    from mllgraph.settings import Settings

log = logging.getLogger(__name__)


class Remote:
    """A store at an fsspec URL, addressed by keys ('blobs/ab/ab12....pt') relative to it,
    with its read-through cache in `cache` (same keys, same layout)."""

    def __init__(self, variable: str, url: str, home: Path) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = filesystem(variable, self.url)
        self.cache = cache_root(home, self.url)
        self._checked: dict[str, float] = {}  # key -> time.monotonic() of the last look
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Remote({redact(self.url)!r})"

    def url_of(self, key: str) -> str:
        """The URL recorded for a key (in the graph: what workers elsewhere read)."""
        return f"{self.url}/{key}"

    def key_of(self, url: str) -> str | None:
        """The key of a URL of this store; None for one outside it."""
        prefix = self.url + "/"
        return url[len(prefix) :] if url.startswith(prefix) else None

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def read(self, key: str) -> bytes | None:
        """A small object's bytes; None when there is none."""
        try:
            return bytes(self.fs.cat_file(self._path(key)))
        except FileNotFoundError:
            return None

    def read_many(self, keys: list[str]) -> dict[str, bytes | None]:
        """Several small objects in one call (async backends such as s3fs fetch them side by
        side); None for a missing one. Other errors raise."""
        if not keys:
            return {}
        paths = {self._path(k): k for k in keys}
        got = self.fs.cat(list(paths), on_error="return")
        out: dict[str, bytes | None] = {}
        for path, key in paths.items():
            value = got.get(path, FileNotFoundError(path))
            if isinstance(value, FileNotFoundError):
                out[key] = None
            elif isinstance(value, BaseException):
                raise value
            else:
                out[key] = bytes(value)
        return out

    def write(self, key: str, data: bytes) -> None:
        """One object in one put (atomic on object stores)."""
        self.fs.pipe_file(self._path(key), data)

    def put(self, local: Path, key: str) -> None:
        """A local file as an object (see the module docstring for why a plain put is safe),
        kept in the cache too: the writer reads it next (labelling after registering)."""
        self.fs.put_file(str(local), self._path(key))
        if local != self.cache / key:  # not written in the cache in the first place
            self._keep(local, self.cache / key)

    @staticmethod
    def _keep(src: Path, dst: Path) -> None:
        """Copy a file into the cache under a temporary name, renamed when complete."""
        dst.parent.mkdir(parents=True, exist_ok=True)
        part = dst.with_name(f"{dst.name}.part-{uuid.uuid4().hex[:12]}")
        try:
            shutil.copyfile(src, part)
            os.replace(part, dst)
        finally:
            part.unlink(missing_ok=True)

    def move(self, src: str, dst: str) -> None:
        self.fs.mv(self._path(src), self._path(dst))

    def remove(self, key: str, *, recursive: bool = False) -> None:
        """Remove an object (or, recursive, everything under a key); a missing one is fine."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._path(key), recursive=recursive)

    def listdir(self, key: str) -> list[str]:
        """The names directly under a key ([] when there is nothing)."""
        try:
            entries = self.fs.ls(self._path(key), detail=False)
        except FileNotFoundError:
            return []
        return sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def fetch(self, key: str, sha256: str | None = None) -> Path:
        """The cached copy of an immutable object, downloaded first when not cached yet
        (to a temporary name, renamed when complete). With `sha256`, a download whose content
        differs is refused (FailedPrecondition) and not kept."""
        local = self.cache / key
        if local.is_file():
            return local
        local.parent.mkdir(parents=True, exist_ok=True)
        part = local.with_name(f"{local.name}.part-{uuid.uuid4().hex[:12]}")
        try:
            try:
                self.fs.get_file(self._path(key), str(part))
            except FileNotFoundError:
                raise FailedPrecondition(
                    f"{redact(self.url_of(key))} is missing from the store"
                ) from None
            if sha256 is not None and sha256_file(part) != sha256:
                raise FailedPrecondition(
                    f"{redact(self.url_of(key))} does not have sha256 {sha256[:12]}…: the store "
                    "holds other bytes under this name (a write in progress, or damage); try again"
                )
            os.replace(part, local)
        finally:
            part.unlink(missing_ok=True)
        return local

    def due(self, key: str, every_s: float, now: float) -> bool:
        """True when `key` was last looked at `every_s` or more ago (and marks it looked at)."""
        with self._lock:
            last = self._checked.get(key)
            if last is not None and now - last < every_s:
                return False
            self._checked[key] = now
            return True

    def forget(self, key: str) -> None:
        """Look at `key` again next time (`due` answers True)."""
        with self._lock:
            self._checked.pop(key, None)


def sha256_file(path: Path) -> str:
    """A file's sha256, read in 1 MiB chunks (registry's weights and the store's fetches)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_REMOTES: dict[tuple[str, str], Remote] = {}
_REMOTES_GUARD = threading.Lock()


def _remote(variable: str, url: str, home: Path) -> Remote:
    """One Remote per (URL, home) per process: its file system and refresh times are shared."""
    key = (url.rstrip("/"), str(home))
    with _REMOTES_GUARD:
        found = _REMOTES.get(key)
        if found is None:
            found = _REMOTES[key] = Remote(variable, url, home)
        return found


def model_remote(settings: Settings) -> Remote | None:
    """The remote model store; None for a local one."""
    url = settings.model_store_url
    return _remote(MODEL_STORE_VAR, url, settings.home) if is_remote(url) else None


def probe_remote(settings: Settings) -> Remote | None:
    """The remote probe store; None for a local one."""
    url = settings.probe_store_url
    return _remote(PROBE_STORE_VAR, url, settings.home) if is_remote(url) else None


def fetch_url(settings: Settings, url: str, sha256: str | None = None) -> Path:
    """The local copy of a remote object named by its URL (as the graph records weights and
    probe images). A URL inside a configured store is cached in that store's cache; any
    other (a worker without the stores configured, a store since moved) in a cache of its
    parent URL."""
    for remote in (model_remote(settings), probe_remote(settings)):
        key = remote.key_of(url) if remote is not None else None
        if key is not None:
            return remote.fetch(key, sha256)  # type: ignore[union-attr]
    parent, name = url.rstrip("/").rsplit("/", 1)
    return _remote("the URL", parent, settings.home).fetch(name, sha256)


def local_file(settings: Settings, location: str, sha256: str | None = None) -> Path:
    """A recorded file location as a local path: a path as it is, a URL fetched."""
    return fetch_url(settings, location, sha256) if is_remote(location) else local_path(location)


def remove_url(url: str) -> None:
    """Remove one remote object named by its URL (a missing one is fine)."""
    fs, path = filesystem("the URL", url)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path)


def clear_local(path: Path) -> None:
    """Remove a cached file or folder (a missing one is fine)."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
