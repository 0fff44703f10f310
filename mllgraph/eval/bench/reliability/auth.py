"""Check 3, auth: an ingestion service started with tokens refuses every write RPC without a
token or with an unknown one (UNAUTHENTICATED) and with a read token (PERMISSION_DENIED).

Imports the rig and the requests; it must not import the other checks or the report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mllgraph.eval.bench.reliability.requests import zero_png
from mllgraph.eval.bench.reliability.rig import FASHION, Rig, Service, free_port


def check_auth(rig: Rig) -> dict[str, Any]:
    import grpc

    from mllgraph.auth import create_token
    from mllgraph.v1 import ingestion_pb2, ingestion_pb2_grpc

    read_token, read_entry = create_token("read", "bench-reader")
    write_token, write_entry = create_token("write", "bench-writer")
    env = {**rig.env, "MLLGRAPH_TOKENS": f"{read_entry.line()};{write_entry.line()}"}
    svc = Service("ingestion", free_port(), env, log=rig.home / "ingestion-auth.log")
    svc.start()
    before = rig.counts()
    rows: list[dict[str, Any]] = []
    try:
        svc.wait_ready()
        with grpc.insecure_channel(svc.address) as channel:
            stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
            mid = rig.models[0]
            writes: dict[str, Callable[[list[tuple[str, str]]], Any]] = {
                "RegisterModel": lambda md: stub.RegisterModel(
                    ingestion_pb2.RegisterModelRequest(
                        name="auth-probe",
                        arch="test_efficientnet",
                        weights_bytes=b"x",
                        wnids=[FASHION[5][0]],
                    ),
                    timeout=30,
                    metadata=md,
                ),
                "UploadWeights": lambda md: stub.UploadWeights(
                    iter([ingestion_pb2.WeightsChunk(data=b"abc", total_bytes=3)]),
                    timeout=30,
                    metadata=md,
                ),
                "AddProbes": lambda md: stub.AddProbes(
                    iter(
                        [
                            ingestion_pb2.ProbeImage(
                                concept=FASHION[5][0], name="p.png", encoded=zero_png(28)
                            )
                        ]
                    ),
                    timeout=30,
                    metadata=md,
                ),
                "LabelModel": lambda md: stub.LabelModel(
                    ingestion_pb2.LabelModelRequest(model_id=mid), timeout=30, metadata=md
                ),
                "DeleteModel": lambda md: stub.DeleteModel(
                    ingestion_pb2.DeleteModelRequest(model_id=mid), timeout=30, metadata=md
                ),
            }
            for rpc, call in writes.items():
                for who, md, want in (
                    ("no token", [], "UNAUTHENTICATED"),
                    (
                        "unknown token",
                        [("authorization", "Bearer mlg_" + "x" * 43)],
                        "UNAUTHENTICATED",
                    ),
                    (
                        "read token",
                        [("authorization", f"Bearer {read_token}")],
                        "PERMISSION_DENIED",
                    ),
                ):
                    try:
                        call(md)
                        code = "OK"
                    except grpc.RpcError as e:
                        code = e.code().name
                    rows.append(
                        {
                            "rpc": rpc,
                            "caller": who,
                            "code": code,
                            "expected": want,
                            "pass": code == want,
                        }
                    )
            # The write token passes the interceptor: a harmless request reaches the servicer.
            try:
                stub.GetModel(
                    ingestion_pb2.GetModelRequest(model_id="no-such@1"),
                    timeout=30,
                    metadata=[("authorization", f"Bearer {write_token}")],
                )
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
            rows.append(
                {
                    "rpc": "GetModel",
                    "caller": "write token",
                    "code": code,
                    "expected": "NOT_FOUND",
                    "pass": code == "NOT_FOUND",
                }
            )
    finally:
        svc.stop()
    after = rig.counts()
    return {
        "tried": rows,
        "catalogue_unchanged": before == after,
        "pass": before == after and all(r["pass"] for r in rows),
    }
