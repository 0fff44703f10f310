"""Check 4, faults: inference SIGKILLed and restarted (inference_kill), Neo4j SIGSTOPped
(frozen_db) and Neo4j stopped during traffic (neo4j_stop), with how an answer under a fault is
judged.

Imports the rig and the requests; it must not import the other checks or the report.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mllgraph.eval.bench.reliability.requests import (
    call_rpc,
    classify_request,
    error_code,
    error_details,
    percentiles,
    plan_all,
    probabilities,
    raw_image,
    select_request,
)
from mllgraph.eval.bench.reliability.rig import Rig

SERVER_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")


def check_inference_kill(rig: Rig) -> dict[str, Any]:
    plan = plan_all(rig)
    req = classify_request(rig, plan.plan_id, 16)
    classify = rig.stub("inference").Classify
    before = probabilities(classify(req, timeout=60))
    svc = rig.services["inference"]
    assert svc.proc is not None
    t0 = time.monotonic()
    svc.proc.send_signal(signal.SIGKILL)
    svc.proc.wait(30)
    svc.start()
    ready_s = svc.wait_ready()
    code, details, _, resp = call_rpc(classify, req, 60)
    same = resp is not None and np.allclose(probabilities(resp), before, atol=1e-5)
    return {
        "restart_to_serving_s": round(ready_s, 1),
        "recovered_in_s": round(time.monotonic() - t0, 1),
        "code_after": code,
        "details": details,
        "same_predictions": bool(same),
        "pass": bool(code == "OK" and same),
    }


def _graph_calls(rig: Rig, i: int, dl: float) -> list[tuple[str, Callable[[], Any], float]]:
    """RPCs that need the graph, each with its client deadline `dl` (seconds)."""
    from mllgraph.v1 import inference_pb2, ingestion_pb2, selection_pb2

    sel, inf, ing = rig.stub("selection"), rig.stub("inference"), rig.stub("ingestion")
    uncached = inference_pb2.ClassifyRequest(
        plan_id=f"never-seen-{i}", images=[raw_image(rig.images[0])]
    )  # type: ignore[index]
    return [
        (
            "SelectHeads",
            lambda: sel.SelectHeads(select_request([(1, 3)[i % 2], 5]), timeout=dl),
            dl,
        ),
        (
            "GetPlan",
            lambda: sel.GetPlan(selection_pb2.GetPlanRequest(plan_id=f"nope-{i}"), timeout=dl),
            dl,
        ),
        (
            "GetModel",
            lambda: ing.GetModel(ingestion_pb2.GetModelRequest(model_id=rig.models[0]), timeout=dl),
            dl,
        ),
        ("ListModels", lambda: ing.ListModels(ingestion_pb2.ListModelsRequest(), timeout=dl), dl),
        ("Classify(uncached plan)", lambda: inf.Classify(uncached, timeout=dl), dl),
    ]


def _timed(call: Callable[[], Any]) -> tuple[str, str, float]:
    t = time.perf_counter()
    try:
        call()
        return "OK", "", time.perf_counter() - t
    except Exception as e:  # noqa: BLE001
        return error_code(e), error_details(e)[:160], time.perf_counter() - t


def _wait_served(rig: Rig, budget_s: float) -> float | None:
    """Seconds until GetModel and SelectHeads answer OK again (None: not within budget_s)."""
    from mllgraph.v1 import ingestion_pb2

    t0 = time.monotonic()
    ing, sel = rig.stub("ingestion"), rig.stub("selection")
    while time.monotonic() - t0 < budget_s:
        a = _timed(
            lambda: ing.GetModel(ingestion_pb2.GetModelRequest(model_id=rig.models[0]), timeout=10)
        )
        b = _timed(lambda: sel.SelectHeads(select_request([5, 7]), timeout=10))
        if a[0] == "OK" and b[0] == "OK":
            return time.monotonic() - t0
        time.sleep(0.5)
    return None


def _judge(answers: list[tuple[str, str, str, float, float]]) -> dict[str, Any]:
    """answers: (rpc, code, details, seconds, deadline). A server answer: OK, or UNAVAILABLE /
    DEADLINE_EXCEEDED that is the server's own (not the client giving up at its deadline)."""
    rows, bad = [], 0
    for rpc, code, details, dt, dl in answers:
        client_gave_up = code == "DEADLINE_EXCEEDED" and details.strip() == "Deadline Exceeded"
        ok = (code == "OK" or code in SERVER_CODES or code == "NOT_FOUND") and not client_gave_up
        ok = ok and dt <= dl + 1.0
        bad += not ok
        rows.append(
            {
                "rpc": rpc,
                "code": code,
                "s": round(dt, 2),
                "deadline_s": dl,
                "pass": ok,
                "details": details[:120],
            }
        )
    by_code = Counter(r["code"] for r in rows)
    examples = {r["code"]: r["details"] for r in rows if r["code"] != "OK"}
    return {
        "answers": len(rows),
        "by_code": dict(by_code),
        "failed": [r for r in rows if not r["pass"]][:10],
        "max_s": max((r["s"] for r in rows), default=0.0),
        "details_by_code": examples,
        "pass": bad == 0,
    }


def check_frozen_db(rig: Rig, freeze_s: float, deadline_s: float) -> dict[str, Any]:
    plan = plan_all(rig)
    cached = classify_request(rig, plan.plan_id, 4)
    classify = rig.stub("inference").Classify
    before = probabilities(classify(cached, timeout=60))
    pid = rig.neo4j_pid()
    assert pid is not None
    answers: list[tuple[str, str, str, float, float]] = []
    cached_rows: list[tuple[str, bool, float]] = []
    os.kill(pid, signal.SIGSTOP)
    try:
        end = time.monotonic() + freeze_s
        with ThreadPoolExecutor(16) as pool:
            futures = []
            i = 0
            while time.monotonic() < end and i < 200:
                for rpc, call, dl in _graph_calls(rig, i, deadline_s):
                    futures.append((rpc, dl, pool.submit(_timed, call)))
                c, _, dt, resp = call_rpc(classify, cached, 10)
                same = resp is not None and np.allclose(probabilities(resp), before, atol=1e-5)
                cached_rows.append((c, bool(same), dt))
                i += 1
                time.sleep(0.5)
            for rpc, dl, f in futures:
                code, details, dt = f.result(timeout=60)
                answers.append((rpc, code, details, dt, dl))
    finally:
        os.kill(pid, signal.SIGCONT)
    recovered = _wait_served(rig, 120)
    c, _, _, resp = call_rpc(classify, cached, 30)
    after_same = resp is not None and np.allclose(probabilities(resp), before, atol=1e-5)
    judged = _judge(answers)
    cached_ok = all(code == "OK" and same for code, same, _ in cached_rows)
    return {
        "frozen_s": freeze_s,
        "client_deadline_s": deadline_s,
        "graph_rpcs": judged,
        "cached_classify": {
            "calls": len(cached_rows),
            "all_ok_same": cached_ok,
            **percentiles([dt for _, _, dt in cached_rows]),
        },
        "recovered_after_sigcont_s": None if recovered is None else round(recovered, 1),
        "cached_plan_after": bool(c == "OK" and after_same),
        "pass": bool(judged["pass"] and cached_ok and recovered is not None and after_same),
    }


def check_neo4j_stop(rig: Rig, traffic_s: float, deadline_s: float) -> dict[str, Any]:
    from mllgraph.graph import neo4j_server

    plan = plan_all(rig)
    cached = classify_request(rig, plan.plan_id, 4)
    classify = rig.stub("inference").Classify
    before = probabilities(classify(cached, timeout=60))
    answers: list[tuple[str, str, str, float, float]] = []
    cached_codes: Counter[str] = Counter()
    stop_done = threading.Event()

    def stopper() -> None:
        time.sleep(1.0)
        neo4j_server.stop(rig.settings)
        stop_done.set()

    pids = {name: svc.proc.pid for name, svc in rig.services.items() if svc.proc}
    t_stop = threading.Thread(target=stopper, daemon=True)
    t_stop.start()
    end = time.monotonic() + traffic_s
    i = 0
    with ThreadPoolExecutor(8) as pool:
        futures = []
        while (time.monotonic() < end or not stop_done.is_set()) and i < 400:
            if time.monotonic() > end + 120:
                break
            for rpc, call, dl in _graph_calls(rig, i, deadline_s):
                futures.append((rpc, dl, pool.submit(_timed, call)))
            c, _, _, resp = call_rpc(classify, cached, 10)
            cached_codes[c] += 1
            i += 1
            time.sleep(0.3)
        for rpc, dl, f in futures:
            code, details, dt = f.result(timeout=60)
            answers.append((rpc, code, details, dt, dl))
    t_stop.join(60)
    stopped_answers = _judge(answers)
    internal = sum(1 for a in answers if a[1] in ("INTERNAL", "UNKNOWN"))
    saw_unavailable = any(a[1] in SERVER_CODES for a in answers)
    t0 = time.monotonic()
    neo4j_server.start(rig.settings)
    restart_s = time.monotonic() - t0
    recovered = _wait_served(rig, 180)
    same_services = pids == {n: s.proc.pid for n, s in rig.services.items() if s.proc}
    c, _, _, resp = call_rpc(classify, cached, 30)
    after_same = resp is not None and np.allclose(probabilities(resp), before, atol=1e-5)
    return {
        "client_deadline_s": deadline_s,
        "graph_rpcs": stopped_answers,
        "internal_or_unknown": internal,
        "saw_unavailable": saw_unavailable,
        "cached_classify_codes": dict(cached_codes),
        "neo4j_restart_s": round(restart_s, 1),
        "served_again_after_restart_s": None if recovered is None else round(recovered, 1),
        "services_not_restarted": same_services,
        "cached_plan_after": bool(c == "OK" and after_same),
        "pass": bool(
            stopped_answers["pass"]
            and internal == 0
            and saw_unavailable
            and recovered is not None
            and same_services
            and after_same
        ),
    }
