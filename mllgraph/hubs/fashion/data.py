"""Fashion-MNIST from Debian's `dataset-fashion-mnist` package (IDX files, gzip-compressed).

The 60k train split feeds two disjoint pools: one the Fashion experts are trained on, one
held out for probing (labelling heads). The 10k test split is only ever used for evaluation.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from mllgraph.errors import FailedPrecondition, InvalidArgument
from mllgraph.settings import Settings

FASHION_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

APT_PACKAGE = "dataset-fashion-mnist"
TRAIN_SIZE = 60_000
TEST_SIZE = 10_000

# IDX magic numbers: 0x08 = unsigned byte, then the number of dimensions.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801
_PREFIX = {"train": "train", "test": "t10k"}
_EXPECTED_COUNT = {"train": TRAIN_SIZE, "test": TEST_SIZE}


def _default_root() -> Path:
    return Settings.from_env().fashion_mnist_dir


def _read_gz(path: Path) -> bytes:
    if not path.is_file():
        raise FailedPrecondition(
            f"Fashion-MNIST file {path} is missing: install the Debian package "
            f"'{APT_PACKAGE}' (apt-get install {APT_PACKAGE}) or point "
            f"MLLGRAPH_FASHION_MNIST_DIR at a folder holding the four *-ubyte.gz files"
        )
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError, zlib.error) as e:
        raise FailedPrecondition(
            f"Fashion-MNIST file {path} is not a readable gzip file ({e}); reinstall "
            f"the Debian package '{APT_PACKAGE}'"
        ) from e


def _header(data: bytes, path: Path, n_ints: int, magic: int) -> list[int]:
    if len(data) < 4 * n_ints:
        raise FailedPrecondition(f"Fashion-MNIST file {path} is truncated: no IDX header")
    values = [int.from_bytes(data[4 * i : 4 * i + 4], "big") for i in range(n_ints)]
    if values[0] != magic:
        raise FailedPrecondition(
            f"Fashion-MNIST file {path} has IDX magic {values[0]:#010x}, expected {magic:#010x}"
        )
    return values


@functools.lru_cache(maxsize=4)
def _load_cached(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    prefix = _PREFIX[split]
    img_path = root / f"{prefix}-images-idx3-ubyte.gz"
    lbl_path = root / f"{prefix}-labels-idx1-ubyte.gz"

    raw = _read_gz(img_path)
    _, count, rows, cols = _header(raw, img_path, 4, _IMAGES_MAGIC)
    if count != _EXPECTED_COUNT[split] or (rows, cols) != (28, 28):
        raise FailedPrecondition(
            f"Fashion-MNIST file {img_path} holds {count} images of {rows}x{cols}, "
            f"expected {_EXPECTED_COUNT[split]} of 28x28"
        )
    if len(raw) != 16 + count * rows * cols:
        raise FailedPrecondition(
            f"Fashion-MNIST file {img_path} has {len(raw) - 16} pixel bytes, "
            f"expected {count * rows * cols} (truncated or corrupt)"
        )
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols)

    raw_l = _read_gz(lbl_path)
    _, n_labels = _header(raw_l, lbl_path, 2, _LABELS_MAGIC)
    if n_labels != count or len(raw_l) != 8 + n_labels:
        raise FailedPrecondition(
            f"Fashion-MNIST file {lbl_path} holds {len(raw_l) - 8} labels (header says "
            f"{n_labels}), expected {count} to match {img_path.name}"
        )
    labels = np.frombuffer(raw_l, dtype=np.uint8, offset=8).astype(np.int64)
    if labels.size and int(labels.max()) >= len(FASHION_CLASSES):
        raise FailedPrecondition(
            f"Fashion-MNIST file {lbl_path} has label {int(labels.max())}, expected 0..9"
        )
    # Read-only so the cached copy can never be changed through a caller's reference.
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def load_split(
    split: Literal["train", "test"], root: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels int64 (N,) of one split.

    `root` defaults to `Settings.from_env().fashion_mnist_dir`. The arrays are fresh,
    writable copies (the decoded files are cached per process).
    """
    if split not in _PREFIX:
        raise InvalidArgument(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root) if root is not None else _default_root()
    images, labels = _load_cached(split, root.resolve())
    return images.copy(), labels.copy()


def split_pools(
    seed: int, probe_size: int = 10_000, root: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split the 60k train indices into (expert-training pool, held-out probe pool).

    Disjoint, together covering all 60k, sorted, deterministic by `seed`, and stratified:
    each class gets its share of the probe pool (largest-remainder rounding).
    """
    if isinstance(probe_size, bool) or not isinstance(probe_size, int):
        raise InvalidArgument(f"probe_size must be an int, got {probe_size!r}")
    if not 0 < probe_size < TRAIN_SIZE:
        raise InvalidArgument(f"probe_size must be in 1..{TRAIN_SIZE - 1}, got {probe_size}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidArgument(f"seed must be a non-negative int, got {seed!r}")
    root = Path(root) if root is not None else _default_root()
    _, labels = _load_cached("train", root.resolve())

    n_classes = len(FASHION_CLASSES)
    counts = np.bincount(labels, minlength=n_classes)
    exact = probe_size * counts / labels.size
    quota = np.floor(exact).astype(np.int64)
    # Hand the leftover slots to the classes with the largest fractional parts.
    leftover = probe_size - int(quota.sum())
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[:leftover]] += 1

    # SeedSequence mixes the seed, so nearby seeds give unrelated splits.
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0xFA5])))
    probe_parts = []
    for c in range(n_classes):
        members = np.flatnonzero(labels == c)
        probe_parts.append(rng.permutation(members)[: quota[c]])
    probe = np.sort(np.concatenate(probe_parts)).astype(np.int64)
    mask = np.ones(labels.size, dtype=bool)
    mask[probe] = False
    train = np.flatnonzero(mask).astype(np.int64)
    return train, probe
