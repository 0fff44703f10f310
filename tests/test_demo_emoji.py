"""The demo's two worlds (mllgraph.eval.demo, demo_emoji): the emoji step end to end on the
tiny emoji suite (two small random experts standing in for the ImageNet ones, two tiny emoji
experts trained for the hub-size curve, real Neo4j), and the Fashion world's labelling.

What can fail: the held-out style, the probe and training styles and every reference must be
printed and written; the curve must go from the stand-in experts alone to every emoji expert;
and the catalogue must be as it was before the step (no emoji probe set, no model the step
registered), so that a second demo run's Fashion world reads what the first one read.
"""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from mllgraph.eval import demo, demo_emoji, emoji_suite, emoji_world
from mllgraph.eval.zeroshot import ZeroShotReport
from mllgraph.hub import registry
from mllgraph.hubs.emoji import build as emoji_build
from mllgraph.hubs.emoji import experts as emoji_experts
from mllgraph.settings import Settings
from tests.helpers import APPLE, BANANA, CAT, DOG, HORSE, TINY_EMOJI_SUITE, register_stand_ins

TINY = emoji_experts.Recipe(epochs=1, per_emoji=2, eval_per_emoji=1, size=32, batch_size=8)
REPO = Path(__file__).resolve().parents[1]


def _console() -> Console:
    return Console(file=io.StringIO(), width=200, record=True)


def test_the_expert_groups_follow_the_tasks_concepts() -> None:
    suite = emoji_suite.parse_suite(TINY_EMOJI_SUITE)
    groups = demo_emoji.expert_groups(suite, 5)
    planned, _ = emoji_experts.plan_groups(emoji_experts.read_groups(), exclude=suite.unprobed)
    holding = {g.name for g in planned if set(g.wnids) & {DOG, CAT, HORSE, BANANA, APPLE}}
    assert set(groups) == holding and len(groups) >= 2
    # The group holding most of the tasks' concepts comes first; one group asked, one given.
    assert demo_emoji.expert_groups(suite, 1) == groups[:1]


@pytest.mark.neo4j
def test_the_emoji_step_end_to_end_leaves_the_catalogue_as_it_was(
    sdag_graph: Any, neo4j_settings: Settings, emoji_cache: Path, tmp_path: Path
) -> None:
    graph = sdag_graph
    settings = replace(neo4j_settings, device="cpu", emoji_cache=emoji_cache)
    uid = uuid.uuid4().hex[:8]
    stand_ins: list[str] = []
    try:
        register_stand_ins(graph, settings, f"demoemoji-{uid}", tmp_path, stand_ins)
        suite = emoji_suite.parse_suite(TINY_EMOJI_SUITE)
        cfg = demo_emoji.config(
            suite,
            tmp_path / "reports",
            per_style=3,  # two probe styles: 6 >= stacked.MIN_IMAGES_PER_CLASS
            per_emoji=2,
            side=64,
            budget=2,
            models=tuple(stand_ins),
            expert_groups=demo_emoji.expert_groups(suite, 2),
            expert_recipe=TINY,
            work_dir=tmp_path / "probes",
        )
        before = demo_emoji.model_ids(graph)
        console = _console()
        report, paths, restored = demo_emoji.run(graph, settings, console, suite=suite, cfg=cfg)
        text = console.export_text()

        (run,) = report.runs
        assert run.held_out == "twemoji" and run.probe_styles == ["openmoji", "fluent-flat"]
        assert run.train_styles == ["fluent-modern"]
        assert run.none_of_these == {}  # not measured in the demo (EmojiConfig.none_of_these)
        # Printed: which style was held out, where probes and training images came from,
        # MLL beside every reference, and the curve from the stand-ins to every emoji expert.
        assert "held-out style twemoji" in text and "probes from openmoji, fluent-flat" in text
        assert "emoji experts trained on fluent-modern" in text
        methods = set(report.overall["all"]["mean_accuracy"])
        assert {"single", "uniform", "hindsight", "stack_all", "chance"} <= methods
        for method in methods - {"mll"}:
            assert f"│ {method} " in text
        assert "│ MLL " in text
        steps = [p["step"] for p in run.curve]
        assert steps[0] == "ImageNet experts" and steps[-1] == "+ every emoji expert"
        assert len(steps) == 3  # two groups: one step between the ends
        assert [p["models"] for p in run.curve] == [2, 3, 4]
        assert "hub-size curve" in text and "+ every emoji expert" in text
        # Written: the emoji world's report, with its config and curve.
        assert [p.name for p in paths] == ["demo_emoji.md", "demo_emoji.json"]
        data = json.loads(paths[1].read_text())
        assert data["config"]["name"] == "demo_emoji" and data["runs"][0]["curve"] == run.curve
        assert "never twemoji" in paths[0].read_text().splitlines()[0]
        # Restored: no emoji probe set, the experts it registered gone (their weights cached),
        # the models there before still there.
        assert emoji_world.emoji_probe_sets(graph) == []
        assert demo_emoji.model_ids(graph) == before
        assert len(restored.deleted) == 2 and not set(restored.deleted) & before
        assert restored.probe_sets_removed == run.probe_concepts * len(
            run.probe_styles
        )  # a set each
        assert not (tmp_path / "probes").exists()
        assert len(list(emoji_build.cache_dir(settings).glob("*.safetensors"))) >= 2
    finally:
        for mid in stand_ins:
            registry.delete_model(graph, settings, mid)


def test_the_fashion_world_is_labelled_probe_pool() -> None:
    """The Fashion half of the demo, rendered from the committed demo report."""
    data = json.loads((REPO / "reports" / "demo.json").read_text())
    console = _console()
    demo.show_fashion(console, ZeroShotReport(**data))
    text = console.export_text()
    assert "Fashion-MNIST world (probe-pool)" in text
    assert "drawn from the same distribution as the test images" in text
    for task in data["main"]:
        assert task["task"] in text
