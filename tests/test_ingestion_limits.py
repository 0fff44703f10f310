"""The ingestion service's memory and disk a caller can drive (issue 25, finding 4, services
part), with no database: AddProbes decodes within a pixel budget however many calls stream at
once, and UploadWeights keeps at most MLLGRAPH_MAX_PENDING_UPLOAD_BYTES of uploads, one caller
at most half of it."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from mllgraph import auth
from mllgraph.hub import probe_folder
from mllgraph.settings import Settings
from mllgraph.v1 import ingestion_pb2, ingestion_pb2_grpc
from services import ingestion
from tests.helpers import Loop


class NoGraph:
    """The graph of a servicer whose tests never reach the database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def verify(self) -> None:
        raise ConnectionError("no database in this test")


WRITERS = {name: auth.create_token("write", name) for name in ("alice", "bob")}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Settings, dict[str, Any]]]:
    """An ingestion service without a database; (settings, stub per caller name)."""
    settings = replace(
        Settings(),
        home=tmp_path / "home",
        tokens=";".join(entry.line() for _, entry in WRITERS.values()),
        max_pending_upload_bytes=1000,
        probe_max_inflight_pixels=2 * 300 * 300,
        infer_max_image_pixels=300 * 300,
    )
    loop = Loop()
    servicer = ingestion.IngestionServicer(settings, graph=NoGraph(settings))
    running = loop.run(ingestion.start(settings, 0, servicer=servicer))
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
    stubs = {
        name: (stub, (("authorization", f"Bearer {token}"),))
        for name, (token, _) in WRITERS.items()
    }
    try:
        yield settings, stubs
    finally:
        channel.close()
        loop.run(running.close(1.0))
        loop.close()


def _png16(side: int) -> bytes:
    """A 16-bit gray PNG of side x side."""
    pixels = np.random.default_rng(side).integers(0, 65535, (side, side), dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def test_add_probes_decodes_within_the_pixel_budget(service, monkeypatch) -> None:
    """Six AddProbes streams of 300² 16-bit PNGs at once: at most two images (the budget)
    decode at a time; every image is decoded and reaches the attach step."""
    settings, stubs = service
    stub, metadata = stubs["alice"]
    decoding, most = 0, 0
    lock = threading.Lock()
    real_load = probe_folder.load_image

    def counted_load(source: bytes, *args: Any, **kwargs: Any) -> np.ndarray:
        nonlocal decoding, most
        with lock:
            decoding += 1
            most = max(most, decoding)
        try:
            time.sleep(0.2)  # long enough for every stream to be decoding at once
            return real_load(source, *args, **kwargs)
        finally:
            with lock:
                decoding -= 1

    attached: list[int] = []

    def attach(_graph: Any, _settings: Any, groups: dict[str, list[np.ndarray]], **_: Any) -> Any:
        attached.append(sum(len(v) for v in groups.values()))
        return probe_folder.FolderReport()

    monkeypatch.setattr(probe_folder, "load_image", counted_load)
    monkeypatch.setattr(probe_folder, "attach_groups", attach)
    image = _png16(300)

    def one_call() -> None:
        probes = [ingestion_pb2.ProbeImage(concept="sandal", encoded=image) for _ in range(2)]
        stub.AddProbes(iter(probes), metadata=metadata, timeout=30)

    threads = [threading.Thread(target=one_call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert attached == [2] * 6
    assert 1 <= most <= 2, most  # 2 x 300² pixels: the budget (6 without it)


def _upload(stub: Any, metadata: Any, data: bytes, total: int = 0) -> tuple[Any, str]:
    """(WeightsRef, "") or (code, details) of an UploadWeights of `data` in 100-byte chunks."""
    chunks = [
        ingestion_pb2.WeightsChunk(data=data[i : i + 100], total_bytes=total if i == 0 else 0)
        for i in range(0, len(data), 100)
    ]
    try:
        return stub.UploadWeights(iter(chunks), metadata=metadata, timeout=10), ""
    except grpc.RpcError as e:
        return e.code(), e.details()


def _files(settings: Settings) -> list[str]:
    return sorted(p.name for p in settings.upload_dir.iterdir())


def test_pending_uploads_have_a_quota_and_one_caller_gets_half(service) -> None:
    settings, stubs = service
    (alice, a_md), (bob, b_md) = stubs["alice"], stubs["bob"]
    ref, _ = _upload(alice, a_md, b"a" * 400)
    assert ref.size_bytes == 400
    # Alice would hold 600 of the 500 one caller may: refused, nothing left behind.
    code, details = _upload(alice, a_md, b"b" * 200)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "token 'alice'" in details and "half of MLLGRAPH_MAX_PENDING_UPLOAD_BYTES" in details
    assert _files(settings) == [ref.sha256]
    # Bob gets his half; then the quota (1000) is what refuses, from the declared size.
    assert _upload(bob, b_md, b"c" * 450)[0].size_bytes == 450
    code, details = _upload(bob, b_md, b"d" * 40, total=300)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "MLLGRAPH_MAX_PENDING_UPLOAD_BYTES" in details and "850" in details
    # An upload consumed (registered) or expired frees its room.
    (settings.upload_dir / ref.sha256).unlink()
    assert _upload(alice, a_md, b"e" * 400)[0].size_bytes == 400
    # What is kept on disk counts, whoever left it (an earlier run).
    (settings.upload_dir / ("f" * 64)).write_bytes(b"f" * 100)
    code, details = _upload(alice, a_md, b"g" * 90)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "950" in details


def test_quota_bookkeeping_gives_back_what_a_failed_upload_took() -> None:
    from services import uploads

    quota = uploads.UploadQuota(replace(Settings(), max_pending_upload_bytes=1000))
    quota.started({})
    ticket = uploads.UploadTicket(quota, "address 10.0.0.1")
    ticket.cover(300)
    ticket.cover(200)  # less than held: nothing more taken
    assert quota.receiving["address 10.0.0.1"] == 300
    ticket.end(None)
    assert not quota.receiving and not quota.kept
    ticket = uploads.UploadTicket(quota, "address 10.0.0.1")
    ticket.cover(100)
    ticket.end(("a" * 64, 100))
    assert quota.kept == {"a" * 64: 100} and not quota.receiving
