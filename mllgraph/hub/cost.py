"""A model's compute cost: milliseconds of forward pass per image on the serving device.

Selection budgets compute with it (`SelectOptions.max_cost_ms`, and the cheapest plan within
the accuracy slack is served). It is measured where the model is already built and run:
at registration (the forward check has just run; registration stays one batch of warm-up and
a few small timed batches longer) and, for a model registered before costs existed or
measured on another device, the next time it is labelled. Until then `cost_of` estimates it
from the weights' size and the input size, marked as estimated.

The timing runs the model as the inference service does (`forward.run`: channels_last, the
CPU chunk, inference mode, on `Settings.torch_device()`), with the process's torch threads:
the service sets none of its own (see `mllgraph.threads`), so both see the same count.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where a model is timed: listing costs stays light
    import torch
    from torch import nn

    from mllgraph.hub.preprocess import InputSpec

COST_BATCH = 8  # images per timed batch
COST_REPEATS = 5  # timed batches; their median is taken (a busy machine's outliers fall away)
# Fewer timed batches for a slow model, so that measuring a large one stays within seconds.
COST_TIME_BUDGET_S = 3.0
# The estimate for an unmeasured model: ms per million float32 parameters at 224 x 224 pixels,
# scaled by pixels. Fitted by eye to EfficientNet-Lite0..2 on one CPU core (roughly 10-20 ms);
# a rough figure, always reported as estimated.
ESTIMATE_MS_PER_MPARAM_224 = 2.5
# Node properties the cost is written to (Model nodes; `hub/model_set_cost`).
COST_PROPERTIES = ("cost_ms_per_image", "cost_device", "cost_threads", "cost_batch")


def measure(
    model: nn.Module,
    spec: InputSpec,
    device: str,
    *,
    cpu_chunk: int = 0,
    batch: int = COST_BATCH,
    repeats: int = COST_REPEATS,
) -> dict[str, Any]:
    """Time `model` on random images of `spec`'s size: {cost_ms_per_image (median of `repeats`
    batches of `batch`, after one warm-up batch), cost_device, cost_threads, cost_batch}."""
    import torch

    from mllgraph.hub import forward
    from mllgraph.hub.preprocess import preprocess

    dev = torch.device(device)
    model = forward.to_channels_last(model.to(dev).eval())
    shape = (batch, spec.size, spec.size) + ((3,) if spec.channels == 3 else ())
    images = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    x = preprocess(images, spec, device=dev)
    chunk = forward.chunk_for(dev, cpu_chunk)
    t = time.perf_counter()
    forward.run(model, x, chunk)  # warm-up: first-call allocations and kernel selection
    _sync(dev)
    warm_s = time.perf_counter() - t
    repeats = max(1, min(repeats, int(COST_TIME_BUDGET_S / max(warm_s, 1e-6))))
    times = []
    for _ in range(repeats):
        _sync(dev)
        t = time.perf_counter()
        forward.run(model, x, chunk)
        _sync(dev)
        times.append(time.perf_counter() - t)
    return {
        "cost_ms_per_image": statistics.median(times) * 1000 / batch,
        "cost_device": dev.type,
        "cost_threads": int(torch.get_num_threads()),
        "cost_batch": int(batch),
    }


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def estimate_ms(size_bytes: float | None, input_size: float | None) -> float:
    """A rough cost from the weights' size (float32: 4 bytes a parameter) and input size."""
    params_m = max(float(size_bytes or 0), 0.0) / 4 / 1e6
    pixels = (float(input_size or 224) / 224) ** 2
    return ESTIMATE_MS_PER_MPARAM_224 * params_m * pixels


def cost_of(record: dict[str, Any]) -> tuple[float, bool]:
    """(ms per image, estimated?) of a Model record: measured where recorded, else estimated."""
    measured = record.get("cost_ms_per_image")
    if measured is not None:
        return float(measured), False
    return estimate_ms(record.get("size_bytes"), record.get("input_size")), True


def needs_measuring(record: dict[str, Any], device: str) -> bool:
    """True when the record has no measured cost, or one from another kind of device."""
    return (
        record.get("cost_ms_per_image") is None
        or record.get("cost_device") != str(device).split(":")[0]
    )
