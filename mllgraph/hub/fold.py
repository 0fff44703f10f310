"""An expert's forward graph rewritten for inference, with the same outputs.

Four rewrites, on the graph `torch.fx` traces (convolutions kept whole):
- a weight-standardised convolution (timm's StdConv2d, ScaledStdConv2d: NFNet, BiT) becomes
  a plain one with its standardised weight computed once, not at every forward pass (at the
  CPU's 4-image passes of 28x28 images, that recomputation was most of an NFNet expert's time);
- each eval-mode BatchNorm2d is folded into the convolution before it (weights and a bias);
  timm's BatchNormAct2d (EfficientNet, MobileNet, ...) likewise, its activation kept;
- a TF-"same" static padding that is symmetric (EfficientNet-Lite's stride-1 depthwise
  convolutions) moves into the convolution, instead of a separate zero-filled copy;
- where one of the above changed the graph, a ReLU, ReLU6, SiLU or Hardswish whose input is
  a convolution's or BatchNorm's own fresh output, read by nothing else, runs in place.
On the CPU the hub's EfficientNet-Lite experts spent about half their time outside the
convolutions (BatchNorm, ReLU6, padding): these rewrites remove most of it
(`mllgraph bench infer`). Only convolutions whose forward is a plain conv over `weight` and
`bias` (or, for the standardised ones, of their known weight) are touched.

`for_inference` checks the rewritten graph against the original on an example batch: a model
fx cannot trace, or whose outputs differ beyond float rounding, runs unchanged.

Threads: fx traces by patching `nn.Module.__call__` for the whole process. Here a module called
from any other thread while a trace runs goes straight to its own forward (`_ConvLeafTracer`),
and one trace runs at a time (`_TRACE_LOCK`), so the patches nest and are undone in order.
Without that, a service loading a model broke every other thread's forward pass meanwhile
("module is not installed as a submodule").
"""

from __future__ import annotations

import copy
import logging
import threading
from typing import Any

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
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.Hardswish)
# timm's BatchNorm2d followed by its own dropout and activation in one module.
_NORM_ACT = "BatchNormAct2d"
# Outputs differ from the original by float rounding only (about 1e-6 of the largest logit).
_TOLERANCE = 1e-3
_TRACE_LOCK = threading.Lock()


class _ConvLeafTracer(fx.Tracer):
    """Keeps every Conv2d (and subclass) and timm's BatchNormAct2d one node, so the rewrites
    see conv -> norm pairs. Only the tracing thread's module calls are traced; other threads'
    run as they would without a trace."""

    def __init__(self) -> None:
        super().__init__()
        self._thread = threading.get_ident()

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        if threading.get_ident() != self._thread:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: Any) -> Any:
        if threading.get_ident() != self._thread:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (
            isinstance(m, nn.Conv2d)
            or _is_norm_act(m)
            or super().is_leaf_module(m, module_qualified_name)
        )


def _is_norm_act(m: nn.Module) -> bool:
    """timm's BatchNormAct2d whose dropout does nothing at inference."""
    return (
        type(m).__name__ == _NORM_ACT
        and isinstance(m, nn.BatchNorm2d)
        and isinstance(getattr(m, "drop", None), nn.Identity | nn.Dropout)
        and isinstance(getattr(m, "act", None), nn.Module)
    )


def for_inference(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """`module` (in eval mode) rewritten for inference, or `module` itself where nothing is to
    rewrite or it cannot be (not traceable, in training mode, outputs on `example` that
    differ). `module` itself is never modified."""
    if module.training:
        return module
    try:
        # The rewrites add modules and never change the model's own (fuse_conv_bn_eval copies).
        with _TRACE_LOCK:
            traced = _ConvLeafTracer().trace(module)
        rewritten = fx.GraphModule(module, traced)
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
    layers they removed or replaced. In-place activations alone do not count: for them the
    graph's own forward costs more than they save (MambaOut: 0.96x), so 0 keeps the model."""
    changed = _standardised_weights(graph) + _pads_into_convs(graph) + _fold_batch_norms(graph)
    if not changed:
        return 0
    _activations_in_place(graph)
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


def _modules(graph: fx.GraphModule) -> dict[str, nn.Module]:
    # Every name, a module registered under several (a shared activation) included.
    return dict(graph.named_modules(remove_duplicate=False))


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


def _module_nodes(graph: fx.GraphModule) -> list[tuple[fx.Node, nn.Module]]:
    """Each module call of the graph with its module (a snapshot: rewrites may follow)."""
    modules = _modules(graph)
    return [(n, modules[n.target]) for n in graph.graph.nodes if n.op == "call_module"]


def _standardised_weights(graph: fx.GraphModule) -> int:
    changed = 0
    for node, conv in _module_nodes(graph):
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
    changed = 0
    for node, conv in _module_nodes(graph):
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
    modules, changed = _modules(graph), 0
    for node in list(graph.graph.nodes):
        if node.op != "call_module":
            continue
        bn, source = modules[node.target], node.args[0]
        if not (type(bn) is nn.BatchNorm2d or _is_norm_act(bn)):
            continue
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
        if type(bn) is not nn.BatchNorm2d and not isinstance(bn.act, nn.Identity):
            _replace(graph, node, bn.act, "norm_act")  # the norm folded, its activation stays
        else:
            node.replace_all_uses_with(source)
            graph.graph.erase_node(node)
        modules = _modules(graph)
        changed += 1
    return changed


def _activations_in_place(graph: fx.GraphModule) -> int:
    modules, changed = _modules(graph), 0
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
