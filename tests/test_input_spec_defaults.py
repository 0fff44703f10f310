"""One set of defaults for a registration's input spec (issue 25: the service and the CLI
registered the same weights with different input settings, bicubic against bilinear when
interpolation was unset). `preprocess.complete_spec` is that one place; the service's
`spec_from_proto` and the CLI's `_spec_from_args` must both give what it gives."""

from __future__ import annotations

import pytest

from mllgraph.errors import InvalidArgument
from mllgraph.hub import preprocess
from mllgraph.hub.loading import EFFICIENTNET_LITE
from mllgraph.hub.preprocess import InputSpec, complete_spec

VIT = "vit_tiny_patch16_224"  # timm states bicubic for it


def test_unset_fields_come_from_timms_config_for_the_arch() -> None:
    stated = preprocess.arch_defaults(VIT)
    assert stated["interpolation"] == "bicubic"
    spec = complete_spec(VIT)
    assert spec.size == stated["size"] and spec.interpolation == "bicubic"
    assert spec.resize == "resize_crop" and spec.crop_pct == stated["crop_pct"]
    assert spec.mean == stated["mean"] and spec.std == stated["std"]


def test_given_fields_win_and_one_channel_averages_the_statistics() -> None:
    spec = complete_spec(VIT, size=64, channels=1, resize="resize", interpolation="nearest")
    assert (spec.size, spec.channels, spec.resize, spec.crop_pct) == (64, 1, "resize", 1.0)
    assert spec.interpolation == "nearest" and len(spec.mean) == len(spec.std) == 1


def test_without_timm_metadata_the_fixed_defaults_apply() -> None:
    spec = complete_spec("not_a_timm_arch", size=32)
    assert (spec.resize, spec.crop_pct, spec.interpolation) == ("resize_crop", 0.875, "bilinear")
    assert spec.mean == preprocess.IMAGENET_MEAN and spec.std == preprocess.IMAGENET_STD
    with pytest.raises(InvalidArgument, match="input_spec.size: required"):
        complete_spec("not_a_timm_arch")


def test_a_builtins_own_spec_is_the_base() -> None:
    base = EFFICIENTNET_LITE["efficientnet_lite0"].input_spec
    assert complete_spec("efficientnet_lite0", base=base) == base
    assert complete_spec("efficientnet_lite0", base=base, size=200).interpolation == "bicubic"


def test_the_service_completes_a_spec_as_the_library_does() -> None:
    from mllgraph.v1 import common_pb2
    from services.ingestion import spec_from_proto

    for arch, fields in [(VIT, {}), (VIT, {"size": 96}), ("not_a_timm_arch", {"size": 32})]:
        msg = common_pb2.InputSpec(**fields)
        assert spec_from_proto(msg, arch, None) == complete_spec(arch, **fields)


def test_the_cli_completes_a_spec_as_the_library_does() -> None:
    from mllgraph import cli
    from mllgraph.cli import models

    args = cli.build_parser().parse_args(
        [
            "models",
            "register",
            "--name",
            "m",
            "--arch",
            VIT,
            "--weights",
            "w.pt",
            "--input-size",
            "224",
        ]
    )
    spec = models._spec_from_args(args)
    assert isinstance(spec, InputSpec)
    assert spec == complete_spec(VIT, size=224)
