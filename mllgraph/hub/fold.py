"""An expert's forward graph rewritten for inference, with the same outputs.

Four rewrites, on the graph `torch.fx` traces (convolutions kept whole):
- a weight-standardised convolution (timm's StdConv2d, ScaledStdConv2d: NFNet, BiT) becomes
  a plain one with its standardised weight computed once, not at every forward pass (at the
  CPU's 4-image passes of 28x28 images, that recomputation was most of an NFNet expert's time);
- each eval-mode BatchNorm2d is folded into the convolution before it (weights and a bias);
- a TF-"same" static padding that is symmetric (EfficientNet-Lite's stride-1 depthwise
  convolutions) moves into the convolution, instead of a separate zero-filled copy;
- a ReLU/ReLU6 whose input is a convolution's or BatchNorm's own fresh output, read by
  nothing else, runs in place.
On the CPU the hub's EfficientNet-Lite experts spent about half their time outside the
convolutions (BatchNorm, ReLU6, padding): these rewrites remove most of it
(`mllgraph bench infer`). Only convolutions whose forward is a plain conv over `weight` and
`bias` (or, for the standardised ones, of their known weight) are touched.

`for_inference` checks the rewritten graph against the original on an example batch: a model
fx cannot trace, or whose outputs differ beyond float rounding, runs unchanged.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)

# Conv2d subclasses whose forward is `conv2d(pad(x), weight, bias, ...)` with a fixed pad
# (efficientnet_lite_pytorch, efficientnet_pytorch). Named, not imported: optional packages.
_STATIC_SAME = "Conv2dStaticSamePadding"
# timm's weight-standardised convolutions: class name -> whether a learnt gain scales it.
_STANDARDISED = {"StdConv2d": False, "ScaledStdConv2d": True}
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
# Outputs differ from the original by float rounding only (about 1e-6 of the largest logit).
_TOLERANCE = 1e-3


class _ConvLeafTracer(fx.Tracer):
    """Keeps every Conv2d (and subclass) one node, so the rewrites see conv -> BN pairs."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.Conv2d) or super().is_leaf_module(m, module_qualified_name)


def for_inference(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """`module` (in eval mode) rewritten for inference, or `module` itself where nothing is to
    rewrite or it cannot be (not traceable, in training mode, outputs on `example` that
    differ). `module` itself is never modified."""
    if module.training:
        return module
    try:
        # The rewrites add modules and never change the model's own (fuse_conv_bn_eval copies).
        rewritten = fx.GraphModule(module, _ConvLeafTracer().trace(module))
        if not rewrite(rewritten):
            return module
        with torch.inference_mode():
            want, got = module(example), rewritten(example)
    except Exception as e:  # noqa: BLE001 - any model fx cannot take runs as it is
        log.debug("inference_fold_skipped model=%s reason=%s", type(module).__name__, e)
        return module
    if not _close(got, want):
        log.warning(
            "inference_fold_rejected model=%s: the rewritten graph's outputs differ; the model "
            "runs unchanged",
            type(module).__name__,
        )
        return module
    return rewritten


def rewrite(graph: fx.GraphModule) -> int:
    """The rewrites, in place on `graph` (traced with convolutions as leaves); how many
    nodes they changed."""
    changed = (
        _standardised_weights(graph)
        + _pads_into_convs(graph)
        + _fold_batch_norms(graph)
        + _activations_in_place(graph)
    )
    graph.graph.lint()
    graph.delete_all_unused_submodules()
    graph.recompile()
    return changed


def _close(got: object, want: object) -> bool:
    if not (isinstance(got, torch.Tensor) and isinstance(want, torch.Tensor)):
        return False
    if got.shape != want.shape:
        return False
    scale = max(1.0, float(want.abs().max()))
    return bool((got - want).abs().max() <= _TOLERANCE * scale)


def _replace(graph: fx.GraphModule, node: fx.Node, module: nn.Module, kind: str) -> None:
    # A new name per node: a module the model shares across places stays as it was elsewhere.
    name = f"_inference_{kind}_{node.name}"
    graph.add_submodule(name, module)
    node.target = name


def _plain_copy(conv: nn.Conv2d, weight: torch.Tensor, padding: object) -> nn.Conv2d:
    """A plain nn.Conv2d with `conv`'s geometry and bias, `weight` and `padding`."""
    plain = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=tuple(conv.stride),
        padding=padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
    ).train(False)
    plain.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight, False)
    if conv.bias is not None:
        plain.bias = conv.bias
    return plain


def _standardised_weights(graph: fx.GraphModule) -> int:
    modules, changed = dict(graph.named_modules()), 0
    for node in graph.graph.nodes:
        if node.op != "call_module":
            continue
        conv = modules[node.target]
        scaled = _STANDARDISED.get(type(conv).__name__)
        if scaled is None or getattr(conv, "same_pad", False) or conv.padding_mode != "zeros":
            continue
        with torch.no_grad():  # the same arithmetic as timm's forward, once
            weight = nn.functional.batch_norm(
                conv.weight.reshape(1, conv.out_channels, -1),
                None,
                None,
                weight=(conv.gain * conv.scale).view(-1) if scaled else None,
                training=True,
                momentum=0.0,
                eps=conv.eps,
            ).reshape_as(conv.weight)
        _replace(graph, node, _plain_copy(conv, weight.clone(), conv.padding), "std_conv")
        changed += 1
    return changed


def _pads_into_convs(graph: fx.GraphModule) -> int:
    modules, changed = dict(graph.named_modules()), 0
    for node in graph.graph.nodes:
        if node.op != "call_module":
            continue
        conv = modules[node.target]
        if type(conv).__name__ != _STATIC_SAME or conv.padding != (0, 0):
            continue
        pad = _symmetric_pad(conv.static_padding)
        if pad is None or conv.padding_mode != "zeros":
            continue
        _replace(graph, node, _plain_copy(conv, conv.weight, pad), "conv")
        changed += 1
    return changed


def _symmetric_pad(pad: nn.Module) -> tuple[int, int] | None:
    """(rows, columns) of a zero padding equal on both sides; (0, 0) for none; else None."""
    if isinstance(pad, nn.ZeroPad2d):
        left, right, top, bottom = pad.padding
        return (top, left) if left == right and top == bottom else None
    if type(pad).__name__ == "Identity" and not list(pad.parameters()):
        return (0, 0)
    return None


def _is_plain_conv(module: nn.Module) -> bool:
    return type(module) is nn.Conv2d or type(module).__name__ == _STATIC_SAME


def _fold_batch_norms(graph: fx.GraphModule) -> int:
    modules, changed = dict(graph.named_modules()), 0
    for node in list(graph.graph.nodes):
        if node.op != "call_module" or type(modules[node.target]) is not nn.BatchNorm2d:
            continue
        bn, source = modules[node.target], node.args[0]
        if not (
            isinstance(source, fx.Node)
            and source.op == "call_module"
            and _is_plain_conv(modules[source.target])
            and len(source.users) == 1
            and bn.track_running_stats
            and bn.running_mean is not None
        ):
            continue
        _replace(graph, source, fuse_conv_bn_eval(modules[source.target], bn), "conv_bn")
        modules = dict(graph.named_modules())
        node.replace_all_uses_with(source)
        graph.graph.erase_node(node)
        changed += 1
    return changed


def _activations_in_place(graph: fx.GraphModule) -> int:
    modules, changed = dict(graph.named_modules()), 0
    for node in graph.graph.nodes:
        if node.op != "call_module":
            continue
        act, source = modules[node.target], node.args[0]
        if not isinstance(act, _ACTIVATIONS) or act.inplace:
            continue
        # Only a conv's or BN's fresh output that nothing else reads: never a view or an input.
        if (
            isinstance(source, fx.Node)
            and source.op == "call_module"
            and isinstance(modules[source.target], nn.Conv2d | nn.BatchNorm2d)
            and len(source.users) == 1
        ):
            in_place = copy.deepcopy(act)
            in_place.inplace = True
            _replace(graph, node, in_place, "act")
            changed += 1
    return changed
