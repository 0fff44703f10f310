"""Rasters: each source (SVG or PNG) as an RGBA square of a fixed size, cached on disk.

SVG is rendered by resvg (PyPI `resvg-py`, a Rust library in a self-contained wheel: no
system Cairo). System fonts are skipped: emoji SVGs draw paths, and a text element falling
back to whatever colour-emoji font a machine has installed would leak a reserved style.
Twemoji's 64 px PNGs are resized (bicubic) to the same size, so every style shares one size.

The cache lives at `<emoji cache>/rasters/<style>-<size>/<hexcode>.png` (written atomically);
a raster is made once and reused by every run.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np

from mllgraph.errors import FailedPrecondition, InvalidArgument
from mllgraph.hubs.emoji.catalogue import Catalogue, check_style

SIZE = 128  # raster side (px): above Twemoji's 64 px, enough for augmentation to 224 px
MAX_SIZE = 2048


def rasterize(path: Path, size: int = SIZE) -> np.ndarray:
    """One source file as uint8 (size, size, 4) RGBA; the drawing scaled to fit, centred."""
    from PIL import Image, UnidentifiedImageError

    if not 8 <= size <= MAX_SIZE:
        raise InvalidArgument(f"raster size {size}: expected 8..{MAX_SIZE} px")
    if path.suffix.lower() == ".svg":
        import resvg_py

        try:
            png = resvg_py.svg_to_bytes(
                svg_path=str(path), width=size, height=size, skip_system_fonts=True
            )
        except ValueError as e:
            raise FailedPrecondition(f"{path}: resvg cannot render it ({e})") from e
        source = Image.open(io.BytesIO(bytes(png)))
    else:
        try:
            source = Image.open(path)
            source.load()
        except (OSError, UnidentifiedImageError) as e:
            raise FailedPrecondition(f"{path}: not a readable image ({e})") from e
    image = source.convert("RGBA")
    if image.size != (size, size):
        image = _fit(image, size)
    return np.asarray(image, dtype=np.uint8).copy()


def _fit(image, size: int):  # noqa: ANN001, ANN202  (PIL images; PIL is imported lazily)
    from PIL import Image

    w, h = image.size
    scale = size / max(w, h)
    resized = image.resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC
    )
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(resized, ((size - resized.width) // 2, (size - resized.height) // 2))
    return canvas


def raster_path(cache: Path, style: str, hexcode: str, size: int = SIZE) -> Path:
    return cache / "rasters" / f"{check_style(style)}-{size}" / f"{hexcode}.png"


def cached_raster(catalogue: Catalogue, hexcode: str, style: str, size: int = SIZE) -> np.ndarray:
    """The RGBA raster of one emoji in one style, from the disk cache or made (and kept)."""
    from PIL import Image

    emoji = catalogue.get(hexcode)
    path = raster_path(catalogue.root, style, emoji.hexcode, size)
    if path.is_file():
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGBA"), dtype=np.uint8).copy()
        except OSError:
            pass  # a damaged cache file: made again below
    array = rasterize(catalogue.source(hexcode, style), size)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            Image.fromarray(array, "RGBA").save(fh, format="PNG")
        os.replace(tmp, path)  # atomic: a parallel run sees the old file or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return array
