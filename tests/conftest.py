"""Shared fixtures. The suite never touches the user's own data: at import, before any test
reads the environment, it gets a fresh home (models, probes, plans, Neo4j data) in a temporary
folder and a free Bolt port, and `NEO4J_URI` is dropped so a user's own database is never
written. Neo4j tests run against a real server, found in this order:
MLLGRAPH_TEST_NEO4J_URI if set (a server you dedicate to tests; the suite writes to it); a
testcontainers Neo4j where a Docker engine answers; else a project-managed server in the test
home (sharing the fetched jars), started here and stopped at the end.
With CI=true a missing Neo4j fails the run; elsewhere those tests skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from mllgraph.settings import Settings
from tests.helpers import two_expert_hub

# The user's settings (for the cached Neo4j jars only), then the test run's own environment.
USER_SETTINGS = replace(Settings.from_env(), neo4j_uri=None)
TEST_HOME = Path(tempfile.mkdtemp(prefix="mllgraph-test-"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _isolate_environment() -> None:
    for var in ("NEO4J_URI", "MLLGRAPH_MODEL_STORE", "MLLGRAPH_PROBE_STORE"):
        os.environ.pop(var, None)
    if os.environ.get("MLLGRAPH_TEST_NEO4J_URI"):
        os.environ["NEO4J_URI"] = os.environ["MLLGRAPH_TEST_NEO4J_URI"]
    os.environ["MLLGRAPH_HOME"] = str(TEST_HOME)
    os.environ["MLLGRAPH_NEO4J_PORT"] = str(_free_port())


_isolate_environment()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(TEST_HOME, ignore_errors=True)


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
def emoji_cache() -> Path:
    """The installed emoji packages (`mllgraph hub emoji fetch`); a failure under CI=true."""
    from mllgraph.hubs.emoji import install

    cache = Settings.from_env().emoji_cache
    absent = install.missing(cache)
    if absent:
        why = f"emoji packages {absent} not installed in {cache} (run `mllgraph hub emoji fetch`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {why}")
        pytest.skip(why)
    return cache


@pytest.fixture(scope="session")
def neo4j_settings() -> Iterator[Settings]:
    settings = Settings.from_env()
    if not settings.uses_local_neo4j:
        yield settings
        return
    if _docker_answers():
        from testcontainers.neo4j import Neo4jContainer

        password = settings.neo4j_password
        with Neo4jContainer(NEO4J_IMAGE, password=password) as container:
            uri = container.get_connection_url()
            yield replace(settings, neo4j_uri=uri, neo4j_password_given=password)
        return
    from mllgraph.errors import MllgraphError
    from mllgraph.graph import neo4j_server

    try:
        settings = neo4j_server.scratch_settings(
            USER_SETTINGS, settings.home, settings.local_neo4j_port
        )
        neo4j_server.start(settings)
    except MllgraphError as e:
        _unavailable(str(e))
    yield settings
    neo4j_server.stop(settings)


@pytest.fixture(scope="session")
def graph(neo4j_settings: Settings) -> Iterator[object]:
    from mllgraph.graph.db import Graph

    g = Graph(neo4j_settings)
    try:
        g.verify()
    except Exception as e:  # noqa: BLE001 — reported through the CI rule
        _unavailable(str(e))
    yield g
    g.close()


@pytest.fixture(scope="session")
def wordnet(neo4j_settings: Settings):  # -> WordNetNouns
    from mllgraph.graph.wordnet import load_nouns

    return load_nouns(neo4j_settings.wordnet_dir)


@pytest.fixture(scope="session")
def sdag_graph(graph, wordnet):  # -> Graph with the full SDAG
    from mllgraph.graph import sdag

    sdag.load(graph, wordnet)
    return graph


@pytest.fixture
def cleanup(sdag_graph, neo4j_settings) -> Iterator[list[str]]:
    """Model ids to delete after the test, whatever happened to them."""
    import contextlib

    from mllgraph.errors import NotFound
    from mllgraph.hub import registry

    ids: list[str] = []
    yield ids
    for mid in ids:
        with contextlib.suppress(NotFound):
            registry.delete_model(sdag_graph, neo4j_settings, mid)


# The two-expert Fashion hub behind the three running services, shared by the client, the
# classify command and the web page (tests/test_client.py, tests/test_web.py).
@pytest.fixture(scope="module")
def fashion_services(sdag_graph, neo4j_settings, tmp_path_factory):
    """Two quickly trained Fashion experts (sandal/sneaker/boot, trouser/bag/dress), labelled
    on small probe sets, served by the real ingestion, selection and inference services.
    Module-scoped: its models and probe sets would change what other modules' hubs select,
    so they are removed when the module that uses them ends.
    Yields a dict: settings, graph, models, addresses (name -> host:port), x_test, y_test."""
    import uuid

    from mllgraph.eval.grpc_pipeline import Services
    from mllgraph.hubs.fashion import data as fashion

    graph = sdag_graph
    settings = replace(neo4j_settings, device="cpu")
    uid = uuid.uuid4().hex[:8]
    tmp = tmp_path_factory.mktemp("fashion-hub")
    x_test, y_test = fashion.load_split("test", settings.fashion_mnist_dir)
    with (
        two_expert_hub(graph, settings, tmp, f"fashionhub-{uid}") as models,
        Services(settings) as services,
    ):
        yield {
            "settings": settings,
            "graph": graph,
            "models": models,
            "addresses": {n: services.address(n) for n in services.ports},
            "x_test": x_test,
            "y_test": y_test,
            "tmp": tmp,
        }
