"""Leave-one-style-out evaluation on the emoji world (mllgraph.eval.emoji_world), end to end on
a tiny hub: two small randomly initialised experts declaring a handful of emoji concepts, one
held-out style, probe sets attached through `probes add --folder`'s code, real Neo4j.

What it checks can fail: no probe set in the graph (and no probe image) comes from the held-out
style, the unprobed concept gets no probe set, and every method is scored on the held-out
style's images only."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mllgraph.errors import FailedPrecondition
from mllgraph.eval import emoji_suite, emoji_world
from mllgraph.hub import probes, registry
from mllgraph.hubs.emoji import catalogue
from mllgraph.settings import Settings
from tests.helpers import (
    APPLE,
    BANANA,
    CAT,
    CHIPMUNK,
    DOG,
    HORSE,
    TINY_EMOJI_SUITE,
    register_stand_ins,
)

pytestmark = pytest.mark.neo4j

HELD_OUT = "twemoji"
SUITE = TINY_EMOJI_SUITE


@pytest.fixture(scope="module")
def tiny_hub(
    sdag_graph: Any, neo4j_settings: Settings, emoji_cache: Path, tmp_path_factory: Any
) -> Any:
    graph = sdag_graph
    settings = replace(neo4j_settings, device="cpu", emoji_cache=emoji_cache)
    tmp = tmp_path_factory.mktemp("emoji_eval")
    uid = uuid.uuid4().hex[:8]
    models: list[str] = []
    try:
        register_stand_ins(graph, settings, f"emojieval-{uid}", tmp, models)
        yield {"graph": graph, "settings": settings, "models": tuple(models), "tmp": tmp}
    finally:
        for mid in models:
            registry.delete_model(graph, settings, mid)
        for ps in emoji_world.emoji_probe_sets(graph):
            probes.remove_probe_set(graph, ps.id, settings)


def test_held_out_style_end_to_end(tiny_hub: dict[str, Any]) -> None:
    graph, settings = tiny_hub["graph"], tiny_hub["settings"]
    suite = emoji_suite.parse_suite(SUITE)
    config = emoji_world.EmojiConfig(
        held_out=(HELD_OUT,),
        per_style=2,
        per_emoji=2,
        side=64,
        budget=2,
        models=tiny_hub["models"],
        work_dir=tiny_hub["tmp"] / "probes",
        out_dir=tiny_hub["tmp"] / "reports",
    )
    report = emoji_world.run(graph, settings, suite, config, log=lambda _m: None)

    (run,) = report.runs
    assert run.held_out == HELD_OUT and HELD_OUT not in run.probe_styles
    # The style split: what the graph holds now comes from the probe styles only, and the
    # unprobed concept has no set.
    sets = emoji_world.emoji_probe_sets(graph)
    assert {p.source for p in sets} == {f"emoji:{s}" for s in run.probe_styles}
    assert {p.wnid for p in sets} == {DOG, CAT, HORSE, BANANA, APPLE}
    assert run.probe_images == 5 * 3 * 2  # probed concepts x probe styles x per_style
    # Task images: the held-out style only, every emoji of the six concepts, 2 each.
    cat = catalogue.load(settings.emoji_cache)
    emoji = [r for r in emoji_world.emoji_split.read_concepts(emoji_world.CONCEPTS_FILE)]
    n_emoji = sum(
        1
        for r in emoji
        if r.wnid in {DOG, CAT, HORSE, BANANA, APPLE, CHIPMUNK}
        and HELD_OUT in cat.get(r.hexcode).sources
    )
    assert run.task_images == 2 * n_emoji
    by_task = {r["task"]: r for r in run.results}
    assert set(by_task) == {f"{HELD_OUT}/animals", f"{HELD_OUT}/fruit-horse"}
    for r in run.results:
        assert 0.0 <= r["mll"] <= 1.0 and r["estimated"] is not None
        assert r["baselines"]["chance"] == pytest.approx(1 / 3)
        assert {"single", "uniform", "hindsight"} <= set(r["baselines"])
    # stack-all everywhere: with chipmunk (no probe images), fitted on the other classes
    assert "stack_all" in by_task[f"{HELD_OUT}/fruit-horse"]["baselines"]
    assert "stack_all" in by_task[f"{HELD_OUT}/animals"]["baselines"]
    # chipmunk has no probe set and no expert declares it: uncovered
    assert "chipmunk" in " ".join(by_task[f"{HELD_OUT}/animals"]["uncovered"])
    # "None of these" per task on the held-out style: the unrelated concepts' images are the
    # negatives (no task concept is under or above another here, so all of the others).
    none = {r["task"]: r for r in run.none_of_these["tasks"]}
    assert set(none) == {"animals", "fruit-horse"}
    for row in none.values():
        assert "why" in row or (0.0 <= row["auroc"] <= 1.0 and row["negatives"] > 0)
    paths = emoji_world.write(report, config.out_dir, "tiny")
    first = paths[0].read_text().splitlines()[0]
    assert f"never {HELD_OUT}" in first and "openmoji" in first


def test_a_held_out_probe_set_stops_the_run(tiny_hub: dict[str, Any]) -> None:
    graph, settings = tiny_hub["graph"], tiny_hub["settings"]
    cat = catalogue.load(settings.emoji_cache)
    rows = [r for r in emoji_world.emoji_split.read_concepts(emoji_world.CONCEPTS_FILE)]
    rows = [r for r in rows if r.wnid == DOG]
    style_split = emoji_world.emoji_split.split(HELD_OUT)
    folder = tiny_hub["tmp"] / "leak"
    manifest = emoji_world.attach_probes(
        graph, settings, cat, rows, style_split, folder, per_style=1, seed=0, side=64
    )
    tasks = emoji_world.emoji_split.task_images(cat, rows, style_split, per_emoji=1, side=64)
    emoji_world.check_no_leak(graph, manifest, tasks, HELD_OUT)  # clean
    # A probe set of the held-out style in the graph (as a user might attach one) is caught.
    image = tasks[0].image[None]
    ps, _ = probes.add_probe_set(
        graph, settings, concept=DOG, images=image, set_id=f"leak-{uuid.uuid4().hex[:6]}",
        source=f"emoji:{HELD_OUT}",
    )  # fmt: skip
    try:
        with pytest.raises(FailedPrecondition, match=f"held-out style {HELD_OUT}"):
            emoji_world.check_no_leak(graph, manifest, tasks, HELD_OUT)
    finally:
        probes.remove_probe_set(graph, ps.id, settings)
    # ... and so is a probe image made from a held-out source.
    tainted = [{**manifest[0], "source_sha256": tasks[0].source_sha256}]
    with pytest.raises(FailedPrecondition, match="bytes"):
        emoji_world.check_no_leak(graph, tainted, tasks, HELD_OUT)
