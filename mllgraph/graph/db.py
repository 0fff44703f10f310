"""The thin, typed Neo4j access layer.

Statements come from `cypher/` by name (see `mllgraph.graph.cypher`); values are parameters. Reads
go through READ-routed managed transactions, writes through WRITE ones, so `mllgraph query`
can refuse writes even on Community edition (which has no read-only users).

A graph call made under a request deadline (`mllgraph.graph.deadline`) gets the time left as
its transaction timeout, which the server enforces, and is also *waited for* no longer than
that: the driver call runs on the Graph's own threads (GRAPH_WORKERS), and the caller gets
DeadlineExceeded when it has not answered in time, so a database that stops answering
altogether (frozen, a stalled network) cannot hold a service's request threads. While every
graph thread is busy, a further call waits for one within its deadline; when some of them
hold calls already given up on (the database is not answering), it fails at once with
Unavailable instead of queueing. `verify` is bounded the same way (VERIFY_TIMEOUT_S), so
health checks notice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any, TypeVar

import neo4j
from neo4j import GraphDatabase, ManagedTransaction, NotificationMinimumSeverity, RoutingControl
from neo4j.exceptions import (
    AuthError,
    ClientError,
    ConstraintError,
    DriverError,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
    TransientError,
)

from mllgraph.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from mllgraph.graph import cypher, deadline, user_query
from mllgraph.settings import Settings, password_file

T = TypeVar("T")
log = logging.getLogger(__name__)
Row = dict[str, Any]

GRAPH_WORKERS = 16  # driver calls under a deadline in flight at once, per Graph
# How long `close` waits for calls still running on the graph threads before it closes the
# driver under them (their server may not answer at all).
CLOSE_WAIT_S = 5.0
VERIFY_TIMEOUT_S = 10.0  # how long `verify` waits for the server


def _unreachable(settings: Settings, e: Exception) -> Unavailable:
    how = (
        "start the project-managed server with `mllgraph neo4j start`"
        if settings.uses_local_neo4j
        else "check that server, or unset NEO4J_URI to use the project-managed local Neo4j"
    )
    return Unavailable(f"cannot reach Neo4j at {settings.bolt_uri}: {how} ({e.__class__.__name__})")


def _timed_out(e: Neo4jError) -> bool:
    return "TransactionTimedOut" in (e.code or "") or "TransactionTimedOut" in (e.message or "")


# Neo4j's memory guards: one transaction over db.memory.transaction.max, all of them over
# dbms.memory.transaction.total.max (a TransientError, though retrying the same call fails
# the same way), the JVM itself out of heap. GQL statuses 51N72/51N73 name the first two.
_MEMORY_CODES = (
    "TransactionMemoryLimit",
    "TransactionOutOfMemoryError",
    "MemoryPoolOutOfMemoryError",
    "General.OutOfMemoryError",
)


def _out_of_memory(e: Neo4jError) -> bool:
    code = e.code or ""
    gql = str(getattr(e, "gql_status", "") or "")
    return any(c in code for c in _MEMORY_CODES) or gql in ("51N72", "51N73")


def _memory_exhausted(e: Neo4jError) -> ResourceExhausted:
    return ResourceExhausted(
        "Neo4j refused the graph call: it needs more memory than the server allows a "
        "transaction (db.memory.transaction.max, or all transactions together: "
        f"dbms.memory.transaction.total.max); ask for less at once ({e.message}; {e.code})"
    )


def translate(settings: Settings, e: Exception) -> Exception | None:
    """The project's own error for a driver error, or None to let it pass unchanged:
    unreachable server, lost connection and transient errors (deadlocks, a database still
    starting; managed transactions have retried them already) -> Unavailable; a call over
    Neo4j's memory guard -> ResourceExhausted; a constraint violation -> AlreadyExists; a
    transaction past its timeout -> DeadlineExceeded."""
    if isinstance(e, ServiceUnavailable):
        return _unreachable(settings, e)
    if isinstance(e, SessionExpired):
        return Unavailable(
            f"the connection to Neo4j at {settings.bolt_uri} was lost: try again ({e})"
        )
    if isinstance(e, Neo4jError) and _out_of_memory(e):
        return _memory_exhausted(e)
    if isinstance(e, TransientError):
        return Unavailable(f"Neo4j is busy or recovering, try again: {e.message} ({e.code})")
    if isinstance(e, ConstraintError):
        return AlreadyExists(f"the graph already holds this: {e.message}")
    if isinstance(e, Neo4jError) and _timed_out(e):
        return DeadlineExceeded(f"a graph call ran past its timeout: {e.message}")
    return None


@contextmanager
def driver_errors(settings: Settings) -> Iterator[None]:
    """Raise `translate`'s error for a driver error, so the one status map
    (services/common.py) applies; anything else passes through unchanged."""
    try:
        yield
    except (DriverError, Neo4jError) as e:
        mapped = translate(settings, e)
        if mapped is None:
            raise
        raise mapped from e


class Graph:
    """One driver for one database; use as a context manager or call `close()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = settings.neo4j_database
        self._schemas: set[str] = set()
        self.driver = GraphDatabase.driver(
            settings.bolt_uri,
            auth=(settings.neo4j_user, settings.neo4j_password),
            connection_timeout=5,
            max_transaction_retry_time=5,
            # Schema-less warnings ("IS_A does not exist yet") are noise on a fresh database.
            notifications_min_severity=NotificationMinimumSeverity.OFF,
        )
        self._pool: ThreadPoolExecutor | None = None
        self._slots = threading.Condition()
        self._in_flight = 0  # calls holding a graph thread
        self._running = 0  # of those, calls a graph thread is running now (`close` waits)
        self._abandoned = 0  # of those, calls whose caller gave up (past its deadline)

    def __enter__(self) -> Graph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Close the driver. Calls still running on the graph threads (their callers may have
        given up on a server that did not answer) hold its connections, and closing a
        connection another thread is writing to breaks the driver's buffers (BufferError): they
        get `wait_s` seconds to end first. A server that still does not answer is not waited
        for longer; closing under its calls is then logged, not raised (we are shutting down)."""
        running = 0
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            end = time.monotonic() + wait_s
            with self._slots:
                while self._running and (left := end - time.monotonic()) > 0:
                    self._slots.wait(min(left, 0.1))  # notify() may wake a caller instead
                running = self._running
        try:
            self.driver.close()
        except Exception as e:  # under a live call the driver's state is undefined
            if not running:
                raise
            log.warning(
                "neo4j_close_under_running_calls uri=%s running=%d error=%r",
                self.settings.bolt_uri, running, e,
            )  # fmt: skip

    def _bounded(self, call: Callable[[], T], wait_s: float) -> T:
        """`call()` on the graph threads, waited for at most `wait_s` seconds.

        With every graph thread busy, a call waits for one within its deadline, unless some of
        them hold calls their callers already gave up on: then the server is not answering and
        waiting would only queue behind it, so the call is refused at once (Unavailable)."""
        start = time.monotonic()
        with self._slots:
            while self._in_flight >= GRAPH_WORKERS:
                left = wait_s - (time.monotonic() - start)
                if self._abandoned:
                    raise Unavailable(
                        f"Neo4j at {self.settings.bolt_uri} is not answering: "
                        f"{self._abandoned} graph calls are still waiting for it past their "
                        "deadline; try again later"
                    )
                if left <= 0 or not self._slots.wait(left):
                    raise DeadlineExceeded(
                        f"no graph thread for Neo4j at {self.settings.bolt_uri} came free "
                        f"within {wait_s:.1f} s (the request's deadline): {self._in_flight} "
                        "graph calls are in flight"
                    )
            if self._pool is None:
                self._pool = ThreadPoolExecutor(GRAPH_WORKERS, thread_name_prefix="graph-call")
            self._in_flight += 1
        state = {"released": False, "abandoned": False}  # both guarded by self._slots

        def run() -> T:
            with self._slots:
                self._running += 1
            try:
                return call()
            finally:
                with self._slots:
                    state["released"] = True
                    self._running -= 1
                    self._in_flight -= 1
                    if state["abandoned"]:
                        self._abandoned -= 1
                    self._slots.notify()

        try:
            future = self._pool.submit(run)
        except BaseException:
            with self._slots:
                self._in_flight -= 1
                self._slots.notify()
            raise
        try:
            return future.result(timeout=max(0.0, wait_s - (time.monotonic() - start)))
        except FutureTimeout:
            with self._slots:
                # Not running yet: cancelled here, and `run` never releases the slot.
                if future.cancel():
                    self._in_flight -= 1
                    self._slots.notify()
                elif not state["released"]:
                    state["abandoned"] = True
                    self._abandoned += 1
                    self._slots.notify_all()  # callers waiting for a thread now refuse
            raise DeadlineExceeded(
                f"Neo4j at {self.settings.bolt_uri} did not answer within {wait_s:.1f} s "
                "(the request's deadline)"
            ) from None

    def ensure_schema(self, name: str) -> None:
        """Run a schema file's `IF NOT EXISTS` statements once per Graph: callers on hot paths
        (every SelectHeads, every registration) then cost no extra round trips."""
        if name in self._schemas:
            return

        def create() -> None:
            for statement in cypher.statements(name):
                self.driver.execute_query(statement, database_=self.database)

        self._call(create, self._timeout())
        self._schemas.add(name)

    def verify(self, timeout_s: float = VERIFY_TIMEOUT_S) -> None:
        """Fail fast, with one clear line, if the server is unreachable, refuses us or does
        not answer within `timeout_s` (Unavailable)."""

        def ping() -> None:
            with self.driver.session(database=self.database) as session:
                session.run("RETURN 1").consume()

        try:
            self._bounded(ping, timeout_s)
        except DeadlineExceeded as e:
            raise Unavailable(str(e)) from e
        except (ServiceUnavailable, SessionExpired, OSError) as e:
            raise _unreachable(self.settings, e) from e
        except AuthError as e:
            where = "NEO4J_USER / NEO4J_PASSWORD"
            if self.settings.uses_local_neo4j and self.settings.neo4j_password_given is None:
                where += f" (unset: the password in {password_file(self.settings.neo4j_home)})"
            raise FailedPrecondition(
                f"Neo4j at {self.settings.bolt_uri} refused user {self.settings.neo4j_user!r}: "
                f"check {where}"
            ) from e
        except ClientError as e:
            if "DatabaseNotFound" in (e.code or ""):
                raise FailedPrecondition(
                    f"Neo4j at {self.settings.bolt_uri} has no database {self.database!r} "
                    "(NEO4J_DATABASE)"
                ) from e
            raise

    # -- named statements ------------------------------------------------------------------

    def read(self, name: str, /, **params: Any) -> list[Row]:
        return self._execute(cypher.load(name), params, RoutingControl.READ)

    def write(self, name: str, /, **params: Any) -> list[Row]:
        return self._execute(cypher.load(name), params, RoutingControl.WRITE)

    def _timeout(self) -> float | None:
        """The transaction timeout of a graph call: the time left before the deadline of the
        request being served (`mllgraph.graph.deadline`), None outside one (the server's
        db.transaction.timeout still applies)."""
        left = deadline.remaining()
        if left is not None and left <= 0:
            raise DeadlineExceeded("the request's deadline passed before its graph call")
        return left

    def _call(self, call: Callable[[], T], timeout: float | None) -> T:
        """A driver call: directly without a deadline, else bounded by it (`_bounded`)."""
        with driver_errors(self.settings):
            return call() if timeout is None else self._bounded(call, timeout)

    def _execute(self, text: str, params: dict[str, Any], routing: RoutingControl) -> list[Row]:
        timeout = self._timeout()
        query = text if timeout is None else neo4j.Query(text, timeout=timeout)

        def call() -> list[Row]:
            records, _, _ = self.driver.execute_query(
                query, params, database_=self.database, routing_=routing
            )
            return [r.data() for r in records]

        return self._call(call, timeout)

    def _timed(self, work: Callable[[ManagedTransaction], T]) -> Callable[[ManagedTransaction], T]:
        timeout = self._timeout()
        return work if timeout is None else neo4j.unit_of_work(timeout=timeout)(work)

    def write_tx(self, work: Callable[[ManagedTransaction], T]) -> T:
        """Run several statements in one managed write transaction (all or nothing)."""
        return self._in_session(work, write=True)

    def read_tx(self, work: Callable[[ManagedTransaction], T]) -> T:
        return self._in_session(work, write=False)

    def _in_session(self, work: Callable[[ManagedTransaction], T], *, write: bool) -> T:
        timeout = self._timeout()
        timed = self._timed(work)

        def call() -> T:
            with self.driver.session(database=self.database) as session:
                return (session.execute_write if write else session.execute_read)(timed)

        return self._call(call, timeout)

    def run_user_query(
        self,
        text: str,
        params: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
        max_rows: int | None = None,
    ) -> Rows:
        """Any Cypher text from a person, in a READ transaction: writes are refused, and so is
        anything that reaches outside the graph (`mllgraph.graph.user_query.check`), before
        the text is sent. Runs for at most `timeout_s` (MLLGRAPH_QUERY_TIMEOUT_S) and fetches
        at most `max_rows` (MLLGRAPH_QUERY_MAX_ROWS): more rows are not fetched and the
        result says `truncated`."""
        user_query.check(text)
        timeout_s = self.settings.query_timeout_s if timeout_s is None else timeout_s
        max_rows = self.settings.query_max_rows if max_rows is None else max_rows
        if not timeout_s > 0 or max_rows < 1:  # Neo4j reads a timeout of 0 as "none"
            raise InvalidArgument(
                f"a user query needs a timeout > 0 s and a row cap >= 1 "
                f"(got {timeout_s} s, {max_rows} rows)"
            )
        rows = Rows()
        try:
            with (
                self.driver.session(
                    database=self.database, default_access_mode=neo4j.READ_ACCESS
                ) as session,
                session.begin_transaction(timeout=timeout_s) as tx,
            ):
                # Nothing to commit (a read): leaving the block rolls back, which also stops
                # the server producing rows past the cap.
                for record in tx.run(text, params or {}):
                    if len(rows) >= max_rows:
                        rows.truncated = True
                        break
                    rows.append(record.data())
        except (ServiceUnavailable, SessionExpired, TransientError) as e:
            raise translate(self.settings, e) or e from e
        except Neo4jError as e:
            if _out_of_memory(e):
                raise _memory_exhausted(e) from e
            code = e.code or ""
            if "WriteOnReadOnlyAccess" in code or "AccessMode" in code:
                raise InvalidArgument(
                    "this query writes to the graph; `mllgraph query` runs reads only"
                ) from e
            if _timed_out(e):
                raise DeadlineExceeded(
                    f"the query ran past its {timeout_s:g} s timeout and was stopped "
                    "(MLLGRAPH_QUERY_TIMEOUT_S)"
                ) from e
            raise InvalidArgument(f"Cypher error: {e.message} ({e.code})") from e
        return rows


class Rows(list[Row]):
    """The rows of a user query; `truncated` is True when the row cap cut the result."""

    truncated: bool = False


def run(tx: ManagedTransaction, name: str, /, **params: Any) -> list[Row]:
    """A named statement inside a managed transaction."""
    return [r.data() for r in tx.run(cypher.load(name), params)]


@contextmanager
def connect(settings: Settings | None = None, *, start_local: bool = True) -> Iterator[Graph]:
    """A verified Graph. With NEO4J_URI unset, uses (and if needed starts) the local server."""
    settings = settings or Settings.from_env()
    if settings.uses_local_neo4j and start_local:
        from mllgraph.graph import neo4j_server

        neo4j_server.start(settings)
    graph = Graph(settings)
    try:
        graph.verify()
        yield graph
    finally:
        graph.close()
