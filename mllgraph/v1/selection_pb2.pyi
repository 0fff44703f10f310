import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from mllgraph.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Solver(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOLVER_UNSPECIFIED: _ClassVar[Solver]
    SOLVER_AUTO: _ClassVar[Solver]
    SOLVER_EXACT: _ClassVar[Solver]
    SOLVER_HEURISTIC: _ClassVar[Solver]

class Coverage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COVERAGE_UNSPECIFIED: _ClassVar[Coverage]
    COVERAGE_EXACT: _ClassVar[Coverage]
    COVERAGE_DESCENDANTS: _ClassVar[Coverage]
    COVERAGE_ANCESTOR: _ClassVar[Coverage]
    COVERAGE_UNCOVERED: _ClassVar[Coverage]
    COVERAGE_RELATED: _ClassVar[Coverage]
    COVERAGE_DECLARED: _ClassVar[Coverage]

class UncoveredReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNCOVERED_REASON_UNSPECIFIED: _ClassVar[UncoveredReason]
    UNCOVERED_REASON_NO_HEAD: _ClassVar[UncoveredReason]
    UNCOVERED_REASON_NOT_CHOSEN: _ClassVar[UncoveredReason]
SOLVER_UNSPECIFIED: Solver
SOLVER_AUTO: Solver
SOLVER_EXACT: Solver
SOLVER_HEURISTIC: Solver
COVERAGE_UNSPECIFIED: Coverage
COVERAGE_EXACT: Coverage
COVERAGE_DESCENDANTS: Coverage
COVERAGE_ANCESTOR: Coverage
COVERAGE_UNCOVERED: Coverage
COVERAGE_RELATED: Coverage
COVERAGE_DECLARED: Coverage
UNCOVERED_REASON_UNSPECIFIED: UncoveredReason
UNCOVERED_REASON_NO_HEAD: UncoveredReason
UNCOVERED_REASON_NOT_CHOSEN: UncoveredReason

class TaskClass(_message.Message):
    __slots__ = ("name", "pinned_wnid")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PINNED_WNID_FIELD_NUMBER: _ClassVar[int]
    name: str
    pinned_wnid: str
    def __init__(self, name: _Optional[str] = ..., pinned_wnid: _Optional[str] = ...) -> None: ...

class SelectOptions(_message.Message):
    __slots__ = ("solver", "allow_ancestor", "fit_params", "max_heads_per_class", "min_label_score", "time_limit_seconds", "models", "max_cost_ms", "accuracy_slack")
    SOLVER_FIELD_NUMBER: _ClassVar[int]
    ALLOW_ANCESTOR_FIELD_NUMBER: _ClassVar[int]
    FIT_PARAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_HEADS_PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    MIN_LABEL_SCORE_FIELD_NUMBER: _ClassVar[int]
    TIME_LIMIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_MS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_SLACK_FIELD_NUMBER: _ClassVar[int]
    solver: Solver
    allow_ancestor: bool
    fit_params: bool
    max_heads_per_class: int
    min_label_score: float
    time_limit_seconds: float
    models: _containers.RepeatedScalarFieldContainer[str]
    max_cost_ms: float
    accuracy_slack: float
    def __init__(self, solver: _Optional[_Union[Solver, str]] = ..., allow_ancestor: _Optional[bool] = ..., fit_params: _Optional[bool] = ..., max_heads_per_class: _Optional[int] = ..., min_label_score: _Optional[float] = ..., time_limit_seconds: _Optional[float] = ..., models: _Optional[_Iterable[str]] = ..., max_cost_ms: _Optional[float] = ..., accuracy_slack: _Optional[float] = ...) -> None: ...

class SelectHeadsRequest(_message.Message):
    __slots__ = ("classes", "budget", "options")
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    classes: _containers.RepeatedCompositeFieldContainer[TaskClass]
    budget: int
    options: SelectOptions
    def __init__(self, classes: _Optional[_Iterable[_Union[TaskClass, _Mapping]]] = ..., budget: _Optional[int] = ..., options: _Optional[_Union[SelectOptions, _Mapping]] = ...) -> None: ...

class GroundingAlternative(_message.Message):
    __slots__ = ("wnid", "name", "score")
    WNID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    wnid: str
    name: str
    score: float
    def __init__(self, wnid: _Optional[str] = ..., name: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Grounding(_message.Message):
    __slots__ = ("ambiguous", "approximate", "alternatives", "pinned", "score")
    AMBIGUOUS_FIELD_NUMBER: _ClassVar[int]
    APPROXIMATE_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ambiguous: bool
    approximate: bool
    alternatives: _containers.RepeatedCompositeFieldContainer[GroundingAlternative]
    pinned: bool
    score: float
    def __init__(self, ambiguous: _Optional[bool] = ..., approximate: _Optional[bool] = ..., alternatives: _Optional[_Iterable[_Union[GroundingAlternative, _Mapping]]] = ..., pinned: _Optional[bool] = ..., score: _Optional[float] = ...) -> None: ...

class PlannedClass(_message.Message):
    __slots__ = ("name", "concept", "grounding", "coverage", "heads", "estimated_accuracy", "uncovered_reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    GROUNDING_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    UNCOVERED_REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    concept: _common_pb2.ConceptRef
    grounding: Grounding
    coverage: Coverage
    heads: _containers.RepeatedCompositeFieldContainer[_common_pb2.HeadRef]
    estimated_accuracy: float
    uncovered_reason: UncoveredReason
    def __init__(self, name: _Optional[str] = ..., concept: _Optional[_Union[_common_pb2.ConceptRef, _Mapping]] = ..., grounding: _Optional[_Union[Grounding, _Mapping]] = ..., coverage: _Optional[_Union[Coverage, str]] = ..., heads: _Optional[_Iterable[_Union[_common_pb2.HeadRef, _Mapping]]] = ..., estimated_accuracy: _Optional[float] = ..., uncovered_reason: _Optional[_Union[UncoveredReason, str]] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("plan_id", "classes", "estimated_accuracy", "model_ids", "solver", "params_fitted", "catalogue_version", "created_at", "combination_json", "budget", "options", "measured_fraction", "cost_ms_per_image", "cost_estimated")
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    MODEL_IDS_FIELD_NUMBER: _ClassVar[int]
    SOLVER_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FITTED_FIELD_NUMBER: _ClassVar[int]
    CATALOGUE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    COMBINATION_JSON_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MEASURED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    COST_MS_PER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    COST_ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    classes: _containers.RepeatedCompositeFieldContainer[PlannedClass]
    estimated_accuracy: float
    model_ids: _containers.RepeatedScalarFieldContainer[str]
    solver: Solver
    params_fitted: bool
    catalogue_version: str
    created_at: _timestamp_pb2.Timestamp
    combination_json: str
    budget: int
    options: SelectOptions
    measured_fraction: float
    cost_ms_per_image: float
    cost_estimated: bool
    def __init__(self, plan_id: _Optional[str] = ..., classes: _Optional[_Iterable[_Union[PlannedClass, _Mapping]]] = ..., estimated_accuracy: _Optional[float] = ..., model_ids: _Optional[_Iterable[str]] = ..., solver: _Optional[_Union[Solver, str]] = ..., params_fitted: _Optional[bool] = ..., catalogue_version: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., combination_json: _Optional[str] = ..., budget: _Optional[int] = ..., options: _Optional[_Union[SelectOptions, _Mapping]] = ..., measured_fraction: _Optional[float] = ..., cost_ms_per_image: _Optional[float] = ..., cost_estimated: _Optional[bool] = ...) -> None: ...

class GetPlanRequest(_message.Message):
    __slots__ = ("plan_id",)
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    def __init__(self, plan_id: _Optional[str] = ...) -> None: ...

class ExplainSelectionRequest(_message.Message):
    __slots__ = ("plan_id",)
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    def __init__(self, plan_id: _Optional[str] = ...) -> None: ...

class HeadCandidate(_message.Message):
    __slots__ = ("head", "via_concept", "estimated_accuracy", "score", "reason")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    VIA_CONCEPT_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    head: _common_pb2.HeadRef
    via_concept: _common_pb2.ConceptRef
    estimated_accuracy: float
    score: float
    reason: str
    def __init__(self, head: _Optional[_Union[_common_pb2.HeadRef, _Mapping]] = ..., via_concept: _Optional[_Union[_common_pb2.ConceptRef, _Mapping]] = ..., estimated_accuracy: _Optional[float] = ..., score: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class ClassExplanation(_message.Message):
    __slots__ = ("name", "concept", "coverage", "chosen", "alternatives", "reasons")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    concept: _common_pb2.ConceptRef
    coverage: Coverage
    chosen: _containers.RepeatedCompositeFieldContainer[HeadCandidate]
    alternatives: _containers.RepeatedCompositeFieldContainer[HeadCandidate]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., concept: _Optional[_Union[_common_pb2.ConceptRef, _Mapping]] = ..., coverage: _Optional[_Union[Coverage, str]] = ..., chosen: _Optional[_Iterable[_Union[HeadCandidate, _Mapping]]] = ..., alternatives: _Optional[_Iterable[_Union[HeadCandidate, _Mapping]]] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class FrontPlan(_message.Message):
    __slots__ = ("model_ids", "estimated_accuracy", "cost_ms_per_image", "chosen")
    MODEL_IDS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    COST_MS_PER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    model_ids: _containers.RepeatedScalarFieldContainer[str]
    estimated_accuracy: float
    cost_ms_per_image: float
    chosen: bool
    def __init__(self, model_ids: _Optional[_Iterable[str]] = ..., estimated_accuracy: _Optional[float] = ..., cost_ms_per_image: _Optional[float] = ..., chosen: _Optional[bool] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("plan_id", "classes", "notes", "cost_front")
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    COST_FRONT_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    classes: _containers.RepeatedCompositeFieldContainer[ClassExplanation]
    notes: _containers.RepeatedScalarFieldContainer[str]
    cost_front: _containers.RepeatedCompositeFieldContainer[FrontPlan]
    def __init__(self, plan_id: _Optional[str] = ..., classes: _Optional[_Iterable[_Union[ClassExplanation, _Mapping]]] = ..., notes: _Optional[_Iterable[str]] = ..., cost_front: _Optional[_Iterable[_Union[FrontPlan, _Mapping]]] = ...) -> None: ...
