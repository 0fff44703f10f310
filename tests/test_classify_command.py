"""`mllgraph classify`: images from files, folders and globs, in-process over the test hub
(the command starts its own services) and through running services (--target); JSON lines
parsed, the table read; an unreadable image is named and the others still run."""

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
    ports = {k: int(v.rsplit(":", 1)[1]) for k, v in hub["addresses"].items()}
    settings = replace(
        hub["settings"],
        ingestion_port=ports["ingestion"],
        selection_port=ports["selection"],
        inference_port=ports["inference"],
    )
    code = cli.main([*argv[:-1], "--target", "127.0.0.1"], settings=settings)
    out, _ = capsys.readouterr()
    assert code == 1  # broken.png
    assert direct.plan_id in out and "sandal.png" in out and "sneaker.jpg" in out
    assert "expert" in out

    code = cli.main(["classify", "--classes", "sandal, sneaker", str(folder / "broken.png")])
    assert code == 1 and "no readable image" in capsys.readouterr().err
