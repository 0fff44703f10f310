"""`mllgraph bench sdag`: load the SDAG into a scratch Neo4j; hierarchy query latency."""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from mllgraph.eval.bench.common import percentiles
from mllgraph.graph.neo4j_server import scratch_settings
from mllgraph.settings import Settings


def bench_sdag(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Load time into an empty database, and ancestor / descendant query latency."""
    import shutil

    from mllgraph.graph import db, neo4j_server, sdag
    from mllgraph.graph.wordnet import load_nouns

    scratch = scratch_settings(
        settings, settings.home / "scratch" / "sdag", settings.local_neo4j_port + 100
    )
    neo4j_server.stop(scratch)
    shutil.rmtree(neo4j_server.paths(scratch).data, ignore_errors=True)
    _, start_s = neo4j_server.start(scratch)
    try:
        t = time.monotonic()
        wn = load_nouns(settings.wordnet_dir)
        parse_s = time.monotonic() - t
        with db.connect(scratch) as graph:
            report = sdag.load(graph, wn)
            rng = random.Random(args.seed)
            wnids = rng.sample(sorted(wn.synsets), args.queries)
            for w in wnids[:50]:  # warm the query plans and page cache
                graph.read("graph/ancestors", wnid=w)
                graph.read("graph/descendant_count", wnid=w)
            anc, desc = [], []
            for w in wnids:
                t = time.perf_counter()
                graph.read("graph/ancestors", wnid=w)
                anc.append(time.perf_counter() - t)
                t = time.perf_counter()
                graph.read("graph/descendant_count", wnid=w)
                desc.append(time.perf_counter() - t)
            animal = "n00015388"
            big_count, big_list = [], []
            n_animal = graph.read("graph/descendant_count", wnid=animal)[0]["descendants"]
            for _ in range(30):
                t = time.perf_counter()
                graph.read("graph/descendant_count", wnid=animal)
                big_count.append(time.perf_counter() - t)
                t = time.perf_counter()
                graph.read("graph/descendants", wnid=animal, limit=100_000)
                big_list.append(time.perf_counter() - t)
    finally:
        neo4j_server.stop(scratch)
    figures = {
        "neo4j_version": neo4j_server.NEO4J_VERSION,
        "neo4j_start_s": round(start_s, 2),
        "wordnet_parse_s": round(parse_s, 2),
        "load_s": round(report.seconds, 2),
        "concepts": report.concepts,
        "is_a": report.is_a,
        "lemmas": report.lemmas,
        "ancestors": percentiles(anc),
        "descendant_count": percentiles(desc),
        "animal_subtree": {
            "descendants": n_animal,
            "count": percentiles(big_count),
            "list_all": percentiles(big_list),
        },
        "goals": {"load_s": 30, "ancestors_p95_ms": 10},
    }
    return figures
