"""Probe outputs: each model's logits on the probe images, kept beside its weights.

Catalogue data, read by selection (to simulate head combinations without running a model) and
written by labelling. Each labelling writes them as a new version (`probe_outputs/<version>/`
holding the array and its index) and, only after the graph write of the labels succeeded,
switches the `probe_outputs/CURRENT` symlink to it with one atomic rename, so readers see the
old pair or the new pair and a failed write leaves the old outputs beside the old labels.

A model store at a URL (`store`) holds the same layout; there `CURRENT` is a small object
holding the version's name, put only after the version's files, and readers memory-map a
local copy (the store's cache, where a `CURRENT` symlink mirrors the store's, looked up again
at most every `settings.store_refresh_s`: `refresh_current`).

Imports only `hub` and below (never label/ or select/).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mllgraph.errors import FailedPrecondition
from mllgraph.hub import registry, store
from mllgraph.settings import Settings

log = logging.getLogger(__name__)

PROBE_OUTPUTS = "probe_outputs.npy"


PROBE_INDEX = "probe_outputs.json"


OUTPUTS_DIR = "probe_outputs"  # <model dir>/probe_outputs/<version>/{npy, json}


CURRENT = "CURRENT"  # <model dir>/probe_outputs/CURRENT: a symlink to the current version


def _outputs_root(settings: Settings, mid: str) -> Path:
    return registry.model_dir(settings, mid) / OUTPUTS_DIR


def _outputs_key(mid: str) -> str:
    return f"{registry.model_key(mid)}/{OUTPUTS_DIR}"


def current_version(settings: Settings, mid: str) -> Path | None:
    """The folder of the model's current probe outputs (named by `CURRENT`), or None."""
    root = _outputs_root(settings, mid)
    refresh_current(settings, (mid,))
    try:
        tag = os.readlink(root / CURRENT)  # one system call: selection asks per model
    except (FileNotFoundError, NotADirectoryError):
        return None
    return root / tag


def probe_index_file(model_store: str, mid: str) -> str:
    """`probe_index_path` as a plain string, for `model_store = str(settings.model_store)`.

    Selection checks the index of every candidate model on every request (thousands at
    10,000 models): built with os.path, not pathlib, which cost most of that check."""
    root = os.path.join(model_store, "models", mid.replace("/", "_"), OUTPUTS_DIR)
    try:
        folder = os.path.join(root, os.readlink(os.path.join(root, CURRENT)))
    except (FileNotFoundError, NotADirectoryError):  # as current_version
        folder = os.path.dirname(root)  # no versions: the legacy file beside the weights
    return os.path.join(folder, PROBE_INDEX)


def probe_outputs_path(settings: Settings, mid: str) -> Path:
    """The model's current logits on the probes: one float16 array, rows grouped by probe
    set (a model labelled before versioned outputs: its legacy file beside the weights)."""
    version = current_version(settings, mid)
    return (version or registry.model_dir(settings, mid)) / PROBE_OUTPUTS


def probe_index_path(settings: Settings, mid: str) -> Path:
    """Where each probe set's rows start in the current array, and the temperature."""
    version = current_version(settings, mid)
    return (version or registry.model_dir(settings, mid)) / PROBE_INDEX


@dataclass(frozen=True)
class StagedOutputs:
    """A complete new version of the probe outputs (array and index in their own folder),
    not yet visible to readers: `switch_in` makes it current with one atomic rename of the
    `CURRENT` symlink, so a reader (which resolves the link once, then opens both files in
    that folder) sees the old pair or the new pair, never a mix. In a store at a URL the
    version is uploaded too (`key`), and the store's `CURRENT` is put before the link."""

    path: Path  # the array in the new version's folder
    version: Path  # that folder
    remote: store.Remote | None = None
    key: str = ""  # the version's key in `remote`

    @property
    def location(self) -> str:
        """Where the array is, as the graph records it (a URL in a remote store)."""
        if self.remote is None:
            return str(self.path)
        return self.remote.url_of(f"{self.key}/{PROBE_OUTPUTS}")

    def switch_in(self) -> Path:
        if self.remote is not None:
            _switch_remote(self.remote, self.key.rsplit("/", 1)[0], self.version.name)
        _switch_link(self.version.parent, self.version.name)
        return self.path

    def discard(self) -> None:
        shutil.rmtree(self.version, ignore_errors=True)
        if self.remote is not None:
            try:
                self.remote.remove(self.key, recursive=True)
            except Exception as e:  # noqa: BLE001 - the caller's error is the one to report
                log.warning("probe_outputs_discard_failed key=%s error=%r", self.key, str(e))


def _switch_link(root: Path, tag: str) -> None:
    """Point `root/CURRENT` at the version `tag` with one atomic rename; prune old ones."""
    part = root / f"{CURRENT}.part-{tag}-{uuid.uuid4().hex[:8]}"
    part.symlink_to(tag)  # relative: the store may move
    os.replace(part, root / CURRENT)
    _prune(root, tag)


def _switch_remote(remote: store.Remote, root: str, tag: str) -> None:
    """Name `tag` in the store's `CURRENT` (one put, after the version's files), then remove
    versions older than the current and the one before, as `_prune` does locally. Versions
    are ordered by their names, which start with the time they were written."""
    remote.write(f"{root}/{CURRENT}", tag.encode())
    versions = [n for n in remote.listdir(root) if n not in (CURRENT, tag) and _is_tag(n)]
    versions.sort(key=lambda n: int(n.split("-", 1)[0]))
    for old in versions[:-1]:
        remote.remove(f"{root}/{old}", recursive=True)


def _is_tag(name: str) -> bool:
    head = name.split("-", 1)[0]
    return head.isdigit() and "/" not in name and "." not in name


def _prune(root: Path, current: str) -> None:
    """Remove versions older than the current and the one before it (a reader that read the
    link just before the switch still finds its pair), and legacy unversioned files."""
    versions = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and p.name != current),
        key=lambda p: p.stat().st_mtime,
    )
    for old in versions[:-1]:
        shutil.rmtree(old, ignore_errors=True)
    for legacy in (PROBE_OUTPUTS, PROBE_INDEX):
        (root.parent / legacy).unlink(missing_ok=True)


def stage_probe_outputs(
    settings: Settings, mid: str, outputs: dict[str, np.ndarray], temperature: float
) -> StagedOutputs:
    """Write the probe outputs as a new version; `switch_in` makes it current.

    One contiguous array plus a small JSON index, so selection can memory-map the file and
    read only a task's probe sets (a compressed archive of one entry per set costs ~10 ms
    per model to open, which dominates selection on a large hub)."""
    ids = sorted(outputs)
    index, offset = {}, 0
    for s in ids:
        index[s] = [offset, int(outputs[s].shape[0])]
        offset += int(outputs[s].shape[0])
    heads = next((int(outputs[s].shape[1]) for s in ids), 0)
    # float16 halves the file; logits need no more precision than that for simulation.
    data = (
        np.concatenate([outputs[s] for s in ids]).astype(np.float16)
        if ids
        else np.zeros((0, heads), np.float16)
    )
    tag = f"{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    version = _outputs_root(settings, mid) / tag
    version.mkdir(parents=True)
    remote = store.model_remote(settings)
    staged = StagedOutputs(version / PROBE_OUTPUTS, version, remote, f"{_outputs_key(mid)}/{tag}")
    try:
        np.save(version / PROBE_OUTPUTS, data)
        meta = {"temperature": float(temperature), "heads": heads, "sets": index}
        (version / PROBE_INDEX).write_text(json.dumps(meta))
        if remote is not None:  # written here first: the store's cache is this very folder
            for name in (PROBE_OUTPUTS, PROBE_INDEX):
                remote.put(version / name, f"{staged.key}/{name}")
    except BaseException:
        staged.discard()
        raise
    return staged


def refresh_current(settings: Settings, mids: Iterable[str]) -> None:
    """For a model store at a URL: point each model's local `CURRENT` at the version the
    store's `CURRENT` names, fetching that version into the cache when it is not there. A
    model is looked up at most every `settings.store_refresh_s` (all due ones in one call);
    in between, and when the store cannot be reached, readers keep the version they have.
    Nothing to do for a local store."""
    remote = store.model_remote(settings)
    if remote is None:
        return
    now = time.monotonic()
    due = [m for m in mids if remote.due(_outputs_key(m), settings.store_refresh_s, now)]
    mirrored = 0
    try:
        tags = remote.read_many([f"{_outputs_key(m)}/{CURRENT}" for m in due])
        for m in due:
            tag = tags[f"{_outputs_key(m)}/{CURRENT}"]
            _mirror(settings, remote, m, tag.decode().strip() if tag is not None else None)
            mirrored += 1
    except Exception as e:  # noqa: BLE001 - unreachable store: serve the cached versions
        log.warning("probe_outputs_refresh_failed store=%s error=%r", remote.url, str(e))
        for m in due[mirrored:]:  # look again next time
            remote.forget(_outputs_key(m))


def _mirror(settings: Settings, remote: store.Remote, mid: str, tag: str | None) -> None:
    """Make the local copy of a model's probe outputs current with the store's `tag`."""
    root = _outputs_root(settings, mid)
    if tag is None:  # none in the store (never labelled, or deleted): none here either
        (root / CURRENT).unlink(missing_ok=True)
        return
    if not _is_tag(tag):
        log.warning("probe_outputs_bad_current model=%s current=%r", mid, tag)
        return
    if not (root / tag).is_dir():
        # Fetched into a folder of its own and renamed when complete, as a writer stages.
        tmp = settings.model_store / "tmp" / f"{tag}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            for name in (PROBE_OUTPUTS, PROBE_INDEX):
                data = remote.read(f"{_outputs_key(mid)}/{tag}/{name}")
                if data is None:  # pruned since CURRENT was read: look again next time
                    remote.forget(_outputs_key(mid))
                    return
                (tmp / name).write_bytes(data)
            root.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):  # another thread fetched it first
                tmp.rename(root / tag)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    with contextlib.suppress(OSError):
        if os.readlink(root / CURRENT) == tag:
            return
    _switch_link(root, tag)


def save_probe_outputs(
    settings: Settings, mid: str, outputs: dict[str, np.ndarray], temperature: float
) -> Path:
    """Write a model's probe outputs and make them current at once."""
    return stage_probe_outputs(settings, mid, outputs, temperature).switch_in()


@dataclass(frozen=True)
class ProbeOutputs:
    """A labelled model's probe logits, memory-mapped; slices are read on demand."""

    data: np.ndarray  # float16 (rows, heads), memory-mapped
    sets: dict[str, tuple[int, int]]  # probe set id -> (first row, rows)
    temperature: float

    def get(self, set_id: str) -> np.ndarray:
        start, n = self.sets[set_id]
        return np.asarray(self.data[start : start + n], dtype=np.float32)

    def as_dict(self, set_ids: list[str] | None = None) -> dict[str, np.ndarray]:
        wanted = self.sets if set_ids is None else [s for s in set_ids if s in self.sets]
        return {s: self.get(s) for s in wanted}


def open_probe_outputs(settings: Settings, mid: str) -> ProbeOutputs:
    """The current pair, both files from one version (the link is read once per try; a
    version pruned between reading the link and opening is retried with the new one)."""
    for attempt in range(3):
        folder = current_version(settings, mid) or registry.model_dir(settings, mid)
        index_path = folder / PROBE_INDEX
        try:
            meta = json.loads(index_path.read_text())
            data = np.load(folder / PROBE_OUTPUTS, mmap_mode="r")
        except FileNotFoundError:
            if attempt < 2 and current_version(settings, mid) not in (None, folder):
                continue
            raise FailedPrecondition(
                f"model {mid} has no probe outputs ({index_path}): label it"
            ) from None
        sets = {s: (int(a), int(n)) for s, (a, n) in meta["sets"].items()}
        return ProbeOutputs(data, sets, float(meta["temperature"]))
    raise AssertionError("unreachable")


def load_probe_outputs(settings: Settings, mid: str) -> tuple[dict[str, np.ndarray], float]:
    """({probe set id: logits (n, heads) float32}, temperature) of a labelled model."""
    outputs = open_probe_outputs(settings, mid)
    return outputs.as_dict(), outputs.temperature
