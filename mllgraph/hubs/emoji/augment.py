"""Augmentation: one RGBA emoji raster composited into an RGB scene, seeded and deterministic.

A scene is a background (a plain colour, a linear gradient between two colours, or a colour
with light noise), the emoji scaled to 55-95 % of the canvas side, rotated by at most 15
degrees and placed at a random position where it fits. The same (raster, seed, side) always
gives the same pixels. Pure: no I/O.

Seeds come from `seed_for(purpose, style, hexcode, index, base)`, a hash, so that probe and
task images draw from disjoint streams (`purpose` differs) and adding an emoji or a style
changes no other image.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from mllgraph.errors import InvalidArgument

SIDE = 224  # output side (px): the experts' input size, so probes need no resampling
BACKGROUNDS = ("plain", "gradient", "noise")


@dataclass(frozen=True)
class Params:
    scale: tuple[float, float] = (0.55, 0.95)  # emoji side / canvas side
    max_rotation: float = 15.0  # degrees, either way
    noise_sigma: float = 12.0  # grey levels of the "noise" background


def seed_for(purpose: str, style: str, hexcode: str, index: int, base: int = 0) -> int:
    """A 63-bit seed for one augmented image, from what it is for."""
    text = f"{purpose}\x1f{style}\x1f{hexcode}\x1f{index}\x1f{base}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") >> 1


def background(rng: np.random.Generator, side: int, params: Params = Params()) -> np.ndarray:
    """A uint8 (side, side, 3) background of a random kind."""
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    first = rng.integers(0, 256, size=3).astype(np.float32)
    if kind == "plain":
        return np.broadcast_to(first, (side, side, 3)).astype(np.uint8)
    if kind == "gradient":
        second = rng.integers(0, 256, size=3).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / max(side - 1, 1)
        t = xx * np.cos(angle) + yy * np.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = first * (1 - t[..., None]) + second * t[..., None]
        return np.clip(img, 0, 255).astype(np.uint8)
    noise = rng.normal(0.0, params.noise_sigma, size=(side, side, 1)).astype(np.float32)
    return np.clip(first + noise, 0, 255).astype(np.uint8)


def augment(rgba: np.ndarray, seed: int, side: int = SIDE, params: Params = Params()) -> np.ndarray:
    """`rgba` (uint8 HxWx4) composited into a seeded scene: uint8 (side, side, 3) RGB."""
    from PIL import Image

    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise InvalidArgument(
            f"augment: expected a uint8 HxWx4 RGBA raster, got {rgba.dtype} {rgba.shape}"
        )
    if not 16 <= side <= 2048:
        raise InvalidArgument(f"augment: side {side}: expected 16..2048 px")
    lo, hi = params.scale
    if not 0 < lo <= hi <= 1:
        raise InvalidArgument(f"augment: scale range {params.scale}: expected 0 < lo <= hi <= 1")
    rng = np.random.default_rng(seed)
    scene = Image.fromarray(background(rng, side, params), "RGB")
    target = max(4, round(side * rng.uniform(lo, hi)))
    emoji = Image.fromarray(rgba, "RGBA").resize((target, target), Image.Resampling.BICUBIC)
    angle = rng.uniform(-params.max_rotation, params.max_rotation)
    emoji = emoji.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    # A large, rotated emoji's box may exceed the canvas: then it is centred, so only the
    # box's (mostly transparent) corners are cropped.
    x, y = (_offset(rng, side - extent) for extent in emoji.size)
    scene.paste(emoji, (x, y), emoji)
    return np.asarray(scene, dtype=np.uint8).copy()


def _offset(rng: np.random.Generator, room: int) -> int:
    return int(rng.integers(0, room + 1)) if room >= 0 else room // 2
