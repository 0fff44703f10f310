"""zeroshot.py's pure helpers: the report, the hub-size table and the expert versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from mllgraph.eval import evaluate as ev
from mllgraph.eval import references, summary, zeroshot


def _report() -> zeroshot.ZeroShotReport:
    recipe = references.ExpertRecipe("test_resnet", 2, per_class_images=None)
    result = ev.TaskResult(
        task="a-b",
        classes=["a", "b"],
        images=10,
        mll=0.9,
        estimated=0.8,
        models=["m"],
        uncovered=[],
        selection_ms=1.0,
        classify_ms=1.0,
        baselines={"supervised": 1.0, "expert_recipe": 0.95, "random": 0.5},
    )
    return zeroshot.ZeroShotReport(
        config={},
        main=summary.results_json([result]),
        summary=summary.summarise([result]),
        expert_recipe={"description": recipe.describe()},
        supervised={"description": "a small CNN"},
    )


def test_report_says_what_mll_and_the_references_use(tmp_path: Path):
    paths = zeroshot.write(_report(), tmp_path, "t")
    md = (tmp_path / "t.md").read_text()
    assert tmp_path / "t.md" in paths and tmp_path / "t.json" in paths
    assert ev.MLL_USES in md and ev.REFERENCES_USE in md
    # The first line after the title says what MLL used, and that Fashion is probe-pool.
    first = md.splitlines()[2]
    assert first.startswith("MLL used: the task's class names") and "same distribution" in first
    assert "no image or label of the task" in md
    assert "oracle" not in md.lower()
    assert "Tasks with an uncovered class (no head: dev 0, test 0; not chosen: dev 0" in md
    assert "## Expert-recipe model" in md and "test_resnet" in md
    assert "## Supervised reference" in md and "a small CNN" in md
    assert "no training" not in md
    assert "## Run" in md and "commit `" in md


def test_version_key_orders_numbers_numerically():
    versions = ["e10-mall-p0", "e2-m4000-p0", "e2-m800-p0", "e1-mall-p0"]
    assert sorted(versions, key=zeroshot.version_key) == [
        "e1-mall-p0",
        "e2-m800-p0",
        "e2-m4000-p0",
        "e10-mall-p0",
    ]
    assert sorted(versions) != sorted(versions, key=zeroshot.version_key)  # plain str order


def _row(name: str, version: str, created: str) -> dict:
    return {"id": f"{name}@{version}", "name": name, "version": version, "created_at": created}


def test_pick_versions_prefers_the_runs_recipe_then_the_newest():
    t1, t2 = "2026-11-30T10:00:00Z", "2026-11-30T11:00:00Z"
    rows = [
        _row("fashion-0-000-a", "e2-mall-p0", t1),
        _row("fashion-0-000-a", "e10-mall-p0", t1),  # same time: the higher version wins
        _row("fashion-0-001-b", "e10-mall-p0", t1),
        _row("fashion-0-001-b", "e2-mall-p0", t2),  # registered later: the newest
    ]
    assert zeroshot.pick_versions(rows) == {
        "fashion-0-000-a": "fashion-0-000-a@e10-mall-p0",
        "fashion-0-001-b": "fashion-0-001-b@e2-mall-p0",
    }
    assert zeroshot.pick_versions(rows, recipe="e10-mall-p0") == {
        "fashion-0-000-a": "fashion-0-000-a@e10-mall-p0",
        "fashion-0-001-b": "fashion-0-001-b@e10-mall-p0",
    }
    # A name without the recipe's version falls back to the newest.
    assert zeroshot.pick_versions(rows[:2], recipe="e3-mall-p0") == {
        "fashion-0-000-a": "fashion-0-000-a@e10-mall-p0"
    }


def test_recipe_matches_the_hub_builds_version():
    config = zeroshot.ZeroShotConfig(epochs=10, max_train_per_expert=None)
    assert zeroshot._recipe(config) == "e10-mall-p0"
    config = zeroshot.ZeroShotConfig(epochs=1, max_train_per_expert=4000)
    assert zeroshot._recipe(config) == "e1-m4000-p0"


HUB_ROWS = [
    {"experts": 10, "seed": 0, "mll": 0.8, "random": 0.5, "supervised": 0.9},
    {"experts": 10, "seed": 1, "mll": 0.6, "random": 0.7, "supervised": 0.9},
    {"experts": 5, "seed": 0, "mll": 0.5, "random": None, "supervised": 0.9},
]


def test_aggregate_is_mean_and_std_over_seeds_per_size():
    agg = zeroshot._aggregate(HUB_ROWS)
    assert list(agg) == [5, 10]  # sizes ascending
    assert agg[10]["mll"] == pytest.approx((0.7, 0.1))
    assert agg[10]["random"] == pytest.approx((0.6, 0.1))
    assert agg[5]["mll"] == pytest.approx((0.5, 0.0))
    assert "random" not in agg[5]  # a missing figure is left out, not counted as 0
    assert "seed" not in agg[10] and "experts" not in agg[10]


def test_hub_size_table():
    lines = zeroshot._hub_size_table(HUB_ROWS)
    assert lines[0] == "| experts | mll | random | supervised |"
    assert lines[2] == "| 5 | 0.500 ± 0.000 |  | 0.900 ± 0.000 |"
    assert lines[3] == "| 10 | 0.700 ± 0.100 | 0.600 ± 0.100 | 0.900 ± 0.000 |"


def test_the_report_plots_the_hub_size_study(tmp_path: Path):
    report = _report()
    report.hub_size = HUB_ROWS
    paths = zeroshot.write(report, tmp_path, "t")
    assert (tmp_path / "t_hub_size.png").stat().st_size > 0 and len(paths) == 3
    assert "| 10 | 0.700 ± 0.100" in (tmp_path / "t.md").read_text()


def test_hub_size_rows_of_each_half_are_aggregated_apart(tmp_path: Path):
    rows = HUB_ROWS + [
        {"experts": 10, "seed": 0, "split": "dev", "mll": 0.9},
        {"experts": 10, "seed": 1, "split": "dev", "mll": 0.7},
        {"experts": 10, "seed": 0, "split": "test", "mll": 0.4},
    ]
    assert zeroshot._aggregate(rows)[10]["mll"] == pytest.approx((0.7, 0.1))  # whole suite
    assert zeroshot._aggregate(rows, "dev")[10]["mll"] == pytest.approx((0.8, 0.1))
    assert zeroshot._aggregate(rows, "test") == {10: {"mll": pytest.approx((0.4, 0.0))}}
    report = _report()
    report.hub_size = rows
    zeroshot.write(report, tmp_path, "t")
    md = (tmp_path / "t.md").read_text()
    assert "`dev` half:" in md and "`test` half:" in md
    assert "## Both halves of the suite" in md


def test_halves_rows_for_the_console():
    report = _report()
    report.halves = summary.summarise_halves([ev.TaskResult(**r) for r in report.main])
    rows = zeroshot.halves_rows(report)
    assert [r["method"] for r in rows] == ["mll", "expert_recipe", "random", "supervised"]
    assert rows[0]["all (1)"] == "0.900" and rows[0]["all: % of supervised"] == "90.0%"
    assert rows[0]["dev (0)"] == "" and rows[0]["test: % of supervised"] == ""
