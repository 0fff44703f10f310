"""The ingestion service's quota of pending uploads (issue 25, finding 4).

An upload (`UploadWeights`) is kept in ``<model store>/uploads`` until a registration consumes
it or `MLLGRAPH_UPLOAD_TTL_S` passes. `UploadQuota` bounds what that can hold: the uploads
kept plus the bytes received by uploads in progress stay within
``MLLGRAPH_MAX_PENDING_UPLOAD_BYTES``, and one caller (`services.limits.caller_of`: its token's
name, else its address) holds at most half of it (``CALLER_SHARE``). An upload that would pass
either is refused RESOURCE_EXHAUSTED as soon as it declares its size (``total_bytes``) or its
bytes reach the limit, and leaves no file.

The uploads kept are counted from the folder when an upload starts (what other processes or
an earlier run left counts too, as nobody's); what this process received since is counted
as it arrives. Every method runs on the service's event loop except `scan` (blocking: call it
from a thread), whose result `started` takes.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path

from mllgraph.errors import ResourceExhausted
from mllgraph.hub.imports import SHA256_RE
from mllgraph.settings import Settings

CALLER_SHARE = 0.5
"""Of the quota, what one caller's kept and running uploads may hold together."""


def scan(folder: Path) -> dict[str, int]:
    """Size of each complete upload kept in `folder` (file name: its sha256)."""
    sizes: dict[str, int] = {}
    if not folder.is_dir():
        return sizes
    for entry in folder.iterdir():
        if SHA256_RE.match(entry.name):
            with contextlib.suppress(OSError):
                if entry.is_file() and not entry.is_symlink():
                    sizes[entry.name] = entry.stat().st_size
    return sizes


class UploadQuota:
    """Bytes of pending uploads, in all and per caller (see the module doc)."""

    def __init__(self, settings: Settings) -> None:
        self.limit = int(settings.max_pending_upload_bytes)
        self.per_caller = int(self.limit * CALLER_SHARE)
        self.kept: dict[str, int] = {}  # sha256 -> bytes, as of the last scan (+ finished since)
        self.owner: dict[str, str] = {}  # sha256 -> the caller whose upload it is
        self.receiving: Counter[str] = Counter()  # caller -> bytes of its uploads in progress

    def started(self, kept: dict[str, int]) -> None:
        """An upload starts: the uploads kept now are `kept` (from `scan`)."""
        self.kept = dict(kept)
        self.owner = {sha: who for sha, who in self.owner.items() if sha in self.kept}

    def _held(self, caller: str) -> int:
        kept = sum(size for sha, size in self.kept.items() if self.owner.get(sha) == caller)
        return kept + self.receiving[caller]

    def take(self, caller: str, nbytes: int) -> None:
        """`caller`'s upload in progress receives (or declares) `nbytes` more."""
        total = sum(self.kept.values()) + sum(self.receiving.values())
        if total + nbytes > self.limit:
            raise ResourceExhausted(
                f"the upload does not fit: this server keeps {total:,} bytes of uploads not yet "
                f"registered or still arriving, and holds at most {self.limit:,} "
                "(MLLGRAPH_MAX_PENDING_UPLOAD_BYTES); register or let expire the ones sent, "
                "then upload again; nothing was kept"
            )
        if self._held(caller) + nbytes > self.per_caller:
            raise ResourceExhausted(
                f"the upload does not fit: {caller} holds {self._held(caller):,} bytes of "
                f"uploads not yet registered or still arriving, and one caller may hold at most "
                f"{self.per_caller:,} (half of MLLGRAPH_MAX_PENDING_UPLOAD_BYTES); register "
                "those first; nothing was kept"
            )
        self.receiving[caller] += nbytes

    def give_back(self, caller: str, nbytes: int) -> None:
        """`caller`'s upload in progress that took `nbytes` ended."""
        self.receiving[caller] -= nbytes
        if self.receiving[caller] <= 0:
            del self.receiving[caller]

    def keep(self, caller: str, sha256: str, nbytes: int) -> None:
        """`caller`'s upload is kept now, `nbytes` as ``uploads/<sha256>``."""
        self.kept[sha256] = nbytes
        self.owner.setdefault(sha256, caller)


class UploadTicket:
    """What one upload has taken from the quota: `cover` grows it, `end` gives it back."""

    def __init__(self, quota: UploadQuota, caller: str) -> None:
        self.quota, self.caller = quota, caller
        self.taken = 0

    def cover(self, nbytes: int) -> None:
        """Make sure the upload holds at least `nbytes` (declared or received so far)."""
        if nbytes > self.taken:
            self.quota.take(self.caller, nbytes - self.taken)
            self.taken = nbytes

    def end(self, kept: tuple[str, int] | None) -> None:
        """The upload ended: kept as (sha256, bytes), or not (None)."""
        self.quota.give_back(self.caller, self.taken)
        self.taken = 0
        if kept is not None:
            self.quota.keep(self.caller, *kept)
