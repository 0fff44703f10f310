"""Bundled sample images for the page: the first Fashion-MNIST test image of each class,
read with `mllgraph.hubs.fashion.data` (the Debian dataset), as PNG bytes. None when the
dataset is absent."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Sample:
    key: str  # e.g. "sandal"
    label: str  # e.g. "Sandal" (the Fashion-MNIST class)
    png: bytes  # 28x28 grey


def _key(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def fashion_samples(root: Path) -> dict[str, Sample]:
    """One sample per Fashion-MNIST class, keyed by a slug of its name; {} without the data."""
    from PIL import Image

    from mllgraph.errors import MllgraphError
    from mllgraph.hubs.fashion import data as fashion

    try:
        x, y = fashion.load_split("test", root)
    except (MllgraphError, OSError):
        return {}
    out: dict[str, Sample] = {}
    for index, label in enumerate(fashion.FASHION_CLASSES):
        where = np.flatnonzero(y == index)
        if not len(where):
            continue
        buf = io.BytesIO()
        Image.fromarray(x[where[0]]).save(buf, format="PNG")
        out[_key(label)] = Sample(_key(label), label, buf.getvalue())
    return out
