"""`ground.minilm.MiniLM` computes what sentence-transformers computes for all-MiniLM-L6-v2."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mllgraph.ground import embed

TEXTS = [
    "sandal",
    "ankle boot",
    "a photo of a tabby cat",
    "coffee mug, the container from which one drinks",
    "Ünïcödé café résumé",
    "x " * 300,  # longer than max_seq_length: truncated the same way
    "",
]


def test_minilm_matches_sentence_transformers() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    st = pytest.importorskip("sentence_transformers")
    model_dir = embed.bundled_model_dir()
    reference = st.SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    expected = reference.encode(TEXTS, batch_size=3, normalize_embeddings=True)
    got = embed.TextEmbedder(model_dir=model_dir).encode(TEXTS)
    assert got.shape == (len(TEXTS), embed.EMBEDDING_DIM) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_minilm_batches_do_not_change_a_text() -> None:
    from mllgraph.ground.minilm import MiniLM

    model = MiniLM(embed.bundled_model_dir())
    alone = model.encode(["umbrella"])
    mixed = model.encode(["umbrella", "a much longer text that pads the first one"], 2)
    np.testing.assert_allclose(alone[0], mixed[0], atol=1e-6)


def test_minilm_names_a_missing_model(tmp_path) -> None:
    from mllgraph.ground.minilm import MiniLM

    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        MiniLM(tmp_path)
