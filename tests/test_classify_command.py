"""`mllgraph classify`: images from files, folders and globs, in-process over the test hub
(the command starts its own services) and through running services (--target); JSON lines
parsed, the table read; an unreadable image is named and the others still run. On the same
hub (built once per module): `mllgraph bench none`, the probe rows "none of these" is
calibrated on (`select.none_calibration.calibration_rows`), and the sets a class without its
own borrows (`select.probe_data.proxy_probes`)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mllgraph import cli
from mllgraph import client as mc

pytestmark = pytest.mark.neo4j

CLASSES = ["sandal", "sneaker", "trouser", "bag", "dog"]
PINS = {"sneaker": "n03472535", "bag": "n02773037"}


@pytest.fixture(scope="module")
def hub(fashion_services: dict[str, Any]) -> dict[str, Any]:
    return fashion_services


def _target_settings(hub: dict[str, Any]) -> Any:
    """The hub's settings with its running services' ports (what `--target HOST` reads)."""
    ports = {k: int(v.rsplit(":", 1)[1]) for k, v in hub["addresses"].items()}
    return replace(
        hub["settings"],
        ingestion_port=ports["ingestion"],
        selection_port=ports["selection"],
        inference_port=ports["inference"],
    )


def test_classify_command(hub: dict[str, Any], tmp_path: Path, capsys) -> None:
    x, y = hub["x_test"], hub["y_test"]
    folder, other = tmp_path / "photos", tmp_path / "more"
    folder.mkdir()
    other.mkdir()
    expected_files = []
    for fashion_label, name in ((5, "sandal"), (1, "trouser"), (8, "bag")):
        path = folder / f"{name}.png"
        Image.fromarray(x[np.flatnonzero(y == fashion_label)[0]]).save(path)
        expected_files.append(str(path))
    (folder / "broken.png").write_bytes(b"\x89PNG but not really")
    jpg = other / "sneaker.jpg"
    Image.fromarray(x[np.flatnonzero(y == 7)[0]]).save(jpg, quality=95)
    expected_files.append(str(jpg))
    argv = [
        "classify",
        "--classes",
        ", ".join(CLASSES),
        "--pin",
        "sneaker=n03472535",
        "--pin",
        "bag=n02773037",
        "--budget",
        "2",
        str(folder),
        str(other / "*.jpg"),
        str(tmp_path / "nowhere.png"),
    ]

    # In-process: the command starts its own services over the (test) hub.
    code = cli.main([*argv, "--json"], settings=hub["settings"])
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    errors = {r["image"]: r["error"] for r in lines if "error" in r}
    rows = [r for r in lines if "error" not in r]
    assert code == 1  # some inputs failed; the others ran
    assert set(errors) == {str(folder / "broken.png"), str(tmp_path / "nowhere.png")}
    assert "broken.png" in err and "not a readable image" in errors[str(folder / "broken.png")]
    assert sorted(r["image"] for r in rows) == sorted(expected_files)
    for r in rows:
        assert r["class"] in CLASSES and r["top"][0]["class"] == r["class"]
        assert len(r["top"]) == 3 and 0 < r["probability"] <= 1

    # Through a client: the same stored plan, the same predictions.
    with mc.Client(**hub["addresses"]) as c:
        direct = c.classify(expected_files, CLASSES, budget=2, pins=PINS)
    assert {r["plan_id"] for r in rows} == {direct.plan_id}
    assert {r["image"]: r["class"] for r in rows} == {p.image_id: p.class_name for p in direct}

    # --target: the running services (HOST alone takes the ports from the settings).
    settings = _target_settings(hub)
    code = cli.main([*argv[:-1], "--target", "127.0.0.1"], settings=settings)
    out, _ = capsys.readouterr()
    assert code == 1  # broken.png
    assert direct.plan_id in out and "sandal.png" in out and "sneaker.jpg" in out
    assert "expert" in out

    code = cli.main(["classify", "--classes", "sandal, sneaker", str(folder / "broken.png")])
    assert code == 1 and "no readable image" in capsys.readouterr().err


def test_classify_allow_none(hub: dict[str, Any], tmp_path: Path, capsys) -> None:
    """`--allow-none`: JSON lines carry the score and the flag, the table names "none of these"
    and says how many; without it, the lines are as before."""
    x, y = hub["x_test"], hub["y_test"]
    files = []
    for f in (5, 7, 3, 9):  # sandal, sneaker; dress and boot are outside the task
        for i in np.flatnonzero(y == f)[:3]:
            path = tmp_path / f"{f}-{i}.png"
            Image.fromarray(x[i]).save(path)
            files.append(str(path))
    settings = _target_settings(hub)
    argv = ["classify", "--classes", ", ".join(CLASSES), "--budget", "2", "--target", "127.0.0.1"]
    argv += [f"--pin={n}={w}" for n, w in PINS.items()]
    assert cli.main([*argv, *files, "--json"], settings=settings) == 0
    plain = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all("none_score" not in r and "none_of_these" not in r for r in plain)

    assert cli.main([*argv, *files, "--json", "--allow-none"], settings=settings) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in rows] == [r["image"] for r in plain]
    with mc.Client(**hub["addresses"]) as c:
        direct = c.classify(files, CLASSES, budget=2, pins=PINS, allow_none=True)
    for r, p, q in zip(rows, direct, plain, strict=True):
        assert r["none_of_these"] == p.none_of_these
        assert r["none_score"] == pytest.approx(p.none_score, abs=1e-4)
        assert r["class"] == ("none of these" if p.none_of_these else q["class"])

    assert cli.main([*argv, *files, "--allow-none"], settings=settings) == 0
    out = capsys.readouterr().out
    rejected = sum(p.none_of_these for p in direct)
    assert f'"none of these": {rejected} of {len(files)} images' in out and "threshold" in out
    # ... and what the threshold is worth: the plan's held-out AUROC on probe images (one
    # source of Fashion probes: stratified folds).
    auroc = direct.plan.document["none_of_these"]["probe_auroc"]
    assert f"probe images, held-out folds: AUROC {auroc:.2f}" in " ".join(out.split())


def test_bench_none_command(hub: dict[str, Any], tmp_path: Path) -> None:
    """README's `mllgraph bench none`: the Fashion study of "none of these" on the built hub
    writes its report, with the plan's rule and its figures (the options were once lost)."""
    tasks = tmp_path / "tasks.json"
    suite = {
        "name": "one",
        "tasks": [
            {
                "name": "sandal-sneaker",
                "split": "dev",
                "classes": [
                    {"name": "sandal", "fashion": ["Sandal"]},
                    {"name": "sneaker", "fashion": ["Sneaker"]},
                ],
            }
        ],
    }
    tasks.write_text(json.dumps(suite))
    argv = ["bench", "none", "--tasks", str(tasks), "--none-per-class", "10", "--budget", "2"]
    argv += ["--logits-dir", str(tmp_path / "logits"), "--out", str(tmp_path)]
    assert cli.main(argv, settings=hub["settings"]) == 0
    report = json.loads((tmp_path / "none_of_these.json").read_text())
    assert report["per_class"] == 10 and report["halves"]["dev"]["calibrated"] == 1
    (row,) = report["tasks"]
    assert row["none_of_these"]["rule"] == "ridge" and row["inside_images"] == 20
    assert 0.0 <= row["auroc"] <= 1.0 and row["outside_images"] > 0
    assert list((tmp_path / "logits").iterdir())  # kept for a rerun


def test_none_calibration_learns_a_class_without_images_from_its_nearest_ancestor(
    hub: dict[str, Any],
) -> None:
    """The rows "none of these" is calibrated on: "slacks" has no probe set of its own, so it
    learns from the sets at trouser (its nearest ancestor with some), not from the proxy that
    selection borrowed for it; "dog" has no ancestor with a set, so it keeps its proxy; and no
    set is both a class's and an outside one."""
    from mllgraph.hub import registry
    from mllgraph.select import none_calibration
    from mllgraph.select.reads import Reads
    from tests.helpers import FASHION_WNIDS

    graph = hub["graph"]
    reads = Reads(graph, None, registry.catalogue_version(graph))
    slacks, sandal, dog = "n04233715", FASHION_WNIDS[5], "n02084071"
    wnids = [slacks, sandal, dog]
    rows = reads.task_probes(wnids)
    assert {r["class_index"] for r in rows} == {1}  # only sandal has sets of its own
    bag_set = next(r for r in reads.task_probes([FASHION_WNIDS[8]]))
    proxies = [
        {**bag_set, "class_index": c, "distance": 1000, "proxy": FASHION_WNIDS[8]} for c in (0, 2)
    ]
    inside, outside = none_calibration.calibration_rows(reads, wnids, rows + proxies[:1])
    by_class = {c: {r["wnid"] for r in inside if r["class_index"] == c} for c in range(3)}
    assert by_class[0] == {FASHION_WNIDS[1]} and by_class[1] == {sandal} and not by_class[2]
    names = {r["set_id"] for r in inside}
    assert names.isdisjoint(r["set_id"] for r in outside)
    assert bag_set["set_id"] in {r["set_id"] for r in outside}  # a proxy no class learns from
    inside, outside = none_calibration.calibration_rows(reads, wnids, rows + proxies[1:])
    assert {r["set_id"] for r in inside if r["class_index"] == 2} == {bag_set["set_id"]}
    assert bag_set["set_id"] not in {r["set_id"] for r in outside}


def test_a_class_without_probes_borrows_its_nearest_ancestors_sets_before_a_related_ones(
    hub: dict[str, Any],
) -> None:
    """Selection's proxy for "slacks" (no probe set of its own): the sets at trouser, an
    ancestor its candidates were labelled on, before those of a deeper related concept
    (dress); the related one only where another task class holds the trouser sets."""
    from mllgraph.hub import registry
    from mllgraph.select.probe_data import proxy_probes
    from mllgraph.select.reads import Reads
    from tests.helpers import FASHION_WNIDS

    graph = hub["graph"]
    reads = Reads(graph, None, registry.catalogue_version(graph))
    slacks, trouser, dress = "n04233715", FASHION_WNIDS[1], FASHION_WNIDS[3]
    candidates = [
        {"class_index": 0, "kind": "related", "via": dress, "via_depth": 9, "score": 0.9},
        {"class_index": 0, "kind": "ancestor", "via": trouser, "via_depth": 8, "score": 0.8},
    ]
    own = reads.task_probes([slacks, FASHION_WNIDS[5]])  # sandal's sets only
    borrowed = proxy_probes(reads, candidates, own, 2)
    assert borrowed and {(r["class_index"], r["proxy"]) for r in borrowed} == {(0, trouser)}
    assert {r["wnid"] for r in borrowed} == {trouser}
    own = reads.task_probes([slacks, trouser])  # "slacks, trousers": class 1 holds them
    borrowed = proxy_probes(reads, candidates, own, 2)
    assert borrowed and {(r["class_index"], r["proxy"]) for r in borrowed} == {(0, dress)}
