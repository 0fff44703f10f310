"""Benchmarks: each prints its figures and writes `reports/bench_<name>.json`
(`reliability` writes its own `reports/reliability.{json,md}`, with pass/fail per check;
`grounding` its own `reports/grounding.{json,md}`, with every miss).

One module per benchmark, registered by name below (``mllgraph bench NAME``). Figures come
from one run on the machine at hand; compare ratios within a run, not across machines.
Nothing here is asserted by the test suite.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from mllgraph.settings import Settings

# name -> (module, function); modules are imported on use (some pull in torch or gRPC). The
# CLI reads this mapping for its choices, so this module imports nothing heavy.
BENCHES = {
    "ingest": ("ingest", "bench_ingest"),
    "sdag": ("sdag", "bench_sdag"),
    "label": ("label", "bench_label"),
    "infer": ("infer", "bench_infer"),
    "select": ("select", "bench_select"),
    "reliability": ("reliability", "bench_reliability"),
    "patch": ("patch", "bench_patch"),
    "grounding": ("grounding", "bench_grounding"),
    "cost": ("cost", "bench_cost"),
    "cost-repeat": ("cost_repeat", "bench_cost_repeat"),
    "estimates": ("estimates", "bench_estimates"),
}


def run(what: str, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from mllgraph.eval.bench.common import write_report

    module, function = BENCHES[what]
    bench = getattr(importlib.import_module(f"mllgraph.eval.bench.{module}"), function)
    figures = bench(settings, args)
    if "report" not in figures:  # a bench that writes its own report names it
        figures["report"] = str(write_report(what, figures, args.out))
    return figures
