"""Running an expert over many images in batches (labelling and benchmarks use this; the
inference service adds dynamic batching on top of the same call)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from mllgraph.preprocess import InputSpec, preprocess


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
