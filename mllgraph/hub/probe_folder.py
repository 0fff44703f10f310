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

Graph statements: `cypher/hub/mark_stale.cypher`, `cypher/hub/stale_models.cypher`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.errors import InvalidArgument, MllgraphError, ResourceExhausted
from mllgraph.graph.db import Graph
from mllgraph.hub import probes
from mllgraph.settings import Settings

SIDE = 256
EXTENSIONS = (".jpg", ".jpeg", ".png")
WNID_RE = re.compile(r"^[a-z]\d{8}$")
SYNSET_RE = re.compile(r"^[a-z0-9_.'-]+\.[a-z]\.\d{2}$")


@dataclass
class FolderReport:
    attached: list[dict[str, Any]] = field(default_factory=list)  # {folder, wnid, set_id, images}
    refused: list[dict[str, str]] = field(default_factory=list)  # {path, reason}
    stale_models: list[str] = field(default_factory=list)


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
    """Attach one probe set per sub-folder of `folder`; see the module docstring."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InvalidArgument(f"folder {folder}: no such directory")
    report = FolderReport()
    for entry in sorted(folder.iterdir()):
        if not entry.is_dir():
            report.refused.append({"path": str(entry), "reason": "not a sub-folder"})
            continue
        try:
            wnid = concept_of_folder(graph, entry.name, ground)
        except MllgraphError as e:
            report.refused.append({"path": str(entry), "reason": f"no concept: {e}"})
            continue
        images = []
        for f in sorted(entry.rglob("*")):
            if f.is_dir():
                continue
            if f.suffix.lower() not in EXTENSIONS:
                report.refused.append({"path": str(f), "reason": "not a .jpg/.jpeg/.png file"})
                continue
            try:
                images.append(load_image(f))
            except InvalidArgument as e:
                report.refused.append({"path": str(f), "reason": str(e)})
        _attach(graph, settings, report, entry.name, wnid, images, source or f"folder {entry}")
    report.stale_models = sorted(set(report.stale_models))
    return report


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
    sub-folder's name (e.g. streamed over gRPC); `refused` starts the report's list."""
    report = FolderReport(refused=list(refused or []))
    for name in sorted(groups):
        try:
            wnid = concept_of_folder(graph, name, ground)
        except MllgraphError as e:
            report.refused.append({"path": name, "reason": f"no concept: {e}"})
            continue
        _attach(graph, settings, report, name, wnid, groups[name], source)
    report.stale_models = sorted(set(report.stale_models))
    return report


def _attach(
    graph: Graph,
    settings: Settings,
    report: FolderReport,
    folder: str,
    wnid: str,
    images: list[np.ndarray],
    source: str,
) -> None:
    """One concept's images as one probe set; stale marks when it is new."""
    if not images:
        report.refused.append({"path": folder, "reason": "no usable image"})
        return
    ps, created = probes.add_probe_set(
        graph, settings, concept=wnid, images=np.stack(images), source=source
    )
    report.attached.append(
        {
            "folder": folder,
            "wnid": ps.wnid,
            "concept": ps.concept,
            "set_id": ps.id,
            "images": ps.count,
            "created": created,
        }
    )
    if created:
        report.stale_models += mark_stale(graph, ps.wnid)


def mark_stale(graph: Graph, wnid: str) -> list[str]:
    """Mark the models whose heads declare, or are measured on, `wnid` or a concept under it."""
    return [r["model"] for r in graph.write("hub/mark_stale", wnid=wnid)]


def stale_models(graph: Graph) -> list[str]:
    return [r["model"] for r in graph.read("hub/stale_models")]
