"""A hub's home copied or moved to another folder (issue 24's hub copies; a bigger disk; a
container mounting it elsewhere): the graph still records the first home's absolute paths,
and the new home reads, and removes, only its own files (`paths.in_store`)."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mllgraph import paths
from mllgraph.errors import NotFound
from mllgraph.hub import loading, probes, registry
from mllgraph.hubs.fashion import experts as fashion_experts
from mllgraph.settings import Settings

CLOG = "n03047553"


def test_in_store_prefers_this_homes_file(tmp_path: Path) -> None:
    old, new = tmp_path / "old" / "probes", tmp_path / "new" / "probes"
    for root in (old, new):
        (root / "blobs" / "ab").mkdir(parents=True)
        (root / "set-1.npz").write_bytes(b"x")
        (root / "blobs" / "ab" / "abc.safetensors").write_bytes(b"y")
    assert paths.in_store(new, str(old / "set-1.npz")) == new / "set-1.npz"
    assert (
        paths.in_store(new, str(old / "blobs/ab/abc.safetensors"))
        == new / "blobs/ab/abc.safetensors"
    )
    assert paths.in_store(new, str(new / "set-1.npz")) == new / "set-1.npz"
    assert paths.in_store(new, "set-1.npz") == new / "set-1.npz"  # relative: under the root
    # Not in this home: the other home's file, as recorded.
    assert paths.in_store(new, str(old / "other.npz")) == old / "other.npz"


def test_a_copied_home_reads_and_removes_only_its_own_files(
    sdag_graph, neo4j_settings: Settings, cleanup: list[str], tmp_path: Path
) -> None:
    first = replace(neo4j_settings, home=tmp_path / "first")
    images = np.random.default_rng(0).integers(0, 255, (12, 28, 28), dtype=np.uint8)
    set_id = f"moved-{uuid.uuid4().hex[:8]}"
    ps, _ = probes.add_probe_set(sdag_graph, first, concept=CLOG, images=images, set_id=set_id)
    model = loading.build_timm("test_efficientnet", 2, 1)
    weights = loading.save_weights(model, tmp_path / "w.safetensors")
    reg = registry.Registration(
        name=f"moved-{uuid.uuid4().hex[:6]}",
        arch="test_efficientnet",
        weights_path=weights,
        wnids=[CLOG, "n03776877"],
        input_spec=fashion_experts.FASHION_INPUT_SPEC,
    )
    mid = registry.register_model(sdag_graph, first, reg).record["id"]
    cleanup.append(mid)
    record = registry.get_model(sdag_graph, mid)
    assert Path(record["weights_path"]).is_relative_to(first.model_store)

    # A copy of the home beside the first: the copy reads its own files.
    copy = replace(neo4j_settings, home=tmp_path / "copy")
    shutil.copytree(first.home, copy.home)
    assert loading.weights_file(copy, record).is_relative_to(copy.model_store)
    assert np.array_equal(probes.load_images(ps, settings=copy), images)

    # Removing the set from the copy removes the copy's file, never the first home's.
    probes.remove_probe_set(sdag_graph, set_id, copy)
    assert not (copy.probe_store / f"{set_id}.npz").exists()
    assert (first.probe_store / f"{set_id}.npz").exists()
    with pytest.raises(NotFound):
        probes.remove_probe_set(sdag_graph, set_id, copy)

    # The first home moved away: the model's weights are read from where the home is now.
    shutil.rmtree(first.home)
    assert loading.weights_file(copy, record).is_file()
    registry.delete_model(sdag_graph, copy, mid)
    assert not list((copy.model_store / "blobs").rglob("*.safetensors"))
