"""Small pieces several test modules share (not fixtures: plain functions and classes)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from mllgraph.hubs.fashion import experts as fashion_experts


class Loop:
    """An asyncio loop in a daemon thread, for servers called with blocking stubs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
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
