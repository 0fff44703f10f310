"""The emoji world's images (mllgraph.hubs.emoji): the install step, the catalogue, rasters,
augmentation and the style split.

Tests marked by the `real_cache` fixture use a handful of real emoji from the installed
packages (`mllgraph hub emoji fetch`, run by scripts/run.sh before the suite): with CI=true a
missing cache fails them; elsewhere they skip, saying why. The rest need no cache and no npm.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import stat
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mllgraph.errors import FailedPrecondition, InvalidArgument, NotFound
from mllgraph.hub import probe_folder
from mllgraph.hubs.emoji import augment, catalogue, install, raster, split
from mllgraph.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CONCEPTS = Path(__file__).parent / "data" / "emoji_concepts.tsv"
DOG, DOG_FACE, CAT = "1F415", "1F436", "1F408"
CIRCLE_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72">'
    '<circle cx="36" cy="36" r="30" fill="#ff0000"/></svg>'
)


@pytest.fixture(scope="module")
def real_cache(emoji_cache: Path) -> catalogue.Catalogue:
    return catalogue.load(emoji_cache)


# --- the install step -------------------------------------------------------------------


def _fake_npm(bin_dir: Path, tarball: Path | None) -> None:
    """An `npm` whose `pack` copies `tarball` into the working folder (None: fails)."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "npm"
    if tarball is None:
        script.write_text("#!/bin/sh\necho 'npm must not run' >&2\nexit 3\n")
    else:
        script.write_text(f'#!/bin/sh\nname="${{2%@*}}-${{2##*@}}.tgz"\ncp {tarball} "$name"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_install_refuses_unpinned_packages(tmp_path: Path) -> None:
    assert set(install.PACKAGES) == {"openmoji", "fluentui-emoji", "emoji-datasource-twitter"}
    with pytest.raises(InvalidArgument, match="not one of the pinned packages"):
        install.fetch(tmp_path, ("left-pad",))


def test_install_unpacks_only_what_is_needed_and_is_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tgz = _tarball(
        tmp_path / "src.tgz",
        {
            "package/color/svg/1F415.svg": CIRCLE_SVG.encode(),
            "package/data/openmoji.json": b"[]",
            "package/black/svg/1F415.svg": b"<svg/>",  # not needed: not unpacked
        },
    )
    pinned = dataclasses.replace(install.PACKAGES["openmoji"], integrity=install.sri(tgz))
    monkeypatch.setitem(install.PACKAGES, "openmoji", pinned)
    _fake_npm(tmp_path / "bin", tgz)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    cache = tmp_path / "cache"
    dirs = install.fetch(cache, ("openmoji",))
    assert (dirs["openmoji"] / "color" / "svg" / "1F415.svg").read_text() == CIRCLE_SVG
    assert (dirs["openmoji"] / "data" / "openmoji.json").is_file()
    assert not (dirs["openmoji"] / "black").exists()
    assert install.is_installed(cache, "openmoji")
    # Once installed, npm is never run again (it would fail here).
    _fake_npm(tmp_path / "bin", None)
    assert install.fetch(cache, ("openmoji",)) == dirs


def test_install_refuses_a_tarball_with_another_integrity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tgz = _tarball(tmp_path / "src.tgz", {"package/color/svg/1F415.svg": b"<svg/>"})
    _fake_npm(tmp_path / "bin", tgz)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    with pytest.raises(FailedPrecondition, match="differs from the pinned"):
        install.fetch(tmp_path / "cache", ("openmoji",))
    assert not install.is_installed(tmp_path / "cache", "openmoji")
    assert not (tmp_path / "cache" / "openmoji-17.0.0").exists()


def test_install_without_npm_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm there
    with pytest.raises(FailedPrecondition, match="npm"):
        install.fetch(tmp_path / "cache", ("openmoji",))


def test_catalogue_without_packages_names_the_install_step(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="mllgraph hub emoji fetch"):
        catalogue.load(tmp_path)


# --- the catalogue ----------------------------------------------------------------------


def test_hexcode_keys() -> None:
    assert catalogue.key("2764-fe0f") == catalogue.key("2764") == "2764"
    assert catalogue.key("1F468-200D-1F373") == "1F468-200D-1F373"
    for bad in ("", "dog", "1F415_1F436", "1F415-", "G000"):
        with pytest.raises(InvalidArgument, match="hexcode"):
            catalogue.key(bad)


def test_fluent_stems_drop_skin_tones_not_names() -> None:
    stems = catalogue.fluent_stems(
        ["man-cook-default", "man-cook-dark", "man-cook-medium-light", "artist-palette", "dog"]
    )
    assert stems == {
        "artist-palette": "artist-palette",
        "dog": "dog",
        "man-cook-default": "man-cook",
    }


def test_catalogue_of_the_real_packages(real_cache: catalogue.Catalogue) -> None:
    counts = real_cache.counts()
    assert counts["all_styles"] > 1000
    for style in catalogue.STYLES:
        assert counts[style] >= counts["all_styles"]
    dog = real_cache.get(DOG)
    assert {s: p.name for s, p in dog.sources.items()} == {
        "openmoji": "1F415.svg",
        "fluent-flat": "dog.svg",
        "fluent-modern": "dog.svg",
        "twemoji": "1f415.png",
    }
    assert real_cache.source("1F468-200D-1F373", "fluent-flat").name == "man-cook-default.svg"
    assert real_cache.get("2764-FE0F") is real_cache.get("2764")
    assert catalogue.LICENCE == {
        "openmoji": "CC-BY-SA-4.0",
        "fluent-flat": "MIT",
        "fluent-modern": "MIT",
        "twemoji": "CC-BY-4.0",
    }
    assert sum(len(v) for v in real_cache.unmatched.values()) <= 10
    with pytest.raises(NotFound):
        real_cache.get("10FFFF")
    with pytest.raises(InvalidArgument, match="style"):
        real_cache.source(DOG, "photo")


# --- reserved styles ----------------------------------------------------------------------

RESERVED = re.compile(r"google|noto|apple|facebook|img/(?!twitter)", re.I)


def test_no_code_path_names_a_reserved_style() -> None:
    """The emoji package, its CLI and the install step never name the reserved style's or the
    restrictive sets' packages, fonts or image folders."""
    sources = [*sorted((ROOT / "mllgraph" / "hubs" / "emoji").glob("*.py"))]
    sources += [ROOT / "mllgraph" / "cli" / "emoji.py", ROOT / "scripts" / "run.sh"]
    sources += [ROOT / "scripts" / "emoji_probes.sh"]
    for path in sources:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            assert not RESERVED.search(line), f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
    assert all("google" not in p.name and "apple" not in p.name for p in install.PACKAGES.values())


def test_every_source_lies_in_its_styles_folder(real_cache: catalogue.Catalogue) -> None:
    cache = real_cache.root
    folders = {
        "openmoji": install.package_dir(cache, "openmoji") / "color" / "svg",
        "fluent-flat": install.package_dir(cache, "fluentui-emoji") / "icons" / "flat",
        "fluent-modern": install.package_dir(cache, "fluentui-emoji") / "icons" / "modern",
        "twemoji": install.package_dir(cache, "emoji-datasource-twitter")
        / "img"
        / "twitter"
        / "64",
    }
    for emoji in real_cache.emoji.values():
        for style, path in emoji.sources.items():
            assert path.parent == folders[style], (emoji.hexcode, style, path)


# --- rasters ------------------------------------------------------------------------------


def test_rasterize_svg(tmp_path: Path) -> None:
    svg = tmp_path / "circle.svg"
    svg.write_text(CIRCLE_SVG)
    rgba = raster.rasterize(svg, 64)
    assert rgba.shape == (64, 64, 4) and rgba.dtype == np.uint8
    assert tuple(rgba[32, 32]) == (255, 0, 0, 255)  # inside the circle
    assert rgba[0, 0, 3] == 0  # the corner stays transparent
    (tmp_path / "bad.svg").write_text("<svg")
    with pytest.raises(FailedPrecondition, match="resvg"):
        raster.rasterize(tmp_path / "bad.svg")
    with pytest.raises(InvalidArgument, match="raster size"):
        raster.rasterize(svg, 4)


def test_rasterize_real_styles(real_cache: catalogue.Catalogue) -> None:
    for style in catalogue.STYLES:
        rgba = raster.rasterize(real_cache.source(DOG, style))
        assert rgba.shape == (raster.SIZE, raster.SIZE, 4)
        alpha = rgba[..., 3]
        assert 0.05 < (alpha > 0).mean() < 0.95, style  # a drawing on a transparent ground


def test_cached_raster_is_kept_and_reused(tmp_path: Path) -> None:
    svg = tmp_path / "circle.svg"
    svg.write_text(CIRCLE_SVG)
    cat = catalogue.Catalogue(
        root=tmp_path, emoji={"1F534": catalogue.Emoji("1F534", "red circle", {"openmoji": svg})}
    )
    first = raster.cached_raster(cat, "1F534", "openmoji", 32)
    kept = raster.raster_path(tmp_path, "openmoji", "1F534", 32)
    assert kept.is_file()
    svg.unlink()  # the second call must not need the source
    assert np.array_equal(raster.cached_raster(cat, "1F534", "openmoji", 32), first)


# --- augmentation -------------------------------------------------------------------------


def _disc(side: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side]
    inside = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (side / 2.5) ** 2
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[inside] = (250, 10, 10, 255)
    return rgba


def test_augmentation_is_deterministic_and_varies_with_the_seed() -> None:
    rgba = _disc()
    a = augment.augment(rgba, 7, 96)
    assert a.shape == (96, 96, 3) and a.dtype == np.uint8
    assert np.array_equal(a, augment.augment(rgba, 7, 96))
    others = [augment.augment(rgba, s, 96) for s in range(8, 14)]
    assert all(not np.array_equal(a, o) for o in others)
    # The emoji is there: some pixels carry its colour.
    red = (a[..., 0] > 200) & (a[..., 1] < 60) & (a[..., 2] < 60)
    assert red.mean() > 0.05
    # Backgrounds of every kind occur over a few seeds.
    kinds = set()
    for s in range(40):
        rng = np.random.default_rng(s)
        kinds.add(augment.BACKGROUNDS[int(rng.integers(len(augment.BACKGROUNDS)))])
    assert kinds == set(augment.BACKGROUNDS)


def test_augmentation_refuses_bad_input() -> None:
    with pytest.raises(InvalidArgument, match="RGBA"):
        augment.augment(np.zeros((8, 8, 3), np.uint8), 0)
    with pytest.raises(InvalidArgument, match="side"):
        augment.augment(_disc(), 0, side=4)
    with pytest.raises(InvalidArgument, match="scale"):
        augment.augment(_disc(), 0, params=augment.Params(scale=(0.9, 0.5)))


def test_probe_and_task_seeds_never_meet() -> None:
    probe = {augment.seed_for(split.PROBE, "openmoji", DOG, i) for i in range(500)}
    task = {augment.seed_for(split.TASK, "openmoji", DOG, i) for i in range(500)}
    assert len(probe) == len(task) == 500 and not probe & task


# --- the style split ----------------------------------------------------------------------


def test_split_and_its_guard() -> None:
    s = split.split("twemoji")
    assert s.probe_styles == ("openmoji", "fluent-flat", "fluent-modern")
    with pytest.raises(InvalidArgument, match="held-out style"):
        s.guard(["openmoji", "twemoji"], "training")
    with pytest.raises(InvalidArgument, match="not one of"):
        split.split("noir")
    with pytest.raises(InvalidArgument, match="not among"):
        split.split("twemoji", ["openmoji", "fluent-flat"])
    with pytest.raises(InvalidArgument, match="no other style"):
        split.split("twemoji", ["twemoji"])


def test_split_emoji_puts_each_emoji_on_one_side() -> None:
    codes = [f"1F{400 + i:03X}" for i in range(100)] + ["2764-FE0F", "2764"]
    kept, held = split.split_emoji(codes, 0.2, seed=3)
    assert not kept & held and len(kept | held) == 101  # 2764 and 2764-FE0F: one emoji
    assert (kept, held) == split.split_emoji(reversed(codes), 0.2, seed=3)
    with pytest.raises(InvalidArgument, match="fraction"):
        split.split_emoji(codes, 1.0)


def test_read_concepts(tmp_path: Path) -> None:
    rows = split.read_concepts(CONCEPTS)
    assert [(r.hexcode, r.wnid) for r in rows][:2] == [(DOG, "n02084071"), (DOG_FACE, "n02084071")]
    cases = {
        "hexcode\tname\twnid\n": "no column synset",
        "hexcode\tname\twnid\tsynset\nXYZ\tdog\tn02084071\tdog.n.01\n": "row 2: hexcode",
        "hexcode\tname\twnid\tsynset\n1F415\tdog\t02084071\tdog.n.01\n": "wnid",
        "hexcode\tname\twnid\tsynset\n1F415\tdog\tn02084071\tdog\n": "synset",
        "hexcode\tname\twnid\tsynset\n1F415\tdog\tn02084071\tdog.n.01\n"
        "1F415\tdog\tn02084071\tdog.n.01\n": "also on row 2",
    }
    for text, message in cases.items():
        path = tmp_path / "c.tsv"
        path.write_text(text)
        with pytest.raises(InvalidArgument, match=message):
            split.read_concepts(path)
    with pytest.raises(InvalidArgument, match="cannot be read"):
        split.read_concepts(tmp_path / "absent.tsv")


def test_no_held_out_image_reachable_from_the_probe_folders(
    real_cache: catalogue.Catalogue, tmp_path: Path
) -> None:
    rows = split.read_concepts(CONCEPTS)
    style_split = split.split("fluent-modern")
    out = tmp_path / "probes"
    manifest = split.write_probe_folders(real_cache, rows, style_split, out, per_style=3, side=64)
    # The layout `mllgraph probes add --folder` reads: one folder per style, one per concept.
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(style_split.probe_styles)
    files, refused = probe_folder.folder_files(out / "openmoji")
    assert not refused
    assert sorted({name for name, _ in files}) == ["n02084071", "n02121620", "n07739125"]
    assert probe_folder.load_image(files[0][1]).shape == (probe_folder.SIDE, probe_folder.SIDE, 3)
    assert len(manifest) == 3 * 3 * 3  # concepts x probe styles x per_style
    dog_probes = {m["hexcode"] for m in manifest if m["wnid"] == "n02084071"}
    assert dog_probes == {DOG, DOG_FACE}  # two emoji of one concept, taken in turn
    tasks = split.task_images(real_cache, rows, style_split, per_emoji=2, side=64)
    assert {t.style for t in tasks} == {"fluent-modern"} and len(tasks) == 4 * 2
    assert split.leaks(manifest, tasks) == []
    held_hashes = {
        split.file_hash(e.sources["fluent-modern"])
        for e in real_cache.emoji.values()
        if "fluent-modern" in e.sources
    }
    on_disk = [p for p in out.rglob("*.png")]
    assert len(on_disk) == len(manifest)
    assert all(m["source_sha256"] not in held_hashes for m in manifest)
    # The check can fail: probes made from the held-out style are caught.
    with pytest.raises(InvalidArgument, match="held-out style"):
        split.write_probe_folders(
            real_cache, rows, split.StyleSplit("fluent-modern", ("fluent-modern",)), tmp_path / "x"
        )
    with pytest.raises(InvalidArgument, match="not empty"):
        split.write_probe_folders(real_cache, rows, style_split, out, per_style=1)
    tainted = [{**manifest[0], "style": "fluent-modern"}]
    assert split.leaks(tainted, tasks)


def test_held_out_emoji_never_on_both_sides(
    real_cache: catalogue.Catalogue, tmp_path: Path
) -> None:
    rows = split.read_concepts(CONCEPTS)
    kept, held = split.split_emoji([r.hexcode for r in rows], 0.5, seed=1)
    style_split = split.split("twemoji")
    manifest = split.write_probe_folders(
        real_cache, rows, style_split, tmp_path / "kept", per_style=2, side=64, exclude=held
    )
    tasks = split.task_images(real_cache, rows, style_split, per_emoji=2, side=64, only=held)
    assert {catalogue.key(m["hexcode"]) for m in manifest} <= kept
    assert {catalogue.key(t.hexcode) for t in tasks} == held
    assert split.leaks(manifest, tasks, held_out_emoji=True) == []
    # Without the exclusion the same emoji sit on both sides, and leaks() says so.
    everything = split.write_probe_folders(
        real_cache, rows, style_split, tmp_path / "all", per_style=2, side=64
    )
    assert split.leaks(everything, tasks, held_out_emoji=True)


# --- the command line -----------------------------------------------------------------------


def test_cli_probes_and_tasks(
    real_cache: catalogue.Catalogue, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mllgraph.cli import main

    base = ["hub", "emoji"]
    common = ["--concepts", str(CONCEPTS), "--held-out", "openmoji", "--side", "64"]
    assert main([*base, "probes", *common, "--out", str(tmp_path / "p"), "--per-style", "2"]) == 0
    assert "mllgraph probes add --folder" in capsys.readouterr().out
    assert not (tmp_path / "p" / "openmoji").exists()
    assert len(list((tmp_path / "p" / "twemoji").rglob("*.png"))) == 3 * 2
    assert main([*base, "tasks", *common, "--out", str(tmp_path / "t"), "--per-emoji", "1"]) == 0
    assert len(list((tmp_path / "t").rglob("*.png"))) == 4
    bad = ["--concepts", str(CONCEPTS), "--held-out", "noir", "--out", str(tmp_path / "x")]
    assert main([*base, "probes", *bad]) == 1
    assert "emoji style 'noir'" in capsys.readouterr().err


@pytest.mark.neo4j
def test_probe_folders_attach_one_set_per_concept_and_style(
    real_cache: catalogue.Catalogue, sdag_graph: object, neo4j_settings: Settings, tmp_path: Path
) -> None:
    from mllgraph.hub import probes

    rows = [r for r in split.read_concepts(CONCEPTS) if r.wnid != "n07739125"]
    style_split = split.split("twemoji", ["openmoji", "fluent-flat", "twemoji"])
    split.write_probe_folders(real_cache, rows, style_split, tmp_path, per_style=2, side=64)
    attached = []
    try:
        for style in style_split.probe_styles:
            report = probe_folder.add_folder(
                sdag_graph, neo4j_settings, tmp_path / style, source=f"emoji:{style}"
            )
            assert not report.refused
            attached += report.attached
        assert sorted((a["wnid"], a["images"]) for a in attached) == [
            ("n02084071", 2),
            ("n02084071", 2),
            ("n02121620", 2),
            ("n02121620", 2),
        ]
        ours = {a["set_id"] for a in attached}
        sources = {p.source for p in probes.probe_sets(sdag_graph) if p.id in ours}
        assert sources == {"emoji:openmoji", "emoji:fluent-flat"}
    finally:
        for a in attached:
            probes.remove_probe_set(sdag_graph, a["set_id"], neo4j_settings)


def test_training_images_never_come_from_the_held_out_style(
    real_cache: catalogue.Catalogue,
) -> None:
    rows = split.read_concepts(CONCEPTS)
    style_split = split.split("openmoji")
    train = split.training_images(real_cache, rows, style_split, per_emoji=1, side=32)
    assert {t.style for t in train} == set(style_split.probe_styles)
    assert len(train) == 4 * 3
    tasks = split.task_images(real_cache, rows, style_split, per_emoji=1, side=32)
    assert not {t.source_sha256 for t in train} & {t.source_sha256 for t in tasks}
    assert not {t.seed for t in train} & {t.seed for t in tasks}
    with pytest.raises(InvalidArgument, match="held-out style"):
        split.training_images(real_cache, rows, style_split, styles=["openmoji"])
    held = split.training_images(
        real_cache, rows, style_split, per_emoji=1, side=32, exclude=[DOG, DOG_FACE]
    )
    assert {t.hexcode for t in held} == {CAT, "1F34E"}
