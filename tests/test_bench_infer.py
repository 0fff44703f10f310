"""`mllgraph bench infer --cpu-chunks` through the CLI: one gRPC server per CPU chunk size,
the configured one reported as `by_batch_size`, all of them under `by_cpu_chunk`, JSON
written. Throughput figures are printed, not asserted (README: benchmarks are not tests)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from mllgraph import cli
from mllgraph.hub import registry
from mllgraph.settings import Settings

pytestmark = [pytest.mark.neo4j, pytest.mark.slow]


def test_bench_infer_compares_cpu_chunks_side_by_side(
    sdag_graph, neo4j_settings: Settings, tmp_path: Path
) -> None:
    settings = replace(neo4j_settings, infer_cpu_chunk=4)
    before = {m["id"] for m in registry.list_models(sdag_graph, limit=1000)}
    argv = ["bench", "infer", "--sizes", "1", "--cpu-chunks", "0,4", "--out", str(tmp_path)]
    assert cli.main(argv, settings=settings) == 0

    report = json.loads((tmp_path / "bench_infer.json").read_text())
    assert report["cpu_chunk"] == 4 and list(report["by_cpu_chunk"]) == ["4", "0"]
    assert report["by_batch_size"] == report["by_cpu_chunk"]["4"]
    for by_batch in report["by_cpu_chunk"].values():
        row = by_batch["1"]
        assert {"plan", *report["models"], "ratio"} == set(row)
        assert all(row[k]["images_per_s"] > 0 for k in ("plan", *report["models"]))
        # Every request ran its models (the warm-up sent the same image: nothing was kept).
        for k in ("plan", *report["models"]):
            assert all(ms > 0 for ms in row[k]["server_ms_per_image"].values()), k
    assert report["output_cache"].startswith("off")
    # Builtins it registered for itself are gone again; the catalogue is as it was.
    assert {m["id"] for m in registry.list_models(sdag_graph, limit=1000)} == before
