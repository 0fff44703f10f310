"""`mllgraph bench estimates`' figures (pure): per task both gaps from one plan, and the mean
|gap| per suite and half."""

from __future__ import annotations

import pytest

from mllgraph.eval.bench.estimates import _row, markdown, summarise


def _plan(before: float | None, after: float | None, kinds: list[str]) -> dict:
    classes = [{"estimate_evidence": {"kind": k}} for k in kinds]
    return {"simulated_accuracy": before, "estimated_accuracy": after, "classes": classes}


def test_rows_and_summary() -> None:
    rows = [
        _row("fashion", "a", "dev", _plan(1.0, 0.8, ["measured", "ancestor"]), 0.7, 10),
        _row("fashion", "b", "test", _plan(0.9, 0.95, ["measured", "measured"]), 1.0, 10),
        _row("photos", "c", None, _plan(None, 0.5, ["declared", "uncovered"]), 0.5, 3),
    ]
    assert rows[0]["gap_before"] == pytest.approx(0.3)
    assert rows[0]["gap_after"] == pytest.approx(0.1)
    assert rows[0]["evidence"] == {"ancestor": 1, "measured": 1}
    assert rows[2]["half"] == "-" and rows[2]["gap_before"] is None
    s = summarise(rows)
    assert s["all"]["tasks"] == 3
    assert s["all"]["mean_abs_gap_before"] == pytest.approx((0.3 + 0.1) / 2)
    assert s["all"]["mean_abs_gap_after"] == pytest.approx((0.1 + 0.05 + 0.0) / 3, abs=1e-4)
    assert s["fashion:dev"]["tasks"] == 1 and "photos:-" not in s
    text = markdown({"config": {}, "seconds": 1.0, "summary": s, "tasks": rows})
    assert "| fashion | a | dev | 2 | 10 | 0.700 | 1.000 | 0.800 |" in text


def test_proxy_sets_at_the_borrowed_concept_count_as_its_own_images() -> None:
    from mllgraph.select.estimates import ancestor_probe_images, own_probe_images

    rows = [
        {"set_id": "s1", "class_index": 0, "wnid": "a", "count": 5},
        {"set_id": "p1", "class_index": 1, "wnid": "t", "proxy": "t", "count": 7},
        {"set_id": "p2", "class_index": 2, "wnid": "u", "proxy": "t2", "count": 4},
    ]
    class_sets = [(("s1", 5),), (("p1", 7),), (("p2", 4),)]
    assert own_probe_images(class_sets, rows) == [5, 0, 0]
    assert ancestor_probe_images(class_sets, rows) == [None, (7, "t"), None]
