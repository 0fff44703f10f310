"""`mllgraph models register --timm NAME --weights FILE` on a real Neo4j: a small timm
ImageNet-1k classifier, its checkpoint saved here (no downloads), registered from timm's own
metadata with its 1,000 ImageNet heads declared."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from mllgraph.errors import InvalidArgument, NotFound
from mllgraph.hub import loading, registry, timm_source
from mllgraph.settings import Settings

pytestmark = pytest.mark.neo4j

TIMM_NAME = "test_efficientnet.r160_in1k"


def test_register_a_timm_model_from_its_metadata(
    sdag_graph: Any, neo4j_settings: Settings, tmp_path: Path
) -> None:
    import timm

    from mllgraph import cli

    weights = loading.save_weights(
        timm.create_model(TIMM_NAME, pretrained=False), tmp_path / "w.safetensors"
    )
    name = f"ttimm-{uuid.uuid4().hex[:8]}"
    argv = ["models", "register", "--name", name, "--timm", TIMM_NAME, "--weights", str(weights)]
    args = cli.build_parser().parse_args([*argv, "--top1-accuracy", "0.42"])
    mid = f"{name}@1"
    try:
        assert args.handler(args, neo4j_settings) == 0
        record = registry.get_model(sdag_graph, mid)
        assert record["arch"] == "test_efficientnet" and record["num_classes"] == 1000
        assert record["top1_accuracy"] == pytest.approx(0.42)
        assert record["metadata"]["timm_model"] == TIMM_NAME
        spec = record["input_spec"]
        cfg = timm.create_model(TIMM_NAME, pretrained=False).pretrained_cfg
        assert spec["size"] == cfg["input_size"][1] == 160
        assert spec["crop_pct"] == pytest.approx(cfg["crop_pct"])
        assert spec["mean"] == pytest.approx(list(cfg["mean"]))
        assert spec["interpolation"] == cfg["interpolation"]
        heads = registry.heads(sdag_graph, mid, top_k=0)
        assert [h["declared_wnid"] for h in heads] == loading.imagenet_wnids()
        # The same weights again: idempotent.
        args = cli.build_parser().parse_args(argv)
        assert args.handler(args, neo4j_settings) == 0
    finally:
        with contextlib.suppress(NotFound):
            registry.delete_model(sdag_graph, neo4j_settings, mid)


def test_timm_names_and_label_sets_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="not a timm model"):
        timm_source.registration("x", "no_such_model_xyz", weights=Path("w"))
    import timm

    # A model without an ImageNet label set (10 heads): timm cannot say what they are.
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=10)
    with pytest.raises(InvalidArgument, match="label set|heads"):
        timm_source.wnids_of(model)
