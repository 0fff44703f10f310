"""mllgraph.client against the real services (tests/conftest.py `fashion_services`): typed
results equal the raw stubs' answers, images in every accepted form, errors as domain
exceptions with code and field, UNAVAILABLE retried and nothing else."""

from __future__ import annotations

import io
import socket
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from mllgraph import client as mc
from mllgraph.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from mllgraph.hub import loading
from mllgraph.v1 import inference_pb2, inference_pb2_grpc

pytestmark = pytest.mark.neo4j

CLASSES = ["sandal", "sneaker", "trouser", "bag", "dog"]
PINS = {"sneaker": "n03472535", "bag": "n02773037"}
FASHION_TO_TASK = {5: 0, 7: 1, 1: 2, 8: 3}  # Fashion label -> index in CLASSES


@pytest.fixture(scope="module")
def hub(fashion_services: dict[str, Any]) -> dict[str, Any]:
    return fashion_services


@pytest.fixture(scope="module")
def client(hub: dict[str, Any]):
    a = hub["addresses"]
    with mc.Client(
        ingestion=a["ingestion"], selection=a["selection"], inference=a["inference"], timeout=120
    ) as c:
        yield c


@pytest.fixture(scope="module")
def task_images(hub: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Four test images of each covered class, and their task class index."""
    x, y = hub["x_test"], hub["y_test"]
    picked = [np.flatnonzero(y == f)[:4] for f in FASHION_TO_TASK]
    idx = np.concatenate(picked)
    return x[idx], np.array([FASHION_TO_TASK[int(f)] for f in y[idx]])


def _select(client: mc.Client, hub: dict[str, Any]) -> mc.Plan:
    return client.select(CLASSES, budget=2, pins=PINS, models=hub["models"])


def test_select_classify_explain(client: mc.Client, hub: dict[str, Any], task_images) -> None:
    x, truth = task_images
    plan = _select(client, hub)
    assert plan.class_names == CLASSES
    assert plan.uncovered == ["dog"]
    # The hub's Fashion experts have no head on dog or above it that selection may use.
    assert [c.uncovered_why for c in plan.classes] == ["", "", "", "", "no head"]
    assert set(plan.model_ids) <= set(hub["models"]) and len(plan.model_ids) <= 2
    sandal = plan.classes[0]
    assert sandal.concept.wnid == "n04133789" and sandal.coverage != "uncovered"
    assert plan.classes[1].grounding.pinned and plan.classes[1].concept.wnid == PINS["sneaker"]
    assert all(h.model_id in plan.model_ids for c in plan.classes for h in c.heads)

    again = _select(client, hub)  # an identical request: the stored plan
    assert again.plan_id == plan.plan_id

    result = client.classify(list(x), plan=plan, top_k=3)
    assert result.plan_id == plan.plan_id and result.uncovered == ["dog"]
    assert len(result) == len(x) and [p.image_id for p in result] == [str(i) for i in range(len(x))]
    for p in result:
        assert p.class_name == CLASSES[p.class_index] == p.top[0].class_name
        assert list(p.probabilities) == CLASSES
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert p.probability == pytest.approx(max(p.probabilities.values()), abs=1e-6)
        assert [t.probability for t in p.top] == sorted(
            (t.probability for t in p.top), reverse=True
        )
        assert len(p.top) == 3
        assert set(p.models) <= set(plan.model_ids)
        assert p.used_fallback == (p.class_name == "dog")
    assert set(result.timings.models) == set(plan.model_ids)
    accuracy = np.mean([p.class_index for p in result] == truth)
    assert accuracy >= 0.5, f"the two experts should mostly be right, got {accuracy:.2f}"

    # The same request through the raw stub: the client changes nothing.
    with grpc.insecure_channel(hub["addresses"]["inference"]) as channel:
        raw = inference_pb2_grpc.InferenceServiceStub(channel).Classify(
            inference_pb2.ClassifyRequest(
                plan_id=plan.plan_id,
                images=[mc.to_image(im) for im in x],
                top_k=3,
            ),
            timeout=120,
        )
    np.testing.assert_allclose(
        [list(p.probabilities.values()) for p in result],
        [list(p.class_probabilities) for p in raw.predictions],
        atol=1e-6,
    )

    # classes= selects (the stored plan again) and classifies in one call, in small batches.
    one_go = client.classify(
        list(x), classes=CLASSES, budget=2, pins=PINS, models=hub["models"], batch=5
    )
    assert one_go.plan_id == plan.plan_id
    assert [p.class_index for p in one_go] == [p.class_index for p in result]

    explanation = client.explain(plan)
    assert [c.name for c in explanation.classes] == CLASSES
    assert explanation.classes[-1].coverage == "uncovered" and not explanation.classes[-1].chosen
    assert explanation.classes[0].chosen and explanation.classes[0].reasons


def test_allow_none(client: mc.Client, hub: dict[str, Any], task_images) -> None:
    """ "None of these" through the client: off by default, the raw stub's answers when asked,
    and a plan without the calibration refused with FailedPrecondition."""
    import json
    import uuid

    from mllgraph.select import run as select

    x_in, _ = task_images
    x, y = hub["x_test"], hub["y_test"]
    x_out = x[np.concatenate([np.flatnonzero(y == f)[:4] for f in (3, 9)])]  # dress, boot
    images = [*x_in, *x_out]
    plan = _select(client, hub)
    document = select.get_plan(hub["graph"], plan.plan_id)
    threshold = document["combination"]["none"]["threshold"]

    default = client.classify(images, plan=plan)
    assert default.none_threshold is None
    assert all(p.none_score is None and not p.none_of_these for p in default)
    on = client.classify(images, plan=plan, allow_none=True, batch=7)
    assert on.none_threshold == pytest.approx(threshold)
    for p, q in zip(on, default, strict=True):
        assert p.none_score is not None and 0 <= p.none_score <= 1
        assert p.none_of_these == (p.none_score > on.none_threshold)
        # (other batches, other float rounding: batch=7 against the default 64)
        assert p.probabilities == pytest.approx(q.probabilities, abs=1e-5)
        if p.none_of_these:
            assert (p.class_index, p.class_name, p.heads) == (-1, "none of these", [])
        else:
            assert (p.class_index, p.class_name) == (q.class_index, q.class_name)
    with grpc.insecure_channel(hub["addresses"]["inference"]) as channel:
        raw = inference_pb2_grpc.InferenceServiceStub(channel).Classify(
            inference_pb2.ClassifyRequest(
                plan_id=plan.plan_id, images=[mc.to_image(im) for im in images], allow_none=True
            ),
            timeout=120,
        )
    assert [(p.class_index, p.none_of_these) for p in raw.predictions] == [
        (p.class_index, p.none_of_these) for p in on
    ]
    assert [p.none_score for p in raw.predictions] == pytest.approx(
        [p.none_score for p in on], abs=1e-5
    )

    # A stored plan made before the calibration existed.
    old = json.loads(json.dumps(document))
    del old["combination"]["none"]
    old["plan_id"] = f"plan-old-{uuid.uuid4().hex[:8]}"
    hub["graph"].write(
        "select/plan_put",
        id=old["plan_id"],
        body=json.dumps(old),
        catalogue_version=old["catalogue_version"],
    )
    with pytest.raises(FailedPrecondition) as e:
        client.classify(images[:2], plan=old["plan_id"], allow_none=True)
    assert e.value.code == "FAILED_PRECONDITION" and "none of these" in str(e.value)
    assert len(client.classify(images[:2], plan=old["plan_id"])) == 2


def test_images_in_every_form(client: mc.Client, hub: dict[str, Any], tmp_path: Path) -> None:
    plan = _select(client, hub)
    img = hub["x_test"][0]  # 28x28 uint8
    png, bmp = tmp_path / "a.png", tmp_path / "b.bmp"
    Image.fromarray(img).save(png)
    Image.fromarray(img).convert("RGB").save(bmp)  # not PNG/JPEG: sent as raw pixels
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=100)
    forms = [
        png,
        str(bmp),
        png.read_bytes(),
        Image.fromarray(img),
        img,
        np.stack([img] * 3, axis=-1),
        img.astype(np.float32) / 255.0,
        buf.getvalue(),
    ]
    result = client.classify(forms, plan=plan.plan_id)
    assert [p.image_id for p in result][:2] == [str(png), str(bmp)]
    exact = [p.probabilities for p in result][:-1]  # JPEG is lossy
    for probs in exact[1:]:
        np.testing.assert_allclose(list(probs.values()), list(exact[0].values()), atol=1e-4)
    assert result[-1].class_name == result[0].class_name

    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(InvalidArgument, match="notes.png"):
        client.classify([png, bad], plan=plan)
    with pytest.raises(InvalidArgument, match="cannot read"):
        client.classify([tmp_path / "missing.png"], plan=plan)
    with pytest.raises(InvalidArgument, match="HxW"):
        client.classify([np.zeros((2, 2, 2, 2), np.uint8)], plan=plan)


def test_errors_carry_code_and_field(client: mc.Client, hub: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument) as e:
        client.select(["sandal"])
    assert e.value.code == "INVALID_ARGUMENT" and e.value.field == "classes"
    with pytest.raises(InvalidArgument) as e:
        client.select(["sandal", "sneaker"], budget=-1)
    assert e.value.field == "budget"
    with pytest.raises(NotFound) as e:
        client.explain("no-such-plan")
    assert e.value.code == "NOT_FOUND" and "no-such-plan" in str(e.value)
    with pytest.raises(NotFound):
        client.model("no-such-model@1")
    with pytest.raises(InvalidArgument) as e:
        client.classify([hub["x_test"][0]], plan=mc.Plan("", [], 0, [], "", False, "", 0, None))
    assert e.value.code == "INVALID_ARGUMENT"


def test_register_label_list_delete(client: mc.Client, hub: dict[str, Any], tmp_path: Path) -> None:
    import uuid

    path = loading.save_weights(
        loading.build_timm("test_efficientnet", 2, 1), tmp_path / "w.safetensors"
    )
    name = f"clienttest-{uuid.uuid4().hex[:8]}"
    model = client.register_model(
        name,
        weights=path.read_bytes(),
        arch="test_efficientnet",
        wnids=["n04133789", "n03472535"],
        input_size=28,
        channels=1,
        mean=[0.5],
        std=[0.5],
        resize="resize",
    )
    try:
        assert model.id.startswith(name) and model.num_classes == 2 and not model.labelled
        assert model.source == "weights_bytes"
        job = client.label(model.id, samples_per_concept=20, timeout=300)
        assert job.state == "done" and job.heads_done == job.heads_total == 2
        listed = client.models(name=name, heads=True)
        assert [m.id for m in listed] == [model.id] and listed[0].labelled
        assert [h.declared_wnid for h in listed[0].heads] == ["n04133789", "n03472535"]
        covering = {m.id for m in client.models(covers="n04133789")}
        assert {model.id, *hub["models"][:1]} <= covering
    finally:
        assert client.delete_model(model.id)
    assert client.models(name=name) == []
    assert client.delete_model(model.id, allow_missing=True) is False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unavailable_is_retried_then_raised() -> None:
    with mc.Client(f"127.0.0.1:{_free_port()}", timeout=5, retries=2, backoff_s=0.05) as c:
        calls: list[float] = []
        real = c._selection.GetPlan

        def counted(request: Any, timeout: float) -> Any:
            calls.append(timeout)
            return real(request, timeout=timeout)

        c._selection.GetPlan = counted
        with pytest.raises(Unavailable) as e:
            c.plan("x")
    assert e.value.code == "UNAVAILABLE" and len(calls) == 3  # one try + two retries


def test_other_errors_are_not_retried(client: mc.Client) -> None:
    calls = []
    real = client._selection.GetPlan

    def counted(request: Any, timeout: float) -> Any:
        calls.append(timeout)
        return real(request, timeout=timeout)

    client._selection.GetPlan = counted
    try:
        with pytest.raises(NotFound):
            client.plan("no-such-plan")
    finally:
        client._selection.GetPlan = real
    assert len(calls) == 1 and 0 < calls[0] <= client.timeout


def test_targets() -> None:
    with mc.Client("example.org") as c:
        assert c.addresses["selection"].startswith("example.org:")
        assert len(set(c.addresses.values())) == 3
    with mc.Client("example.org:9000", inference="other:1") as c:
        assert c.addresses == {
            "ingestion": "example.org:9000",
            "selection": "example.org:9000",
            "inference": "other:1",
        }
    assert mc.split_classes(" sandal, sneaker ,, bag") == ["sandal", "sneaker", "bag"]


def test_a_class_nothing_covers_borrows_a_text_close_neighbour(
    client: mc.Client, hub: dict[str, Any]
) -> None:
    """ "handbag" (bag.n.04) has no head, and the ancestor it shares with the Fashion "Bag"
    concept (container) also lies above "coffee mug", so the structural `related` kind is
    blocked; the text encoder puts "bag" close to "handbag" (and closer than to the other
    classes), so the Bag head covers it, discounted. Nothing is close to "coffee mug"."""
    from mllgraph.select import nearby
    from mllgraph.select import run as select

    plan = client.select("sandal, handbag, coffee mug", budget=2, models=hub["models"])
    assert [c.coverage for c in plan.classes] == ["exact", "related", "uncovered"]
    doc = select.get_plan(hub["graph"], plan.plan_id)
    close = doc["classes"][1]["related_by_text"]
    assert close["concept"] == "n02773037"  # bag.n.01, the Fashion "Bag" class
    assert close["text_similarity"] >= nearby.MIN_SIMILARITY
    bags = hub["x_test"][hub["y_test"] == 8][:4]
    result = client.classify(list(bags), plan=plan)
    assert sum(p.class_name == "handbag" for p in result) >= 3, [p.class_name for p in result]
    # No broad expert in this sub-hub: "coffee mug" keeps the constant rule, and says so.
    assert result.uncovered == ["coffee mug"] and result.patch == "constant"
