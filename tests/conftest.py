"""Shared fixtures. Neo4j tests run against a real server, found in this order:
NEO4J_URI if set; a testcontainers Neo4j where a Docker engine answers; else the
project-managed local server (started here, and stopped again if we started it).
With CI=true a missing Neo4j fails the run; elsewhere those tests skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace

import pytest

from mllgraph.settings import Settings

NEO4J_IMAGE = "neo4j:5.26.30-community"


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def _unavailable(why: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and no Neo4j: {why}")
    pytest.skip(f"no Neo4j: {why}")


@pytest.fixture(scope="session")
def neo4j_settings() -> Iterator[Settings]:
    settings = Settings.from_env()
    if not settings.uses_local_neo4j:
        yield settings
        return
    if _docker_answers():
        from testcontainers.neo4j import Neo4jContainer

        with Neo4jContainer(NEO4J_IMAGE, password=settings.neo4j_password) as container:
            yield replace(settings, neo4j_uri=container.get_connection_url())
        return
    from mllgraph import neo4j_server
    from mllgraph.errors import MllgraphError

    was_running = neo4j_server.running_pid(settings) is not None
    try:
        neo4j_server.start(settings)
    except MllgraphError as e:
        _unavailable(str(e))
    yield settings
    if not was_running:
        neo4j_server.stop(settings)


@pytest.fixture(scope="session")
def graph(neo4j_settings: Settings) -> Iterator[object]:
    from mllgraph.db import Graph

    g = Graph(neo4j_settings)
    try:
        g.verify()
    except Exception as e:  # noqa: BLE001 — reported through the CI rule
        _unavailable(str(e))
    yield g
    g.close()


@pytest.fixture(scope="session")
def wordnet(neo4j_settings: Settings):  # -> WordNetNouns
    from mllgraph.wordnet import load_nouns

    return load_nouns(neo4j_settings.wordnet_dir)


@pytest.fixture(scope="session")
def sdag_graph(graph, wordnet):  # -> Graph with the full SDAG
    from mllgraph import sdag

    sdag.load(graph, wordnet)
    return graph
