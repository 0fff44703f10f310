"""`mllgraph bench ingest`: catalogue writes (heads/s) and cookbook query latency at scale."""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from mllgraph.eval.bench.common import percentiles
from mllgraph.eval.bench.synthetic_hub import (
    SyntheticHub,
)
from mllgraph.graph.neo4j_server import scratch_settings
from mllgraph.settings import Settings


def bench_ingest(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Catalogue scale: synthetic models (100 heads each, labelled on Zipf-skewed WordNet
    concepts, as `SyntheticHub` writes them) into a scratch Neo4j with the full SDAG, in
    UNWIND batches; heads/s, then the latency of cookbook queries at that size."""
    import shutil

    from mllgraph.graph import cypher, db, neo4j_server, sdag
    from mllgraph.graph.wordnet import load_nouns
    from mllgraph.hub import registry

    n_models = int(getattr(args, "models", None) or 1000)
    home = settings.home / "scratch" / "ingest"
    scratch = scratch_settings(settings, home, settings.local_neo4j_port + 300)
    neo4j_server.stop(scratch)
    shutil.rmtree(neo4j_server.paths(scratch).data, ignore_errors=True)
    neo4j_server.start(scratch)
    try:
        wn = load_nouns(settings.wordnet_dir)
        with db.connect(scratch) as graph:
            sdag.load(graph, wn)
            registry.ensure_schema(graph)
            hub = SyntheticHub(graph, scratch, wn, args.seed, heads=(100, 100))
            t = time.perf_counter()
            build = hub.grow(n_models, batch=100)
            wall = time.perf_counter() - t
            counts = graph.read("eval/head_and_label_counts")[0]
            rng = random.Random(args.seed)
            popular = [str(c) for c in hub.pool[:50]]
            queries = {
                "best_heads_for_concept": lambda: {"wnid": rng.choice(popular), "limit": 10},
                "heads_covering_subtree": lambda: {
                    "wnid": rng.choice(popular),
                    "min_score": 0.3,
                    "limit": 25,
                },
                "model_coverage": lambda: {"model_id": rng.choice(hub.models)},
                "models_for_concepts": lambda: {"wnids": rng.sample(popular, 5), "min_score": 0.3},
                "hub_coverage_at_quality": lambda: {"min_score": 0.5},
            }
            latency = {}
            for name, params in queries.items():
                text = cypher.load(f"cookbook/{name}")
                graph.run_user_query(text, params())  # plan cache warm-up
                samples = []
                for _ in range(int(getattr(args, "requests", None) or 30)):
                    p = params()
                    t = time.perf_counter()
                    graph.run_user_query(text, p)
                    samples.append(time.perf_counter() - t)
                latency[name] = percentiles(samples)
    finally:
        neo4j_server.stop(scratch)
    heads = counts["heads"]
    return {
        "models": n_models,
        "heads": heads,
        "label_edges": counts["labels"],
        "write_s": build["graph_s"],
        "heads_per_s": round(heads / build["graph_s"], 1) if build["graph_s"] else None,
        "label_edges_per_s": round(counts["labels"] / build["graph_s"], 1),
        "wall_s_incl_row_generation": round(wall, 1),
        "cookbook_latency": latency,
        "goals": {"heads_per_s": 10_000, "cookbook_p95_ms": 50},
    }
