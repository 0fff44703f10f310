"""Approximate grounding: the nearest concepts for a name WordNet lacks (`ApproximateMatching`).

Fuzzy lemma matches (a character-trigram index over the lexicon's compact lemma keys, then
difflib), lemmas of single words and of trailing sub-phrases (the head of an English compound
is its last word), kept only when imageable and close enough in spelling or meaning (see
`ScoreWeights`); `closest_lemmas` for error messages. Step 4 of `mllgraph.ground.resolve`'s
docstring.

`ApproximateMatching` is a mixin of `Resolver`: it uses the resolver's lexicon lookups
(`_sense_priors`, `_spellings`, `_base_forms`, `_override`), its sense embeddings (`_embed`),
`_visual`, and the spelling indexes `_refresh_indexes` keeps (`_compact_index`, `_trigrams`).

Imports `ground.records`, `ground.words`, errors and below; must not import the resolver or
anything above ground.
"""

from __future__ import annotations

import difflib
import threading
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from mllgraph.errors import InvalidArgument
from mllgraph.ground.records import Cand, Plan, ScoreWeights
from mllgraph.ground.words import FILLER_WORDS, PAREN, WORD, compact, normalise_name, to_key


class ApproximateMatching:
    """Approximate grounding and fuzzy lemma lookup, mixed into `Resolver`."""

    weights: ScoreWeights
    _lock: threading.RLock
    _compact_index: dict[str, list[str]] | None
    _trigrams: tuple[list[str], dict[str, np.ndarray], np.ndarray] | None

    if TYPE_CHECKING:  # the resolver's own, which these methods use

        def _refresh_indexes(self) -> None: ...
        def _sense_priors(self, key: str) -> list[tuple[str, int, float]]: ...
        def _spellings(self, key: str) -> list[str]: ...
        def _base_forms(self, key: str) -> list[str]: ...
        def _override(self, norm: str) -> str | None: ...
        def _visual(self, wnid: str) -> float: ...
        def _embed(
            self, queries: list[str], wnids: list[str]
        ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None: ...

    def closest_lemmas(self, name: str, k: int = 5) -> list[str]:
        """The k lemmas spelled most like `name` (for error messages and suggestions)."""
        key = to_key(normalise_name(name))
        scored: dict[str, float] = {}
        for lemma, sim in self._fuzzy(compact(key), limit=k * 2):
            scored[lemma] = max(scored.get(lemma, 0.0), sim)
        for word in WORD.findall(normalise_name(name)):
            if len(word) >= 3:
                for lemma, sim in self._fuzzy(compact(word), limit=k):
                    scored[lemma] = max(scored.get(lemma, 0.0), 0.9 * sim)
        best = sorted(scored.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return [lemma.replace("_", " ") for lemma, _ in best]

    def _approximate(self, plan: Plan, allow: bool, where: str) -> None:
        """Nearest concepts for a name WordNet lacks; raises InvalidArgument if none is close."""
        if not allow:
            raise InvalidArgument(
                f"{where} is not a WordNet noun; closest lemmas: "
                f"{', '.join(self.closest_lemmas(plan.name)) or '(none)'}"
            )
        norm = " ".join(PAREN.sub(" ", normalise_name(plan.name)).split())
        words = [w for w in WORD.findall(norm) if w not in FILLER_WORDS] or WORD.findall(norm)
        name_compact = compact("".join(words))
        n = len(words)
        # The name's own proper sub-phrases, each scored below as words rather than misspellings.
        phrases = {
            compact("".join(words[i:j]))
            for i in range(n)
            for j in range(i + 1, n + 1)
            if (i, j) != (0, n)
        }
        cands: dict[str, Cand] = {}

        def add_concept(wnid: str, rank: int, sim: float, count: int = 0, prior: float = 1.0):
            c = cands.get(wnid)
            if c is None or sim > c.lexical:
                cands[wnid] = Cand(wnid, rank, False, 0, count=count, prior=prior, lexical=sim)

        def add(lemma: str, sim: float) -> None:
            for rank, (wnid, count, prior) in enumerate(self._sense_priors(lemma)[:3]):
                add_concept(wnid, rank, sim, count, prior)

        def share(text: str) -> float:
            return len(compact(text)) / max(1, len(name_compact))

        # The whole name misspelt ("sneakerz"): similarity is the difflib ratio. A lemma that is
        # one of the name's own words is scored below, as a word; for a multiword name a
        # near-miss ("bucket hat" ~ "bucket seat") is discounted unless it is very close.
        for lemma, sim in self._fuzzy(name_compact, limit=8):
            if compact(lemma) in phrases and len(words) > 1:
                continue
            add(lemma, sim if len(words) == 1 or sim >= 0.9 else 0.85 * sim)
        # Words and phrases of a multiword name. The head of an English compound is its last
        # word(s) — a "bucket hat" is a hat — so a trailing phrase scores 0.7 + 0.3 * its share
        # of the name and any other word only 0.4 * its share (a weaker hint). The whole name
        # (reached here only once filler words are gone: "hoodie thing") scores 1.
        for i in range(n):
            for j in range(i + 1, n + 1):
                phrase = "_".join(words[i:j])
                if (i, j) == (0, n):
                    weight = 1.0
                elif j == n:
                    weight = 0.7 + 0.3 * share(phrase)
                else:
                    weight = 0.4 * share(phrase)
                fixed = self._override(phrase.replace("_", " "))
                if fixed is not None:
                    add_concept(fixed, 0, weight)
                    continue
                hits = self._spellings(phrase) + self._base_forms(phrase)
                for lemma in hits:
                    add(lemma, weight)
                if not hits and j == i + 1 and len(phrase) >= 3:
                    for lemma, sim in self._fuzzy(compact(phrase), limit=3):
                        add(lemma, sim * weight)  # one misspelt word
        if not cands:
            raise InvalidArgument(
                f"{where} cannot be grounded: no WordNet lemma is close; closest lemmas: "
                f"{', '.join(self.closest_lemmas(plan.name)) or '(none)'}"
            )
        if len(cands) > 36:  # embed only the most promising few
            keep = sorted(cands.values(), key=lambda c: (-c.lexical, c.rank, c.wnid))[:36]
            cands = {c.wnid: c for c in keep}

        # Keep only sensible candidates: an imageable concept that is either spelt almost like
        # the name (a typo) or close in meaning with some lexical support.
        w = self.weights
        vecs = self._embed([plan.query], list(cands))
        sensible: list[Cand] = []
        for c in cands.values():
            if self._visual(c.wnid) < w.approx_min_visual:
                continue
            emb = float(vecs[1][c.wnid] @ vecs[0][plan.query]) if vecs is not None else None
            if (
                c.lexical >= w.approx_typo
                or (emb is not None and c.lexical >= w.approx_head and emb >= w.approx_head_embed)
                or (emb is not None and c.lexical >= w.approx_word and emb >= w.approx_word_embed)
            ):
                sensible.append(c)
        if not sensible:
            raise InvalidArgument(
                f"{where} cannot be grounded to a WordNet concept; closest lemmas: "
                f"{', '.join(self.closest_lemmas(plan.name))}"
            )
        plan.cands = sensible
        plan.approximate = True

    def _trigram_index(self) -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
        self._refresh_indexes()
        if self._trigrams is None:
            with self._lock:
                if self._trigrams is None:
                    assert self._compact_index is not None
                    keys = sorted(self._compact_index)
                    postings: dict[str, list[int]] = defaultdict(list)
                    for i, key in enumerate(keys):
                        for gram in set(_grams(key)):
                            postings[gram].append(i)
                    arrays = {g: np.asarray(ids, dtype=np.int32) for g, ids in postings.items()}
                    sizes = np.asarray([len(set(_grams(k))) for k in keys], dtype=np.float32)
                    self._trigrams = (keys, arrays, sizes)
        return self._trigrams

    def _fuzzy(self, query: str, limit: int) -> list[tuple[str, float]]:
        """Lemma keys spelled like `query` (compact form), by difflib ratio, best first."""
        if len(query) < 2:
            return []
        keys, postings, sizes = self._trigram_index()
        grams = set(_grams(query))
        hits = [postings[g] for g in sorted(grams) if g in postings]
        if not hits:
            return []
        counts = np.bincount(np.concatenate(hits), minlength=len(keys)).astype(np.float32)
        dice = 2 * counts / (len(grams) + sizes)
        top = np.argsort(-dice, kind="stable")[:60]
        scored: list[tuple[str, float]] = []
        assert self._compact_index is not None
        for i in top:
            if dice[i] <= 0:
                break
            key = keys[int(i)]
            ratio = difflib.SequenceMatcher(None, query, key).ratio()
            for lemma in self._compact_index[key]:
                scored.append((lemma, ratio))
        scored.sort(key=lambda kv: (-kv[1], kv[0]))
        return scored[:limit]


def _grams(key: str) -> list[str]:
    padded = f"^{key}$"
    return [padded[i : i + 3] for i in range(len(padded) - 2)]
