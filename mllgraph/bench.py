"""Benchmarks: each prints its figures and writes `reports/bench_<name>.json`.

Figures come from one run on the machine at hand; compare ratios within a run, not across
machines. Nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.settings import Settings


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "n": len(ms),
    }


def write_report(name: str, figures: dict[str, Any], out_dir: str | Path = "reports") -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "benchmark": name,
        "machine": {"python": platform.python_version(), "cpu_count": _cpus()},
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **figures,
    }
    path = out / f"bench_{name}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    return path


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def scratch_settings(settings: Settings, home: Path, port: int) -> Settings:
    """A throwaway project-managed Neo4j beside the real one (shares the fetched jars)."""
    from mllgraph import neo4j_server

    scratch = replace(settings, neo4j_uri=None, home=home, local_neo4j_port=port)
    main_lib = neo4j_server.fetch_jars(settings)
    lib = neo4j_server.paths(scratch).lib
    if not lib.exists():
        lib.parent.mkdir(parents=True, exist_ok=True)
        lib.symlink_to(main_lib, target_is_directory=True)
    return scratch


def bench_sdag(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Load time into an empty database, and ancestor / descendant query latency."""
    import shutil

    from mllgraph import db, neo4j_server, sdag
    from mllgraph.wordnet import load_nouns

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
                graph.read("sdag/ancestors", wnid=w)
                graph.read("sdag/descendant_count", wnid=w)
            anc, desc = [], []
            for w in wnids:
                t = time.perf_counter()
                graph.read("sdag/ancestors", wnid=w)
                anc.append(time.perf_counter() - t)
                t = time.perf_counter()
                graph.read("sdag/descendant_count", wnid=w)
                desc.append(time.perf_counter() - t)
            animal = "n00015388"
            big_count, big_list = [], []
            n_animal = graph.read("sdag/descendant_count", wnid=animal)[0]["descendants"]
            for _ in range(30):
                t = time.perf_counter()
                graph.read("sdag/descendant_count", wnid=animal)
                big_count.append(time.perf_counter() - t)
                t = time.perf_counter()
                graph.read("sdag/descendants", wnid=animal, limit=100_000)
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


BENCHES = {"sdag": bench_sdag}


def run(what: str, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    figures = BENCHES[what](settings, args)
    path = write_report(what, figures, args.out)
    figures["report"] = str(path)
    return figures
