"""`mllgraph bench reliability`: load, bad inputs, auth, the web page, faults and memory, each
pass/fail (issue #12 §7, issue #25). Writes `reports/reliability.{json,md}`.

Loopback only, on a Neo4j of its own (a scratch home and a free port, never the user's
database) with a tiny hub it builds itself: two quickly trained Fashion experts over six
concepts. The three services run as subprocesses (`python -m services.NAME`), so a fault can
kill one. Every loop is bounded in count and in time. Checks, in order:

* load: SelectHeads and Classify at each concurrency for a bounded time: throughput,
  p50/p95/p99, errors by code; passes with 0 errors and p95 at 16 <= 3x p95 at 1;
* bad_inputs: malformed requests per RPC, each answered with its expected code, and the
  catalogue unchanged (node and edge counts before and after);
* auth: an ingestion service with tokens refuses every write RPC without a token
  (UNAUTHENTICATED) and with a read token (PERMISSION_DENIED);
* web_inputs: the web page (`mllgraph serve web`, a subprocess over the services) answers
  oversized bodies, 68 MB JSON, pixel bombs, TIFF/BMP, budget=10**30, a foreign Host and a
  POST without the CSRF token with its 4xx (never a 500), classifies a PNG, and its peak RSS
  stays bounded;
* web_auth: the page with tokens: 401 without one, 200 with a read token, the /login cookie,
  CSRF on signed-in POSTs, 421 for a foreign Host, the access log, the bind rule;
* inference_kill: inference SIGKILLed and restarted gives the same predictions;
* frozen_db: Neo4j SIGSTOPped: every RPC answers within its deadline, cached plans classify;
  all served again after SIGCONT;
* neo4j_stop: Neo4j stopped during traffic: UNAVAILABLE/DEADLINE_EXCEEDED within the
  deadline (never a hang or INTERNAL); served again after a restart, services untouched;
* memory: peak RSS of an inference service under bursts of 4 large all-zero PNGs per request
  (scripts/admission_memory.py) stays under idle RSS + BYTES_PER_PIXEL x its pixel budget.

Latency figures depend on the machine and on what else runs on it: compare within a run.
"""

from __future__ import annotations

from mllgraph.eval.bench.reliability.run import bench_reliability

# What callers use (`mllgraph.eval.bench.BENCHES`, tests/test_reliability_bench.py); the parts
# live in one module each: rig, requests, load, bad_inputs, auth, webpage, web, faults, memory,
# report, run.
__all__ = ["bench_reliability"]
