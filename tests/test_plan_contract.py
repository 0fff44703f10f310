"""The plan document's checks (mllgraph/plan/document.py), pure: class names and the two shapes
of a Plan message's `combination_json`. The gRPC side is in tests/test_inference.py."""

from __future__ import annotations

import json
import unicodedata

import pytest

from mllgraph.errors import FailedPrecondition, InvalidArgument
from mllgraph.plan import document as plan_doc


def test_names_are_normalised_to_nfc() -> None:
    decomposed = "cafe\u0301 au lait"  # e + combining acute accent
    name = plan_doc.check_class_name(decomposed, "class 0")
    assert name == unicodedata.normalize("NFC", decomposed) == "caf\u00e9 au lait"
    assert plan_doc.check_class_name("Straße", "class 0") == "Straße"


@pytest.mark.parametrize(
    ("name", "code_point"),
    [
        ("tote\u200bbag", "U+200B"),  # zero-width space
        ("sand\u200dal", "U+200D"),  # zero-width joiner
        ("\u202elanads", "U+202E"),  # right-to-left override
        ("\ufeffsandal", "U+FEFF"),  # byte order mark / zero-width no-break space
        ("bag\u2066", "U+2066"),  # left-to-right isolate
        ("clo\x00g", "U+0000"),
        ("tote\nbag", "U+000A"),
        ("tote\u2028bag", "U+2028"),  # line separator
    ],
)
def test_control_and_format_characters_are_named(name: str, code_point: str) -> None:
    with pytest.raises(InvalidArgument, match="control characters") as info:
        plan_doc.check_class_name(name, "classes[1].name")
    assert code_point in str(info.value) and "classes[1].name" in str(info.value)


def test_length_is_counted_after_normalising() -> None:
    at_limit = "e\u0301" * plan_doc.MAX_NAME_CHARS  # twice as long before NFC
    assert len(plan_doc.check_class_name(at_limit, "c")) == plan_doc.MAX_NAME_CHARS
    with pytest.raises(InvalidArgument, match="characters long"):
        plan_doc.check_class_name("x" * (plan_doc.MAX_NAME_CHARS + 1), "c")
    with pytest.raises(InvalidArgument, match="characters long"):
        plan_doc.check_class_name("x" * 1_000_000, "c")


COMBINATION = {"schema_version": plan_doc.PLAN_SCHEMA_VERSION, "plan": {"assignment": []}}


def test_combination_json_reads_both_shapes() -> None:
    whole = {"plan_id": "plan-1", "schema_version": 1, "classes": [], "combination": COMBINATION}
    assert plan_doc.read_combination_json(json.dumps(whole)) == COMBINATION
    assert plan_doc.read_combination_json(json.dumps(COMBINATION)) == COMBINATION


@pytest.mark.parametrize(
    ("text", "error", "says"),
    [
        ("", InvalidArgument, "empty"),
        ("{not json", InvalidArgument, "not JSON"),
        ("[" * 100_000 + "]" * 100_000, InvalidArgument, "nested too deeply"),
        ('{"a":' * 50_000 + "1" + "}" * 50_000, InvalidArgument, "nested too deeply"),
        ("[1]", InvalidArgument, "JSON object"),
        ('{"plan": {}}', InvalidArgument, "schema_version"),
    ],
)
def test_malformed_combination_json(text: str, error: type[Exception], says: str) -> None:
    with pytest.raises(error, match=says):
        plan_doc.read_combination_json(text)


@pytest.mark.parametrize(
    ("combination", "error"),
    [
        ({"schema_version": 1}, InvalidArgument),
        ({"schema_version": 1, "plan": []}, InvalidArgument),
        ({"schema_version": 1, "plan": {"assignment": 3}}, InvalidArgument),
        ({"schema_version": 3, "plan": {}}, FailedPrecondition),
        ({"schema_version": [1], "plan": {}}, FailedPrecondition),
        ({"schema_version": 1, "plan": {"assignment": [{}] * 1001}}, InvalidArgument),
    ],
)
def test_malformed_combinations_are_domain_errors(combination: object, error: type) -> None:
    doc = {"plan_id": "p", "classes": [{"name": "a"}], "combination": combination}
    with pytest.raises(error):
        plan_doc.parse_plan(doc)


def test_an_uncovered_class_says_whether_the_hub_has_heads_for_it() -> None:
    """ "no head": no candidate head in the hub; "not chosen": candidates, left out."""
    import numpy as np

    from mllgraph.combine.rule import ClassAssignment, HeadGroup, default_params
    from mllgraph.ground.records import Grounding
    from mllgraph.plan.request import SelectOptions, TaskClass, Timings
    from mllgraph.select import chco

    names = ["boot", "kilt", "democracy"]
    assignment = [
        ClassAssignment(0, (HeadGroup("m@1", (0,), "exact", 0.9),)),
        ClassAssignment(1, ()),
        ClassAssignment(2, ()),
    ]
    plan = chco.Plan(
        assignment, default_params(assignment), 0.5, [0.9, 0.0, 0.0], [1, 2], ["m@1"], "exact", 1
    )
    groundings = [Grounding(n, f"n0{i}", n, 1.0, False, False, False) for i, n in enumerate(names)]
    doc = plan_doc.plan_document(
        "plan-x", [TaskClass(n) for n in names], groundings, plan, {}, {"m@1": "1"},
        SelectOptions(), 1, np.zeros(0, np.int64), Timings(),
        candidate_classes=frozenset({0, 1}),  # another model has heads for "kilt"
    )  # fmt: skip
    why = [c.get("uncovered_why") for c in doc["classes"]]
    assert why == [None, "not chosen", "no head"]
    assert doc["uncovered"] == ["kilt", "democracy"]
