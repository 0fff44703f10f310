"""No races, nothing half-written (issue #12, point 3), against the real Neo4j of the fixtures:
shared weights files survive concurrent registrations and deletes, concurrent LabelModel
calls get one job, a cancelled job writes nothing, probe outputs switch as one pair.

Everything created here carries a unique `racetest-<hex>` prefix and is removed afterwards.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from mllgraph.errors import AlreadyExists, FailedPrecondition, NotFound
from mllgraph.hub import loading, probe_outputs, probes, registry
from mllgraph.hubs.fashion import experts as fashion_experts
from mllgraph.label import run as labeller
from mllgraph.label import work as label_work
from mllgraph.v1 import ingestion_pb2, ingestion_pb2_grpc
from services import label_jobs
from services.common import RunningServer
from tests.helpers import ingestion_server, random_probe_sets

pytestmark = pytest.mark.neo4j

SANDAL, GYM_SHOE = "n04133789", "n03472535"
ARCH = "test_efficientnet"
PREFIX = f"racetest-{uuid.uuid4().hex[:8]}"


def _name(tag: str) -> str:
    return f"{PREFIX}-{tag}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    d = tmp_path_factory.mktemp("race-weights")
    torch.manual_seed(7)
    return loading.save_weights(loading.build_timm(ARCH, 2, 1), d / "w.safetensors").read_bytes()


@pytest.fixture(scope="module")
def probe_sets(sdag_graph, neo4j_settings) -> Iterator[list[probes.ProbeSet]]:
    with random_probe_sets(
        sdag_graph, neo4j_settings, (SANDAL, GYM_SHOE), prefix=PREFIX, seed=3, n=12
    ) as made:
        yield made


def _registration(name: str, data: bytes) -> registry.Registration:
    return registry.Registration(
        name=name,
        arch=ARCH,
        weights_bytes=data,
        wnids=[SANDAL, GYM_SHOE],
        input_spec=fashion_experts.FASHION_INPUT_SPEC,
    )


def _register(graph, settings, name: str, data: bytes) -> str:
    return registry.register_model(graph, settings, _registration(name, data)).record["id"]


def _labels(graph, mid: str) -> int:
    return graph.run_user_query(
        "MATCH (:Model {id: $id})-[:HAS_HEAD]->(:Head)-[l:LABELED]->() RETURN count(l) AS n",
        {"id": mid},
    )[0]["n"]


# --- weights files --------------------------------------------------------------------------


def test_concurrent_registrations_and_deletes_never_lose_a_referenced_weights_file(
    sdag_graph, neo4j_settings, weights, cleanup
) -> None:
    """Rounds of: two registrations of the same id, one of another id, all with identical
    weights, racing a delete of the last model holding those weights. Afterwards every model
    finds its weights file, and deleting the last reference removes it (no orphan)."""
    graph, settings = sdag_graph, neo4j_settings
    blob = None
    for round_ in range(3):
        old = _register(graph, settings, _name(f"old{round_}"), weights)
        cleanup.append(old)
        blob = Path(registry.get_model(graph, old)["weights_path"])
        same, other = _name(f"same{round_}"), _name(f"other{round_}")
        barrier = threading.Barrier(4)

        def register(name: str, _barrier: threading.Barrier = barrier) -> str:
            _barrier.wait()
            return _register(graph, settings, name, weights)

        def delete(mid: str = old, _barrier: threading.Barrier = barrier) -> dict:
            _barrier.wait()
            return registry.delete_model(graph, settings, mid)

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(register, n) for n in (same, same, other)]
            removed = pool.submit(delete)
            ids = {f.result() for f in futures}
            removed.result()
        cleanup.extend(ids)
        assert ids == {f"{same}@1", f"{other}@1"}
        with pytest.raises(NotFound):
            registry.get_model(graph, old)
        for mid in ids:
            path = Path(registry.get_model(graph, mid)["weights_path"])
            assert path == blob and path.is_file(), f"{mid} lost its weights file"
        first = registry.delete_model(graph, settings, f"{same}@1")
        assert not first["weights_removed"] and blob.is_file()  # `other` still uses it
        last = registry.delete_model(graph, settings, f"{other}@1")
        assert last["weights_removed"] and not blob.exists()
    assert blob is not None and not list(blob.parent.glob(f"{blob.name}.part*"))


def test_same_id_registered_from_many_threads_creates_once(
    sdag_graph, neo4j_settings, weights, cleanup
) -> None:
    graph, settings = sdag_graph, neo4j_settings
    name = _name("many")
    cleanup.append(f"{name}@1")
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(
                lambda _: registry.register_model(graph, settings, _registration(name, weights)),
                range(4),
            )
        )
    assert sorted(r.created for r in results) == [False, False, False, True]
    assert Path(results[0].record["weights_path"]).is_file()
    other = loading.save_weights(
        loading.build_timm(ARCH, 2, 1), settings.home / f"{name}-other.safetensors"
    ).read_bytes()
    with pytest.raises(AlreadyExists):  # other weights under the id: refused, file kept
        registry.register_model(graph, settings, _registration(name, other))
    assert Path(results[0].record["weights_path"]).is_file()


_HOLD_STORE_LOCK = """
import sys
from dataclasses import replace
from pathlib import Path
from mllgraph.hub import registry
from mllgraph.settings import Settings
settings = replace(Settings.from_env(), home=Path(sys.argv[1]))
with registry.store_lock(settings):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_the_store_lock_holds_across_processes(
    sdag_graph, neo4j_settings, weights, cleanup
) -> None:
    """Another process (the CLI beside the service) holding the store lock: a delete waits
    for it before touching the graph or the file."""
    import subprocess
    import sys

    graph, settings = sdag_graph, neo4j_settings
    mid = _register(graph, settings, _name("flock"), weights)
    cleanup.append(mid)
    blob = Path(registry.get_model(graph, mid)["weights_path"])
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_STORE_LOCK, str(settings.home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        done: list[dict] = []
        deleter = threading.Thread(
            target=lambda: done.append(registry.delete_model(graph, settings, mid))
        )
        deleter.start()
        deleter.join(timeout=2.0)
        assert not done and registry.get_model(graph, mid) and blob.is_file()
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    deleter.join(timeout=60)
    assert done and done[0]["weights_removed"] and not blob.exists()


# --- label jobs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(
    neo4j_settings, sdag_graph
) -> Iterator[
    tuple[
        ingestion_pb2_grpc.IngestionServiceStub,
        asyncio.AbstractEventLoop,
        RunningServer,
    ]
]:  # noqa: E501
    with ingestion_server(neo4j_settings, "race-test-loop") as (running, channel, loop):
        yield ingestion_pb2_grpc.IngestionServiceStub(channel), loop.loop, running


def test_concurrent_label_model_calls_get_one_job(
    server, sdag_graph, neo4j_settings, weights, probe_sets, cleanup
) -> None:
    stub, _, running = server
    mid = _register(sdag_graph, neo4j_settings, _name("label2"), weights)
    cleanup.append(mid)
    request = ingestion_pb2.LabelModelRequest(model_id=mid)
    for _ in range(3):  # each round: 4 calls at once
        calls = [stub.LabelModel.future(request, timeout=60) for _ in range(4)]
        jobs = {c.result().job_id for c in calls}
        assert len(jobs) == 1, jobs
        job = running.servicer.jobs.get(jobs.pop())
        queued_for_model = [
            j for j in running.servicer.jobs._jobs.values() if j.model_id == mid and j.active
        ]
        assert queued_for_model in ([job], [])
        for _ in range(600):
            if not job.active:
                break
            threading.Event().wait(0.1)
        assert job.state == label_jobs.DONE, job.message
        request = ingestion_pb2.LabelModelRequest(
            model_id=mid, options=ingestion_pb2.LabelOptions(relabel=True)
        )


def test_submit_is_atomic_and_closed_while_deleting() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()

        async def run(job: label_jobs.LabelJob) -> str:
            await gate.wait()
            return "done"

        queue = label_jobs.LabelJobQueue(run)
        opts = label_work.LabelOptions()
        a, b = queue.submit("m@1", opts, 2), queue.submit("m@1", opts, 2)
        assert a is b
        queue.closed.add("d@1")
        with pytest.raises(FailedPrecondition, match="being deleted"):
            queue.submit("d@1", opts, 2)
        for _ in range(500):
            if a.state == label_jobs.RUNNING:
                break
            await asyncio.sleep(0.01)
        assert queue.submit("m@1", opts, 2) is a  # running counts as active too
        gate.set()
        await queue.close(grace=5)
        assert a.state == label_jobs.DONE

    asyncio.run(scenario())


# --- a cancelled job ------------------------------------------------------------------------


def test_a_job_reported_failed_at_shutdown_writes_nothing_afterwards(
    sdag_graph, neo4j_settings, weights, probe_sets, cleanup
) -> None:
    """The job's thread is held inside the forward pass past the shutdown grace; the job is
    reported FAILED; when the thread is released it must not write labels or outputs."""
    graph, settings = sdag_graph, neo4j_settings
    mid = _register(graph, settings, _name("cancel"), weights)
    cleanup.append(mid)
    inside, release = threading.Event(), threading.Event()
    thread_outcome: list[BaseException | str] = []

    def held(done: int, total: int) -> None:
        inside.set()
        release.wait(30)

    async def run(job: label_jobs.LabelJob) -> str:
        def work() -> str:
            try:
                labeller.label_model(
                    graph,
                    settings,
                    job.model_id,
                    label_work.LabelOptions(samples_per_concept=12),
                    device="cpu",
                    progress=held,
                    cancel=job.token,
                )
            except BaseException as e:  # noqa: BLE001 - recorded for the assertion
                thread_outcome.append(e)
                raise
            thread_outcome.append("wrote")
            return "done"

        return await asyncio.to_thread(work)

    async def scenario() -> label_jobs.LabelJob:
        queue = label_jobs.LabelJobQueue(run)
        job = queue.submit(mid, label_work.LabelOptions(), 2)
        assert await asyncio.to_thread(inside.wait, 60)
        await queue.close(grace=0.2)
        return job

    job = asyncio.run(scenario())
    assert job.state == label_jobs.FAILED and "nothing was written" in job.message
    release.set()
    for _ in range(300):
        if thread_outcome:
            break
        threading.Event().wait(0.1)
    assert thread_outcome and thread_outcome[0] != "wrote", thread_outcome
    assert type(thread_outcome[0]).__name__ == "Aborted"
    assert _labels(graph, mid) == 0
    assert registry.get_model(graph, mid).get("labelled_at") is None
    assert probe_outputs.current_version(settings, mid) is None


def test_cancel_token_excludes_the_write() -> None:
    token = label_work.CancelToken()
    with token.writing():
        # A write in flight: cancel cannot claim "nothing written" until it ends.
        answer: list[str] = []
        t = threading.Thread(target=lambda: answer.append(token.cancel(timeout=0.05)))
        t.start()
        t.join()
        assert answer == [label_work.CancelToken.WRITING]
    assert token.cancel() == label_work.CancelToken.COMMITTED
    fresh = label_work.CancelToken()
    assert fresh.cancel() == label_work.CancelToken.CANCELLED
    with pytest.raises(Exception, match="cancelled"), fresh.writing():
        pytest.fail("the write path ran after cancel")


def _versions(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]


# --- probe outputs --------------------------------------------------------------------------


def test_probe_outputs_readers_see_one_pair(neo4j_settings, tmp_path) -> None:
    """A writer switches in versions whose array values equal their temperature; a reader
    opening them concurrently always finds the two from the same version."""
    from dataclasses import replace

    settings = replace(neo4j_settings, home=tmp_path)
    mid = f"{PREFIX}-pairs@1"
    stop = threading.Event()
    seen: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                out = probe_outputs.open_probe_outputs(settings, mid)
                seen.append((float(out.get("s")[0, 0]), out.temperature))
            except FailedPrecondition:
                pass  # before the first version
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for k in range(1, 120):
            rows = 1 + k % 5  # the shape changes too: a mixed pair would misread rows
            probe_outputs.save_probe_outputs(
                settings, mid, {"s": np.full((rows, 3), k, np.float32)}, float(k)
            )
    finally:
        stop.set()
        reader.join()
    assert not errors, errors
    assert seen and all(value == temp for value, temp in seen)
    root = probe_outputs.current_version(settings, mid).parent  # type: ignore[union-attr]
    assert len(_versions(root)) <= 2  # old versions pruned


def test_failed_label_write_keeps_the_old_pair_and_labels(
    sdag_graph, neo4j_settings, weights, probe_sets, cleanup
) -> None:
    """Labelled once; a relabel whose write is refused (cancelled) leaves the old outputs
    current, the old labels in the graph, and no staged version behind."""
    graph, settings = sdag_graph, neo4j_settings
    mid = _register(graph, settings, _name("keep"), weights)
    cleanup.append(mid)
    opts = label_work.LabelOptions(samples_per_concept=12)
    labeller.label_model(graph, settings, mid, opts, device="cpu")
    before_version = probe_outputs.current_version(settings, mid)
    before_labels = _labels(graph, mid)
    assert before_version is not None and before_labels > 0
    work = label_work.prepare(graph, settings, mid, opts)
    outcome = label_work.compute(settings, work, device="cpu")
    token = label_work.CancelToken()
    token.cancel()
    with pytest.raises(Exception, match="cancelled"):
        label_work.commit(graph, settings, work, outcome, cancel=token)
    assert probe_outputs.current_version(settings, mid) == before_version
    assert _versions(before_version.parent) == [before_version]
    assert _labels(graph, mid) == before_labels
    # And a relabel that succeeds switches to a new version, recorded in the graph.
    label_work.commit(graph, settings, work, outcome)
    now = probe_outputs.current_version(settings, mid)
    assert now not in (None, before_version)
    recorded = registry.get_model(graph, mid)["probe_outputs"]
    assert str(now) in recorded


# -- label claims: one labelling per model across processes ----------------------------------


def test_claims_grant_one_of_many_concurrent_callers(
    sdag_graph, neo4j_settings, weights, cleanup
) -> None:
    from mllgraph.label import claims

    mid = _register(sdag_graph, neo4j_settings, _name("claim"), weights)
    cleanup.append(mid)
    now_ms = int(time.time() * 1000)
    jobs = [f"job-{i}" for i in range(8)]
    with ThreadPoolExecutor(8) as pool:  # each claim is its own transaction
        results = list(
            pool.map(
                lambda j: claims.claim(sdag_graph, mid, j, relabel=False, since_ms=now_ms), jobs
            )
        )
    granted = [j for j, r in zip(jobs, results, strict=True) if r.granted]
    assert len(granted) == 1, results
    assert all(r.busy and r.holder == granted[0] for r in results if not r.granted)
    # Held: nobody else gets it, relabel or not; renewing works only for the holder.
    assert not claims.claim(sdag_graph, mid, "late", relabel=True, since_ms=now_ms).granted
    assert claims.renew(sdag_graph, mid, granted[0]) and not claims.renew(sdag_graph, mid, "late")
    claims.release(sdag_graph, mid, "late")  # not the holder: no effect
    assert claims.claim(sdag_graph, mid, "late", relabel=False, since_ms=now_ms).busy
    claims.release(sdag_graph, mid, granted[0])
    again = claims.claim(sdag_graph, mid, "next", relabel=False, since_ms=now_ms)
    assert again.granted and again.holder == "next"
    claims.release(sdag_graph, mid, "next")
    # A lapsed lease (a holder that died) frees the model.
    assert claims.claim(sdag_graph, mid, "dead", relabel=False, since_ms=now_ms, lease_s=0).granted
    assert claims.claim(sdag_graph, mid, "alive", relabel=False, since_ms=now_ms).granted
    claims.release(sdag_graph, mid, "alive")
    with pytest.raises(NotFound, match="not registered"):
        claims.claim(sdag_graph, mid + "-nope", "x", relabel=False, since_ms=now_ms)


def test_a_labelled_model_is_claimed_only_to_relabel_and_never_by_an_older_request(
    sdag_graph, neo4j_settings, weights, probe_sets, cleanup
) -> None:
    from mllgraph.label import claims

    mid = _register(sdag_graph, neo4j_settings, _name("claimed"), weights)
    cleanup.append(mid)
    before = int(time.time() * 1000) - 1000  # a request that arrived before the labelling
    labeller.label_model(
        sdag_graph, neo4j_settings, mid, label_work.LabelOptions(samples_per_concept=4)
    )
    after = int(time.time() * 1000) + 1000
    old = claims.claim(sdag_graph, mid, "old", relabel=True, since_ms=before)
    assert not old.granted and old.fresh and old.labelled  # served by that labelling
    plain = claims.claim(sdag_graph, mid, "plain", relabel=False, since_ms=after)
    assert not plain.granted and plain.labelled and not plain.fresh
    relabel = claims.claim(sdag_graph, mid, "relabel", relabel=True, since_ms=after)
    assert relabel.granted
    claims.release(sdag_graph, mid, "relabel")


def test_two_services_on_one_graph_label_a_model_once(
    sdag_graph, neo4j_settings, weights, probe_sets, cleanup
) -> None:
    """Two ingestion services (each its own job queue, as two processes have) get LabelModel
    calls for one model at once: one job runs; the other service answers ALREADY_EXISTS
    naming it, or, once it is done, FAILED_PRECONDITION (its labels are current)."""
    import grpc

    mid = _register(sdag_graph, neo4j_settings, _name("twice"), weights)
    cleanup.append(mid)
    request = ingestion_pb2.LabelModelRequest(model_id=mid)
    with (
        ingestion_server(neo4j_settings, "claim-a") as (a, channel_a, _),
        ingestion_server(neo4j_settings, "claim-b") as (b, channel_b, _),
    ):
        stubs = [ingestion_pb2_grpc.IngestionServiceStub(c) for c in (channel_a, channel_b)]
        calls = [stub.LabelModel.future(request, timeout=60) for stub in stubs for _ in range(3)]
        jobs, refused = set(), []
        for call in calls:
            try:
                jobs.add(call.result().job_id)
            except grpc.RpcError as e:
                refused.append((e.code(), e.details()))
        assert len(jobs) == 1, (jobs, refused)
        job_id = jobs.pop()
        owner = a if job_id in a.servicer.jobs._jobs else b
        assert all(
            code == grpc.StatusCode.ALREADY_EXISTS
            and job_id in details
            or code == grpc.StatusCode.FAILED_PRECONDITION
            and "labelled" in details
            for code, details in refused
        ), refused
        job = owner.servicer.jobs.get(job_id)
        for _ in range(600):
            if not job.active:
                break
            threading.Event().wait(0.1)
        assert job.state == label_jobs.DONE, job.message
    # The claim was released with the job: a relabel can claim the model again.
    from mllgraph.label import claims

    now_ms = int(time.time() * 1000) + 1000  # a relabel asked after the job
    assert claims.claim(sdag_graph, mid, "after", relabel=True, since_ms=now_ms).granted
    claims.release(sdag_graph, mid, "after")


def test_a_call_racing_a_job_that_just_finished_gets_that_job() -> None:
    """The race the busy machine showed: a LabelModel call that arrived before a job
    finished, and is decided after, is served by that job (no second labelling)."""

    async def scenario() -> None:
        async def run(job: label_jobs.LabelJob) -> str:
            return "done"

        queue = label_jobs.LabelJobQueue(run)
        arrived = time.time()
        job = queue.submit("m@1", label_work.LabelOptions(), 2)
        for _ in range(500):
            if job.state == label_jobs.DONE:
                break
            await asyncio.sleep(0.01)
        assert queue.active_for("m@1") is None
        assert queue.served_since("m@1", arrived) is job
        assert queue.served_since("m@1", time.time() + 1) is None  # a later request is not
        await queue.close(grace=5)

    asyncio.run(scenario())
