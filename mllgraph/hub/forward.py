"""Running one expert over many images in fixed batches: labelling and the evaluation use
this. The inference service has its own path (`mllgraph.reuse.classifier`: one pass per plan
batch, fp16 on CUDA); both preprocess with the model's `InputSpec`, so they see the same
pixels, and both run a model made ready by `prepare` (rewritten for inference, channels_last)
through `run` (CPU chunks)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from mllgraph.hub import fold
from mllgraph.hub.preprocess import InputSpec, preprocess
from mllgraph.settings import Settings


def run(module: nn.Module, x: torch.Tensor, chunk: int = 0) -> torch.Tensor:
    """`module(x)` under inference mode, channels_last for image batches, in passes of at most
    `chunk` images (0: one pass). On the CPU small chunks are several times faster per image
    than one large pass (Settings.infer_cpu_chunk); on CUDA large passes are."""
    if x.ndim == 4 and not getattr(module, "_mllgraph_contiguous", False):
        try:
            return _passes(module, x.contiguous(memory_format=torch.channels_last), chunk)
        except RuntimeError:
            # A model that reshapes with .view cannot take channels_last activations (or the
            # error is real, and raises again below): the default layout from now on.
            module.to(memory_format=torch.contiguous_format)
            module._mllgraph_contiguous = True
    return _passes(module, x, chunk)


def _passes(module: nn.Module, x: torch.Tensor, chunk: int) -> torch.Tensor:
    with torch.inference_mode():
        if chunk <= 0 or len(x) <= chunk:
            return module(x)
        return torch.cat([module(x[i : i + chunk]) for i in range(0, len(x), chunk)])


def chunk_for(device: str | torch.device, cpu_chunk: int) -> int:
    """Images per pass on `device`: `cpu_chunk` (Settings.infer_cpu_chunk) on the CPU, whole
    batches elsewhere."""
    return cpu_chunk if torch.device(device).type == "cpu" else 0


def to_channels_last(module: nn.Module) -> nn.Module:
    """The module with its 4-D weights in channels_last (matching `run`'s input layout)."""
    return module.to(memory_format=torch.channels_last)


def prepare(
    module: nn.Module,
    spec: InputSpec,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """`module` ready for `run`: in eval mode, rewritten for inference (`hub.fold`, checked on
    an example image of `spec`), on `device` in `dtype`, with channels_last weights. Once:
    a prepared module comes back as it is."""
    if getattr(module, "_mllgraph_prepared", False):
        return module
    module = module.eval()
    on = next(module.parameters(), torch.empty(0))
    shape = (1, spec.size, spec.size) + ((3,) if spec.channels == 3 else ())
    images = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    example = preprocess(images, spec, device=on.device).to(on.dtype)
    module = to_channels_last(fold.for_inference(module, example).to(device=device, dtype=dtype))
    module._mllgraph_prepared = True
    return module


def logits(
    model: nn.Module,
    spec: InputSpec,
    images: np.ndarray,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
    cpu_chunk: int = Settings.infer_cpu_chunk,
) -> np.ndarray:
    """float32 logits (N, heads) of `model` on uint8 `images`, preprocessed per `spec`. A
    caller with several batches of images for one model passes it `prepare`d."""
    model = prepare(model, spec, device)
    chunk = chunk_for(device, cpu_chunk)
    out = []
    for start in range(0, len(images), batch_size):
        x = preprocess(images[start : start + batch_size], spec, device=device)
        out.append(run(model, x, chunk).float().cpu().numpy())
        if progress:
            progress(min(start + batch_size, len(images)))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
