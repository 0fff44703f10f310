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

class ModelSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_SOURCE_UNSPECIFIED: _ClassVar[ModelSource]
    MODEL_SOURCE_WEIGHTS_PATH: _ClassVar[ModelSource]
    MODEL_SOURCE_WEIGHTS_BYTES: _ClassVar[ModelSource]
    MODEL_SOURCE_BUILTIN: _ClassVar[ModelSource]
    MODEL_SOURCE_WEIGHTS_UPLOAD: _ClassVar[ModelSource]

class LabelJobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LABEL_JOB_STATE_UNSPECIFIED: _ClassVar[LabelJobState]
    LABEL_JOB_STATE_QUEUED: _ClassVar[LabelJobState]
    LABEL_JOB_STATE_RUNNING: _ClassVar[LabelJobState]
    LABEL_JOB_STATE_DONE: _ClassVar[LabelJobState]
    LABEL_JOB_STATE_FAILED: _ClassVar[LabelJobState]
MODEL_SOURCE_UNSPECIFIED: ModelSource
MODEL_SOURCE_WEIGHTS_PATH: ModelSource
MODEL_SOURCE_WEIGHTS_BYTES: ModelSource
MODEL_SOURCE_BUILTIN: ModelSource
MODEL_SOURCE_WEIGHTS_UPLOAD: ModelSource
LABEL_JOB_STATE_UNSPECIFIED: LabelJobState
LABEL_JOB_STATE_QUEUED: LabelJobState
LABEL_JOB_STATE_RUNNING: LabelJobState
LABEL_JOB_STATE_DONE: LabelJobState
LABEL_JOB_STATE_FAILED: LabelJobState

class RegisterModelRequest(_message.Message):
    __slots__ = ("name", "version", "arch", "weights_path", "weights_bytes", "builtin", "weights_sha256", "class_names", "wnids", "input_spec", "metadata", "top1_accuracy")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_PATH_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    WNIDS_FIELD_NUMBER: _ClassVar[int]
    INPUT_SPEC_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TOP1_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    arch: str
    weights_path: str
    weights_bytes: bytes
    builtin: str
    weights_sha256: str
    class_names: _containers.RepeatedScalarFieldContainer[str]
    wnids: _containers.RepeatedScalarFieldContainer[str]
    input_spec: _common_pb2.InputSpec
    metadata: _containers.ScalarMap[str, str]
    top1_accuracy: float
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., arch: _Optional[str] = ..., weights_path: _Optional[str] = ..., weights_bytes: _Optional[bytes] = ..., builtin: _Optional[str] = ..., weights_sha256: _Optional[str] = ..., class_names: _Optional[_Iterable[str]] = ..., wnids: _Optional[_Iterable[str]] = ..., input_spec: _Optional[_Union[_common_pb2.InputSpec, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., top1_accuracy: _Optional[float] = ...) -> None: ...

class HeadConcept(_message.Message):
    __slots__ = ("concept", "score")
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    concept: _common_pb2.ConceptRef
    score: float
    def __init__(self, concept: _Optional[_Union[_common_pb2.ConceptRef, _Mapping]] = ..., score: _Optional[float] = ...) -> None: ...

class Head(_message.Message):
    __slots__ = ("index", "label", "declared_wnid", "top_labels")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DECLARED_WNID_FIELD_NUMBER: _ClassVar[int]
    TOP_LABELS_FIELD_NUMBER: _ClassVar[int]
    index: int
    label: str
    declared_wnid: str
    top_labels: _containers.RepeatedCompositeFieldContainer[HeadConcept]
    def __init__(self, index: _Optional[int] = ..., label: _Optional[str] = ..., declared_wnid: _Optional[str] = ..., top_labels: _Optional[_Iterable[_Union[HeadConcept, _Mapping]]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "name", "version", "arch", "source", "source_ref", "sha256", "num_classes", "input_spec", "created_at", "labelled", "heads", "metadata", "labelled_at", "top1_accuracy")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_REF_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    INPUT_SPEC_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LABELLED_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    LABELLED_AT_FIELD_NUMBER: _ClassVar[int]
    TOP1_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    version: str
    arch: str
    source: ModelSource
    source_ref: str
    sha256: str
    num_classes: int
    input_spec: _common_pb2.InputSpec
    created_at: _timestamp_pb2.Timestamp
    labelled: bool
    heads: _containers.RepeatedCompositeFieldContainer[Head]
    metadata: _containers.ScalarMap[str, str]
    labelled_at: _timestamp_pb2.Timestamp
    top1_accuracy: float
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., arch: _Optional[str] = ..., source: _Optional[_Union[ModelSource, str]] = ..., source_ref: _Optional[str] = ..., sha256: _Optional[str] = ..., num_classes: _Optional[int] = ..., input_spec: _Optional[_Union[_common_pb2.InputSpec, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., labelled: _Optional[bool] = ..., heads: _Optional[_Iterable[_Union[Head, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., labelled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., top1_accuracy: _Optional[float] = ...) -> None: ...

class LabelOptions(_message.Message):
    __slots__ = ("relabel", "probe_set", "samples_per_concept", "top_k", "min_score", "batch_size")
    RELABEL_FIELD_NUMBER: _ClassVar[int]
    PROBE_SET_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_CONCEPT_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    relabel: bool
    probe_set: str
    samples_per_concept: int
    top_k: int
    min_score: float
    batch_size: int
    def __init__(self, relabel: _Optional[bool] = ..., probe_set: _Optional[str] = ..., samples_per_concept: _Optional[int] = ..., top_k: _Optional[int] = ..., min_score: _Optional[float] = ..., batch_size: _Optional[int] = ...) -> None: ...

class LabelModelRequest(_message.Message):
    __slots__ = ("model_id", "options")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    options: LabelOptions
    def __init__(self, model_id: _Optional[str] = ..., options: _Optional[_Union[LabelOptions, _Mapping]] = ...) -> None: ...

class LabelJob(_message.Message):
    __slots__ = ("job_id", "model_id", "state", "progress", "message", "started_at", "finished_at", "heads_done", "heads_total")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    HEADS_DONE_FIELD_NUMBER: _ClassVar[int]
    HEADS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    model_id: str
    state: LabelJobState
    progress: float
    message: str
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    heads_done: int
    heads_total: int
    def __init__(self, job_id: _Optional[str] = ..., model_id: _Optional[str] = ..., state: _Optional[_Union[LabelJobState, str]] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., heads_done: _Optional[int] = ..., heads_total: _Optional[int] = ...) -> None: ...

class GetLabelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model_id", "include_heads")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HEADS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    include_heads: bool
    def __init__(self, model_id: _Optional[str] = ..., include_heads: _Optional[bool] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("name", "arch", "covers_concept", "min_label_score", "include_heads", "page_size", "page_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    COVERS_CONCEPT_FIELD_NUMBER: _ClassVar[int]
    MIN_LABEL_SCORE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HEADS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    arch: str
    covers_concept: str
    min_label_score: float
    include_heads: bool
    page_size: int
    page_token: str
    def __init__(self, name: _Optional[str] = ..., arch: _Optional[str] = ..., covers_concept: _Optional[str] = ..., min_label_score: _Optional[float] = ..., include_heads: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WeightsChunk(_message.Message):
    __slots__ = ("data", "total_bytes", "sha256")
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    total_bytes: int
    sha256: str
    def __init__(self, data: _Optional[bytes] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class WeightsRef(_message.Message):
    __slots__ = ("sha256", "size_bytes")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class ProbeImage(_message.Message):
    __slots__ = ("concept", "name", "encoded", "source")
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    concept: str
    name: str
    encoded: bytes
    source: str
    def __init__(self, concept: _Optional[str] = ..., name: _Optional[str] = ..., encoded: _Optional[bytes] = ..., source: _Optional[str] = ...) -> None: ...

class AttachedProbes(_message.Message):
    __slots__ = ("folder", "concept", "set_id", "images", "created")
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    folder: str
    concept: _common_pb2.ConceptRef
    set_id: str
    images: int
    created: bool
    def __init__(self, folder: _Optional[str] = ..., concept: _Optional[_Union[_common_pb2.ConceptRef, _Mapping]] = ..., set_id: _Optional[str] = ..., images: _Optional[int] = ..., created: _Optional[bool] = ...) -> None: ...

class RefusedProbe(_message.Message):
    __slots__ = ("path", "reason")
    PATH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    path: str
    reason: str
    def __init__(self, path: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AddProbesReport(_message.Message):
    __slots__ = ("attached", "refused", "stale_models")
    ATTACHED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    STALE_MODELS_FIELD_NUMBER: _ClassVar[int]
    attached: _containers.RepeatedCompositeFieldContainer[AttachedProbes]
    refused: _containers.RepeatedCompositeFieldContainer[RefusedProbe]
    stale_models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, attached: _Optional[_Iterable[_Union[AttachedProbes, _Mapping]]] = ..., refused: _Optional[_Iterable[_Union[RefusedProbe, _Mapping]]] = ..., stale_models: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("model_id", "allow_missing")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    allow_missing: bool
    def __init__(self, model_id: _Optional[str] = ..., allow_missing: _Optional[bool] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ("model_id", "deleted_heads", "deleted_label_edges", "weights_removed")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DELETED_HEADS_FIELD_NUMBER: _ClassVar[int]
    DELETED_LABEL_EDGES_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    deleted_heads: int
    deleted_label_edges: int
    weights_removed: bool
    def __init__(self, model_id: _Optional[str] = ..., deleted_heads: _Optional[int] = ..., deleted_label_edges: _Optional[int] = ..., weights_removed: _Optional[bool] = ...) -> None: ...
