"""The resolver's noun morphology (`words.morphy_morphology` over
`graph.wordnet.noun_morphology_data`) gives exactly what nltk's morphy gave, on every WordNet
noun lemma, on regular and irregular plurals of them, and on every name the grounding tests
use — so replacing nltk's reader (tens of seconds to build) changes no grounding."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

from mllgraph.graph.wordnet import noun_morphology_data, prepare_nltk_data
from mllgraph.ground.words import PAREN, WORD, fold, morphy_morphology, nltk_morphology, to_key
from mllgraph.settings import Settings

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def wordnet_dir() -> Path:
    return Settings.from_env().wordnet_dir


@pytest.fixture(scope="module")
def nltk_forms(wordnet_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """nltk's morphy over the same files (its multilingual mapping skipped: only OMW
    look-ups read it, and it takes most of the reader's set-up)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class Reader(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:
            return None

    nltk_data = prepare_nltk_data(wordnet_dir, tmp_path_factory.mktemp("nltk_data"))
    if str(nltk_data) not in nltk.data.path:
        nltk.data.path.insert(0, str(nltk_data))
    with warnings.catch_warnings():  # "multilingual functions are not available": no OMW here
        warnings.simplefilter("ignore", UserWarning)
        reader = Reader(str(nltk_data / "corpora" / "wordnet"), None)
    return nltk_morphology(reader)


@pytest.fixture(scope="module")
def ours(wordnet_dir: Path):
    return morphy_morphology(*noun_morphology_data(wordnet_dir))


def _plurals(lemma: str) -> list[str]:
    out = [lemma + "s", lemma + "es"]
    if lemma.endswith("y"):
        out.append(lemma[:-1] + "ies")
    if lemma.endswith("f"):
        out.append(lemma[:-1] + "ves")
    if lemma.endswith("man"):
        out.append(lemma[:-3] + "men")
    return out


def _mismatches(words, ours, theirs) -> list[tuple[str, list[str], list[str]]]:
    bad = []
    for w in words:
        a, b = list(ours(w)), list(theirs(w))
        if a != b:
            bad.append((w, a, b))
    return bad


def test_the_same_forms_as_nltk_on_every_noun_lemma_and_its_plurals(
    wordnet_dir: Path, ours, nltk_forms
) -> None:
    lemmas, exceptions = noun_morphology_data(wordnet_dir)
    assert len(lemmas) == 117_798  # WordNet 3.0's noun lemmas (82,115 synsets)
    words = sorted(lemmas)
    assert _mismatches(words, ours, nltk_forms) == []
    plurals = sorted({p for w in words for p in _plurals(w)})
    assert _mismatches(plurals, ours, nltk_forms) == []
    assert _mismatches(sorted(exceptions), ours, nltk_forms) == []


def test_the_same_forms_as_nltk_on_the_grounding_tests_names(ours, nltk_forms) -> None:
    names: set[str] = set()
    for test in ("test_ground.py", "test_sense_coverage.py", "test_fashion.py"):
        path = TESTS / test
        if not path.is_file():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)
    words: set[str] = set()
    for name in names:
        for part in [name, *PAREN.findall(name), *name.replace(",", "/").split("/")]:
            key = to_key(fold(part))
            words.update([key, key.split("_")[-1], *WORD.findall(fold(part))])
    words.discard("")
    assert len(words) > 300
    assert _mismatches(sorted(words), ours, nltk_forms) == []


def test_irregular_plurals_and_rules(ours) -> None:
    assert list(ours("mice")) == ["mouse"]
    assert list(ours("geese")) == ["goose"]
    assert list(ours("wolves")) == ["wolf"]  # nltk's "ves" -> "f", not in the suffix rules
    assert list(ours("sandals")) == ["sandal"]
    assert list(ours("glasses")) == ["glasses", "glass"]
    assert list(ours("sneakerz")) == []
