"""Probe folders (mllgraph.hub.probe_folder): nothing outside the folder is read, and adding
a folder is all or nothing (issue 25: `probes add --folder --target` followed a link to
/etc/shadow and streamed it; a failure half-way left earlier sub-folders attached, unsaid).

The reading tests need no Neo4j; the all-or-nothing one uses the test graph.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mllgraph import client as mc
from mllgraph.errors import InvalidArgument, Unavailable
from mllgraph.hub import probe_folder, probes

SANDAL, BOOT = "n04133789", "n02872752"


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A probe folder whose sandal sub-folder links to files and a folder outside it."""
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    secret = outside / "secret.png"
    secret.write_bytes(b"SECRET")
    (outside / "dir" / "also.png").write_bytes(b"SECRET")
    root = tmp_path / "probes"
    (root / SANDAL / "deeper").mkdir(parents=True)
    (root / SANDAL / "a.png").write_bytes(_png(0))
    (root / SANDAL / "deeper" / "b.png").write_bytes(_png(1))
    (root / SANDAL / "shadow.png").symlink_to(secret)
    (root / SANDAL / "linked-dir").symlink_to(outside / "dir", target_is_directory=True)
    (root / SANDAL / "notes.txt").write_text("not an image")
    os.mkfifo(root / SANDAL / "pipe.png")
    (root / "linked-concept").symlink_to(outside / "dir", target_is_directory=True)
    return root


def test_folder_files_refuses_links_and_special_files(folder: Path) -> None:
    files, refused = probe_folder.folder_files(folder)
    assert files == [
        (SANDAL, folder / SANDAL / "a.png"),
        (SANDAL, folder / SANDAL / "deeper" / "b.png"),
    ]
    reasons = {Path(r["path"]).name: r["reason"] for r in refused}
    assert reasons == {
        "linked-concept": "a symbolic link (not followed)",
        "linked-dir": "a symbolic link (not followed)",
        "shadow.png": "a symbolic link (not followed)",
        "pipe.png": "not a regular file",
        "notes.txt": "not a .jpg/.jpeg/.png file",
    }


def test_read_inside_never_leaves_the_folder(folder: Path, tmp_path: Path) -> None:
    root = probe_folder.folder_root(folder)
    assert probe_folder.read_inside(root, folder / SANDAL / "a.png") == _png(0)
    with pytest.raises(InvalidArgument, match="without following a link"):
        probe_folder.read_inside(root, folder / SANDAL / "shadow.png")
    # A sub-folder swapped for a link after it was listed: the open file is outside.
    (folder / SANDAL / "deeper" / "b.png").unlink()
    (folder / SANDAL / "deeper").rmdir()
    (folder / SANDAL / "deeper").symlink_to(tmp_path / "outside" / "dir")
    (tmp_path / "outside" / "dir" / "b.png").write_bytes(b"SECRET")
    with pytest.raises(InvalidArgument, match="outside the folder"):
        probe_folder.read_inside(root, folder / SANDAL / "deeper" / "b.png")


def test_the_client_streams_only_files_inside_the_folder(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[Any] = []

    def fake_stream(self: Any, method: Any, make_requests: Any, what: str, timeout: Any) -> Any:
        sent.extend(make_requests())
        return SimpleNamespace(attached=[], refused=[], stale_models=[])

    monkeypatch.setattr(mc.Client, "_call_stream", fake_stream)
    client = mc.Client.__new__(mc.Client)
    client._ingestion = SimpleNamespace(AddProbes=None)
    report = client.add_probes(folder)
    assert sorted(Path(m.name).name for m in sent) == ["a.png", "b.png"]
    assert all(b"SECRET" not in m.encoded for m in sent)
    assert "shadow.png" in " ".join(path for path, _ in report.refused)


@pytest.mark.neo4j
def test_add_folder_is_all_or_nothing(
    sdag_graph: Any, neo4j_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "two"
    for i, wnid in enumerate((BOOT, SANDAL)):
        (root / wnid).mkdir(parents=True)
        (root / wnid / "x.png").write_bytes(_png(100 + i))
    before = {p.id for p in probes.probe_sets(sdag_graph)}
    real = probes.add_probe_set
    calls: list[str] = []

    def second_fails(graph: Any, settings: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["concept"])
        if len(calls) == 2:
            raise Unavailable("the graph went away")
        return real(graph, settings, **kwargs)

    monkeypatch.setattr(probes, "add_probe_set", second_fails)
    with pytest.raises(Unavailable, match="the graph went away; nothing was attached: the 1"):
        probe_folder.add_folder(sdag_graph, neo4j_settings, root)
    assert calls == [BOOT, SANDAL]
    assert {p.id for p in probes.probe_sets(sdag_graph)} == before

    monkeypatch.setattr(probes, "add_probe_set", real)
    report = probe_folder.add_folder(sdag_graph, neo4j_settings, root)
    try:
        assert [a["wnid"] for a in report.attached] == [BOOT, SANDAL]
    finally:
        for a in report.attached:
            probes.remove_probe_set(sdag_graph, a["set_id"], neo4j_settings)


@pytest.mark.neo4j
def test_the_cli_records_the_source_it_is_given(
    sdag_graph: Any, neo4j_settings: Any, tmp_path: Path
) -> None:
    """README: `mllgraph probes add --folder sketches/ --source sketches`: every set it attaches
    carries that source (selection holds a concept's sources out one at a time)."""
    from mllgraph import cli

    root = tmp_path / "sketches"
    for i, wnid in enumerate((BOOT, SANDAL)):
        (root / wnid).mkdir(parents=True)
        (root / wnid / "x.png").write_bytes(_png(200 + i))
    before = {p.id for p in probes.probe_sets(sdag_graph)}
    args = cli.build_parser().parse_args(
        ["probes", "add", "--folder", str(root), "--source", "sketches"]
    )
    assert args.handler(args, neo4j_settings) == 0
    added = [p for p in probes.probe_sets(sdag_graph) if p.id not in before]
    try:
        assert sorted((p.wnid, p.source) for p in added) == [
            (BOOT, "sketches"), (SANDAL, "sketches"),
        ]  # fmt: skip
    finally:
        for p in added:
            probes.remove_probe_set(sdag_graph, p.id, neo4j_settings)
