"""Labelling on Ray: one task per model, chosen with MLLGRAPH_EXECUTOR=ray.

The driver (this process) reads each model's `LabelWork` from the graph, submits one Ray task
per model, and as each task returns it writes the outcome exactly as in-process labelling does
(`run.commit`: probe outputs staged, graph written, files switched in). The task runs the very
function in-process labelling runs (`run.compute`: the forward pass over the probes and the
measurement) and writes nothing, so a task that fails or whose worker dies leaves nothing
half-written; Ray retries it (`max_retries`, worker deaths included).

A task asks for one GPU when the settings allow CUDA (`MLLGRAPH_DEVICE` auto or cuda) and the
cluster has GPUs, else one CPU. Workers read the weights and the probe images where the graph
records them: on a cluster, either shared folders or stores at a URL (MLLGRAPH_MODEL_STORE /
MLLGRAPH_PROBE_STORE = s3://..., see `mllgraph.hub.store`), fetched into each worker's cache.
Only the driver writes (the outcome a task returns).

`ray.init()` with no address starts a local Ray on this machine (`MLLGRAPH_RAY_NUM_CPUS`, else
every CPU here); `MLLGRAPH_RAY_ADDRESS` or `RAY_ADDRESS` joins an existing cluster, whose
workers must have mllgraph installed. Ray is imported only here and only when used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mllgraph.errors import FailedPrecondition, MllgraphError, Unavailable
from mllgraph.graph.db import Graph
from mllgraph.label import run as labeller
from mllgraph.settings import Settings

MAX_RETRIES = 3  # per task, worker deaths and failed attempts alike
# ray.init gives a raylet 30 s to register, which a loaded machine can miss: try again.
START_ATTEMPTS = 3
CANCEL_POLL_S = 1.0  # how often the driver looks at a job's cancel token
ComputeFn = Callable[..., labeller.LabelOutcome]  # (settings, work, *, device) -> outcome
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
_started_here = False
log = logging.getLogger(__name__)


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise FailedPrecondition(
            "MLLGRAPH_EXECUTOR=ray needs Ray: pip install 'mllgraph[ray]' (or 'ray>=2.40')"
        ) from e
    return ray


def start(settings: Settings, *, num_cpus: int | None = None) -> bool:
    """Connect to Ray unless this process already is; True when this call connected."""
    global _started_here
    ray = _ray()
    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            if settings.ray_address:
                ray.init(address=settings.ray_address, **common)
            else:
                cpus = num_cpus or settings.ray_num_cpus or len(os.sched_getaffinity(0))
                # Workers import this checkout's mllgraph, not whatever the venv has installed.
                path = os.pathsep.join(
                    p for p in (_PROJECT_ROOT, os.environ.get("PYTHONPATH")) if p
                )
                ray.init(num_cpus=cpus, runtime_env={"env_vars": {"PYTHONPATH": path}}, **common)
            break
        except Exception as e:  # noqa: BLE001 - a slow raylet start is a bare Exception
            with contextlib.suppress(Exception):
                ray.shutdown()
            where = settings.ray_address or "a local Ray"
            if attempt == START_ATTEMPTS:
                raise Unavailable(
                    f"cannot start or join Ray ({where}) in {START_ATTEMPTS} attempts: {e}"
                ) from e
            log.warning("ray_start_failed attempt=%d where=%s error=%r", attempt, where, str(e))
    _started_here = True
    return True


def shutdown() -> None:
    """Shut Ray down if this process connected to it (a no-op when Ray was never used)."""
    global _started_here
    if _started_here and "ray" in sys.modules:
        sys.modules["ray"].shutdown()
    _started_here = False


@contextmanager
def session(settings: Settings, *, num_cpus: int | None = None) -> Iterator[None]:
    """Ray for the duration of a block: started (or joined) here, shut down at the end."""
    started = start(settings, num_cpus=num_cpus)
    try:
        yield
    finally:
        if started:
            shutdown()


def _run_task(
    settings: Settings, work: labeller.LabelWork, compute: ComputeFn, device: str
) -> labeller.LabelOutcome:
    """The body of one Ray task: the in-process computation, nothing written."""
    return compute(settings, work, device=device)


def _placement(settings: Settings, ray: Any) -> tuple[float, str]:
    """(GPUs per task, torch device in the task)."""
    if settings.device != "cpu" and ray.cluster_resources().get("GPU", 0) >= 1:
        return 1.0, "cuda"
    return 0.0, "cpu"


def _failure(mid: str, e: BaseException) -> MllgraphError:
    """The project error for a task that failed for good (after Ray's retries)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, MllgraphError):
        return cause
    return Unavailable(f"labelling {mid} on Ray failed (after Ray's retries): {e}")


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
            raise _failure(work.model_id, e) from e
        result = labeller.commit(graph, settings, work, outcome, cancel=cancel)
        results[work.model_id] = result
        if progress:
            progress(result.images, result.images)
        if on_done:
            on_done(result)
    return [results[mid] for mid in mids]


def map_models(
    settings: Settings,
    fn: Callable[..., Any],
    args_by_model: dict[str, tuple[Any, ...]],
    *,
    shared: tuple[Any, ...] = (),
    max_retries: int = MAX_RETRIES,
) -> dict[str, Any]:
    """`fn(*shared, *args, device=...)` as one Ray task per model (a GPU each where the
    cluster has them, as for labelling); the results by model id. For read-only work such as
    the evaluation's forward passes: nothing is written, so a retried task is harmless.
    `shared` is put in Ray's object store once (e.g. the evaluation images)."""
    if not args_by_model:
        return {}
    start(settings)  # left running: the caller's session (or the CLI) shuts it down
    ray = _ray()
    gpus, device = _placement(settings, ray)
    task = ray.remote(fn)
    shared_refs = [ray.put(x) for x in shared]
    refs = {
        mid: task.options(
            num_cpus=1, num_gpus=gpus, max_retries=max_retries, name=f"map:{mid}"
        ).remote(*shared_refs, *args, device=device)
        for mid, args in args_by_model.items()
    }
    out: dict[str, Any] = {}
    for mid, ref in refs.items():
        try:
            out[mid] = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - Ray wraps every task error
            for other in refs.values():
                ray.cancel(other)
            raise _failure(mid, e) from e
    return out
