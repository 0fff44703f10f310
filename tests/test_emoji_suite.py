"""The emoji task suite (mllgraph/eval/tasks_emoji.json): its halves hold disjoint concepts
and disjoint concept groups, no task holds a concept under another, tasks with an unprobed
class really have one nothing covers, and the stored file is what its builder makes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mllgraph.errors import InvalidArgument
from mllgraph.eval import emoji_suite
from mllgraph.hubs.emoji import build_concepts

CONCEPTS = Path(build_concepts.__file__).with_name("concepts.tsv")


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return build_concepts.read_tsv(CONCEPTS)


@pytest.fixture(scope="module")
def facts(rows: list[dict[str, str]]) -> tuple[dict[str, frozenset[str]], set[str]]:
    return emoji_suite.wordnet_facts({r["wnid"] for r in rows})


def test_halves_hold_disjoint_concepts_and_groups(rows: list[dict[str, str]]) -> None:
    suite = emoji_suite.load_suite()
    assert emoji_suite.split_violations(suite) == []
    group_of = {r["wnid"]: r["group"] for r in rows}
    assert not set(suite.groups["dev"]) & set(suite.groups["test"])
    for task in suite.tasks:
        assert {group_of[w] for w in task.wnids} <= set(suite.groups[task.split])
    halves = {t.split for t in suite.tasks}
    assert halves == {"dev", "test"}


def test_split_violations_are_found() -> None:
    suite = emoji_suite.load_suite()
    dev = next(t for t in suite.tasks if t.split == "dev")
    test = next(t for t in suite.tasks if t.split == "test")
    leaked = emoji_suite.EmojiTask("leak", (*test.classes[:2], dev.classes[0]), "test")
    bad = emoji_suite.EmojiSuite("bad", (*suite.tasks, leaked), suite.unprobed, suite.groups)
    assert emoji_suite.split_violations(bad) == [dev.classes[0].wnid]


def test_tasks_sizes_names_and_no_nested_pair(
    rows: list[dict[str, str]], facts: tuple[dict[str, frozenset[str]], set[str]]
) -> None:
    ancestors, _ = facts
    names = {}
    for r in rows:
        names.setdefault(r["wnid"], set()).add(r["name"])
    suite = emoji_suite.load_suite()
    sizes = {len(t.classes) for t in suite.tasks}
    assert min(sizes) >= 3 and max(sizes) <= 30 and len(sizes) >= 3
    for task in suite.tasks:
        assert emoji_suite.nested_in(task, ancestors) == [], task.name
        for c in task.classes:
            assert c.name in names[c.wnid]
    # the check itself finds a nested pair (dog and poodle)
    poodle = next(r["wnid"] for r in rows if r["synset"] == "poodle.n.01")
    dog = next(r["wnid"] for r in rows if r["synset"] == "dog.n.01")
    pair = emoji_suite.EmojiTask(
        "p", (emoji_suite.EmojiClass("dog", dog), emoji_suite.EmojiClass("poodle", poodle))
    )
    assert emoji_suite.nested_in(pair, ancestors) == [(poodle, dog)]


def test_unprobed_classes_have_no_imagenet_class_under_them(
    facts: tuple[dict[str, frozenset[str]], set[str]],
) -> None:
    _, imagenet_under = facts
    suite = emoji_suite.load_suite()
    assert suite.unprobed and not suite.unprobed & imagenet_under
    for half in ("dev", "test"):
        with_one = [
            t for t in suite.tasks if t.split == half and len(set(t.wnids) & suite.unprobed) == 1
        ]
        assert len(with_one) >= 2
    # the other tasks hold none
    assert all(("uncovered" in t.name) == bool(set(t.wnids) & suite.unprobed) for t in suite.tasks)
    # a small run (first task of each half) still holds one
    small = suite.limited(4)
    assert (
        len(small.tasks) == 8 and sum(bool(set(t.wnids) & suite.unprobed) for t in small.tasks) == 2
    )
    assert {len(t.classes) for t in small.tasks} == {3, 5, 10}


def test_stored_suite_is_what_the_builder_makes(
    rows: list[dict[str, str]], facts: tuple[dict[str, frozenset[str]], set[str]]
) -> None:
    stored = json.loads(Path(emoji_suite.__file__).with_name(emoji_suite.SUITE_FILE).read_text())
    assert emoji_suite.build_suite(rows, *facts, seed=stored["seed"]) == stored


def test_bad_suites_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="no such file"):
        emoji_suite.load_suite(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(InvalidArgument, match="malformed JSON"):
        emoji_suite.load_suite(bad)
    one = {"name": "t", "split": "dev", "classes": [{"name": "dog", "wnid": "n02084071"}]}
    with pytest.raises(InvalidArgument, match="at least two classes"):
        emoji_suite.parse_suite({"tasks": [one]})
    twice = {**one, "classes": one["classes"] * 2}
    with pytest.raises(InvalidArgument, match="given twice"):
        emoji_suite.parse_suite({"tasks": [twice]})
    with pytest.raises(InvalidArgument, match="split"):
        emoji_suite.parse_suite({"tasks": [{**twice, "split": "train"}]})
    with pytest.raises(InvalidArgument, match="tasks per half"):
        emoji_suite.load_suite().limited(0)
