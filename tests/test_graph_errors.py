"""The Neo4j driver's errors become the project's own (mllgraph.graph.db.translate), so the one
status map of services/errors.py gives UNAVAILABLE / ALREADY_EXISTS / DEADLINE_EXCEEDED, not
INTERNAL (issue #12)."""

from __future__ import annotations

import uuid

import grpc
import pytest
from neo4j.exceptions import (
    ClientError,
    ConstraintError,
    DatabaseUnavailable,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
    TransientError,
)

from mllgraph.errors import AlreadyExists, DeadlineExceeded, ResourceExhausted, Unavailable
from mllgraph.graph import db, deadline
from mllgraph.settings import Settings
from services.errors import status_for

SETTINGS = Settings()


@pytest.mark.parametrize(
    ("driver_error", "ours", "code"),
    [
        (ServiceUnavailable("down"), Unavailable, grpc.StatusCode.UNAVAILABLE),
        (SessionExpired("lost"), Unavailable, grpc.StatusCode.UNAVAILABLE),
        (TransientError("deadlock"), Unavailable, grpc.StatusCode.UNAVAILABLE),
        (DatabaseUnavailable("starting"), Unavailable, grpc.StatusCode.UNAVAILABLE),
        (ConstraintError("exists"), AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    ],
)
def test_driver_errors_map_to_their_status(driver_error, ours, code) -> None:
    with pytest.raises(ours) as info, db.driver_errors(SETTINGS):
        raise driver_error
    assert info.value.__cause__ is driver_error
    assert status_for(info.value) == code
    assert status_for(driver_error) == grpc.StatusCode.INTERNAL  # what it was before


@pytest.mark.parametrize(
    "code",
    [
        "Neo.TransientError.General.MemoryPoolOutOfMemoryError",
        "Neo.TransientError.General.TransactionMemoryLimit",
        "Neo.ClientError.General.TransactionOutOfMemoryError",
    ],
)
def test_the_memory_guard_is_resource_exhausted_not_busy(code: str) -> None:
    error = Neo4jError._hydrate_neo4j(code=code, message="would use more than the limit 2.0 GiB")
    with pytest.raises(ResourceExhausted) as info, db.driver_errors(SETTINGS):
        raise error
    message = str(info.value)
    assert "busy" not in message and "db.memory.transaction.max" in message and code in message
    assert status_for(info.value) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_other_driver_errors_pass_unchanged() -> None:
    error = ClientError("a syntax error")
    with pytest.raises(ClientError) as info, db.driver_errors(SETTINGS):
        raise error
    assert info.value is error


@pytest.mark.neo4j
def test_constraint_violation_is_already_exists(graph) -> None:
    graph.ensure_schema("hub/schema")
    mid = f"errtest-{uuid.uuid4().hex[:8]}@1"

    def create(tx) -> None:
        tx.run("CREATE (:Model {id: $id})", id=mid).consume()

    try:
        graph.write_tx(create)
        with pytest.raises(AlreadyExists, match="already"):
            graph.write_tx(create)
    finally:
        graph.driver.execute_query("MATCH (m:Model {id: $id}) DELETE m", id=mid)


@pytest.mark.neo4j
def test_graph_call_past_its_timeout_is_deadline_exceeded(graph) -> None:
    with pytest.raises(DeadlineExceeded, match="timeout"), db.driver_errors(graph.settings):
        graph.driver.execute_query(
            db.neo4j.Query(
                "UNWIND range(1, 100000000) AS x UNWIND range(1, 100000000) AS y "
                "RETURN count(*) AS n",
                timeout=0.2,
            )
        )


HEAVY = "UNWIND range(1, 100000000) AS x UNWIND range(1, 100000000) AS y RETURN count(*) AS n"


@pytest.mark.neo4j
def test_graph_calls_end_by_the_request_deadline(graph) -> None:
    """mllgraph.graph.deadline: the time left becomes each transaction's timeout."""

    def heavy(tx) -> int:
        return tx.run(HEAVY).single()["n"]

    with deadline.within(0.3), pytest.raises(DeadlineExceeded):
        graph.read_tx(heavy)
    with deadline.within(-1.0), pytest.raises(DeadlineExceeded, match="deadline passed"):
        graph.read("graph/counts")
    with deadline.within(120.0):
        assert graph.read_tx(lambda tx: tx.run("RETURN 1 AS one").single()["one"]) == 1


def test_busy_graph_threads_are_waited_for_and_abandoned_ones_refuse_at_once() -> None:
    """A full graph pool of live calls is a busy database: the next call waits for a thread
    within its deadline. Once a call was given up on (its caller's deadline passed while the
    server held it), the database is not answering: the next call is refused at once."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    graph = db.Graph(Settings(neo4j_uri="bolt://127.0.0.1:1"))  # the driver connects lazily
    release = threading.Event()
    try:
        with ThreadPoolExecutor(db.GRAPH_WORKERS) as callers:
            busy = [
                callers.submit(graph._bounded, lambda: release.wait(30), 30.0)
                for _ in range(db.GRAPH_WORKERS)
            ]
            while graph._in_flight < db.GRAPH_WORKERS:
                time.sleep(0.01)
            # Busy, none abandoned: waits its whole (short) deadline, then says why.
            with pytest.raises(DeadlineExceeded, match="no graph thread"):
                graph._bounded(lambda: "late", 0.2)
            # A thread comes free within the deadline: the waiting call runs.
            waiting = callers.submit(graph._bounded, lambda: "served", 10.0)
            time.sleep(0.2)
            assert not waiting.done()
            release.set()
            assert waiting.result(timeout=10) == "served"
            assert all(f.result(timeout=10) is True for f in busy)

        stuck = threading.Event()
        with ThreadPoolExecutor(db.GRAPH_WORKERS) as callers:
            gave_up = [
                callers.submit(graph._bounded, lambda: stuck.wait(30), 0.1)
                for _ in range(db.GRAPH_WORKERS)
            ]
            for f in gave_up:
                with pytest.raises(DeadlineExceeded, match="did not answer"):
                    f.result(timeout=10)
            start = time.monotonic()
            with pytest.raises(Unavailable, match="past their deadline"):
                graph._bounded(lambda: "never", 30.0)
            assert time.monotonic() - start < 5  # refused, not queued for 30 s
            stuck.set()
        while graph._in_flight:  # the abandoned calls end once the server answers
            time.sleep(0.01)
        assert graph._abandoned == 0
        assert graph._bounded(lambda: "again", 5.0) == "again"
    finally:
        release.set()
        graph.close()


@pytest.mark.neo4j
def test_close_waits_for_a_call_its_caller_gave_up_on(neo4j_settings) -> None:
    """A caller gave up (deadline) on a call that still runs on a graph thread and will use
    the driver: close() lets it end before closing the driver under it (closing a connection
    another thread writes to broke the driver's buffers: BufferError at service shutdown
    after a frozen database resumed). A call that never ends is not waited for past the
    bound."""
    import threading
    import time

    graph = db.Graph(neo4j_settings)
    graph.verify()
    ended: dict[str, float] = {}

    def late_query() -> int:
        time.sleep(0.5)  # the server "resumes" after the caller has given up
        value = graph.driver.execute_query("RETURN 1 AS one").records[0]["one"]
        ended["call"] = time.monotonic()
        return int(value)

    with pytest.raises(DeadlineExceeded, match="did not answer"):
        graph._bounded(late_query, 0.1)
    graph.close()
    closed = time.monotonic()
    assert "call" in ended and ended["call"] <= closed  # it ran to the end, then the close

    stuck = threading.Event()
    hung = db.Graph(neo4j_settings)
    try:
        with pytest.raises(DeadlineExceeded):
            hung._bounded(lambda: stuck.wait(30), 0.1)
        start = time.monotonic()
        hung.close(wait_s=0.3)
        assert time.monotonic() - start < 5  # bounded: a server that never answers
    finally:
        stuck.set()


def test_long_computations_stop_at_the_request_deadline() -> None:
    """deadline.check: selection's pure steps stop once the caller's deadline has passed
    (no server needed), and never outside a request."""
    deadline.check("anything")  # no deadline: nothing happens
    with deadline.within(60.0):
        deadline.check("the stacked rule's fit")
    with deadline.within(-1.0), pytest.raises(DeadlineExceeded, match="during the stacked"):
        deadline.check("the stacked rule's fit")
