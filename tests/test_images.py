"""Decoding callers' images (mllgraph.reuse.images): what a decode costs in memory.

The inference service's admission budget counts pixels, so a 16-bit image must not cost
many times the bytes of an 8-bit one while it is decoded (issue 25: 16-bit PNGs went through
whole-image int64 and float64 arrays, +2.9 GB for 32 requests of one 4096² image).
"""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
from PIL import Image

from mllgraph.reuse import images


def _png16(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def _reference(values: np.ndarray) -> np.ndarray:
    """The 8-bit values a 16-bit gray image stands for: round(v * 255 / 65535)."""
    return np.rint(values.astype(np.float64) * (255.0 / 65535)).astype(np.uint8)


def test_16_bit_gray_scales_to_8_bits_exactly() -> None:
    ramp = np.arange(65536, dtype=np.uint32).reshape(256, 256)
    assert Image.open(io.BytesIO(_png16(ramp))).mode.startswith("I;16")
    out = images.decode_image(_png16(ramp), max_pixels=1 << 20)
    assert out.dtype == np.uint8 and out.shape == (256, 256)
    assert np.array_equal(out, _reference(ramp))


def test_32_bit_gray_scales_by_its_range() -> None:
    small = (np.arange(300 * 7) % 256).astype(np.int32).reshape(300, 7)
    assert np.array_equal(images._wide_gray(Image.fromarray(small, mode="I")), small)
    wide = np.array([[-5, 0, 257, 65535, 70000]], dtype=np.int32)
    assert images._wide_gray(Image.fromarray(wide, mode="I")).tolist() == [[0, 0, 1, 255, 255]]


def test_16_bit_png_decodes_without_whole_image_wide_arrays() -> None:
    side = 2048
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, size=(side, side), dtype=np.uint32)
    encoded = _png16(values)
    tracemalloc.start()
    try:
        out = images.decode_image(encoded, max_pixels=side * side)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(out, _reference(values))
    # The uint8 result (1 byte a pixel) and one strip; an int64 copy alone is 8 bytes a pixel.
    assert peak < side * side + 8 * 2**20, f"peak {peak:,} bytes"
