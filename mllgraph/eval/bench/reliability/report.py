"""`reports/reliability.md`: the Markdown of a reliability report (the JSON's rendering).

Reads the report dictionary only; it must not import the rig, the requests or the checks.
"""

from __future__ import annotations

import json
from typing import Any


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Reliability (`mllgraph bench reliability`)",
        "",
        f"Run at {report['at']} on {report['machine']['cpu_count']} CPUs"
        f"{' (quick configuration)' if report['quick'] else ''}. {report['note']}",
        "",
        "| check | result |",
        "|---|---|",
    ]
    for name, res in report["checks"].items():
        verdict = "PASS" if res.get("pass") else ("ERROR" if "error" in res else "FAIL")
        lines.append(f"| {name} | {verdict} |")
    checks = report["checks"]
    if "load" in checks and "error" not in checks["load"]:
        lines += [
            "",
            "## Load",
            "",
            "| RPC | concurrency | calls/s | p50 ms | p95 ms | p99 ms | errors |",
            "|---|---|---|---|---|---|---|",
        ]
        for rpc in ("SelectHeads", "Classify"):
            for s in checks["load"][rpc]["series"]:
                lines.append(
                    f"| {rpc} | {s['concurrency']} | {s['throughput_per_s']} | "
                    f"{s.get('p50_ms', '-')} | {s.get('p95_ms', '-')} | {s.get('p99_ms', '-')} | "
                    f"{s['errors'] or 0} |"
                )
            lines.append(
                f"| {rpc} | p95(16)/p95(1) | {checks['load'][rpc]['p95_16_over_1']} (goal ≤ 3) "
                "| | | | |"
            )
    if "bad_inputs" in checks and "error" not in checks["bad_inputs"]:
        b = checks["bad_inputs"]
        lines += [
            "",
            "## Bad inputs",
            "",
            f"Catalogue before {b['catalogue_before']}, after {b['catalogue_after']}.",
            "",
            "| RPC | input | code | expected |",
            "|---|---|---|---|",
        ]
        for r in b["tried"]:
            mark = "" if r["pass"] else " **wrong**"
            lines.append(
                f"| {r['rpc']} | {r['input']} | {r['code']}{mark} | {'/'.join(r['expected'])} |"
            )
    if "auth" in checks and "error" not in checks["auth"]:
        lines += [
            "",
            "## Auth (ingestion with tokens)",
            "",
            "| RPC | caller | code | expected |",
            "|---|---|---|---|",
        ]
        for r in checks["auth"]["tried"]:
            lines.append(f"| {r['rpc']} | {r['caller']} | {r['code']} | {r['expected']} |")
    for name, title in (("web_inputs", "Web page: inputs"), ("web_auth", "Web page: tokens")):
        if name in checks and "error" not in checks[name]:
            lines += _web(checks[name], title)
    for name in ("inference_kill", "frozen_db", "neo4j_stop", "memory"):
        if name in checks:
            body = {k: v for k, v in checks[name].items() if k != "pass"}
            lines += ["", f"## {name}", "", "```json", json.dumps(body, indent=1), "```"]
    return "\n".join(lines) + "\n"


def _web(res: dict[str, Any], title: str) -> list[str]:
    """A web check's rows (request, HTTP status, expected), then its memory, access log and
    bind results as JSON."""
    lines = ["", f"## {title}", "", "| request | status | expected | ms |", "|---|---|---|---|"]
    for r in res["tried"]:
        mark = "" if r["pass"] else " **wrong**"
        lines.append(
            f"| {r['case']} | {r['status']}{mark} | {r['expected']} | {r.get('ms') or '-'} |"
        )
    rest = {k: res[k] for k in ("memory", "access_log", "bind", "never_500") if k in res}
    return lines + ["", "```json", json.dumps(rest, indent=1, ensure_ascii=False), "```"]
