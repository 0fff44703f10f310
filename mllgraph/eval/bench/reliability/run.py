"""`bench_reliability`: runs the chosen checks (on one rig, memory apart) and writes
`reliability.{json,md}`.

The top of the package: nothing in the package imports it but `__init__`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mllgraph.eval.bench.common import cpus
from mllgraph.eval.bench.reliability.auth import check_auth
from mllgraph.eval.bench.reliability.bad_inputs import check_bad_inputs
from mllgraph.eval.bench.reliability.faults import (
    check_frozen_db,
    check_inference_kill,
    check_neo4j_stop,
)
from mllgraph.eval.bench.reliability.load import check_load
from mllgraph.eval.bench.reliability.memory import BYTES_PER_PIXEL, check_memory
from mllgraph.eval.bench.reliability.report import markdown
from mllgraph.eval.bench.reliability.rig import open_rig
from mllgraph.eval.bench.reliability.web import check_web_auth, check_web_inputs
from mllgraph.settings import Settings

CHECKS = (
    "load",
    "bad_inputs",
    "auth",
    "web_inputs",
    "web_auth",
    "inference_kill",
    "frozen_db",
    "neo4j_stop",
    "memory",
)
QUICK_CHECKS = tuple(c for c in CHECKS if c not in ("neo4j_stop", "memory"))  # the slow ones


def bench_reliability(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(getattr(args, "quick", False))
    wanted = getattr(args, "checks", None)
    checks = tuple(wanted.split(",")) if wanted else (QUICK_CHECKS if quick else CHECKS)
    unknown = set(checks) - set(CHECKS)
    if unknown:
        from mllgraph.errors import InvalidArgument

        raise InvalidArgument(f"unknown reliability checks {sorted(unknown)}; known: {CHECKS}")
    seconds = 2.0 if quick else float(getattr(args, "seconds", 10.0) or 10.0)
    levels = (1, 16) if quick else (1, 16, 64)
    deadline_s = float(getattr(args, "deadline", 10.0) or 10.0)  # client deadline, fault checks

    def log(msg: str) -> None:
        print(f"[reliability {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    results: dict[str, Any] = {}
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.monotonic()
    graph_checks = [c for c in checks if c != "memory"]
    if graph_checks:
        with open_rig(settings, log) as rig:
            runners: dict[str, Callable[[], dict[str, Any]]] = {
                "load": lambda: check_load(rig, seconds, levels),
                "bad_inputs": lambda: check_bad_inputs(rig),
                "auth": lambda: check_auth(rig),
                "web_inputs": lambda: check_web_inputs(rig),
                "web_auth": lambda: check_web_auth(rig),
                "inference_kill": lambda: check_inference_kill(rig),
                "frozen_db": lambda: check_frozen_db(rig, 3.0 if quick else 8.0, deadline_s),
                "neo4j_stop": lambda: check_neo4j_stop(rig, 5.0 if quick else 10.0, deadline_s),
            }
            for name in graph_checks:
                t = time.monotonic()
                try:
                    results[name] = runners[name]()
                except Exception as e:  # noqa: BLE001 — a check that crashed is reported
                    results[name] = {"pass": False, "error": f"{type(e).__name__}: {e}"[:500]}
                results[name]["check_s"] = round(time.monotonic() - t, 1)
                log(f"{name}: {'pass' if results[name]['pass'] else 'FAIL'}")
    if "memory" in checks:
        t = time.monotonic()
        try:
            results["memory"] = check_memory(1024 if quick else 4096, (8,) if quick else (8, 64))
        except Exception as e:  # noqa: BLE001
            results["memory"] = {"pass": False, "error": f"{type(e).__name__}: {e}"[:500]}
        results["memory"]["check_s"] = round(time.monotonic() - t, 1)
        log(f"memory: {'pass' if results['memory']['pass'] else 'FAIL'}")
    report = {
        "benchmark": "reliability",
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"python": sys.version.split()[0], "cpu_count": cpus()},
        "quick": quick,
        "note": "Latency figures come from one run on the machine at hand, shared with whatever "
        f"else ran on it (load average at start {load_before[0]}, at the end "
        f"{round(os.getloadavg()[0], 2)}, on {cpus()} CPUs); compare within a run. The memory "
        f"limit is this bench's: idle RSS + {BYTES_PER_PIXEL} bytes x the in-flight pixel budget.",
        "wall_s": round(time.monotonic() - started, 1),
        "checks": results,
        "pass": all(r.get("pass") for r in results.values()),
        "run_id": uuid.uuid4().hex[:8],
    }
    out = Path(getattr(args, "out", "reports"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "reliability.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "reliability.md").write_text(markdown(report))
    report["report"] = str(out / "reliability.json")
    return report
