"""The small Fashion-MNIST experts trained here to populate the standard hub.

Several timm architectures, each trained on a subset of the ten Fashion-MNIST classes, so
that the hub holds many narrow experts whose heads overlap. Part of the standard-hub builder
(`mllgraph.hubs.fashion`), not of the catalogue: imports `hub` and below, never `label`,
`select` or `reuse`.
"""

from __future__ import annotations

import functools
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mllgraph.errors import AlreadyExists, InvalidArgument
from mllgraph.hub.loading import build_timm, model_device, save_weights
from mllgraph.hub.preprocess import InputSpec, preprocess
from mllgraph.hub.store import sha256_file
from mllgraph.hub.workers import run_jobs
from mllgraph.paths import write_atomic

FASHION_INPUT_SPEC = InputSpec(size=28, resize="resize", mean=(0.2860,), std=(0.3530,), channels=1)

# timm arch -> extra build_timm kwargs. Four families of different sizes that take 28x28
# gray input as built (so no kwargs: a generic loader knowing only arch/num_classes/in_chans
# rebuilds them) and train fast on a CPU. Measured on 2 shared cores, 20k images x 2 epochs,
# 5 look-alike classes (T-shirt, Pullover, Coat, Shirt, Dress), held-out accuracy:
#   test_efficientnet 0.10M params  ~8 s  0.80  | test_mambaout 0.19M  ~4 s  0.78
#   test_nfnet        0.19M         ~14 s 0.79  | test_resnet   0.37M  ~16 s 0.82
# Rejected: test_convnext (fails at 28x28), test_byobnet and resnet10t (>100 s),
# lcnet_050 / mobilenetv3_small_050 (20-35 s for 0.52 / 0.68), test_vit (needs img_size).
FASHION_ARCHS: dict[str, dict[str, Any]] = {
    "test_efficientnet": {},
    "test_mambaout": {},
    "test_nfnet": {},
    "test_resnet": {},
}


@dataclass(frozen=True)
class ExpertSpec:
    """One planned Fashion expert: which arch, which Fashion classes (head order), seed."""

    name: str
    arch: str
    classes: tuple[int, ...]
    seed: int
    epochs: int


def _select_classes(
    classes: Sequence[int], images: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Images of `classes` only, labels remapped to 0..k-1 in `classes` order."""
    classes = [int(c) for c in classes]
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise InvalidArgument(f"classes must be at least 2 distinct class indices, got {classes}")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
        raise InvalidArgument("images must be a uint8 array (N, 28, 28)")
    labels = np.asarray(labels)
    if labels.shape != (images.shape[0],):
        raise InvalidArgument(
            f"labels has shape {labels.shape}, expected ({images.shape[0]},) to match images"
        )
    if min(classes) < 0:
        raise InvalidArgument(f"classes must be non-negative, got {classes}")
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0):
        raise InvalidArgument("labels must be non-negative integers")
    lookup = np.full(max(max(classes), int(labels.max(initial=0))) + 1, -1, dtype=np.int64)
    lookup[classes] = np.arange(len(classes))
    mapped = lookup[labels]
    keep = mapped >= 0
    counts = np.bincount(mapped[keep], minlength=len(classes))
    empty = [c for c, n in zip(classes, counts, strict=True) if n == 0]
    if empty:
        raise InvalidArgument(f"classes {empty} have no images among the labels given")
    return images[keep], mapped[keep]


def _torch_device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InvalidArgument(f"device {device!r} is not a torch device: {e}") from e


def train_expert(
    arch: str,
    classes: Sequence[int],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    seed: int,
    batch_size: int = 256,
    lr: float = 3e-3,
    device: str | torch.device = "cpu",
    max_train: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> nn.Module:
    """Train a timm `arch` on the images of `classes` (head i = classes[i]); eval model.

    Deterministic for a given seed (bit-identical on the CPU with the same torch thread
    count; CUDA kernels may differ slightly): weights are initialised under `seed` and
    shuffling/augmentation draw from a generator seeded by it (the global RNG state is
    restored afterwards). After training, BatchNorm statistics are recomputed exactly.
    `progress(step, total_steps)` is called after every optimiser step. The model is
    returned on `device`.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InvalidArgument(f"epochs must be a positive int, got {epochs!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidArgument(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise InvalidArgument(f"batch_size must be an int >= 2, got {batch_size!r}")
    if not (isinstance(lr, int | float) and lr > 0):
        raise InvalidArgument(f"lr must be > 0, got {lr!r}")
    if max_train is not None and (not isinstance(max_train, int) or max_train < 2):
        raise InvalidArgument(f"max_train must be None or an int >= 2, got {max_train!r}")
    dev = _torch_device(device)
    x_np, y_np = _select_classes(classes, images, labels)
    gen = torch.Generator().manual_seed(seed)
    if max_train is not None and x_np.shape[0] > max_train:
        pick = torch.randperm(x_np.shape[0], generator=gen)[:max_train].sort().values.numpy()
        x_np, y_np = x_np[pick], y_np[pick]
    x_all = preprocess(x_np, FASHION_INPUT_SPEC, device=dev)
    y_all = torch.from_numpy(y_np).to(dev)
    n = x_all.shape[0]
    # Drop a ragged last batch: a batch of 1 breaks BatchNorm on 1x1 feature maps.
    per_epoch = n // batch_size if n >= batch_size else 1
    bs = min(batch_size, n)
    total = per_epoch * epochs

    fork_devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model = build_timm(arch, len(classes), 1, **FASHION_ARCHS.get(arch, {}))
        model.to(dev).train()
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=total, pct_start=0.15
        )
        step = 0
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen).to(dev)
            for b in range(per_epoch):
                idx = order[b * bs : (b + 1) * bs]
                xb, yb = x_all[idx], y_all[idx]
                # Light augmentation: random horizontal flips (garments are ~symmetric).
                flip = (torch.rand(xb.shape[0], generator=gen) < 0.5).to(dev)
                xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
                loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                if progress is not None:
                    progress(step, total)
        # Recompute BatchNorm running statistics as exact averages over (up to 8k) training
        # images: after few steps the momentum averages still lag the weights, which can
        # wreck eval-mode accuracy. Same as SWA's update_bn; a no-op for BN-free archs.
        n_stats = min(n, 8192)
        batches = [x_all[s : s + bs] for s in range(0, n_stats, bs) if n_stats - s >= 2]
        torch.optim.swa_utils.update_bn(batches, model)
    return model.eval()


@torch.no_grad()
def expert_accuracy(
    model: nn.Module,
    classes: Sequence[int],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 1024,
) -> float:
    """Top-1 accuracy of a Fashion expert on the images of its `classes`."""
    x_np, y_np = _select_classes(classes, images, labels)
    dev = model_device(model)
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for s in range(0, x_np.shape[0], batch_size):
            xb = preprocess(x_np[s : s + batch_size], FASHION_INPUT_SPEC, device=dev)
            pred = model(xb).argmax(dim=1).cpu().numpy()
            correct += int((pred == y_np[s : s + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / x_np.shape[0]


def plan_fashion_hub(n_experts: int, seed: int, *, epochs: int = 2) -> list[ExpertSpec]:
    """Deterministic plan: expert i gets 2-5 random Fashion classes and the i-th arch
    of FASHION_ARCHS (cycled, so every family is represented)."""
    if isinstance(n_experts, bool) or not isinstance(n_experts, int) or n_experts < 1:
        raise InvalidArgument(f"n_experts must be a positive int, got {n_experts!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidArgument(f"seed must be a non-negative int, got {seed!r}")
    # random.Random(int) is documented as reproducible across Python versions for these calls.
    rng = random.Random(seed)
    archs = list(FASHION_ARCHS)
    plan = []
    for i in range(n_experts):
        k = rng.randint(2, 5)
        classes = tuple(sorted(rng.sample(range(10), k)))
        arch = archs[i % len(archs)]
        plan.append(
            ExpertSpec(
                name=f"fashion-{seed}-{i:03d}-{arch}",
                arch=arch,
                classes=classes,
                seed=rng.randrange(2**31),
                epochs=epochs,
            )
        )
    return plan


def _is_done(json_path: Path, weights_path: Path, expected: Mapping[str, Any]) -> bool:
    """True when a finished expert from the same plan is already there.

    A half-written expert (no JSON, or unreadable JSON) is retrained; a finished one
    from a different plan is an error rather than being silently reused.
    """
    if not (json_path.is_file() and weights_path.is_file()):
        return False
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    differ = [k for k, v in expected.items() if meta.get(k) != v]
    if differ:
        raise AlreadyExists(
            f"{json_path} was trained with different {differ} "
            f"({ {k: meta.get(k) for k in differ} } vs { {k: expected[k] for k in differ} }); "
            f"delete it or use another output folder"
        )
    return True


def train_fashion_hub(
    n_experts: int,
    seed: int,
    out_dir: Path,
    *,
    epochs: int = 2,
    max_train_per_expert: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    root: Path | None = None,
    num_threads: int | None = None,
    split_seed: int | None = None,
    workers: int = 1,
) -> list[Path]:
    """Train the planned Fashion experts into `out_dir`; returns the `<name>.json` paths.

    Each expert gets `<name>.safetensors` and `<name>.json` (metadata: arch, classes,
    input_spec, seed, train accuracy, ...). Only the training pool of
    `fashion.split_pools(seed)` is used: never the probe pool, never the test split.
    Experts whose two files already exist are skipped, so a rerun resumes. Reproducible
    by `seed` for a given device and torch thread count. `num_threads` sets torch's
    intra-op threads for the run (restored afterwards): 1 avoids the severe slowdown
    of OpenMP threads competing with other processes on a small shared CPU.
    `split_seed` (default `seed`) picks the train/probe split: hubs of several seeds that
    share one probe pool pass the same `split_seed`, so no expert ever trains on a probe.
    `workers` > 1 on the CPU: that many processes train the experts at once, one torch
    thread each (`hub.workers`; the same weights as one after another).
    """
    if num_threads is not None and (
        isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
    ):
        raise InvalidArgument(f"num_threads must be a positive int, got {num_threads!r}")
    if max_train_per_expert is not None and (
        not isinstance(max_train_per_expert, int) or max_train_per_expert < 2
    ):
        raise InvalidArgument(
            f"max_train_per_expert must be None or an int >= 2, got {max_train_per_expert!r}"
        )
    plan = plan_fashion_hub(n_experts, seed, epochs=epochs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    split_seed = seed if split_seed is None else split_seed
    todo = [
        spec
        for spec in plan
        if not _is_done(
            *_expert_paths(out_dir, spec), _expected(spec, split_seed, max_train_per_expert)
        )
    ]
    paths = [_expert_paths(out_dir, spec)[0] for spec in plan]
    if not todo:
        return paths
    in_workers = workers > 1 and len(todo) > 1 and torch.device(device).type == "cpu"
    bar = _bar(progress)
    with bar:
        task = bar.add_task("fashion experts", total=len(plan), completed=len(plan) - len(todo))
        if in_workers:
            jobs = [_Job(spec, split_seed, out_dir, root, max_train_per_expert) for spec in todo]
            run_jobs(_train_job, jobs, workers, on_done=lambda _i, _p: bar.advance(task))
            return paths
        images, labels = _training_pool(root, split_seed)
        old_threads = torch.get_num_threads()
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        try:
            for spec in todo:
                step = bar.add_task(f"  {spec.name}", total=None)

                def report(done: int, total: int, step: Any = step) -> None:
                    bar.update(step, completed=done, total=total)

                _train_one(
                    spec, split_seed, out_dir, images, labels, device, max_train_per_expert, report
                )
                bar.remove_task(step)
                bar.advance(task)
        finally:
            torch.set_num_threads(old_threads)
    return paths


def _bar(progress: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not progress,
    )


def _expert_paths(out_dir: Path, spec: ExpertSpec) -> tuple[Path, Path]:
    return out_dir / f"{spec.name}.json", out_dir / f"{spec.name}.safetensors"


def _expected(spec: ExpertSpec, hub_seed: int, max_train: int | None) -> dict[str, Any]:
    """What a finished expert's JSON must say to be reused (`_is_done`)."""
    return {
        "arch": spec.arch,
        "fashion_classes": list(spec.classes),
        "seed": spec.seed,
        "hub_seed": hub_seed,
        "epochs": spec.epochs,
        "max_train": max_train,
    }


def _training_pool(root: Path | None, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The Fashion-MNIST training pool of `split_seed` (never its probe pool)."""
    from mllgraph.hubs.fashion import data as fashion

    images, labels = fashion.load_split("train", root)
    train_idx, _probe_idx = fashion.split_pools(split_seed, root=root)
    return images[train_idx], labels[train_idx]


@dataclass(frozen=True)
class _Job:
    """One expert to train in a worker process (`hub.workers`)."""

    spec: ExpertSpec
    hub_seed: int
    out_dir: Path
    root: Path | None
    max_train: int | None


# A worker trains several experts of one pool: it reads the pool once.
_worker_pool = functools.lru_cache(maxsize=1)(_training_pool)


def _train_job(job: _Job) -> Path:
    images, labels = _worker_pool(job.root, job.hub_seed)
    return _train_one(job.spec, job.hub_seed, job.out_dir, images, labels, "cpu", job.max_train)


def _train_one(
    spec: ExpertSpec,
    hub_seed: int,
    out_dir: Path,
    images: np.ndarray,
    labels: np.ndarray,
    device: str | torch.device,
    max_train_per_expert: int | None,
    report: Callable[[int, int], None] | None = None,
) -> Path:
    """Train one expert of the pool (`images`, `labels`) and write its weights and JSON."""
    from mllgraph.hubs.fashion import data as fashion

    json_path, weights_path = _expert_paths(out_dir, spec)
    # Pick this expert's training images here (not via max_train) so the reported train
    # accuracy is measured on exactly the images it was trained on.
    idx = np.flatnonzero(np.isin(labels, spec.classes))
    if max_train_per_expert is not None and idx.size > max_train_per_expert:
        rng = np.random.default_rng(spec.seed)
        idx = np.sort(rng.choice(idx, size=max_train_per_expert, replace=False))
    t0 = time.perf_counter()
    model = train_expert(
        spec.arch,
        list(spec.classes),
        images[idx],
        labels[idx],
        epochs=spec.epochs,
        seed=spec.seed,
        device=device,
        progress=report,
    )
    train_seconds = time.perf_counter() - t0
    # At most ~10k images: enough for an accuracy figure, cheap next to training.
    eval_idx = idx[:: max(1, idx.size // 10_000)]
    accuracy = expert_accuracy(model, spec.classes, images[eval_idx], labels[eval_idx])
    save_weights(model, weights_path)
    meta = {
        "name": spec.name,
        "arch": spec.arch,
        "model_kwargs": FASHION_ARCHS[spec.arch],
        "num_classes": len(spec.classes),
        "in_chans": 1,
        "class_names": [fashion.FASHION_CLASSES[c] for c in spec.classes],
        "fashion_classes": list(spec.classes),
        "input_spec": FASHION_INPUT_SPEC.to_dict(),
        "seed": spec.seed,
        "hub_seed": hub_seed,  # the split_pools seed: its probe pool is unseen here
        "epochs": spec.epochs,
        "max_train": max_train_per_expert,
        "train_accuracy": round(accuracy, 6),
        "train_seconds": round(train_seconds, 3),
        "weights_file": weights_path.name,
        "weights_sha256": sha256_file(weights_path),
    }
    # The JSON is written last and atomically: its presence marks a finished expert.
    write_atomic(json_path, (json.dumps(meta, indent=2) + "\n").encode())
    return json_path
