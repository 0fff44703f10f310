"""Weights from callers: the import folder and streamed uploads.

A service never reads a path a caller names unless it lies in the one configured import folder
(`Settings.import_dir`, ``MLLGRAPH_IMPORT_DIR``):

* `import_path` resolves a caller's path: relative to the folder, or absolute inside it; any
  ``..`` component is refused, and so is a path whose real path (every symlink followed)
  leaves the folder. `copy_import` then opens that real path without following a final
  symlink, checks again, through the open descriptor, that the file it got is inside the
  folder (a component swapped for a symlink between the two steps is caught), and copies it
  to a private file: the registry reads that copy, never the caller's path.
* Uploads (`Upload`) are streamed bytes, hashed (SHA-256) and size-capped as they arrive,
  written to a temporary file in ``<model store>/uploads`` and moved to
  ``uploads/<sha256>`` only when complete; on any failure the temporary file is removed.
  `upload_path` finds one by its digest; `prune_uploads` removes the ones older than the TTL.

Local commands (`mllgraph models register --weights FILE` without a service) read the user's
own files and do not go through here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from mllgraph.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from mllgraph.settings import Settings

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
TMP_PREFIX = ".part-"
_COPY_CHUNK = 1 << 20


def _import_root(settings: Settings) -> Path:
    if settings.import_dir is None:
        raise FailedPrecondition(
            "weights_path: this server has no import folder, so it reads no path a caller "
            "names; upload the file instead (UploadWeights, then weights_sha256; the Python "
            "client and `mllgraph models register --target` do so), or start the server with "
            "MLLGRAPH_IMPORT_DIR set to a folder holding the weights"
        )
    root = Path(settings.import_dir).expanduser()
    try:
        return root.resolve(strict=True)
    except OSError as e:
        raise FailedPrecondition(
            f"the import folder MLLGRAPH_IMPORT_DIR={root} does not exist on the server"
        ) from e


def import_path(settings: Settings, given: str, field: str = "weights_path") -> Path:
    """The real path of `given` inside the import folder (a regular file); see module doc.

    FailedPrecondition when no import folder is configured; InvalidArgument for ``..``, a
    path outside the folder (directly or through a symlink) or no such file."""
    root = _import_root(settings)
    text = given.strip()
    if not text or "\x00" in text:
        raise InvalidArgument(f"{field}: a path inside the server's import folder is required")
    path = Path(text)
    if ".." in path.parts:
        raise InvalidArgument(
            f"{field} {given!r}: '..' is not allowed; name a file in the import folder"
        )
    candidate = path if path.is_absolute() else root / path
    given_root = Path(settings.import_dir).expanduser().absolute()  # type: ignore[arg-type]
    if not (candidate.is_relative_to(root) or candidate.is_relative_to(given_root)):
        raise InvalidArgument(
            f"{field} {given!r} is outside the server's import folder; give a path relative to "
            "it (or absolute inside it)"
        )
    try:
        real = candidate.resolve(strict=True)
    except OSError as e:
        raise InvalidArgument(f"{field} {given!r}: no such file in the import folder") from e
    if not real.is_relative_to(root):
        raise InvalidArgument(
            f"{field} {given!r} leads outside the server's import folder (through a symlink); "
            "only files inside it are read"
        )
    if not real.is_file():
        raise InvalidArgument(f"{field} {given!r}: not a regular file in the import folder")
    return real


@contextlib.contextmanager
def copy_import(settings: Settings, given: str, dest_dir: Path) -> Iterator[Path]:
    """A private copy (in `dest_dir`) of the import-folder file `given`, checked as it is
    opened; yields its path (suffix kept) and removes it afterwards."""
    real = import_path(settings, given)
    root = _import_root(settings)
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise InvalidArgument(f"weights_path {given!r}: cannot be opened ({e.strerror})") from e
    out = Path(dest_dir) / f"import-{uuid.uuid4().hex}{real.suffix}"
    try:
        with os.fdopen(fd, "rb") as src:
            opened = Path(f"/proc/self/fd/{src.fileno()}")
            if opened.exists():  # Linux: what the descriptor really points at
                target = Path(os.readlink(opened))
                if not target.is_relative_to(root):
                    raise InvalidArgument(
                        f"weights_path {given!r} changed to lead outside the import folder"
                    )
            if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                raise InvalidArgument(f"weights_path {given!r}: not a regular file")
            with out.open("wb") as dst:
                shutil.copyfileobj(src, dst, _COPY_CHUNK)
        yield out
    finally:
        out.unlink(missing_ok=True)


def relative_ref(settings: Settings, given: str) -> str:
    """How a model records its import: the path relative to the import folder."""
    root = _import_root(settings)
    path = Path(given.strip())
    if not path.is_absolute():
        return str(path)
    for base in (root, Path(settings.import_dir).expanduser().absolute()):  # type: ignore[arg-type]
        with contextlib.suppress(ValueError):
            return str(path.relative_to(base))
    return given


# -- uploads ---------------------------------------------------------------------------------


def check_sha256(value: str, field: str = "weights_sha256") -> str:
    value = value.strip().lower()
    if not SHA256_RE.match(value):
        raise InvalidArgument(f"{field} {value[:80]!r}: 64 hex digits (from UploadWeights)")
    return value


def upload_path(settings: Settings, sha256: str) -> Path:
    """The stored upload `sha256` (NotFound if none, e.g. expired or already registered)."""
    sha256 = check_sha256(sha256)
    path = settings.upload_dir / sha256
    if not path.is_file():
        raise NotFound(
            f"weights_sha256 {sha256[:12]}…: no such upload on this server (uploads are "
            "consumed by a successful registration and expire after "
            f"{settings.upload_ttl_s / 3600:.0f} h); upload the file again with UploadWeights"
        )
    return path


def prune_uploads(settings: Settings, now: float | None = None) -> int:
    """Remove uploads, and temporary files or folders a crashed process left, older than the
    TTL; how many."""
    root = settings.upload_dir
    if not root.is_dir():
        return 0
    now = time.time() if now is None else now
    removed = 0
    for entry in root.iterdir():
        with contextlib.suppress(OSError):
            if now - entry.lstat().st_mtime <= settings.upload_ttl_s:
                continue
            if entry.is_dir() and not entry.is_symlink():
                if entry.name.startswith(".register-"):
                    shutil.rmtree(entry)
                    removed += 1
            else:
                entry.unlink()
                removed += 1
    return removed


class Upload:
    """One streamed upload: `write` chunks, then `finish` (or `abort`); see module doc.

    Use it as a context manager: leaving without `finish` removes the temporary file."""

    def __init__(
        self, settings: Settings, *, total_bytes: int = 0, expected_sha256: str = ""
    ) -> None:
        self.settings = settings
        self.limit = settings.max_upload_bytes
        if total_bytes < 0:
            raise InvalidArgument(f"total_bytes must be >= 0, got {total_bytes}")
        if total_bytes > self.limit:
            raise ResourceExhausted(
                f"total_bytes: {total_bytes:,} bytes is over this server's upload limit of "
                f"{self.limit:,} bytes (MLLGRAPH_MAX_UPLOAD_BYTES)"
            )
        self.total_bytes = total_bytes
        self.expected = check_sha256(expected_sha256, "sha256") if expected_sha256 else ""
        self.size = 0
        self._hash = hashlib.sha256()
        settings.upload_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=settings.upload_dir)
        self.tmp = Path(name)
        self._file = os.fdopen(fd, "wb")

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.limit:
            raise ResourceExhausted(
                f"the upload is over this server's upload limit of {self.limit:,} bytes "
                "(MLLGRAPH_MAX_UPLOAD_BYTES); nothing was kept"
            )
        self._hash.update(data)
        self._file.write(data)
        self.size += len(data)

    def finish(self) -> tuple[str, int]:
        """Move the complete file to ``uploads/<sha256>``; (sha256, size)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self.size == 0:
            raise InvalidArgument("the upload is empty: send the file's bytes in WeightsChunk.data")
        if self.total_bytes and self.total_bytes != self.size:
            raise InvalidArgument(
                f"total_bytes said {self.total_bytes:,} bytes but {self.size:,} arrived; "
                "nothing was kept"
            )
        sha = self._hash.hexdigest()
        if self.expected and self.expected != sha:
            raise InvalidArgument(
                f"sha256: the caller expected {self.expected[:12]}… but what arrived hashes to "
                f"{sha[:12]}…; nothing was kept"
            )
        final = self.settings.upload_dir / sha
        os.replace(self.tmp, final)
        os.utime(final)  # a re-upload restarts the TTL
        return sha, self.size

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        self.tmp.unlink(missing_ok=True)
