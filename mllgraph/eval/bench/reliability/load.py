"""Check 1, load: SelectHeads and Classify at each concurrency for a bounded time
(throughput, p50/p95/p99, errors by code); passes with 0 errors and p95 at 16 <= 3x p95 at 1.

Imports the rig and the requests; it must not import the other checks or the report.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mllgraph.eval.bench.reliability.requests import (
    call_rpc,
    classify_request,
    percentiles,
    plan_all,
    select_request,
)
from mllgraph.eval.bench.reliability.rig import FASHION, Rig


def _load_series(
    fn: Callable[[int], tuple[str, float]], concurrency: int, seconds: float, max_calls: int
) -> dict[str, Any]:
    """`concurrency` workers calling `fn(i)` until `seconds` pass or `max_calls` are made."""
    lock = threading.Lock()
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    issued = [0]
    end = time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < end:
            with lock:
                if issued[0] >= max_calls:
                    return
                i = issued[0]
                issued[0] += 1
            code, dt = fn(i)
            with lock:
                codes[code] += 1
                if code == "OK":
                    latencies.append(dt)

    t0 = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    wall = time.monotonic() - t0
    errors = {k: v for k, v in codes.items() if k != "OK"}
    return {
        "concurrency": concurrency,
        "seconds": round(wall, 2),
        "calls": sum(codes.values()),
        "ok": codes.get("OK", 0),
        "throughput_per_s": round(codes.get("OK", 0) / wall, 2) if wall else 0.0,
        **percentiles(latencies),
        "errors": errors,
    }


def check_load(rig: Rig, seconds: float, levels: tuple[int, ...]) -> dict[str, Any]:
    from itertools import combinations

    plan = plan_all(rig)
    tasks = [list(c) for c in combinations(sorted(FASHION), 3)]
    select, classify = rig.stub("selection").SelectHeads, rig.stub("inference").Classify

    def one_select(i: int) -> tuple[str, float]:
        code, _, dt, _ = call_rpc(select, select_request(tasks[i % len(tasks)]), 60)
        return code, dt

    def one_classify(i: int) -> tuple[str, float]:
        code, _, dt, _ = call_rpc(classify, classify_request(rig, plan.plan_id, 4, i), 60)
        return code, dt

    out: dict[str, Any] = {"seconds_per_series": seconds, "images_per_classify": 4}
    ok = True
    for rpc, fn in (("SelectHeads", one_select), ("Classify", one_classify)):
        fn(0)  # warm
        series = [_load_series(fn, c, seconds, max_calls=100_000) for c in levels]
        by = {s["concurrency"]: s for s in series}
        errors = sum(sum(s["errors"].values()) for s in series)
        ratio = None
        if 1 in by and 16 in by and by[1].get("p95_ms") and by[16].get("p95_ms"):
            ratio = round(by[16]["p95_ms"] / by[1]["p95_ms"], 2)
        passed = errors == 0 and (ratio is None or ratio <= 3.0)
        out[rpc] = {"series": series, "p95_16_over_1": ratio, "errors": errors, "pass": passed}
        ok = ok and passed
    out["pass"] = ok
    return out
