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
from typing import Any

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
