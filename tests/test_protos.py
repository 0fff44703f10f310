"""The checked-in generated gRPC code matches the protos, and the contracts load."""

from __future__ import annotations

import shutil
from pathlib import Path

from mllgraph import protos


def test_checked_in_code_is_up_to_date() -> None:
    assert protos.check() == [], "regenerate with: python -m mllgraph.protos"


def test_cli_check_exits_zero(capsys) -> None:
    assert protos.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_cli_check_exits_one_on_a_diff(monkeypatch, capsys) -> None:
    monkeypatch.setattr(protos, "check", lambda: ["mllgraph/v1/common_pb2.py"])
    assert protos.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "mllgraph/v1/common_pb2.py" in err and "python -m mllgraph.protos" in err


def test_check_reports_changed_missing_and_stale_files(tmp_path: Path) -> None:
    shutil.copytree(protos.PROTO_ROOT, tmp_path / "proto")
    package = tmp_path / "mllgraph" / "v1"
    shutil.copytree(protos.REPO_ROOT / "mllgraph" / "v1", package)
    assert protos.check(tmp_path) == []

    (package / "common_pb2.py").write_text("# edited by hand\n")
    (package / "selection_pb2_grpc.py").unlink()
    (package / "old_pb2.py").write_text("# no longer generated\n")
    assert protos.check(tmp_path) == [
        "mllgraph/v1/common_pb2.py",
        "mllgraph/v1/old_pb2.py",
        "mllgraph/v1/selection_pb2_grpc.py",
    ]


def test_generate_writes_every_module(tmp_path: Path) -> None:
    written = protos.generate(tmp_path)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in written)
    stems = ["common", "inference", "ingestion", "selection"]
    expected = sorted(
        f"mllgraph/v1/{stem}{suffix}" for stem in stems for suffix in protos.GENERATED_SUFFIXES
    )
    assert names == expected


def test_services_and_messages_load() -> None:
    from mllgraph.v1 import (
        inference_pb2,
        inference_pb2_grpc,
        ingestion_pb2,
        ingestion_pb2_grpc,
        selection_pb2,
        selection_pb2_grpc,
    )

    def methods(module, service: str) -> set[str]:
        return set(module.DESCRIPTOR.services_by_name[service].methods_by_name)

    assert methods(ingestion_pb2, "IngestionService") == {
        "RegisterModel",
        "UploadWeights",
        "AddProbes",
        "LabelModel",
        "GetLabelJob",
        "GetModel",
        "ListModels",
        "DeleteModel",
    }
    assert methods(selection_pb2, "SelectionService") == {
        "SelectHeads",
        "GetPlan",
        "ExplainSelection",
    }
    assert methods(inference_pb2, "InferenceService") == {"Classify", "ClassifyStream"}
    stream = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].methods_by_name[
        "ClassifyStream"
    ]
    assert stream.client_streaming and stream.server_streaming
    for grpc_module, stub in [
        (ingestion_pb2_grpc, "IngestionServiceStub"),
        (selection_pb2_grpc, "SelectionServiceStub"),
        (inference_pb2_grpc, "InferenceServiceStub"),
    ]:
        assert hasattr(grpc_module, stub)

    # oneofs and enums behave as documented
    request = ingestion_pb2.RegisterModelRequest(name="m", builtin="efficientnet_lite0")
    assert request.WhichOneof("source") == "builtin"
    classify = inference_pb2.ClassifyRequest(
        plan_id="p1",
        images=[inference_pb2.Image(raw=inference_pb2.RawArray(shape=[28, 28], dtype="uint8"))],
    )
    assert classify.WhichOneof("plan") == "plan_id"
    assert classify.images[0].WhichOneof("data") == "raw"
    for enum in (
        selection_pb2.Solver,
        selection_pb2.Coverage,
        ingestion_pb2.LabelJobState,
        ingestion_pb2.ModelSource,
    ):
        assert enum.Name(0).endswith("_UNSPECIFIED")
    plan = selection_pb2.Plan(combination_json='{"schema_version": 1}')
    assert selection_pb2.Plan.FromString(plan.SerializeToString()) == plan
