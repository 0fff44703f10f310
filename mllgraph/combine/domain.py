"""An expert's input domain: which images its heads may speak about at all (pure: no I/O).

A closed-set expert answers every image with its own heads: a Fashion-MNIST expert calls a
photo of a coffee cup "Bag" with probability 0.95. Label quality cannot catch that, because it
is measured on probe images, which are all in the expert's domain. So a model may carry a
*domain profile*: a description of the images it was trained on. On an image outside it, the
model's heads give no evidence, and its classes are scored by the plan's other heads (or sit
at the offline floor, as uncovered classes do).

The profile is deliberately simple and model-independent: each image as an 8x8 RGB thumbnail
(gray images have equal channels) in [0, 1], and the Mahalanobis distance to the training
images' thumbnails (full covariance, so "all three channels equal" and "black border" are
learnt, with a small ridge for the directions the training images never vary in). The
acceptance threshold is `MARGIN` times the 99.9th percentile of the distances of held-out
training images, so images like the training ones are (almost) never refused. On
Fashion-MNIST: held-out test images reach 2.4, the real photos of the photos suite 4.5 and
more (`tests/test_domain.py`).

A model without a profile is trusted on every image (the ImageNet experts: natural photos
are broad, and no ImageNet images ship here to describe them).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mllgraph.errors import InvalidArgument

THUMBNAIL = 8  # pixels per side: 8 x 8 x 3 = 192 features
RIDGE = 1e-4  # added to the covariance's diagonal (pixel values are in [0, 1])
MARGIN = 1.5  # threshold = MARGIN x the held-out 99.9th percentile distance
HOLDOUT = 0.2  # share of the images that sets the threshold instead of the fit
MIN_IMAGES = 50  # fewer images cannot describe a domain in 192 dimensions
MAX_IMAGES = 5000  # more add nothing to the fit; a sample of this many is used


def thumbnails(images: Sequence[np.ndarray]) -> np.ndarray:
    """(N, 192) float64 in [0, 1]: each image resized to 8x8 RGB (gray -> three equal
    channels, an alpha channel dropped)."""
    out = np.empty((len(images), THUMBNAIL * THUMBNAIL * 3))
    for i, img in enumerate(images):
        a = np.asarray(img)
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (3, 4):
            raise InvalidArgument(f"image {i} has shape {a.shape}; expected (H, W) or (H, W, 3)")
        if a.dtype != np.uint8:  # float images in [0, 1], as preprocess accepts them
            a = np.clip(np.asarray(a, dtype=np.float64) * 255.0, 0, 255).astype(np.uint8)
        out[i] = thumbnail(Image.fromarray(np.ascontiguousarray(a[:, :, :3])))
    return out


def thumbnail(image: Image.Image) -> np.ndarray:
    """One Pillow image's (192,) thumbnail in [0, 1], as `thumbnails` makes it for an array
    (gray: three equal channels; alpha dropped)."""
    small = image.convert("RGB").resize((THUMBNAIL, THUMBNAIL), Image.BILINEAR, reducing_gap=None)
    return np.asarray(small, dtype=np.float64).reshape(-1) / 255.0


@dataclass(frozen=True)
class DomainProfile:
    mean: np.ndarray  # (D,)
    whiten: np.ndarray  # (D, D): distance = ||(x - mean) @ whiten|| / sqrt(D)
    threshold: float
    images: int  # how many images described it

    @classmethod
    def fit(cls, thumbs: np.ndarray, *, seed: int = 0) -> DomainProfile:
        """A profile from the thumbnails of (a sample of) a model's training images."""
        x = np.asarray(thumbs, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != THUMBNAIL * THUMBNAIL * 3:
            raise InvalidArgument(f"thumbnails must be (N, {THUMBNAIL**2 * 3}), got {x.shape}")
        if x.shape[0] < MIN_IMAGES:
            raise InvalidArgument(
                f"a domain profile needs at least {MIN_IMAGES} images, got {x.shape[0]}"
            )
        rng = np.random.default_rng(seed)
        order = rng.permutation(x.shape[0])[:MAX_IMAGES]
        cut = max(1, int(len(order) * HOLDOUT))
        held, train = x[order[:cut]], x[order[cut:]]
        mean = train.mean(axis=0)
        cov = np.cov(train - mean, rowvar=False) + RIDGE * np.eye(x.shape[1])
        values, vectors = np.linalg.eigh(cov)
        whiten = vectors / np.sqrt(values)
        profile = cls(mean, whiten, float("inf"), int(len(order)))
        threshold = MARGIN * float(np.quantile(profile.distance(held), 0.999))
        return cls(mean, whiten, threshold, int(len(order)))

    def distance(self, thumbs: np.ndarray) -> np.ndarray:
        """(N,) root-mean-square whitened deviation from the domain's mean."""
        z = (np.asarray(thumbs, dtype=np.float64) - self.mean) @ self.whiten
        return np.sqrt(np.mean(z * z, axis=1))

    def accepts(self, thumbs: np.ndarray) -> np.ndarray:
        """(N,) bool: the image is like the domain's images."""
        return self.distance(thumbs) <= self.threshold

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            mean=self.mean,
            whiten=self.whiten,
            threshold=np.float64(self.threshold),
            images=np.int64(self.images),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> DomainProfile:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                mean, whiten = np.asarray(z["mean"]), np.asarray(z["whiten"])
                threshold, images = float(z["threshold"]), int(z["images"])
        except (OSError, ValueError, KeyError) as e:
            raise InvalidArgument(f"not a domain profile: {e}") from e
        d = THUMBNAIL * THUMBNAIL * 3
        if mean.shape != (d,) or whiten.shape != (d, d) or not np.isfinite(threshold):
            raise InvalidArgument(f"domain profile has shapes {mean.shape}, {whiten.shape}")
        return cls(mean, whiten, threshold, images)
