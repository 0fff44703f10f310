"""Check 5, memory: peak RSS of an inference service under bursts of 4 large all-zero PNGs
per request (scripts/admission_memory.py, in a subprocess) stays under idle RSS +
BYTES_PER_PIXEL x its pixel budget.

Needs no rig (only the repository root from it); it must not import the other checks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

from mllgraph.eval.bench.reliability.rig import REPO
from mllgraph.settings import Settings

# The RSS a decoded pixel may cost the inference service: the uint8 decode, its float32
# conversion and one working copy (resize/normalise) — 1 + 4 + 4 bytes, rounded up.
BYTES_PER_PIXEL = 16


_MEMORY_LINE = re.compile(r"(\w+)=(\[[^\]]*\]|\S+)")


def check_memory(side: int, levels: tuple[int, ...]) -> dict[str, Any]:
    """scripts/admission_memory.py in a subprocess per concurrency (as many requests as the
    concurrency, at least 8), at the default pixel budget."""
    budget = Settings.infer_max_inflight_pixels
    series = []
    for conc in levels:
        requests = max(8, conc)
        proc = subprocess.run(
            [
                sys.executable,
                "scripts/admission_memory.py",
                str(side),
                str(budget),
                str(requests),
                str(conc),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
            env={k: v for k, v in os.environ.items() if not k.startswith("MLLGRAPH_")},
        )
        line = (proc.stdout.strip().splitlines() or [""])[-1]
        fields = dict(_MEMORY_LINE.findall(line))
        if proc.returncode != 0 or "peak_rss_mb" not in fields:
            series.append(
                {"concurrency": conc, "error": (proc.stderr or line)[-400:], "pass": False}
            )
            continue
        idle, peak = float(fields["idle_rss_mb"]), float(fields["peak_rss_mb"])
        limit = idle + budget * BYTES_PER_PIXEL / 2**20
        series.append(
            {
                "concurrency": conc,
                "requests": requests,
                "images_per_request": 4,
                "side": side,
                "idle_rss_mb": idle,
                "peak_rss_mb": peak,
                "limit_mb": round(limit),
                "wall_s": float(fields["wall_s"]),
                "codes": fields["codes"],
                "ok": int(fields["ok"]),
                "pass": peak <= limit,
            }
        )
    return {
        "budget_pixels": budget,
        "bytes_per_pixel_allowed": BYTES_PER_PIXEL,
        "series": series,
        "pass": all(s["pass"] for s in series),
    }
