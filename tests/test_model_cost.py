"""Model costs (ms per image) on a real Neo4j: measured at registration, measured again at
labelling when missing, listed by the CLI; and the cost budget through the selection service
(SelectOptions.max_cost_ms, accuracy_slack; the plan's cost; ExplainSelection's front)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mllgraph import client as mc
from mllgraph.errors import InvalidArgument
from mllgraph.hub import cost as hub_cost
from mllgraph.hub import registry

pytestmark = pytest.mark.neo4j

CLASSES = ["sandal", "sneaker", "trouser", "bag"]
PINS = {"sneaker": "n03472535", "bag": "n02773037"}


@pytest.fixture(scope="module")
def hub(fashion_services: dict[str, Any]) -> dict[str, Any]:
    return fashion_services


@pytest.fixture(scope="module")
def client(hub: dict[str, Any]):
    a = hub["addresses"]
    with mc.Client(
        ingestion=a["ingestion"], selection=a["selection"], inference=a["inference"], timeout=120
    ) as c:
        yield c


def test_cost_is_measured_at_registration(hub: dict[str, Any]) -> None:
    for mid in hub["models"]:
        record = registry.get_model(hub["graph"], mid)
        assert record["cost_ms_per_image"] > 0
        assert record["cost_device"] == "cpu"
        assert record["cost_threads"] >= 1
        assert record["cost_batch"] == hub_cost.COST_BATCH
        assert hub_cost.cost_of(record) == (record["cost_ms_per_image"], False)


def test_labelling_measures_a_cost_missing_for_this_device(hub: dict[str, Any]) -> None:
    from mllgraph.label import run as labeller
    from mllgraph.label import work as label_work

    graph, settings, mid = hub["graph"], hub["settings"], hub["models"][0]
    # As if measured on another kind of device only: labelling here measures it again.
    graph.write("hub/model_set_cost", id=mid, cost={"cost_device": "cuda", "cost_threads": 0})
    assert hub_cost.needs_measuring(registry.get_model(graph, mid), "cpu")
    labeller.label_model(graph, settings, mid, label_work.LabelOptions(samples_per_concept=20))
    record = registry.get_model(graph, mid)
    assert record["cost_device"] == "cpu" and record["cost_threads"] >= 1
    assert not hub_cost.needs_measuring(record, "cpu")


def test_a_cost_timed_by_an_older_runner_is_measured_again() -> None:
    record = {"cost_ms_per_image": 12.0, "cost_device": "cpu", "cost_threads": 1}
    assert hub_cost.needs_measuring(record, "cpu")  # before the rewritten graph: no runner
    assert hub_cost.needs_measuring({**record, "cost_runner": hub_cost.COST_RUNNER - 1}, "cpu")
    assert not hub_cost.needs_measuring({**record, "cost_runner": hub_cost.COST_RUNNER}, "cpu")


def test_unmeasured_models_get_an_estimate_marked_as_such() -> None:
    ms, estimated = hub_cost.cost_of({"size_bytes": 4_000_000, "input_size": 224})
    assert estimated and ms == pytest.approx(hub_cost.ESTIMATE_MS_PER_MPARAM_224)
    # Four times the pixels, four times the estimate.
    assert hub_cost.cost_of({"size_bytes": 4_000_000, "input_size": 448})[0] == pytest.approx(
        4 * ms
    )


def test_the_plan_carries_its_cost_and_the_front(client: mc.Client, hub: dict[str, Any]) -> None:
    graph = hub["graph"]
    # Costs of record far apart: the two experts share an architecture, so their measured
    # costs can fall within 1% of each other, and then a cap "fitting only the cheaper one"
    # fits both (this test failed so once, on a fresh clone).
    for mid, ms in zip(hub["models"], (2.0, 10.0), strict=True):
        record = {"cost_ms_per_image": ms, "cost_device": "cpu", "cost_threads": 1}
        graph.write("hub/model_set_cost", id=mid, cost={**record, "cost_clock": "cpu"})
    costs = {m: registry.get_model(graph, m)["cost_ms_per_image"] for m in hub["models"]}
    plan = client.select(CLASSES, budget=2, pins=PINS, models=hub["models"])
    assert plan.model_ids
    assert plan.cost_ms_per_image == pytest.approx(sum(costs[m] for m in plan.model_ids))
    assert not plan.cost_estimated
    explanation = client.explain(plan)
    assert explanation.cost_front
    chosen = [p for p in explanation.cost_front if p.chosen]
    assert len(chosen) <= 1
    front_costs = [p.cost_ms_per_image for p in explanation.cost_front]
    assert front_costs == sorted(front_costs)
    assert any(n.startswith("Cost ") for n in explanation.notes)

    # A cap under the cheapest model: no model fits, every class is uncovered.
    capped = client.select(
        CLASSES, budget=2, pins=PINS, models=hub["models"], max_cost_ms=min(costs.values()) / 2
    )
    assert capped.model_ids == [] and capped.cost_ms_per_image == 0.0
    # A cap that fits only the cheaper model: the plan stays under it.
    cheap = min(costs, key=costs.__getitem__)
    one = client.select(
        CLASSES, budget=2, pins=PINS, models=hub["models"], max_cost_ms=costs[cheap] * 1.01
    )
    assert set(one.model_ids) <= {cheap}
    assert one.cost_ms_per_image <= costs[cheap] * 1.01
    # No slack: the most accurate plan; its estimate is at least the default's.
    best = client.select(CLASSES, budget=2, pins=PINS, models=hub["models"], accuracy_slack=0.0)
    assert best.estimated_accuracy >= plan.estimated_accuracy - 0.005 - 1e-6


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_cost_ms": -1.0}, "options.max_cost_ms"),
        ({"max_cost_ms": math.nan}, "options.max_cost_ms"),
        ({"max_cost_ms": math.inf}, "options.max_cost_ms"),
        ({"accuracy_slack": 1.5}, "options.accuracy_slack"),
        ({"accuracy_slack": -0.1}, "options.accuracy_slack"),
    ],
)
def test_bad_cost_options_are_invalid_argument_naming_them(
    client: mc.Client, hub: dict[str, Any], options: dict[str, float], field: str
) -> None:
    with pytest.raises(InvalidArgument) as e:
        client.select(CLASSES, budget=2, pins=PINS, models=hub["models"], **options)
    assert e.value.code == "INVALID_ARGUMENT" and e.value.field == field


def test_cli_shows_costs(hub: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from mllgraph import cli

    settings = hub["settings"]
    args = cli.build_parser().parse_args(["models", "show", hub["models"][0]])
    assert args.handler(args, settings) == 0
    assert '"ms_per_image"' in capsys.readouterr().out
    args = cli.build_parser().parse_args(["models", "cost", hub["models"][1]])
    assert args.handler(args, settings) == 0
    assert "ms per image on cpu" in capsys.readouterr().out
    argv = ["select", ",".join(CLASSES), "--budget", "2", "--max-cost-ms", "1e9"]
    argv += [f"--pin={n}={w}" for n, w in PINS.items()]
    args = cli.build_parser().parse_args(argv)
    assert args.max_cost_ms == 1e9 and args.accuracy_slack == 0.005
    args = cli.build_parser().parse_args([*argv, "--json"])
    assert args.handler(args, settings) == 0
    import json

    plan = json.loads(capsys.readouterr().out)
    assert plan["options"]["max_cost_ms"] == 1e9
    assert plan["cost_ms_per_image"] >= 0 and "cost_front" in plan
    args = cli.build_parser().parse_args(["select", ",".join(CLASSES), "--max-cost-ms", "nan"])
    with pytest.raises(InvalidArgument, match="max_cost_ms"):
        args.handler(args, settings)


def test_bench_cost_repeat_measures_again_without_recording(
    hub: dict[str, Any], tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README's `mllgraph bench cost-repeat`: every matching model measured `--runs` times per
    phase, the spreads and the flips of a given front reported, the nodes' costs unchanged;
    a filter no model matches exits naming it."""
    import json
    import os

    from mllgraph import cli

    graph, settings, models = hub["graph"], hub["settings"], hub["models"]
    before = {m: registry.get_model(graph, m)["cost_ms_per_image"] for m in models}
    front = [
        {"models": [models[0]], "estimated_accuracy": 0.9},
        {"models": models, "estimated_accuracy": 0.95},
    ]
    fronts = tmp_path / "fronts.json"
    fronts.write_text(json.dumps({"tasks": [{"task": "t", "cost_front": front}]}))
    like = os.path.commonprefix(models)
    argv = ["bench", "cost-repeat", "--runs", "2", "--load", "0", "--models-like", like]
    argv += ["--fronts", str(fronts), "--out", str(tmp_path)]
    assert cli.main(argv, settings=settings) == 0
    report = json.loads((tmp_path / "bench_cost-repeat.json").read_text())
    assert sorted(report["models"]) == sorted(models) and report["load_processes"] == 0
    for m in models:
        assert (
            len(report["models"][m]["min"]["quiet"])
            == len(report["models"][m]["min"]["loaded"])
            == 2
        )
    assert report["pair_ratio"]["min"]["pairs"] == 6 * len(models)  # 4 measurements: 6 pairs
    assert report["plan_flips"]["fronts_measured"] == 1
    assert {m: registry.get_model(graph, m)["cost_ms_per_image"] for m in models} == before
    capsys.readouterr()
    with pytest.raises(SystemExit, match="no-such-model"):
        cli.main(["bench", "cost-repeat", "--models-like", "no-such-model"], settings=settings)
