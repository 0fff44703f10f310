"""The plan document's checks (mllgraph/select/plan.py), pure: the two shapes of a Plan
message's `combination_json`. The gRPC side is in tests/test_inference.py."""

from __future__ import annotations

import json

import pytest

from mllgraph.errors import FailedPrecondition, InvalidArgument
from mllgraph.select import plan as plan_doc


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
        ({"schema_version": 2, "plan": {}}, FailedPrecondition),
        ({"schema_version": [1], "plan": {}}, FailedPrecondition),
        ({"schema_version": 1, "plan": {"assignment": [{}] * 1001}}, InvalidArgument),
    ],
)
def test_malformed_combinations_are_domain_errors(combination: object, error: type) -> None:
    doc = {"plan_id": "p", "classes": [{"name": "a"}], "combination": combination}
    with pytest.raises(error):
        plan_doc.parse_plan(doc)
