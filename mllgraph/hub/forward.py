"""Running one expert over many images in fixed batches: labelling and the evaluation use
this. The inference service has its own path (`mllgraph.reuse.classifier`: one pass per plan
batch, fp16 on CUDA); both preprocess with the model's `InputSpec`, so they see the same
pixels, and both run a pass through `run` (channels_last, CPU chunks)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

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
    """float32 logits (N, heads) of `model` on uint8 `images`, preprocessed per `spec`."""
    model = to_channels_last(model.to(device).eval())
    chunk = chunk_for(device, cpu_chunk)
    out = []
    for start in range(0, len(images), batch_size):
        x = preprocess(images[start : start + batch_size], spec, device=device)
        out.append(run(model, x, chunk).float().cpu().numpy())
        if progress:
            progress(min(start + batch_size, len(images)))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
