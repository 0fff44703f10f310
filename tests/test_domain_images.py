"""A model's domain images from a folder or an array file, with bounded memory (issue 25:
`models domain --images` decoded every image at full size before thumbnailing, 3.9 GB for 60
images of 4096²). `domains.path_thumbnails` keeps one image at a time, and only its 192
numbers afterwards."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mllgraph.combine.domain import thumbnails
from mllgraph.errors import InvalidArgument, ResourceExhausted
from mllgraph.hub import domains

SIDE = 1024


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        base = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)  # smooth: JPEG-friendly
        big = Image.fromarray(base).resize((SIDE, SIDE), Image.BILINEAR)
        out.append(np.asarray(big) // (1 + i % 3))
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    root = tmp_path_factory.mktemp("domain")
    images = _images(6)
    for i, img in enumerate(images):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        if i < 3:
            Image.fromarray(img).save(sub / f"{i}.png")
        else:
            Image.fromarray(img).save(sub / f"{i}.jpg", quality=95)
    (root / "notes.txt").write_text("not an image")
    return root, images


def test_folder_thumbnails_match_full_decodes(folder: tuple[Path, list[np.ndarray]]) -> None:
    root, _ = folder
    files = sorted(f for f in root.rglob("*") if f.suffix in (".png", ".jpg"))
    full = thumbnails([np.asarray(Image.open(f).convert("RGB")) for f in files])
    got = domains.path_thumbnails(root, max_pixels=SIDE * SIDE)
    assert got.shape == (6, 192)
    pngs = [i for i, f in enumerate(files) if f.suffix == ".png"]
    assert np.array_equal(got[pngs], full[pngs])  # decoded in full: the very same
    assert np.abs(got - full).max() < 0.02  # JPEGs decoded at a reduced scale: close


def test_folder_thumbnails_hold_one_image_at_a_time(
    folder: tuple[Path, list[np.ndarray]],
) -> None:
    root, _ = folder
    tracemalloc.start()
    try:
        domains.path_thumbnails(root, max_pixels=SIDE * SIDE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < SIDE * SIDE, f"peak {peak:,} bytes: an image's array was held"


def test_array_files_are_read_a_slice_at_a_time(tmp_path: Path) -> None:
    images = np.stack(_images(3))
    np.save(tmp_path / "d.npy", images)
    np.savez(tmp_path / "d.npz", images=images)
    want = thumbnails(list(images))
    assert np.array_equal(domains.path_thumbnails(tmp_path / "d.npy", max_pixels=1), want)
    assert np.array_equal(domains.path_thumbnails(tmp_path / "d.npz", max_pixels=1), want)


def test_bad_inputs_name_the_file(tmp_path: Path, folder: tuple[Path, list[np.ndarray]]) -> None:
    root, _ = folder
    with pytest.raises(ResourceExhausted, match=r"1024x1024 pixels, over the limit"):
        domains.path_thumbnails(root, max_pixels=1000)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(InvalidArgument, match=r"x.png is not a readable image"):
        domains.path_thumbnails(tmp_path / "bad", max_pixels=10**6)
    with pytest.raises(InvalidArgument, match="not a folder or a .npy/.npz file"):
        domains.path_thumbnails(tmp_path / "nowhere", max_pixels=10**6)
