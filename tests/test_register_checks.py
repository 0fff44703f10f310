"""Registration checks a caller's weights before building anything big (issue 25).

RegisterModel used to build the caller's `arch` first: `vit_huge_patch14_224` with 100 bytes
of garbage cost 2.4 GB and ~10 s before the garbage was noticed. Now the file is read as a
state_dict first, then the architecture is built on the meta device, its parameter count
checked against MLLGRAPH_MAX_MODEL_PARAMS and its keys and shapes against the file; only
weights that fit are built for real. No Neo4j: the graph is a stub that knows no model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from mllgraph.errors import InvalidArgument
from mllgraph.hub import loading, registry
from mllgraph.hub.preprocess import InputSpec
from mllgraph.settings import Settings

HUGE = "vit_huge_patch14_224"  # 632M parameters
SMALL = "test_efficientnet"  # timm's own tiny test model
SPEC = InputSpec(size=32, resize="resize", mean=(0.5,), std=(0.5,), channels=1)


class NoModels:
    """The two graph calls registration makes before the weights: schema and id look-up."""

    def ensure_schema(self, name: str) -> None:
        pass

    def read(self, name: str, **params: Any) -> list[dict[str, Any]]:
        assert name == "hub/model_get", f"registration got past the weights checks ({name})"
        return []


@pytest.fixture
def real_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The architectures built on a real device (not the meta device) during a test."""
    built: list[str] = []
    original = loading.build_timm

    def spy(arch: str, *args: Any, **kwargs: Any) -> torch.nn.Module:
        if torch.get_default_device().type != "meta":
            built.append(arch)
        return original(arch, *args, **kwargs)

    monkeypatch.setattr(loading, "build_timm", spy)
    return built


def _register(tmp_path: Path, arch: str, weights: bytes, **settings: Any) -> None:
    reg = registry.Registration(
        name="probe", arch=arch, weights_bytes=weights, wnids=["n04133789"], input_spec=SPEC
    )
    base = replace(Settings(), home=tmp_path)
    registry.register_model(NoModels(), replace(base, **settings), reg)  # type: ignore[arg-type]


def _safetensors(tensors: dict[str, torch.Tensor], path: Path) -> bytes:
    save_file(tensors, str(path))
    return path.read_bytes()


def test_garbage_weights_are_refused_before_the_arch_is_built(
    tmp_path: Path, real_builds: list[str]
) -> None:
    with pytest.raises(InvalidArgument, match=r"the uploaded weights \(100 bytes\)"):
        _register(tmp_path, HUGE, b"\x00garbage" * 12 + b"!!!!")
    assert real_builds == []


def test_weights_that_do_not_fit_are_refused_on_the_meta_device(
    tmp_path: Path, real_builds: list[str]
) -> None:
    weights = _safetensors({"w": torch.zeros(3)}, tmp_path / "w.safetensors")
    with pytest.raises(InvalidArgument, match="do not fit vit_huge_patch14_224.*missing keys"):
        _register(tmp_path, HUGE, weights, max_model_params=10**12)
    assert real_builds == []


def test_an_arch_over_the_parameter_cap_is_refused(tmp_path: Path, real_builds: list[str]) -> None:
    weights = _safetensors({"w": torch.zeros(3)}, tmp_path / "w.safetensors")
    with pytest.raises(InvalidArgument, match=r"has 630,[0-9,]+ parameters, over .*500,000,000"):
        _register(tmp_path, HUGE, weights)
    assert real_builds == []
    small = loading.build_timm(SMALL, 1, 1)
    real_builds.clear()
    fitting = _safetensors(dict(small.state_dict()), tmp_path / "small.safetensors")
    with pytest.raises(InvalidArgument, match="MLLGRAPH_MAX_MODEL_PARAMS"):
        _register(tmp_path, SMALL, fitting, max_model_params=1000)
    assert real_builds == []


def test_fitting_weights_under_the_cap_load(tmp_path: Path, real_builds: list[str]) -> None:
    small = loading.build_timm(SMALL, 2, 1)
    real_builds.clear()
    path = loading.save_weights(small, tmp_path / "small.safetensors")
    model = loading.build_with_weights(SMALL, 2, 1, path, max_params=10**9)
    assert real_builds == [SMALL]
    for key, value in small.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


# -- one concept per head --------------------------------------------------------------------

CRANE_BIRD, CRANE_MACHINE = "n02012849", "n03126707"  # ImageNet's two "crane" classes
GYM_SHOE = "n03472535"


class Concepts(NoModels):
    """Every wnid is a concept whose first lemma is "crane"."""

    def read(self, name: str, **params: Any) -> list[dict[str, Any]]:
        if name == "hub/concept_ids":
            return [{"found": params["wnids"]}]
        if name == "graph/concept":
            return [{"wnid": w, "lemmas": ["crane"]} for w in params["keys"]]
        return super().read(name, **params)


def _register_labels(tmp_path: Path, ground: Any = None, **labels: Any) -> None:
    small = loading.build_timm(SMALL, len(next(iter(labels.values()))), 1)
    path = loading.save_weights(small, tmp_path / "small.safetensors")
    reg = registry.Registration(
        name="labels", arch=SMALL, weights_path=path, input_spec=SPEC, **labels
    )
    registry.register_model(NoModels(), replace(Settings(), home=tmp_path), reg, ground)  # type: ignore[arg-type]


def test_repeated_class_names_are_refused_before_grounding(tmp_path: Path) -> None:
    grounded: list[str] = []

    def ground(name: str) -> str:
        grounded.append(name)
        return "n03057021"

    names = ["coat", "Coat", " coat", "COAT"]
    with pytest.raises(InvalidArgument, match=r"class_names: .*#0 'coat', #1 'Coat', #2 'coat'"):
        _register_labels(tmp_path, ground, class_names=names)
    assert grounded == []


def test_class_names_grounding_to_one_concept_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=f"#0 'sneaker', #1 'gym shoe' ground to {GYM_SHOE}"):
        _register_labels(tmp_path, lambda name: GYM_SHOE, class_names=["sneaker", "gym shoe"])


def test_a_repeated_wnid_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=f"wnids: .*#0 '{GYM_SHOE}', #2 '{GYM_SHOE}'"):
        _register_labels(tmp_path, wnids=[GYM_SHOE, CRANE_BIRD, GYM_SHOE])


def test_one_name_for_two_concepts_is_fine_as_wnids() -> None:
    reg = registry.Registration(name="cranes", wnids=[CRANE_BIRD, CRANE_MACHINE])
    labels, wnids = registry._labels_to_wnids(Concepts(), reg, 2, None)  # type: ignore[arg-type]
    assert labels == ["crane", "crane"] and wnids == [CRANE_BIRD, CRANE_MACHINE]
