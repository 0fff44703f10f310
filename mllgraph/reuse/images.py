"""Images in: PNG/JPEG bytes or raw pixel arrays, to uint8 (H, W) gray or (H, W, 3) RGB.

Malformed input is ``InvalidArgument``; an image over the configured pixel limit
(``Settings.infer_max_image_pixels``) is ``ResourceExhausted``, like a request over the
image-count limit: both are well-formed requests that ask for more work than this server is
configured to do (the proto documents RESOURCE_EXHAUSTED for "batch too large").

Memory per pixel: the admission budget (`mllgraph.reuse.admission`) counts pixels, so no
format may cost much more per pixel than 8-bit RGB does (Pillow's 4 bytes a pixel while
decoding, plus the 3-byte array returned). 16-bit and 32-bit gray images are therefore scaled
to 8 bits one strip of rows at a time (`_wide_gray`): Pillow's own 2 (or 4) bytes a pixel,
the 1-byte result and one strip, never a whole-image int64 or float64 array.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mllgraph.errors import (
    InvalidArgument,
    ResourceExhausted,
)

ENCODED_FORMATS = ("PNG", "JPEG")
"""The encoded formats the inference service decodes (Pillow's names); other images are
sent as raw pixels."""
WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I")  # 16-bit PNG gray; 32-bit integer gray
STRIP_PIXELS = 1 << 18  # pixels per strip when scaling a wide gray image to 8 bits


def _check_pixels(h: int, w: int, max_pixels: int, where: str) -> None:
    if h < 1 or w < 1:
        raise InvalidArgument(f"{where}: the image is empty ({h}x{w} pixels)")
    if h * w > max_pixels:
        raise ResourceExhausted(
            f"{where}: {w}x{h} = {h * w:,} pixels is over this server's limit of "
            f"{max_pixels:,} pixels per image; downscale it"
        )


def encoded_size(encoded: bytes) -> tuple[int, int]:
    """(height, width) from a PNG/JPEG header, nothing decoded; (0, 0) when unreadable
    (`decode_image` then says why)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(encoded), formats=["PNG", "JPEG"]) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - any failure is decode_image's to report
        return 0, 0
    return int(h), int(w)


def sniff_format(encoded: bytes) -> str | None:
    """Pillow's name for the format whose signature `encoded` starts with, or None. Only
    the plugins' signature checks run on the first 16 bytes: nothing is parsed."""
    from PIL import Image

    Image.init()
    prefix = encoded[:16]
    for name in Image.ID:
        _factory, accept = Image.OPEN[name]
        if accept is not None and accept(prefix) is True:
            return name
    return None


def check_encoded(encoded: bytes, *, max_pixels: int, where: str = "image") -> tuple[int, int]:
    """(height, width) of a PNG or JPEG from its header, nothing decoded: what the inference
    service would admit. InvalidArgument for an empty file, another format (named) or an
    unreadable header; ResourceExhausted over `max_pixels` or Pillow's decompression-bomb
    limit."""
    if not encoded:
        raise InvalidArgument(f"{where}: the file is empty (0 bytes)")
    fmt = sniff_format(encoded)
    if fmt is not None and fmt not in ENCODED_FORMATS:
        raise InvalidArgument(
            f"{where}: a {fmt} file (by its first bytes); this server reads "
            f"{' or '.join(ENCODED_FORMATS)} images only"
        )
    from PIL import Image

    try:
        with Image.open(io.BytesIO(encoded), formats=list(ENCODED_FORMATS)) as im:
            w, h = im.size
    except Image.DecompressionBombError as e:
        raise ResourceExhausted(
            f"{where}: over this server's limit of {max_pixels:,} pixels per image ({e})"
        ) from e
    except Exception as e:  # noqa: BLE001 - any header Pillow cannot read is the caller's
        raise InvalidArgument(
            f"{where}: {len(encoded)} bytes are not a {' or '.join(ENCODED_FORMATS)} image "
            f"({e.__class__.__name__})"
        ) from e
    _check_pixels(h, w, max_pixels, where)
    return int(h), int(w)


def decode_image(encoded: bytes, *, max_pixels: int, where: str = "image") -> np.ndarray:
    """PNG or JPEG bytes -> uint8 (H, W) gray or (H, W, 3) RGB.

    Gray (1-bit, 8-bit, 16-bit, with or without alpha) stays (H, W); RGB, RGBA, palette and
    CMYK become (H, W, 3) (alpha dropped). JPEG EXIF orientation is applied. The size is
    checked against `max_pixels` from the header, before any pixel is decoded.
    """
    if not encoded:
        raise InvalidArgument(f"{where}: the encoded image is empty (0 bytes)")
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(encoded), formats=["PNG", "JPEG"])
    except Image.DecompressionBombError as e:
        raise ResourceExhausted(f"{where}: {e}") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InvalidArgument(
            f"{where}: {len(encoded)} bytes are not a PNG or JPEG image ({e.__class__.__name__})"
        ) from e
    w, h = im.size
    _check_pixels(h, w, max_pixels, where)
    try:
        im = ImageOps.exif_transpose(im) or im
        if im.mode in WIDE_GRAY_MODES:
            return _wide_gray(im)
        if im.mode in ("1", "L", "LA", "F"):
            return np.asarray(im.convert("L"), dtype=np.uint8).copy()
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Image.DecompressionBombError as e:
        raise ResourceExhausted(f"{where}: {e}") from e
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt pixel data
        raise InvalidArgument(f"{where}: the image data is corrupt or truncated ({e})") from e


def _wide_gray(im: Any) -> np.ndarray:
    """A 16-bit or 32-bit gray Pillow image as uint8 (H, W), scaled strip by strip.

    16-bit values v become round(v / 257) (65535 -> 255, as 8-bit gray would hold them); a
    32-bit image whose values all lie in 0..255 keeps them, any other is read as 16-bit
    (negative values clipped to 0, values over 65535 to 255).
    """
    w, h = im.size
    _, high = im.getextrema()
    sixteen = im.mode.startswith("I;16") or high > 255
    top_value = 65535 if sixteen else 255
    out = np.empty((h, w), dtype=np.uint8)
    rows = max(1, STRIP_PIXELS // max(w, 1))
    for top in range(0, h, rows):
        bottom = min(h, top + rows)
        strip = np.asarray(im.crop((0, top, w, bottom)))
        values = np.clip(strip, 0, top_value).astype(np.uint32)
        out[top:bottom] = (values + 128) // 257 if sixteen else values
    return out


def raw_image(
    data: bytes,
    shape: Sequence[int],
    dtype: str,
    *,
    max_pixels: int | None = None,
    where: str = "image",
) -> np.ndarray:
    """A raw C-order pixel array -> uint8 (H, W) or (H, W, 3).

    `shape` is [H, W] or [H, W, C] with C 1 or 3; `dtype` "uint8" (0..255) or "float32"
    (little-endian, values in [0, 1], rounded to 0..255). `max_pixels` None: no limit.
    """
    shape = [int(s) for s in shape]
    if len(shape) not in (2, 3):
        raise InvalidArgument(
            f"{where}: raw shape {shape} must be [height, width] or [height, width, channels]"
        )
    if len(shape) == 3 and shape[2] not in (1, 3):
        raise InvalidArgument(f"{where}: raw shape {shape} has {shape[2]} channels; use 1 or 3")
    if min(shape) < 1:
        raise InvalidArgument(f"{where}: raw shape {shape} is empty")
    _check_pixels(shape[0], shape[1], max_pixels or shape[0] * shape[1], where)
    if dtype not in ("uint8", "float32"):
        raise InvalidArgument(f"{where}: raw dtype {dtype!r}; use 'uint8' or 'float32'")
    np_dtype = np.dtype("<f4") if dtype == "float32" else np.dtype(np.uint8)
    expected = math.prod(shape) * np_dtype.itemsize
    if len(data) != expected:
        raise InvalidArgument(
            f"{where}: raw data has {len(data)} bytes but shape {shape} of {dtype} needs {expected}"
        )
    arr = np.frombuffer(data, dtype=np_dtype).reshape(shape)
    if dtype == "float32":
        if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
            raise InvalidArgument(f"{where}: float32 pixels must be finite and in [0, 1]")
        arr = np.rint(arr * 255.0).astype(np.uint8)
    else:
        arr = arr.copy()
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return arr
