"""The Neo4j driver's errors become the project's own (mllgraph.graph.db.translate), so the one
status map of services/common.py gives UNAVAILABLE / ALREADY_EXISTS / DEADLINE_EXCEEDED, not
INTERNAL (issue #12)."""

from __future__ import annotations

import uuid

import grpc
import pytest
from neo4j.exceptions import (
    ClientError,
    ConstraintError,
    DatabaseUnavailable,
    ServiceUnavailable,
    SessionExpired,
    TransientError,
)

from mllgraph.errors import AlreadyExists, DeadlineExceeded, Unavailable
from mllgraph.graph import db, deadline
from mllgraph.settings import Settings
from services.common import status_for

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
