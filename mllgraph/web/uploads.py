"""Uploaded images: checked from their headers, forwarded as they came, thumbnailed within
the services' per-image pixel limit.

The page decodes nothing to classify: a file is admitted when its first bytes say PNG or
JPEG (the formats the inference service decodes) and its header's size fits
``MLLGRAPH_INFER_MAX_IMAGE_PIXELS`` (`mllgraph.reuse.images.check_encoded`, the inference
service's own check), then its bytes go to the inference service unchanged, where admission
control counts them with everyone else's. Only the thumbnail shown on the page decodes, one
image at a time in this process, and only images that passed that check.
"""

from __future__ import annotations

import base64
import io
import threading

from mllgraph.errors import InvalidArgument, MllgraphError
from mllgraph.reuse.images import ENCODED_FORMATS, check_encoded
from mllgraph.v1 import inference_pb2

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # per image file
THUMBNAIL_PX = 128
_DECODING = threading.Lock()  # at most one thumbnail decodes at a time in this process


def admit(data: bytes, image_id: str, *, max_pixels: int, where: str) -> inference_pb2.Image:
    """`data` as the inference service's Image, unchanged, if it is a PNG or JPEG of at most
    `max_pixels` by its header and at most MAX_UPLOAD_BYTES; else the MllgraphError (naming
    `where`) saying why. Nothing is decoded."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise InvalidArgument(f"{where}: the file is over {MAX_UPLOAD_BYTES >> 20} MB")
    check_encoded(data, max_pixels=max_pixels, where=where)
    return inference_pb2.Image(encoded=data, id=image_id)


def file_error(e: MllgraphError, where: str) -> str:
    """A per-file error for the page: the message without its ``where: `` prefix."""
    return str(e).removeprefix(f"{where}: ")


def thumbnail(data: bytes, *, max_pixels: int) -> str | None:
    """A PNG data URI (at most THUMBNAIL_PX) of a PNG or JPEG; None if it does not decode or
    its header says more than `max_pixels`. JPEGs decode at a reduced scale (draft mode)."""
    from PIL import Image

    with _DECODING:
        try:
            with Image.open(io.BytesIO(data), formats=list(ENCODED_FORMATS)) as img:
                if img.size[0] * img.size[1] > max_pixels:
                    return None
                img.draft("RGB", (THUMBNAIL_PX, THUMBNAIL_PX))
                img = img.convert("RGB") if img.mode not in ("L", "RGB") else img.copy()
            img.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        except Exception:  # noqa: BLE001 - a thumbnail is optional; the prediction stands
            return None
    if max(img.size) < 96:  # tiny images (28x28 Fashion) are shown scaled up, pixelated
        img = img.resize((96 * img.size[0] // max(img.size), 96 * img.size[1] // max(img.size)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
