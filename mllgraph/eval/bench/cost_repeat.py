"""`mllgraph bench cost-repeat`: how far a model's measured cost moves between measurements.

Selection serves the cheapest plan within the accuracy slack, so a cost that moves between
two measurements (another hour, another load on the machine) can change the plan a rebuilt
hub serves for the same task. This measures that spread on the hub at MLLGRAPH_HOME: every
model (or `--models-like` a name part) is loaded once and timed as registration times it
(`hub.cost.time_batches`: CPU time of one thread on the CPU), `--runs` rounds quiet and as many
again with `--load` CPU-bound processes beside it, the models interleaved and rotated per
round so that each sees the same machine. Per model and per aggregate of a measurement's
batches (median, min): the largest over the smallest of its measurements, quiet, loaded and
both together. The recorded cost on each node is not changed.

`--fronts REPORT.json ...` (reports whose task rows carry their front: `cost_front` in a
`bench zeroshot` report, `front` in `bench cost`'s) adds what that spread does to plans: each
front's points are costed with every round's measurements and the served point picked
(`cost_front.cheapest_within`, with and without the cost band); a task "flips" when two rounds
serve different points. The fronts are taken as recorded: a front CHCO would find under other
costs is not solved again.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.plan.request import ACCURACY_SLACK
from mllgraph.select.cost_front import COST_TIE, cheapest_within
from mllgraph.settings import Settings

AGGREGATES = {"median": statistics.median, "min": min}


def bench_cost_repeat(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from mllgraph.eval.bench.common import git_commit
    from mllgraph.graph import db
    from mllgraph.hub import cost as hub_cost
    from mllgraph.hub import loading, registry

    rounds = max(2, int(getattr(args, "runs", None) or 5))
    burners = max(0, int(getattr(args, "load", 2)))  # 0: the loaded half runs alone too
    like = getattr(args, "models_like", None) or ""
    with db.connect(settings) as graph:
        records = [r for r in registry.list_models(graph, limit=1000) if like in r["id"]]
    if not records:
        raise SystemExit(f"no registered model's id contains {like!r}: build a hub first")
    device = settings.torch_device()
    loaded = {r["id"]: loading.load_model(settings, r) for r in records}
    ids = sorted(loaded)
    batches: dict[str, dict[str, list[list[float]]]] = {m: {"quiet": [], "loaded": []} for m in ids}
    for phase in ("quiet", "loaded"):
        procs = _burn(burners) if phase == "loaded" else []
        try:
            for r in range(rounds):
                for mid in ids[r % len(ids) :] + ids[: r % len(ids)]:
                    model, spec = loaded[mid]
                    timed = hub_cost.time_batches(
                        model, spec, device, cpu_chunk=settings.infer_cpu_chunk
                    )
                    batches[mid][phase].append(timed["ms_per_image"])
                    print(f"{phase} round {r + 1}/{rounds} {mid}: {_fmt(timed['ms_per_image'])}")
        finally:
            for p in procs:
                p.kill()
                p.wait()
    models = {mid: _summary(batches[mid]) for mid in ids}
    spread = {
        agg: {
            phase: max(m[agg][f"spread_{phase}"] for m in models.values())
            for phase in ("quiet", "loaded", "all")
        }
        for agg in AGGREGATES
    }
    pair_ratio = {agg: _pair_ratios(models, agg) for agg in AGGREGATES}
    fronts = _fronts(getattr(args, "fronts", None) or [])
    flips = _flips(fronts, models) if fronts else None
    return {
        "commit": git_commit(),
        "device": str(device),
        "plan_flips": flips,
        "rounds_per_phase": rounds,
        "load_processes": burners,
        "models": models,
        "worst_spread": spread,
        "pair_ratio": pair_ratio,
        "method": (
            "each model loaded once and timed as registration times it (hub.cost.time_batches:"
            f" one warm-up batch, then up to {hub_cost.COST_REPEATS} batches of "
            f"{hub_cost.COST_BATCH} random images, CPU time of one thread on the CPU), {rounds}"
            f" rounds with nothing else started, then {rounds} with {burners} busy-looping "
            "Python processes beside it; models interleaved, rotated per round. A "
            "measurement's cost is the median or the min of its batches; spread = largest / "
            "smallest measurement of a model; pair_ratio: percentiles of larger / smaller over "
            "every two measurements of one model."
        ),
    }


def _summary(phases: dict[str, list[list[float]]]) -> dict[str, Any]:
    """Per aggregate: each measurement's cost per phase, and each phase's spread (and both
    phases' together, "all")."""
    out: dict[str, Any] = {"batches_ms": phases}
    for agg, f in AGGREGATES.items():
        values = {phase: [f(b) for b in phases[phase]] for phase in ("quiet", "loaded")}
        values["all"] = values["quiet"] + values["loaded"]
        out[agg] = {
            "quiet": [round(v, 3) for v in values["quiet"]],
            "loaded": [round(v, 3) for v in values["loaded"]],
            **{f"spread_{k}": round(max(v) / min(v), 3) for k, v in values.items()},
        }
    return out


def _pair_ratios(models: dict[str, Any], agg: str) -> dict[str, float]:
    """Percentiles of larger / smaller over every two measurements of one model (all models):
    how far apart two measurements of one cost fall. `cost_front.COST_TIE` is set from it."""
    ratios = sorted(
        max(a, b) / min(a, b)
        for s in models.values()
        for a, b in itertools.combinations(s[agg]["quiet"] + s[agg]["loaded"], 2)
    )
    at = {"p50": 0.5, "p90": 0.9, "p95": 0.95}
    out = {k: round(float(np.quantile(ratios, q)), 3) for k, q in at.items()}
    return {**out, "max": round(ratios[-1], 3), "pairs": len(ratios)}


def _fronts(paths: list[str]) -> dict[str, list[dict[str, Any]]]:
    """{report:task: its recorded front} from the rows (at any depth) that carry one."""
    out: dict[str, list[dict[str, Any]]] = {}

    def walk(x: Any, where: str) -> None:
        if isinstance(x, dict):
            front = x.get("cost_front", x.get("front"))  # bench zeroshot's, bench cost's
            if isinstance(front, list) and len(front) > 1 and "task" in x:
                out[f"{where}:{x['task']}:{x.get('policy', '')}"] = front
            for v in x.values():
                walk(v, where)
        elif isinstance(x, list):
            for v in x:
                walk(v, where)

    for p in paths:
        walk(json.loads(Path(p).read_text()), p)
    return out


def _flips(fronts: dict[str, list[dict[str, Any]]], models: dict[str, Any]) -> dict[str, Any]:
    """Per rule (aggregate x cost band): the tasks whose served point differs between two
    rounds' costs, and the share of round pairs that differ, over the fronts all of whose
    models were measured (the default accuracy slack)."""
    usable = {t: f for t, f in fronts.items() if all(m in models for p in f for m in p["models"])}
    out: dict[str, Any] = {"fronts": len(fronts), "fronts_measured": len(usable)}
    for agg in AGGREGATES:
        per_model = {m: s[agg]["quiet"] + s[agg]["loaded"] for m, s in models.items()}
        rounds = len(next(iter(per_model.values())))
        draws = [{m: v[r] for m, v in per_model.items()} for r in range(rounds)]
        for band in (0.0, COST_TIE):
            tasks, pairs, differing = 0, 0, 0
            for front in usable.values():
                served = [_served(front, d, band) for d in draws]
                tasks += len(set(served)) > 1
                for i in range(rounds):
                    for j in range(i + 1, rounds):
                        pairs += 1
                        differing += served[i] != served[j]
            out[f"{agg}_band_{band:g}"] = {
                "tasks_flipping": tasks,
                "round_pairs_differing": round(differing / pairs, 4) if pairs else None,
            }
    return out


def _served(front: list[dict[str, Any]], costs: dict[str, float], band: float) -> int:
    """The front point served under these model costs (a missing estimate ranks last)."""
    points = [(_estimate(p), sum(costs[m] for m in p["models"])) for p in front]
    return cheapest_within(points, ACCURACY_SLACK, cost_tie=band)


def _estimate(point: dict[str, Any]) -> float:
    e = point.get("estimated_accuracy")
    return math.nan if e is None else float(e)


def _burn(n: int) -> list[subprocess.Popen[bytes]]:
    """`n` CPU-bound processes: the load another job puts on a shared machine."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:.3g}" for v in values) + " ms per image"
