"""Probe sets from an image folder: the usual layout, one sub-folder per concept.

A sub-folder is named by a wnid (`n02123045`), a WordNet name (`tabby.n.01`) or a class name
grounded like a task's (`tabby cat`, approximate matches refused). Its JPEG and PNG files, of
any size and mode, become one probe set: each image RGB, its shorter side resized to
:data:`SIDE` and centre-cropped to a square (the usual evaluation transform), so one set is one
uint8 array. What was attached where, and what was refused and why, comes back as a report.

Adding probes to a concept makes the labels of the models whose heads touch it out of date:
every model with a head that declares, or is measured (method `probe`) on, the concept or a
concept under it is marked stale (`m.stale = true`); `mllgraph models label --stale` relabels
exactly those, one model's work each.

Files are read only from inside the folder (`folder_files`, `read_inside`): a symbolic link,
file or folder, is refused and never followed, and so is a file whose real path, as opened,
lies outside the folder, or that is not a regular file. `client.add_probes` (the `--target`
path) lists and reads a folder with the same two functions.

Adding a folder is all or nothing: when attaching a sub-folder fails (not a refused file or
an unknown concept, which the report lists, but e.g. the database or the disk), the probe
sets this call had attached are removed again and the error says so; a set that cannot be
removed is named in the error.

Graph statements: `cypher/hub/mark_stale.cypher`, `cypher/hub/stale_models.cypher`.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from mllgraph.errors import InvalidArgument, MllgraphError, ResourceExhausted
from mllgraph.settings import Settings

if TYPE_CHECKING:  # the reader below is also the client's: no Neo4j driver at import
    from mllgraph.graph.db import Graph
    from mllgraph.hub.probes import ProbeSet

SIDE = 256
EXTENSIONS = (".jpg", ".jpeg", ".png")
WNID_RE = re.compile(r"^[a-z]\d{8}$")
SYNSET_RE = re.compile(r"^[a-z0-9_.'-]+\.[a-z]\.\d{2}$")


@dataclass
class FolderReport:
    attached: list[dict[str, Any]] = field(default_factory=list)  # {folder, wnid, set_id, images}
    refused: list[dict[str, str]] = field(default_factory=list)  # {path, reason}
    stale_models: list[str] = field(default_factory=list)


def _refusal(path: Path, reason: str) -> dict[str, str]:
    return {"path": str(path), "reason": reason}


def folder_root(folder: Path | str) -> Path:
    """The folder's real path (the boundary every file must stay inside)."""
    given = Path(folder).expanduser()
    if not given.is_dir():
        raise InvalidArgument(f"folder {given}: no such directory")
    return given.resolve()


def folder_files(folder: Path | str) -> tuple[list[tuple[str, Path]], list[dict[str, str]]]:
    """(sub-folder name, file) for each .jpg/.jpeg/.png file under the folder's sub-folders,
    in name order, and what was refused and why: entries that are not sub-folders, symbolic
    links (files and folders alike, never followed), files that are not regular files, and
    other extensions. Reading them is `read_inside`'s (it checks again, on the open file)."""
    root = folder_root(folder)
    files: list[tuple[str, Path]] = []
    refused: list[dict[str, str]] = []
    for entry in sorted(root.iterdir()):
        if entry.is_symlink():
            refused.append(_refusal(entry, "a symbolic link (not followed)"))
        elif not entry.is_dir():
            refused.append(_refusal(entry, "not a sub-folder"))
        else:
            for path, why in _walk(entry):
                if why:
                    refused.append(_refusal(path, why))
                else:
                    files.append((entry.name, path))
    return files, refused


def _walk(folder: Path) -> Iterator[tuple[Path, str]]:
    """(file, "") for each image file under `folder` and (path, reason) for each refused
    entry, in name order, without following any symbolic link."""
    for top, dirs, names in os.walk(folder, followlinks=False):
        linked = sorted(d for d in dirs if (Path(top) / d).is_symlink())
        dirs[:] = sorted(d for d in dirs if d not in linked)
        for d in linked:
            yield Path(top) / d, "a symbolic link (not followed)"
        for name in sorted(names):
            path = Path(top) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                yield path, "a symbolic link (not followed)"
            elif not stat.S_ISREG(mode):
                yield path, "not a regular file"
            elif path.suffix.lower() not in EXTENSIONS:
                yield path, "not a .jpg/.jpeg/.png file"
            else:
                yield path, ""


def read_inside(root: Path, path: Path) -> bytes:
    """The bytes of `path`, a regular file inside the real folder `root`: opened without
    following a symbolic link, and its real path checked on the open file itself (a folder
    swapped for a link after listing cannot lead outside). InvalidArgument otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise InvalidArgument(f"{path}: cannot be read without following a link ({e})") from e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidArgument(f"{path}: not a regular file")
        real = _opened_path(fd, path)
        if not real.is_relative_to(root):
            raise InvalidArgument(f"{path}: lies outside the folder {root} (at {real})")
        return f.read()


def _opened_path(fd: int, path: Path) -> Path:
    """The real path of an open file (Linux: /proc/self/fd), else of its name."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return Path(os.path.realpath(path))


def load_image(
    source: Path | bytes, side: int = SIDE, *, max_pixels: int | None = None
) -> np.ndarray:
    """One image (a file, or its bytes) as uint8 (side, side, 3): RGB, shorter side to
    `side`, centre crop. Over `max_pixels` (checked from the header, before decoding):
    ResourceExhausted."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            if max_pixels is not None and im.size[0] * im.size[1] > max_pixels:
                raise ResourceExhausted(
                    f"{im.size[0]}x{im.size[1]} pixels is over this server's limit of "
                    f"{max_pixels:,} pixels per image; downscale it"
                )
            im.load()
            rgb = im.convert("RGB")
    except Image.DecompressionBombError as e:
        raise ResourceExhausted(f"too many pixels: {e}") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InvalidArgument(f"not a readable JPEG/PNG image: {e}") from e
    w, h = rgb.size
    if min(w, h) < 8:
        raise InvalidArgument(f"too small ({w}x{h}; at least 8 pixels a side)")
    scale = side / min(w, h)
    nw, nh = max(side, round(w * scale)), max(side, round(h * scale))
    rgb = rgb.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - side) // 2, (nh - side) // 2
    return np.asarray(rgb.crop((left, top, left + side, top + side)), dtype=np.uint8)


def concept_of_folder(graph: Graph, name: str, ground: Callable[[str], str] | None) -> str:
    """The wnid a sub-folder's name stands for (InvalidArgument/NotFound if none)."""
    from mllgraph.graph import sdag

    key = name.strip()
    if WNID_RE.match(key) or SYNSET_RE.match(key):
        return sdag.concept(graph, key)["wnid"]
    if ground is None:
        raise InvalidArgument("class names need a grounding resolver")
    return ground(key.replace("_", " "))


def add_folder(
    graph: Graph,
    settings: Settings,
    folder: Path,
    *,
    ground: Callable[[str], str] | None = None,
    source: str = "",
) -> FolderReport:
    """Attach one probe set per sub-folder of `folder`, all or nothing; see the module
    docstring."""
    root = folder_root(folder)
    files, refused = folder_files(root)
    report = FolderReport(refused=refused)
    by_folder: dict[str, list[Path]] = {}
    for name, path in files:
        by_folder.setdefault(name, []).append(path)
    for entry in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        by_folder.setdefault(entry.name, [])  # a sub-folder without images is reported too

    def images_of(name: str) -> list[np.ndarray]:
        return _load_files(root, by_folder[name], report)

    with _all_or_nothing(graph, settings) as created:
        for name, wnid in _concepts(graph, sorted(by_folder), ground, report):
            where = source or f"folder {root / name}"
            _attach(graph, settings, report, created, name, wnid, images_of(name), where)
    report.stale_models = sorted(set(report.stale_models))
    return report


def _load_files(root: Path, paths: list[Path], report: FolderReport) -> list[np.ndarray]:
    """The images of one sub-folder; an unreadable or oversized one is refused, not fatal."""
    images = []
    for path in paths:
        try:
            images.append(load_image(read_inside(root, path)))
        except (InvalidArgument, ResourceExhausted) as e:
            report.refused.append(_refusal(path, str(e)))
    return images


def _concepts(
    graph: Graph, names: list[str], ground: Callable[[str], str] | None, report: FolderReport
) -> list[tuple[str, str]]:
    """(name, wnid) of each sub-folder name that stands for a concept; the rest refused."""
    found = []
    for name in names:
        try:
            found.append((name, concept_of_folder(graph, name, ground)))
        except MllgraphError as e:
            report.refused.append({"path": name, "reason": f"no concept: {e}"})
    return found


def attach_groups(
    graph: Graph,
    settings: Settings,
    groups: dict[str, list[np.ndarray]],
    *,
    ground: Callable[[str], str] | None = None,
    source: str = "",
    refused: list[dict[str, str]] | None = None,
) -> FolderReport:
    """`add_folder` for images already loaded (`load_image`), keyed by what would be the
    sub-folder's name (e.g. streamed over gRPC); `refused` starts the report's list. All or
    nothing, like `add_folder`."""
    report = FolderReport(refused=list(refused or []))
    with _all_or_nothing(graph, settings) as created:
        for name, wnid in _concepts(graph, sorted(groups), ground, report):
            _attach(graph, settings, report, created, name, wnid, groups[name], source)
    report.stale_models = sorted(set(report.stale_models))
    return report


@contextmanager
def _all_or_nothing(graph: Graph, settings: Settings) -> Iterator[list[ProbeSet]]:
    """The probe sets a block creates (it appends them); removed again when the block
    fails, and the error then says what was undone (`_undo`)."""
    created: list[ProbeSet] = []
    try:
        yield created
    except BaseException as e:
        _undo(graph, settings, created, e)


def _undo(
    graph: Graph, settings: Settings, created: list[ProbeSet], error: BaseException
) -> NoReturn:
    """Remove `created` and raise `error` again, saying what is left attached."""
    from mllgraph.hub import probes

    left = []
    for ps in reversed(created):
        try:
            probes.remove_probe_set(graph, ps.id, settings)
        except Exception:  # noqa: BLE001 - named in the error below
            left.append(f"{ps.id} ({ps.concept})")
    if left:
        note = (
            "probe sets attached before the failure could not be removed again: "
            f"{', '.join(left)}; remove them with `mllgraph probes remove ID`"
        )
    elif created:
        note = (
            f"nothing was attached: the {len(created)} probe set(s) attached before it were removed"
        )
    else:
        note = "nothing was attached"
    if isinstance(error, MllgraphError):
        raise type(error)(f"{error}; {note}") from error
    error.add_note(note)
    raise error


def _attach(
    graph: Graph,
    settings: Settings,
    report: FolderReport,
    created: list[ProbeSet],
    folder: str,
    wnid: str,
    images: list[np.ndarray],
    source: str,
) -> None:
    """One concept's images as one probe set; stale marks when it is new (then it goes in
    `created`)."""
    from mllgraph.hub import probes

    if not images:
        report.refused.append({"path": folder, "reason": "no usable image"})
        return
    ps, new = probes.add_probe_set(
        graph, settings, concept=wnid, images=np.stack(images), source=source
    )
    if new:
        created.append(ps)
    report.attached.append(
        {
            "folder": folder,
            "wnid": ps.wnid,
            "concept": ps.concept,
            "set_id": ps.id,
            "images": ps.count,
            "created": new,
        }
    )
    if new:
        report.stale_models += mark_stale(graph, ps.wnid)


def mark_stale(graph: Graph, wnid: str) -> list[str]:
    """Mark the models whose heads declare, or are measured on, `wnid` or a concept under it."""
    return [r["model"] for r in graph.write("hub/mark_stale", wnid=wnid)]


def stale_models(graph: Graph) -> list[str]:
    return [r["model"] for r in graph.read("hub/stale_models")]
