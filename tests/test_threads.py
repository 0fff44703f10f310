"""No request changes the process's thread settings (issue 24, item 5): overlapping stacked
fits and sentence encodings, run from several threads at once, while other threads watch
the BLAS / OpenMP pools (threadpoolctl) and torch's thread count, as every other request
would see them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from mllgraph import threads
from mllgraph.combine import stacked

CONFIGURED = 2  # what the process is set to at "start-up" here, whatever the machine's cores


def _pools() -> tuple[tuple[str, int], ...]:
    return tuple(sorted({(p["internal_api"], int(p["num_threads"])) for p in threadpool_info()}))


def _torch_threads_fresh() -> int:
    """torch's count as a thread torch has not seen yet (a new request's) starts with."""
    import torch

    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
    t.start()
    t.join()
    return out[0]


@pytest.fixture
def configured() -> Iterator[None]:
    """The process at CONFIGURED threads in every pool, as a start-up would set it."""
    import torch

    before = torch.get_num_threads()
    limits = threadpool_limits(CONFIGURED)
    torch.set_num_threads(CONFIGURED)
    try:
        yield
    finally:
        limits.restore_original_limits()
        torch.set_num_threads(before)


def _watch_while(work: Callable[[], None], n_workers: int, repeats: int) -> set[object]:
    """Run `work` `repeats` times in each of `n_workers` threads at once; meanwhile a watcher
    thread records what it sees. Returns the set of observations."""
    seen: set[object] = set()
    stop = threading.Event()
    errors: list[BaseException] = []

    def watch() -> None:
        while not stop.is_set():
            seen.add(("pools", _pools()))
            seen.add(("torch-new-thread", _torch_threads_fresh()))

    def run() -> None:
        try:
            for _ in range(repeats):
                work()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=run) for _ in range(n_workers)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    watcher.join()
    assert not errors, errors
    return seen


def _expected() -> set[object]:
    return {("pools", _pools()), ("torch-new-thread", _torch_threads_fresh())}


def test_overlapping_stacked_fits_leave_the_thread_settings_alone(configured: None) -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 15)
    logits = {"m@1": rng.normal(size=(y.size, 12)) + 3 * np.eye(12)[y]}
    reference = stacked.fit(logits, y, 4, ["m@1"], {})
    assert reference is not None
    expected = _expected()
    fits: list[stacked.StackedRule | None] = []

    def work() -> None:
        fits.append(stacked.fit(logits, y, 4, ["m@1"], {}))

    assert _watch_while(work, n_workers=4, repeats=3) - expected == set()
    assert _expected() == expected  # and afterwards: the configured ones
    assert all(f is not None and np.array_equal(f.coef, reference.coef) for f in fits)


def test_overlapping_encodings_leave_the_thread_settings_alone(configured: None) -> None:
    from mllgraph.ground.embed import TextEmbedder

    embedder = TextEmbedder().load()
    texts = [f"a photo of thing number {i}" for i in range(24)]
    reference = embedder.encode(texts)
    expected = _expected()
    results: list[np.ndarray] = []

    def work() -> None:
        results.append(embedder.encode(texts))

    assert _watch_while(work, n_workers=3, repeats=4) - expected == set()
    assert _expected() == expected
    for r in results:
        np.testing.assert_allclose(r, reference, atol=1e-5)


def test_local_threads_are_for_the_calling_thread_only(configured: None) -> None:
    import torch

    torch.get_num_threads()
    inside: list[int] = []
    entered, release = threading.Event(), threading.Event()

    def request() -> None:
        with threads.local_threads(1):
            inside.append(torch.get_num_threads())
            entered.set()
            release.wait(10)
        inside.append(torch.get_num_threads())

    t = threading.Thread(target=request)
    t.start()
    assert entered.wait(10)
    try:
        assert torch.get_num_threads() == CONFIGURED  # this thread, while the other is limited
        assert _torch_threads_fresh() == CONFIGURED
        assert {n for api, n in _pools() if api == "openmp"} == {CONFIGURED}
    finally:
        release.set()
        t.join()
    assert inside == [1, CONFIGURED]


# --- BLAS threads, set once at start-up (threads.set_blas_threads) ---------------------------

_BLAS_PROBE = """
import os, sys
from mllgraph import threads
if sys.argv[1] == "numpy-first":
    import numpy  # noqa: F401  (already loaded: threadpoolctl must apply it)
threads.set_blas_threads(int(sys.argv[2]))
import numpy, scipy.linalg  # noqa: F401,E401
from threadpoolctl import threadpool_info
print(sorted({int(p["num_threads"]) for p in threadpool_info() if p["user_api"] == "blas"}))
"""


def _blas_threads_in_fresh_process(order: str, n: int, env: dict[str, str]) -> str:
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS",)}
    done = subprocess.run(
        [sys.executable, "-c", _BLAS_PROBE, order, str(n)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("order", ["numpy-later", "numpy-first"])
def test_set_blas_threads_applies_whether_numpy_is_loaded_or_not(order: str) -> None:
    assert _blas_threads_in_fresh_process(order, 1, {}) == "[1]"


def test_openblas_num_threads_in_the_environment_wins() -> None:
    env = {"OPENBLAS_NUM_THREADS": "2"}  # (OpenBLAS caps it at the machine's cores)
    alone = _blas_threads_in_fresh_process("numpy-later", 0, env)
    if alone == "[1]":
        pytest.skip("one core: 2 BLAS threads cannot be told from 1 here")
    assert _blas_threads_in_fresh_process("numpy-later", 1, env) == alone


def test_zero_blas_threads_leaves_the_library_default() -> None:
    default = _blas_threads_in_fresh_process("numpy-later", 0, {})
    assert default == _blas_threads_in_fresh_process("numpy-first", 0, {})
    assert default != "[]"


def test_a_negative_blas_thread_count_is_refused_by_name(capsys: pytest.CaptureFixture) -> None:
    from mllgraph.cli import main
    from mllgraph.errors import InvalidArgument
    from mllgraph.settings import Settings

    with pytest.raises(InvalidArgument, match="MLLGRAPH_BLAS_THREADS is -1"):
        threads.set_blas_threads(-1)
    assert main(["neo4j", "status"], Settings(blas_threads=-1)) == 1
    assert "MLLGRAPH_BLAS_THREADS is -1" in capsys.readouterr().err


# -- the work pool: a request's independent numeric work at once --------------------------


def test_work_run_in_a_pool_sees_the_callers_context() -> None:
    """What the request set in its context (its deadline, its softmax memo) holds in the
    pool's thread; the result and an exception come back through the future."""
    from contextvars import ContextVar

    var: ContextVar[str] = ContextVar("test_work_var", default="unset")
    pool = threads.work_pool(2)
    assert pool is not None
    token = var.set("the request's")
    try:
        seen = threads.run_in(pool, lambda: (var.get(), threading.current_thread().name))
        value, name = seen.result(timeout=30)
        assert value == "the request's" and name.startswith("mllgraph-work")
        failed = threads.run_in(pool, lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failed.result(timeout=30)
    finally:
        var.reset(token)


def test_work_without_a_pool_runs_now_in_the_callers_thread() -> None:
    here = threading.current_thread()
    done = threads.run_in(None, lambda: threading.current_thread())
    assert done.done() and done.result() is here
    with pytest.raises(ZeroDivisionError):
        threads.run_in(None, lambda: 1 / 0).result()


def test_the_work_pool_is_made_once_per_size_and_one_thread_is_none() -> None:
    assert threads.work_pool(1) is None
    assert threads.work_pool(3) is threads.work_pool(3)
    assert 1 <= threads.work_threads(0) <= threads.MAX_AUTO_WORK_THREADS
    assert threads.work_threads(5) == 5


def test_a_negative_work_thread_count_is_refused_by_name(capsys: pytest.CaptureFixture) -> None:
    """At start-up, by the command and each service, not by the first selection's request."""
    from mllgraph.cli import main
    from mllgraph.errors import InvalidArgument
    from mllgraph.settings import Settings

    with pytest.raises(InvalidArgument, match="MLLGRAPH_WORK_THREADS is -1"):
        threads.work_threads(-1)
    assert main(["neo4j", "status"], Settings(work_threads=-1)) == 1
    assert "MLLGRAPH_WORK_THREADS is -1" in capsys.readouterr().err
