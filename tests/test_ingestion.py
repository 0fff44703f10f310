"""IngestionService end to end: a real aio server (in-process, port 0, its event loop in a
background thread) over a real gRPC channel, against the real Neo4j of the fixtures.

Everything these tests create (models, blobs, probe sets) carries a unique `ingtest-<hex>`
prefix and is removed afterwards; they do not depend on what else the database holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mllgraph import wire
from mllgraph.errors import FailedPrecondition, NotFound
from mllgraph.graph import deadline
from mllgraph.hub import loading, probes, registry
from mllgraph.hub.preprocess import InputSpec
from mllgraph.hubs.fashion import experts as fashion_experts
from mllgraph.label import run as labeller
from mllgraph.label import work as label_work
from mllgraph.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc
from services import ingestion, label_jobs
from tests.helpers import ingestion_server

pytestmark = pytest.mark.neo4j

SANDAL, GYM_SHOE = "n04133789", "n03472535"
ARCH = "test_efficientnet"
UID = uuid.uuid4().hex[:8]
PREFIX = f"ingtest-{UID}"
RPC_TIMEOUT = 120.0


# --- fixtures -------------------------------------------------------------------------------


@dataclass
class Server:
    stub: ingestion_pb2_grpc.IngestionServiceStub
    channel: grpc.Channel
    port: int


@pytest.fixture(scope="module")
def import_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's import folder (MLLGRAPH_IMPORT_DIR): weights_path is read only here."""
    return tmp_path_factory.mktemp("imports")


@pytest.fixture(scope="module")
def server_settings(neo4j_settings, import_dir: Path):
    return dataclasses.replace(neo4j_settings, import_dir=import_dir)


@pytest.fixture(scope="module")
def server(server_settings, sdag_graph) -> Iterator[Server]:
    """The service on a free port; its asyncio loop runs in a background thread."""
    with ingestion_server(server_settings, "ingestion-test-loop") as (running, channel, _):
        yield Server(ingestion_pb2_grpc.IngestionServiceStub(channel), channel, running.port)


@dataclass
class Weights:
    path: Path  # safetensors of a 2-class, 1-channel test_efficientnet
    data: bytes
    other: bytes  # the same architecture, other (random) weights
    convnext: Path  # a 2-class, 1-channel test_convnext (its forward fails at 28x28)


@pytest.fixture(scope="module")
def weights(import_dir: Path) -> Weights:
    d = import_dir / "weights"
    d.mkdir()
    torch.manual_seed(0)
    path = loading.save_weights(loading.build_timm(ARCH, 2, 1), d / "a.safetensors")
    other = loading.save_weights(loading.build_timm(ARCH, 2, 1), d / "b.safetensors")
    convnext = loading.save_weights(loading.build_timm("test_convnext", 2, 1), d / "c.safetensors")
    return Weights(path, path.read_bytes(), other.read_bytes(), convnext)


@pytest.fixture(scope="module")
def probe_sets(sdag_graph, neo4j_settings) -> Iterator[list[probes.ProbeSet]]:
    """20 random 28x28 images each for sandal and gym shoe, under unique ids."""
    rng = np.random.default_rng(0)
    made = []
    try:
        for wnid in (SANDAL, GYM_SHOE):
            ps, created = probes.add_probe_set(
                sdag_graph,
                neo4j_settings,
                concept=wnid,
                images=rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8),
                set_id=f"{PREFIX}-{wnid}",
                source="tests/test_ingestion.py",
            )
            assert created
            made.append(ps)
        yield made
    finally:
        for ps in made:
            probes.remove_probe_set(sdag_graph, ps.id, neo4j_settings)
            assert not Path(ps.path).exists()


# --- helpers --------------------------------------------------------------------------------


def fashion_spec(**override: Any) -> common_pb2.InputSpec:
    spec = fashion_experts.FASHION_INPUT_SPEC
    fields = {
        "size": spec.size,
        "resize_mode": common_pb2.RESIZE_MODE_RESIZE,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "channels": spec.channels,
        "interpolation": spec.interpolation,
    }
    fields.update(override)
    return common_pb2.InputSpec(**fields)


def unique_name(tag: str) -> str:
    return f"{PREFIX}-{tag}-{uuid.uuid4().hex[:6]}"


def rpc_error(call: Callable[..., Any], request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=RPC_TIMEOUT)
    return info.value


def blob_files(settings) -> set[Path]:
    root = settings.model_store / "blobs"
    return {p for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()


def catalogue(graph, settings) -> tuple[int, int, set[Path]]:
    """(Model nodes, catalogue version, blob files): what a refused request must not change."""
    models = graph.run_user_query("MATCH (m:Model) RETURN count(m) AS n")[0]["n"]
    return models, registry.catalogue_version(graph), blob_files(settings)


def assert_refused(
    server: Server,
    graph,
    settings,
    method: str,
    request: Any,
    code: grpc.StatusCode,
    *fragments: str,
) -> str:
    """The call fails with `code`, its message names the problem, the catalogue is as before."""
    before = catalogue(graph, settings)
    err = rpc_error(getattr(server.stub, method), request)
    assert err.code() == code, err.details()
    message = err.details() or ""
    for fragment in fragments:
        assert fragment.lower() in message.lower(), f"{fragment!r} not in {message!r}"
    assert catalogue(graph, settings) == before
    return message


def wait_for_job(server: Server, job_id: str, timeout: float = 90.0) -> list[Any]:
    """Poll GetLabelJob until DONE/FAILED; every observed state, in order."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        job = server.stub.GetLabelJob(
            ingestion_pb2.GetLabelJobRequest(job_id=job_id), timeout=RPC_TIMEOUT
        )
        seen.append(job)
        if job.state in (ingestion_pb2.LABEL_JOB_STATE_DONE, ingestion_pb2.LABEL_JOB_STATE_FAILED):
            return seen
        assert time.monotonic() < deadline, f"job still {job.state} after {timeout} s"
        time.sleep(0.1)


def register_tiny(graph, settings, name: str, data: bytes) -> str:
    """A tiny model straight through the library (setup for tests about other RPCs)."""
    return registry.register_model(
        graph,
        settings,
        registry.Registration(
            name=name,
            arch=ARCH,
            weights_bytes=data,
            wnids=[SANDAL, GYM_SHOE],
            input_spec=fashion_experts.FASHION_INPUT_SPEC,
        ),
    ).record["id"]


# --- the happy path -------------------------------------------------------------------------


def test_register_label_list_delete(
    server, sdag_graph, neo4j_settings, weights, probe_sets, cleanup
) -> None:
    stub, name = server.stub, unique_name("happy")
    model = stub.RegisterModel(
        ingestion_pb2.RegisterModelRequest(
            name=name,
            arch=ARCH,
            weights_path=str(weights.path),
            class_names=["Sandal", "Sneaker"],
            input_spec=fashion_spec(),
            metadata={"trained_on": "nothing (random weights)"},
            top1_accuracy=0.625,
        ),
        timeout=RPC_TIMEOUT,
    )
    mid = f"{name}@1"
    cleanup.append(mid)
    sha = hashlib.sha256(weights.data).hexdigest()
    assert (model.id, model.name, model.version, model.arch) == (mid, name, "1", ARCH)
    assert model.source == ingestion_pb2.MODEL_SOURCE_WEIGHTS_PATH
    assert model.source_ref == "weights/a.safetensors"  # relative to the import folder
    assert model.sha256 == sha and model.num_classes == 2
    assert model.input_spec.size == 28 and model.input_spec.channels == 1
    assert model.input_spec.resize_mode == common_pb2.RESIZE_MODE_RESIZE
    assert list(model.input_spec.mean) == pytest.approx([0.286])
    assert abs(model.created_at.ToSeconds() - time.time()) < 600
    assert not model.labelled and not model.HasField("labelled_at")
    assert model.metadata["trained_on"] == "nothing (random weights)"
    assert model.top1_accuracy == pytest.approx(0.625)  # the prior of its declared heads
    assert not model.heads  # only with include_heads
    blob = registry.blob_path(neo4j_settings, sha, ".safetensors")
    assert blob.is_file()

    got = stub.GetModel(ingestion_pb2.GetModelRequest(model_id=mid, include_heads=True))
    assert [(h.index, h.label, h.declared_wnid) for h in got.heads] == [
        (0, "Sandal", SANDAL),
        (1, "Sneaker", GYM_SHOE),
    ]
    assert all(not h.top_labels for h in got.heads)

    listed = stub.ListModels(ingestion_pb2.ListModelsRequest(name=name.upper()))
    assert [m.id for m in listed.models] == [mid] and not listed.next_page_token

    job = stub.LabelModel(
        ingestion_pb2.LabelModelRequest(
            model_id=mid, options=ingestion_pb2.LabelOptions(samples_per_concept=20)
        )
    )
    assert job.state == ingestion_pb2.LABEL_JOB_STATE_QUEUED and job.model_id == mid
    assert job.heads_total == 2 and not job.HasField("started_at")
    seen = wait_for_job(server, job.job_id)
    final = seen[-1]
    assert final.state == ingestion_pb2.LABEL_JOB_STATE_DONE, final.message
    assert final.progress == pytest.approx(1.0) and final.heads_done == 2
    assert "labelled 2 heads" in final.message
    assert final.started_at.ToNanoseconds() <= final.finished_at.ToNanoseconds()
    progress = [j.progress for j in seen]
    assert progress == sorted(progress) and all(0.0 <= p <= 1.0 for p in progress)

    # Labelled once: a second job without relabel is refused up front.
    again = rpc_error(stub.LabelModel, ingestion_pb2.LabelModelRequest(model_id=mid))
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already labelled" in again.details() and "relabel" in again.details()

    got = stub.GetModel(ingestion_pb2.GetModelRequest(model_id=mid, include_heads=True))
    assert got.labelled and got.HasField("labelled_at")
    labels = [lab for h in got.heads for lab in h.top_labels]
    assert labels, "labelling wrote no label edge"
    for h in got.heads:
        scores = [lab.score for lab in h.top_labels]
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= s <= 1.0 for s in scores)
    assert all(lab.concept.wnid and lab.concept.name for lab in labels)

    covers = stub.ListModels(
        ingestion_pb2.ListModelsRequest(name=name, covers_concept="footwear.n.02")
    )
    assert [m.id for m in covers.models] == [mid] and covers.models[0].labelled
    not_dogs = stub.ListModels(
        ingestion_pb2.ListModelsRequest(name=name, covers_concept="dog.n.01")
    )
    assert not not_dogs.models

    deleted = stub.DeleteModel(ingestion_pb2.DeleteModelRequest(model_id=mid))
    assert deleted.model_id == mid and deleted.deleted_heads == 2
    assert deleted.deleted_label_edges >= 1 and deleted.weights_removed
    assert not blob.exists()
    assert not registry.model_dir(neo4j_settings, mid).exists()  # probe outputs gone too
    err = rpc_error(stub.GetModel, ingestion_pb2.GetModelRequest(model_id=mid))
    assert err.code() == grpc.StatusCode.NOT_FOUND and mid in err.details()


def test_list_models_filters_and_pages(server, sdag_graph, neo4j_settings, weights, cleanup):
    base = unique_name("page")
    for tag in ("a", "b"):
        cleanup.append(register_tiny(sdag_graph, neo4j_settings, f"{base}-{tag}", weights.data))
    stub = server.stub
    first = stub.ListModels(ingestion_pb2.ListModelsRequest(name=base, page_size=1))
    assert [m.id for m in first.models] == [f"{base}-a@1"] and first.next_page_token
    second = stub.ListModels(
        ingestion_pb2.ListModelsRequest(name=base, page_size=1, page_token=first.next_page_token)
    )
    assert [m.id for m in second.models] == [f"{base}-b@1"]
    third = stub.ListModels(
        ingestion_pb2.ListModelsRequest(name=base, page_size=1, page_token=second.next_page_token)
    )
    assert not third.models and not third.next_page_token
    both = stub.ListModels(ingestion_pb2.ListModelsRequest(name=base, arch=ARCH))
    assert len(both.models) == 2 and not both.next_page_token
    assert not stub.ListModels(ingestion_pb2.ListModelsRequest(name=base, arch="resnet18")).models
    with_heads = stub.ListModels(ingestion_pb2.ListModelsRequest(name=base, include_heads=True))
    assert [len(m.heads) for m in with_heads.models] == [2, 2]
    # Both models share one blob; deleting the first keeps it for the second.
    out = stub.DeleteModel(ingestion_pb2.DeleteModelRequest(model_id=f"{base}-a@1"))
    assert not out.weights_removed
    for request, fragment in [
        (ingestion_pb2.ListModelsRequest(covers_concept="qwzxv.n.01"), "covers_concept"),
        (ingestion_pb2.ListModelsRequest(page_token="not a token"), "page_token"),
        (ingestion_pb2.ListModelsRequest(page_size=-1), "page_size"),
        (ingestion_pb2.ListModelsRequest(min_label_score=2.0), "min_label_score"),
    ]:
        err = rpc_error(stub.ListModels, request)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in err.details()


def test_registration_is_idempotent_and_versions_immutable(
    server, sdag_graph, neo4j_settings, weights, cleanup
) -> None:
    name = unique_name("idem")
    request = ingestion_pb2.RegisterModelRequest(
        name=name,
        version="",  # empty: "1"
        arch=ARCH,
        weights_bytes=weights.data,
        wnids=[SANDAL, GYM_SHOE],
        input_spec=fashion_spec(),
    )
    first = server.stub.RegisterModel(request, timeout=RPC_TIMEOUT)
    cleanup.append(first.id)
    assert first.id == f"{name}@1" and first.source == ingestion_pb2.MODEL_SOURCE_WEIGHTS_BYTES
    assert first.source_ref == ""  # empty for uploads
    assert first.sha256 == hashlib.sha256(weights.data).hexdigest()
    before = catalogue(sdag_graph, neo4j_settings)
    again = server.stub.RegisterModel(request, timeout=RPC_TIMEOUT)
    assert again == first  # same id, same created_at: created once
    assert catalogue(sdag_graph, neo4j_settings) == before
    heads = server.stub.GetModel(
        ingestion_pb2.GetModelRequest(model_id=first.id, include_heads=True)
    )
    assert [h.label for h in heads.heads] == ["sandal", "gym shoe"]  # registered by wnid

    conflicting = ingestion_pb2.RegisterModelRequest()
    conflicting.CopyFrom(request)
    conflicting.weights_bytes = weights.other
    assert_refused(
        server,
        sdag_graph,
        neo4j_settings,
        "RegisterModel",
        conflicting,
        grpc.StatusCode.ALREADY_EXISTS,
        first.id,
        "other weights",
        "new version",
    )


def test_same_weights_with_other_content_is_already_exists(
    server, sdag_graph, neo4j_settings, weights, cleanup
) -> None:
    """Re-registering name@version with the same weights but other labels, arch or input
    spec is refused with what differs; the identical request stays an idempotent OK."""
    request = ingestion_pb2.RegisterModelRequest(
        name=unique_name("same"),
        arch=ARCH,
        weights_bytes=weights.data,
        wnids=[SANDAL, GYM_SHOE],
        input_spec=fashion_spec(),
    )
    first = server.stub.RegisterModel(request, timeout=RPC_TIMEOUT)
    cleanup.append(first.id)
    changes: list[tuple[dict[str, Any], tuple[str, ...]]] = [
        ({"wnids": [GYM_SHOE, SANDAL]}, ("different wnids", "2 of 2 heads", SANDAL)),
        ({"wnids": [SANDAL, GYM_SHOE, SANDAL]}, ("3 wnids for its 2 heads",)),
        ({"class_names": ["sandal", "sneaker"]}, ("different class names", "'sneaker'")),
        ({"arch": "test_convnext"}, ("different arch", "test_convnext")),
        ({"input_spec": fashion_spec(size=32)}, ("different input_spec",)),
    ]
    for change, fragments in changes:
        changed = ingestion_pb2.RegisterModelRequest()
        changed.CopyFrom(request)
        for key, value in change.items():
            changed.ClearField("wnids" if key == "class_names" else key)
            if isinstance(value, list):
                getattr(changed, key).extend(value)
            elif key == "input_spec":
                changed.input_spec.CopyFrom(value)
            else:
                setattr(changed, key, value)
        assert_refused(
            server, sdag_graph, neo4j_settings, "RegisterModel", changed,
            grpc.StatusCode.ALREADY_EXISTS, first.id, "these weights", *fragments,
        )  # fmt: skip
    assert server.stub.RegisterModel(request, timeout=RPC_TIMEOUT) == first


# --- bad input: refused, named, and the catalogue untouched ---------------------------------


class Evil:
    """Unpickling this creates `marker`: the kind of file a weights loader must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _request(w: Weights, **fields: Any) -> ingestion_pb2.RegisterModelRequest:
    base: dict[str, Any] = {
        "name": unique_name("bad"),
        "arch": ARCH,
        "weights_bytes": w.data,
        "wnids": [SANDAL, GYM_SHOE],
        "input_spec": fashion_spec(),
    }
    base.update(fields)
    if "weights_path" in fields or "builtin" in fields:
        base.pop("weights_bytes")
    if "class_names" in fields:
        base.pop("wnids")
    return ingestion_pb2.RegisterModelRequest(**{k: v for k, v in base.items() if v is not None})


# (case id, request from the weights and a temp dir, fragments the message must contain)
BAD_REGISTRATIONS: list[tuple[str, Callable[[Weights, Path], Any], tuple[str, ...]]] = [
    (
        "label-count-differs-from-head-count",
        lambda w, d: _request(w, wnids=[SANDAL, GYM_SHOE, SANDAL]),
        ("3 heads", "one per label", "classifier.weight"),
    ),
    (
        "unknown-wnid",
        lambda w, d: _request(w, wnids=["n99999999", GYM_SHOE]),
        ("unknown concept", "n99999999"),
    ),
    (
        "bad-wnid-syntax",
        lambda w, d: _request(w, wnids=["sandal", GYM_SHOE]),
        ("not wnids", "'sandal'"),
    ),
    (
        "ungroundable-class-name",
        lambda w, d: _request(w, class_names=["Sandal", "qwzxv blorft"]),
        ("qwzxv blorft", "not a WordNet noun", "closest lemmas"),
    ),
    (
        "truncated-safetensors-upload",
        lambda w, d: _request(w, weights_bytes=w.data[: len(w.data) // 2]),
        ("not a valid safetensors file",),
    ),
    (
        "truncated-torch-file",
        lambda w, d: _request(w, weights_path=str(_truncated_pt(d))),
        ("corrupt or truncated",),
    ),
    (
        "garbage-bytes",
        lambda w, d: _request(w, weights_bytes=b"this is not a weights file at all"),
        ("corrupt", "not a weights file"),
    ),
    (
        "code-running-pickle-by-path",
        lambda w, d: _request(w, weights_path=str(_evil_pt(d / "evil.pt", d / "MARKER"))),
        ("could run code",),
    ),
    (
        "code-running-pickle-upload",
        lambda w, d: _request(w, weights_bytes=_evil_pt(d / "evil2.pt", d / "MARKER").read_bytes()),
        ("could run code",),
    ),
    (
        "three-channel-spec-for-a-one-channel-model",
        lambda w, d: _request(w, input_spec=fashion_spec(channels=3, mean=[], std=[])),
        ("3 input channel", "conv_stem.weight"),
    ),
    (
        # test_convnext's stem and downsampling need more than 28x28 (its 2x2 kernels meet a
        # 1x1 map): weights load fine, the dummy forward pass raises.
        "forward-raises",
        lambda w, d: _request(w, arch="test_convnext", weights_path=str(w.convnext)),
        ("cannot take", "Kernel size"),
    ),
    (
        "spec-out-of-range",
        lambda w, d: _request(w, input_spec=fashion_spec(size=4)),
        ("input_spec.size",),
    ),
    (
        "unknown-builtin",
        lambda w, d: _request(w, builtin="efficientnet_lite9", arch="", wnids=[], input_spec=None),
        ("efficientnet_lite9", "efficientnet_lite0"),
    ),
    (
        "unknown-arch",
        lambda w, d: _request(w, arch="no_such_arch_xyz"),
        ("no_such_arch_xyz", "not a timm architecture"),
    ),
    ("missing-arch", lambda w, d: _request(w, arch=""), ("arch: required",)),
    ("top1-over-one", lambda w, d: _request(w, top1_accuracy=75.1), ("top1_accuracy", "0.751")),
    ("top1-zero", lambda w, d: _request(w, top1_accuracy=0.0), ("top1_accuracy", "(0, 1]")),
    (
        "missing-input-spec",
        lambda w, d: _request(w, input_spec=None),
        ("input_spec: required",),
    ),
    ("missing-labels", lambda w, d: _request(w, wnids=[]), ("labels",)),
    (
        "no-weights-source",
        lambda w, d: ingestion_pb2.RegisterModelRequest(name=unique_name("bad"), arch=ARCH),
        ("exactly one",),
    ),
    (
        "missing-weights-file",
        lambda w, d: _request(w, weights_path=str(d / "nowhere.safetensors")),
        ("no such file",),
    ),
    ("bad-name", lambda w, d: _request(w, name="bad name!"), ("name 'bad name!'",)),
]


def _truncated_pt(d: Path) -> Path:
    path = d / "state.pt"
    torch.save({"w": torch.zeros(64, 64)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _evil_pt(path: Path, marker: Path) -> Path:
    torch.save({"classifier.weight": Evil(marker)}, path)
    return path


@pytest.mark.parametrize(
    ("make", "fragments"),
    [pytest.param(make, frags, id=case) for case, make, frags in BAD_REGISTRATIONS],
)
def test_bad_registration_is_refused_and_changes_nothing(
    server, sdag_graph, neo4j_settings, weights, import_dir, make, fragments
) -> None:
    tmp_path = import_dir / uuid.uuid4().hex  # weights_path is read only in the import folder
    tmp_path.mkdir()
    request = make(weights, tmp_path)
    assert_refused(
        server,
        sdag_graph,
        neo4j_settings,
        "RegisterModel",
        request,
        grpc.StatusCode.INVALID_ARGUMENT,
        *fragments,
    )
    assert not (tmp_path / "MARKER").exists()
    with pytest.raises(NotFound):
        registry.get_model(sdag_graph, f"{request.name}@1")


def test_the_code_running_pickle_is_live(tmp_path: Path) -> None:
    """The refused payload above really would run code (so its refusal means something)."""
    marker = tmp_path / "PROBE_MARKER"
    path = _evil_pt(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_missing_things(server, sdag_graph, neo4j_settings) -> None:
    ghost = f"{PREFIX}-ghost@1"
    assert_refused(
        server,
        sdag_graph,
        neo4j_settings,
        "DeleteModel",
        ingestion_pb2.DeleteModelRequest(model_id=ghost),
        grpc.StatusCode.NOT_FOUND,
        ghost,
    )
    before = catalogue(sdag_graph, neo4j_settings)
    out = server.stub.DeleteModel(
        ingestion_pb2.DeleteModelRequest(model_id=ghost, allow_missing=True)
    )
    assert out.model_id == ghost and out.deleted_heads == 0 and not out.weights_removed
    assert catalogue(sdag_graph, neo4j_settings) == before
    for method, request, code, fragment in [
        ("GetModel", ingestion_pb2.GetModelRequest(model_id=ghost), "NOT_FOUND", ghost),
        ("LabelModel", ingestion_pb2.LabelModelRequest(model_id=ghost), "NOT_FOUND", ghost),
        ("GetLabelJob", ingestion_pb2.GetLabelJobRequest(job_id="nope"), "NOT_FOUND", "nope"),
        ("GetModel", ingestion_pb2.GetModelRequest(), "INVALID_ARGUMENT", "model_id"),
        ("GetLabelJob", ingestion_pb2.GetLabelJobRequest(), "INVALID_ARGUMENT", "job_id"),
    ]:
        err = rpc_error(getattr(server.stub, method), request)
        assert err.code() == grpc.StatusCode[code], (method, err.details())
        assert fragment in err.details()


def test_labelling_without_probe_sets_fails_up_front(
    server, sdag_graph, neo4j_settings, weights, cleanup, monkeypatch
) -> None:
    # The dev database holds probe sets that these tests must not remove, so "no probe sets"
    # is simulated by patching probes.probe_sets (read at call time by the service and the
    # labeller alike; the server runs in this process). The only way short of wiping the DB.
    mid = register_tiny(sdag_graph, neo4j_settings, unique_name("noprobe"), weights.data)
    cleanup.append(mid)
    monkeypatch.setattr(probes, "probe_sets", lambda graph: [])
    message = assert_refused(
        server,
        sdag_graph,
        neo4j_settings,
        "LabelModel",
        ingestion_pb2.LabelModelRequest(model_id=mid),
        grpc.StatusCode.FAILED_PRECONDITION,
        "no concept has probe images",
    )
    assert mid in message
    with pytest.raises(FailedPrecondition, match="no concept has probe images"):
        labeller.label_model(sdag_graph, neo4j_settings, mid)
    assert not registry.get_model(sdag_graph, mid).get("labelled_at")
    for options, fragment in [
        (ingestion_pb2.LabelOptions(probe_set="some-set"), "probe_set"),
        (ingestion_pb2.LabelOptions(top_k=-1), "top_k"),
        (ingestion_pb2.LabelOptions(min_score=1.5), "min_score"),
    ]:
        err = rpc_error(
            server.stub.LabelModel, ingestion_pb2.LabelModelRequest(model_id=mid, options=options)
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in err.details()


def test_a_failing_job_reports_failed(
    server, sdag_graph, neo4j_settings, weights, probe_sets, cleanup
) -> None:
    """A job that fails while running (its weights vanished from the store) ends FAILED with
    the error as its message; the model stays unlabelled."""
    mid = register_tiny(sdag_graph, neo4j_settings, unique_name("vanish"), weights.other)
    cleanup.append(mid)
    Path(registry.get_model(sdag_graph, mid)["weights_path"]).unlink()
    job = server.stub.LabelModel(ingestion_pb2.LabelModelRequest(model_id=mid))
    final = wait_for_job(server, job.job_id)[-1]
    assert final.state == ingestion_pb2.LABEL_JOB_STATE_FAILED
    assert "missing from the model store" in final.message and mid in final.message
    assert final.HasField("finished_at") and final.heads_done == 0
    assert not server.stub.GetModel(ingestion_pb2.GetModelRequest(model_id=mid)).labelled


# --- conversions (no server) ----------------------------------------------------------------


def test_input_spec_defaults() -> None:
    lite = loading.EFFICIENTNET_LITE["efficientnet_lite0"].input_spec
    assert wire.spec_from_proto(common_pb2.InputSpec(), "", lite) == lite
    bigger = wire.spec_from_proto(common_pb2.InputSpec(size=256), "", lite)
    assert bigger.size == 256 and bigger.mean == lite.mean and bigger.resize == lite.resize
    gray = wire.spec_from_proto(common_pb2.InputSpec(size=32, channels=1), "no_arch", None)
    assert gray == InputSpec(
        size=32, resize="resize_crop", crop_pct=0.875, mean=(0.449,), std=(0.226,), channels=1
    )
    timm_default = wire.spec_from_proto(common_pb2.InputSpec(), "resnet18", None)
    assert timm_default.size == 224 and timm_default.channels == 3
    fashion = wire.spec_from_proto(fashion_spec(), ARCH, None)
    assert fashion == fashion_experts.FASHION_INPUT_SPEC
    assert wire.spec_to_proto(fashion.to_dict()) == fashion_spec(crop_pct=1.0)
    assert ingestion.concept_display_name("gym_shoe.n.01") == "gym shoe"


# --- health and reflection ------------------------------------------------------------------


def test_health_and_reflection(server) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)
    deadline = time.monotonic() + 20
    while True:
        status = health.Check(
            health_pb2.HealthCheckRequest(service=ingestion.SERVICE_NAME), timeout=5
        ).status
        if status == health_pb2.HealthCheckResponse.SERVING or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert ingestion.SERVICE_NAME == "mllgraph.v1.IngestionService"
    reflection = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    responses = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert ingestion.SERVICE_NAME in names


def test_main_serves_until_sigterm(graph, neo4j_settings) -> None:
    """`python -m services.ingestion`: serves, reports SERVING, stops cleanly on SIGTERM."""
    env = {**os.environ, "MLLGRAPH_HOME": str(neo4j_settings.home), "PYTHONUNBUFFERED": "1"}
    if neo4j_settings.neo4j_uri:
        env["NEO4J_URI"] = neo4j_settings.neo4j_uri
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.ingestion", "--port", "0"],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        port = None
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            found = [re.search(r"ingestion_started port=(\d+)", ln) for ln in list(lines)]
            port = next((int(m.group(1)) for m in found if m), None)
            time.sleep(0.1)
        assert port, "".join(lines)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = None
            while time.monotonic() < deadline:
                status = health.Check(
                    health_pb2.HealthCheckRequest(service=ingestion.SERVICE_NAME), timeout=5
                ).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.2)
            assert status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    log = "".join(lines)
    assert "shutdown reason=SIGTERM" in log and "shutdown status=done" in log
    assert "level=INFO logger=mllgraph.services.ingestion health status=SERVING" in log


def test_job_queue_runs_one_job_at_a_time_in_order() -> None:
    """The job model without a database: FIFO, one at a time, errors on the job, eviction,
    and shutdown failing what never started."""

    async def scenario() -> None:
        running: list[str] = []
        overlap: list[int] = []
        gate = asyncio.Event()

        async def run(job: label_jobs.LabelJob) -> str:
            running.append(job.model_id)
            overlap.append(sum(j.state == label_jobs.RUNNING for j in queue._jobs.values()))
            job.progress = 0.5
            if job.model_id == "blocked@1":
                await gate.wait()
            if job.model_id == "bad@1":
                raise FailedPrecondition("weights are gone")
            if job.model_id == "bug@1":
                raise KeyError("oops")
            return f"done {job.model_id}"

        queue = label_jobs.LabelJobQueue(run, keep_finished=2)
        opts = label_work.LabelOptions()
        jobs = [queue.submit(m, opts, 3) for m in ("a@1", "bad@1", "bug@1", "blocked@1", "z@1")]
        assert all(j.state == label_jobs.QUEUED for j in jobs)
        assert queue.active_for("a@1") is jobs[0] and queue.active_for("nope@1") is None
        for _ in range(200):
            if jobs[3].state == label_jobs.RUNNING:
                break
            await asyncio.sleep(0.01)
        assert running == ["a@1", "bad@1", "bug@1", "blocked@1"] and set(overlap) == {1}
        a, bad, bug = (j.to_proto() for j in jobs[:3])
        assert a.state == label_jobs.DONE and a.progress == 1.0 and a.heads_done == 3
        assert a.message == "done a@1" and a.HasField("finished_at")
        assert bad.state == label_jobs.FAILED and bad.message == "weights are gone"
        assert bug.state == label_jobs.FAILED and "internal error (KeyError)" in bug.message
        assert jobs[3].to_proto().progress == 0.5 and jobs[4].state == label_jobs.QUEUED
        with pytest.raises(NotFound):  # evicted: only the 2 newest finished jobs are kept
            queue.get(jobs[0].job_id)
        assert queue.get(jobs[2].job_id) is jobs[2]
        gate.set()
        await queue.close(grace=5)
        assert jobs[3].state == label_jobs.DONE
        assert jobs[4].state == label_jobs.FAILED and "shutting down" in jobs[4].message
        assert running[-1] == "blocked@1"  # z@1 never ran

    asyncio.run(scenario())


def test_label_jobs_do_not_inherit_the_submitting_rpcs_deadline() -> None:
    """The worker outlives the LabelModel call that started it: its graph calls (in worker
    threads) must see no deadline, not one that passed with that call."""

    async def scenario() -> None:
        seen: list[float | None] = []

        async def run(job: label_jobs.LabelJob) -> str:
            seen.append(await asyncio.to_thread(deadline.remaining))
            return "done"

        queue = label_jobs.LabelJobQueue(run)
        with deadline.within(0.01):  # as inside a LabelModel call with a short deadline
            job = queue.submit("a@1", label_work.LabelOptions(), 1)
        for _ in range(500):
            if not job.active:
                break
            await asyncio.sleep(0.01)
        await queue.close(grace=5)
        assert job.state == label_jobs.DONE and seen == [None]

    asyncio.run(scenario())
