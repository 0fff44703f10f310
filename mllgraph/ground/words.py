"""Class-name text: normalisation, lemma keys and noun morphology (pure: no lexicon).

- Normalisation: `fold` (Unicode, case, accents, quotes), `normalise_name` (the canonical
  form the override file's `names` keys are written in), `compact` (letters and digits only),
  `to_key` (a phrase's lemma key), the patterns the resolver splits names with (`PAREN`,
  `WORD`) and the `FILLER_WORDS` dropped before approximate matching; `describe` names a
  class in messages.
- Morphology: `suffix_morphology` (WordNet's noun detachment rules, unfiltered),
  `morphy_morphology` (nltk's morphy for nouns, irregular plurals included, over the lemma
  set and exception lists `graph.wordnet.noun_morphology_data` reads) and `nltk_morphology`
  (the same through an nltk reader), each a `Morphology`.

Imports nothing of mllgraph; the rest of ground builds on it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Morphology = Callable[[str], Iterable[str]]

# -- text normalisation -----------------------------------------------------------------------

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'", "\u2013": "-"})
PAREN = re.compile(r"\(([^()]*)\)")
WORD = re.compile(r"[a-z0-9]+(?:['.\-][a-z0-9]+)*")
_NOT_COMPACT = re.compile(r"[^a-z0-9]")
# Words that carry no meaning in a class name; dropped before approximate matching.
FILLER_WORDS = frozenset({
    "a", "an", "the", "of", "my", "some", "thing", "things", "stuff", "object", "objects",
    "item", "items", "type", "kind", "sort", "photo", "picture", "image",
})  # fmt: skip


# English function words, for reading a name's structure (`parse_name`). A preposition starts
# the name's context ("umbrella with rain drops", "leaf in wind"); a negation a state ("hourglass
# not done"); articles, possessives and conjunctions join words without naming anything.
PREPOSITIONS = frozenset({
    "about", "above", "across", "after", "against", "along", "among", "around", "at", "before",
    "behind", "below", "beneath", "beside", "between", "beyond", "by", "during", "for", "from",
    "in", "inside", "into", "near", "of", "off", "on", "onto", "out", "outside", "over",
    "through", "to", "toward", "towards", "under", "underneath", "upon", "with", "within",
    "without",
})  # fmt: skip
NEGATIONS = frozenset({"not", "no", "non"})
JOINING_WORDS = frozenset({
    "a", "an", "the", "and", "or", "my", "your", "his", "her", "its", "our", "their", "some",
    "this", "that", "these", "those",
})  # fmt: skip
# Nouns that only say "a picture of" or "some kind of" something: dropped with a following "of".
NOISE_NOUNS = frozenset({
    "thing", "things", "stuff", "object", "objects", "item", "items", "type", "kind", "sort",
    "photo", "picture", "image",
})  # fmt: skip
FUNCTION_WORDS = PREPOSITIONS | NEGATIONS | JOINING_WORDS

PhraseRole = Literal["head", "modifier", "context"]


@dataclass(frozen=True)
class NameParse:
    """A multiword name read as English noun phrases: `words[:object_end]` name the object,
    the rest (after a preposition, a negation or a trailing participle) its context or state;
    `words[head]` is the object phrase's head noun (its last content word: a "bucket hat" is a
    hat), any other word of the object phrase a modifier."""

    words: tuple[str, ...]
    object_end: int
    head: int

    def role(self, start: int, end: int) -> PhraseRole:
        """The role of the sub-phrase `words[start:end]`: it names the object (it holds the
        head noun), qualifies it (a modifier), or names its context."""
        if start >= self.object_end:
            return "context"
        return "head" if start <= self.head < end else "modifier"

    def phrases(self) -> list[tuple[int, int]]:
        """Every sub-phrase that starts and ends on a content word (a possible lemma)."""
        n = len(self.words)
        content = [w not in FUNCTION_WORDS for w in self.words]
        return [
            (i, j) for i in range(n) for j in range(i + 1, n + 1) if content[i] and content[j - 1]
        ]


def parse_name(norm: str, is_thing: Callable[[str], bool]) -> NameParse:
    """Read a normalised name's structure (see `NameParse`); `is_thing` tells a word or
    phrase (a lemma key) that names a concrete thing (a noun lemma, or the plural of one, with
    an imageable sense) from one that does not, so that a participle after the object ("leaf
    fluttering in wind", "glass tilted left") is not taken for its head while nouns ending
    alike ("office building", "guitar string") and compounds ("flower playing cards") are.
    Possessives count as their noun ("worker's")."""
    # Hyphenated words are split into their parts ("two-hump camel"), remembered as such: a
    # participle inside one ("snow-capped") modifies the noun after it, it starts no context.
    raw: list[tuple[str, bool]] = []
    for token in WORD.findall(norm):
        parts = [p.removesuffix("'s").strip("'") for p in token.split("-")]
        parts = [p for p in parts if p]
        raw.extend((p, len(parts) > 1) for p in parts)
    kept: list[tuple[str, bool]] = []
    skip_of = False
    for w, hyphened in raw:
        if w in NOISE_NOUNS and len(raw) > 1:
            skip_of = True
            continue
        if skip_of and w == "of":
            skip_of = False
            continue
        skip_of = False
        kept.append((w, hyphened))
    if not any(w not in FUNCTION_WORDS for w, _ in kept):
        kept = raw
    # A leading article or possessive says nothing about the structure.
    while len(kept) > 1 and kept[0][0] in JOINING_WORDS:
        kept.pop(0)
    words = [w for w, _ in kept]

    def starts_context(i: int) -> bool:
        w, hyphened = kept[i]
        if w in PREPOSITIONS or w in NEGATIONS:
            return True
        participle = len(w) >= 5 and (w.endswith("ing") or w.endswith("ed"))
        if not participle or hyphened:
            return False
        # Not when it begins a compound that names a thing ("flower playing cards").
        end = next((j for j in range(i, len(words)) if words[j] in FUNCTION_WORDS), len(words))
        return not any(is_thing("_".join(words[i:j])) for j in range(i + 1, end + 1))

    object_end = len(words)
    for i in range(1, len(words)):
        if any(x not in FUNCTION_WORDS for x in words[:i]) and starts_context(i):
            object_end = i
            break
    head = next(
        (i for i in range(object_end - 1, -1, -1) if words[i] not in FUNCTION_WORDS),
        object_end - 1,
    )
    return NameParse(tuple(words), object_end, max(head, 0))


def fold(text: str) -> str:
    """NFKC, lower case, accents dropped (WordNet lemmas are ASCII), quotes unified."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def normalise_name(name: str) -> str:
    """Canonical form of a class name, as the override file's `names` keys are written."""
    text = fold(name).replace("_", " ")
    text = " ".join(text.split())
    text = re.sub(r"\s*([/,;])\s*", r"\1", text)
    return text.strip(" .;:!?\"'")


def compact(key: str) -> str:
    """Spelling-insensitive key: letters and digits only ('T-shirt' == 'tshirt' == 't shirt')."""
    return _NOT_COMPACT.sub("", key.lower())


def to_key(text: str) -> str:
    """Lemma key of a phrase: words joined by underscores, outer punctuation dropped."""
    words = text.replace("_", " ").split()
    return "_".join(w for w in (w.strip("\"'.,;:!?()[]{}<>") for w in words) if w)


def describe(index: int, name: str) -> str:
    return f"class {index} ({name!r})"


def stem(word: str) -> str:
    """A crude stem, enough to match a name's words against WordNet's definitions: plurals
    and -ed/-ing/-al endings off, a doubled final consonant undone ("babies" -> "baby",
    "humped" -> "hump", "potted" -> "pot", "flats" -> "flat", "electrical" -> "electric")."""
    w = word.lower()
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) >= 7 and w.endswith("al"):  # "electrical" -> "electric"
        return w[:-2]
    for suffix in ("ing", "ed"):
        if len(w) - len(suffix) >= 3 and w.endswith(suffix):
            w = w[: -len(suffix)]
            if len(w) >= 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":
                w = w[:-1]
            return w
    if len(w) > 3 and w.endswith(("ses", "xes", "zes", "ches", "shes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def stems_of(text: str) -> frozenset[str]:
    """The stems of a text's words, hyphenated and underscored ones split ("two-humped")."""
    return frozenset(stem(x) for x in re.findall(r"[a-z0-9]+", fold(text).replace("_", " ")))


# -- morphology fallback ---------------------------------------------------------------------

# WordNet's noun detachment rules (morphy(7WN)); used for user-added lemmas and when no nltk
# reader is given. nltk adds the irregular forms of noun.exc (mice, geese, ...).
_NOUN_SUFFIXES = (
    ("s", ""),
    ("ses", "s"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
)


def suffix_morphology(word: str) -> list[str]:
    """Candidate base forms by WordNet's noun suffix rules (unfiltered)."""
    return [word[: -len(old)] + new for old, new in _NOUN_SUFFIXES if word.endswith(old)]


# nltk's noun substitutions (WordNetCorpusReader.MORPHOLOGICAL_SUBSTITUTIONS["n"]), in its
# order: the rules above plus "ves" -> "f" (wolves -> wolf) after "ses".
_MORPHY_NOUN_SUFFIXES = (*_NOUN_SUFFIXES[:2], ("ves", "f"), *_NOUN_SUFFIXES[2:])


def morphy_morphology(
    lemmas: Collection[str], exceptions: Mapping[str, Sequence[str]]
) -> Morphology:
    """nltk's `_morphy(word, "n")` without nltk's reader: the word itself and, if it is in the
    exception lists, its listed base forms, else one pass of the substitution rules; kept
    if they are noun lemmas, in that order, without repeats. `lemmas` are WordNet's own (the
    filter does not see lemmas users add; the resolver's suffix rules cover those)."""

    def forms(word: str) -> list[str]:
        if word in exceptions:
            bases = list(exceptions[word])
        else:
            bases = [
                word[: -len(old)] + new for old, new in _MORPHY_NOUN_SUFFIXES if word.endswith(old)
            ]
        return [f for f in dict.fromkeys([word, *bases]) if f in lemmas]

    return forms


def nltk_morphology(reader: Any) -> Morphology:
    """All base forms nltk's morphy knows for a noun (exceptions + rules, filtered)."""

    def forms(word: str) -> list[str]:
        try:
            return list(reader._morphy(word, "n"))
        except AttributeError:  # a reader without the private helper: first form only
            base = reader.morphy(word, "n")
            return [base] if base else []

    return forms
