"""Emoji experts (mllgraph.hubs.emoji.experts / build) and the emoji run that uses them.

Pure parts first (groups, style plan, cache key), then, with the emoji packages installed:
the training set never holds a held-out-style image (by style and by source bytes), a tiny
expert trains and is cached, registration maps its heads to the right wnids and a bad input
leaves the catalogue unchanged (real Neo4j), and the tiny leave-one-style-out run with the
emoji experts on."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mllgraph.errors import FailedPrecondition, InvalidArgument
from mllgraph.hub.preprocess import InputSpec
from mllgraph.hubs.emoji import catalogue, split
from mllgraph.hubs.emoji import experts as ex
from mllgraph.settings import Settings
from tests.helpers import BANANA, CAT, DOG, HORSE, TINY_EMOJI_SUITE

SPEC = InputSpec(size=32, resize="resize", mean=(0.5,) * 3, std=(0.5,) * 3, channels=3)
SUITE = {
    **TINY_EMOJI_SUITE,
    "tasks": [
        *TINY_EMOJI_SUITE["tasks"],
        {  # a name the resolver cannot ground: listed as not scored, not run
            "name": "unreadable",
            "split": "test",
            "classes": [
                {"name": "qorpzyx", "wnid": "n02906254"},
                {"name": "banana", "wnid": BANANA},
                {"name": "horse", "wnid": HORSE},
            ],
        },
    ],
}
TINY = ex.Recipe(epochs=1, per_emoji=2, eval_per_emoji=1, size=32, batch_size=8)
FRUIT = ("banana", "red apple", "lemon", "grapes", "cherries")


def _rows(names: list[tuple[str, str, str]]) -> dict[str, list[split.ConceptRow]]:
    """group -> rows from (hexcode, wnid, group) triples."""
    out: dict[str, list[split.ConceptRow]] = {}
    for i, (hexcode, wnid, group) in enumerate(names):
        out.setdefault(group, []).append(split.ConceptRow(hexcode, f"e{i}", wnid, f"x{i}.n.01"))
    return out


def test_groups_are_split_skipped_and_excluded() -> None:
    big = [(f"1F{400 + i:03X}", f"n{10000000 + i}", "big") for i in range(45)]
    small = [(f"1F{500 + i:03X}", f"n{20000000 + i}", "small") for i in range(4)]
    shared = [("1F600", "n30000000", "mid"), ("1F601", "n30000000", "mid")]  # one concept
    mid = [(f"1F{610 + i:03X}", f"n{30000001 + i}", "mid") for i in range(5)]
    planned, skipped = ex.plan_groups(_rows(big + small + shared + mid))
    by_name = {g.name: g for g in planned}
    assert set(by_name) == {"big.1", "big.2", "mid"}
    assert [len(by_name[n].wnids) for n in ("big.1", "big.2")] == [22, 23]
    assert set(by_name["big.1"].wnids).isdisjoint(by_name["big.2"].wnids)
    assert "small" in skipped and "4 concepts" in skipped["small"]
    # Two emoji of one concept are one head, and both are its training rows.
    assert len(by_name["mid"].wnids) == 6 and len(by_name["mid"].rows) == 7
    # Excluding a concept can take a group under the minimum.
    planned, skipped = ex.plan_groups(
        _rows(mid + shared), exclude={"n30000000", "n30000001"}, min_concepts=5
    )
    assert planned == [] and "mid" in skipped


def test_choose_groups_names_what_does_not_exist() -> None:
    planned, _ = ex.plan_groups(ex.read_groups())
    assert {g.name for g in ex.choose_groups(planned, ["mammals"])} == {"mammals.1", "mammals.2"}
    with pytest.raises(InvalidArgument, match="'mamals'.*known: .*mammals"):
        ex.choose_groups(planned, ["fruit", "mamals"])


def test_style_plan_keeps_experts_probes_and_tasks_apart() -> None:
    for held_out in catalogue.STYLES:
        train, probe = ex.style_plan(held_out)
        assert held_out not in train and held_out not in probe
        assert set(train).isdisjoint(probe) and len(train) == 2 and len(probe) == 1
    assert ex.style_plan("twemoji") == (("fluent-flat", "fluent-modern"), ("openmoji",))
    with pytest.raises(InvalidArgument, match="held-out style twemoji"):
        ex.check_train_styles(["twemoji", "openmoji"], held_out="twemoji")
    with pytest.raises(InvalidArgument, match="leave one out"):
        ex.check_train_styles(catalogue.STYLES)
    with pytest.raises(InvalidArgument, match="emoji style 'noto'"):
        ex.check_train_styles(["noto"])


def test_cache_key_depends_on_every_input() -> None:
    planned, _ = ex.plan_groups(ex.read_groups())
    fruit, birds = ex.choose_groups(planned, ["fruit"])[0], ex.choose_groups(planned, ["birds"])[0]
    spec = ex.ExpertSpec(fruit, "test_resnet", ("fluent-flat", "openmoji"), 0, ex.Recipe())
    key = ex.cache_key(spec)
    assert key == ex.cache_key(dataclasses.replace(spec))
    others = [
        dataclasses.replace(spec, group=birds),
        dataclasses.replace(spec, arch="test_efficientnet"),
        dataclasses.replace(spec, train_styles=("fluent-flat", "fluent-modern")),
        dataclasses.replace(spec, seed=1),
        dataclasses.replace(spec, recipe=ex.Recipe(epochs=3)),
        dataclasses.replace(spec, group=dataclasses.replace(fruit, rows=fruit.rows[:-1])),
    ]
    keys = {ex.cache_key(o) for o in others}
    assert len(keys) == len(others) and key not in keys
    # Style order is not part of the identity (plan_experts sorts them anyway).
    flipped = dataclasses.replace(spec, train_styles=("openmoji", "fluent-flat"))
    assert ex.cache_key(flipped) == key


def test_plan_refuses_a_bad_arch_and_recipe() -> None:
    planned, _ = ex.plan_groups(ex.read_groups())
    with pytest.raises(InvalidArgument, match="archs: resnet9000"):
        ex.plan_experts(planned[:1], ["resnet9000"], ["openmoji"])
    with pytest.raises(InvalidArgument, match="recipe epochs"):
        ex.plan_experts(planned[:1], ["test_resnet"], ["openmoji"], recipe=ex.Recipe(epochs=0))


# -- with the emoji packages ------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_group() -> ex.ConceptGroup:
    """Five fruit concepts, as plan_groups would make them."""
    rows = [r for r in ex.read_groups()["fruit"] if r.name in FRUIT]
    planned, _ = ex.plan_groups({"fruit": rows})
    (group,) = planned
    assert len(group.wnids) == 5
    return group


def test_training_set_never_holds_a_held_out_image(
    emoji_cache: Path, small_group: ex.ConceptGroup
) -> None:
    cat = catalogue.load(emoji_cache)
    train = ("fluent-flat", "fluent-modern")
    data = ex.training_set(cat, small_group, train, per_emoji=2, seed=0, side=32)
    assert {t.style for t in data.items} == set(train)
    assert len(data.images) == len(data.labels) == 2 * 2 * len(small_group.rows)
    assert sorted(set(data.labels.tolist())) == list(range(5))
    for held_out in ("twemoji", "openmoji"):
        assert ex.training_leaks(data.items, held_out, cat) == []
    # What the check catches: an image of the held-out style, and a source with its bytes.
    tw = dataclasses.replace(data.items[0], style="twemoji")
    held = split.file_hash(cat.get(data.items[1].hexcode).sources["twemoji"])
    same_bytes = dataclasses.replace(data.items[1], source_sha256=held)
    found = ex.training_leaks([tw, same_bytes], "twemoji", cat)
    assert len(found) == 2 and "in twemoji" in found[0] and "bytes" in found[1]
    # The held-out style cannot be asked for.
    with pytest.raises(InvalidArgument, match="twemoji"):
        ex.training_set(
            cat, small_group, ("twemoji", *train), per_emoji=1, seed=0, held_out="twemoji"
        )
    with pytest.raises(InvalidArgument, match="leave one out"):
        ex.training_set(cat, small_group, catalogue.STYLES, per_emoji=1, seed=0)


def test_an_expert_trains_and_is_cached(
    emoji_cache: Path, small_group: ex.ConceptGroup, tmp_path: Path
) -> None:
    import json

    cat = catalogue.load(emoji_cache)
    specs = ex.plan_experts([small_group], ["test_resnet"], ["fluent-flat", "fluent-modern"],
                            recipe=TINY, held_out="twemoji")  # fmt: skip
    logged: list[str] = []
    (path,) = ex.train_experts(cat, specs, tmp_path, held_out="twemoji", log=logged.append)
    meta = json.loads(path.read_text())
    assert meta["wnids"] == list(small_group.wnids) and meta["num_classes"] == 5
    assert meta["train_styles"] == ["fluent-flat", "fluent-modern"]
    assert set(meta["never_seen_styles"]) == {"openmoji", "twemoji"}
    assert 0.0 <= meta["heldout_accuracy"] <= 1.0 and meta["cache_key"] in path.name
    assert len(logged) == 1
    weights = ex.sibling(path, ".safetensors")
    mtime = weights.stat().st_mtime_ns
    again = ex.train_experts(cat, specs, tmp_path, held_out="twemoji", log=logged.append)
    assert again == [path] and len(logged) == 1  # nothing trained the second time
    assert weights.stat().st_mtime_ns == mtime
    # Asking it to hold out a style it was trained on stops before training.
    other = ex.plan_experts([small_group], ["test_efficientnet"], ["fluent-flat"], recipe=TINY)
    with pytest.raises(InvalidArgument, match="held-out style fluent-flat"):
        ex.train_experts(cat, other, tmp_path / "x", held_out="fluent-flat")


def test_groups_trained_in_two_processes_are_the_ones_trained_here(
    emoji_cache: Path, small_group: ex.ConceptGroup, tmp_path: Path
) -> None:
    cat = catalogue.load(emoji_cache)
    groups = [small_group, dataclasses.replace(small_group, name="fruit-again")]
    specs = ex.plan_experts(groups, ["test_resnet"], ["fluent-flat"], recipe=TINY,
                            held_out="twemoji")  # fmt: skip
    logged: list[str] = []
    here = ex.train_experts(cat, specs, tmp_path / "a", held_out="twemoji", log=lambda _m: None)
    there = ex.train_experts(
        cat, specs, tmp_path / "b", held_out="twemoji", log=logged.append, workers=2
    )
    assert [p.name for p in there] == [p.name for p in here] and len(logged) == 2
    for a, b in zip(here, there, strict=True):
        weights = ex.sibling(a, ".safetensors"), ex.sibling(b, ".safetensors")
        assert weights[0].read_bytes() == weights[1].read_bytes(), a.name
    # A worker's refusal reaches the caller as it is.
    other = ex.plan_experts(groups, ["test_efficientnet"], ["fluent-flat"], recipe=TINY)
    with pytest.raises(InvalidArgument, match="held-out style fluent-flat"):
        ex.train_experts(cat, other, tmp_path / "x", held_out="fluent-flat", workers=2)


def test_a_pretrained_expert_reuses_the_builtin_backbone_and_trains_its_head(
    emoji_cache: Path, small_group: ex.ConceptGroup, tmp_path: Path
) -> None:
    """tf_efficientnet_lite0 with the builtin Lite0's weights computes what the builtin does;
    the expert keeps that backbone, learns a head for its group, and is saved as a plain timm
    model the generic loader rebuilds."""
    import json

    import torch

    from mllgraph.hub.loading import build_timm, load_efficientnet_lite, load_weights

    builtin, spec, _ = load_efficientnet_lite("efficientnet_lite0")
    copy = ex.pretrained_backbone("tf_efficientnet_lite0")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), builtin(x), atol=1e-4, rtol=1e-4)
    assert TINY.input_spec("tf_efficientnet_lite0") == spec  # its backbone's input, not 32 px

    cat = catalogue.load(emoji_cache)
    specs = ex.plan_experts([small_group], ["tf_efficientnet_lite0"], ["fluent-flat"],
                            recipe=TINY, held_out="twemoji")  # fmt: skip
    (path,) = ex.train_experts(cat, specs, tmp_path, held_out="twemoji", log=lambda _m: None)
    meta = json.loads(path.read_text())
    assert meta["pretrained_from"] == "efficientnet_lite0" and meta["num_classes"] == 5
    assert InputSpec.from_dict(meta["input_spec"]) == spec
    # Training images of its own style: a linear head on ImageNet features gets most right.
    assert meta["heldout_accuracy"] >= 0.6
    model = build_timm(meta["arch"], meta["num_classes"], 3)
    load_weights(model, ex.sibling(path, ".safetensors"))
    model.eval()
    with torch.no_grad():  # the backbone was frozen: the same features as the builtin's
        torch.testing.assert_close(
            model.forward_features(x), copy.forward_features(x), atol=1e-4, rtol=1e-4
        )
        assert model(x).shape == (2, 5)


# -- registration and the run (real Neo4j) ----------------------------------------------------


@pytest.fixture(scope="module")
def hub(sdag_graph: Any, neo4j_settings: Settings, emoji_cache: Path) -> Any:
    settings = replace(neo4j_settings, device="cpu", emoji_cache=emoji_cache)
    return sdag_graph, settings


@pytest.mark.neo4j
def test_registration_maps_heads_and_refuses_bad_input(
    hub: Any, small_group: ex.ConceptGroup, cleanup: list[str]
) -> None:
    from mllgraph.hub import registry
    from mllgraph.hubs.emoji import build

    graph, settings = hub
    version = registry.catalogue_version(graph)
    with pytest.raises(InvalidArgument, match="'no-such-group'"):
        build.plan(train_styles=["openmoji"], groups=["fruit", "no-such-group"])
    recipe = dataclasses.replace(TINY, per_emoji=10)  # 50 images: enough for a domain profile
    specs = ex.plan_experts([small_group], ["test_resnet"], ["openmoji"], recipe=recipe, seed=7)
    # A held-out style the experts were trained on: refused before anything is registered.
    with pytest.raises(InvalidArgument, match="held-out style openmoji"):
        build.build_experts(graph, settings, specs, held_out="openmoji", label=False)
    assert registry.catalogue_version(graph) == version
    report = build.build_experts(graph, settings, specs, held_out="twemoji", label=False)
    cleanup.extend(report.models)
    (mid,) = report.models
    heads = registry.heads(graph, mid)
    assert [h["declared_wnid"] for h in heads] == list(small_group.wnids)
    record = registry.get_model(graph, mid)
    assert record["metadata"]["train_styles"] == "openmoji"
    assert build.train_styles_of(record) == {"openmoji"}
    assert record.get("domain_sha256")  # a domain profile of its training images


@pytest.mark.neo4j
def test_emoji_run_with_experts(hub: Any, tmp_path: Path) -> None:
    from mllgraph.eval import emoji_suite, emoji_world
    from mllgraph.hub import loading, probes, registry

    graph, settings = hub
    uid = uuid.uuid4().hex[:8]

    model = loading.build_timm("test_efficientnet", 3, 3)
    base = registry.register_model(
        graph, settings,
        registry.Registration(
            name=f"emojiexp-{uid}", arch="test_efficientnet",
            weights_path=loading.save_weights(model, tmp_path / "a.safetensors"),
            wnids=[DOG, CAT, BANANA], input_spec=SPEC,
        ),
    ).record["id"]  # fmt: skip
    config = emoji_world.EmojiConfig(
        held_out=("twemoji",), per_style=2, per_emoji=1, side=64, budget=2, models=(base,),
        work_dir=tmp_path / "probes", out_dir=tmp_path / "reports", emoji_experts=True,
        expert_groups=("fruit", "mammals"), expert_archs=("test_resnet",), expert_recipe=TINY,
    )  # fmt: skip
    added: list[str] = []
    try:
        report = emoji_world.run(
            graph, settings, emoji_suite.parse_suite(SUITE), config, lambda _m: None
        )
        (run,) = report.runs
        added = list(run.experts["models"])
        assert run.train_styles == ["fluent-flat", "fluent-modern"]
        assert run.probe_styles == ["openmoji"]
        # Experts per planned group (mammals is split in two), each trained without S.
        groups = {e["group"] for e in run.experts["models"].values()}
        assert groups == {"fruit", "mammals.1", "mammals.2"}
        for mid in added:
            assert "twemoji" not in registry.get_model(graph, mid)["metadata"]["train_styles"]
        # The curve: ImageNet-only (here: the one base model), + each group, full hub.
        steps = [p["step"] for p in run.curve]
        assert steps[0] == "ImageNet experts" and steps[-1] == "+ every emoji expert"
        assert len(steps) == 4 and run.curve[-1]["models"] == 1 + len(added)
        assert set(report.hub_comparison) >= {"all"}
        assert report.hub_comparison["all"]["tasks"] == 2
        assert list(report.counts["tasks_not_scored"]) == ["unreadable"]
        assert "qorpzyx" in report.counts["tasks_not_scored"]["unreadable"]
        # The full hub's plans may use the emoji experts; the base run's may not.
        base_models = {m for r in report.imagenet_only_results for m in r["models"]}
        assert base_models <= {base}
        # Chipmunk is unprobed: no expert declares it, so it stays uncovered.
        animals = next(r for r in run.results if r["task"].endswith("/animals"))
        assert "chipmunk" in " ".join(animals["uncovered"])
        paths = emoji_world.write(report, config.out_dir, "tiny")
        first = paths[0].read_text().splitlines()[0]
        assert "probe images from openmoji" in first
        assert "emoji experts trained on fluent-flat, fluent-modern" in first
        # An expert trained on the probe style is caught.
        with pytest.raises(FailedPrecondition, match="trained on"):
            emoji_world.check_experts(graph, added, "twemoji", ("fluent-flat",))
    finally:
        for mid in [base, *added]:
            registry.delete_model(graph, settings, mid)
        for ps in emoji_world.emoji_probe_sets(graph):
            probes.remove_probe_set(graph, ps.id, settings)
    assert np.isfinite(report.overall["all"]["mean_accuracy"]["mll"])
