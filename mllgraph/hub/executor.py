"""Where work over many models runs: in this process, or one Ray task per model
(MLLGRAPH_EXECUTOR=ray) — a local Ray started for the command, or a cluster to join.

Generic: labelling (`mllgraph.label.ray_exec`) and the evaluation's forward passes
(`map_models`) both use it. Imports nothing above `hub`.

A local Ray started here listens on 127.0.0.1 only (its node address is the loopback, so
GCS, raylet, workers and agents bind there, checked after the start), uses Ray's token
authentication (the default of Ray's own local start; a Ray without it is refused, and
RAY_AUTH_MODE set to another mode is respected with a warning), and
ends with this process: `shutdown` at exit, and `ray_reaper` (a watcher in its own session)
for a death that runs no exit handler (kill -9), which would leave Ray's agents running.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import subprocess
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
_REAPER = str(Path(__file__).with_name("ray_reaper.py"))
LOOPBACK = "127.0.0.1"
# Ray resolves a loopback node address to the machine's routable one unless it thinks it
# runs on a laptop (`ray_constants.ENABLE_RAY_CLUSTER` False, from this variable).
_CLUSTER_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
REAPER_WAIT_S = 10.0
_started_here = False
_reaper: subprocess.Popen[bytes] | None = None
_exit_hook = False
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
    """Connect to Ray unless this process already is; True when this call connected. With
    no address, a local Ray: loopback only, token authentication, ended with this process
    (see the module docstring)."""
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
                _start_local(ray, settings, num_cpus, common)
            break
        except Exception as e:  # noqa: BLE001 - a slow raylet start is a bare Exception
            with contextlib.suppress(Exception):
                ray.shutdown()
            if isinstance(e, MllgraphError):
                raise
            where = settings.ray_address or "a local Ray"
            if attempt == START_ATTEMPTS:
                raise Unavailable(
                    f"cannot start or join Ray ({where}) in {START_ATTEMPTS} attempts: {e}"
                ) from e
            log.warning("ray_start_failed attempt=%d where=%s error=%r", attempt, where, str(e))
    _started_here = True
    _end_with_this_process(ray, local=not settings.ray_address)
    return True


def _start_local(ray: Any, settings: Settings, num_cpus: int | None, common: dict) -> None:
    """`ray.init` of a local Ray on the loopback, then checked: loopback, token auth."""
    if importlib.util.find_spec("ray._private.authentication") is None:
        raise FailedPrecondition(
            f"Ray {ray.__version__} has no token authentication, so any local user could run "
            "code in its workers: install a Ray that has it (RAY_AUTH_MODE=token)"
        )
    cpus = num_cpus or settings.ray_num_cpus or len(os.sched_getaffinity(0))
    # Workers import this checkout's mllgraph, not whatever the venv has installed.
    path = os.pathsep.join(p for p in (_PROJECT_ROOT, os.environ.get("PYTHONPATH")) if p)
    with _loopback_only(ray):
        ray.init(
            num_cpus=cpus,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
            _node_ip_address=LOOPBACK,
            **common,
        )
    try:
        _check_local(ray)
    except BaseException:
        ray.shutdown()
        raise


def _check_local(ray: Any) -> None:
    """FailedPrecondition unless the Ray just started listens on the loopback and asks for
    a token; RAY_AUTH_MODE set to another mode by the user is respected, with a warning."""
    address = ray._private.worker._global_node.node_ip_address
    if address != LOOPBACK:
        raise FailedPrecondition(
            f"Ray {ray.__version__} put its local node on {address}, not {LOOPBACK}: it would "
            "listen on the network; set MLLGRAPH_RAY_ADDRESS to a Ray you run yourself"
        )
    from ray._raylet import AuthenticationMode, get_authentication_mode

    if get_authentication_mode() == AuthenticationMode.TOKEN:
        return
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is None:
        raise FailedPrecondition(
            f"Ray {ray.__version__} started without token authentication: set "
            "RAY_AUTH_MODE=token (Ray makes a token in ~/.ray/auth_token)"
        )
    log.warning("ray_auth_off RAY_AUTH_MODE=%s: the local Ray takes any local caller", mode)


@contextlib.contextmanager
def _loopback_only(ray: Any) -> Iterator[None]:
    """While Ray starts: a loopback node address stays the loopback (see _CLUSTER_VAR), in
    this process and in the processes Ray starts (they inherit the environment)."""
    constants = ray._private.ray_constants
    saved_env, saved = os.environ.get(_CLUSTER_VAR), constants.ENABLE_RAY_CLUSTER
    os.environ[_CLUSTER_VAR] = "0"
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = saved
        if saved_env is None:
            os.environ.pop(_CLUSTER_VAR, None)
        else:
            os.environ[_CLUSTER_VAR] = saved_env


def _end_with_this_process(ray: Any, *, local: bool) -> None:
    """`shutdown` at exit; for a local Ray also the reaper, for deaths without exit."""
    global _exit_hook, _reaper
    if not _exit_hook:
        atexit.register(shutdown)
        _exit_hook = True
    if not local:
        return
    try:
        node = ray._private.worker._global_node
        pids = [i.process.pid for infos in node.all_processes.values() for i in infos]
    except AttributeError as e:  # Ray's internals moved: say so rather than fail the work
        log.warning("ray_reaper_unavailable error=%r: a killed driver may leave Ray running", e)
        return
    _reaper = subprocess.Popen(
        [sys.executable, _REAPER, *map(str, pids)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not ended by the terminal's Ctrl-C with the driver
    )


def shutdown() -> None:
    """Shut Ray down if this process connected to it (a no-op when Ray was never used); a
    local Ray's reaper then ends whatever is left of it and exits."""
    global _started_here, _reaper
    if _started_here and "ray" in sys.modules:
        sys.modules["ray"].shutdown()
    _started_here = False
    reaper, _reaper = _reaper, None
    if reaper is not None:
        with contextlib.suppress(OSError):
            reaper.stdin.close()  # type: ignore[union-attr]
        try:
            reaper.wait(REAPER_WAIT_S)
        except subprocess.TimeoutExpired:
            log.warning("ray_reaper_slow pid=%d: still ending Ray's processes", reaper.pid)


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
