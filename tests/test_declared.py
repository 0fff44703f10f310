"""Declared, unmeasured coverage on a real Neo4j: the packaged EfficientNet-Lite0 (1,000
ImageNet heads, registered offline from its wheel, never labelled here) serves the task
classes its heads declare, and a plan made that way classifies real photos
(scikit-image's chelsea the cat and a cup of coffee).

Every selection is restricted to this module's own model (`SelectOptions.models`), so other
models in a shared test database never change the plans."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from mllgraph.errors import NotFound
from mllgraph.hub import loading, registry
from mllgraph.plan import request as plan_request
from mllgraph.select import run as select
from mllgraph.settings import Settings

pytestmark = pytest.mark.neo4j

BUILTIN = "efficientnet_lite0"
TABBY, COFFEE_MUG = "n02123045", "n03063599"
# The domestic cats ImageNet-1k declares: tabby, tiger cat, Persian, Siamese, Egyptian cat.
DOMESTIC_CATS = {"n02123045", "n02123159", "n02123394", "n02123597", "n02124075"}
TASK = ["tabby cat", "coffee mug", "space rocket", "motorcycle"]


@pytest.fixture(scope="module")
def lite(sdag_graph: Any, neo4j_settings: Settings) -> Iterator[str]:
    reg = registry.Registration(name=f"tdecl-{uuid.uuid4().hex[:8]}", builtin=BUILTIN)
    mid = registry.register_model(sdag_graph, neo4j_settings, reg).record["id"]
    try:
        yield mid
    finally:
        with contextlib.suppress(NotFound):
            registry.delete_model(sdag_graph, neo4j_settings, mid)


@pytest.fixture(scope="module")
def resolver(neo4j_settings: Settings) -> Any:
    from mllgraph.ground.resolve import default_resolver

    return default_resolver(neo4j_settings)


def _select(
    graph: Any,
    settings: Settings,
    resolver: Any,
    mid: str,
    names: list[str],
    pinned: dict[str, str] | None = None,
) -> dict:
    classes = [plan_request.TaskClass(n, (pinned or {}).get(n)) for n in names]
    options = plan_request.SelectOptions(budget=1, models=(mid,))
    return select.select(graph, settings, classes, options, resolver, store=False).plan


def _wnid_of_head(mid: str, index: int) -> str:
    return loading.imagenet_wnids()[index]


def test_builtins_state_their_published_top1(sdag_graph: Any, lite: str) -> None:
    record = registry.get_model(sdag_graph, lite)
    assert record["top1_accuracy"] == pytest.approx(0.751)
    assert record.get("labelled_at") is None  # nothing measured: declared heads only


def test_declared_heads_cover_a_task_no_measured_label_covers(
    sdag_graph: Any, neo4j_settings: Settings, resolver: Any, lite: str
) -> None:
    plan = _select(sdag_graph, neo4j_settings, resolver, lite, TASK)
    assert plan["models"] == [lite]
    by_name = {c["name"]: c for c in plan["classes"]}
    for name, wnid in (("tabby cat", TABBY), ("coffee mug", COFFEE_MUG)):
        c = by_name[name]
        assert c["coverage"] == "declared" and c["declared_via"] == "declared", c
        assert c["note"] == "declared, unmeasured" and c["measured"] is False
        assert [(h["model_id"], _wnid_of_head(lite, h["head_index"])) for h in c["heads"]] == [
            (lite, wnid)
        ]
        # The hub never measured this model's declared heads (it is not labelled here), and
        # no other model's stand in: chance, not its stated top-1 accuracy (select/evidence).
        assert c["simulated_accuracy"] == pytest.approx(0.751)  # CHCO's prior credit
        assert c["estimated_accuracy"] == pytest.approx(1 / len(TASK))
        assert c["estimate_evidence"]["kind"] == "declared"
        assert "nothing measured" in c["estimate_evidence"]["text"]
    # Nothing was measured.
    assert plan["measured_fraction"] == 0.0
    covered = [c for c in plan["classes"] if c["coverage"] != "uncovered"]
    assert plan["estimated_accuracy"] == pytest.approx(1 / len(TASK))
    assert len(covered) + len(plan["uncovered"]) == len(TASK)
    # motorcycle.n.01: ImageNet has no motorcycle head, but moped lies under it.
    moto = by_name["motorcycle"]
    assert moto["coverage"] == "declared" and moto["declared_via"] == "declared_descendants"
    assert "moped" in [h["head_label"] for h in moto["heads"]]


def test_measured_candidates_win_over_declared_ones(
    sdag_graph: Any, neo4j_settings: Settings, lite: str
) -> None:
    """A class with a measured exact/group/descendants candidate gets no declared ones; a class
    with none (or only measured ancestor/related ones) does."""
    from mllgraph.select.candidates import declared_candidates
    from mllgraph.select.reads import Reads

    reads = Reads(sdag_graph, None, 0)  # no cache: every read goes to the graph
    options = plan_request.SelectOptions(models=(lite,))
    for measured_kind, expect in (("exact", {1}), ("descendants", {1}), ("related", {0, 1})):
        rows = [{"class_index": 0, "kind": measured_kind, "model": "other@1"}]
        found = declared_candidates(reads, rows, [TABBY, COFFEE_MUG], options)
        assert {r["class_index"] for r in found} == expect, measured_kind
        assert {r["model"] for r in found} == {lite}


def test_the_service_and_the_cli_say_declared_unmeasured(
    sdag_graph: Any, neo4j_settings: Settings, resolver: Any, lite: str
) -> None:
    import grpc

    from mllgraph.cli.common import console
    from mllgraph.cli.select import print_plan
    from mllgraph.v1 import selection_pb2, selection_pb2_grpc
    from services.selection import BackgroundServer

    request = selection_pb2.SelectHeadsRequest(
        classes=[selection_pb2.TaskClass(name=n) for n in ("tabby cat", "coffee mug")],
        budget=1,
        options=selection_pb2.SelectOptions(models=[lite]),
    )
    with (
        BackgroundServer(neo4j_settings, resolver=resolver) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = selection_pb2_grpc.SelectionServiceStub(channel)
        plan = stub.SelectHeads(request, timeout=120)
        why = stub.ExplainSelection(
            selection_pb2.ExplainSelectionRequest(plan_id=plan.plan_id), timeout=60
        )
        doc = select.get_plan(sdag_graph, plan.plan_id)
    sdag_graph.driver.execute_query(
        "MATCH (p:Plan {id: $id}) DETACH DELETE p", id=plan.plan_id, database_=sdag_graph.database
    )
    assert [c.coverage for c in plan.classes] == [selection_pb2.COVERAGE_DECLARED] * 2
    assert plan.measured_fraction == 0.0 and plan.estimated_accuracy == pytest.approx(0.5)
    for c in why.classes:
        assert any("Declared, unmeasured" in r for r in c.reasons), c.reasons
        assert any("nothing measured of this kind" in r for r in c.reasons), c.reasons
    assert any("0% of the estimated accuracy is measured" in n for n in why.notes), why.notes
    width = console.width
    console.width = 250  # one table row per class, whatever the terminal
    try:
        with console.capture() as out:
            print_plan(doc)
    finally:
        console.width = width
    text = out.get()
    assert text.count("declared, unmeasured") == 2 and "0% measured" in text


def test_a_broad_class_sums_its_declared_descendants(
    sdag_graph: Any, neo4j_settings: Settings, resolver: Any, lite: str
) -> None:
    plan = _select(sdag_graph, neo4j_settings, resolver, lite, ["cat", "coffee mug"])
    cat = plan["classes"][0]
    assert cat["coverage"] == "declared" and cat["declared_via"] == "declared_descendants"
    wnids = {_wnid_of_head(lite, h["head_index"]) for h in cat["heads"]}
    assert wnids >= DOMESTIC_CATS
    # Only true WordNet descendants of the class's concept are summed.
    under = sdag_graph.run_user_query(
        "MATCH (c:Concept)-[:IS_A*1..]->(:Concept {wnid: $cat}) WHERE c.wnid IN $wnids "
        "RETURN collect(DISTINCT c.wnid) AS w",
        {"cat": cat["concept"]["wnid"], "wnids": sorted(wnids)},
    )[0]["w"]
    assert set(under) == wnids
    assert COFFEE_MUG not in wnids


def test_a_declared_plan_classifies_real_photos(
    sdag_graph: Any, neo4j_settings: Settings, resolver: Any, lite: str
) -> None:
    data = pytest.importorskip("skimage.data")
    from mllgraph.reuse import cache as model_cache
    from mllgraph.reuse import classifier

    plan = _select(sdag_graph, neo4j_settings, resolver, lite, ["cat", "coffee mug", "rocket"])
    clf = classifier.PlanClassifier(
        plan, sdag_graph, neo4j_settings, model_cache.ModelCache(neo4j_settings, device="cpu")
    )
    photos = {"cat": data.chelsea(), "coffee mug": data.coffee()}
    results = clf.classify(list(photos.values()))
    for (truth, _), r in zip(photos.items(), results, strict=True):
        assert r.class_name == truth, (truth, r.class_name, r.probabilities)
        assert not r.used_fallback
        assert {h.model_id for h in r.contributing_heads} == {lite}
        assert np.isclose(r.probabilities.sum(), 1.0)


def test_uncovered_classes_get_the_conse_patch_of_the_broad_expert(
    sdag_graph: Any, neo4j_settings: Settings, resolver: Any, lite: str
) -> None:
    """ "astronaut" and "coffee" pinned to the bean have no head in the sub-hub: the plan
    carries the ConSE patch of its broad expert, and inference scores them with it, not a
    constant. (Unpinned, "coffee" is the drink, which the expert's espresso head covers.)"""
    data = pytest.importorskip("skimage.data")
    from mllgraph.reuse import cache as model_cache
    from mllgraph.reuse import classifier

    names = ["astronaut", "coffee", "motorbike"]
    drink = _select(sdag_graph, neo4j_settings, resolver, lite, names)
    assert drink["uncovered"] == ["astronaut"]
    plan = _select(
        sdag_graph, neo4j_settings, resolver, lite, names, pinned={"coffee": "n07929351"}
    )
    assert plan["uncovered"] == ["astronaut", "coffee"]
    patch = plan["combination"]["patch"]
    assert patch["rule"] == "conse" and patch["model_id"] == lite
    assert plan["patch"]["classes"] == ["astronaut", "coffee"]
    clf = classifier.PlanClassifier(
        plan, sdag_graph, neo4j_settings, model_cache.ModelCache(neo4j_settings, device="cpu")
    )
    assert clf.fallback_rule == f"conse:{lite}"
    results = clf.classify([data.astronaut(), data.coffee()])
    assert [r.class_name for r in results] == ["astronaut", "coffee"]
    assert all(r.used_fallback and not r.contributing_heads for r in results)
    # Without a broad expert in reach, the constant rule stays (and says so).
    plan.pop("patch")
    plan["combination"].pop("patch")
    assert (
        classifier.PlanClassifier(
            plan, sdag_graph, neo4j_settings, model_cache.ModelCache(neo4j_settings, device="cpu")
        ).fallback_rule
        == "constant"
    )


# --- probes from a folder turn declared labels into measured ones (runs last: it labels) -------


def test_probe_folder_marks_stale_and_label_stale_measures(
    sdag_graph: Any, neo4j_settings: Settings, resolver: Any, lite: str, tmp_path: Any
) -> None:
    data = pytest.importorskip("skimage.data")
    from PIL import Image

    from mllgraph import cli
    from mllgraph.cli.common import console
    from mllgraph.hub import probe_folder, probes

    root = tmp_path / "photos"
    cat, cup = data.chelsea(), data.coffee()

    def views(img: np.ndarray, ext: str) -> dict[str, np.ndarray]:
        """Five views of one photo (labelling measures concepts with at least five images)."""
        h, w = img.shape[:2]
        crops = [img, img[:, ::-1], img[::2, ::2], img[h // 8 :, w // 8 :]]
        crops.append(img[: h - h // 8, : w - w // 8])
        return {f"{i}.{ext}": np.ascontiguousarray(v) for i, v in enumerate(crops)}

    for folder, files in {
        TABBY: {**views(cat, "png"), "6.JPG": cat, "notes.txt": None},
        "coffee mug": views(cup, "jpeg"),
        "xyzzy-plugh": {"e.png": cat},
        "n03790512": {"f.png": cat[:4, :4]},  # motorcycle: its only image is too small
    }.items():
        (root / folder).mkdir(parents=True)
        for name, img in files.items():
            path = root / folder / name
            if img is None:
                path.write_text("not an image")
            else:
                Image.fromarray(img).save(path, format="PNG" if name.endswith("png") else "JPEG")
    (root / "stray.png").write_bytes(b"")

    width = console.width
    console.width = 250
    try:
        with console.capture() as out:
            args = cli.build_parser().parse_args(["probes", "add", "--folder", str(root)])
            assert args.handler(args, neo4j_settings) == 0
    finally:
        console.width = width
    text = out.get()
    sets = [p for p in probes.probe_sets(sdag_graph) if p.source.startswith(f"folder {root}")]
    try:
        assert sorted((p.wnid, p.count) for p in sets) == [(TABBY, 6), (COFFEE_MUG, 5)]
        for p in sets:
            assert probes.load_images(p).shape[1:] == (probe_folder.SIDE, probe_folder.SIDE, 3)
        for refused in ("notes.txt", "xyzzy-plugh", "f.png", "stray.png"):
            assert f"refused: {root}" in text and refused in text, (refused, text)
        assert "stale" in text and lite in text
        assert lite in probe_folder.stale_models(sdag_graph)

        args = cli.build_parser().parse_args(
            ["models", "label", "--stale", "--samples-per-concept", "6"]
        )
        assert args.handler(args, neo4j_settings) == 0
        assert lite not in probe_folder.stale_models(sdag_graph)
        assert registry.get_model(sdag_graph, lite).get("labelled_at") is not None
        # Now measured: the labels found on the photos win over the declared heads.
        plan = _select(sdag_graph, neo4j_settings, resolver, lite, ["tabby cat", "coffee mug"])
        for c in plan["classes"]:
            assert c["coverage"] != "declared" and c["measured"] is True, c
            assert c["probe_images"] in (5, 6)
        assert plan["measured_fraction"] == 1.0
    finally:
        for p in sets:
            probes.remove_probe_set(sdag_graph, p.id, neo4j_settings)
