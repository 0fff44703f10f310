"""What the Python client (mllgraph.client) returns: its result dataclasses, and how they are
read from the services' messages (``*_from_proto``). Import them from mllgraph.client.

Must not import services/ or mllgraph.client (the client imports this module).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mllgraph.v1 import inference_pb2, ingestion_pb2, selection_pb2
from mllgraph.wire import COVERAGE_FROM_PROTO, JOB_STATE_NAMES, UNCOVERED_WHY_FROM_PROTO

# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Concept:
    wnid: str
    name: str
    definition: str = ""


@dataclass(frozen=True)
class HeadUse:
    """A head of a model, as a plan or a prediction uses it."""

    model_id: str
    head_index: int
    head_label: str
    label_score: float = 0.0
    label_wnid: str = ""
    model_version: str = ""


@dataclass(frozen=True)
class Alternative:
    wnid: str
    name: str
    score: float


@dataclass(frozen=True)
class Grounding:
    score: float
    ambiguous: bool
    approximate: bool
    pinned: bool
    alternatives: list[Alternative]


@dataclass(frozen=True)
class PlannedClass:
    name: str
    concept: Concept
    grounding: Grounding
    coverage: str  # exact, descendants, ancestor, related, uncovered
    heads: list[HeadUse]
    estimated_accuracy: float
    # When uncovered: "no head" (none in the hub) or "not chosen" (the plan left them out).
    uncovered_why: str = ""


@dataclass(frozen=True)
class Plan:
    plan_id: str
    classes: list[PlannedClass]
    estimated_accuracy: float
    model_ids: list[str]
    solver: str
    params_fitted: bool
    catalogue_version: str
    budget: int
    created_at: datetime | None
    select_ms: float = 0.0  # wall time of the SelectHeads call, seen from the client
    cost_ms_per_image: float = 0.0  # the plan's models' cost per image on the serving device
    cost_estimated: bool = False  # some of it estimated (a model never measured)
    # The whole plan document as the service sent it (Plan.combination_json): pass-through.
    combination_json: str = field(default="", repr=False)

    @property
    def document(self) -> dict[str, Any]:
        """The plan document (classes with their grounding, heads, `timings_ms` of when it
        was made, ...): what `mllgraph select` prints. Parsed on each call."""
        import json

        return dict(json.loads(self.combination_json)) if self.combination_json else {}

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def uncovered(self) -> list[str]:
        return [c.name for c in self.classes if c.coverage == "uncovered"]


@dataclass(frozen=True)
class Candidate:
    head: HeadUse
    via: Concept
    estimated_accuracy: float
    score: float
    reason: str


@dataclass(frozen=True)
class ClassExplanation:
    name: str
    concept: Concept
    coverage: str
    chosen: list[Candidate]
    alternatives: list[Candidate]
    reasons: list[str]


@dataclass(frozen=True)
class FrontPlan:
    """A plan on the accuracy-cost front the selection considered."""

    model_ids: list[str]
    estimated_accuracy: float
    cost_ms_per_image: float
    chosen: bool


@dataclass(frozen=True)
class Explanation:
    plan_id: str
    classes: list[ClassExplanation]
    notes: list[str]
    cost_front: list[FrontPlan] = field(default_factory=list)


@dataclass(frozen=True)
class ClassScore:
    class_name: str
    probability: float
    class_index: int


@dataclass(frozen=True)
class Prediction:
    image_id: str
    class_name: str
    probability: float
    class_index: int
    top: list[ClassScore]
    probabilities: dict[str, float]
    heads: list[HeadUse]  # the heads that scored the predicted class
    used_fallback: bool
    # Plan models set aside for this image: it is outside their described input domain.
    out_of_domain: list[str] = field(default_factory=list)
    # "None of these" (asked for with allow_none): the image fits none of the classes;
    # class_name is then "none of these", class_index -1 and probability the none_score.
    none_of_these: bool = False
    none_score: float | None = None  # only when allow_none was asked for

    @property
    def models(self) -> list[str]:
        """The distinct experts whose heads decided, in order."""
        return list(dict.fromkeys(h.model_id for h in self.heads))


@dataclass(frozen=True)
class Timings:
    select_ms: float  # 0 when the plan was given
    classify_ms: float  # wall time of the Classify calls, seen from the client
    server_ms: float  # the servers' own total over the Classify calls
    models: dict[str, dict[str, float]]  # model id -> forward_ms, preprocess_ms, cached_images


@dataclass(frozen=True)
class Classification:
    """Predictions (in image order) with the plan that made them. Iterable over predictions."""

    predictions: list[Prediction]
    plan: Plan | None
    plan_id: str
    uncovered: list[str]
    timings: Timings
    # What scored the uncovered classes: "" (none uncovered), "conse:<model id>", "vlm:<name>"
    # or "constant" (ClassifyResponse.patch).
    patch: str = ""
    # The plan's "none of these" threshold, when allow_none was asked for (else None).
    none_threshold: float | None = None

    def __iter__(self) -> Iterator[Prediction]:
        return iter(self.predictions)

    def __len__(self) -> int:
        return len(self.predictions)

    def __getitem__(self, i: int) -> Prediction:
        return self.predictions[i]


@dataclass(frozen=True)
class HeadLabels:
    index: int
    label: str
    declared_wnid: str
    labels: list[tuple[Concept, float]]  # the strongest label edges: concept, score


@dataclass(frozen=True)
class Model:
    id: str
    name: str
    version: str
    arch: str
    num_classes: int
    labelled: bool
    source: str
    sha256: str
    created_at: datetime | None
    labelled_at: datetime | None
    metadata: dict[str, str]
    heads: list[HeadLabels] = field(default_factory=list)


@dataclass(frozen=True)
class ProbeReport:
    """What AddProbes attached where, what was refused (here or by the server) and why, and
    which models it marked stale."""

    attached: list[dict[str, Any]]  # {folder, wnid, concept, set_id, images, created}
    refused: list[tuple[str, str]]  # (path, reason)
    stale_models: list[str]


@dataclass(frozen=True)
class LabelJob:
    job_id: str
    model_id: str
    state: str  # queued, running, done, failed
    progress: float
    message: str
    heads_done: int
    heads_total: int


# --- proto -> dataclasses ----------------------------------------------------------------------

_SOLVER = {
    v.number: v.name.removeprefix("SOLVER_").lower() for v in selection_pb2.Solver.DESCRIPTOR.values
}
_SOURCE = {
    v.number: v.name.removeprefix("MODEL_SOURCE_").lower()
    for v in ingestion_pb2.ModelSource.DESCRIPTOR.values
}


def _time(msg: Any, name: str) -> datetime | None:
    return getattr(msg, name).ToDatetime(tzinfo=UTC) if msg.HasField(name) else None


def _concept(c: Any) -> Concept:
    return Concept(c.wnid, c.name, c.definition)


def _head(h: Any) -> HeadUse:
    return HeadUse(
        h.model_id, h.head_index, h.head_label, h.label_score, h.label_wnid, h.model_version
    )


def plan_from_proto(p: selection_pb2.Plan, select_ms: float = 0.0) -> Plan:
    classes = []
    for c in p.classes:
        g = c.grounding
        alternatives = [Alternative(a.wnid, a.name, a.score) for a in g.alternatives]
        classes.append(
            PlannedClass(
                name=c.name,
                concept=_concept(c.concept),
                grounding=Grounding(g.score, g.ambiguous, g.approximate, g.pinned, alternatives),
                coverage=COVERAGE_FROM_PROTO.get(c.coverage, "unspecified"),
                heads=[_head(h) for h in c.heads],
                estimated_accuracy=c.estimated_accuracy,
                uncovered_why=UNCOVERED_WHY_FROM_PROTO.get(c.uncovered_reason, ""),
            )
        )
    return Plan(
        plan_id=p.plan_id,
        classes=classes,
        estimated_accuracy=p.estimated_accuracy,
        model_ids=list(p.model_ids),
        solver=_SOLVER.get(p.solver, "unspecified"),
        params_fitted=p.params_fitted,
        catalogue_version=p.catalogue_version,
        budget=p.budget,
        created_at=_time(p, "created_at"),
        select_ms=select_ms,
        combination_json=p.combination_json,
        cost_ms_per_image=p.cost_ms_per_image,
        cost_estimated=p.cost_estimated,
    )


def _candidate(c: Any) -> Candidate:
    return Candidate(
        _head(c.head), _concept(c.via_concept), c.estimated_accuracy, c.score, c.reason
    )


def explanation_from_proto(e: selection_pb2.Explanation) -> Explanation:
    return Explanation(
        plan_id=e.plan_id,
        classes=[
            ClassExplanation(
                name=c.name,
                concept=_concept(c.concept),
                coverage=COVERAGE_FROM_PROTO.get(c.coverage, "unspecified"),
                chosen=[_candidate(x) for x in c.chosen],
                alternatives=[_candidate(x) for x in c.alternatives],
                reasons=list(c.reasons),
            )
            for c in e.classes
        ],
        notes=list(e.notes),
        cost_front=[
            FrontPlan(list(f.model_ids), f.estimated_accuracy, f.cost_ms_per_image, f.chosen)
            for f in e.cost_front
        ],
    )


def model_from_proto(m: ingestion_pb2.Model) -> Model:
    return Model(
        id=m.id,
        name=m.name,
        version=m.version,
        arch=m.arch,
        num_classes=m.num_classes,
        labelled=m.labelled,
        source=_SOURCE.get(m.source, "unspecified"),
        sha256=m.sha256,
        created_at=_time(m, "created_at"),
        labelled_at=_time(m, "labelled_at"),
        metadata=dict(m.metadata),
        heads=[
            HeadLabels(
                h.index,
                h.label,
                h.declared_wnid,
                [(_concept(t.concept), t.score) for t in h.top_labels],
            )
            for h in m.heads
        ],
    )


def job_from_proto(j: ingestion_pb2.LabelJob) -> LabelJob:
    return LabelJob(
        j.job_id,
        j.model_id,
        JOB_STATE_NAMES.get(j.state, "unspecified"),
        j.progress,
        j.message,
        j.heads_done,
        j.heads_total,
    )


def prediction_from_proto(
    p: inference_pb2.Prediction, class_names: Sequence[str], allow_none: bool = False
) -> Prediction:
    probs = list(p.class_probabilities)
    names = (
        list(class_names) if len(class_names) == len(probs) else [str(i) for i in range(len(probs))]
    )
    return Prediction(
        image_id=p.image_id,
        class_name=p.class_name,
        probability=p.probability,
        class_index=p.class_index,
        top=[ClassScore(t.class_name, t.probability, t.class_index) for t in p.top],
        probabilities=dict(zip(names, probs, strict=True)),
        heads=[_head(h) for h in p.contributing_heads],
        used_fallback=p.used_fallback,
        out_of_domain=list(p.out_of_domain_models),
        none_of_these=p.none_of_these,
        none_score=p.none_score if allow_none else None,
    )
