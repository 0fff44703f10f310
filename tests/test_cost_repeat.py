"""Cost timing without a server: `hub.cost.time_batches` on a small real model, and the
spread figures of `mllgraph bench cost-repeat`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mllgraph.eval.bench.cost_repeat import _flips, _pair_ratios, _summary
from mllgraph.hub import cost as hub_cost
from mllgraph.hub.preprocess import InputSpec
from mllgraph.select.cost_front import COST_TIE


def test_time_batches_times_each_batch_and_measure_takes_the_least() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    spec = InputSpec(size=28, resize="resize", mean=(0.5,), std=(0.5,), channels=1)
    timed = hub_cost.time_batches(model, spec, "cpu", batch=4, repeats=3)
    assert len(timed["ms_per_image"]) == 3 and all(t > 0 for t in timed["ms_per_image"])
    assert (timed["device"], timed["clock"], timed["threads"]) == ("cpu", "cpu", 1)
    cost = hub_cost.measure(model, spec, "cpu", batch=4, repeats=3)
    assert cost["cost_ms_per_image"] > 0 and (cost["cost_clock"], cost["cost_batch"]) == ("cpu", 4)
    assert torch.get_num_threads() >= 1  # the one-thread block restored the setting


def test_spread_is_the_largest_over_the_smallest_measurement() -> None:
    s = _summary({"quiet": [[2.0, 1.0, 9.0], [1.5, 1.2, 1.4]], "loaded": [[3.0, 2.0, 2.5]]})
    assert s["min"]["quiet"] == [1.0, 1.2] and s["median"]["quiet"] == [2.0, 1.4]
    assert s["min"]["spread_quiet"] == pytest.approx(1.2)
    assert s["median"]["spread_all"] == pytest.approx(2.5 / 1.4, abs=1e-3)
    assert s["min"]["spread_loaded"] == 1.0


def test_plan_flips_count_rounds_whose_costs_serve_another_point() -> None:
    # Two rounds of measurements: Lite0+Lite1 27 then 37 ms, Lite2 28 both times.
    models = {
        "lite01": _summary({"quiet": [[27.0]], "loaded": [[37.0]]}),
        "lite2": _summary({"quiet": [[28.0]], "loaded": [[28.0]]}),
    }
    fronts = {
        "r:t": [
            {"models": ["lite01"], "estimated_accuracy": 0.900},
            {"models": ["lite2"], "estimated_accuracy": 0.902},
        ],
        "r:unmeasured": [
            {"models": ["other"], "estimated_accuracy": 0.9},
            {"models": ["lite2"], "estimated_accuracy": 0.8},
        ],
    }
    flips = _flips(fronts, models)
    assert (flips["fronts"], flips["fronts_measured"]) == (2, 1)
    assert flips["min_band_0"] == {"tasks_flipping": 1, "round_pairs_differing": 1.0}
    assert flips[f"min_band_{COST_TIE:g}"] == {"tasks_flipping": 0, "round_pairs_differing": 0.0}


def test_pair_ratios_compare_every_two_measurements_of_one_model() -> None:
    models = {
        "a": _summary({"quiet": [[1.0], [1.1]], "loaded": [[1.2]]}),
        "b": _summary({"quiet": [[4.0], [4.0]], "loaded": [[4.0]]}),
    }
    r = _pair_ratios(models, "min")
    assert r["pairs"] == 6 and r["max"] == pytest.approx(1.2)
    # The six ratios: 1, 1, 1 (b), 1.1, 1.2, 1.2 / 1.1 (a); their median halfway 1 to 1.0909.
    assert r["p50"] == pytest.approx((1.0 + 1.2 / 1.1) / 2, abs=1e-3)  # rounded to 3 places
