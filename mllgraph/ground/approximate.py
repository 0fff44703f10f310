"""Approximate grounding: the nearest concepts for a name WordNet lacks (`ApproximateMatching`).

The name is read as English noun phrases (`words.parse_name`: "umbrella with rain drops" is
an umbrella in the context of rain drops; in "leaf fluttering in wind" the participle starts
the context; "monkey face" is a monkey, its head naming a body part). Candidates: fuzzy lemma
matches of the whole name (a character-trigram index over the lexicon's compact lemma keys,
then difflib), the lemmas of every sub-phrase (plurals too) weighted by the phrase's role (the
head of an English compound is its last word) and the kinds of the head ("graduation cap" ->
mortarboard; "two-hump camel" -> the Bactrian camel, whose definition holds the modifiers);
kept only when imageable and close enough in spelling or meaning (see `ScoreWeights`), then
scored by the resolver in one decision against the whole name.
`closest_lemmas` for error messages. Step 4 of `mllgraph.ground.resolve`'s docstring.

`ApproximateMatching` is a mixin of `Resolver`: it uses the resolver's lexicon lookups
(`_sense_priors`, `_spellings`, `_base_forms`, `_override`), its sense embeddings (`_embed`),
`_visual`, and the indexes `_refresh_indexes` keeps (`_compact_index`, `_trigrams`, `_children`).

Imports `ground.records`, `ground.words`, errors and below; must not import the resolver or
anything above ground.
"""

from __future__ import annotations

import difflib
import threading
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from mllgraph import gc_pause
from mllgraph.errors import InvalidArgument
from mllgraph.ground.records import Cand, Plan, ScoreWeights
from mllgraph.ground.words import (
    FUNCTION_WORDS,
    PAREN,
    WORD,
    compact,
    normalise_name,
    parse_name,
    stem,
    stems_of,
    to_key,
)

if TYPE_CHECKING:
    from mllgraph.graph.wordnet import WordNetNouns


class ApproximateMatching:
    """Approximate grounding and fuzzy lemma lookup, mixed into `Resolver`."""

    weights: ScoreWeights
    _lock: threading.RLock
    _compact_index: dict[str, list[str]] | None
    _trigrams: tuple[list[str], dict[str, np.ndarray], np.ndarray] | None
    _children: dict[str, list[str]] | None

    nouns: WordNetNouns
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
        """Nearest concepts for a name WordNet lacks; raises InvalidArgument if none is close
        (or if the caller does not `allow` approximate grounding). See `_phrase_candidates`."""
        if not allow:
            raise InvalidArgument(
                f"{where} is not a WordNet noun; closest lemmas: "
                f"{', '.join(self.closest_lemmas(plan.name)) or '(none)'}"
            )
        sensible = self._phrase_candidates(plan)
        if not sensible:
            raise InvalidArgument(
                f"{where} cannot be grounded to a WordNet concept; closest lemmas: "
                f"{', '.join(self.closest_lemmas(plan.name)) or '(none)'}"
            )
        plan.cands = sensible
        plan.approximate = True

    def _phrase_candidates(self, plan: Plan) -> list[Cand]:
        """Candidate concepts of a name read as English noun phrases; none if none is close.

        The name is read as English noun phrases (`words.parse_name`): the object phrase and
        its head noun, modifiers, and a context after a preposition, negation or participle.
        Candidates come from the whole name misspelt, from every sub-phrase that is a lemma
        (plurals too), each weighted by its role and its share of the name, and from the kinds
        of the head ("high-speed train" -> bullet train), which must match the whole name
        clearly better than the head itself, or have a definition that holds the modifiers
        ("two-hump camel": "two-humped"; the `defined` term, `ScoreWeights.approx_defined`).
        Only imageable ones close in spelling or meaning are kept; the resolver then scores
        them in one decision (the phrase's role, meaning against the whole name, prior,
        context), recording each term (`APPROXIMATE_ROLES`)."""
        w = self.weights
        norm = " ".join(PAREN.sub(" ", normalise_name(plan.name)).split())
        parse = parse_name(norm, self._is_thing_word)
        words = parse.words
        content = [x for x in words if x not in FUNCTION_WORDS] or list(words)
        name_compact = compact("".join(content))
        n = len(words)
        whole = next(
            ((i, j) for i, j in parse.phrases() if compact("".join(words[i:j])) == name_compact),
            (0, n),
        )
        # The name's own proper sub-phrases, each scored below as words rather than misspellings.
        phrases = {compact("".join(words[i:j])) for i, j in parse.phrases() if (i, j) != whole}
        cands: dict[str, Cand] = {}
        # What the modifiers before a head phrase say, to be found in a reading's definition.
        modified: dict[str, frozenset[str]] = {}  # candidate -> its head phrase's modifiers

        def add_concept(
            wnid: str, rank: int, sim: float, role: str, count: int = 0, prior: float = 1.0
        ) -> None:
            c = cands.get(wnid)
            if c is None or sim > c.lexical:
                cands[wnid] = Cand(
                    wnid, rank, False, 0, count=count, prior=prior, lexical=sim, role=role
                )

        def add(lemma: str, sim: float, role: str, mods: frozenset[str] = frozenset()) -> None:
            # Every sense of the head ("ear" of "ear of corn" is its 5th); three of the others.
            senses = self._sense_priors(lemma)
            for rank, (wnid, count, prior) in enumerate(senses if role == "head" else senses[:3]):
                add_concept(wnid, rank, sim, role, count, prior)
                if mods:
                    modified.setdefault(wnid, mods)

        def share(text: str) -> float:
            return len(compact(text)) / max(1, len(name_compact))

        # The whole name misspelt ("sneakerz"): similarity is the difflib ratio. A lemma that is
        # one of the name's own phrases is scored below, as a phrase; for a multiword name a
        # near-miss ("bucket hat" ~ "bucket seat") is discounted unless it is very close.
        # A name made of real words ("chess pawn") is not a misspelling of another lemma
        # ("chessman") unless it is spelt almost like it.
        spelt_right = len(content) > 1 and any(
            self._spellings(p) or self._base_forms(p) for p in content
        )
        for lemma, sim in self._fuzzy(name_compact, limit=8):
            if compact(lemma) in phrases and len(content) > 1:
                continue
            if spelt_right and sim < w.approx_typo:
                continue
            add(lemma, sim if len(content) == 1 or sim >= 0.9 else 0.85 * sim, "spelling")
        # Sub-phrases by role. The head of an English compound is its last word(s) — a "bucket
        # hat" is a hat — so a phrase holding the head scores 0.7 + 0.3 * its share of the
        # name; a modifier ("monkey" of "monkey face") or a context phrase ("rain" of "umbrella
        # with rain") a share-weighted hint. The whole name (reached here only once filler
        # words are gone: "hoodie thing") scores 1.
        # A head that names a body part or a form ("monkey face", "horse head", "cheese
        # wedge") shows the whole or the stuff the modifier names: the modifier is weighed as a
        # head, the visual term and the meaning then decide.
        part_head = self._names_part_or_form(words[parse.head])
        heads: list[tuple[str, float, frozenset[str]]] = []
        for i, j in parse.phrases():
            phrase = "_".join(words[i:j])
            role = parse.role(i, j)
            if (i, j) == whole:
                weight = 1.0
            elif role == "head" or (role == "modifier" and part_head):
                weight = w.approx_head + (1.0 - w.approx_head) * share(phrase)
            elif role == "modifier":
                weight = w.approx_modifier * share(phrase)
            else:
                weight = w.approx_context * share(phrase)
            fixed = self._override(phrase.replace("_", " "))
            if fixed is not None:
                add_concept(fixed, 0, weight, role)
                continue
            hits = self._spellings(phrase) + self._base_forms(phrase)
            # Only modifiers of the object name a kind of it ("graduation cap"), not its
            # context ("leaf fluttering in wind" is a leaf, of no particular kind).
            mods = frozenset(
                stem(x) for x in words[:i] if role == "head" and x not in FUNCTION_WORDS
            )
            for lemma in hits:
                add(lemma, weight, role, mods)
                if mods:
                    heads.append((lemma, weight, mods))
            if not hits and j == i + 1 and len(phrase) >= 3 and role != "context":
                for lemma, sim in self._fuzzy(compact(phrase), limit=3):
                    add(lemma, sim * weight, "spelling")  # one misspelt word
        # Kinds of the head: the modifiers may name one ("graduation cap" -> mortarboard).
        narrower: dict[str, str] = {}  # narrower concept -> the head sense it is a kind of
        for lemma, weight, mods in heads:
            for wnid, _, prior in self._sense_priors(lemma)[:2]:
                for kind in self._kinds(wnid, depth=2):
                    if kind not in cands:
                        narrower[kind] = wnid
                        modified.setdefault(kind, mods)
                        add_concept(
                            kind, 0, weight - w.approx_narrower_penalty, "narrower", prior=prior
                        )
        if not cands:
            return []

        # The readings whose definition holds all the modifiers of their head phrase, where
        # they tell one kind from the others: a property many kinds share ("deciduous tree")
        # names no particular one.
        holding: dict[frozenset[str], list[Cand]] = defaultdict(list)
        for c in cands.values():
            if c.role in ("head", "narrower") and c.wnid in modified:
                full, named = self._defined(c.wnid, modified[c.wnid])
                if full:
                    c.defined = 1.0 + named
                    holding[modified[c.wnid]].append(c)
        for found in holding.values():
            if len(found) > MAX_DEFINED_READINGS:
                for c in found:
                    c.defined = 0.0

        # Keep only sensible candidates: an imageable concept that is either spelt almost like
        # the name (a typo) or close in meaning with some lexical support.
        vecs = self._embed([plan.query], list(cands))
        sensible: list[Cand] = []
        for c in cands.values():
            # The head the user wrote may be any concrete thing ("notepad" is a substance).
            min_visual = w.min_visual if c.role == "head" else w.approx_min_visual
            if self._visual(c.wnid) < min_visual:
                continue
            emb = float(vecs[1][c.wnid] @ vecs[0][plan.query]) if vecs is not None else None
            if c.role == "narrower":
                parent = narrower[c.wnid]
                if (w.approx_defined > 0 and c.defined >= 1.0) or (
                    emb is not None
                    and parent in cands
                    and emb
                    >= float(vecs[1][parent] @ vecs[0][plan.query]) + w.approx_narrower_margin
                ):
                    sensible.append(c)
                continue
            if c.lexical >= w.approx_typo or (
                emb is not None
                and (
                    (c.role == "head" and c.lexical >= w.approx_head and emb >= w.approx_head_embed)
                    or (c.role == "modifier" and part_head and emb >= w.approx_head_embed)
                    or (c.role == "modifier" and emb >= w.approx_modifier_embed)
                    or (c.role == "context" and emb >= w.approx_context_embed)
                    or (c.lexical >= w.approx_word and emb >= w.approx_word_embed)
                )
            ):
                sensible.append(c)
        return sensible

    def _defined(self, wnid: str, modifiers: frozenset[str]) -> tuple[bool, float]:
        """(whether concept `wnid`'s definition or lemmas hold every one of `modifiers`
        (stems, at least one), the share its lemmas hold)."""
        synset = self.nouns.synsets[wnid]
        named = stems_of(" ".join(synset.lemmas))
        said = named | stems_of(synset.definition)
        return modifiers <= said, len(modifiers & named) / len(modifiers)

    def _is_thing_word(self, key: str) -> bool:
        """Whether lemma key `key` (or its singular) has an imageable sense, for `parse_name`:
        "building" and "playing_cards" have, "fluttering" (an act) has not."""
        return any(
            self._visual(wnid) >= self.weights.approx_min_visual
            for lemma in self._spellings(key) + self._base_forms(key)
            for wnid in self.nouns.lemma_index.get(lemma, ())
        )

    def _names_part_or_form(self, key: str) -> bool:
        """Whether lemma `key`'s first sense is a body part, a shape or a quantity."""
        senses = self._sense_priors(key) if key else []
        return bool(senses) and self.nouns.synsets[senses[0][0]].lexname in _PART_OR_FORM

    def _kinds(self, wnid: str, depth: int = 1) -> list[str]:
        """The concepts up to `depth` levels below `wnid` (hyponyms), from an index built once."""
        self._refresh_indexes()
        if self._children is None:
            with self._lock:
                if self._children is None:
                    children: dict[str, list[str]] = defaultdict(list)
                    for w, s in self.nouns.synsets.items():
                        for parent in s.hypernyms:
                            children[parent].append(w)
                    self._children = dict(children)
        found: list[str] = []
        level = [wnid]
        for _ in range(depth):
            level = [k for w in level for k in self._children.get(w, ())]
            found.extend(level)
        return list(dict.fromkeys(found))

    def _trigram_index(self) -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
        self._refresh_indexes()
        if self._trigrams is None:
            with self._lock, gc_pause.paused():
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


# At most this many readings of one head phrase may hold all its modifiers in their
# definitions for the `defined` term to count (`ScoreWeights.approx_defined`).
MAX_DEFINED_READINGS = 2

# Lexicographer files of heads that name a part or a form of what their modifier names.
_PART_OR_FORM = frozenset({"noun.body", "noun.shape", "noun.quantity"})


def _grams(key: str) -> list[str]:
    padded = f"^{key}$"
    return [padded[i : i + 3] for i in range(len(padded) - 2)]
