"""Inputs locked down (issue 12, point 2) on the IngestionService, end to end over gRPC
against the real Neo4j of the fixtures:

* UploadWeights streams a weights file (hashed on the fly, size-capped, kept only complete)
  and RegisterModel names it by weights_sha256;
* RegisterModel's weights_path is read only inside the import folder (no "..", no absolute
  path outside, no symlink out); a server without one refuses weights_path;
* AddProbes streams probe images with their concept and reports what it attached where,
  what it refused and why, and which models it marked stale;
* nothing is written on failure: no temporary file, no Model node, no probe set.

Everything created carries a unique prefix or concept and is removed afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from mllgraph.hub import imports, loading, probe_folder, probes, registry
from mllgraph.hubs.fashion import experts as fashion_experts
from mllgraph.settings import Settings
from mllgraph.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc
from tests.helpers import ingestion_server

pytestmark = pytest.mark.neo4j

SANDAL, GYM_SHOE = "n04133789", "n03472535"
ESPADRILLE, HUARACHE = "n03297103", "n03547530"  # no test model or ImageNet head declares them
ARCH = "test_efficientnet"
PREFIX = f"inputtest-{uuid.uuid4().hex[:8]}"
UPLOAD_LIMIT = 4 * 1024 * 1024
MAX_PROBES = 8
MAX_PIXELS = 300 * 300
T = 120.0


@dataclass
class Server:
    stub: ingestion_pb2_grpc.IngestionServiceStub
    settings: Settings
    port: int


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[Server]:
    """The ingestion service over `settings` on a free port, its loop in a thread."""
    with ingestion_server(settings) as (running, channel, _):
        yield Server(ingestion_pb2_grpc.IngestionServiceStub(channel), settings, running.port)


@pytest.fixture(scope="module")
def import_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("imports")


@pytest.fixture(scope="module")
def server(neo4j_settings, sdag_graph, import_dir: Path) -> Iterator[Server]:
    settings = dataclasses.replace(
        neo4j_settings,
        import_dir=import_dir,
        max_upload_bytes=UPLOAD_LIMIT,
        max_probe_images=MAX_PROBES,
        infer_max_image_pixels=MAX_PIXELS,
    )
    with serving(settings) as s:
        yield s


@pytest.fixture(scope="module")
def weights(import_dir: Path) -> bytes:
    torch.manual_seed(0)
    path = loading.save_weights(loading.build_timm(ARCH, 2, 1), import_dir / "ok.safetensors")
    data = path.read_bytes()
    assert len(data) < UPLOAD_LIMIT
    return data


def spec() -> common_pb2.InputSpec:
    s = fashion_experts.FASHION_INPUT_SPEC
    return common_pb2.InputSpec(
        size=s.size,
        resize_mode=common_pb2.RESIZE_MODE_RESIZE,
        mean=list(s.mean),
        std=list(s.std),
        channels=s.channels,
    )


def request(name: str, **source: Any) -> ingestion_pb2.RegisterModelRequest:
    return ingestion_pb2.RegisterModelRequest(
        name=name, arch=ARCH, wnids=[SANDAL, GYM_SHOE], input_spec=spec(), **source
    )


def chunks(data: bytes, size: int = 64 * 1024, **first: Any) -> Iterator[Any]:
    for i in range(0, max(len(data), 1), size):
        extra = first if i == 0 else {}
        yield ingestion_pb2.WeightsChunk(data=data[i : i + size], **extra)


def failure(call: Any, *args: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=T)
    return info.value


def leftovers(settings: Settings) -> list[str]:
    """Temporary files or folders of uploads and registrations still in the model store."""
    root = settings.upload_dir
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def model_count(graph) -> int:
    return graph.run_user_query("MATCH (m:Model) RETURN count(m) AS n")[0]["n"]


def blobs(settings: Settings) -> set[Path]:
    root = settings.model_store / "blobs"
    return {p for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()


# --- uploads --------------------------------------------------------------------------------


def test_upload_then_register(server, sdag_graph, weights, cleanup) -> None:
    sha = hashlib.sha256(weights).hexdigest()
    ref = server.stub.UploadWeights(
        chunks(weights, total_bytes=len(weights), sha256=sha), timeout=T
    )
    assert (ref.sha256, ref.size_bytes) == (sha, len(weights))
    assert (server.settings.upload_dir / sha).read_bytes() == weights
    assert leftovers(server.settings) == []

    name = f"{PREFIX}-up"
    # A refused registration writes nothing and keeps the upload, so the caller can retry.
    n = model_count(sdag_graph)
    bad = request(name, weights_sha256=sha)
    bad.wnids[:] = [SANDAL, "n99999999"]
    err = failure(server.stub.RegisterModel, bad)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "n99999999" in err.details()
    assert model_count(sdag_graph) == n and leftovers(server.settings) == []
    assert (server.settings.upload_dir / sha).is_file()

    model = server.stub.RegisterModel(request(name, weights_sha256=sha), timeout=T)
    cleanup.append(model.id)
    assert model.source == ingestion_pb2.MODEL_SOURCE_WEIGHTS_UPLOAD
    assert model.sha256 == sha and model.num_classes == 2 and model.source_ref == ""
    blob = registry.blob_path(server.settings, sha, ".safetensors")
    assert blob.read_bytes() == weights
    assert not (server.settings.upload_dir / sha).exists()  # consumed by the registration
    assert leftovers(server.settings) == []

    # The same digest again: the weights are in the store now, so a second name needs no
    # second upload; an unknown digest is NOT_FOUND, a malformed one INVALID_ARGUMENT.
    again = server.stub.RegisterModel(request(f"{name}-2", weights_sha256=sha), timeout=T)
    cleanup.append(again.id)
    assert again.sha256 == sha
    err = failure(server.stub.RegisterModel, request(f"{name}-3", weights_sha256="ab" * 32))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "UploadWeights" in err.details()
    err = failure(server.stub.RegisterModel, request(f"{name}-3", weights_sha256="xyz"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "64 hex" in err.details()


def test_refused_uploads_keep_nothing(server, sdag_graph, weights) -> None:
    """Over the limit (declared or streamed), a wrong digest or size, an empty stream:
    refused, and no file is left in the model store."""
    settings = server.settings
    before = set(settings.upload_dir.iterdir()) if settings.upload_dir.is_dir() else set()
    big = os.urandom(UPLOAD_LIMIT + 1)
    cases = [
        (chunks(big, 1 << 20), grpc.StatusCode.RESOURCE_EXHAUSTED, "upload limit"),
        (
            chunks(weights, total_bytes=UPLOAD_LIMIT + 1),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "MLLGRAPH_MAX_UPLOAD_BYTES",
        ),
        (chunks(weights, sha256="0" * 64), grpc.StatusCode.INVALID_ARGUMENT, "expected"),
        (
            chunks(weights, total_bytes=len(weights) + 1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "total_bytes",
        ),
        (iter([]), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ]
    for stream, code, fragment in cases:
        err = failure(server.stub.UploadWeights, stream)
        assert err.code() == code, err.details()
        assert fragment.lower() in err.details().lower(), err.details()
        now = set(settings.upload_dir.iterdir()) if settings.upload_dir.is_dir() else set()
        assert now == before, "a refused upload left a file"

    # weights_bytes has the same cap (RESOURCE_EXHAUSTED), and writes nothing either.
    n = model_count(sdag_graph)
    err = failure(server.stub.RegisterModel, request(f"{PREFIX}-big", weights_bytes=big))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "upload limit" in err.details()
    assert model_count(sdag_graph) == n


def test_cancelled_upload_keeps_nothing(server) -> None:
    settings = server.settings
    before = set(settings.upload_dir.iterdir()) if settings.upload_dir.is_dir() else set()
    sent = threading.Event()

    def slow() -> Iterator[Any]:
        yield ingestion_pb2.WeightsChunk(data=b"x" * 1024)
        sent.set()
        threading.Event().wait(30)  # never finishes: the caller cancels
        yield ingestion_pb2.WeightsChunk(data=b"y")

    future = server.stub.UploadWeights.future(slow(), timeout=T)
    assert sent.wait(10)
    import time

    deadline = time.monotonic() + 10  # the server has opened its temporary file
    while not leftovers(settings) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers(settings), "the upload never reached the server"
    future.cancel()
    while leftovers(settings) and time.monotonic() < deadline + 10:
        time.sleep(0.05)
    assert leftovers(settings) == []
    assert set(settings.upload_dir.iterdir()) == before


def test_stale_uploads_are_pruned(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, upload_ttl_s=60)
    with imports.Upload(settings) as up:
        up.write(b"weights")
        sha, _ = up.finish()
    path = settings.upload_dir / sha
    crashed = settings.upload_dir / ".register-crashed"  # a registration's temporary folder
    (crashed / "x").parent.mkdir()
    (crashed / "x").write_bytes(b"copy")
    os.utime(crashed, (path.stat().st_mtime, path.stat().st_mtime))
    assert imports.prune_uploads(settings) == 0 and path.exists() and crashed.exists()
    assert imports.prune_uploads(settings, now=path.stat().st_mtime + 61) == 2
    assert not path.exists() and not crashed.exists()


# --- the import folder ----------------------------------------------------------------------


def test_weights_path_is_read_only_inside_the_import_folder(
    server, sdag_graph, neo4j_settings, weights, import_dir, tmp_path, cleanup
) -> None:
    outside = tmp_path / "outside.safetensors"  # valid weights: only the place is wrong
    outside.write_bytes(weights)
    (import_dir / "link.safetensors").symlink_to(outside)
    (import_dir / "linkdir").symlink_to(tmp_path)
    (import_dir / "sub").mkdir()
    escapes = {
        "dot-dot": "sub/../../outside.safetensors",
        "dot-dot-inside": "sub/../ok.safetensors",
        "absolute-outside": str(outside),
        "symlink-out": "link.safetensors",
        "symlinked-folder-out": "linkdir/outside.safetensors",
        "absolute-through-symlink": str(import_dir / "linkdir" / "outside.safetensors"),
        "missing": "nowhere.safetensors",
        "a-folder": "sub",
    }
    n, files = model_count(sdag_graph), blobs(neo4j_settings)
    for case, path in escapes.items():
        err = failure(server.stub.RegisterModel, request(f"{PREFIX}-{case}", weights_path=path))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (case, err.details())
        assert "import folder" in err.details(), (case, err.details())
    assert model_count(sdag_graph) == n and blobs(neo4j_settings) == files
    assert leftovers(server.settings) == []

    # Inside, relative or absolute: read (and recorded relative to the folder).
    for i, path in enumerate(["ok.safetensors", str(import_dir / "ok.safetensors")]):
        model = server.stub.RegisterModel(request(f"{PREFIX}-in{i}", weights_path=path), timeout=T)
        cleanup.append(model.id)
        assert model.source == ingestion_pb2.MODEL_SOURCE_WEIGHTS_PATH
        assert model.source_ref == "ok.safetensors"
        assert model.sha256 == hashlib.sha256(weights).hexdigest()
    assert leftovers(server.settings) == []


def test_no_import_folder_refuses_weights_path(neo4j_settings, sdag_graph, weights, import_dir):
    settings = dataclasses.replace(neo4j_settings, import_dir=None)
    with serving(settings) as s:
        err = failure(
            s.stub.RegisterModel,
            request(f"{PREFIX}-noimport", weights_path=str(import_dir / "ok.safetensors")),
        )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "MLLGRAPH_IMPORT_DIR" in err.details() and "UploadWeights" in err.details()


# --- probe images over gRPC ----------------------------------------------------------------


def png(rng: np.random.Generator, h: int = 40, w: int = 60) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_add_probes_attaches_reports_and_marks_stale(
    server, sdag_graph, neo4j_settings, weights, cleanup
) -> None:
    rng = np.random.default_rng(1)
    # A model declaring espadrille: new probes of espadrille make its labels stale.
    mid = registry.register_model(
        sdag_graph,
        neo4j_settings,
        registry.Registration(
            name=f"{PREFIX}-espadrille",
            arch=ARCH,
            weights_bytes=weights,
            wnids=[ESPADRILLE, SANDAL],
            input_spec=fashion_experts.FASHION_INPUT_SPEC,
        ),
    ).record["id"]
    cleanup.append(mid)
    images = [
        ingestion_pb2.ProbeImage(
            concept=ESPADRILLE, name="esp/1.png", encoded=png(rng), source="t"
        ),
        ingestion_pb2.ProbeImage(concept=ESPADRILLE, name="esp/2.png", encoded=png(rng, 50, 30)),
        ingestion_pb2.ProbeImage(concept="huarache.n.01", encoded=png(rng)),
        ingestion_pb2.ProbeImage(concept="huarache.n.01", name="hua/bad.png", encoded=b"no png"),
        ingestion_pb2.ProbeImage(
            concept="huarache.n.01", name="hua/huge.png", encoded=png(rng, 400, 400)
        ),
        ingestion_pb2.ProbeImage(concept="n99999999", name="ghost/1.png", encoded=png(rng)),
    ]
    before = {p.id for p in probes.probe_sets(sdag_graph)}
    report = server.stub.AddProbes(iter(images), timeout=T)
    made = [a.set_id for a in report.attached]
    try:
        got = {a.folder: (a.concept.wnid, a.images, a.created) for a in report.attached}
        assert got == {ESPADRILLE: (ESPADRILLE, 2, True), "huarache.n.01": (HUARACHE, 1, True)}
        refused = {r.path: r.reason for r in report.refused}
        assert set(refused) == {"hua/bad.png", "hua/huge.png", "n99999999"}
        assert "not a readable" in refused["hua/bad.png"]
        assert "limit" in refused["hua/huge.png"]
        assert "no concept" in refused["n99999999"]
        assert mid in report.stale_models
        assert mid in probe_folder.stale_models(sdag_graph)
        sets = {p.id: p for p in probes.probe_sets(sdag_graph)}
        assert set(made) <= set(sets) and not set(made) & before
        stored = probes.load_images(sets[made[0]])
        assert stored.shape[1:] == (probe_folder.SIDE, probe_folder.SIDE, 3)
    finally:
        for set_id in made:
            probes.remove_probe_set(sdag_graph, set_id, neo4j_settings)


def test_add_probes_refuses_too_many_and_attaches_nothing(server, sdag_graph) -> None:
    rng = np.random.default_rng(2)
    images = [
        ingestion_pb2.ProbeImage(concept=ESPADRILLE, encoded=png(rng))
        for _ in range(MAX_PROBES + 1)
    ]
    before = {p.id for p in probes.probe_sets(sdag_graph)}
    err = failure(server.stub.AddProbes, iter(images))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "MLLGRAPH_MAX_PROBE_IMAGES" in err.details()
    assert {p.id for p in probes.probe_sets(sdag_graph)} == before
    err = failure(server.stub.AddProbes, iter([]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- the Python client and the CLI through the service ----------------------------------


def test_client_and_cli_upload_weights_and_probes(
    server, sdag_graph, neo4j_settings, tmp_path, cleanup, capsys
) -> None:
    from mllgraph import cli
    from mllgraph import client as mc

    torch.manual_seed(3)
    local = loading.save_weights(loading.build_timm(ARCH, 2, 1), tmp_path / "mine.safetensors")
    sha = hashlib.sha256(local.read_bytes()).hexdigest()
    target = f"127.0.0.1:{server.port}"
    with mc.Client(target, settings=server.settings, timeout=T) as client:
        model = client.register_model(
            f"{PREFIX}-client",
            weights=local,  # a local file: streamed, never named to the server
            arch=ARCH,
            wnids=[SANDAL, GYM_SHOE],
            input_size=28,
            channels=1,
            mean=[0.5],
            std=[0.5],
            resize="resize",
        )
        cleanup.append(model.id)
        assert model.source == "weights_upload" and model.sha256 == sha

    code = cli.main(
        [
            "models", "register", "--target", target, "--name", f"{PREFIX}-cli",
            "--weights", str(local), "--arch", ARCH, "--wnids", f"{SANDAL},{GYM_SHOE}",
            "--input-size", "28", "--channels", "1",
        ],
        server.settings,
    )  # fmt: skip
    cleanup.append(f"{PREFIX}-cli@1")
    assert code == 0, capsys.readouterr()
    record = registry.get_model(sdag_graph, f"{PREFIX}-cli@1")
    assert (record["source"], record["sha256"]) == ("stream", sha)
    assert leftovers(server.settings) == []

    rng = np.random.default_rng(4)
    folder = tmp_path / "probes"
    for sub, n in (("espadrille.n.01", 2), (HUARACHE, 1)):
        (folder / sub).mkdir(parents=True)
        for i in range(n):
            (folder / sub / f"{i}.png").write_bytes(png(rng))
    (folder / HUARACHE / "notes.txt").write_text("not an image")
    before = {p.id for p in probes.probe_sets(sdag_graph)}
    try:
        capsys.readouterr()
        code = cli.main(
            ["probes", "add", "--folder", str(folder), "--target", target], server.settings
        )
        out = "".join(capsys.readouterr().out.split())  # the console wraps long lines
        assert code == 0, out
        assert "added:espadrille.n.01/" in out and "2images" in out
        assert f"added:{HUARACHE}/" in out
        assert "notes.txt:nota.jpg/.jpeg/.pngfile" in out
    finally:
        for p in probes.probe_sets(sdag_graph):
            if p.id not in before:
                probes.remove_probe_set(sdag_graph, p.id, server.settings)
