"""The `neo4j://` (routing) scheme against a single server: the scheme a cluster or Aura
uses works unchanged with the local server (reads go through READ routing)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mllgraph.graph.db import Graph
from mllgraph.settings import Settings

pytestmark = pytest.mark.neo4j


def _routed(settings: Settings) -> Settings:
    host_port = settings.bolt_uri.split("://", 1)[1]
    # The same server under another scheme: its password goes along (a NEO4J_URI without
    # NEO4J_PASSWORD would mean a server of one's own, with the old default password).
    return replace(
        settings,
        neo4j_uri=f"neo4j://{host_port}",
        neo4j_password_given=settings.neo4j_password,
    )


def test_neo4j_scheme_reads_and_writes_on_a_single_server(sdag_graph) -> None:
    settings = _routed(sdag_graph.settings)
    assert settings.bolt_uri.startswith("neo4j://")
    with Graph(settings) as routed:
        routed.verify()
        direct = sdag_graph.read("graph/counts")
        assert routed.read("graph/counts") == direct
        assert direct[0]["concepts"] >= 82_115


def test_user_query_on_routed_driver_is_read_only(sdag_graph) -> None:
    from mllgraph.errors import InvalidArgument

    with Graph(_routed(sdag_graph.settings)) as routed:
        rows = routed.run_user_query(
            "MATCH (c:Concept {wnid: $w}) RETURN c.name AS name", {"w": "n04133789"}
        )
        assert rows == [{"name": "sandal.n.01"}]
        with pytest.raises(InvalidArgument):
            routed.run_user_query("CREATE (:Scratch {x: 1})")
