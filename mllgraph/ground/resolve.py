"""Ground class names to WordNet noun concepts.

One resolver serves both ends of Model Label Learning: an expert's declared label names at
registration and a task's class names at selection. It is pure logic over a `WordNetNouns`
lexicon (possibly extended with user concepts) plus two optional callables — a morphology
function and a text embedder — so it needs neither Neo4j nor a network.

How a name is grounded
----------------------
1. *Overrides* (`mllgraph/ground/overrides.json`): whole names WordNet lacks
   ("ankle boot") map straight to a concept; preferred senses ("top" -> the garment) replace
   WordNet's first sense in the prior.
2. *Lexical candidates*: the name is normalised (case, whitespace, underscores, punctuation,
   accents, hyphen/compact spellings such as "tshirt" for "T-shirt"), split on "/" and ","
   into alternatives, and looked up as a lemma, then through morphology (plurals, also of the
   last word of a multiword name: "ankle boots" -> "ankle boot"). Every sense of every form
   found is a candidate. Qualifiers narrow them: "crane (bird)" and "crane bird" keep the
   senses of "crane" below a sense of "bird". Abstract senses (acts, states, times ...) are
   dropped when the name also has an imageable one.
3. *Scoring* the candidates of an ambiguous name (see `ScoreWeights`)::

       s(c) = 1.0 * P(c) / (1 + 0.5 * morph + alt)        # WordNet sense frequency
            + 1.5 * visual(c)                              # imageable lexicographer file
            + 1.0 * pictured(c)                            # organism or its food (depict)
            + 1.0 * agree(c)                               # "/"/"," alternatives agreeing
            + 6.0 * cos(e("a photo of a {name}"), e("{first lemma}: {gloss}"))
            + 5.0 * ctx(c) / 10                            # resolve_task only

   `P(c)` is the sense's share of its lemma's WordNet tag counts (`index.sense`), smoothed
   by pseudo-counts alpha / (1 + rank) so that an untagged sense is not zero and untagged
   senses keep WordNet's order (`ScoreWeights.prior_alpha`); where no sense of the lemma was
   tagged, the pseudo-counts are equal (`prior_untagged_order`: WordNet orders senses by
   their counts, so without any the order says little): "coffee" the beverage (46 tags,
   P 0.86) needs a strong context to lose to the shrub (0 tags, P 0.05), "bat" (animal 2,
   club 0) a weaker one. Linear in P, not log P: on the benchmark's dev half a log prior let
   SemCor's few counts overrule context ("boxer" the person among dogs).
   A preferred sense of the override table has P = 1 (context can still overrule it).
   `visual` and `pictured` come from `ground.depict`: `pictured(c)` is 1 for the food sense
   of a name that also names the plant it comes from ("peach", "garlic") and for the animal
   sense of a name that also names the animal's food ("lobster", "squid"), else 0; the plant
   or animal must be an organism, not a part ("wing", "egg"), and a name's modifier or context
   word names neither ("cherry" in "cherry blossom").
   `ctx(c)` is the mean depth beyond 4 (`ScoreWeights.context_floor`: sharing only `whole` or
   `matter` is no context) of the lowest common ancestor of `c` with the k = min(5, n-1)
   nearest other classes, each other class counted by its own sense probabilities (so a
   rare sense of a neighbour hardly counts). Confidence is a softmax of `s / temperature` over
   the name's candidates; context is recomputed twice from the updated probabilities.
   *Hub coverage* (resolve_task, when the caller passes `sense_coverage`: 1 measured on the
   concept or below it, 0.75 declared there, 0.25 measured on a close ancestor, 0 none):
   among the senses that fit the task as well as the best one (their context ``ctx`` within
   ``hub_context_slack`` LCA-depth levels of the best sense's), the one the hub covers best
   wins; ties keep the score order. So "jumper" among garments becomes the sweater the
   pullover heads cover (both senses sit under garment), while an animal task's "bat" stays
   the animal even when the hub covers only the club (the club does not fit the task). A
   preference, not a weight: it never trades context for coverage. The grounding records its
   senses' coverage and whether coverage decided (`hub_preferred`), and the chosen and
   runner-up senses' score terms (`reasons`).
4. *Approximate* grounding for names WordNet lacks ("monkey face"): the name read as noun
   phrases gives candidates (`ground.approximate`), scored as in 3 against the whole name,
   the phrase's role a term (`reasons`); coverage chooses only among one phrase's senses.
   Flagged `approximate=True`; refused with `InvalidArgument` listing the closest lemmas
   when nothing is close enough or when the caller disallows it.

This module keeps the `Resolver` (lexical candidates, scoring with context, hub coverage and
embeddings, the task checks), `default_resolver` and `grounder`. Beside it: `words`
(normalisation, morphology, phrases), `overrides`, `records` (`Grounding`, `ScoreWeights`,
working records), `depict` (the visual and pictured terms) and `approximate` (step 4, a mixin
of `Resolver`, with `closest_lemmas`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mllgraph import gc_pause
from mllgraph.errors import InvalidArgument, NotFound
from mllgraph.graph.wordnet import WordNetNouns
from mllgraph.ground import depict
from mllgraph.ground.approximate import ApproximateMatching
from mllgraph.ground.overrides import Overrides, default_overrides
from mllgraph.ground.records import Cand, Embedder, Grounding, Plan, ScoreWeights, SenseCoverage
from mllgraph.ground.words import (
    PAREN,
    Morphology,
    compact,
    describe,
    morphy_morphology,
    normalise_name,
    suffix_morphology,
    to_key,
)
from mllgraph.plan.document import MAX_CLASSES, MIN_CLASSES, check_class_name
from mllgraph.settings import Settings

log = logging.getLogger(__name__)

QUERY_TEMPLATE = "a photo of a {name}"


class Resolver(ApproximateMatching):
    """Grounds class names to WordNet noun concepts; thread-safe, caches embeddings.
    Approximate grounding and `closest_lemmas` come from `ApproximateMatching`."""

    def __init__(
        self,
        nouns: WordNetNouns,
        morphology: Morphology | None = None,
        embedder: Embedder | None = None,
        overrides: Overrides | None = None,
        weights: ScoreWeights | None = None,
        tag_counts: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        self.nouns = nouns
        # lemma key -> {wnid: WordNet tag count}; none: every sense untagged (order only).
        self.tag_counts: Mapping[str, Mapping[str, int]] = tag_counts or {}
        self._morphology = morphology
        self._embedder = embedder
        self.overrides = overrides if overrides is not None else default_overrides()
        self.weights = weights or ScoreWeights()
        self._lock = threading.RLock()
        self._sense_vecs: dict[str, np.ndarray] = {}
        self._query_vecs: OrderedDict[str, np.ndarray] = OrderedDict()
        self._query_cache_size = 20_000
        self._anc: dict[str, list[tuple[str, int]]] = {}
        self._depth: dict[str, int] = {}
        # Indexes derived from the lexicon, rebuilt when users add lemmas (size changes).
        self._compact_index: dict[str, list[str]] | None = None
        self._name_index: dict[str, str] | None = None
        self._trigrams: tuple[list[str], dict[str, np.ndarray], np.ndarray] | None = None
        self._children: dict[str, list[str]] | None = None  # wnid -> hyponyms (approximate)
        self._indexed_size = -1

    @property
    def embeddings_available(self) -> bool:
        return self._embedder is not None

    # -- public API ----------------------------------------------------------------------------

    def resolve_name(self, name: str, allow_approximate: bool = True) -> Grounding:
        """Ground one name without task context (expert label names at registration)."""
        check_class_name(name, f"class name {name!r}")
        plan = self._plan(name)
        if plan.fixed is None and not plan.cands:
            self._approximate(plan, allow_approximate, where=f"class name {name!r}")
        groundings = self._decide([plan], context=False)
        return groundings[0]

    def resolve_task(
        self,
        names: Sequence[str],
        pinned: Mapping[int, str] | None = None,
        sense_coverage: SenseCoverage | None = None,
        *,
        distinct: bool = True,
    ) -> list[Grounding]:
        """Ground a task's class names together, each disambiguated by the others and, when
        `sense_coverage` is given, towards senses the hub has heads for. With `distinct`
        (always, for a task), two names on one concept are refused; the grounding benchmark
        turns it off to score every name of a task anyway."""
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise InvalidArgument("class names must be a list of strings")
        if len(names) == 0:
            raise InvalidArgument("the task has no class names")
        if len(names) < MIN_CLASSES:
            raise InvalidArgument(
                f"the task has {len(names)} class; zero-shot classification needs at least "
                f"{MIN_CLASSES}"
            )
        if len(names) > MAX_CLASSES:
            raise InvalidArgument(f"the task has {len(names)} classes (at most {MAX_CLASSES})")
        for i, name in enumerate(names):
            check_class_name(name, describe(i, name) if isinstance(name, str) else f"class {i}")
        pins = self._check_pins(names, pinned or {})

        plans: list[Plan] = []
        for i, name in enumerate(names):
            if i in pins:
                plans.append(Plan(name=name, query="", fixed=pins[i]))
                continue
            plan = self._plan(name)
            if plan.fixed is None and not plan.cands:
                self._approximate(plan, allow=True, where=describe(i, name))
            plans.append(plan)
        groundings = self._decide(plans, context=True, sense_coverage=sense_coverage)
        for i in pins:
            g = groundings[i]
            g.method, g.pinned, g.score = "pinned", True, 1.0
        if distinct:
            self._check_duplicates(groundings)
        return groundings

    def concept(self, wnid_or_name: str) -> str | None:
        """The wnid for a wnid ('n02012849') or an nltk-style name ('crane.n.05'), else None."""
        text = wnid_or_name.strip()
        if text in self.nouns.synsets:
            return text
        self._refresh_indexes()
        assert self._name_index is not None
        return self._name_index.get(text.lower())

    def warm_up(self) -> None:
        """Load the embedder and build the lazy indexes now rather than on the first request."""
        self._refresh_indexes()
        self._trigram_index()
        self._embed(["warm up"], [])

    # -- candidate generation -------------------------------------------------------------------

    def _refresh_indexes(self) -> None:
        size = len(self.nouns.lemma_index) + len(self.nouns.synsets)
        if size == self._indexed_size:
            return
        with self._lock, gc_pause.paused():
            by_compact: dict[str, list[str]] = defaultdict(list)
            for lemma in self.nouns.lemma_index:
                by_compact[compact(lemma)].append(lemma)
            self._compact_index = dict(by_compact)
            self._name_index = {s.name.lower(): w for w, s in self.nouns.synsets.items()}
            self._trigrams = None
            self._children = None
            self._indexed_size = size

    def _senses(self, key: str) -> list[str]:
        senses = list(self.nouns.lemma_index.get(key, ()))
        preferred = self.overrides.senses.get(key)
        if preferred and preferred in self.nouns.synsets:
            senses = [preferred] + [w for w in senses if w != preferred]
        return senses

    def _sense_priors(self, key: str) -> list[tuple[str, int, float]]:
        """The senses of lemma `key` in order, each with its tag count and smoothed prior."""
        senses = self._senses(key)
        known = self.tag_counts.get(key, {})
        counts = [int(known.get(w, 0)) for w in senses]
        alpha = self.weights.prior_alpha
        # WordNet orders a lemma's senses by their tag counts; where none was tagged the order
        # says little about frequency, so it counts only this much (`prior_untagged_order`).
        # Without any counts at all (no sense index) the order is all there is.
        order = 1.0 if any(counts) or not self.tag_counts else self.weights.prior_untagged_order
        mass = [n + alpha / (1.0 + order * r) for r, n in enumerate(counts)]
        total = sum(mass)
        priors = [(w, n, m / total) for w, n, m in zip(senses, counts, mass, strict=True)]
        preferred = self.overrides.senses.get(key)
        if priors and preferred and senses[0] == preferred:
            # The table says WordNet's counts are wrong for images here ("pants" -> trousers,
            # untagged): its sense is taken as certain in the prior; context can still win.
            priors[0] = (preferred, counts[0], 1.0)
        return priors

    def _spellings(self, key: str) -> list[str]:
        """Lemma keys matching `key` up to hyphens, underscores and other punctuation."""
        if not key:
            return []
        self._refresh_indexes()
        assert self._compact_index is not None
        alike = self._compact_index.get(compact(key), [])
        for variant in (key, key.replace("-", "_"), key.replace("_", "-")):
            if variant in self.nouns.lemma_index or variant in self.overrides.senses:
                # Lemmas spelt alike up to punctuation are one word to a user: CLDR's
                # "jack-o-lantern" is WordNet's fungus and its "jack-o'-lantern".
                return list(dict.fromkeys([variant, *alike]))
        return list(alike)

    def _base_forms(self, key: str) -> list[str]:
        """Singular forms of `key` that are lemmas; for a multiword key, of its last word."""
        words = key.split("_")
        head = words[-1]
        forms: list[str] = []
        if self._morphology is not None:
            forms.extend(self._morphology(key))
            if len(words) > 1:
                forms.extend("_".join(words[:-1] + [f]) for f in self._morphology(head))
        forms.extend(suffix_morphology(key))
        found: list[str] = []
        for form in forms:
            for spelled in self._spellings(form):
                if spelled != key and spelled not in found:
                    found.append(spelled)
        if len(words) > 1:
            # nltk filters against its own lemma list, so also try the head's raw suffix rules
            # joined back (user lemmas, and multiword forms nltk does not inflect).
            for f in suffix_morphology(head):
                for spelled in self._spellings("_".join(words[:-1] + [f])):
                    if spelled != key and spelled not in found:
                        found.append(spelled)
        return found

    def _singular_name(self, norm: str) -> list[str]:
        """`norm` with its last word singularised (override lookups: 'ankle boots')."""
        words = norm.split(" ")
        head = words[-1]
        forms = list(self._morphology(head)) if self._morphology else []
        forms += suffix_morphology(head)
        return [" ".join(words[:-1] + [f]) for f in dict.fromkeys(forms) if f and f != head]

    def _override(self, norm: str) -> str | None:
        # Table keys are spelled with spaces; users also write 'ankle-boot' or 'hand-bag'.
        spaced = " ".join(norm.replace("-", " ").split())
        for form in dict.fromkeys([norm, spaced]):
            for candidate in [form, *self._singular_name(form)]:
                wnid = self.overrides.names.get(candidate)
                if wnid is not None:
                    return wnid
        return None

    def _plan(self, name: str) -> Plan:
        norm = normalise_name(name)
        hint_free = " ".join(PAREN.sub(" ", norm).split())
        query = QUERY_TEMPLATE.format(name=" ".join(name.replace("_", " ").split()))
        plan = Plan(name=name, query=query)
        fixed = self._override(norm) or self._override(hint_free)
        if fixed is not None:
            plan.fixed = fixed
            return plan
        alternatives = [a for a in re.split(r"[/,;]", hint_free) if a.strip()]
        per_alt: list[list[Cand]] = []
        for alt_index, alt in enumerate(alternatives):
            wnid = self._override(alt.strip())
            if wnid is not None:
                per_alt.append([Cand(wnid=wnid, rank=0, morph=False, alt=alt_index)])
                continue
            key = to_key(alt)
            cands = self._lemma_candidates(key, alt_index)
            if not cands:
                cands = self._qualified_candidates(key, alt_index)
            per_alt.append(cands)
        plan.cands = self._merge_alternatives(per_alt)
        # A parenthetical names a broader concept ("crane (bird)"): keep the senses under it.
        hints = [to_key(h) for h in PAREN.findall(norm) if h.strip()]
        if hints and len(plan.cands) > 1:
            kept = [c for c in plan.cands if any(self._is_a(c.wnid, h) for h in hints)]
            if kept:
                plan.cands = kept
        # Abstract senses (states, acts, times, feelings ...) are not image classes when the
        # name also has an imageable one: drop them rather than spend embeddings on them.
        if len(plan.cands) > 1 and any(self._visual(c.wnid) >= 0.5 for c in plan.cands):
            plan.cands = [
                c for c in plan.cands if self._visual(c.wnid) >= self.weights.min_visual
            ] or plan.cands
        return plan

    def _lemma_candidates(self, key: str, alt_index: int) -> list[Cand]:
        """Every sense of `key` (any spelling), then of its singular forms."""
        cands: list[Cand] = []
        seen: set[str] = set()
        for morph, keys in ((False, self._spellings(key)), (True, self._base_forms(key))):
            for lemma in keys:
                for rank, (wnid, count, prior) in enumerate(self._sense_priors(lemma)):
                    if wnid not in seen:
                        seen.add(wnid)
                        cands.append(Cand(wnid, rank, morph, alt_index, count=count, prior=prior))
        return cands

    def _qualified_candidates(self, key: str, alt_index: int) -> list[Cand]:
        """'crane bird': the senses of 'crane' that are birds (modifier + broader head noun)."""
        words = key.split("_")
        for i in range(len(words) - 1, 0, -1):
            modifier, head = "_".join(words[:i]), "_".join(words[i:])
            cands = self._lemma_candidates(modifier, alt_index)
            if not cands:
                continue
            kept = [c for c in cands if self._is_a(c.wnid, head)]
            if kept:
                return kept
        return []

    def _is_a(self, wnid: str, key: str) -> bool:
        """Whether `wnid` is a sense of lemma `key` (or its singular) or lies below one."""
        heads = {c.wnid for c in self._lemma_candidates(key, 0)}
        return bool(heads) and any(a in heads for a, _ in self._ancestors(wnid))

    def _merge_alternatives(self, per_alt: list[list[Cand]]) -> list[Cand]:
        """One candidate list; senses that several alternatives share (or relate to) agree."""
        nonempty = [c for c in per_alt if c]
        merged: dict[str, Cand] = {}
        for cands in nonempty:
            for c in cands:
                merged.setdefault(c.wnid, c)
        if len(nonempty) > 1:
            # A sense agrees fully with an alternative that has it or one of its ancestors
            # ("sweater, pullover": a pullover is a sweater) and half with one that only has a
            # descendant of it, so the most specific sense consistent with every name wins.
            alt_sets = [{c.wnid for c in cands} for cands in nonempty]
            for c in merged.values():
                anc = {a for a, _ in self._ancestors(c.wnid)}
                agree = 0.0
                for wnids in alt_sets:
                    if wnids & anc:
                        agree += 1.0
                    elif any(c.wnid in {a for a, _ in self._ancestors(w)} for w in wnids):
                        agree += 0.5
                c.agree = agree / len(alt_sets)
        # Re-number alternatives by rank among the non-empty ones (a failed one costs nothing).
        order = {id(cands): i for i, cands in enumerate(nonempty)}
        for cands in nonempty:
            for c in cands:
                c.alt = order[id(cands)]
        return list(merged.values())

    # -- scoring -----------------------------------------------------------------------------

    def _decide(
        self, plans: list[Plan], context: bool, sense_coverage: SenseCoverage | None = None
    ) -> list[Grounding]:
        w = self.weights
        ambiguous = [p for p in plans if p.fixed is None and len(p.cands) > 1]
        vecs = None
        if ambiguous:
            vecs = self._embed(
                [p.query for p in ambiguous], [c.wnid for p in ambiguous for c in p.cands]
            )
        for p in plans:
            if p.fixed is not None:
                continue
            q = vecs[0].get(p.query) if vecs is not None and len(p.cands) > 1 else None
            # What the name itself names: not a modifier or context word of a phrase
            # ("cherry blossom" is no cherry, whether tree or fruit).
            kinds = {
                c.wnid: self._sense_kind(c.wnid)
                for c in p.cands
                if c.role not in ("modifier", "context")
            }
            for c in p.cands:
                c.terms = {
                    "prior": w.prior * c.prior / (1.0 + 0.5 * c.morph + c.alt),
                    "visual": w.visual * self._visual(c.wnid),
                    "agree": w.agree * c.agree,
                }
                pictured = depict.pictured(kinds.get(c.wnid), kinds.values())
                if pictured:
                    c.terms["pictured"] = w.pictured * pictured
                if c.lexical:
                    # Approximate: named by how the name reached it (its phrase's role).
                    c.terms[c.lexical_term] = w.lexical * c.lexical
                if c.defined:
                    c.terms["defined"] = w.approx_defined * c.defined
                if q is not None and vecs is not None:
                    weight = w.approx_embed if p.approximate else w.embed
                    c.terms["embed"] = weight * float(vecs[1][c.wnid] @ q)
                c.score = sum(c.terms.values())
        base = {id(p): [c.score for c in p.cands] for p in plans}
        probs = [self._probs(p) for p in plans]
        use_context = context and len(plans) > 1 and any(len(p.cands) > 1 for p in ambiguous)
        ctx: list[dict[str, float]] = []
        if use_context:
            for _ in range(2):
                ctx = self._context(probs)
                for i, p in enumerate(plans):
                    if p.fixed is None and len(p.cands) > 1:
                        for c, b in zip(p.cands, base[id(p)], strict=True):
                            c.terms["context"] = w.context * ctx[i][c.wnid] / w.context_depth_scale
                            c.score = b + c.terms["context"]
                probs = [self._probs(p) for p in plans]
        chosen: list[str | None] = [None] * len(plans)
        if sense_coverage is not None and ctx:
            cover = sense_coverage(sorted({c.wnid for p in ambiguous for c in p.cands}))
            for i, p in enumerate(plans):
                if p.fixed is None and len(p.cands) > 1:
                    for c in p.cands:
                        c.hub = float(min(1.0, max(0.0, cover.get(c.wnid, 0.0))))
                    chosen[i] = self._hub_choice(p, probs[i], ctx[i])
        out = []
        for i, (p, pr) in enumerate(zip(plans, probs, strict=True)):
            g = self._grounding(p, pr, use_context, vecs is not None, choose=chosen[i])
            if chosen[i] is not None:
                g.coverage = {c.wnid: c.hub for c in p.cands}
                g.hub_preferred = chosen[i] != max(p.cands, key=lambda c: pr[c.wnid]).wnid
            out.append(g)
        return out

    def _hub_choice(self, plan: Plan, probs: dict[str, float], ctx: dict[str, float]) -> str:
        """The sense to ground to: the best covered among those fitting the task (module doc)."""
        order = sorted(plan.cands, key=lambda c: -round(probs[c.wnid], 12))  # stable: WordNet
        best = order[0]
        # An approximate name's candidates are readings, not senses: coverage chooses among the
        # senses of the best one's phrase ("pool 8 ball" stays a pool ball).
        fitting = [
            c
            for c in order
            if ctx[c.wnid] >= ctx[best.wnid] - self.weights.hub_context_slack
            and (c.role, c.lexical) == (best.role, best.lexical)
        ]
        top = max(c.hub for c in fitting)
        return next(c.wnid for c in fitting if c.hub == top)

    def _probs(self, plan: Plan) -> dict[str, float]:
        if plan.fixed is not None:
            return {plan.fixed: 1.0}
        scores = np.asarray([c.score for c in plan.cands], dtype=np.float64)
        z = np.exp((scores - scores.max()) / self.weights.temperature)
        z /= z.sum()
        return {c.wnid: float(p) for c, p in zip(plan.cands, z, strict=True)}

    def _grounding(
        self,
        plan: Plan,
        probs: dict[str, float],
        used_context: bool,
        embedded: bool,
        choose: str | None = None,
    ) -> Grounding:
        if plan.fixed is not None:
            wnid = plan.fixed
            return Grounding(
                name=plan.name,
                wnid=wnid,
                concept_name=self._concept_name(wnid),
                score=1.0,
                ambiguous=False,
                approximate=False,
                pinned=False,
                method="override",
            )
        # Ties go to the earlier candidate (WordNet order), so the answer is deterministic.
        order = sorted(
            range(len(plan.cands)),
            key=lambda i: (
                plan.cands[i].wnid != choose,  # a sense chosen for hub coverage comes first
                -round(probs[plan.cands[i].wnid], 12),
                i,
            ),
        )
        best = plan.cands[order[0]]
        ambiguous = len(plan.cands) > 1
        score = probs[best.wnid]
        if plan.approximate:
            method = "embedding" if embedded else "fuzzy"
        elif ambiguous and used_context:
            method = "context"
        elif ambiguous and embedded:
            method = "embedding"
        else:
            method = "morphology" if best.morph else "lemma"
        if ambiguous and not embedded:
            score *= 0.5  # lexical-only choice among senses: say so in the confidence
        alternatives = [
            (c.wnid, self._concept_name(c.wnid), round(probs[c.wnid], 6))
            for c in (plan.cands[i] for i in order[1:6])
        ]
        reasons: dict[str, float] = {}
        if ambiguous:
            reasons = {"tag_count": float(best.count), "prior_p": round(best.prior, 6)}
            reasons |= {k: round(v, 4) for k, v in best.terms.items()}
            runner_up = plan.cands[order[1]]
            reasons["runner_up_tag_count"] = float(runner_up.count)
            reasons |= {f"runner_up_{k}": round(v, 4) for k, v in runner_up.terms.items()}
        elif plan.approximate:  # one candidate: still say how the name reached it
            reasons = {k: round(v, 4) for k, v in best.terms.items()}
        return Grounding(
            name=plan.name,
            wnid=best.wnid,
            concept_name=self._concept_name(best.wnid),
            score=round(score, 6),
            ambiguous=ambiguous,
            approximate=plan.approximate,
            pinned=False,
            alternatives=alternatives,
            method=method,
            reasons=reasons,
        )

    def _visual(self, wnid: str) -> float:
        return depict.visual(self.nouns.synsets[wnid])

    def _sense_kind(self, wnid: str) -> str | None:
        is_organism = any(a == depict.ORGANISM for a, _ in self._ancestors(wnid))
        return depict.sense_kind(self.nouns.synsets[wnid], is_organism)

    def _context(self, probs: list[dict[str, float]]) -> list[dict[str, float]]:
        """Per class and candidate: mean LCA depth with the k nearest other classes.

        Each class spreads its probability mass over the ancestors of its candidates; walking a
        candidate's ancestors from the deepest up, the mass first met there belongs to classes
        whose lowest common ancestor with the candidate is that node.
        """
        n = len(probs)
        k = float(min(self.weights.context_neighbours, n - 1))
        floor = self.weights.context_floor
        total: dict[str, float] = defaultdict(float)
        own: list[dict[str, float]] = []
        for dist in probs:
            mass: dict[str, float] = defaultdict(float)
            for wnid, p in dist.items():
                for a, _ in self._ancestors(wnid):
                    mass[a] += p
            for a, m in mass.items():
                total[a] += m
            own.append(mass)
        out: list[dict[str, float]] = []
        for i, dist in enumerate(probs):
            scores: dict[str, float] = {}
            if len(dist) > 1:
                for wnid in dist:
                    covered = acc = 0.0
                    for a, depth in self._ancestors(wnid):
                        reach = min(total[a] - own[i].get(a, 0.0), k)
                        if reach > covered + 1e-9:
                            acc += (reach - covered) * max(0.0, depth - floor)
                            covered = reach
                            if covered >= k - 1e-9:
                                break
                    scores[wnid] = acc / k if k else 0.0
            out.append(scores)
        return out

    def _ancestors(self, wnid: str) -> list[tuple[str, int]]:
        """`wnid` and all its ancestors with their depths, deepest first (cached)."""
        cached = self._anc.get(wnid)
        if cached is not None:
            return cached
        found: set[str] = set()
        stack = [wnid]
        while stack:
            w = stack.pop()
            if w in found or w not in self.nouns.synsets:
                continue
            found.add(w)
            s = self.nouns.synsets[w]
            stack.extend(s.hypernyms)
            stack.extend(s.instance_hypernyms)
        result = sorted(((a, self._depth_of(a)) for a in found), key=lambda t: (-t[1], t[0]))
        self._anc[wnid] = result
        return result

    def _depth_of(self, wnid: str) -> int:
        d = self._depth.get(wnid)
        if d is not None:
            return d
        s = self.nouns.synsets[wnid]
        if s.depth >= 0:
            d = s.depth
        else:  # a user concept whose depth was never computed
            parents = [p for p in s.hypernyms + s.instance_hypernyms if p in self.nouns.synsets]
            d = 1 + min((self._depth_of(p) for p in parents), default=-1)
        self._depth[wnid] = d
        return d

    def _concept_name(self, wnid: str) -> str:
        return self.nouns.synsets[wnid].name

    # -- embeddings ----------------------------------------------------------------------------

    def _sense_text(self, wnid: str) -> str:
        s = self.nouns.synsets[wnid]
        # First lemma and the gloss without its quoted examples: on ImageNet names this beat
        # all lemmas + gloss, the gloss alone and the template-free query (122 vs 137 wrong).
        gloss = s.definition.split('; "')[0].strip()
        return f"{s.lemmas[0].replace('_', ' ')}: {gloss}"

    def _embed(
        self, queries: list[str], wnids: list[str]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None:
        """Vectors for the query texts and the senses, computing only what is not cached."""
        if self._embedder is None:
            return None
        with self._lock:
            new_q = [q for q in dict.fromkeys(queries) if q not in self._query_vecs]
            new_s = [w for w in dict.fromkeys(wnids) if w not in self._sense_vecs]
            if new_q or new_s:
                texts = new_q + [self._sense_text(w) for w in new_s]
                try:
                    vectors = self._embedder.encode(texts)
                except Exception as exc:  # any loader/runtime failure: go lexical
                    log.warning(
                        "text embedder unavailable (%s); grounding continues lexically", exc
                    )
                    self._embedder = None
                    return None
                for q, v in zip(new_q, vectors[: len(new_q)], strict=True):
                    self._query_vecs[q] = v
                for wnid, v in zip(new_s, vectors[len(new_q) :], strict=True):
                    self._sense_vecs[wnid] = v
            for q in queries:
                self._query_vecs.move_to_end(q)
            while len(self._query_vecs) > self._query_cache_size:
                self._query_vecs.popitem(last=False)
            return (
                {q: self._query_vecs[q] for q in queries},
                {w: self._sense_vecs[w] for w in wnids},
            )

    def encode_texts(self, texts: list[str]) -> np.ndarray | None:
        """L2-normalised vectors of free texts from the grounding's own text encoder (rows
        in order), or None when grounding has none (it is then lexical)."""
        embedder = self._embedder
        if embedder is None:
            return None
        try:
            return embedder.encode(texts)
        except Exception as exc:  # the same fallback as _embed: no encoder, no text test
            # The encoder loads on first use, so a failure here is most likely a load that
            # failed: drop it, as `_embed` does, rather than retry the load on every call.
            log.warning("text embedder unavailable (%s)", exc)
            with self._lock:
                self._embedder = None
            return None

    # -- task checks ---------------------------------------------------------------------------

    def _check_pins(self, names: Sequence[str], pinned: Mapping[int, str]) -> dict[int, str]:
        pins: dict[int, str] = {}
        for index, ref in pinned.items():
            if not isinstance(index, int) or isinstance(index, bool):
                raise InvalidArgument(f"pinned class index {index!r} is not an integer")
            if not 0 <= index < len(names):
                raise InvalidArgument(
                    f"pinned class index {index} is out of range (the task has {len(names)})"
                )
            if not isinstance(ref, str) or not ref.strip():
                raise InvalidArgument(
                    f"pinned concept for {describe(index, names[index])} must be a wnid"
                )
            wnid = self.concept(ref)
            if wnid is None:
                raise NotFound(
                    f"pinned concept {ref!r} for {describe(index, names[index])} is not a "
                    "WordNet noun or a user concept"
                )
            pins[index] = wnid
        return pins

    def _check_duplicates(self, groundings: list[Grounding]) -> None:
        first: dict[str, int] = {}
        for i, g in enumerate(groundings):
            j = first.setdefault(g.wnid, i)
            if j != i:
                other = groundings[j]
                senses = list(
                    dict.fromkeys(f"{c} ({w})" for w, c, _ in other.alternatives + g.alternatives)
                )[:4]
                hint = f", e.g. one of {', '.join(senses)}" if senses else ""
                raise InvalidArgument(
                    f"{describe(j, other.name)} and {describe(i, g.name)} both ground to "
                    f"{g.wnid} ({g.concept_name}); a task's classes must be distinct concepts: "
                    f"rename or merge them, or pin a different concept{hint}"
                )


_default_resolvers: dict[tuple[Any, ...], Resolver] = {}
_default_lock = threading.Lock()


def default_resolver(settings: Settings | None = None, use_embeddings: bool = True) -> Resolver:
    """The process-wide resolver over the Debian WordNet files, WordNet's noun morphology (nltk's
    morphy, read from the same files) and MiniLM.

    Built once per (WordNet folder, embeddings) and shared, and cheap to build: the lexicon and
    morphology are parsed from `data.noun`, `index.noun` and `noun.exc` (no nltk reader), and
    the sentence encoder loads on the first name that needs an embedding (an ambiguous or
    approximate one), not here; `Resolver.warm_up` loads it ahead. If the encoder cannot be
    loaded then, the resolver goes on lexically (a warning is logged).
    """
    from mllgraph.graph.wordnet import load_nouns, noun_morphology_data, noun_tag_counts
    from mllgraph.ground.embed import default_embedder

    settings = settings or Settings.from_env()
    key = (settings.wordnet_dir, use_embeddings)
    with _default_lock, gc_pause.paused(freeze=True):  # kept for the process: gc_pause
        resolver = _default_resolvers.get(key)
        if resolver is None:
            nouns = load_nouns(settings.wordnet_dir)
            morphology: Morphology | None
            try:
                morphology = morphy_morphology(*noun_morphology_data(settings.wordnet_dir))
            except Exception as exc:  # suffix rules cover regular plurals
                log.warning(
                    "WordNet noun exception lists unavailable (%s); using suffix rules", exc
                )
                morphology = None
            try:
                tag_counts = noun_tag_counts(settings.wordnet_dir)
            except Exception as exc:  # without counts the prior falls back to sense order
                log.warning("WordNet tag counts unavailable (%s); using sense order", exc)
                tag_counts = {}
            embedder = default_embedder() if use_embeddings else None
            resolver = Resolver(
                nouns, morphology=morphology, embedder=embedder, tag_counts=tag_counts
            )
            _default_resolvers[key] = resolver
    return resolver


def grounder(settings: Settings) -> Callable[[str], str]:
    """Class name -> wnid with the shared resolver; refuses approximate matches (what
    registering a model's class names uses)."""
    resolver = default_resolver(settings)
    return lambda name: resolver.resolve_name(name, allow_approximate=False).wnid
