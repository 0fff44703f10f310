"""Preprocessing, expert loading (EfficientNet-Lite, safe weight files) and Fashion training.

Pure: no Neo4j, no network. Training runs are tiny (a few hundred to 2k images).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mllgraph.errors import AlreadyExists, InvalidArgument, NotFound
from mllgraph.hub import loading
from mllgraph.hub.preprocess import InputSpec, preprocess
from mllgraph.hubs.fashion import data as fashion
from mllgraph.hubs.fashion import experts as fashion_experts
from mllgraph.settings import Settings

GRAY28 = fashion_experts.FASHION_INPUT_SPEC
RGB224 = InputSpec(size=224, resize="resize", mean=(0.5,) * 3, std=(0.5,) * 3, channels=3)


@pytest.fixture(scope="module")
def fmnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train-pool images, labels, probe images, labels) for seed 0."""
    root = Settings.from_env().fashion_mnist_dir
    if not (root / "train-images-idx3-ubyte.gz").is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and no Fashion-MNIST under {root}")
        pytest.skip(f"no Fashion-MNIST under {root}")
    x, y = fashion.load_split("train", root)
    train, probe = fashion.split_pools(0, root=root)
    return x[train], y[train], x[probe], y[probe]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Train on one intra-op thread: on a small shared CPU, OpenMP threads competing with
    other processes make training several times slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ----------------------------------------------------------------------------- InputSpec


def test_input_spec_round_trip() -> None:
    spec = loading.EFFICIENTNET_LITE["efficientnet_lite0"].input_spec
    d = json.loads(json.dumps(spec.to_dict()))
    assert InputSpec.from_dict(d) == spec
    assert GRAY28.validate() is GRAY28


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"size": 4}, "size"),
        ({"size": 2048}, "size"),
        ({"channels": 2}, "channels"),
        ({"mean": (0.5, 0.5)}, "mean"),
        ({"std": (0.0,)}, "std"),
        ({"resize": "stretch"}, "resize"),
        ({"interpolation": "lanczos"}, "interpolation"),
        ({"crop_pct": 1.5}, "crop_pct"),
    ],
)
def test_input_spec_validation_names_field(change: dict, field: str) -> None:
    bad = dataclasses.replace(GRAY28, **change)
    with pytest.raises(InvalidArgument, match=f"input_spec.{field}"):
        bad.validate()


def test_input_spec_from_dict_errors() -> None:
    d = GRAY28.to_dict()
    with pytest.raises(InvalidArgument, match="unknown field"):
        InputSpec.from_dict({**d, "colour": "yes"})
    with pytest.raises(InvalidArgument, match="'size'"):
        InputSpec.from_dict({k: v for k, v in d.items() if k != "size"})
    with pytest.raises(InvalidArgument, match="input_spec.std"):
        InputSpec.from_dict({**d, "std": [-1.0]})


# ----------------------------------------------------------------------------- preprocess


def test_preprocess_gray28_passthrough() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    out = preprocess(imgs, GRAY28)
    assert out.shape == (5, 1, 28, 28) and out.dtype == torch.float32
    # No resampling: undoing the normalisation gives the pixels back exactly.
    back = out * GRAY28.std[0] + GRAY28.mean[0]
    assert torch.allclose(back[:, 0], torch.from_numpy(imgs).float() / 255, atol=1e-6)


def test_preprocess_gray_to_rgb_224() -> None:
    imgs = np.full((2, 28, 28), 255, dtype=np.uint8)
    imgs[1] = 0
    out = preprocess(imgs, RGB224)
    assert out.shape == (2, 3, 224, 224)
    assert torch.allclose(out[0], torch.ones(3, 224, 224))  # 1.0 -> (1 - .5) / .5
    assert torch.allclose(out[1], -torch.ones(3, 224, 224))
    assert torch.equal(out[:, 0], out[:, 2])  # gray repeated into all channels


def test_preprocess_rgb_to_gray_and_mixed_sizes() -> None:
    red = np.zeros((40, 60, 3), dtype=np.uint8)
    red[..., 0] = 255
    gray = np.full((28, 28), 128, dtype=np.uint8)
    spec = dataclasses.replace(GRAY28, mean=(0.0,), std=(1.0,))
    out = preprocess([red, gray, red], spec)
    assert out.shape == (3, 1, 28, 28)
    assert torch.allclose(out[0], torch.full((1, 28, 28), 0.299), atol=1e-5)  # luma of red
    assert torch.allclose(out[1], torch.full((1, 28, 28), 128 / 255), atol=1e-6)
    assert torch.equal(out[0], out[2])


def test_preprocess_resize_crop_keeps_centre() -> None:
    # Shorter side already 32 and crop_pct 1: no resampling, just the centre 32x32 crop.
    img = np.zeros((1, 32, 96), dtype=np.uint8)
    img[:, :, 32:64] = 255
    spec = InputSpec(size=32, resize="resize_crop", crop_pct=1.0, mean=(0,), std=(1,), channels=1)
    assert torch.equal(preprocess(img, spec), torch.ones(1, 1, 32, 32))
    # crop_pct 0.5: shorter side to 64 (2x upscale), centre crop = the middle of the white band.
    half = dataclasses.replace(spec, crop_pct=0.5, interpolation="nearest")
    assert torch.equal(preprocess(img, half), torch.ones(1, 1, 32, 32))
    # Plain "resize" squeezes the whole width in, black thirds included.
    squeezed = preprocess(img, dataclasses.replace(spec, resize="resize"))
    assert squeezed.shape == (1, 1, 32, 32) and squeezed[..., 0].max() < 0.01


def test_preprocess_rejects_bad_input() -> None:
    with pytest.raises(InvalidArgument, match="dtype uint8"):
        preprocess(np.zeros((1, 28, 28), dtype=np.float32), GRAY28)
    with pytest.raises(InvalidArgument, match="shape"):
        preprocess(np.zeros((1, 28, 28, 2), dtype=np.uint8), GRAY28)
    with pytest.raises(InvalidArgument, match=r"images\[1\]"):
        preprocess([np.zeros((28, 28), np.uint8), np.zeros(5, np.uint8)], GRAY28)


# ----------------------------------------------------------------------------- EfficientNet-Lite


def test_imagenet_wnids() -> None:
    wnids = loading.imagenet_wnids()
    assert len(wnids) == 1000 and len(set(wnids)) == 1000
    assert wnids[0] == "n01440764" and wnids[-1] == "n15075141"


def test_efficientnet_lite0_loads_and_runs() -> None:
    path = loading.efficientnet_lite_weights_path("efficientnet_lite0")
    assert path.is_file() and path.suffix == ".pth"
    model, spec, wnids = loading.load_efficientnet_lite("efficientnet_lite0")
    assert not model.training
    assert spec.size == 224 and spec.channels == 3 and len(wnids) == 1000
    x = preprocess(np.full((1, 300, 400, 3), 127, dtype=np.uint8), spec)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
    with pytest.raises(InvalidArgument, match="efficientnet_lite9"):
        loading.load_efficientnet_lite("efficientnet_lite9")


# ----------------------------------------------------------------------------- weight files


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return loading.build_timm("test_efficientnet", num_classes=3, in_chans=1)


def test_safetensors_round_trip(tmp_path: Path) -> None:
    model = _tiny_model()
    path = loading.save_weights(model, tmp_path / "m.safetensors")
    fresh = loading.build_timm("test_efficientnet", num_classes=3, in_chans=1)
    loading.load_weights(fresh, path)
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # A plain torch.save state_dict (the .pth route) loads too.
    torch.save(model.state_dict(), tmp_path / "m.pth")
    loading.load_weights(loading.build_timm("test_efficientnet", 3, 1), tmp_path / "m.pth")


class _Payload:
    """Pickles to `os.system("touch <marker>")`: harmless, but it proves code would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    # The payload is real: an unsafe unpickle does create its marker.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(proof)))
    assert proof.exists()

    marker = tmp_path / "pwned"
    model = _tiny_model()
    evil_zip = tmp_path / "evil.pt"
    torch.save({**model.state_dict(), "x": _Payload(marker)}, evil_zip)
    evil_raw = tmp_path / "evil.pkl"
    evil_raw.write_bytes(pickle.dumps({"x": _Payload(marker)}))
    for path in (evil_zip, evil_raw):
        with pytest.raises(InvalidArgument, match=path.name) as e:
            loading.load_weights(model, path)
        assert "refused" in str(e.value) and "weights_only set to `False`" not in str(e.value)
    assert not marker.exists()


def test_corrupt_files_are_refused(tmp_path: Path) -> None:
    model = _tiny_model()
    full = tmp_path / "full.pth"
    torch.save(model.state_dict(), full)
    data = full.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidArgument, match="cut.pth"):
        loading.load_weights(model, cut)
    st = loading.save_weights(model, tmp_path / "m.safetensors")
    st_cut = tmp_path / "cut.safetensors"
    st_cut.write_bytes(st.read_bytes()[:100])
    with pytest.raises(InvalidArgument, match="cut.safetensors"):
        loading.load_weights(model, st_cut)
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(InvalidArgument, match="empty.bin"):
        loading.load_weights(model, tmp_path / "empty.bin")
    with pytest.raises(NotFound, match="nope.pth"):
        loading.load_weights(model, tmp_path / "nope.pth")


def test_key_and_shape_mismatch(tmp_path: Path) -> None:
    path = loading.save_weights(_tiny_model(), tmp_path / "m.safetensors")
    with pytest.raises(InvalidArgument, match="shape mismatches: classifier.weight"):
        loading.load_weights(loading.build_timm("test_efficientnet", 5, 1), path)
    with pytest.raises(InvalidArgument, match="missing keys") as e:
        loading.load_weights(loading.build_timm("test_resnet", 3, 1), path)
    assert "m.safetensors" in str(e.value) and "unexpected keys" in str(e.value)


def test_build_timm_rejects_unknown_arch() -> None:
    with pytest.raises(InvalidArgument, match="no_such_net"):
        loading.build_timm("no_such_net", 3, 1)


# ----------------------------------------------------------------------------- check_forward


def test_check_forward() -> None:
    model = _tiny_model()
    loading.check_forward(model, GRAY28, 3)
    with pytest.raises(InvalidArgument, match="input spec .* cannot take"):
        loading.check_forward(
            model, dataclasses.replace(GRAY28, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3), 3
        )
    with pytest.raises(InvalidArgument, match=r"num_classes \(the head count\) is 10"):
        loading.check_forward(model, GRAY28, 10)
    assert model.training  # check_forward leaves the mode as it found it


# ----------------------------------------------------------------------------- Fashion experts


def test_plan_fashion_hub() -> None:
    plan = fashion_experts.plan_fashion_hub(8, seed=3)
    assert plan == fashion_experts.plan_fashion_hub(8, seed=3)
    assert plan != fashion_experts.plan_fashion_hub(8, seed=4)
    assert {p.arch for p in plan} == set(fashion_experts.FASHION_ARCHS)
    assert len(fashion_experts.FASHION_ARCHS) >= 3
    for i, p in enumerate(plan):
        assert p.name == f"fashion-3-{i:03d}-{p.arch}"
        assert 2 <= len(p.classes) <= 5 and len(set(p.classes)) == len(p.classes)
        assert all(0 <= c < 10 for c in p.classes)
    with pytest.raises(InvalidArgument, match="n_experts"):
        fashion_experts.plan_fashion_hub(0, seed=3)


@pytest.mark.slow
def test_train_expert_learns_and_is_deterministic(fmnist, one_thread: None) -> None:
    x, y, px, py = fmnist
    classes = [7, 1]  # Sneaker -> head 0, Trouser -> head 1
    kwargs = {"epochs": 1, "seed": 11, "max_train": 2000, "batch_size": 128}
    steps: list[tuple[int, int]] = []
    m1 = fashion_experts.train_expert(
        "test_mambaout", classes, x, y, progress=lambda s, t: steps.append((s, t)), **kwargs
    )
    assert not m1.training and steps[-1][0] == steps[-1][1] == 15
    acc = fashion_experts.expert_accuracy(m1, classes, px[:3000], py[:3000])
    assert acc > 0.85, acc  # chance is 0.5
    m2 = fashion_experts.train_expert("test_mambaout", classes, x, y, **kwargs)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(InvalidArgument, match="classes"):
        fashion_experts.train_expert("test_mambaout", [3], x, y, **kwargs)


@pytest.mark.slow
def test_experts_trained_in_two_processes_are_the_ones_trained_here(
    tmp_path: Path, fmnist, one_thread: None
) -> None:
    kwargs = dict(epochs=1, max_train_per_expert=200, progress=False, num_threads=1)
    here = fashion_experts.train_fashion_hub(3, seed=2, out_dir=tmp_path / "a", **kwargs)
    there = fashion_experts.train_fashion_hub(
        3, seed=2, out_dir=tmp_path / "b", workers=2, **kwargs
    )
    assert [p.name for p in there] == [p.name for p in here]
    for a, b in zip(here, there, strict=True):
        weights = a.with_suffix(".safetensors"), b.with_suffix(".safetensors")
        assert weights[0].read_bytes() == weights[1].read_bytes(), a.name
    # Done is done: a second run with workers trains nothing.
    mtimes = [p.stat().st_mtime_ns for p in there]
    fashion_experts.train_fashion_hub(3, seed=2, out_dir=tmp_path / "b", workers=2, **kwargs)
    assert [p.stat().st_mtime_ns for p in there] == mtimes


@pytest.mark.slow
def test_train_fashion_hub_writes_and_resumes(tmp_path: Path, fmnist, one_thread: None) -> None:
    paths = fashion_experts.train_fashion_hub(
        2, seed=5, out_dir=tmp_path, epochs=1, max_train_per_expert=300, progress=False
    )
    plan = fashion_experts.plan_fashion_hub(2, seed=5, epochs=1)
    assert [p.name for p in paths] == [f"{s.name}.json" for s in plan]
    for path, spec in zip(paths, plan, strict=True):
        meta = json.loads(path.read_text())
        assert meta["arch"] == spec.arch and meta["fashion_classes"] == list(spec.classes)
        assert meta["class_names"] == [fashion.FASHION_CLASSES[c] for c in spec.classes]
        assert meta["num_classes"] == len(spec.classes) and meta["in_chans"] == 1
        assert 0.0 <= meta["train_accuracy"] <= 1.0 and meta["train_seconds"] > 0
        # What ingestion will do: rebuild from the JSON alone, load, check.
        in_spec = InputSpec.from_dict(meta["input_spec"])
        model = loading.build_timm(meta["arch"], meta["num_classes"], meta["in_chans"])
        loading.load_weights(model, tmp_path / meta["weights_file"])
        loading.check_forward(model, in_spec, meta["num_classes"])
    mtimes = [p.stat().st_mtime_ns for p in tmp_path.iterdir()]
    again = fashion_experts.train_fashion_hub(
        2, seed=5, out_dir=tmp_path, epochs=1, max_train_per_expert=300, progress=False
    )
    assert again == paths
    assert [p.stat().st_mtime_ns for p in tmp_path.iterdir()] == mtimes  # reused, not retrained
    with pytest.raises(AlreadyExists, match="max_train"):
        fashion_experts.train_fashion_hub(2, seed=5, out_dir=tmp_path, epochs=1, progress=False)
