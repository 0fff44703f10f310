"""Shared pieces of the benchmarks: percentiles, the JSON report, the CPU count."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np


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
        "machine": {"python": platform.python_version(), "cpu_count": cpus()},
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **figures,
    }
    path = out / f"bench_{name}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    return path


def git_commit() -> str:
    """The checkout's commit (short), "+dirty" when tracked files differ from it; "unknown"
    outside a git checkout. Reports name the code that produced them."""
    import subprocess

    root = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=root, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
