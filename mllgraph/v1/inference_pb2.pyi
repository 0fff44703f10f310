from mllgraph.v1 import common_pb2 as _common_pb2
from mllgraph.v1 import selection_pb2 as _selection_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RawArray(_message.Message):
    __slots__ = ("data", "shape", "dtype")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    def __init__(self, data: _Optional[bytes] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("id", "encoded", "raw")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    id: str
    encoded: bytes
    raw: RawArray
    def __init__(self, id: _Optional[str] = ..., encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawArray, _Mapping]] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("plan_id", "inline_plan", "images", "top_k", "allow_none")
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    INLINE_PLAN_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    ALLOW_NONE_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    inline_plan: _selection_pb2.Plan
    images: _containers.RepeatedCompositeFieldContainer[Image]
    top_k: int
    allow_none: bool
    def __init__(self, plan_id: _Optional[str] = ..., inline_plan: _Optional[_Union[_selection_pb2.Plan, _Mapping]] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., top_k: _Optional[int] = ..., allow_none: _Optional[bool] = ...) -> None: ...

class ClassScore(_message.Message):
    __slots__ = ("class_index", "class_name", "probability")
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    class_index: int
    class_name: str
    probability: float
    def __init__(self, class_index: _Optional[int] = ..., class_name: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("image_id", "class_index", "class_name", "probability", "class_probabilities", "contributing_heads", "used_fallback", "top", "out_of_domain_models", "none_of_these", "none_score")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    CLASS_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTING_HEADS_FIELD_NUMBER: _ClassVar[int]
    USED_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_DOMAIN_MODELS_FIELD_NUMBER: _ClassVar[int]
    NONE_OF_THESE_FIELD_NUMBER: _ClassVar[int]
    NONE_SCORE_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    class_index: int
    class_name: str
    probability: float
    class_probabilities: _containers.RepeatedScalarFieldContainer[float]
    contributing_heads: _containers.RepeatedCompositeFieldContainer[_common_pb2.HeadRef]
    used_fallback: bool
    top: _containers.RepeatedCompositeFieldContainer[ClassScore]
    out_of_domain_models: _containers.RepeatedScalarFieldContainer[str]
    none_of_these: bool
    none_score: float
    def __init__(self, image_id: _Optional[str] = ..., class_index: _Optional[int] = ..., class_name: _Optional[str] = ..., probability: _Optional[float] = ..., class_probabilities: _Optional[_Iterable[float]] = ..., contributing_heads: _Optional[_Iterable[_Union[_common_pb2.HeadRef, _Mapping]]] = ..., used_fallback: _Optional[bool] = ..., top: _Optional[_Iterable[_Union[ClassScore, _Mapping]]] = ..., out_of_domain_models: _Optional[_Iterable[str]] = ..., none_of_these: _Optional[bool] = ..., none_score: _Optional[float] = ...) -> None: ...

class ModelTiming(_message.Message):
    __slots__ = ("model_id", "forward_ms", "preprocess_ms", "cached_images")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    FORWARD_MS_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    CACHED_IMAGES_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    forward_ms: float
    preprocess_ms: float
    cached_images: int
    def __init__(self, model_id: _Optional[str] = ..., forward_ms: _Optional[float] = ..., preprocess_ms: _Optional[float] = ..., cached_images: _Optional[int] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("predictions", "uncovered_classes", "model_timings", "plan_id", "total_ms", "patch", "none_threshold")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    UNCOVERED_CLASSES_FIELD_NUMBER: _ClassVar[int]
    MODEL_TIMINGS_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    PATCH_FIELD_NUMBER: _ClassVar[int]
    NONE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    uncovered_classes: _containers.RepeatedScalarFieldContainer[str]
    model_timings: _containers.RepeatedCompositeFieldContainer[ModelTiming]
    plan_id: str
    total_ms: float
    patch: str
    none_threshold: float
    def __init__(self, predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., uncovered_classes: _Optional[_Iterable[str]] = ..., model_timings: _Optional[_Iterable[_Union[ModelTiming, _Mapping]]] = ..., plan_id: _Optional[str] = ..., total_ms: _Optional[float] = ..., patch: _Optional[str] = ..., none_threshold: _Optional[float] = ...) -> None: ...
