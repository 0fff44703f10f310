"""In-process select() on a synthetic hub: per-stage latency and a hash of every plan.

Meant for A/B runs of two code versions on the same hub in the same minutes (the build
machines are shared, so only side-by-side ratios mean anything): run it from one worktree,
then from the other, with the same MLLGRAPH_HOME and MLLGRAPH_NEO4J_PORT. The first run
builds the hub with the bench's own builder (`mllgraph.eval.bench.synthetic_hub`) and keeps
what later runs need (task pool, names) in `ab_hub.json` beside it; later runs reuse it.

    MLLGRAPH_HOME=/tmp/speed-home MLLGRAPH_NEO4J_PORT=7733 \
        python scripts/ab_select.py --out /tmp/ab.json [--models 10000] [--profile 100]

Tasks are drawn as `mllgraph bench select` draws them (random.Random(seed).sample over the
task pool, pinned wnids, server-default options) after warming the caches with requests
covering the whole pool; the 100-class tasks are drawn after the 10-class ones, so compare
runs made with the same --requests. `rest`: the request's time outside the four stages
(alternatives, the ConSE patch, the plan document). Neo4j is left running (`--stop` stops it).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import pstats
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.plan import request as plan_request

# This checkout's code, whatever the environment has installed (an editable install of
# another worktree would otherwise win).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = ("grounding", "cypher", "load", "chco")
# Plan fields that legitimately differ between two runs of the same code.
VOLATILE = ("timings_ms", "created_at")


def plan_hash(plan: dict[str, Any]) -> str:
    """sha256 of the plan document without its timings and creation time."""
    body = {k: v for k, v in plan.items() if k not in VOLATILE}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _p(values: list[float]) -> list[float]:
    """[p50, p95] in ms."""
    return [round(float(np.percentile(values, q)), 1) for q in (50, 95)]


def build_or_reuse(graph: Any, settings: Any, n_models: int, seed: int) -> dict[str, Any]:
    """The hub's task pool and names: built on first use, read from ab_hub.json after."""
    from mllgraph.eval.bench.synthetic_hub import SELECT_TASK_POOL, SyntheticHub
    from mllgraph.graph import sdag
    from mllgraph.graph.wordnet import load_nouns
    from mllgraph.hub import registry
    from mllgraph.select import run as select

    meta_path = settings.home / "ab_hub.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["models"] == n_models and meta["seed"] == seed:
            return meta
        raise SystemExit(f"{meta_path} holds another hub ({meta['models']} models): new home")
    t = time.monotonic()
    wn = load_nouns(settings.wordnet_dir)
    sdag.load(graph, wn)
    registry.ensure_schema(graph)
    select.ensure_schema(graph)
    hub = SyntheticHub(graph, settings, wn, seed)
    rng = random.Random(seed)
    hub.grow(min(1000, n_models))  # as the bench: the first models define the task pool
    popular = sorted(hub.head_concepts)
    pool = rng.sample(popular, min(SELECT_TASK_POOL, len(popular)))
    hub.register_task_probes(sorted(pool))
    hub.grow(n_models)
    meta = {
        "models": n_models,
        "seed": seed,
        "task_pool": hub.task_pool,
        "names": {w: wn.synsets[w].lemmas[0].replace("_", " ") for w in hub.task_pool},
        "build_s": round(time.monotonic() - t, 1),
    }
    meta_path.write_text(json.dumps(meta))
    return meta


def run(args: argparse.Namespace) -> dict[str, Any]:
    from mllgraph.graph import db, neo4j_server
    from mllgraph.ground.resolve import default_resolver
    from mllgraph.select import run as select
    from mllgraph.settings import Settings

    for k in ("MLLGRAPH_MODEL_STORE", "MLLGRAPH_PROBE_STORE"):  # the hub's files stay in home
        os.environ.pop(k, None)
    settings = Settings.from_env()
    if neo4j_server.running_pid(settings) is None:
        neo4j_server.start(settings)
    out: dict[str, Any] = {
        "code": args.label,
        "module": select.__file__,
        "load_start": [round(x, 2) for x in os.getloadavg()],
    }
    resolver = default_resolver(settings)
    resolver.warm_up()
    with db.connect(settings) as graph:
        meta = build_or_reuse(graph, settings, args.models, args.seed)
        pool, names = meta["task_pool"], meta["names"]
        # Server defaults of SelectHeads (services/selection.py request_to_task).
        options = plan_request.SelectOptions(budget=5, allow_ancestor=False, fit_params=False)

        def one(wnids: list[str]) -> Any:
            classes = [plan_request.TaskClass(names[w], w) for w in wnids]
            return select.select(graph, settings, classes, options, resolver, store=False)

        rng = random.Random(args.seed)
        # Warm: requests covering the whole pool fill the graph-read and probe caches.
        order = rng.sample(pool, len(pool))
        for i in range(0, len(order) - 1, 100):
            if len(order[i : i + 100]) >= 2:
                one(order[i : i + 100])
        for k, reqs in ((10, args.requests), (100, max(5, args.requests // 3))):
            tasks = [rng.sample(pool, k) for _ in range(reqs + 2)]
            wall: list[float] = []
            parts: dict[str, list[float]] = {s: [] for s in (*STAGES, "rest")}
            hashes: list[str] = []
            for i, wnids in enumerate(tasks):
                prof = cProfile.Profile() if args.profile == k and i == len(tasks) - 1 else None
                t = time.perf_counter()
                ctx = prof.runcall(one, wnids) if prof is not None else one(wnids)
                dt = (time.perf_counter() - t) * 1000
                hashes.append(plan_hash(ctx.plan))
                if prof is not None:
                    stats = pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative")
                    stats.print_stats(45)
                    stats.sort_stats("tottime").print_stats(30)
                    continue
                if i < 2:  # as the bench: the first two are not counted
                    continue
                wall.append(dt)
                for s in STAGES:
                    parts[s].append(ctx.plan["timings_ms"][f"{s}_ms"])
                parts["rest"].append(dt - sum(parts[s][-1] for s in STAGES))
            entry = {"ms": _p(wall), **{s: _p(v) for s, v in parts.items()}}
            entry["hashes"] = hashes
            out[f"warm_{k}"] = entry
            print(
                f"[{args.label}] {k} classes p50/p95 ms: total {entry['ms']} "
                + " ".join(f"{s} {entry[s]}" for s in (*STAGES, "rest")),
                flush=True,
            )
    out["load_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.stop:
        neo4j_server.stop(settings)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--label", default="code")
    ap.add_argument("--models", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--requests", type=int, default=30, help="10-class requests (100: a third)")
    ap.add_argument("--profile", type=int, default=0, help="cProfile one extra K-class request")
    ap.add_argument("--stop", action="store_true", help="stop Neo4j at the end")
    args = ap.parse_args()
    result = run(args)
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
