"""`mllgraph bench select --hub NAME` (mllgraph.eval.bench.select_real) on the tiny test hub:
new tasks from the hub's covered concepts, a new and a repeated request through gRPC (the
repeated one is the stored plan), a service started the way `mllgraph serve` starts it,
`mllgraph select --target`, and the report merged beside the synthetic series. One or two
requests each; no timing is asserted (figures are the benchmark's job)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mllgraph import cli
from mllgraph import client as mc
from mllgraph.eval.bench import select_real

pytestmark = pytest.mark.neo4j


@pytest.fixture(scope="module")
def hub(fashion_services: dict[str, Any]) -> dict[str, Any]:
    return fashion_services


@pytest.fixture(scope="module")
def concepts(hub: dict[str, Any], wordnet: Any) -> list[select_real.Concept]:
    return select_real.covered_concepts(hub["graph"], wordnet)


def test_covered_concepts_and_new_tasks(concepts: list[select_real.Concept]) -> None:
    probed = {c.wnid for c in concepts if c.probed}
    assert "n04133789" in probed  # sandal: labelled well, with probe images
    sandal = next(c for c in concepts if c.wnid == "n04133789")
    assert sandal.wordings[0] == "sandal"
    make = select_real.TaskMaker(concepts, seed=1)
    tasks = [make.make(3) for _ in range(6)]
    assert len({tuple(t) for t in tasks}) == 6  # never the same list twice
    assert all(len({n.lower() for n in t}) == 3 for t in tasks)
    wording_to_probed = {w: c.probed for c in concepts for w in c.wordings}
    assert all(wording_to_probed[n] for t in tasks for n in t)  # probed concepts first
    with pytest.raises(ValueError, match="fewer than"):
        make.make(len(concepts) + 1)


def test_new_then_repeated_through_grpc(
    hub: dict[str, Any], concepts: list[select_real.Concept]
) -> None:
    make = select_real.TaskMaker(concepts, seed=2)
    task = make.make(2)
    with mc.Client(selection=hub["addresses"]["selection"], settings=hub["settings"]) as client:
        seen: set[str] = set()
        new = select_real.select_series(client, [task], new=True, seen=seen)
        again = select_real.select_series(client, [task], new=True, seen=seen)
        repeated = select_real.select_series(client, [task], new=False)
    assert new["requests"] == 1 and new["errors"] == 0 and new["already_stored"] == 0
    assert set(select_real.PARTS) | {"grpc", "rest"} <= set(new)
    # Asked again, the store answers: not counted as a new task, counted as a repeated one.
    assert again["requests"] == 0 and again["already_stored"] == 1
    assert repeated["requests"] == 1 and "stacked" not in repeated


def test_serve_as_a_process_then_select_target(
    hub: dict[str, Any], concepts: list[select_real.Concept], tmp_path: Path, capsys
) -> None:
    env = {**os.environ, "MLLGRAPH_HOME": str(hub["settings"].home)}
    with select_real.served(env, ("selection",), tmp_path) as (ports, seconds):
        assert seconds["selection"] > 0
        task = select_real.TaskMaker(concepts, seed=3).make(2)
        target = f"127.0.0.1:{ports['selection']}"
        code = cli.main(["select", ", ".join(task), "--target", target], settings=hub["settings"])
        out = capsys.readouterr().out
        assert code == 0 and f"SelectHeads at {target}" in out and "timings:" in out
        code = cli.main(["select", ", ".join(task), "--target", target, "--json"])
        doc = json.loads(capsys.readouterr().out)
        assert code == 0 and [c["name"] for c in doc["classes"]] == task


def test_run_times_counts_failures() -> None:
    env = dict(os.environ)
    ok = select_real.run_times([["--help"]], env)
    bad = select_real.run_times([["no-such-command"]], env)
    assert ok["runs"] == 1 and ok["failures"] == 0 and ok["min_s"] == ok["median_s"] > 0
    assert bad["runs"] == 0 and bad["failures"] == 1 and "min_s" not in bad


def test_merge_report_keeps_the_synthetic_series(tmp_path: Path) -> None:
    (tmp_path / "bench_select.json").write_text(json.dumps({"sizes": {"10000": {"x": 1}}}))
    (tmp_path / "bench_select.md").write_text("# synthetic\n\nkept text\n")
    figures = {
        "hub": {"models": 2},
        "select": {"new_10_classes": {"requests": 3, "errors": 0, "grpc": {"p95_ms": 450.0}}},
        "commands": {"help": {"runs": 2, "failures": 0, "median_s": 0.2}},
    }
    select_real.merge_report(tmp_path, "tiny", figures)
    select_real.merge_report(tmp_path, "other", figures)
    select_real.merge_report(tmp_path, "tiny", figures)  # again: replaced, not added
    report = json.loads((tmp_path / "bench_select.json").read_text())
    assert report["sizes"] == {"10000": {"x": 1}}
    assert set(report["real_hubs"]) == {"tiny", "other"}
    md = (tmp_path / "bench_select.md").read_text()
    assert md.startswith("# synthetic\n\nkept text\n")
    assert md.count(select_real.BEGIN) == 1 and md.count("### `tiny`") == 1
    assert "new_10_classes p95 450 ms (goal at 10 classes < 300): NOT met (1.5x the goal)" in md
    assert "help median 0.2 s (goal < 0.5 s): met" in md


def test_new_half_unprobed_tasks_are_judged_by_the_new_task_goal() -> None:
    select = {
        "new_9_classes": {"grpc": {"p95_ms": 280.0}},
        select_real.HALF_UNPROBED: {"grpc": {"p95_ms": 600.0}},
    }
    said = select_real._goals({"select": select})
    assert "new_9_classes p95 280 ms (goal at 10 classes < 300): met" in said
    assert f"{select_real.HALF_UNPROBED} p95 600 ms (goal at 10 classes < 300): NOT met" in said


STORED_PROBE = """
import contextlib, io, json, sys
from mllgraph.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(['select', sys.argv[1]])
heavy = sorted({m.split('.')[0] for m in sys.modules} & set(json.loads(sys.argv[2])))
print(json.dumps({'code': code, 'stored': 'stored plan' in out.getvalue(), 'heavy': heavy}))
"""


def test_select_of_a_stored_plan_loads_no_model_library(
    hub: dict[str, Any], concepts: list[select_real.Concept]
) -> None:
    import subprocess
    import sys

    task = ", ".join(select_real.TaskMaker(concepts, seed=4).make(2))
    assert cli.main(["select", task], settings=hub["settings"]) == 0  # makes and stores it
    heavy = ["torch", "timm", "sklearn", "open_clip", "sentence_transformers", "nltk"]
    done = subprocess.run(
        [sys.executable, "-c", STORED_PROBE, task, json.dumps(heavy)],
        env={**os.environ, "MLLGRAPH_HOME": str(hub["settings"].home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "stored": True, "heavy": []}
