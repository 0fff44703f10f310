"""The project-managed Neo4j and the CLI's behaviour when Neo4j is missing or input is bad."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mllgraph.errors import FailedPrecondition, Unavailable
from mllgraph.graph import neo4j_server
from mllgraph.graph.db import Graph
from mllgraph.settings import LEGACY_NEO4J_PASSWORD, Settings, password_file

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mllgraph", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
        timeout=120,
    )


def test_unreachable_neo4j_is_one_clear_line() -> None:
    uri = f"bolt://127.0.0.1:{_free_port()}"
    out = _cli("sdag", "stats", NEO4J_URI=uri)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert uri in out.stderr and "cannot reach Neo4j" in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2  # rich may wrap the one line


def test_unreachable_local_server_says_how_to_start_it(tmp_path: Path) -> None:
    settings = replace(Settings.from_env(), neo4j_uri=None, home=tmp_path,
                       local_neo4j_port=_free_port())  # fmt: skip
    with Graph(settings) as graph, pytest.raises(Unavailable, match="mllgraph neo4j start"):
        graph.verify()


def test_start_refuses_when_uri_is_a_users_server() -> None:
    settings = replace(Settings.from_env(), neo4j_uri="bolt://example.invalid:7687")
    with pytest.raises(FailedPrecondition, match="NEO4J_URI is set"):
        neo4j_server.start(settings)


def _scratch(neo4j_settings: Settings, tmp_path: Path, **changes: object) -> Settings:
    if not neo4j_settings.uses_local_neo4j:
        pytest.skip("tests of the project-managed server need NEO4J_URI unset")
    from mllgraph.graph.neo4j_server import scratch_settings

    base = replace(neo4j_settings, **changes)
    return scratch_settings(base, tmp_path / "home", _free_port())


@pytest.mark.neo4j
def test_start_failure_prints_log_tail(neo4j_settings: Settings, tmp_path: Path) -> None:
    scratch = _scratch(neo4j_settings, tmp_path, local_neo4j_heap="not-a-size")
    with pytest.raises(Unavailable, match="(?s)exited during start-up.*Log tail"):
        neo4j_server.start(scratch, timeout=60)
    assert neo4j_server.running_pid(scratch) is None


@pytest.mark.neo4j
def test_start_status_stop_by_recorded_pid(neo4j_settings: Settings, tmp_path: Path) -> None:
    scratch = _scratch(neo4j_settings, tmp_path, local_neo4j_heap="256m",
                       local_neo4j_pagecache="64m")  # fmt: skip
    try:
        pid, _ = neo4j_server.start(scratch)
        status = neo4j_server.status(scratch)
        assert status["pid"] == pid and status["answers"] is True
        assert neo4j_server.start(scratch)[0] == pid  # already running: same server
    finally:
        assert neo4j_server.stop(scratch) is True
    assert neo4j_server.running_pid(scratch) is None
    assert neo4j_server.status(scratch)["answers"] is False
    assert neo4j_server.stop(scratch) is False


@pytest.mark.neo4j
def test_local_server_password_is_random_and_an_old_one_is_rotated(
    neo4j_settings: Settings, tmp_path: Path
) -> None:
    scratch = _scratch(neo4j_settings, tmp_path, local_neo4j_heap="256m",
                       local_neo4j_pagecache="64m", neo4j_password_given=None)  # fmt: skip
    file = password_file(scratch.neo4j_home)
    old = replace(scratch, neo4j_password_given=LEGACY_NEO4J_PASSWORD)
    try:  # a server first started before passwords were random
        neo4j_server.start(old)
    finally:
        neo4j_server.stop(old)
    assert not file.exists() and scratch.neo4j_password == LEGACY_NEO4J_PASSWORD
    try:
        neo4j_server.start(scratch)  # launched here: the old default is replaced
        assert file.exists() and (file.stat().st_mode & 0o777) == 0o600
        assert scratch.neo4j_password not in ("", LEGACY_NEO4J_PASSWORD)
        assert neo4j_server._try_connect(scratch) == "ok"
        assert neo4j_server._try_connect(old) == "auth"
    finally:
        neo4j_server.stop(scratch)


@pytest.mark.neo4j
def test_cli_names_an_unknown_concept(sdag_graph, neo4j_settings: Settings) -> None:
    env = {"NEO4J_URI": neo4j_settings.bolt_uri, "NEO4J_PASSWORD": neo4j_settings.neo4j_password}
    out = _cli("sdag", "ancestors", "n99999999", **env)
    assert out.returncode == 1 and "n99999999" in out.stderr and "Traceback" not in out.stderr
    out = _cli("sdag", "ancestors", "sandal.n.01", **env)
    assert out.returncode == 0 and "footwear.n.02" in out.stdout


def test_the_local_server_plans_a_query_once_whatever_its_list_sizes(tmp_path: Path) -> None:
    """The generated neo4j.conf turns Neo4j's parameter size hints off: with them, a read
    with a list of one concept and the same read with three were planned apart (~1.5 s each
    for the candidates query on the demo hub, paid by a request). Every server the suite
    starts reads this file, and Neo4j refuses a setting it does not know, so the server
    tests check that the name is still one this Neo4j has."""
    settings = replace(Settings.from_env(), home=tmp_path)
    lines = neo4j_server.write_config(settings).read_text().splitlines()
    assert "internal.cypher.use_parameter_size=false" in lines
