"""The broad expert's head-text vectors are kept on disk, keyed by the texts themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mllgraph.select.patch import stored_text_vectors


def test_head_text_vectors_are_encoded_once_and_keyed_by_their_texts(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.arange(len(texts) * 3, dtype=np.float32).reshape(len(texts), 3)

    texts = ["a photo of a tench", "a photo of a goldfish"]
    first = stored_text_vectors(tmp_path, texts, encode)
    again = stored_text_vectors(tmp_path, texts, encode)  # as a new process would: from disk
    assert calls == [texts] and np.array_equal(first, again)
    other = stored_text_vectors(tmp_path, [*texts, "a photo of a shark"], encode)
    assert len(calls) == 2 and other.shape == (3, 3)


def test_an_unreadable_or_unwritable_cache_only_costs_an_encoding(tmp_path: Path) -> None:
    def encode(texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), 2))

    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert stored_text_vectors(blocked, ["x"], encode).shape == (1, 2)  # cannot write: fine
    folder = tmp_path / "cache"
    stored_text_vectors(folder, ["y"], encode)
    (path,) = folder.glob("*.npy")
    path.write_bytes(b"garbage")
    assert stored_text_vectors(folder, ["y"], encode).shape == (1, 2)
    assert stored_text_vectors(folder, ["y"], lambda _t: None) is not None  # rewritten whole
