"""The reviewed emoji -> WordNet 3.0 concept file (`mllgraph/hubs/emoji/concepts.tsv`): well
formed, every concept a real WordNet noun synset under its own name, enough concepts per
group, rebuilt exactly from the committed candidates and review, and no reserved style named.
Needs WordNet's files only: no server, no npm."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import pytest

from mllgraph.errors import InvalidArgument
from mllgraph.graph.wordnet import WordNetNouns, load_nouns
from mllgraph.hubs.emoji.build_concepts import (
    CHANGES,
    CONCEPT_COLUMNS,
    MIN_STYLES,
    STYLES,
    finalize,
    nested_concepts,
    read_tsv,
)
from mllgraph.settings import Settings

FOLDER = Path(__file__).resolve().parents[1] / "mllgraph" / "hubs" / "emoji"
CONCEPTS = FOLDER / "concepts.tsv"
HEXCODE = re.compile(r"^[0-9A-F]{4,6}(-[0-9A-F]{4,6})*$")
WNID = re.compile(r"^n\d{8}$")
MIN_CONCEPTS = 300
MIN_PER_GROUP = 5
# Kept for an outside evaluation (Google/Noto) or under restrictive licences (Apple, Facebook).
RESERVED = re.compile(r"google|noto|facebook|emoji-datasource-apple|has_img_apple", re.I)


@pytest.fixture(scope="module")
def nouns() -> WordNetNouns:
    return load_nouns(Settings.from_env().wordnet_dir)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    with CONCEPTS.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        assert tuple(reader.fieldnames or ()) == CONCEPT_COLUMNS
        return list(reader)


def test_every_row_has_every_field(rows: list[dict[str, str]]) -> None:
    assert rows
    for i, row in enumerate(rows, start=2):
        assert None not in row, f"line {i} has extra fields"
        empty = [c for c in CONCEPT_COLUMNS if not (row[c] or "").strip()]
        assert not empty, f"line {i} ({row['hexcode']}) lacks {empty}"


def test_lines_split_on_tabs_alone() -> None:
    """Readers may split lines on tabs: no field is quoted or holds a quote mark."""
    lines = CONCEPTS.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, start=1):
        assert len(line.split("\t")) == len(CONCEPT_COLUMNS) and '"' not in line, f"line {i}"


def test_hexcodes_are_openmoji_style_and_unique(rows: list[dict[str, str]]) -> None:
    seen: set[str] = set()
    for row in rows:
        assert HEXCODE.match(row["hexcode"]), row["hexcode"]
        assert row["hexcode"] not in seen, f"{row['hexcode']} mapped twice"
        seen.add(row["hexcode"])


def test_each_wnid_is_a_wordnet_noun_synset_of_that_name(
    rows: list[dict[str, str]], nouns: WordNetNouns
) -> None:
    for row in rows:
        assert WNID.match(row["wnid"]), row["wnid"]
        assert row["wnid"] in nouns.synsets, f"{row['hexcode']}: {row['wnid']} not in data.noun"
        assert nouns.get(row["wnid"]).name == row["synset"], row["hexcode"]


def test_enough_concepts_overall_and_per_group(rows: list[dict[str, str]]) -> None:
    wnids = {r["wnid"] for r in rows}
    assert len(wnids) >= MIN_CONCEPTS
    per_group: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        per_group[r["group"]].add(r["wnid"])
    small = {g: len(w) for g, w in per_group.items() if len(w) < MIN_PER_GROUP}
    assert not small, f"groups with fewer than {MIN_PER_GROUP} concepts: {small}"


def test_a_concept_belongs_to_one_group(rows: list[dict[str, str]]) -> None:
    groups: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        groups[r["wnid"]].add(r["group"])
    assert not {w: g for w, g in groups.items() if len(g) > 1}


def test_each_reason_names_its_synset_and_says_why(rows: list[dict[str, str]]) -> None:
    for r in rows:
        head, sep, why = r["reason"].partition(": ")
        assert head.startswith(r["synset"] + " '") and sep and why.strip(), r["hexcode"]


def test_the_file_is_rebuilt_exactly_from_candidates_and_review(
    rows: list[dict[str, str]], nouns: WordNetNouns
) -> None:
    candidates = read_tsv(FOLDER / "candidates.tsv")
    rebuilt, counts = finalize(candidates, read_tsv(FOLDER / "review.tsv"), nouns)
    assert rebuilt == rows
    assert sum(counts[k] for k in CHANGES) == len(rows)


def test_every_emoji_is_drawn_in_enough_styles(rows: list[dict[str, str]]) -> None:
    candidates = {c["hexcode"]: c for c in read_tsv(FOLDER / "candidates.tsv")}
    for r in rows:
        cand = candidates[r["hexcode"]]
        styles = cand["styles"].split(",")
        assert set(styles) <= set(STYLES) and len(styles) >= MIN_STYLES, r["hexcode"]
        assert cand["name"] == r["name"], r["hexcode"]


def test_no_reserved_style_is_named() -> None:
    for name in ("concepts.tsv", "candidates.tsv", "review.tsv", "README.md"):
        text = (FOLDER / name).read_text(encoding="utf-8")
        assert not RESERVED.search(text), f"{name} names a reserved emoji style"


def test_finalize_refuses_bad_decisions(nouns: WordNetNouns) -> None:
    cand = {"hexcode": "1F415", "name": "dog", "synset": "dog.n.01", "method": "lemma"}
    good = {
        "hexcode": "1F415",
        "synset": "dog.n.01",
        "group": "mammals",
        "change": "kept",
        "note": "the animal",
    }
    rows, counts = finalize([cand], [good], nouns)
    assert rows[0]["wnid"] == "n02084071" and counts["kept"] == 1
    assert rows[0]["reason"].startswith("dog.n.01 'a member of the genus Canis")
    with pytest.raises(InvalidArgument, match="not a WordNet 3.0 noun synset"):
        finalize([cand], [dict(good, synset="dog.n.99")], nouns)
    with pytest.raises(InvalidArgument, match="decided twice"):
        finalize([cand], [good, good], nouns)
    with pytest.raises(InvalidArgument, match="not among the candidates"):
        finalize([cand], [dict(good, hexcode="1F408")], nouns)
    with pytest.raises(InvalidArgument, match="required"):
        finalize([cand], [dict(good, note=" ")], nouns)
    # The change must fit the candidate: a different synset is refined or wrong, never kept.
    with pytest.raises(InvalidArgument, match="does not fit"):
        finalize([cand], [dict(good, synset="frump.n.01")], nouns)
    rows, counts = finalize([cand], [dict(good, synset="frump.n.01", change="wrong")], nouns)
    assert counts["wrong"] == 1 and counts["wrong (lemma)"] == 1


def test_nested_concepts_names_each_concept_under_another(nouns: WordNetNouns) -> None:
    rows = [
        {"wnid": "n02084071"},  # dog.n.01
        {"wnid": "n02113978"},  # mexican_hairless.n.01, under dog
        {"wnid": "n02121620"},  # cat.n.01
    ]
    assert nested_concepts(rows, nouns) == [("mexican_hairless.n.01", "dog.n.01")]
