"""The style split, probe folders and task images of the emoji world.

Leave-one-style-out: for a held-out style S, probe sets (and anything an expert is trained on)
come only from the other styles; tasks are scored on S's images only. `StyleSplit.guard`
refuses S wherever probe or training images are made, and `write_probe_folders` also skips
any source file whose bytes equal one of S's sources (sha256), so no held-out image is
reachable from a probe folder by style or by content.

Where emoji themselves are held out (`split_emoji`), the unit is the emoji: every augmented
copy of one emoji sits on one side only.

The concepts file is the reviewed mapping emoji -> WordNet synset (`concepts.tsv`: a header
with at least `hexcode`, `name`, `wnid`, `synset`; more columns, e.g. `reason`, are kept
unread). Several emoji may share a concept (DOG and DOG FACE -> dog.n.01).

Probe folders use the layout `mllgraph probes add --folder` reads: `<out>/<style>/<wnid>/
<hexcode>-<i>.png`, one folder per style (so one probe set per concept and style: run
`probes add --folder <out>/<style> --source emoji:<style>` for each), plus `<out>/manifest.json`
naming, for every file, its style, emoji, concept, seed and source hash.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mllgraph.errors import InvalidArgument, NotFound
from mllgraph.hubs.emoji import augment, raster
from mllgraph.hubs.emoji.catalogue import LICENCE, STYLES, Catalogue, check_style, key

REQUIRED_COLUMNS = ("hexcode", "name", "wnid", "synset")
WNID_RE = re.compile(r"^n\d{8}$")
SYNSET_RE = re.compile(r"^[a-z0-9_.'/-]+\.n\.\d{2}$")
PROBE, TASK, TRAIN = "probe", "task", "train"  # seed streams: never the same seed twice


@dataclass(frozen=True)
class ConceptRow:
    hexcode: str
    name: str
    wnid: str
    synset: str


def read_concepts(path: Path) -> list[ConceptRow]:
    """The rows of a concepts file (tab-separated, header first). InvalidArgument naming the
    line for a missing column, a bad hexcode, wnid or synset, or a hexcode given twice."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidArgument(f"concepts file {path}: cannot be read ({e})") from e
    reader = csv.DictReader(
        (line for line in text.splitlines() if not line.startswith("#")), delimiter="\t"
    )
    absent = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if absent:
        raise InvalidArgument(
            f"concepts file {path}: no column {', '.join(absent)} in the header "
            f"(expected tab-separated columns {', '.join(REQUIRED_COLUMNS)}, ...)"
        )
    rows: list[ConceptRow] = []
    seen: dict[str, int] = {}
    for line, raw in enumerate(reader, start=2):
        values = {c: (raw.get(c) or "").strip() for c in REQUIRED_COLUMNS}
        where = f"concepts file {path}, row {line}"
        try:
            k = key(values["hexcode"])
        except InvalidArgument as e:
            raise InvalidArgument(f"{where}: {e}") from e
        if not WNID_RE.match(values["wnid"]):
            raise InvalidArgument(f"{where}: wnid {values['wnid']!r}: expected n + 8 digits")
        if not SYNSET_RE.match(values["synset"]):
            raise InvalidArgument(f"{where}: synset {values['synset']!r}: expected name.n.NN")
        if k in seen:
            raise InvalidArgument(f"{where}: hexcode {values['hexcode']} also on row {seen[k]}")
        seen[k] = line
        rows.append(
            ConceptRow(values["hexcode"].upper(), values["name"], values["wnid"], values["synset"])
        )
    return rows


@dataclass(frozen=True)
class StyleSplit:
    held_out: str
    probe_styles: tuple[str, ...]

    def guard(self, styles: Iterable[str], purpose: str) -> tuple[str, ...]:
        """`styles`, checked: InvalidArgument if the held-out style is among them."""
        chosen = tuple(check_style(s) for s in styles)
        if self.held_out in chosen:
            raise InvalidArgument(
                f"{purpose} images from {self.held_out}: it is the held-out style of this split"
            )
        return chosen


def split(held_out: str, styles: Iterable[str] = STYLES) -> StyleSplit:
    """Leave `held_out` out: probes and training data from the other `styles`."""
    chosen = tuple(check_style(s) for s in styles)
    check_style(held_out)
    if held_out not in chosen:
        raise InvalidArgument(f"held-out style {held_out}: not among the styles {chosen}")
    rest = tuple(s for s in chosen if s != held_out)
    if not rest:
        raise InvalidArgument(f"held-out style {held_out}: no other style left for probes")
    return StyleSplit(held_out=held_out, probe_styles=rest)


def split_emoji(
    hexcodes: Iterable[str], held_out_fraction: float, seed: int = 0
) -> tuple[frozenset[str], frozenset[str]]:
    """(kept, held out): the emoji (keys) split at random, whole emoji on one side each."""
    if not 0 < held_out_fraction < 1:
        raise InvalidArgument(f"held-out fraction {held_out_fraction}: expected 0 < f < 1")
    keys = sorted({key(h) for h in hexcodes})
    random.Random(seed).shuffle(keys)
    cut = round(len(keys) * held_out_fraction)
    return frozenset(keys[cut:]), frozenset(keys[:cut])


@functools.lru_cache(maxsize=65536)
def file_hash(path: Path) -> str:
    """sha256 of a source file (sources in the cache never change once unpacked)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _by_concept(rows: Iterable[ConceptRow]) -> dict[str, list[ConceptRow]]:
    out: dict[str, list[ConceptRow]] = {}
    for row in rows:
        out.setdefault(row.wnid, []).append(row)
    return {wnid: sorted(group, key=lambda r: key(r.hexcode)) for wnid, group in out.items()}


def write_probe_folders(
    catalogue: Catalogue,
    rows: Iterable[ConceptRow],
    style_split: StyleSplit,
    out: Path,
    *,
    per_style: int = 10,
    seed: int = 0,
    side: int = augment.SIDE,
    exclude: Iterable[str] = (),
) -> list[dict]:
    """`per_style` augmented images per (concept, probe style), the concept's emoji taken in
    turn, under `out/<style>/<wnid>/` (`out` new or empty); the manifest (also
    `out/manifest.json`). Emoji in
    `exclude` (held-out emoji) and sources equal to a held-out-style source are skipped; a
    (concept, style) with no emoji left gets no folder."""
    if per_style < 1:
        raise InvalidArgument(f"per_style {per_style}: expected at least 1")
    if out.exists() and any(out.iterdir()):
        # Left-over images would join the probe sets that `probes add --folder` makes.
        raise InvalidArgument(f"probe folder {out} is not empty: write into a new or empty one")
    styles = style_split.guard(style_split.probe_styles, PROBE)
    excluded = {key(h) for h in exclude}
    held_hashes = {
        file_hash(e.sources[style_split.held_out])
        for e in catalogue.with_style(style_split.held_out)
    }
    manifest: list[dict] = []
    for wnid, group in sorted(_by_concept(rows).items()):
        for style in styles:
            usable = []
            for row in group:
                if key(row.hexcode) in excluded or key(row.hexcode) not in catalogue.emoji:
                    continue
                emoji = catalogue.get(row.hexcode)
                if style in emoji.sources and file_hash(emoji.sources[style]) not in held_hashes:
                    usable.append((row, emoji))
            if not usable:
                continue
            folder = out / style / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_style):
                row, emoji = usable[i % len(usable)]
                s = augment.seed_for(PROBE, style, emoji.hexcode, i, seed)
                image = augment.augment(
                    raster.cached_raster(catalogue, emoji.hexcode, style), s, side
                )
                path = folder / f"{emoji.hexcode}-{i}.png"
                _save_png(image, path)
                manifest.append(
                    {
                        "path": str(path.relative_to(out)),
                        "style": style,
                        "wnid": wnid,
                        "synset": row.synset,
                        "hexcode": emoji.hexcode,
                        "seed": s,
                        "source": str(emoji.sources[style]),
                        "source_sha256": file_hash(emoji.sources[style]),
                        "licence": LICENCE[style],
                    }
                )
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(
        json.dumps(
            {"held_out": style_split.held_out, "probe_styles": list(styles), "images": manifest},
            indent=1,
        )
    )
    return manifest


@dataclass(frozen=True)
class TaskImage:
    """One augmented image of an emoji (a task image, or a training image)."""

    hexcode: str
    wnid: str
    synset: str
    style: str
    seed: int
    source_sha256: str
    image: np.ndarray  # uint8 (side, side, 3)


def task_images(
    catalogue: Catalogue,
    rows: Iterable[ConceptRow],
    style_split: StyleSplit,
    *,
    per_emoji: int = 5,
    seed: int = 0,
    side: int = augment.SIDE,
    only: Iterable[str] | None = None,
) -> list[TaskImage]:
    """`per_emoji` augmented images of each mapped emoji the held-out style draws (of those in
    `only`, when given), from the task seed stream (disjoint from the probes')."""
    style = style_split.held_out
    out = _augmented(catalogue, rows, (style,), TASK, per_emoji, seed, side, only, ())
    if not out:
        raise NotFound(f"no mapped emoji has an image in the held-out style {style}")
    return out


def training_images(
    catalogue: Catalogue,
    rows: Iterable[ConceptRow],
    style_split: StyleSplit,
    *,
    styles: Iterable[str] | None = None,
    per_emoji: int = 5,
    seed: int = 0,
    side: int = augment.SIDE,
    exclude: Iterable[str] = (),
) -> list[TaskImage]:
    """Images an expert may be trained on: `per_emoji` of each mapped emoji (not in `exclude`)
    in each of `styles` (default: the probe styles), from the training seed stream.
    InvalidArgument if `styles` holds the held-out style."""
    chosen = style_split.guard(styles or style_split.probe_styles, TRAIN)
    return _augmented(catalogue, rows, chosen, TRAIN, per_emoji, seed, side, None, exclude)


def _augmented(
    catalogue: Catalogue,
    rows: Iterable[ConceptRow],
    styles: tuple[str, ...],
    purpose: str,
    per_emoji: int,
    seed: int,
    side: int,
    only: Iterable[str] | None,
    exclude: Iterable[str],
) -> list[TaskImage]:
    if per_emoji < 1:
        raise InvalidArgument(f"per_emoji {per_emoji}: expected at least 1")
    keep = None if only is None else {key(h) for h in only}
    skip = {key(h) for h in exclude}
    out = []
    for row in sorted(rows, key=lambda r: (r.wnid, key(r.hexcode))):
        k = key(row.hexcode)
        if (keep is not None and k not in keep) or k in skip or k not in catalogue.emoji:
            continue
        emoji = catalogue.get(row.hexcode)
        for style in styles:
            if style not in emoji.sources:
                continue
            rgba = raster.cached_raster(catalogue, emoji.hexcode, style)
            digest = file_hash(emoji.sources[style])
            for i in range(per_emoji):
                s = augment.seed_for(purpose, style, emoji.hexcode, i, seed)
                image = augment.augment(rgba, s, side)
                out.append(TaskImage(emoji.hexcode, row.wnid, row.synset, style, s, digest, image))
    return out


def leaks(manifest: list[dict], tasks: list[TaskImage], held_out_emoji: bool = False) -> list[str]:
    """What makes a task image reachable from the probes: a probe of the held-out style, a
    probe source with a task source's bytes, a shared seed, and (with `held_out_emoji`) an
    emoji on both sides. Empty when the split is clean."""
    styles = {t.style for t in tasks}
    hashes = {t.source_sha256 for t in tasks}
    seeds = {t.seed for t in tasks}
    emoji = {key(t.hexcode) for t in tasks}
    found = []
    for m in manifest:
        if m["style"] in styles:
            found.append(f"{m['path']}: probe in the held-out style {m['style']}")
        if m["source_sha256"] in hashes:
            found.append(f"{m['path']}: its source has a held-out image's bytes")
        if m["seed"] in seeds:
            found.append(f"{m['path']}: seed {m['seed']} also used by a task image")
        if held_out_emoji and key(m["hexcode"]) in emoji:
            found.append(f"{m['path']}: emoji {m['hexcode']} is also a task image")
    return found


def _save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(image, "RGB").save(path, format="PNG")
