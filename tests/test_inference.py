"""Inference: the library (mllgraph.reuse) and the gRPC service (services/inference.py).

A tiny hub is built here (two quickly trained Fashion experts, small probe sets, labels, a
plan from `select.select`) and removed afterwards. Real Neo4j, real gRPC in-process on port 0.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from mllgraph import wire
from mllgraph.combine import rule as combine
from mllgraph.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted
from mllgraph.hub import forward, loading, registry
from mllgraph.hubs.fashion import data as fashion
from mllgraph.plan import document as plan_doc
from mllgraph.reuse import batcher as batching
from mllgraph.reuse import bundle as bundles
from mllgraph.reuse import cache as model_cache
from mllgraph.reuse import classifier, images
from mllgraph.reuse import vlm as vlm_patch
from mllgraph.select import chco
from mllgraph.v1 import inference_pb2, inference_pb2_grpc, selection_pb2
from services import inference as svc
from tests.helpers import FASHION_WNIDS, one_model_plan, two_expert_hub

pytestmark = pytest.mark.neo4j

WNIDS = FASHION_WNIDS  # Fashion class -> concept of the hub's two experts
DOG = "n02084071"
TASK = [("sandal", 5), ("sneaker", 7), ("trouser", 1), ("bag", 8), ("dog", None)]
MAX_IMAGES = 40
MAX_PIXELS = 128 * 128
N_TEST = 16  # the selected plan may use any hub model (even EfficientNet-Lite)


# -- helpers ---------------------------------------------------------------------------------


class ServerThread:
    """services.inference.start_server on its own event loop thread; a sync stub to it."""

    def __init__(self, settings: Any, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        kwargs.setdefault("health_interval_s", 0.2)
        self.running = self.call(svc.start_server(settings, port=0, **kwargs))
        self.servicer = self.running.servicer
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.running.port}")
        self.stub = inference_pb2_grpc.InferenceServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def status(self) -> int:
        req = health_pb2.HealthCheckRequest(service=svc.SERVICE_NAME)
        return self.health.Check(req, timeout=5).status

    def wait_serving(self, timeout: float = 20) -> None:
        end = time.monotonic() + timeout
        while self.status() != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < end, "the inference service never became SERVING"
            time.sleep(0.05)

    def stop(self, grace: float = 1.0) -> None:
        self.channel.close()
        self.call(self.running.stop(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def raw(img: np.ndarray, dtype: str = "uint8") -> inference_pb2.Image:
    data = (img.astype("<f4") / 255.0).tobytes() if dtype == "float32" else img.tobytes()
    return inference_pb2.Image(
        raw=inference_pb2.RawArray(data=data, shape=list(img.shape), dtype=dtype)
    )


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def request(plan_id: str = "", images: list[inference_pb2.Image] | None = None, **kw: Any):
    req = inference_pb2.ClassifyRequest(images=images or [], **kw)
    if plan_id:
        req.plan_id = plan_id
    return req


def manual_probs(hub: dict[str, Any], plan: dict[str, Any], images: np.ndarray, extra=None):
    """The plan's models run here by hand (registry + forward), then the one rule."""
    comb = plan_doc.combination_of(plan)
    logits = {}
    for mid in comb.models:
        model, spec = loading.load_model(hub["settings"], registry.get_model(hub["graph"], mid))
        logits[mid] = forward.logits(model, spec, images, device="cpu")
    if extra is None:
        extra = combine.fallback_evidence(len(images), comb.uncovered)
    return combine.combine(logits, comb.assignment, comb.params, extra_evidence=extra)


def single_model_plan(hub: dict[str, Any], mid: str, wnids: list[str]) -> dict[str, Any]:
    """A hand-made plan document over one model's heads (class i = head i)."""
    return one_model_plan(mid, range(len(wnids)), [f"class-{w}" for w in wnids])


# -- the hub ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(sdag_graph: Any, neo4j_settings: Any, tmp_path_factory: pytest.TempPathFactory):
    from mllgraph.ground.resolve import default_resolver
    from mllgraph.plan import request as plan_request
    from mllgraph.select import run as select

    graph = sdag_graph
    settings = replace(
        neo4j_settings,
        device="cpu",
        infer_max_images=MAX_IMAGES,
        infer_max_image_pixels=MAX_PIXELS,
        infer_max_batch=32,
        infer_max_delay_ms=2.0,
    )
    uid = uuid.uuid4().hex[:8]
    tmp = tmp_path_factory.mktemp("inference")
    x_test, y_test = fashion.load_split("test", settings.fashion_mnist_dir)
    with two_expert_hub(graph, settings, tmp, f"inftest-{uid}") as models:
        classes = [plan_request.TaskClass(n, WNIDS[c] if c is not None else DOG) for n, c in TASK]
        ctx = select.select(
            graph,
            settings,
            classes,
            plan_request.SelectOptions(budget=3),
            default_resolver(settings, use_embeddings=False),
        )
        server = ServerThread(settings)
        server.wait_serving()
        try:
            yield {
                "graph": graph,
                "settings": settings,
                "models": models,
                "plan": ctx.plan,
                "server": server,
                "x": x_test[:N_TEST].copy(),
                "y": y_test[:N_TEST].copy(),
                "tmp": tmp,
            }
        finally:
            server.stop()


# -- classification through gRPC = library = manual combine ----------------------------------


def test_grpc_equals_library_and_manual_combine(hub: dict[str, Any]) -> None:
    plan, x, stub = hub["plan"], hub["x"], hub["server"].stub
    assert "dog" in plan["uncovered"]
    expected = manual_probs(hub, plan, x)

    clf = classifier.PlanClassifier(
        plan, hub["graph"], hub["settings"], model_cache.ModelCache(hub["settings"], device="cpu")
    )
    lib = clf.classify(list(x))
    assert clf.fallback_rule == "constant" and clf.uncovered_names == plan["uncovered"]
    lib_probs = np.stack([r.probabilities for r in lib])
    np.testing.assert_allclose(lib_probs, expected, atol=1e-6)
    assert [r.class_index for r in lib] == list(expected.argmax(1))

    responses = [
        stub.Classify(request(plan["plan_id"], [raw(im) for im in x]), timeout=60),
        stub.Classify(request(plan["plan_id"], [raw(im, "float32") for im in x]), timeout=60),
        stub.Classify(
            request(
                images=[
                    inference_pb2.Image(id=f"img{i}", encoded=png(im)) for i, im in enumerate(x)
                ],
                inline_plan=wire.inline_plan_to_proto(plan),
                top_k=3,
            ),
            timeout=60,
        ),
    ]
    half = N_TEST // 2
    stream = list(
        stub.ClassifyStream(
            iter(
                [
                    request(plan["plan_id"], [raw(im) for im in x[:half]]),
                    request("", [raw(im) for im in x[half:]]),  # reuses the plan
                ]
            ),
            timeout=60,
        )
    )
    assert len(stream) == 2
    merged = inference_pb2.ClassifyResponse()
    for r in stream:
        merged.predictions.extend(r.predictions)
    responses.append(merged)

    names = [c["name"] for c in plan["classes"]]
    for resp in responses:
        got = np.array([list(p.class_probabilities) for p in resp.predictions])
        np.testing.assert_allclose(got, expected, atol=1e-5)
        preds = [p.class_index for p in resp.predictions]
        assert preds == [r.class_index for r in lib]
        for p, r in zip(resp.predictions, lib, strict=True):
            assert p.class_name == names[p.class_index]
            assert p.used_fallback == r.used_fallback == (names[p.class_index] in plan["uncovered"])
            heads = [(h.model_id, h.head_index) for h in p.contributing_heads]
            planned = [
                (h["model_id"], h["head_index"]) for h in plan["classes"][p.class_index]["heads"]
            ]
            assert heads == planned
            assert p.top[0].class_index == p.class_index
    first = responses[0]
    assert list(first.uncovered_classes) == plan["uncovered"]
    assert {t.model_id for t in first.model_timings} == set(plan["models"])
    assert all(t.forward_ms > 0 for t in first.model_timings)
    assert first.plan_id == plan["plan_id"] and first.total_ms > 0
    assert [p.image_id for p in first.predictions][:2] == ["0", "1"]
    inline = responses[2]
    assert [p.image_id for p in inline.predictions][:2] == ["img0", "img1"]
    assert all(len(p.top) == 3 for p in inline.predictions)


def test_inline_plan_without_heads_uses_fallback(hub: dict[str, Any]) -> None:
    assignment = [combine.ClassAssignment(i, ()) for i in range(3)]
    cp = chco.Plan(assignment, combine.default_params(assignment), float("nan"),
                   [float("nan")] * 3, [0, 1, 2], [], "none", 0)  # fmt: skip
    doc = {
        "plan_id": "",
        "classes": [{"name": n} for n in ("dog", "cat", "horse")],
        "combination": {"schema_version": 1, "plan": cp.to_dict()},
    }
    resp = hub["server"].stub.Classify(
        request(
            images=[raw(im) for im in hub["x"][:4]], inline_plan=wire.inline_plan_to_proto(doc)
        ),
        timeout=30,
    )
    assert list(resp.uncovered_classes) == ["dog", "cat", "horse"]
    for p in resp.predictions:
        assert p.used_fallback and not p.contributing_heads
        assert p.class_index == 0  # equal constant evidence: the first uncovered class
        np.testing.assert_allclose(list(p.class_probabilities), [1 / 3] * 3, atol=1e-6)
    assert not resp.model_timings


def _tiny_clip(tmp: Path) -> tuple[str, Path]:
    """A randomly initialised, very small open_clip model saved as a local checkpoint."""
    import open_clip

    name = "mllgraph-test-tiny-clip"
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                       "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1},
    }  # fmt: skip
    (tmp / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp / f"{name}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None)
    path = tmp / "tiny-clip.pt"
    torch.save(model.state_dict(), path)
    return name, path


def test_vlm_patch_is_used_and_reported(hub: dict[str, Any]) -> None:
    plan, x = hub["plan"], hub["x"][:6]
    arch, path = _tiny_clip(hub["tmp"])
    # λ large: a random VLM must win some images so the patch path shows (plumbing only).
    vlm = vlm_patch.VlmPatch.from_checkpoint(arch, path, device="cpu", weight=1e4)
    assert vlm.spec.size == 32 and len(vlm.prompts) >= 2
    server = ServerThread(hub["settings"], vlm=vlm)
    try:
        server.wait_serving()
        resp = server.stub.Classify(request(plan["plan_id"], [raw(im) for im in x]), timeout=60)
    finally:
        server.stop()
    names = [c["name"] for c in plan["classes"]]
    uncovered = [names.index(n) for n in plan["uncovered"]]
    extra = vlm.evidence(list(x), names, uncovered)
    expected = manual_probs(hub, plan, x, extra=extra)
    got = np.array([list(p.class_probabilities) for p in resp.predictions])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert vlm.name in {t.model_id for t in resp.model_timings}
    assert list(resp.uncovered_classes) == plan["uncovered"]
    fallback = [p for p in resp.predictions if p.used_fallback]
    assert fallback, "the VLM patch decided no prediction"
    for p in fallback:
        assert p.class_name in plan["uncovered"] and not p.contributing_heads
    # Not the constant fallback: the VLM gives every image its own evidence.
    constant = manual_probs(hub, plan, x)
    assert not np.allclose(got, constant, atol=1e-3)


# -- bad input: each with its status, the service still serving after -----------------------


def _bad_requests(hub: dict[str, Any]) -> list[tuple[str, Any, grpc.StatusCode, str]]:
    pid, x = hub["plan"]["plan_id"], hub["x"]
    big = np.zeros((200, 200), np.uint8)
    bad_schema = wire.inline_plan_to_proto(hub["plan"])
    bad_schema.combination_json = json.dumps({"schema_version": 99, "plan": {}})
    ok_img = raw(x[0])
    return [
        ("undecodable", request(pid, [inference_pb2.Image(encoded=b"not an image")]),
         grpc.StatusCode.INVALID_ARGUMENT, "not a PNG or JPEG"),
        ("truncated png", request(pid, [inference_pb2.Image(encoded=png(x[0])[:60])]),
         grpc.StatusCode.INVALID_ARGUMENT, "images[0]"),
        ("empty bytes", request(pid, [inference_pb2.Image(encoded=b"")]),
         grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        ("no pixels", request(pid, [inference_pb2.Image(id="x")]),
         grpc.StatusCode.INVALID_ARGUMENT, "no pixels"),
        ("no images", request(pid, []), grpc.StatusCode.INVALID_ARGUMENT, "at least one image"),
        ("too many pixels", request(pid, [ok_img, inference_pb2.Image(encoded=png(big))]),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "images[1]"),
        ("raw too many pixels", request(pid, [raw(big)]),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "pixels"),
        ("too many images", request(pid, [ok_img] * (MAX_IMAGES + 1)),
         grpc.StatusCode.RESOURCE_EXHAUSTED, f"limit of {MAX_IMAGES}"),
        ("raw 2 channels", request(pid, [inference_pb2.Image(raw=inference_pb2.RawArray(
            data=bytes(28 * 28 * 2), shape=[28, 28, 2], dtype="uint8"))]),
         grpc.StatusCode.INVALID_ARGUMENT, "channels"),
        ("raw 1-d", request(pid, [inference_pb2.Image(raw=inference_pb2.RawArray(
            data=bytes(28), shape=[28], dtype="uint8"))]),
         grpc.StatusCode.INVALID_ARGUMENT, "shape"),
        ("raw int16", request(pid, [inference_pb2.Image(raw=inference_pb2.RawArray(
            data=bytes(28 * 28 * 2), shape=[28, 28], dtype="int16"))]),
         grpc.StatusCode.INVALID_ARGUMENT, "dtype"),
        ("raw size mismatch", request(pid, [inference_pb2.Image(raw=inference_pb2.RawArray(
            data=bytes(100), shape=[28, 28], dtype="uint8"))]),
         grpc.StatusCode.INVALID_ARGUMENT, "bytes"),
        ("raw float out of range", request(pid, [inference_pb2.Image(raw=inference_pb2.RawArray(
            data=np.full((28, 28), 2.0, "<f4").tobytes(), shape=[28, 28], dtype="float32"))]),
         grpc.StatusCode.INVALID_ARGUMENT, "[0, 1]"),
        ("unknown plan", request("plan-does-not-exist", [ok_img]),
         grpc.StatusCode.NOT_FOUND, "plan-does-not-exist"),
        ("no plan", request("", [ok_img]), grpc.StatusCode.INVALID_ARGUMENT, "plan"),
        ("negative top_k", request(pid, [ok_img], top_k=-1),
         grpc.StatusCode.INVALID_ARGUMENT, "top_k"),
        ("bad combination schema", request(images=[ok_img], inline_plan=bad_schema),
         grpc.StatusCode.FAILED_PRECONDITION, "schema"),
    ]  # fmt: skip


def _same_answers(a: inference_pb2.ClassifyResponse, b: inference_pb2.ClassifyResponse) -> None:
    """The predictions of two responses agree in every field (timings aside)."""
    assert [p.SerializeToString(deterministic=True) for p in a.predictions] == [
        p.SerializeToString(deterministic=True) for p in b.predictions
    ]


def test_allow_none_answers_none_of_these_and_is_off_by_default(hub: dict[str, Any]) -> None:
    plan, stub = hub["plan"], hub["server"].stub
    assert plan["none_of_these"]["calibrated"], plan["none_of_these"]
    x_test, y_test = fashion.load_split("test", hub["settings"].fashion_mnist_dir)
    # Dresses and boots (concepts the hub has probe images of, outside the task) and the
    # task's own classes.
    idx = np.flatnonzero(np.isin(y_test, [3, 9, 5, 7, 1, 8]))[:MAX_IMAGES]
    images = [raw(im) for im in x_test[idx]]
    clf = classifier.PlanClassifier(
        plan, hub["graph"], hub["settings"], model_cache.ModelCache(hub["settings"], device="cpu")
    )
    lib = clf.classify(list(x_test[idx]))
    scores = np.array([r.none_score for r in lib])
    assert np.all((scores >= 0) & (scores <= 1))

    plain = stub.Classify(request(plan["plan_id"], images), timeout=60)
    off = stub.Classify(request(plan["plan_id"], images, allow_none=False), timeout=60)
    _same_answers(plain, off)  # default off: today's answers, no score
    assert plain.none_threshold == 0
    assert not any(p.none_of_these or p.none_score for p in plain.predictions)

    # The stored plan at its own threshold, and a copy whose threshold splits these images
    # (so both kinds of answer show).
    split = json.loads(json.dumps(plan))
    split["combination"]["none"]["threshold"] = float(np.median(scores))
    for doc, req in (
        (plan, request(plan["plan_id"], images, allow_none=True)),
        (
            split,
            request(images=images, inline_plan=wire.inline_plan_to_proto(split), allow_none=True),
        ),
    ):
        threshold = doc["combination"]["none"]["threshold"]
        on = stub.Classify(req, timeout=60)
        assert on.none_threshold == pytest.approx(threshold)
        for p, q, r in zip(on.predictions, plain.predictions, lib, strict=True):
            assert p.none_score == pytest.approx(r.none_score, abs=1e-6)
            assert p.none_of_these == (r.none_score > threshold)
            assert list(p.class_probabilities) == list(q.class_probabilities)
            assert [t.class_index for t in p.top] == [t.class_index for t in q.top]
            if p.none_of_these:
                assert (p.class_index, p.class_name) == (-1, "none of these")
                assert p.probability == pytest.approx(p.none_score)
                assert not p.contributing_heads
            else:
                assert (p.class_index, p.class_name) == (q.class_index, q.class_name)
    assert 0 < sum(p.none_of_these for p in on.predictions) < len(images)

    # A stream: each request says for itself.
    first, second = stub.ClassifyStream(
        iter([request(plan["plan_id"], images[:4], allow_none=True), request("", images[:4])]),
        timeout=60,
    )
    assert first.none_threshold == pytest.approx(plan["combination"]["none"]["threshold"])
    assert second.none_threshold == 0 and all(p.class_index >= 0 for p in second.predictions)

    # A plan without the calibration (made before it existed): refused only when asked.
    old = json.loads(json.dumps(plan))
    del old["combination"]["none"]
    inline = wire.inline_plan_to_proto(old)
    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(request(images=images[:2], inline_plan=inline, allow_none=True), timeout=30)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = info.value.details()
    assert "none of these" in details and "select the task again" in details
    assert len(
        stub.Classify(request(images=images[:2], inline_plan=inline), timeout=30).predictions
    )


def test_bad_input_statuses_and_still_serving(hub: dict[str, Any]) -> None:
    server = hub["server"]
    good = request(hub["plan"]["plan_id"], [raw(hub["x"][0])])
    for name, req, code, text in _bad_requests(hub):
        with pytest.raises(grpc.RpcError) as info:
            server.stub.Classify(req, timeout=30)
        assert info.value.code() == code, (name, info.value.details())
        assert text in info.value.details(), (name, info.value.details())
        assert server.status() == health_pb2.HealthCheckResponse.SERVING, name
        assert len(server.stub.Classify(good, timeout=30).predictions) == 1, name
    # A stream ends with the same status; its first request must name a plan.
    with pytest.raises(grpc.RpcError) as info:
        list(server.stub.ClassifyStream(iter([request("", [raw(hub["x"][0])])]), timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "first request" in info.value.details()


# -- the inline-plan contract (issue #12) ------------------------------------------------------


def _probabilities(resp: inference_pb2.ClassifyResponse) -> np.ndarray:
    return np.array([list(p.class_probabilities) for p in resp.predictions])


def test_plan_that_select_heads_returned_classifies_unchanged(hub: dict[str, Any]) -> None:
    """SelectHeads puts the whole plan document into combination_json; inference reads it."""
    from services import plan_messages

    plan, x, stub = hub["plan"], hub["x"][:4], hub["server"].stub
    returned = plan_messages.plan_to_proto(plan, plan_messages.Concepts(None))
    assert json.loads(returned.combination_json)["plan_id"] == plan["plan_id"]
    returned = selection_pb2.Plan.FromString(returned.SerializeToString())  # as a client has it
    inline = stub.Classify(request(images=[raw(im) for im in x], inline_plan=returned), timeout=60)
    by_id = stub.Classify(request(plan["plan_id"], [raw(im) for im in x]), timeout=60)
    np.testing.assert_allclose(_probabilities(inline), _probabilities(by_id), atol=1e-6)
    assert [p.class_name for p in inline.predictions] == [p.class_name for p in by_id.predictions]
    assert list(inline.uncovered_classes) == plan["uncovered"]


def _malformed_plans(hub: dict[str, Any]) -> list[tuple[str, selection_pb2.Plan]]:
    base = wire.inline_plan_to_proto(hub["plan"])
    comb = json.loads(base.combination_json)

    def with_json(text: str) -> selection_pb2.Plan:
        p = selection_pb2.Plan()
        p.CopyFrom(base)
        p.combination_json = text
        return p

    def with_change(change: Any) -> selection_pb2.Plan:
        c = json.loads(json.dumps(comb))
        change(c["plan"])
        return with_json(json.dumps(c))

    def group(p: dict[str, Any]) -> dict[str, Any]:
        return next(g for a in p["assignment"] for g in a["groups"])

    def names(*new: str) -> selection_pb2.Plan:
        p = selection_pb2.Plan()
        p.CopyFrom(base)
        for c, name in zip(p.classes, new, strict=False):
            c.name = name
        return p

    many = selection_pb2.Plan()
    many.CopyFrom(base)
    many.classes.extend([selection_pb2.PlannedClass(name=f"c{i}") for i in range(1001)])
    return [
        ("not JSON", with_json("{not json")),
        ("deeply nested array", with_json("[" * 100_000 + "]" * 100_000)),
        ("deeply nested object", with_json('{"a":' * 50_000 + "1" + "}" * 50_000)),
        ("only a schema version", with_json('{"schema_version": 1}')),
        ("a list", with_json("[1, 2]")),
        ("null", with_json("null")),
        ("unknown schema", with_json('{"schema_version": 99, "plan": {}}')),
        ("schema as a list", with_json('{"schema_version": [1], "plan": {}}')),
        ("document with bad combination", with_json('{"combination": {"schema_version": 1}}')),
        ("plan is a list", with_json('{"schema_version": 1, "plan": []}')),
        ("weights are text", with_change(lambda p: p["params"].update(weights="abc"))),
        ("accuracies not a list", with_change(lambda p: p.update(per_class_accuracy=5))),
        ("assignment of numbers", with_change(lambda p: p.update(assignment=[1, 2]))),
        ("head index text", with_change(lambda p: group(p).update(heads=["a"]))),
        ("label score text", with_change(lambda p: group(p).update(label_score="high"))),
        ("temperatures a list", with_change(lambda p: p["params"].update(temperatures=[1]))),
        ("1001 classes", many),
        ("a name too long", names("x" * 10_000)),
        ("a control character", names("sandal\x00")),
        ("an empty name", names("   ")),
    ]  # fmt: skip


def test_malformed_inline_plans_are_refused_never_internal(hub: dict[str, Any]) -> None:
    server = hub["server"]
    for name, plan in _malformed_plans(hub):
        req = request(images=[raw(hub["x"][0])], inline_plan=plan)
        with pytest.raises(grpc.RpcError) as info:
            server.stub.Classify(req, timeout=30)
        assert info.value.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.FAILED_PRECONDITION,
        ), (name, info.value.code(), info.value.details())
        assert "internal" not in info.value.details().lower(), name
    assert server.status() == health_pb2.HealthCheckResponse.SERVING


def test_missing_model_file_is_failed_precondition(hub: dict[str, Any]) -> None:
    server, mid = hub["server"], hub["models"][0]
    doc = single_model_plan(hub, mid, [WNIDS[c] for c in (5, 7, 9)])
    req = request(images=[raw(hub["x"][0])], inline_plan=wire.inline_plan_to_proto(doc))
    blob = Path(registry.get_model(hub["graph"], mid)["weights_path"])
    aside = hub["tmp"] / "moved-away.blob"
    server.servicer.clear_caches()
    shutil.move(blob, aside)
    try:
        with pytest.raises(grpc.RpcError) as info:
            server.stub.Classify(req, timeout=30)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert mid in info.value.details() and "missing" in info.value.details()
        assert server.status() == health_pb2.HealthCheckResponse.SERVING
    finally:
        shutil.move(aside, blob)
    assert len(server.stub.Classify(req, timeout=30).predictions) == 1


def test_deadline_expiring_in_the_queue(hub: dict[str, Any]) -> None:
    server = hub["server"]
    batcher = server.servicer.batcher
    before = batcher.stats.expired
    batcher.max_delay_s, batcher.max_batch_size = 5.0, 1000  # nothing fills a batch
    try:
        t = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            server.stub.Classify(request(hub["plan"]["plan_id"], [raw(hub["x"][0])]), timeout=1.0)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t < 3.0
        end = time.monotonic() + 3
        while batcher.stats.expired == before and time.monotonic() < end:
            time.sleep(0.02)
        assert batcher.stats.expired == before + 1  # dropped by the server, never run
    finally:
        batcher.max_delay_s, batcher.max_batch_size = 0.002, 32
    good = request(hub["plan"]["plan_id"], [raw(hub["x"][0])])
    assert len(server.stub.Classify(good, timeout=30).predictions) == 1


class OomAbove(torch.nn.Module):
    """A real expert that raises CUDA OOM for batches larger than `limit` (no GPU here)."""

    def __init__(self, inner: torch.nn.Module, limit: int, seen: list[int]) -> None:
        super().__init__()
        self.inner, self.limit, self.seen = inner, limit, seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(int(x.shape[0]))  # int(): fx cannot trace it, so prepare leaves it whole
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def test_cuda_oom_retries_with_half_batches(hub: dict[str, Any]) -> None:
    seen: list[int] = []

    def loader(settings: Any, record: dict[str, Any]):
        model, spec = loading.load_model(settings, record)
        return OomAbove(model, 4, seen), spec

    # Whole batches per pass, as on CUDA (CPU chunks of 4 would never reach the OOM); no
    # outputs kept, so the second request runs the model again.
    settings = replace(hub["settings"], infer_cpu_chunk=0, infer_output_cache_mb=0)
    cache = model_cache.ModelCache(settings, device="cpu", loader=loader)
    batcher = batching.DynamicBatcher(max_batch_size=16, max_delay_s=0.002)
    server = ServerThread(hub["settings"], cache=cache, batcher=batcher)
    doc = single_model_plan(hub, hub["models"][1], [WNIDS[c] for c in (1, 8, 3)])
    x = hub["x"][:16]
    req = request(images=[raw(im) for im in x], inline_plan=wire.inline_plan_to_proto(doc))
    try:
        server.wait_serving()
        resp = server.stub.Classify(req, timeout=60)
        normal = hub["server"].stub.Classify(req, timeout=60)
        assert [p.class_index for p in resp.predictions] == [
            p.class_index for p in normal.predictions
        ]
        assert batcher.stats.oom_retries >= 3  # 16 -> 8 + 8 -> 4 + 4 + 4 + 4
        assert max(batcher.stats.batch_sizes) <= 4 and sum(batcher.stats.batch_sizes) == 16
        assert 16 in seen and 8 in seen
        retries = batcher.stats.oom_retries
        server.stub.Classify(req, timeout=60)
        assert batcher.stats.oom_retries == retries  # the lowered cap avoids new OOMs
        assert batcher.cap(server.servicer._resolve(req).key) == 4
    finally:
        server.stop()


def test_images_asked_about_again_are_not_run_again(hub: dict[str, Any]) -> None:
    """The output cache through gRPC: a second task over the same model and images runs no
    model, says so per model (cached_images), and answers as the first run's logits do."""
    server = ServerThread(hub["settings"])  # its own model cache: nothing kept yet
    mid = hub["models"][1]
    first = single_model_plan(hub, mid, [WNIDS[c] for c in (1, 8, 3)])
    second = single_model_plan(hub, mid, [WNIDS[c] for c in (5, 7, 9)])
    x = hub["x"][:6]
    try:
        server.wait_serving()
        a = server.stub.Classify(
            request(images=[raw(im) for im in x], inline_plan=wire.inline_plan_to_proto(first)),
            timeout=60,
        )
        images_ = [inference_pb2.Image(encoded=png(im)) for im in x]  # decodes to the same
        b = server.stub.Classify(
            request(images=images_, inline_plan=wire.inline_plan_to_proto(second)), timeout=60
        )
        [ta], [tb] = a.model_timings, b.model_timings
        assert (ta.cached_images, tb.cached_images) == (0, 6)
        assert ta.forward_ms > 0 and tb.forward_ms == 0
        expected = manual_probs(hub, second, x)
        got = np.array([list(p.class_probabilities) for p in b.predictions])
        np.testing.assert_allclose(got, expected, atol=1e-5)
    finally:
        server.stop()


def test_callers_never_share_kept_outputs(hub: dict[str, Any]) -> None:
    """Outputs are kept per caller: a second caller sending the same images gets them run
    again (cached_images 0), so neither the field nor a fast answer tells it what another
    caller sent; the first caller asking again gets its own kept outputs."""
    from mllgraph import auth

    made = {name: auth.create_token("read", name) for name in ("alice", "bob")}
    settings = replace(hub["settings"], tokens=";".join(e.line() for _, e in made.values()))
    server = ServerThread(settings)
    doc = single_model_plan(hub, hub["models"][1], [WNIDS[c] for c in (1, 8, 3)])
    req = request(
        images=[raw(im) for im in hub["x"][:5]], inline_plan=wire.inline_plan_to_proto(doc)
    )

    def cached(name: str) -> int:
        metadata = (("authorization", f"Bearer {made[name][0]}"),)
        [timing] = server.stub.Classify(req, timeout=60, metadata=metadata).model_timings
        return timing.cached_images

    try:
        server.wait_serving()
        assert [cached("alice"), cached("bob"), cached("alice"), cached("bob")] == [0, 0, 5, 5]
    finally:
        server.stop()


# -- the rest of the service -----------------------------------------------------------------


def test_health_reflection_and_not_serving_without_neo4j(hub: dict[str, Any]) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    server = hub["server"]
    assert server.status() == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    reply = next(
        refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    )
    assert svc.SERVICE_NAME in {s.name for s in reply.list_services_response.service}

    down = replace(hub["settings"], neo4j_uri="bolt://127.0.0.1:9")  # nothing listens there
    other = ServerThread(down)
    try:
        time.sleep(0.5)
        assert other.status() == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        other.stop()


def test_bundle_serves_without_neo4j(hub: dict[str, Any]) -> None:
    plan, x = hub["plan"], hub["x"][:4]
    records = {m: registry.get_model(hub["graph"], m) for m in plan["models"]}
    root = bundles.export_bundle(plan, records, hub["tmp"] / "bundle", images=x)
    bundle = bundles.load_bundle(root)
    assert all(Path(r["weights_path"]).is_file() for r in bundle.records.values())
    server = ServerThread(hub["settings"], bundle=bundle, use_neo4j=False)
    try:
        server.wait_serving()
        inline = server.stub.Classify(
            request(images=[raw(im) for im in x], inline_plan=wire.inline_plan_to_proto(plan)),
            timeout=60,
        )
        by_id = server.stub.Classify(request(plan["plan_id"], [raw(im) for im in x]), timeout=60)
        expected = hub["server"].stub.Classify(request(plan["plan_id"], [raw(im) for im in x]))
        for resp in (inline, by_id):
            assert [p.class_index for p in resp.predictions] == [
                p.class_index for p in expected.predictions
            ]
        with pytest.raises(grpc.RpcError) as info:
            server.stub.Classify(request("plan-elsewhere", [raw(x[0])]), timeout=30)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop()
    # The service and the library import and serve with no neo4j driver at all.
    code = (
        "import sys; sys.modules['neo4j'] = None\n"
        "import services.inference, mllgraph.reuse.classifier\n"
        "assert 'mllgraph.graph.db' not in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_images_outside_a_models_domain_are_set_aside(
    hub: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from mllgraph import cli
    from mllgraph.errors import NotFound
    from mllgraph.eval.photos import load_photo
    from mllgraph.hub import domains

    graph, settings, stub = hub["graph"], hub["settings"], hub["server"].stub
    mid = hub["models"][0]  # heads: sandal, sneaker, boot
    before = registry.catalogue_version(graph)
    with pytest.raises(InvalidArgument, match="at least"):
        domains.describe(graph, settings, mid, list(hub["x"][:10]), "too few")
    with pytest.raises(NotFound):
        domains.describe(graph, settings, "no-such-model@1", list(hub["x"]), "none")
    # The command line names the option that is wrong.
    (hub["tmp"] / "notes.txt").write_text("not images")
    for argv, message in [
        (["models", "domain", mid], "give --images or --clear"),
        (["models", "domain", mid, "--images", str(hub["tmp"] / "notes.txt")], "not a folder"),
        (["models", "domain", mid, "--images", str(hub["tmp"] / "absent")], "not a folder"),
    ]:
        capsys.readouterr()
        assert cli.main(argv, settings=settings) == 1
        assert message in " ".join(capsys.readouterr().err.split()), argv
    assert registry.catalogue_version(graph) == before  # a refused description wrote nothing
    assert not registry.get_model(graph, mid).get("domain_sha256")
    assert not list(registry.model_dir(settings, mid).glob("domain-*"))

    x_train, _ = fashion.load_split("train", settings.fashion_mnist_dir)
    np.save(hub["tmp"] / "domain.npy", x_train[:1000])
    argv = ["models", "domain", mid, "--images", str(hub["tmp"] / "domain.npy")]
    assert cli.main(argv, settings=settings) == 0
    try:
        record = registry.get_model(graph, mid)
        assert record["domain_images"] == 1000 and record["domain_sha256"]
        assert registry.catalogue_version(graph) == before + 1
        doc = single_model_plan(hub, mid, [WNIDS[5], WNIDS[7], WNIDS[9]])
        doc["classes"] = [{"name": f"{n} (domain test)"} for n in ("sandal", "sneaker", "boot")]
        photo = np.asarray(Image.fromarray(load_photo("coffee")).resize((120, 80)))
        images = [raw(photo), raw(hub["x"][0]), raw(hub["x"][1])]
        resp = stub.Classify(
            request(images=images, inline_plan=wire.inline_plan_to_proto(doc)), timeout=60
        )
        on_photo = resp.predictions[0]
        assert list(on_photo.out_of_domain_models) == [mid]
        assert on_photo.used_fallback and not on_photo.contributing_heads
        # Every class at the floor, equal biases: no class is preferred on the photo.
        np.testing.assert_allclose(list(on_photo.class_probabilities), [1 / 3] * 3, atol=1e-6)
        for p in resp.predictions[1:]:  # Fashion-MNIST images: the model speaks
            assert not p.out_of_domain_models and p.contributing_heads
    finally:
        assert cli.main(["models", "domain", mid, "--clear"], settings=settings) == 0
    assert not registry.get_model(graph, mid).get("domain_sha256")
    assert not list(registry.model_dir(settings, mid).glob("domain-*"))


def test_graceful_shutdown_finishes_in_flight(hub: dict[str, Any]) -> None:
    batcher = batching.DynamicBatcher(max_batch_size=64, max_delay_s=1.0)
    server = ServerThread(hub["settings"], batcher=batcher)
    server.wait_serving()
    req = request(hub["plan"]["plan_id"], [raw(im) for im in hub["x"][:2]])
    result: dict[str, Any] = {}
    client = threading.Thread(target=lambda: result.update(r=server.stub.Classify(req, timeout=30)))
    client.start()
    end = time.monotonic() + 5
    while batcher.pending() == 0 and time.monotonic() < end:
        time.sleep(0.01)
    server.call(server.running.stop(grace=10))  # the request is still queued here
    client.join(30)
    assert len(result["r"].predictions) == 2
    server.channel.close()
    server.loop.call_soon_threadsafe(server.loop.stop)
    server.thread.join(10)


# -- library units ---------------------------------------------------------------------------


def test_decode_and_raw_images() -> None:
    gray = (np.arange(30 * 20) % 256).astype(np.uint8).reshape(30, 20)
    rgb = np.stack([gray, gray[::-1], 255 - gray], axis=-1)
    assert np.array_equal(images.decode_image(png(gray), max_pixels=10_000), gray)
    assert np.array_equal(images.decode_image(png(rgb), max_pixels=10_000), rgb)
    rgba = np.concatenate([rgb, np.full((30, 20, 1), 7, np.uint8)], axis=-1)
    assert np.array_equal(images.decode_image(png(rgba), max_pixels=10_000), rgb)
    pal = Image.fromarray(rgb).convert("P")
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    assert images.decode_image(buf.getvalue(), max_pixels=10_000).shape == (30, 20, 3)
    buf = io.BytesIO()
    Image.fromarray(gray.astype(np.uint16) * 257).save(buf, format="PNG")
    assert np.array_equal(images.decode_image(buf.getvalue(), max_pixels=10_000), gray)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    jpg = images.decode_image(buf.getvalue(), max_pixels=10_000)
    assert jpg.shape == (30, 20, 3) and np.abs(jpg.astype(int) - rgb).mean() < 20
    with pytest.raises(ResourceExhausted, match="over this server's limit"):
        images.decode_image(png(gray), max_pixels=599)
    with pytest.raises(InvalidArgument):
        images.decode_image(b"GIF89a....", max_pixels=10_000)
    gif = io.BytesIO()
    Image.fromarray(gray).save(gif, format="GIF")
    with pytest.raises(InvalidArgument, match="PNG or JPEG"):
        images.decode_image(gif.getvalue(), max_pixels=10_000)

    assert np.array_equal(images.raw_image(gray.tobytes(), [30, 20], "uint8", max_pixels=600), gray)
    f = (gray.astype("<f4") / 255).tobytes()
    assert np.array_equal(images.raw_image(f, [30, 20, 1], "float32", max_pixels=600), gray)
    assert images.raw_image(rgb.tobytes(), [30, 20, 3], "uint8", max_pixels=600).shape == (
        30,
        20,
        3,
    )
    nan = np.full((2, 2), np.nan, "<f4").tobytes()
    for data, shape, dtype in [
        (gray.tobytes(), [30, 20, 4], "uint8"),
        (gray.tobytes(), [0, 20], "uint8"),
        (gray.tobytes(), [30, 20], "float64"),
        (gray.tobytes()[:-1], [30, 20], "uint8"),
        (nan, [2, 2], "float32"),
    ]:
        with pytest.raises(InvalidArgument):
            images.raw_image(data, shape, dtype, max_pixels=600)
    with pytest.raises(ResourceExhausted):
        images.raw_image(gray.tobytes(), [30, 20], "uint8", max_pixels=599)


def _echo_runner(log: list[int]):
    def run(images: list[np.ndarray]) -> classifier.BatchRun:
        log.append(len(images))
        results = [
            classifier.PredictionResult(int(im[0, 0]), "", 1.0, np.ones(1), (), False)
            for im in images
        ]
        return classifier.BatchRun(
            results, {"m": classifier.ModelTiming("m", 1.0, 10.0, len(images))}
        )

    return run


def test_dynamic_batcher_merges_splits_and_expires() -> None:
    log: list[int] = []
    run = _echo_runner(log)
    b = batching.DynamicBatcher(max_batch_size=8, max_delay_s=0.3)
    try:
        imgs = [np.full((2, 2), i, np.uint8) for i in range(12)]
        futs = [b.submit("p", run, imgs[i : i + 2]) for i in (0, 2, 4)]
        outs = [f.result(10) for f in futs]
        assert log == [6]  # three concurrent requests, one pass
        assert [[r.class_index for r in o.results] for o in outs] == [[0, 1], [2, 3], [4, 5]]
        assert outs[0].timings["m"].forward_ms == pytest.approx(10.0 * 2 / 6)
        log.clear()
        big = b.submit("p", run, imgs).result(10)  # 12 > 8: split into passes of 8 and 4
        assert log == [8, 4] and [r.class_index for r in big.results] == list(range(12))
        log.clear()
        other = [b.submit("p", run, imgs[:1]), b.submit("q", run, imgs[1:2])]
        [f.result(10) for f in other]
        assert log == [1, 1]  # different plans never share a pass
        late = b.submit("p", run, imgs[:1], deadline=time.monotonic() - 1)
        with pytest.raises(DeadlineExceeded, match="expired"):
            late.result(10)
        assert b.stats.expired == 1

        def boom(images: list[np.ndarray]) -> classifier.BatchRun:
            raise InvalidArgument("bad batch")

        with pytest.raises(InvalidArgument):
            b.submit("r", boom, imgs[:1]).result(10)
        assert b.submit("p", run, imgs[:1]).result(10).results[0].class_index == 0
    finally:
        b.close(10)
    with pytest.raises(Exception, match="shut down"):
        b.submit("p", run, imgs[:1])


def test_model_cache_lru_budget(hub: dict[str, Any]) -> None:
    recs = [registry.get_model(hub["graph"], m) for m in hub["models"]]
    one = model_cache.ModelCache(hub["settings"], device="cpu").get(recs[0]).nbytes
    cache = model_cache.ModelCache(hub["settings"], device="cpu", budget_bytes=one + 1)
    a = cache.get(recs[0])
    assert cache.get(recs[0]) is a and cache.loads == 1
    assert a.dtype == torch.float32 and a.precision == "fp32"
    cache.get(recs[1])
    assert cache.model_ids() == [recs[1]["id"]] and cache.evictions == 1
    cache.get(recs[0])
    assert cache.loads == 3 and cache.model_ids() == [recs[0]["id"]]
