"""Model labelling, dispatched: in this process, or one Ray task per model
(MLLGRAPH_EXECUTOR=ray, `ray_exec`). The work itself is `work` (prepare, compute, commit).
"""

from __future__ import annotations

from collections.abc import Callable

from mllgraph.graph.db import Graph
from mllgraph.hub.executor import executor_name
from mllgraph.label.work import (
    CancelToken,
    LabelOptions,
    LabelResult,
    ProgressFn,
    commit,
    compute,
    prepare,
)
from mllgraph.settings import Settings


def label_model(
    graph: Graph,
    settings: Settings,
    mid: str,
    options: LabelOptions = LabelOptions(),
    *,
    device: str | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> LabelResult:
    """Label one model: in this process, or as one Ray task when MLLGRAPH_EXECUTOR=ray.
    With `cancel`: Aborted once it is cancelled, and nothing written after that."""
    if executor_name(settings) == "ray":
        from mllgraph.label import ray_exec

        return ray_exec.label_models(
            graph, settings, [mid], options, progress=progress, cancel=cancel
        )[0]
    if cancel is not None:
        cancel.check()
        given = progress

        def progress(done: int, total: int) -> None:  # also the forward pass's stop check
            cancel.check()
            if given is not None:
                given(done, total)

    work = prepare(graph, settings, mid, options)
    outcome = compute(settings, work, device=device, progress=progress)
    return commit(graph, settings, work, outcome, cancel=cancel)


def label_models(
    graph: Graph,
    settings: Settings,
    mids: list[str],
    options: LabelOptions = LabelOptions(),
    *,
    on_done: Callable[[LabelResult], None] | None = None,
) -> list[LabelResult]:
    """Label several models: one after another in this process, or one Ray task each (run
    side by side as the cluster allows) when MLLGRAPH_EXECUTOR=ray. Results in `mids` order."""
    if executor_name(settings) == "ray":
        from mllgraph.label import ray_exec

        return ray_exec.label_models(graph, settings, mids, options, on_done=on_done)
    results = []
    for mid in mids:
        results.append(label_model(graph, settings, mid, options))
        if on_done:
            on_done(results[-1])
    return results
