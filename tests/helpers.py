"""Small pieces several test modules share (not fixtures: plain functions, classes and
context managers the modules' fixtures wrap). Imports of the library and the services are
made inside the functions: tests/conftest.py imports this module before it isolates the
environment, so nothing here may read settings at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# Fashion class -> WordNet concept of the two-expert hub (:func:`two_expert_hub`).
FASHION_WNIDS = {
    1: "n04489008",  # trouser
    3: "n03236735",  # dress
    5: "n04133789",  # sandal
    7: "n03472535",  # gym shoe (sneaker)
    8: "n02773037",  # bag
    9: "n02872752",  # boot
}


# The tiny emoji world of the emoji tests: six concepts, one (chipmunk) with no ImageNet class
# under it and so no probe set, in two tasks, one per half.
DOG, CAT, HORSE, BANANA, APPLE = "n02084071", "n02121620", "n02374451", "n07753592", "n07739125"
CHIPMUNK = "n02360282"
TINY_EMOJI_SUITE: dict[str, Any] = {
    "name": "tiny-emoji",
    "unprobed": [CHIPMUNK],
    "tasks": [
        {
            "name": "animals",
            "split": "dev",
            "classes": [
                {"name": "dog", "wnid": DOG},
                {"name": "cat", "wnid": CAT},
                {"name": "chipmunk", "wnid": CHIPMUNK},
            ],
        },
        {
            "name": "fruit-horse",
            "split": "test",
            "classes": [
                {"name": "banana", "wnid": BANANA},
                {"name": "red apple", "wnid": APPLE},
                {"name": "horse", "wnid": HORSE},
            ],
        },
    ],
}


def register_stand_ins(
    graph: Any, settings: Any, prefix: str, folder: Path, ids: list[str]
) -> None:
    """Register two untrained stand-ins for the ImageNet experts of the tiny emoji world,
    appending each id to `ids` as it is made (the caller deletes them, even after a failure
    half-way): a (dog, cat, horse), test_efficientnet; b (banana, red apple, dog), test_resnet.
    Their inputs: 32 px RGB, plain resize."""
    from mllgraph.hub import loading, registry
    from mllgraph.hub.preprocess import InputSpec

    spec = InputSpec(size=32, resize="resize", mean=(0.5,) * 3, std=(0.5,) * 3, channels=3)
    for name, arch, wnids in (
        ("a", "test_efficientnet", [DOG, CAT, HORSE]),
        ("b", "test_resnet", [BANANA, APPLE, DOG]),
    ):
        weights = loading.save_weights(
            loading.build_timm(arch, len(wnids), 3), folder / f"{name}.safetensors"
        )
        reg = registry.Registration(
            name=f"{prefix}-{name}", arch=arch, weights_path=weights, wnids=wnids, input_spec=spec
        )
        ids.append(registry.register_model(graph, settings, reg).record["id"])


class Loop:
    """An asyncio loop in a daemon thread, for servers called with blocking stubs."""

    def __init__(self, name: str | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def call(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    run = call

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def two_class_bundle(root: Path, arch: str, model_id: str, plan_id: str) -> Any:
    """A bundle with one 2-class, 1-channel untrained model and a plan: class i = head i."""
    import torch

    from mllgraph.combine import rule as combine
    from mllgraph.hub import loading
    from mllgraph.hubs.fashion import experts as fashion_experts
    from mllgraph.reuse import bundle as bundles
    from mllgraph.select import chco

    torch.manual_seed(0)
    weights = loading.save_weights(loading.build_timm(arch, 2, 1), root / "m.safetensors")
    assignment = [
        combine.ClassAssignment(i, (combine.HeadGroup(model_id, (i,), "exact", 0.8),))
        for i in range(2)
    ]
    cp = chco.Plan(
        assignment=assignment,
        params=combine.default_params(assignment),
        estimated_accuracy=float("nan"),
        per_class_accuracy=[float("nan")] * 2,
        uncovered=[],
        models=[model_id],
        solver="none",
        evaluated=0,
    )
    plan = {
        "plan_id": plan_id,
        "classes": [{"name": f"class-{i}", "heads": []} for i in range(2)],
        "models": [model_id],
        "combination": {"schema_version": 1, "plan": cp.to_dict()},
    }
    record = {
        "id": model_id,
        "arch": arch,
        "num_classes": 2,
        "sha256": "0" * 64,
        "input_spec": fashion_experts.FASHION_INPUT_SPEC.to_dict(),
        "weights_path": str(weights),
    }
    return bundles.load_bundle(bundles.export_bundle(plan, {model_id: record}, root / "bundle"))


@contextlib.contextmanager
def ingestion_server(
    settings: Any, thread_name: str | None = None
) -> Iterator[tuple[Any, Any, Loop]]:
    """The ingestion service over `settings` on a free port, its asyncio loop in a daemon
    thread: yields (the running server, a channel to it, the loop); all closed at exit."""
    import grpc

    from services import ingestion

    loop = Loop(thread_name)
    running = loop.call(ingestion.start(settings, 0, health_interval=2.0), timeout=60)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield running, channel, loop
    finally:
        channel.close()
        loop.call(running.close(2.0), timeout=60)
        loop.close()


@contextlib.contextmanager
def random_probe_sets(
    graph: Any,
    settings: Any,
    wnids: Sequence[str],
    *,
    prefix: str,
    seed: int,
    n: int,
    source: str = "",
) -> Iterator[list[Any]]:
    """A probe set of `n` random 28x28 images per concept in `wnids` (one generator seeded
    `seed`, drawn in order), ids `<prefix>-<wnid>`; removed at exit. Yields the ProbeSets."""
    import numpy as np

    from mllgraph.hub import probes

    rng = np.random.default_rng(seed)
    made = []
    try:
        for wnid in wnids:
            ps, _ = probes.add_probe_set(
                graph,
                settings,
                concept=wnid,
                images=rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
                set_id=f"{prefix}-{wnid}",
                source=source,
            )
            made.append(ps)
        yield made
    finally:
        for ps in made:
            probes.remove_probe_set(graph, ps.id, settings)


@contextlib.contextmanager
def two_expert_hub(graph: Any, settings: Any, tmp: Path, prefix: str) -> Iterator[list[str]]:
    """Two quickly trained Fashion experts (sandal/sneaker/boot, trouser/bag/dress: the
    concepts of :data:`FASHION_WNIDS`), registered as `<prefix>-a` and `<prefix>-b` with their
    weights in `tmp`, and labelled on small probe sets (20 images per concept, ids
    `<prefix>-c<class>`). Yields the two model ids; models and probe sets are removed at exit."""
    from mllgraph.hub import loading, probes, registry
    from mllgraph.hubs.fashion import data as fashion
    from mllgraph.hubs.fashion import experts as fashion_experts
    from mllgraph.label import run as labeller
    from mllgraph.label import work as label_work

    x_train, y_train = fashion.load_split("train", settings.fashion_mnist_dir)
    models: list[str] = []
    sets: list[str] = []
    try:
        for name, arch, classes, seed in (
            ("a", "test_mambaout", (5, 7, 9), 1),
            ("b", "test_efficientnet", (1, 8, 3), 2),
        ):
            model = fashion_experts.train_expert(
                arch, classes, x_train[:20000], y_train[:20000], epochs=1, seed=seed,
                max_train=800, batch_size=100,
            )  # fmt: skip
            path = loading.save_weights(model, tmp / f"{name}.safetensors")
            reg = registry.register_model(
                graph,
                settings,
                registry.Registration(
                    name=f"{prefix}-{name}",
                    arch=arch,
                    weights_path=path,
                    wnids=[FASHION_WNIDS[c] for c in classes],
                    input_spec=fashion_experts.FASHION_INPUT_SPEC,
                ),
            )
            models.append(reg.record["id"])
        pool_x, pool_y = x_train[50000:], y_train[50000:]
        for cls, wnid in FASHION_WNIDS.items():
            ps, _ = probes.add_probe_set(
                graph,
                settings,
                concept=wnid,
                images=pool_x[pool_y == cls][:20],
                set_id=f"{prefix}-c{cls}",
            )
            sets.append(ps.id)
        for mid in models:
            labeller.label_model(
                graph, settings, mid, label_work.LabelOptions(samples_per_concept=20)
            )
        yield models
    finally:
        for mid in models:
            registry.delete_model(graph, settings, mid)
        for set_id in sets:
            probes.remove_probe_set(graph, set_id, settings)


def one_model_plan(model_id: str, heads: Sequence[int], names: Sequence[str]) -> dict[str, Any]:
    """A hand-made plan document over one model: class i is head heads[i], named names[i]."""
    from mllgraph.combine import rule as combine
    from mllgraph.select import chco

    assignment = [
        combine.ClassAssignment(i, (combine.HeadGroup(model_id, (h,), "exact", 0.8),))
        for i, h in enumerate(heads)
    ]
    plan = chco.Plan(
        assignment=assignment,
        params=combine.default_params(assignment),
        estimated_accuracy=float("nan"),
        per_class_accuracy=[float("nan")] * len(heads),
        uncovered=[],
        models=[model_id],
        solver="none",
        evaluated=0,
    )
    return {
        "plan_id": "",
        "classes": [{"name": n, "heads": []} for n in names],
        "models": [model_id],
        "combination": {"schema_version": 1, "plan": plan.to_dict()},
    }
