"""The hub's coverage of candidate senses (`select/sense_coverage`), on the real SDAG: heads
measured on a concept or below it, declared there, or measured on a close ancestor."""

from __future__ import annotations

import pytest

from mllgraph.select.coverage import DECLARED, MEASURED, NEAR, sense_coverage

pytestmark = pytest.mark.neo4j

PULLOVER, SWEATER = "n04021028", "n04370048"  # pullover.n.01 IS_A sweater.n.01
GARMENT = "n03419014"  # garment.n.01
JUMPER_PINAFORE, COVERALL = "n03604763", "n03121897"  # jumper.n.04 IS_A coverall.n.01
TABBY, CAT = "n02123045", "n02121808"  # tabby.n.01 IS_A domestic_cat.n.01
BAT_CLUB = "n02806379"


@pytest.fixture()
def tiny_hub(sdag_graph):
    from mllgraph.hub import registry

    registry.ensure_schema(sdag_graph)
    models = [
        {"id": "cov-fashion@1", "name": "cov-fashion", "num_classes": 2,
         "heads": [{"index": 0, "label": "Pullover", "wnid": PULLOVER},
                   {"index": 1, "label": "Coverall", "wnid": COVERALL}]},
        {"id": "cov-imagenet@1", "name": "cov-imagenet", "num_classes": 1,
         "heads": [{"index": 0, "label": "tabby", "wnid": TABBY}]},
    ]  # fmt: skip
    sdag_graph.write("eval/models_create", models=models)
    sdag_graph.write(
        "eval/labels_create",
        labels=[
            {"head_id": "cov-fashion@1#0", "wnid": PULLOVER, "score": 0.8, "method": "probe",
             "n_probe": 50, "group_heads": None},
            {"head_id": "cov-fashion@1#1", "wnid": COVERALL, "score": 0.6, "method": "probe",
             "n_probe": 50, "group_heads": None},
        ],
    )  # fmt: skip
    yield sdag_graph
    for m in models:
        sdag_graph.write("hub/model_delete", id=m["id"])


def test_measured_declared_and_near_coverage(tiny_hub) -> None:
    wnids = [PULLOVER, SWEATER, JUMPER_PINAFORE, CAT, TABBY, BAT_CLUB]
    cov = sense_coverage(tiny_hub, wnids, min_score=0.05, models=None)
    assert cov[PULLOVER] == MEASURED  # labelled on it
    assert cov[SWEATER] == MEASURED  # labelled below it
    assert cov[JUMPER_PINAFORE] == NEAR  # its parent, coverall, is labelled
    assert cov[CAT] == DECLARED and cov[TABBY] == DECLARED  # declared, never measured
    assert cov[BAT_CLUB] == 0.0


def test_coverage_respects_the_sub_hub_and_the_score_bar(tiny_hub) -> None:
    only_imagenet = sense_coverage(
        tiny_hub, [SWEATER, CAT], min_score=0.05, models=["cov-imagenet@1"]
    )
    assert only_imagenet == {SWEATER: 0.0, CAT: DECLARED}
    # Labels under the bar do not count as measured; the heads still declare their concept.
    high_bar = sense_coverage(tiny_hub, [SWEATER, PULLOVER], min_score=0.9, models=None)
    assert high_bar == {SWEATER: DECLARED, PULLOVER: DECLARED}
    assert sense_coverage(tiny_hub, [], min_score=0.05, models=None) == {}
