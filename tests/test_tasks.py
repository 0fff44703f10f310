"""Task suites: parsing, refusals with messages naming what is wrong, the shipped suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mllgraph.errors import InvalidArgument
from mllgraph.eval.tasks import load_suite, parse_suite
from mllgraph.hubs.fashion.data import FASHION_CLASSES


def _suite(*tasks: dict) -> dict:
    return {"name": "s", "tasks": list(tasks)}


def _two(name: str, first: dict, second: dict) -> dict:
    return _suite({"name": name, "classes": [first, second]})


FOOTWEAR = {
    "name": "fw",
    "classes": [
        {"name": " footwear ", "fashion": ["Sandal", "sneaker", "Ankle boot"]},
        {"name": "bag", "fashion": ["Bag"]},
    ],
}


def test_a_good_suite():
    suite = parse_suite(_suite(FOOTWEAR))
    assert suite.name == "s" and len(suite.tasks) == 1
    task = suite.tasks[0]
    assert task.names == ["footwear", "bag"]  # trimmed
    ids = [FASHION_CLASSES.index(c) for c in ("Sandal", "Sneaker", "Ankle boot")]
    assert task.classes[0].fashion == tuple(ids)  # case-insensitive Fashion names
    assert task.label_map() == {**dict.fromkeys(ids, 0), FASHION_CLASSES.index("Bag"): 1}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be an object with a list under 'tasks'"),
        ({"tasks": []}, "has no tasks"),
        (_suite({"name": "e", "classes": []}), "empty task"),
        (_suite({"name": "one", "classes": [{"name": "a", "fashion": ["Bag"]}]}), "two classes"),
        (
            _two("u", {"name": "a", "fashion": ["Hat"]}, FOOTWEAR["classes"][1]),
            "unknown Fashion-MNIST class 'Hat'",
        ),
        (
            _two("n", {"name": " ", "fashion": ["Bag"]}, FOOTWEAR["classes"][0]),
            "needs a non-empty 'name'",
        ),
        (
            _two("f", {"name": "a", "fashion": []}, FOOTWEAR["classes"][1]),
            "needs a non-empty 'fashion' list",
        ),
        (
            _two("d", {"name": "a", "fashion": ["Bag"]}, FOOTWEAR["classes"][1]),
            "'Bag' is claimed by both 'a' and 'bag'",
        ),
        (_suite(FOOTWEAR, FOOTWEAR), "duplicate task name"),
        (_suite({**FOOTWEAR, "split": "train"}), "split is 'train'; expected one of dev, test"),
    ],
)
def test_refusals_name_what_is_wrong(data, message):
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
        parse_suite(data, "x.json")


def test_malformed_json_names_line_and_column(tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text('{"tasks": [\n  {"name": "a",,}\n]}')
    with pytest.raises(InvalidArgument, match=r"malformed JSON at line 2 column"):
        load_suite(path)
    with pytest.raises(InvalidArgument, match="no such file"):
        load_suite(tmp_path / "missing.json")


def test_a_suite_file_round_trips(tmp_path: Path):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(_suite(FOOTWEAR)))
    assert load_suite(path) == parse_suite(_suite(FOOTWEAR), str(path))


def test_halves():
    suite = parse_suite(
        _suite(
            {**FOOTWEAR, "split": "dev"},
            {**FOOTWEAR, "name": "t", "split": "test"},
            {**FOOTWEAR, "name": "none"},
        )
    )
    assert [t.split for t in suite.tasks] == ["dev", "test", None]
    assert [t.name for t in suite.half("dev").tasks] == ["fw"]
    assert [t.name for t in suite.half("test").tasks] == ["t"]
    with pytest.raises(InvalidArgument, match="split is 'all'"):
        suite.half("all")


def test_the_shipped_suite_is_split_in_two_halves_with_every_kind_of_rewording():
    suite = load_suite()
    assert len({t.name for t in suite.tasks}) == len(suite.tasks)
    assert all(t.split in ("dev", "test") for t in suite.tasks)
    dev, test = suite.half("dev").tasks, suite.half("test").tasks
    assert abs(len(dev) - len(test)) <= 1
    kinds = ("british", "casing", "punctuation", "hypernyms", "synonyms", "plurals")
    for half in (dev, test):
        reworded = {t.name.split("-")[1] for t in half if t.name.startswith("reworded-")}
        assert reworded == set(kinds)
