"""Where work over many models runs: in this process, or one Ray task per model
(MLLGRAPH_EXECUTOR=ray) — a local Ray started for the command, or a cluster to join.

Generic: labelling (`mllgraph.label.ray_exec`) and the evaluation's forward passes
(`map_models`) both use it. Imports nothing above `hub`.
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

from mllgraph.errors import FailedPrecondition, InvalidArgument, MllgraphError, Unavailable
from mllgraph.settings import Settings

EXECUTORS = ("local", "ray")
MAX_RETRIES = 3  # per task, worker deaths and failed attempts alike
# ray.init gives a raylet 30 s to register, which a loaded machine can miss: try again.
START_ATTEMPTS = 3
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
_started_here = False
log = logging.getLogger(__name__)


def executor_name(settings: Settings) -> str:
    """`settings.executor`, checked: "local" or "ray"."""
    if settings.executor not in EXECUTORS:
        raise InvalidArgument(
            f"MLLGRAPH_EXECUTOR={settings.executor!r}: use one of {', '.join(EXECUTORS)}"
        )
    return settings.executor


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


def _placement(settings: Settings, ray: Any) -> tuple[float, str]:
    """(GPUs per task, torch device in the task)."""
    if settings.device != "cpu" and ray.cluster_resources().get("GPU", 0) >= 1:
        return 1.0, "cuda"
    return 0.0, "cpu"


def failure(mid: str, e: BaseException) -> MllgraphError:
    """The project error for a task that failed for good (after Ray's retries)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, MllgraphError):
        return cause
    return Unavailable(f"labelling {mid} on Ray failed (after Ray's retries): {e}")


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
            raise failure(mid, e) from e
    return out
