"""Fashion-MNIST loading (real Debian files) and the train/probe pool split."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from mllgraph.errors import FailedPrecondition, InvalidArgument
from mllgraph.hubs.fashion import data as fashion
from mllgraph.settings import Settings

ROOT = Settings.from_env().fashion_mnist_dir


@pytest.fixture(scope="module")
def fmnist_root() -> Path:
    if not (ROOT / "train-labels-idx1-ubyte.gz").is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and no Fashion-MNIST under {ROOT}")
        pytest.skip(f"no Fashion-MNIST under {ROOT} (apt-get install dataset-fashion-mnist)")
    return ROOT


def test_load_real_splits(fmnist_root: Path) -> None:
    x, y = fashion.load_split("train", fmnist_root)
    assert x.shape == (60_000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60_000,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [6000] * 10
    xt, yt = fashion.load_split("test", fmnist_root)
    assert xt.shape == (10_000, 28, 28) and np.bincount(yt).tolist() == [1000] * 10
    # Known first labels of the published files: Ankle boot, T-shirt/top; test starts Ankle boot.
    assert y[:2].tolist() == [9, 0] and yt[0] == 9
    assert fashion.FASHION_CLASSES[9] == "Ankle boot" and len(fashion.FASHION_CLASSES) == 10
    # Callers get their own writable copies, never the cache.
    x[0, 0, 0] = 255
    assert fashion.load_split("train", fmnist_root)[0][0, 0, 0] == 0


def test_missing_files_name_the_package(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="dataset-fashion-mnist") as e:
        fashion.load_split("test", tmp_path)
    assert "t10k-images-idx3-ubyte.gz" in str(e.value)


def test_bad_magic_and_split(tmp_path: Path) -> None:
    header = (0x0801).to_bytes(4, "big") + (10_000).to_bytes(4, "big") + bytes(8)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(header)
    with pytest.raises(FailedPrecondition, match="magic"):
        fashion.load_split("test", tmp_path)
    with pytest.raises(InvalidArgument, match="split"):
        fashion.load_split("validation", tmp_path)  # type: ignore[arg-type]


def test_split_pools_disjoint_deterministic_stratified(fmnist_root: Path) -> None:
    train, probe = fashion.split_pools(7, root=fmnist_root)
    assert train.size == 50_000 and probe.size == 10_000
    assert np.intersect1d(train, probe).size == 0
    assert np.union1d(train, probe).size == 60_000
    _, y = fashion.load_split("train", fmnist_root)
    assert np.bincount(y[probe]).tolist() == [1000] * 10
    again = fashion.split_pools(7, root=fmnist_root)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], probe)
    other = fashion.split_pools(8, root=fmnist_root)[1]
    assert not np.array_equal(other, probe)
    small = fashion.split_pools(7, probe_size=1234, root=fmnist_root)[1]
    assert small.size == 1234
    with pytest.raises(InvalidArgument, match="probe_size"):
        fashion.split_pools(7, probe_size=60_000, root=fmnist_root)


def test_a_second_probe_pool_of_another_size_is_refused_before_writing(
    sdag_graph, neo4j_settings
) -> None:
    from mllgraph.errors import FailedPrecondition
    from mllgraph.hub import probes
    from mllgraph.hubs.fashion import build

    seed = 97  # a pool id no other test uses
    concepts = {c: w for c, w in build.fashion_concepts(neo4j_settings).items() if c < 2}
    made = build.register_fashion_probes(
        sdag_graph, neo4j_settings, seed=seed, wnids=concepts, per_class=5
    )
    try:
        again = build.register_fashion_probes(
            sdag_graph, neo4j_settings, seed=seed, wnids=concepts, per_class=5
        )
        assert [p.id for p in again] == [p.id for p in made]  # the same pool: reused
        before = {p.id for p in probes.probe_sets(sdag_graph)}
        with pytest.raises(FailedPrecondition, match=r"fashion-mnist-s97-c0-n5.*--probes-per"):
            build.register_fashion_probes(
                sdag_graph, neo4j_settings, seed=seed, wnids=concepts, per_class=6
            )
        assert {p.id for p in probes.probe_sets(sdag_graph)} == before  # nothing written
    finally:
        for p in made:
            probes.remove_probe_set(sdag_graph, p.id, neo4j_settings)
