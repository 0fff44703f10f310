"""Evidence for uncovered classes (no head in the plan), given to ``rule.combine`` as
``extra_evidence``.

- **VLM patch** (:class:`VlmPatch`, an open_clip model): zero-shot over ALL the task's class
  names with a prompt ensemble (:data:`DEFAULT_PROMPTS`, text embeddings averaged and
  renormalised), softmax over the K classes; uncovered class c gets
  ``evidence_c = λ · p_vlm(c | x)`` with ``λ = VlmPatch.weight`` (default
  :data:`VLM_WEIGHT` = 1.0). With the plan's default parameters a covered class scores
  ``q_c · s_c`` (label quality × head evidence, both in [0, 1]) and an uncovered one
  ``λ · p_vlm(c)``: the VLM wins an image only when it believes the uncovered class more
  than the experts believe any covered one. Softmax over all K (not only the uncovered
  classes) means an image the VLM sees as a covered class gives the uncovered ones little.
- **Offline fallback** (no VLM configured; `mllgraph.combine.rule.fallback_evidence`): every
  uncovered class gets the constant evidence ``FALLBACK_EVIDENCE / U`` (U = number of
  uncovered classes; 0.05 in total), which selection also fits and estimates with. Why
  a constant and not the nearest covered SDAG concept: it needs neither Neo4j nor another
  model (inference must work from an inline plan alone), and a sibling-derived score would
  always lose to the sibling it copies. The constant keeps uncovered classes reachable and
  their probabilities honest (instead of ``UNCOVERED_SCORE``'s exp(-1000)), yet they win
  an image only when no covered class scores above it, i.e. when the experts have no real
  evidence; several uncovered classes tie and the first wins.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mllgraph.errors import (
    FailedPrecondition,
    InvalidArgument,
)
from mllgraph.hub.preprocess import InputSpec, preprocess

VLM_WEIGHT = 1.0  # λ: VLM evidence for an uncovered class = λ · p_vlm(c | x)
DEFAULT_PROMPTS: tuple[str, ...] = (
    "a photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of the {}.",
    "a cropped photo of a {}.",
    "a low resolution photo of a {}.",
    "a black and white photo of a {}.",
)


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
