"""zeroshot.py's pure helpers: the report, the hub-size table and the expert versions."""

from __future__ import annotations

from pathlib import Path

from mllgraph.eval import evaluate as ev
from mllgraph.eval import zeroshot


def _report() -> zeroshot.ZeroShotReport:
    recipe = ev.OracleRecipe("test_resnet", 2, per_class_images=None)
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
        baselines={"oracle": 1.0, "random": 0.5},
    )
    return zeroshot.ZeroShotReport(
        config={},
        main=ev.results_json([result]),
        summary=ev.summarise([result]),
        oracle={"description": recipe.describe()},
    )


def test_report_says_what_mll_and_the_oracle_use(tmp_path: Path):
    paths = zeroshot.write(_report(), tmp_path, "t")
    md = (tmp_path / "t.md").read_text()
    assert tmp_path / "t.md" in paths and tmp_path / "t.json" in paths
    assert ev.MLL_USES in md and ev.ORACLE_USES in md
    assert "no image or label of the task" in md
    assert "## Oracle recipe" in md and "test_resnet" in md
    assert "no training" not in md


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
