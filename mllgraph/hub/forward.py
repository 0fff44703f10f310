"""Running one expert over many images in fixed batches: labelling and the evaluation use
this. The inference service has its own path (`mllgraph.reuse.classifier`: one pass per plan
batch, fp16 on CUDA); both preprocess with the model's `InputSpec`, so they see the same
pixels."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from mllgraph.hub.preprocess import InputSpec, preprocess


def logits(
    model: nn.Module,
    spec: InputSpec,
    images: np.ndarray,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """float32 logits (N, heads) of `model` on uint8 `images`, preprocessed per `spec`."""
    model = model.to(device).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = preprocess(images[start : start + batch_size], spec, device=device)
            out.append(model(x).float().cpu().numpy())
            if progress:
                progress(min(start + batch_size, len(images)))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
