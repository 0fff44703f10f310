"""Check 2, bad inputs: the table of malformed requests per RPC, each with the codes it may
be answered with, and the check that every one gets such a code and leaves the catalogue
unchanged (node and edge counts before and after).

Imports the rig and the requests; it must not import the other checks or the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mllgraph.eval.bench.reliability.requests import (
    error_code,
    error_details,
    plan_all,
    raw_image,
    zero_png,
)
from mllgraph.eval.bench.reliability.rig import FASHION, Rig


def _bad_requests(rig: Rig, plan: Any) -> list[tuple[str, str, Callable[[], Any], set[str]]]:
    """(rpc, what, call, expected codes)."""
    from mllgraph.v1 import inference_pb2, ingestion_pb2, selection_pb2

    sel, inf, ing = rig.stub("selection"), rig.stub("inference"), rig.stub("ingestion")
    T, inv, nf = 30, {"INVALID_ARGUMENT"}, {"NOT_FOUND"}
    inv_fp = {"INVALID_ARGUMENT", "FAILED_PRECONDITION"}
    tc = selection_pb2.TaskClass
    img = raw_image(rig.images[0]) if rig.images is not None else None

    def select(classes: list[Any], **kw: Any) -> Callable[[], Any]:
        return lambda: sel.SelectHeads(
            selection_pb2.SelectHeadsRequest(classes=classes, **kw), timeout=T
        )

    def classify(**kw: Any) -> Callable[[], Any]:
        return lambda: inf.Classify(inference_pb2.ClassifyRequest(**kw), timeout=T)

    def inline(body: str) -> Callable[[], Any]:
        bad = selection_pb2.Plan()
        bad.CopyFrom(plan)
        bad.plan_id = ""
        bad.combination_json = body
        return classify(inline_plan=bad, images=[img])

    def raw(data: bytes, shape: list[int], dtype: str = "uint8") -> Any:
        return inference_pb2.Image(raw=inference_pb2.RawArray(data=data, shape=shape, dtype=dtype))

    def register(**kw: Any) -> Callable[[], Any]:
        return lambda: ing.RegisterModel(ingestion_pb2.RegisterModelRequest(**kw), timeout=T)

    nested = "[" * 10_000 + "]" * 10_000
    sandal = FASHION[5]
    return [
        ("SelectHeads", "no classes", select([]), inv),
        ("SelectHeads", "empty class name", select([tc(name="")]), inv),
        ("SelectHeads", "control character in a name", select([tc(name="sand\x07al")]), inv),
        ("SelectHeads", "format character in a name", select([tc(name="sand\u200eal")]), inv),
        ("SelectHeads", "100k-character name", select([tc(name="x" * 100_000)]), inv),
        (
            "SelectHeads",
            "unknown pinned wnid",
            select([tc(name="x", pinned_wnid="n99999999")]),
            inv | nf,
        ),
        (
            "SelectHeads",
            "malformed pinned wnid",
            select([tc(name="x", pinned_wnid="../etc")]),
            inv | nf,
        ),
        (
            "SelectHeads",
            "20,000 classes",
            select([tc(name=f"c{i}") for i in range(20_000)]),
            inv | {"RESOURCE_EXHAUSTED"},
        ),
        (
            "SelectHeads",
            "negative budget",
            select([tc(name=sandal[1], pinned_wnid=sandal[0])], budget=-1),
            inv,
        ),
        (
            "SelectHeads",
            "sub-hub naming an unknown model",
            select(
                [tc(name=sandal[1], pinned_wnid=sandal[0])],
                options=selection_pb2.SelectOptions(models=["no-such-model@1"]),
            ),
            inv | nf,
        ),
        (
            "GetPlan",
            "empty id",
            lambda: sel.GetPlan(selection_pb2.GetPlanRequest(plan_id=""), timeout=T),
            inv,
        ),
        (
            "GetPlan",
            "unknown id",
            lambda: sel.GetPlan(selection_pb2.GetPlanRequest(plan_id="nope"), timeout=T),
            nf,
        ),
        ("Classify", "no plan", classify(images=[img]), inv),
        ("Classify", "no images", classify(plan_id=plan.plan_id), inv),
        ("Classify", "unknown plan id", classify(plan_id="no-such-plan", images=[img]), nf),
        (
            "Classify",
            "not an image file",
            classify(plan_id=plan.plan_id, images=[inference_pb2.Image(encoded=b"not a png")]),
            inv,
        ),
        (
            "Classify",
            "truncated PNG",
            classify(plan_id=plan.plan_id, images=[inference_pb2.Image(encoded=zero_png(64)[:40])]),
            inv,
        ),
        (
            "Classify",
            "image without pixels",
            classify(plan_id=plan.plan_id, images=[inference_pb2.Image()]),
            inv,
        ),
        (
            "Classify",
            "raw: data shorter than its shape",
            classify(plan_id=plan.plan_id, images=[raw(b"\0" * 10, [28, 28])]),
            inv,
        ),
        (
            "Classify",
            "raw: unknown dtype",
            classify(plan_id=plan.plan_id, images=[raw(b"\0" * 784, [28, 28], "complex256")]),
            inv,
        ),
        (
            "Classify",
            "raw: 5-d shape",
            classify(plan_id=plan.plan_id, images=[raw(b"\0" * 32, [2, 2, 2, 2, 2])]),
            inv,
        ),
        (
            "Classify",
            "raw: 10^10 pixels claimed",
            classify(plan_id=plan.plan_id, images=[raw(b"\0" * 784, [100_000, 100_000])]),
            inv | {"RESOURCE_EXHAUSTED"},
        ),
        (
            "Classify",
            "more images than the cap",
            classify(plan_id=plan.plan_id, images=[img] * (rig.settings.infer_max_images + 1)),
            inv | {"RESOURCE_EXHAUSTED"},
        ),
        ("Classify", "inline plan: not JSON", inline("{"), inv_fp),
        ("Classify", "inline plan: schema only", inline('{"schema_version": 1}'), inv_fp),
        ("Classify", "inline plan: deeply nested JSON", inline(nested), inv_fp),
        ("Classify", "inline plan: a list", inline("[1, 2, 3]"), inv_fp),
        (
            "Classify",
            "inline plan: unknown model",
            inline(plan.combination_json.replace(rig.models[0], "no-such-model@1")),
            inv_fp | nf,
        ),
        ("RegisterModel", "no name", register(arch="resnet18", weights_bytes=b"x"), inv),
        (
            "RegisterModel",
            "no weights source",
            register(name="r-bad", arch="resnet18", wnids=[sandal[0]]),
            inv,
        ),
        (
            "RegisterModel",
            "garbage weights bytes",
            register(
                name="r-bad", arch="test_efficientnet", weights_bytes=b"garbage", wnids=[sandal[0]]
            ),
            inv,
        ),
        (
            "RegisterModel",
            "weights_path escaping",
            register(
                name="r-bad",
                arch="test_efficientnet",
                weights_path="../../etc/passwd",
                wnids=[sandal[0]],
            ),
            inv_fp,
        ),
        (
            "RegisterModel",
            "unknown upload sha256",
            register(
                name="r-bad", arch="test_efficientnet", weights_sha256="0" * 64, wnids=[sandal[0]]
            ),
            inv | nf,
        ),
        (
            "RegisterModel",
            "both class_names and wnids",
            register(
                name="r-bad",
                arch="test_efficientnet",
                weights_bytes=b"x",
                wnids=[sandal[0]],
                class_names=["sandal"],
            ),
            inv,
        ),
        (
            "RegisterModel",
            "unknown builtin",
            register(name="r-bad", builtin="no_such_builtin"),
            inv | nf,
        ),
        (
            "RegisterModel",
            "control character in the name",
            register(
                name="r\x00bad", arch="test_efficientnet", weights_bytes=b"x", wnids=[sandal[0]]
            ),
            inv,
        ),
        (
            "GetModel",
            "empty id",
            lambda: ing.GetModel(ingestion_pb2.GetModelRequest(model_id=""), timeout=T),
            inv,
        ),
        (
            "GetModel",
            "unknown id",
            lambda: ing.GetModel(ingestion_pb2.GetModelRequest(model_id="no-such@1"), timeout=T),
            nf,
        ),
        (
            "ListModels",
            "negative page size",
            lambda: ing.ListModels(ingestion_pb2.ListModelsRequest(page_size=-1), timeout=T),
            inv,
        ),
        (
            "ListModels",
            "malformed page token",
            lambda: ing.ListModels(ingestion_pb2.ListModelsRequest(page_token="%%%"), timeout=T),
            inv,
        ),
        (
            "LabelModel",
            "unknown model",
            lambda: ing.LabelModel(
                ingestion_pb2.LabelModelRequest(model_id="no-such@1"), timeout=T
            ),
            nf,
        ),
        (
            "GetLabelJob",
            "unknown job",
            lambda: ing.GetLabelJob(
                ingestion_pb2.GetLabelJobRequest(job_id="no-such-job"), timeout=T
            ),
            nf,
        ),
        (
            "DeleteModel",
            "unknown model",
            lambda: ing.DeleteModel(
                ingestion_pb2.DeleteModelRequest(model_id="no-such@1"), timeout=T
            ),
            nf,
        ),
        (
            "DeleteModel",
            "empty id",
            lambda: ing.DeleteModel(ingestion_pb2.DeleteModelRequest(model_id=""), timeout=T),
            inv,
        ),
        (
            "UploadWeights",
            "sha256 mismatch",
            lambda: ing.UploadWeights(
                iter([ingestion_pb2.WeightsChunk(data=b"abc", total_bytes=3, sha256="0" * 64)]),
                timeout=T,
            ),
            inv,
        ),
        (
            "UploadWeights",
            "declared size over the cap",
            lambda: ing.UploadWeights(
                iter([ingestion_pb2.WeightsChunk(data=b"abc", total_bytes=1 << 50)]), timeout=T
            ),
            inv | {"RESOURCE_EXHAUSTED"},
        ),
    ]


def check_bad_inputs(rig: Rig) -> dict[str, Any]:
    plan = plan_all(rig)
    before = rig.counts()
    tried: list[dict[str, Any]] = []
    for rpc, what, call, expected in _bad_requests(rig, plan):
        t = time.perf_counter()
        try:
            call()
            code, details = "OK", ""
        except Exception as e:  # noqa: BLE001
            code, details = error_code(e), error_details(e)
        tried.append(
            {
                "rpc": rpc,
                "input": what,
                "code": code,
                "expected": sorted(expected),
                "pass": code in expected,
                "ms": round((time.perf_counter() - t) * 1000, 1),
                "details": details[:160],
            }
        )
    after = rig.counts()
    per_rpc: dict[str, dict[str, int]] = {}
    for row in tried:
        d = per_rpc.setdefault(row["rpc"], {"tried": 0, "right_code": 0})
        d["tried"] += 1
        d["right_code"] += int(row["pass"])
    unchanged = before == after
    return {
        "per_rpc": per_rpc,
        "tried": tried,
        "catalogue_before": before,
        "catalogue_after": after,
        "catalogue_unchanged": unchanged,
        "pass": unchanged and all(r["pass"] for r in tried),
    }
