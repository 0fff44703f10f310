from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResizeMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESIZE_MODE_UNSPECIFIED: _ClassVar[ResizeMode]
    RESIZE_MODE_RESIZE: _ClassVar[ResizeMode]
    RESIZE_MODE_RESIZE_CROP: _ClassVar[ResizeMode]
RESIZE_MODE_UNSPECIFIED: ResizeMode
RESIZE_MODE_RESIZE: ResizeMode
RESIZE_MODE_RESIZE_CROP: ResizeMode

class InputSpec(_message.Message):
    __slots__ = ("size", "resize_mode", "crop_pct", "mean", "std", "channels", "interpolation")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    RESIZE_MODE_FIELD_NUMBER: _ClassVar[int]
    CROP_PCT_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    INTERPOLATION_FIELD_NUMBER: _ClassVar[int]
    size: int
    resize_mode: ResizeMode
    crop_pct: float
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    channels: int
    interpolation: str
    def __init__(self, size: _Optional[int] = ..., resize_mode: _Optional[_Union[ResizeMode, str]] = ..., crop_pct: _Optional[float] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., channels: _Optional[int] = ..., interpolation: _Optional[str] = ...) -> None: ...

class HeadRef(_message.Message):
    __slots__ = ("model_id", "model_version", "head_index", "head_label", "label_score", "label_wnid")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    HEAD_INDEX_FIELD_NUMBER: _ClassVar[int]
    HEAD_LABEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_SCORE_FIELD_NUMBER: _ClassVar[int]
    LABEL_WNID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_version: str
    head_index: int
    head_label: str
    label_score: float
    label_wnid: str
    def __init__(self, model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., head_index: _Optional[int] = ..., head_label: _Optional[str] = ..., label_score: _Optional[float] = ..., label_wnid: _Optional[str] = ...) -> None: ...

class ConceptRef(_message.Message):
    __slots__ = ("wnid", "name", "definition")
    WNID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    wnid: str
    name: str
    definition: str
    def __init__(self, wnid: _Optional[str] = ..., name: _Optional[str] = ..., definition: _Optional[str] = ...) -> None: ...
