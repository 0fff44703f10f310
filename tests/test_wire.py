"""mllgraph.wire: the vocabularies it writes out match the libraries', and it stays light."""

from __future__ import annotations

import subprocess
import sys

from mllgraph import wire
from mllgraph.plan.document import COVERAGES, UNCOVERED_WHY
from mllgraph.v1 import ingestion_pb2, selection_pb2


def _enum_names(enum: object, prefix: str) -> dict[int, str]:
    values = enum.DESCRIPTOR.values  # type: ignore[attr-defined]
    return {v.number: v.name.removeprefix(prefix).lower() for v in values if v.number}


def test_coverage_names_are_the_plans() -> None:
    assert sorted(wire.COVERAGE_FROM_PROTO.values()) == sorted(COVERAGES)
    assert _enum_names(selection_pb2.Coverage, "COVERAGE_") == wire.COVERAGE_FROM_PROTO
    assert all(wire.COVERAGE_FROM_PROTO[wire.COVERAGE_TO_PROTO[c]] == c for c in COVERAGES)
    assert wire.COVERAGE_FROM_PROTO[wire.COVERAGE_TO_PROTO["group"]] == "descendants"


def test_uncovered_reasons_and_job_states_are_the_enums() -> None:
    reasons = _enum_names(selection_pb2.UncoveredReason, "UNCOVERED_REASON_")
    assert {k: v.replace("_", " ") for k, v in reasons.items()} == wire.UNCOVERED_WHY_FROM_PROTO
    assert sorted(wire.UNCOVERED_WHY_TO_PROTO) == sorted(UNCOVERED_WHY)
    states = _enum_names(ingestion_pb2.LabelJobState, "LABEL_JOB_STATE_")
    assert states == wire.JOB_STATE_NAMES


def test_head_ref_fills_missing_fields_with_defaults() -> None:
    full = {"model_id": "m@1", "model_version": "1", "head_index": 3, "head_label": "cat",
            "label_score": 0.5, "label_wnid": "n02121808"}  # fmt: skip
    ref = wire.head_ref(full)
    assert (ref.model_id, ref.head_index, ref.head_label, ref.label_wnid) == (
        "m@1", 3, "cat", "n02121808"
    )  # fmt: skip
    bare = wire.head_ref({"model_id": "m@1", "head_index": 0, "model_version": None})
    assert bare.model_version == "" and bare.label_score == 0.0


def test_importing_wire_and_the_client_loads_neither_torch_nor_scipy() -> None:
    code = (
        "import sys, mllgraph.client, mllgraph.wire; "
        "print(sorted(m for m in ('torch', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
