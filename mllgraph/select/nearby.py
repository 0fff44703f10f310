"""Text-close neighbours for the classes that nothing else covers (pure: no I/O).

A class whose concept no head covers, exactly, below or above it, may still have a close
sibling or cousin that the hub has heads for: "handbag" (bag.n.04) beside the Fashion experts'
"Bag" (bag.n.01). The candidates query's `related` kind refuses such a neighbour whenever the
ancestor they share also lies above another task class (container.n.01 is above "coffee mug"
too), because heads on a concept that broad would fire on that class. Here the text encoder
decides instead: the neighbour's heads become a discounted `related` candidate only when its
name is close to the class's name (cosine of "a photo of a {name}" at least MIN_SIMILARITY)
and closer to this class than to any other class of the task.

MIN_SIMILARITY was set on generic pairs, not on any suite: it keeps handbag~bag (0.82),
handbag~purse (0.79), coffee mug~cup (0.83), backpack~bag (0.78) and refuses cat~dog (0.64),
violin~cello (0.72), dress~skirt (0.74), sandal~shoe (0.42).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

TEMPLATE = "a photo of a {}"
MIN_SIMILARITY = 0.75
LEMMAS_PER_CONCEPT = 3  # a neighbour's nearness is its best of its first few lemmas

# The nearby query's kinds, renamed to the candidates' kinds (coverage related / declared).
KIND_OF_NEARBY = {"related": "related", "declared_related": "declared_related"}


def _texts(lemmas: Sequence[str] | None) -> list[str]:
    return [
        TEMPLATE.format(lemma.replace("_", " ")) for lemma in (lemmas or [])[:LEMMAS_PER_CONCEPT]
    ]


def keep_text_close(
    rows: Sequence[dict[str, Any]],
    class_names: Sequence[str],
    encode: Callable[[list[str]], np.ndarray | None],
    *,
    discount: float,
    min_similarity: float = MIN_SIMILARITY,
) -> list[dict[str, Any]]:
    """The rows of `select/nearby_candidates` whose neighbour passes the text test, as
    candidate rows: score times `discount`, `text_similarity` added. `encode` maps texts to
    L2-normalised rows (a dot product is a cosine), or None when there is no text encoder:
    then nothing passes (no text test, no guess)."""
    if not rows:
        return []
    names = [TEMPLATE.format(n) for n in class_names]
    lemma_texts = sorted({t for r in rows for t in _texts(r.get("via_lemmas"))})
    if not lemma_texts:
        return []
    vecs = encode(names + lemma_texts)
    if vecs is None:
        return []
    sim = vecs[len(names) :] @ vecs[: len(names)].T  # (lemma texts, classes)
    row_of = {t: i for i, t in enumerate(lemma_texts)}
    kept = []
    for r in rows:
        texts = _texts(r.get("via_lemmas"))
        if not texts:
            continue
        s = sim[[row_of[t] for t in texts]].max(axis=0)  # best lemma, per class
        mine = float(s[r["class_index"]])
        others = np.delete(s, r["class_index"])
        if mine >= min_similarity and (others.size == 0 or mine > float(others.max())):
            kept.append(
                {
                    **r,
                    "kind": KIND_OF_NEARBY[r["kind"]],
                    "score": float(r["score"]) * discount,
                    "text_similarity": round(mine, 4),
                }
            )
    return kept
