"""hub/fold: an expert's graph rewritten for inference gives the original's outputs."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

from mllgraph.hub import fold, forward, loading
from mllgraph.hub.preprocess import InputSpec, preprocess
from mllgraph.hubs.fashion.experts import FASHION_ARCHS, FASHION_INPUT_SPEC


def _images(spec: InputSpec, n: int, seed: int = 1) -> torch.Tensor:
    shape = (n, spec.size, spec.size) + ((3,) if spec.channels == 3 else ())
    return preprocess(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), spec)


def _randomise_norms(model: nn.Module) -> nn.Module:
    """Trained-looking BatchNorm statistics, so that folding them is not the identity."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # BatchNormAct2d too
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))
    return model.eval()


def _count(model: nn.Module, kind: type) -> int:
    return sum(type(m) is kind for m in model.modules())


def test_efficientnet_lite_folds_its_norms_and_keeps_its_logits() -> None:
    model, spec, _ = loading.load_efficientnet_lite("efficientnet_lite0")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _images(spec, 3)
    with torch.inference_mode():
        want = model(x)
    ready = forward.prepare(model, spec)
    assert ready is not model
    assert _count(model, nn.BatchNorm2d) == 49 and _count(ready, nn.BatchNorm2d) == 0
    # Only the stride-2 convolutions keep their own (one-sided) padding.
    assert _count(ready, nn.ZeroPad2d) < _count(model, nn.ZeroPad2d)
    got = forward.run(ready, x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    assert torch.equal(got.argmax(1), want.argmax(1))
    # The model itself is untouched: a caller may still run or fold it again.
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


# What the rewrites remove from each family (its other layers are left as they are).
REWRITTEN = {
    "test_efficientnet": "BatchNormAct2d",
    "test_nfnet": "ScaledStdConv2d",
    "test_resnet": "BatchNorm2d",
}


@pytest.mark.parametrize("arch", sorted(FASHION_ARCHS))
def test_each_fashion_expert_family_gives_the_same_logits(arch: str) -> None:
    torch.manual_seed(0)
    model = _randomise_norms(loading.build_timm(arch, 7, 1))
    x = _images(FASHION_INPUT_SPEC, 5)
    with torch.inference_mode():
        want = model(x)
    ready = forward.prepare(model, FASHION_INPUT_SPEC)
    got = forward.run(ready, x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    if arch in REWRITTEN:
        names = [type(m).__name__ for m in ready.modules()]
        assert REWRITTEN[arch] in [type(m).__name__ for m in model.modules()]
        assert REWRITTEN[arch] not in names


class _Residual(nn.Module):
    """A conv output read twice (by the ReLU and by the sum): the ReLU must not run in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return (self.act(y) + y).mean((2, 3))


class _SharedActivation(nn.Module):
    """One ReLU6 module used in two places, as EfficientNet-Lite's blocks do."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1)
        self.na, self.nb = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.na(self.a(x)))
        return (self.act(self.nb(self.b(h))) + h).mean((2, 3))


@pytest.mark.parametrize("net", [_Residual, _SharedActivation])
def test_rewrites_keep_outputs_where_tensors_are_read_twice(net: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = _randomise_norms(net())
    x = torch.randn(4, 3, 8, 8)
    with torch.inference_mode():
        want = model(x)
    ready = fold.for_inference(model, x[:2])
    assert ready is not model and _count(ready, nn.BatchNorm2d) < _count(model, nn.BatchNorm2d)
    with torch.inference_mode():
        torch.testing.assert_close(ready(x), want, rtol=1e-5, atol=1e-5)
    assert not model.act.inplace  # the model's own (shared) module is never changed


class Conv2dStaticSamePadding(nn.Conv2d):
    """Named like efficientnet_pytorch's, but its forward doubles the weight: the pad rewrite's
    assumption is wrong for it, and the output check must catch that (in `_Doubling`)."""

    def __init__(self) -> None:
        super().__init__(3, 2, 3)
        self.static_padding = nn.ZeroPad2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(self.static_padding(x), 2 * self.weight, self.bias)


class _Doubling(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(Conv2dStaticSamePadding(), nn.Flatten())


class _Branchy(nn.Module):
    """Control flow on the data: fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y.mean((2, 3)) if y.sum() > 0 else -y.mean((2, 3))


class _ActivationOnly(nn.Module):
    """Nothing to fold, only an activation that could run in place: not worth a graph."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 2, 3), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x)).mean((2, 3))


@pytest.mark.parametrize("net", [_Doubling, _Branchy, nn.Flatten, _ActivationOnly])
def test_a_model_the_rewrites_cannot_serve_or_need_not_runs_unchanged(net: type[nn.Module]) -> None:
    model = net().eval()
    assert fold.for_inference(model, torch.randn(2, 3, 8, 8)) is model


def test_a_model_in_training_mode_is_not_rewritten() -> None:
    model = _Residual().train()
    assert fold.for_inference(model, torch.randn(2, 3, 8, 8)) is model


def test_prepare_once() -> None:
    model = _randomise_norms(loading.build_timm("test_resnet", 3, 1))
    ready = forward.prepare(model, FASHION_INPUT_SPEC)
    assert forward.prepare(ready, FASHION_INPUT_SPEC) is ready


def test_other_threads_run_their_models_while_models_are_traced() -> None:
    """fx patches nn.Module.__call__ for the whole process while it traces: other threads'
    forward passes must run as usual meanwhile, and traces from several threads at once must
    each succeed (as when the inference service loads models while others classify)."""
    torch.manual_seed(0)
    busy = _randomise_norms(loading.build_timm("test_resnet", 3, 1))
    x = _images(FASHION_INPUT_SPEC, 2)
    with torch.inference_mode():
        want = busy(x)
    errors: list[BaseException] = []
    stop = threading.Event()

    def classify() -> None:
        while not stop.is_set():
            try:
                with torch.inference_mode():
                    torch.testing.assert_close(busy(x), want)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return

    traced = _randomise_norms(loading.build_timm("test_efficientnet", 5, 1))
    example = _images(FASHION_INPUT_SPEC, 1)
    results: list[nn.Module] = []

    def load() -> None:
        for _ in range(4):
            results.append(fold.for_inference(traced, example))

    runners = [threading.Thread(target=classify) for _ in range(2)]
    loaders = [threading.Thread(target=load) for _ in range(3)]
    for t in runners + loaders:
        t.start()
    for t in loaders:
        t.join(timeout=120)
    stop.set()
    for t in runners:
        t.join(timeout=30)
    assert errors == [], errors[:1]
    assert len(results) == 12 and all(r is not traced for r in results)
