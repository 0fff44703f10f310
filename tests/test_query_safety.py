"""`mllgraph query` is locked down (issue #12): what reaches outside the graph is refused
before the text is sent, the query runs with a timeout and a row cap, and the project-managed
server's own configuration refuses file/URL imports even when a query gets past the check."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from neo4j.exceptions import ClientError

from mllgraph import cli
from mllgraph.errors import DeadlineExceeded, InvalidArgument
from mllgraph.graph import cypher, user_query
from mllgraph.settings import Settings

SHADOW = "LOAD CSV FROM 'file:///etc/shadow' AS row FIELDTERMINATOR ':' RETURN count(row)"


# --- the check, pure --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (SHADOW, "LOAD CSV"),
        ("load   csv with headers from 'http://example.com/x' as r return r", "LOAD CSV"),
        ("LOAD/* hidden */CSV FROM 'file:///etc/passwd' AS r RETURN r", "LOAD CSV"),
        ("MATCH (n) WITH n LIMIT 1 LOAD CSV FROM $url AS r RETURN r", "LOAD CSV"),
        ("CALL dbms.listConfig() YIELD name RETURN name", "CALL dbms.listConfig"),
        ("CALL `dbms`.`listConfig`()", "CALL dbms.listConfig"),
        ("call dbms . components()", "CALL dbms.components"),
        ("CALL db.ping()", "CALL db.ping"),
        ("CALL db.index.fulltext.queryNodes('x', 'y')", "CALL db.index.fulltext.queryNodes"),
        ("CALL apoc.load.json('file:///etc/passwd')", "CALL apoc.load.json"),
        ("RETURN apoc.text.join(['a'], ',') AS x", "apoc.text.join"),
        ("RETURN dbms.something() AS x", "dbms.something"),
        ("SHOW USERS", "SHOW USERS"),
        ("SHOW SETTINGS YIELD name RETURN name", "SHOW SETTINGS"),
        ("SHOW TRANSACTIONS", "SHOW TRANSACTIONS"),
        ("show all transactions", "SHOW ALL TRANSACTIONS"),
        ("SHOW CURRENT USER", "SHOW CURRENT"),
        ("TERMINATE TRANSACTIONS 'neo4j-transaction-1'", "TERMINATE"),
        ("GRANT ROLE admin TO bob", "GRANT"),
        ("ALTER CURRENT USER SET PASSWORD FROM 'a' TO 'b'", "ALTER"),
        ("USE system MATCH (n) RETURN n", "USE system"),
    ],
)
def test_refused_before_the_server_with_the_clause_named(text: str, named: str) -> None:
    with pytest.raises(InvalidArgument, match="refused") as info:
        user_query.check(text)
    assert named in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "MATCH (c:Concept {name: 'load csv'}) RETURN c",
        'MATCH (c:Concept) WHERE c.definition CONTAINS "CALL dbms.listConfig" RETURN c',
        "// LOAD CSV in a comment\nMATCH (m:Model) RETURN m.id /* SHOW USERS */",
        "CALL db.labels() YIELD label RETURN label",
        "CALL db.schema.visualization()",
        "CALL () { MATCH (c:Concept) RETURN count(c) AS n } RETURN n",
        "MATCH (c) CALL (c) { RETURN c.name AS name } RETURN name",
        "SHOW INDEXES YIELD name RETURN name",
        "SHOW ALL CONSTRAINTS",
        "MATCH (m:Model) RETURN m.show, m.use, m.load",
        "RETURN $dbms AS x",
    ],
)
def test_ordinary_reads_pass_the_check(text: str) -> None:
    user_query.check(text)


def test_every_cookbook_query_passes_the_check() -> None:
    names = cypher.names("cookbook/")
    assert names
    for name in names:
        user_query.check(cypher.load(name))


def test_oversized_query_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="characters"):
        user_query.check("RETURN 1 " + " " * user_query.MAX_QUERY_CHARS)


# --- against the real server -------------------------------------------------------------


@pytest.mark.neo4j
def test_the_issues_load_csv_is_refused(graph) -> None:
    with pytest.raises(InvalidArgument, match="LOAD CSV is refused"):
        graph.run_user_query(SHADOW)


@pytest.mark.neo4j
def test_dbms_procedures_and_admin_commands_are_refused(graph) -> None:
    for text in ("CALL dbms.listConfig()", "SHOW USERS", "TERMINATE TRANSACTIONS 'x'"):
        with pytest.raises(InvalidArgument, match="refused"):
            graph.run_user_query(text)


def _seconds(duration: str) -> float:
    """Neo4j's rendering of a duration ("1m", "30s", "1h30m", "500ms") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


@pytest.mark.neo4j
def test_local_server_refuses_file_and_url_imports_itself(graph, neo4j_settings) -> None:
    """Past the check (the raw driver), the generated neo4j.conf still refuses."""
    if not neo4j_settings.uses_local_neo4j:
        pytest.skip("the generated neo4j.conf applies to the project-managed server only")
    for url, why in (
        ("file:///etc/passwd", "allow_csv_import_from_file_urls"),
        ("http://127.0.0.1:9/x.csv", "blocked"),
    ):
        with pytest.raises(ClientError, match=why):
            graph.driver.execute_query(f"LOAD CSV FROM '{url}' AS r RETURN count(r)")
    records, _, _ = graph.driver.execute_query(
        "CALL dbms.listConfig() YIELD name, value "
        "WHERE name IN ['db.transaction.timeout', 'server.directories.import'] "
        "RETURN name, value"
    )
    config = {r["name"]: r["value"] for r in records}
    assert _seconds(config["db.transaction.timeout"]) == neo4j_settings.neo4j_transaction_timeout_s
    assert config["server.directories.import"].startswith(str(neo4j_settings.neo4j_home))


@pytest.mark.neo4j
def test_cartesian_product_times_out_with_a_clear_error(sdag_graph) -> None:
    text = "MATCH (a:Concept), (b:Concept) WHERE a.depth + b.depth > 1000 RETURN count(*) AS n"
    with pytest.raises(DeadlineExceeded, match=r"0\.2 s timeout"):
        sdag_graph.run_user_query(text, timeout_s=0.2)


@pytest.mark.neo4j
def test_row_cap_stops_fetching_and_says_so(graph) -> None:
    rows = graph.run_user_query("UNWIND range(1, 100000000) AS x RETURN x", max_rows=7)
    assert [r["x"] for r in rows] == list(range(1, 8))
    assert rows.truncated
    rows = graph.run_user_query("UNWIND range(1, 7) AS x RETURN x", max_rows=7)
    assert len(rows) == 7 and not rows.truncated


@pytest.mark.neo4j
def test_a_timeout_of_zero_is_refused(graph) -> None:
    """Neo4j reads a zero timeout as "none": never sent."""
    with pytest.raises(InvalidArgument, match="timeout"):
        graph.run_user_query("RETURN 1", timeout_s=0)


@pytest.mark.neo4j
def test_writes_still_refused_and_reads_still_work(graph) -> None:
    with pytest.raises(InvalidArgument, match="reads only"):
        graph.run_user_query("CREATE (n:Oops) RETURN n")
    rows = graph.run_user_query("MATCH (n:Oops) RETURN count(n) AS n")
    assert rows == [{"n": 0}] and not rows.truncated
    assert graph.run_user_query("CALL db.labels() YIELD label RETURN count(label) AS n")


@pytest.mark.neo4j
def test_cli_query_refuses_and_truncates(graph, neo4j_settings: Settings, capsys) -> None:
    assert Settings.from_env().bolt_uri == neo4j_settings.bolt_uri  # the suite's own server
    assert cli.main(["query", SHADOW]) == 1
    assert "LOAD CSV is refused" in capsys.readouterr().err
    text = "UNWIND range(1, 50) AS x RETURN x"
    assert cli.main(["query", text, "--max-rows", "5", "--json"]) == 0
    out = capsys.readouterr()
    assert [r["x"] for r in json.loads(out.out)] == [1, 2, 3, 4, 5]
    assert "truncated" in out.err


@pytest.mark.neo4j
def test_cli_query_ends_at_the_first_ctrl_c(
    graph, neo4j_settings: Settings, tmp_path: Path
) -> None:
    """One Ctrl-C ends `mllgraph query` at once, while its query is still running (the
    driver's clean-up had waited for the query: the first Ctrl-C seemed ignored)."""
    import signal
    import subprocess
    import sys
    import time

    slow = "UNWIND range(1, 2000000000) AS x WITH x WHERE x = -7 RETURN x"
    # Its output goes to a file, not a pipe, and the test waits for the CLI process itself:
    # a process the CLI may have started (e.g. a local Neo4j it tried to start while the
    # suite's server was slow to answer) would hold a pipe open long after the CLI exited.
    log = tmp_path / "query.err"
    with log.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mllgraph", "query", slow, "--timeout", "120"],
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.DEVNULL,
            stderr=err_file,
            text=True,
            # A suite started in the background by a non-interactive shell (`pytest &`)
            # inherits SIGINT ignored, and so would the CLI: give it the default a terminal
            # gives, or the Ctrl-C below never reaches it.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        # Wait until the server runs it (a test-only admin query, not a user's).
        for _ in range(600):
            running, _, _ = graph.driver.execute_query(
                "SHOW TRANSACTIONS YIELD currentQuery "
                "WHERE currentQuery STARTS WITH 'UNWIND range(1, 2000000000)' "
                "RETURN count(*) AS n",
                database_=neo4j_settings.neo4j_database,
            )
            if running[0]["n"] or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None and running[0]["n"], log.read_text()
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        err = log.read_text()
        assert time.monotonic() - start < 3.0, err
        assert proc.returncode == 130 and "interrupted" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
