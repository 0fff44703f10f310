"""Grounding's records: what a grounding says, how senses are weighed, and the resolver's
working records of a name.

- `Grounding` (and `METHODS`, its `method` values): where one class name landed.
- `ScoreWeights`: the weights of the sense score (`mllgraph.ground.resolve`'s docstring).
- `Embedder`, `SenseCoverage`: what the resolver is handed (a text encoder; the hub's
  coverage of candidate senses).
- `Cand`, `Plan`: a candidate sense of a name, and a name's lexical analysis before scoring
  (internal to ground).

Pure data: imports nothing of mllgraph; must not import the resolver or anything above ground.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

# Grounding.method values. "fuzzy" is an approximate grounding made without embeddings.
METHODS = ("override", "lemma", "morphology", "context", "embedding", "fuzzy", "pinned")


@dataclass(frozen=True)
class ScoreWeights:
    """Weights of the sense score (`mllgraph.ground.resolve`'s module docstring).

    The visual, embedding and context weights were first tuned on the 1,000 ImageNet-1k class
    names (torchvision's spelling) against their wnids, with WordNet's sense order as the prior.
    The sense-frequency prior (`prior`, `prior_alpha`) replaced that order and was tuned, with
    `context`, on the dev half of `mllgraph bench grounding` (reports/grounding.md); so were
    `pictured` and `prior_untagged_order` after it.
    """

    # Weight of P(sense | lemma), WordNet's tag counts smoothed: (count + alpha / (1 + rank))
    # / (sum of counts + sum of alpha / (1 + rank)) over the lemma's senses. The pseudo-counts
    # keep an untagged sense above zero and WordNet's own order among untagged senses; a sense
    # tagged dozens of times dominates, one tagged once or twice barely. Dev half, 80 tasks
    # per size (3/10/30 names): weight 0.5-2 and alpha 1-3 within 1 point of each other;
    # a log prior lost 1-2 points; with no prior at all "coffee" among a flower became the
    # coffee bean. Context must then be strong to overrule a dominant sense.
    prior: float = 1.0
    prior_alpha: float = 3.0
    # How much WordNet's order still counts among the senses of a lemma none of whose senses
    # was tagged (pseudo-counts alpha / (1 + order * rank); 1 for a lemma with any tags): the
    # order is by tag counts, so with none it says little ("altar", "pajama").
    # Dev half, 200 tasks per size (3/10/30 names), words alone, with `pictured`: order 1 ->
    # 0.5 -> 0 ImageNet 92.3/94.2/93.7 -> 92.8/94.3/93.7 -> 93.3/95.1/94.2%, emoji names
    # 83.8/86.9/86.3 -> 84.5/86.8/86.4 -> 84.5/86.8/86.7%; imagenet-clean 87.3/88.6/88.1 ->
    # 87.0/88.5/88.1%; with the ImageNet hub within 0.3 points.
    prior_untagged_order: float = 0.0
    visual: float = 1.5
    # Weight of `depict.pictured`: the food sense of a name that also names its plant, the
    # animal sense of one that also names its food. Dev half, 200 tasks per size (3/10/30
    # names), words alone: weight 0 -> 1 emoji names 81.7/84.9/83.6 -> 83.8/86.9/86.3%, ImageNet
    # 92.2/93.6/92.6 -> 92.3/94.2/93.7%; 0.5 and 1.5-2 up to 1 point lower on emoji names, the
    # same on ImageNet.
    pictured: float = 1.0
    agree: float = 1.0
    embed: float = 6.0
    context: float = 5.0
    temperature: float = 0.5
    context_neighbours: int = 5
    min_visual: float = 0.15  # below this a sense is dropped if the name has an imageable one
    context_depth_scale: float = 10.0
    # LCA depth that counts as no shared context: sharing only `whole`, `object` or `matter`
    # (depth <= 4) with the other classes says nothing, so a produce name in a task of animals
    # is not pulled to its plant sense, and senses that fit equally leave the choice to the
    # hub's coverage (dev half, 150 tasks per size: hub mode 96.9% -> 98.3% in 10-name tasks,
    # words alone within 0.3 points, with `context` 4 -> 5).
    context_floor: float = 4.0
    # resolve_task with hub coverage: how much less context a covered sense may have than the
    # best sense and still count as fitting the task (LCA depth levels).
    hub_context_slack: float = 1.0
    # Approximate grounding: weight of the lexical similarity, and the bars a candidate must
    # clear (lexical similarity is a difflib ratio for a misspelt name, 0.7 + 0.3 * share of
    # the name for its head phrase, 0.4 * share for another word; embedding is a cosine).
    lexical: float = 3.0
    approx_embed: float = 3.0  # spelling evidence counts for more than for real lemmas
    approx_min_visual: float = 0.5  # an imageable concept (artifact, animal, plant, person ...)
    approx_typo: float = 0.85  # spelt almost like the name: accepted on spelling alone
    approx_head: float = 0.7  # the compound's head noun ("bucket hat" -> hat) ...
    approx_head_embed: float = 0.3  # ... with some agreement in meaning
    approx_word: float = 0.25  # another word of the name ...
    approx_word_embed: float = 0.5  # ... with clear agreement in meaning
    # Phrases of a multiword name by role (`words.parse_name`): a modifier of the object
    # phrase and a context phrase score this times their share of the name, and need this much
    # agreement in meaning with the whole name; a kind of the head scores the head's weight less
    # a penalty, and must match the whole name this much better (cosine) than the head sense.
    approx_modifier: float = 0.4
    approx_modifier_embed: float = 0.5
    approx_context: float = 0.2
    approx_context_embed: float = 0.5
    approx_narrower_penalty: float = 0.2
    approx_narrower_margin: float = 0.1
    # A reading of a compound whose WordNet definition or lemmas hold all the name's modifier
    # words scores this, plus this times the share its lemmas hold, and a kind of the head
    # that does is kept without the meaning margin ("two-hump camel": the Bactrian camel is
    # "two-humped", the Arabian "one-humped"); only where at most
    # `approximate.MAX_DEFINED_READINGS` readings do ("deciduous tree" is no oak).
    approx_defined: float = 1.0


# Approximate grounding: how a candidate concept was reached from the name, and the name of its
# structural term among the score's terms (`Grounding.reasons`).
APPROXIMATE_ROLES: dict[str, str] = {
    "spelling": "lexical",  # the whole name, or one word of it, misspelt
    "head": "head_phrase",  # a sub-phrase holding the head noun ("glass" of "magnifying glass")
    "modifier": "modifier_phrase",  # another word of the object phrase ("monkey" of "monkey face")
    "context": "context_phrase",  # after a preposition or participle ("rain" in "... with rain")
    "narrower": "narrower",  # a kind of the head ("bullet train" for "high-speed train")
}


class Embedder(Protocol):
    def encode(self, texts: list[str]) -> np.ndarray: ...


# Candidate wnids -> how the hub covers each (0..1); see `mllgraph.ground.resolve`.
SenseCoverage = Callable[[list[str]], Mapping[str, float]]


@dataclass
class Grounding:
    """Where one class name landed in WordNet, and how sure we are."""

    name: str
    wnid: str
    concept_name: str
    score: float  # confidence in [0, 1]; 1.0 for pinned/override/unambiguous names
    ambiguous: bool  # the name had more than one candidate concept
    approximate: bool  # WordNet lacks the name: nearest concept, not an exact one
    pinned: bool
    alternatives: list[tuple[str, str, float]] = field(default_factory=list)
    method: str = "lemma"
    # Hub coverage of the chosen sense and its alternatives (wnid -> 0..1), when known, and
    # whether coverage changed the choice (the best sense without it was another one).
    coverage: dict[str, float] = field(default_factory=dict)
    hub_preferred: bool = False
    # The chosen sense's terms of the score (ambiguous names): its WordNet tag count and
    # smoothed prior, and what each term added ('prior', 'visual', 'pictured' where not 0,
    # 'agree', 'embed', 'context'), beside the same terms of the runner-up sense
    # ('runner_up_*').
    reasons: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["alternatives"] = [
            {"wnid": w, "concept_name": c, "score": s} for w, c, s in self.alternatives
        ]
        return d


# -- internal candidate records ---------------------------------------------------------------


@dataclass
class Cand:
    wnid: str
    rank: int  # position among the senses of the lemma it came from (0 = most frequent)
    morph: bool  # reached through morphology (a plural)
    alt: int  # which "/"/"," alternative produced it (0 = the first)
    count: int = 0  # WordNet tag count of this sense of that lemma
    prior: float = 1.0  # smoothed share of the lemma's tag counts (`ScoreWeights.prior`)
    agree: float = 0.0  # share of the alternatives that have it (or a relative) as a candidate
    lexical: float = 0.0  # approximate grounding: spelling similarity to the name
    # Approximate grounding: how the name reached it (`APPROXIMATE_ROLES`): misspelt as a whole,
    # a sub-phrase that is the name's head, a modifier or its context, or a narrower concept.
    role: str = ""
    # Approximate grounding: its definition holds the name's modifiers (1 + the share its
    # lemmas hold), where that tells it from the other readings; else 0.
    defined: float = 0.0
    hub: float = 0.0  # the hub's coverage of this sense, 0..1
    score: float = 0.0
    terms: dict[str, float] = field(default_factory=dict)  # score term -> what it added

    @property
    def lexical_term(self) -> str:
        """The name of this candidate's lexical term among the score's terms (its role's)."""
        return APPROXIMATE_ROLES.get(self.role, "lexical")


@dataclass
class Plan:
    """A name's lexical analysis, before any scoring."""

    name: str
    query: str  # the text embedded for the name ("a photo of a ...")
    fixed: str | None = None  # override wnid
    cands: list[Cand] = field(default_factory=list)
    approximate: bool = False
