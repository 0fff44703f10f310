"""Conversions between the gRPC messages (mllgraph.v1) and plain Python values that more than
one party uses: the services (services/) and the Python client (mllgraph.client).

* Enum vocabularies: coverage, uncovered reason, solver, label job state, resize mode.
* `f32` (a proto float32 as the decimal it was written as) and `timestamp`.
* `spec_to_proto` / `spec_from_proto`: an input spec (`mllgraph.hub.preprocess.InputSpec`).
* `head_ref`: a plan document's head as a HeadRef.
* `inline_plan_to_proto` / `inline_plan_from_proto`: a plan document as an inline Plan (what a
  caller sends to InferenceService.Classify) and back.

Must not import services/. Heavy library modules (torch, scipy behind mllgraph.hub.preprocess
and mllgraph.plan.document) are imported inside the functions that need them, so that
``import mllgraph.client`` stays light.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from google.protobuf.timestamp_pb2 import Timestamp

from mllgraph.errors import InvalidArgument
from mllgraph.v1 import common_pb2, ingestion_pb2, selection_pb2

if TYPE_CHECKING:
    from mllgraph.hub.preprocess import InputSpec

# --- enum vocabularies ------------------------------------------------------------------------

COVERAGE_FROM_PROTO: dict[int, str] = {
    selection_pb2.COVERAGE_EXACT: "exact",
    selection_pb2.COVERAGE_DESCENDANTS: "descendants",
    selection_pb2.COVERAGE_ANCESTOR: "ancestor",
    selection_pb2.COVERAGE_RELATED: "related",
    selection_pb2.COVERAGE_DECLARED: "declared",
    selection_pb2.COVERAGE_UNCOVERED: "uncovered",
}
"""The proto's Coverage -> a plan's coverage name (mllgraph.plan.document.COVERAGES; written out
here instead of imported so the client does not load the selection library)."""
COVERAGE_TO_PROTO: dict[str, int] = {
    **{name: number for number, name in COVERAGE_FROM_PROTO.items()},
    "group": selection_pb2.COVERAGE_DESCENDANTS,  # the candidates query's name for it
}
"""A plan's coverage name -> the proto's Coverage."""

UNCOVERED_WHY_TO_PROTO: dict[str, int] = {
    "no head": selection_pb2.UNCOVERED_REASON_NO_HEAD,
    "not chosen": selection_pb2.UNCOVERED_REASON_NOT_CHOSEN,
}
"""A plan's uncovered_why (mllgraph.plan.document.UNCOVERED_WHY) -> the proto's UncoveredReason."""
UNCOVERED_WHY_FROM_PROTO: dict[int, str] = {v: k for k, v in UNCOVERED_WHY_TO_PROTO.items()}

SOLVER_TO_PROTO: dict[str, int] = {
    "auto": selection_pb2.SOLVER_AUTO,
    "exact": selection_pb2.SOLVER_EXACT,
    "heuristic": selection_pb2.SOLVER_HEURISTIC,
}
"""The solvers a caller may ask for -> the proto's Solver."""

JOB_STATE_NAMES: dict[int, str] = {
    ingestion_pb2.LABEL_JOB_STATE_QUEUED: "queued",
    ingestion_pb2.LABEL_JOB_STATE_RUNNING: "running",
    ingestion_pb2.LABEL_JOB_STATE_DONE: "done",
    ingestion_pb2.LABEL_JOB_STATE_FAILED: "failed",
}
"""A label job's state -> its name (in the order a job goes through them)."""

RESIZE_FROM_PROTO: dict[int, str] = {
    common_pb2.RESIZE_MODE_RESIZE: "resize",
    common_pb2.RESIZE_MODE_RESIZE_CROP: "resize_crop",
}
"""The proto's ResizeMode -> an InputSpec's ``resize``."""
RESIZE_TO_PROTO: dict[str, int] = {v: k for k, v in RESIZE_FROM_PROTO.items()}


# --- scalars ----------------------------------------------------------------------------------


def f32(value: float) -> float:
    """A proto float32 as the decimal it was written as (0.286, not 0.28600001335144043)."""
    return float(f"{value:.7g}")


def timestamp(value: str | float | None) -> Timestamp | None:
    """An ISO 8601 string (Neo4j datetime) or epoch seconds as a Timestamp; None stays None."""
    if value in (None, ""):
        return None
    ts = Timestamp()
    if isinstance(value, str):
        ts.FromJsonString(value)
    else:
        ts.FromNanoseconds(int(value * 1e9))
    return ts


# --- input specs ------------------------------------------------------------------------------


def spec_from_proto(msg: common_pb2.InputSpec, arch: str, base: InputSpec | None) -> InputSpec:
    """The effective InputSpec of a RegisterModel request: the fields set in `msg`, the rest
    completed by `preprocess.complete_spec` (the one place defaults live, shared with the
    CLI). Raises InvalidArgument naming the first bad field."""
    from mllgraph.hub.preprocess import complete_spec  # torch: only where a spec is built

    if msg.resize_mode and msg.resize_mode not in RESIZE_FROM_PROTO:
        raise InvalidArgument(f"input_spec.resize_mode: unknown value {msg.resize_mode}")
    return complete_spec(
        arch,
        base=base,
        size=msg.size or None,
        channels=msg.channels or None,
        mean=[f32(v) for v in msg.mean] or None,
        std=[f32(v) for v in msg.std] or None,
        resize=RESIZE_FROM_PROTO.get(msg.resize_mode) or None,
        crop_pct=f32(msg.crop_pct) if msg.crop_pct else None,
        interpolation=msg.interpolation or None,
    )


def spec_to_proto(spec: dict[str, Any]) -> common_pb2.InputSpec:
    """An input spec as stored on a model record (`InputSpec.to_dict`) as the message."""
    return common_pb2.InputSpec(
        size=int(spec["size"]),
        resize_mode=RESIZE_TO_PROTO.get(spec["resize"], common_pb2.RESIZE_MODE_UNSPECIFIED),
        crop_pct=float(spec.get("crop_pct", 1.0)),
        mean=list(spec["mean"]),
        std=list(spec["std"]),
        channels=int(spec["channels"]),
        interpolation=spec.get("interpolation", ""),
    )


# --- plans ------------------------------------------------------------------------------------


def head_ref(head: dict[str, Any]) -> common_pb2.HeadRef:
    """A plan document's head (``model_id``, ``head_index``, ...) as a HeadRef; a missing or
    null field is the message's default."""
    return common_pb2.HeadRef(
        model_id=str(head.get("model_id") or ""),
        model_version=str(head.get("model_version") or ""),
        head_index=int(head.get("head_index") or 0),
        head_label=str(head.get("head_label") or ""),
        label_score=float(head.get("label_score") or 0.0),
        label_wnid=str(head.get("label_wnid") or ""),
    )


# What a plan document's solver is sent as in an inline plan (anything else: UNSPECIFIED).
_INLINE_SOLVER = {"exact": selection_pb2.SOLVER_EXACT, "heuristic": selection_pb2.SOLVER_HEURISTIC}


def inline_plan_to_proto(doc: dict[str, Any]) -> selection_pb2.Plan:
    """A plan document (select's JSON) as a proto Plan, e.g. to send it inline to Classify.

    ``combination_json`` carries only the document's combination part."""
    plan = selection_pb2.Plan(
        plan_id=str(doc.get("plan_id", "")),
        estimated_accuracy=float(doc.get("estimated_accuracy") or 0.0),
        model_ids=list(doc.get("models") or []),
        solver=_INLINE_SOLVER.get(str(doc.get("solver", "")), selection_pb2.SOLVER_UNSPECIFIED),
        params_fitted=bool(doc.get("params_fitted", False)),
        catalogue_version=str(doc.get("catalogue_version", "")),
        combination_json=json.dumps(doc.get("combination") or {}),
        budget=int(doc.get("budget") or 0),
    )
    for c in doc.get("classes") or []:
        concept = c.get("concept") or {}
        plan.classes.append(
            selection_pb2.PlannedClass(
                name=str(c.get("name", "")),
                concept=common_pb2.ConceptRef(
                    wnid=str(concept.get("wnid", "")), name=str(concept.get("name", ""))
                ),
                coverage=COVERAGE_TO_PROTO.get(str(c.get("coverage", "")), 0),
                heads=[head_ref(h) for h in c.get("heads") or []],
                estimated_accuracy=float(c.get("estimated_accuracy") or 0.0),
            )
        )
    return plan


def inline_plan_from_proto(plan: selection_pb2.Plan) -> dict[str, Any]:
    """An inline proto Plan as a plan document (checked by PlanClassifier).

    `combination_json` may be the whole plan document (what SelectHeads returns: pass the
    Plan unchanged) or only its combination part; see `plan.document.read_combination_json`.
    Class names are checked (`check_class_name`) and their number capped (MAX_CLASSES)."""
    from mllgraph.plan import document as plan_doc

    if len(plan.classes) > plan_doc.MAX_CLASSES:
        raise InvalidArgument(
            f"inline_plan has {len(plan.classes)} classes; "
            f"at most {plan_doc.MAX_CLASSES} are accepted"
        )
    combination = plan_doc.read_combination_json(plan.combination_json)
    classes = []
    for i, c in enumerate(plan.classes):
        name = plan_doc.check_class_name(c.name, f"inline_plan.classes[{i}].name")
        classes.append(
            {
                "name": name,
                "concept": {"wnid": c.concept.wnid, "name": c.concept.name},
                "coverage": COVERAGE_FROM_PROTO.get(c.coverage, ""),
                "heads": [
                    {
                        "model_id": h.model_id,
                        "model_version": h.model_version,
                        "head_index": h.head_index,
                        "head_label": h.head_label,
                        "label_score": h.label_score,
                        "label_wnid": h.label_wnid,
                    }
                    for h in c.heads
                ],
            }
        )
    return {
        "plan_id": plan.plan_id,
        "classes": classes,
        "models": list(plan.model_ids),
        "combination": combination,
    }
