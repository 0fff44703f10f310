"""The catalogue: for each emoji (by code points) the source file of each style that draws it.

Styles (`STYLES`), each from one pinned package (`install.PACKAGES`):

- `openmoji`: OpenMoji's `color/svg/<HEXCODE>.svg`, annotated in `data/openmoji.json`.
- `fluent-flat`, `fluent-modern`: Fluent Emoji's `icons/{flat,modern}/<name>.svg`. The npm
  package carries no per-emoji metadata (only the icons, LICENSE, package.json, README), so a
  file name (`dog-face`, `man-cook-default`) is matched to the emoji whose CLDR name
  (OpenMoji's `annotation`) or Unicode / short name (`emoji.json`) has that slug; a short
  table (`FLUENT_ALIASES`) covers the few names Fluent spells its own way.
- `twemoji`: Twemoji's 64 px PNGs, `img/twitter/64/<image>` for each `emoji.json` entry with
  `has_img_twitter` (64 px is the largest single-image size; the package's `sheets-128` and
  `sheets-256` are 128- and 256-colour palettes of the same 64 px sheets, not larger images).

Skin-tone variants are left out (Fluent's `-light`, `-medium`... files, OpenMoji's entries with
a `skintone`, emoji.json's `skin_variations`): one image per emoji and style.

Emoji are keyed by hexcode, code points in upper-case hex joined by '-' as OpenMoji writes
them (`1F415`, `1F468-200D-1F373`). Presentation selectors (FE0F) are ignored when matching
(`key`), since the packages disagree on them (`2764` vs `2764-FE0F`).

Pure parsing of the packages' own files; nothing is fetched here (see `install`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mllgraph.errors import FailedPrecondition, InvalidArgument, NotFound
from mllgraph.hubs.emoji import install

STYLES: tuple[str, ...] = ("openmoji", "fluent-flat", "fluent-modern", "twemoji")

PACKAGE_OF: dict[str, str] = {
    "openmoji": "openmoji",
    "fluent-flat": "fluentui-emoji",
    "fluent-modern": "fluentui-emoji",
    "twemoji": "emoji-datasource-twitter",
}

LICENCE: dict[str, str] = {
    "openmoji": "CC-BY-SA-4.0",
    "fluent-flat": "MIT",
    "fluent-modern": "MIT",
    "twemoji": "CC-BY-4.0",
}

HEXCODE_RE = re.compile(r"^[0-9A-F]{4,6}(-[0-9A-F]{4,6})*$")
_VS16 = "FE0F"
_TONES = ("-medium-dark", "-medium-light", "-medium", "-dark", "-light")  # longest first

# Fluent file stems whose names differ from every CLDR / Unicode / short name: the name to
# look up instead (checked by hand against the emoji each file draws).
FLUENT_ALIASES: dict[str, str] = {
    "blackbird": "black bird",
    "man-blonde-hair": "man: blond hair",
    "woman-blonde-hair": "woman: blond hair",
    "person-blonde-hair": "person: blond hair",
    "man-deaf": "deaf man",
    "woman-deaf": "deaf woman",
    "person-deaf": "deaf person",
    "man-merpeople": "merman",
    "woman-merpeople": "mermaid",
    "person-merpeople": "merperson",
    "man-with-bunny-ears": "men with bunny ears",
    "person-with-bunny-ears": "people with bunny ears",
    "person-wrestling": "people wrestling",
    "person-elf": "elf",
    "person-fairy": "fairy",
    "person-genie": "genie",
    "person-mage": "mage",
    "person-superhero": "superhero",
    "person-supervillain": "supervillain",
    "person-vampire": "vampire",
    "person-zombie": "zombie",
    "phoenix-bird": "phoenix",
    "stuffedbread": "stuffed flatbread",
    "stuffedbread-flat": "stuffed flatbread",
}


def key(hexcode: str) -> str:
    """The matching key of a hexcode: upper case, presentation selectors (FE0F) dropped.
    InvalidArgument for anything that is not code points joined by '-'."""
    code = hexcode.strip().upper()
    if not HEXCODE_RE.match(code):
        raise InvalidArgument(
            f"hexcode {hexcode!r}: expected code points in hex joined by '-' (e.g. 1F415, "
            "1F468-200D-1F373)"
        )
    return "-".join(cp for cp in code.split("-") if cp != _VS16) or code


def slug(name: str) -> str:
    """A name as Fluent's file names spell it: ASCII, lower case, runs of other characters
    as one '-' ('#' and '*' spelled out, as in `keycap-hashtag`)."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    text = text.replace("&", "and").replace("#", "hashtag").replace("*", "asterisk")
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


@dataclass(frozen=True)
class Emoji:
    hexcode: str  # OpenMoji's spelling where OpenMoji has it, else emoji.json's `unified`
    name: str  # CLDR short name (OpenMoji annotation), else the Unicode name in lower case
    sources: dict[str, Path] = field(default_factory=dict)  # style -> source file


@dataclass
class Catalogue:
    root: Path  # the cache the sources lie in
    emoji: dict[str, Emoji]  # by key()
    unmatched: dict[str, list[str]] = field(default_factory=dict)  # style -> file stems

    def get(self, hexcode: str) -> Emoji:
        k = key(hexcode)
        if k not in self.emoji:
            raise NotFound(f"emoji {hexcode}: no style in the catalogue draws it")
        return self.emoji[k]

    def source(self, hexcode: str, style: str) -> Path:
        check_style(style)
        emoji = self.get(hexcode)
        if style not in emoji.sources:
            raise NotFound(f"emoji {hexcode} ({emoji.name}): style {style} has no image of it")
        return emoji.sources[style]

    def with_style(self, style: str) -> list[Emoji]:
        check_style(style)
        return [e for e in self.emoji.values() if style in e.sources]

    def counts(self) -> dict[str, int]:
        """Emoji per style, with images in exactly n styles, in all, in at least one."""
        out = {s: len(self.with_style(s)) for s in STYLES}
        for n in range(1, len(STYLES) + 1):
            out[f"in_{n}_styles"] = sum(1 for e in self.emoji.values() if len(e.sources) == n)
        out["all_styles"] = out[f"in_{len(STYLES)}_styles"]
        out["any_style"] = len(self.emoji)
        return out


def check_style(style: str) -> str:
    if style not in STYLES:
        raise InvalidArgument(f"emoji style {style!r}: not one of {', '.join(STYLES)}")
    return style


def load(cache: Path, styles: Iterable[str] = STYLES) -> Catalogue:
    """The catalogue of the installed packages under `cache` (`install.fetch` first);
    FailedPrecondition naming the install step when a package is missing."""
    styles = tuple(check_style(s) for s in styles)
    for name in {PACKAGE_OF[s] for s in styles}:
        if not install.is_installed(cache, name):
            raise FailedPrecondition(
                f"emoji package {name} is not installed in {cache}: run "
                "`mllgraph hub emoji fetch` (or set MLLGRAPH_EMOJI_CACHE to a filled cache)"
            )
    openmoji_dir = install.package_dir(cache, "openmoji")
    twitter_dir = install.package_dir(cache, "emoji-datasource-twitter")
    # Names for matching Fluent's files come from both metadata files when installed.
    om_rows = _json(openmoji_dir / "data" / "openmoji.json") if _has(cache, "openmoji") else []
    tw_rows = _json(twitter_dir / "emoji.json") if _has(cache, "emoji-datasource-twitter") else []

    cat = Catalogue(root=cache, emoji={})
    names: dict[str, str] = {}  # slug -> key

    def entry(hexcode: str, name: str) -> Emoji:
        k = key(hexcode)
        if k not in cat.emoji:
            cat.emoji[k] = Emoji(hexcode=hexcode.upper(), name=name)
        return cat.emoji[k]

    for row in om_rows:
        if row.get("skintone"):
            continue
        emoji = entry(row["hexcode"], row["annotation"])
        names.setdefault(slug(row["annotation"]), key(row["hexcode"]))
        path = openmoji_dir / "color" / "svg" / f"{row['hexcode']}.svg"
        if "openmoji" in styles and path.is_file():
            emoji.sources["openmoji"] = path
    for row in tw_rows:
        title = row.get("name") or row["short_name"]
        emoji = entry(row["unified"], title.lower())
        for name in (title, *row.get("short_names", [])):
            names.setdefault(slug(name), key(row["unified"]))
        path = twitter_dir / "img" / "twitter" / "64" / row["image"]
        if "twemoji" in styles and row.get("has_img_twitter") and path.is_file():
            emoji.sources["twemoji"] = path
    for style in ("fluent-flat", "fluent-modern"):
        if style in styles:
            _add_fluent(cat, style, install.package_dir(cache, "fluentui-emoji"), names)
    # Entries only there for their names, drawn by no chosen style, are left out.
    cat.emoji = {k: e for k, e in cat.emoji.items() if e.sources}
    return cat


def _has(cache: Path, name: str) -> bool:
    return install.is_installed(cache, name)


def _json(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FailedPrecondition(f"{path}: unreadable ({e}); run `mllgraph hub emoji fetch`") from e


def fluent_stems(files: Iterable[str]) -> dict[str, str]:
    """Fluent file stems of one emoji each (skin-tone variants dropped): stem -> file name
    stem to match. `man-cook-default` -> `man-cook`; `man-cook-dark` dropped when a
    `-default` exists; `artist-palette` kept."""
    names = set(files)
    out = {}
    for stem in sorted(names):
        if stem.endswith("-default"):
            out[stem] = stem.removesuffix("-default")
            continue
        tone = next((t for t in _TONES if stem.endswith(t)), None)
        if tone and f"{stem.removesuffix(tone)}-default" in names:
            continue
        out[stem] = stem
    return out


def _add_fluent(cat: Catalogue, style: str, root: Path, names: dict[str, str]) -> None:
    folder = root / "icons" / style.removeprefix("fluent-")
    files = {p.stem: p for p in folder.glob("*.svg")}
    unmatched = []
    for stem, name in fluent_stems(files).items():
        k = names.get(slug(FLUENT_ALIASES[name])) if name in FLUENT_ALIASES else names.get(name)
        if k is None or k not in cat.emoji:
            unmatched.append(stem)
            continue
        cat.emoji[k].sources.setdefault(style, files[stem])
    cat.unmatched[style] = unmatched
