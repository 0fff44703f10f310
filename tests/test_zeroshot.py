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
