"""The project-managed Neo4j's password (issue 25): random per home, owner-only, never the
README's old default for a new server; NEO4J_PASSWORD wins; old databases keep working.

No server here: `tests/test_neo4j_server.py` starts one with a random password and rotates
an old one's.
"""

from __future__ import annotations

import logging
import stat
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from mllgraph import settings as settings_module
from mllgraph.settings import LEGACY_NEO4J_PASSWORD, Settings


def _local(home: Path, **changes: object) -> Settings:
    return replace(Settings(), home=home, neo4j_uri=None, **changes)


def test_a_new_local_server_gets_a_random_owner_only_password(tmp_path: Path) -> None:
    first = _local(tmp_path / "a")
    password = first.neo4j_password
    assert password != LEGACY_NEO4J_PASSWORD and len(password) >= 24
    file = tmp_path / "a" / "neo4j" / "password"
    assert file.read_text().strip() == password
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert first.neo4j_password == password  # kept, not made again
    assert _local(tmp_path / "a").neo4j_password == password  # another process, same home
    assert _local(tmp_path / "b").neo4j_password != password  # another home, another one


def test_the_environment_reads_the_same_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLLGRAPH_HOME", str(tmp_path))
    monkeypatch.delenv("NEO4J_URI", raising=False)
    monkeypatch.delenv("NEO4J_PASSWORD", raising=False)
    assert Settings.from_env().neo4j_password == _local(tmp_path).neo4j_password


def test_neo4j_password_wins_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLLGRAPH_HOME", str(tmp_path))
    monkeypatch.delenv("NEO4J_URI", raising=False)
    monkeypatch.setenv("NEO4J_PASSWORD", "chosen-by-me")
    assert Settings.from_env().neo4j_password == "chosen-by-me"
    assert not (tmp_path / "neo4j").exists()


def test_a_server_of_your_own_keeps_the_old_default(tmp_path: Path) -> None:
    own = replace(Settings(), home=tmp_path, neo4j_uri="bolt://db.example:7687")
    assert own.neo4j_password == LEGACY_NEO4J_PASSWORD
    assert not (tmp_path / "neo4j").exists()


def test_an_old_database_keeps_the_old_password_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "neo4j" / "data" / "databases").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="mllgraph.settings"):
        assert _local(tmp_path).neo4j_password == LEGACY_NEO4J_PASSWORD
        assert _local(tmp_path).neo4j_password == LEGACY_NEO4J_PASSWORD
    said = [r.getMessage() for r in caplog.records if "neo4j_legacy_password" in r.getMessage()]
    assert len(said) == 1 and "random one" in said[0]
    assert not (tmp_path / "neo4j" / "password").exists()


def test_a_readable_password_file_is_made_owner_only(tmp_path: Path) -> None:
    file = tmp_path / "neo4j" / "password"
    file.parent.mkdir(parents=True)
    file.write_text("s3cret-enough\n")
    file.chmod(0o644)
    assert _local(tmp_path).neo4j_password == "s3cret-enough"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600


def test_processes_racing_on_a_new_home_agree(tmp_path: Path) -> None:
    seen: list[str] = []
    barrier = threading.Barrier(8)

    def read() -> None:
        barrier.wait()
        seen.append(settings_module.local_password(tmp_path / "neo4j"))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1 and len(seen) == 8
    assert [p.name for p in (tmp_path / "neo4j").iterdir()] == ["password"]  # no leftovers
