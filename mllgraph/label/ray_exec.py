"""Labelling on Ray: one task per model, chosen with MLLGRAPH_EXECUTOR=ray.

The driver (this process) reads each model's `LabelWork` from the graph, submits one Ray task
per model, and as each task returns it writes the outcome exactly as in-process labelling does
(`work.commit`: probe outputs staged, graph written, files switched in). The task runs the very
function in-process labelling runs (`work.compute`: the forward pass over the probes and the
measurement) and writes nothing, so a task that fails or whose worker dies leaves nothing
half-written; Ray retries it (`max_retries`, worker deaths included).

A task asks for one GPU when the settings allow CUDA (`MLLGRAPH_DEVICE` auto or cuda) and the
cluster has GPUs, else one CPU. Workers read the weights and the probe images where the graph
records them: on a cluster, either shared folders or stores at a URL (MLLGRAPH_MODEL_STORE /
MLLGRAPH_PROBE_STORE = s3://..., see `mllgraph.hub.store`), fetched into each worker's cache.
Only the driver writes (the outcome a task returns).

`ray.init()` with no address starts a local Ray on this machine (`MLLGRAPH_RAY_NUM_CPUS`, else
every CPU here); `MLLGRAPH_RAY_ADDRESS` or `RAY_ADDRESS` joins an existing cluster, whose
workers must have mllgraph installed. Starting Ray and running generic per-model work is
`mllgraph.hub.executor`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mllgraph.graph.db import Graph
from mllgraph.hub.executor import MAX_RETRIES, _placement, _ray, failure, shutdown, start
from mllgraph.label import work as labeller
from mllgraph.settings import Settings

CANCEL_POLL_S = 1.0  # how often the driver looks at a job's cancel token
ComputeFn = Callable[..., labeller.LabelOutcome]  # (settings, work, *, device) -> outcome
log = logging.getLogger(__name__)
__all__ = ["label_models", "shutdown"]  # shutdown: the CLI and the ingestion service call it here


def _run_task(
    settings: Settings, work: labeller.LabelWork, compute: ComputeFn, device: str
) -> labeller.LabelOutcome:
    """The body of one Ray task: the in-process computation, nothing written."""
    return compute(settings, work, device=device)


def label_models(
    graph: Graph,
    settings: Settings,
    mids: list[str],
    options: labeller.LabelOptions | None = None,
    *,
    compute: ComputeFn = labeller.compute,
    max_retries: int = MAX_RETRIES,
    on_done: Callable[[labeller.LabelResult], None] | None = None,
    progress: labeller.ProgressFn | None = None,
    cancel: labeller.CancelToken | None = None,
) -> list[labeller.LabelResult]:
    """Label `mids` as one Ray task each; outcomes are committed here as tasks finish.

    On a task that fails for good the others are cancelled (those already committed stay) and
    the failure is raised. Results come back in `mids` order. With `cancel`: once it is
    cancelled the pending tasks are cancelled, nothing more is committed, Aborted is raised."""
    if not mids:
        return []  # nothing to do: no Ray started
    options = options or labeller.LabelOptions()
    works = [labeller.prepare(graph, settings, mid, options) for mid in mids]
    start(settings)  # left running: the caller's session (or the CLI) shuts it down
    ray = _ray()
    gpus, device = _placement(settings, ray)
    task = ray.remote(_run_task)
    pending: dict[Any, labeller.LabelWork] = {}
    for work in works:
        ref = task.options(
            num_cpus=1,
            num_gpus=gpus,
            max_retries=max_retries,
            retry_exceptions=False,  # our own errors (bad weights, missing files) are final
            name=f"label:{work.model_id}",
        ).remote(settings, work, compute, device)
        pending[ref] = work
    results: dict[str, labeller.LabelResult] = {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=CANCEL_POLL_S)
        if cancel is not None and cancel.cancelled:
            for other in pending:
                ray.cancel(other)
            cancel.check()
        if not ready:
            continue
        ref = ready[0]
        work = pending.pop(ref)
        try:
            outcome = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - Ray wraps every task error
            for other in pending:
                ray.cancel(other)
            raise failure(work.model_id, e) from e
        result = labeller.commit(graph, settings, work, outcome, cancel=cancel)
        results[work.model_id] = result
        if progress:
            progress(result.images, result.images)
        if on_done:
            on_done(result)
    return [results[mid] for mid in mids]
