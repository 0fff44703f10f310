"""A model's compute cost: milliseconds of forward pass per image on the serving device.

Selection budgets compute with it (`SelectOptions.max_cost_ms`, and the cheapest plan within
the accuracy slack is served). It is measured where the model is already built and run:
at registration (the forward check has just run; registration stays one batch of warm-up and
a few small timed batches longer) and, for a model registered before costs existed or
measured on another device, the next time it is labelled. Until then `cost_of` estimates it
from the weights' size and the input size, marked as estimated.

The timing runs the model as the inference service does (`forward.prepare`d, `forward.run`: the
CPU chunk, inference mode, on `Settings.torch_device()`). On the CPU it counts the CPU time of
one thread (`time.thread_time`, torch on one thread for the block: `mllgraph.threads`), the
compute the image costs whatever else runs: on a shared machine wall time is not a property of
the model (measured here under a load of 20 on 2 cores: EfficientNet-Lite0 at 613 ms of wall
time per image on 2 threads, 60 ms on 1, and 15 ms of CPU either way). On CUDA, wall time
with the device synchronised. `cost_clock` says which ("cpu" or "wall").
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from mllgraph.threads import local_threads

if TYPE_CHECKING:  # torch is imported where a model is timed: listing costs stays light
    import torch
    from torch import nn

    from mllgraph.hub.preprocess import InputSpec

COST_BATCH = 8  # images per timed batch
# How the timed forward pass was run; a cost from an older runner is measured again at the next
# labelling. 2: the rewritten graph of `forward.prepare` (hub/fold); 1 (or none): as built.
COST_RUNNER = 2
# Timed batches; their minimum is taken. Other work on the machine only adds to a batch's CPU
# time (cache and memory-bandwidth contention), so the least-disturbed batch is the model's
# own cost: across repeated measurements, quiet and under load, the minimum moved less than
# the median (`mllgraph bench cost-repeat`, reports/bench_cost-repeat.json: two measurements
# of one model 1.22x apart at the 95th percentile, against 1.33x with the median).
COST_REPEATS = 5
# Fewer timed batches for a slow model, so that measuring a large one stays within seconds.
COST_TIME_BUDGET_S = 3.0
# The estimate for an unmeasured model: ms per million float32 parameters at 224 x 224 pixels,
# scaled by pixels. From EfficientNet-Lite0 (4.7M parameters, about 15 ms of CPU per image);
# a rough figure (small convolutional nets on large inputs cost more), always marked estimated.
ESTIMATE_MS_PER_MPARAM_224 = 3.0


def measure(model: nn.Module, spec: InputSpec, device: str, **timing: int) -> dict[str, Any]:
    """Time `model` on random images of `spec`'s size: {cost_ms_per_image (the least of the
    timed batches), cost_device, cost_threads, cost_batch, cost_clock}. `timing`: the keyword
    arguments of `time_batches` (cpu_chunk, batch, repeats)."""
    timed = time_batches(model, spec, device, **timing)
    return {
        "cost_ms_per_image": min(timed["ms_per_image"]),
        "cost_device": timed["device"],
        "cost_threads": timed["threads"],
        "cost_batch": timed["batch"],
        "cost_clock": timed["clock"],
        "cost_runner": COST_RUNNER,
    }


def time_batches(
    model: nn.Module,
    spec: InputSpec,
    device: str,
    *,
    cpu_chunk: int = 0,
    batch: int = COST_BATCH,
    repeats: int = COST_REPEATS,
) -> dict[str, Any]:
    """Each timed batch's ms per image (after one warm-up batch; fewer than `repeats` for a
    model whose warm-up took long), with the device, clock and threads they were timed on."""
    import torch

    from mllgraph.hub import forward
    from mllgraph.hub.preprocess import preprocess

    dev = torch.device(device)
    model = forward.prepare(model, spec, dev)
    shape = (batch, spec.size, spec.size) + ((3,) if spec.channels == 3 else ())
    images = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    x = preprocess(images, spec, device=dev)
    chunk = forward.chunk_for(dev, cpu_chunk)
    on_cpu = dev.type == "cpu"
    clock = time.thread_time if on_cpu else time.perf_counter
    with local_threads(1) if on_cpu else contextlib.nullcontext():
        t = time.perf_counter()
        forward.run(model, x, chunk)  # warm-up: first-call allocations and kernel selection
        _sync(dev)
        warm_s = time.perf_counter() - t
        repeats = max(1, min(repeats, int(COST_TIME_BUDGET_S / max(warm_s, 1e-6))))
        times = []
        for _ in range(repeats):
            _sync(dev)
            t = clock()
            forward.run(model, x, chunk)
            _sync(dev)
            times.append(clock() - t)
    return {
        "ms_per_image": [s * 1000 / batch for s in times],
        "batch": int(batch),
        "device": dev.type,
        "threads": 1 if on_cpu else int(torch.get_num_threads()),
        "clock": "cpu" if on_cpu else "wall",
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
    """True when the record has no measured cost, or one from another kind of device or an
    older way of running the model (COST_RUNNER)."""
    return (
        record.get("cost_ms_per_image") is None
        or record.get("cost_device") != str(device).split(":")[0]
        or record.get("cost_runner", 1) != COST_RUNNER
    )
