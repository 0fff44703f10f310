"""Build the reviewed emoji -> WordNet 3.0 concept file (`concepts.tsv`), in two steps.

1. ``candidates``: read the three emoji packages (npm tarballs, fetched with ``npm pack`` when
   no folder is given), keep the emoji of the object-like OpenMoji groups that have images in
   at least 3 of the 4 styles, and ground each emoji's CLDR name (and each of its tags) with
   the project's own resolver (`mllgraph.ground.resolve.default_resolver`, what
   ``mllgraph select`` uses). Writes a candidates TSV: one proposed synset per emoji, with its
   gloss, hypernyms and the runner-up senses, for a person to review.
2. ``finalize``: read the reviewer's decisions (hexcode, synset, group, note; a TSV written by
   hand after reading the candidates) and write ``concepts.tsv``: the wnid looked up from the
   synset name in WordNet 3.0, each reason the synset, the start of its gloss and the note.
   Prints how many decisions keep the grounding's candidate and how many change it.

Run as ``python -m mllgraph.hubs.emoji.build_concepts candidates|finalize ...``. Nothing in the
library's serving path imports this module. See README.md beside it for how the file was made.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mllgraph.errors import InvalidArgument
from mllgraph.graph.wordnet import WordNetNouns, load_nouns

PACKAGES = {
    "openmoji": "openmoji@17.0.0",
    "fluent": "fluentui-emoji@1.3.0",
    "twemoji": "emoji-datasource-twitter@16.0.0",
}
STYLES = ("openmoji", "fluent-flat", "fluent-modern", "twemoji")
MIN_STYLES = 3
CONCEPT_COLUMNS = ("hexcode", "name", "wnid", "synset", "group", "reason")
# OpenMoji groups whose emoji can be things with a visual referent; faces, people, gestures,
# flags, symbols and OpenMoji's own extras are left out before grounding.
OBJECT_GROUPS = ("animals-nature", "food-drink", "travel-places", "activities", "objects")
HERE = Path(__file__).parent


@dataclass
class Emoji:
    hexcode: str
    name: str  # the CLDR annotation, as OpenMoji gives it
    tags: list[str]
    group: str
    subgroup: str
    styles: set[str] = field(default_factory=set)


def fluent_slug(name: str) -> str:
    """A CLDR name as Fluent Emoji spells its file: 'man’s shoe' -> 'mans-shoe',
    'piñata' -> 'pinata', 'A button (blood type)' -> 'a-button-blood-type'."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.replace("’", "").replace("'", "").lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def fetch_packages(dest: Path) -> dict[str, Path]:
    """`npm pack` each package into `dest`; returns the tarball per package key."""
    out: dict[str, Path] = {}
    for key, spec in PACKAGES.items():
        try:
            done = subprocess.run(
                ["npm", "pack", spec, "--silent"],
                cwd=dest,
                check=True,
                capture_output=True,
                text=True,
            )
        except (OSError, subprocess.CalledProcessError) as e:
            raise RuntimeError(f"`npm pack {spec}` failed in {dest}") from e
        out[key] = dest / done.stdout.strip().splitlines()[-1]
    return out


def find_packages(folder: Path) -> dict[str, Path]:
    """The tarballs `npm pack` wrote into `folder` (named like openmoji-17.0.0.tgz)."""
    out: dict[str, Path] = {}
    for key, spec in PACKAGES.items():
        name, _, version = spec.rpartition("@")
        path = folder / f"{name}-{version}.tgz"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `npm pack {spec}` in {folder}")
        out[key] = path
    return out


def _unqualified(hexcode: str) -> str:
    """A sequence without its variation selectors (FE0F), for matching across packages."""
    return "-".join(p for p in hexcode.split("-") if p != "FE0F")


def _members(tar: tarfile.TarFile) -> list[str]:
    return [m.name for m in tar.getmembers() if m.isfile()]


def _read_json(tar: tarfile.TarFile, member: str) -> object:
    f = tar.extractfile(member)
    if f is None:
        raise FileNotFoundError(f"{member} missing from {tar.name}")
    return json.load(io.TextIOWrapper(f, encoding="utf-8"))


def read_emoji(tarballs: dict[str, Path]) -> list[Emoji]:
    """OpenMoji's emoji (skin-tone variants left out), each with the styles that draw it."""
    with tarfile.open(tarballs["openmoji"]) as tar:
        records = _read_json(tar, "package/data/openmoji.json")
        openmoji_svgs = {
            Path(n).stem.upper() for n in _members(tar) if n.startswith("package/color/svg/")
        }
    with tarfile.open(tarballs["fluent"]) as tar:
        names = _members(tar)
    fluent = {
        style: {Path(n).stem for n in names if n.startswith(f"package/icons/{sub}/")}
        for style, sub in (("fluent-flat", "flat"), ("fluent-modern", "modern"))
    }
    with tarfile.open(tarballs["twemoji"]) as tar:
        table = _read_json(tar, "package/emoji.json")
        pngs = {Path(n).name for n in _members(tar) if n.startswith("package/img/twitter/64/")}
    twemoji: set[str] = set()
    assert isinstance(table, list)
    for entry in table:
        if entry.get("has_img_twitter") and entry.get("image") in pngs:
            twemoji.add(_unqualified(entry["unified"].upper()))

    out: list[Emoji] = []
    assert isinstance(records, list)
    for r in records:
        if r.get("skintone") not in ("", None):
            continue
        hexcode = r["hexcode"].upper()
        tags = [t.strip() for t in (r.get("tags") or "").split(",") if t.strip()]
        e = Emoji(hexcode, r["annotation"], tags, r["group"], r.get("subgroups") or "")
        if hexcode in openmoji_svgs:
            e.styles.add("openmoji")
        slug = fluent_slug(e.name)
        for style, files in fluent.items():
            if slug in files:
                e.styles.add(style)
        # Twemoji lists fully qualified sequences; OpenMoji sometimes drops an FE0F.
        if _unqualified(hexcode) in twemoji:
            e.styles.add("twemoji")
        out.append(e)
    return out


def _gloss(nouns: WordNetNouns, wnid: str, limit: int = 70) -> str:
    # The definition before its examples, without WordNet's quote marks, so that a TSV
    # field never needs quoting.
    text = nouns.get(wnid).definition.split(";")[0].replace('"', "").strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _hypernym_path(nouns: WordNetNouns, wnid: str, steps: int = 3) -> str:
    names, cur = [], nouns.get(wnid)
    for _ in range(steps):
        parents = cur.hypernyms or cur.instance_hypernyms
        if not parents:
            break
        cur = nouns.get(parents[0])
        names.append(cur.name)
    return " < ".join(names)


def ground_candidates(emoji: Sequence[Emoji]) -> list[dict[str, str]]:
    """One candidate row per emoji: the resolver's grounding of its name, and of its tags."""
    from mllgraph.ground.resolve import default_resolver

    resolver = default_resolver()
    nouns = resolver.nouns
    rows: list[dict[str, str]] = []
    for e in emoji:
        row = {
            "hexcode": e.hexcode,
            "name": e.name,
            "openmoji_group": e.group,
            "openmoji_subgroup": e.subgroup,
            "styles": ",".join(s for s in STYLES if s in e.styles),
            "tags": ", ".join(e.tags),
        }
        try:
            g = resolver.resolve_name(e.name, allow_approximate=True)
        except InvalidArgument as exc:
            row.update(synset="", wnid="", method="refused", score="", gloss=str(exc)[:120])
            row.update(hypernyms="", alternatives="", tag_synsets="")
        else:
            row.update(
                synset=nouns.get(g.wnid).name,
                wnid=g.wnid,
                method=g.method + (" approximate" if g.approximate else ""),
                score=f"{g.score:.2f}",
                gloss=_gloss(nouns, g.wnid),
                hypernyms=_hypernym_path(nouns, g.wnid),
                alternatives="; ".join(
                    f"{nouns.get(w).name} {p:.2f}" for w, _, p in g.alternatives[:4] if w != g.wnid
                ),
            )
        tag_synsets: list[str] = []
        for tag in e.tags:
            try:
                t = resolver.resolve_name(tag, allow_approximate=False)
            except InvalidArgument:
                continue
            name = nouns.get(t.wnid).name
            if name != row.get("synset") and name not in tag_synsets:
                tag_synsets.append(name)
        row["tag_synsets"] = ", ".join(tag_synsets)
        rows.append(row)
    return rows


CANDIDATE_COLUMNS = (
    "hexcode", "name", "openmoji_group", "openmoji_subgroup", "styles", "synset", "wnid",
    "method", "score", "gloss", "hypernyms", "alternatives", "tag_synsets", "tags",
)  # fmt: skip


def write_tsv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, str]]) -> None:
    """Plain TSV that `line.split("\\t")` reads: no quoting, so a tab, newline or double
    quote inside a field is refused rather than quoted."""
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(
            f,
            columns,
            delimiter="\t",
            lineterminator="\n",
            extrasaction="ignore",
            quoting=csv.QUOTE_NONE,
            quotechar=None,
        )
        w.writeheader()
        for row in rows:
            bad = [c for c in columns if re.search(r'[\t\n"]', str(row.get(c, "")))]
            if bad:
                raise InvalidArgument(
                    f"{row.get('hexcode')}: fields {bad} hold a tab, newline or quote"
                )
            w.writerow(row)


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        lines = [line for line in f if line.strip() and not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))


# A decision's `change`: how the reviewed synset relates to the grounding's candidate.
CHANGES = {
    "kept": "the candidate is right",
    "refined": "the candidate is acceptable (a broader or equivalent sense); a closer one chosen",
    "wrong": "the candidate names another thing (the plant for the fruit, a person ...)",
    "refused": "the grounding proposed nothing",
}


def _expected_change(cand: dict[str, str], synset: str) -> set[str]:
    if cand["method"] == "refused" or not cand["synset"]:
        return {"refused"}
    return {"kept"} if cand["synset"] == synset else {"refined", "wrong"}


def finalize(
    candidates: list[dict[str, str]], decisions: list[dict[str, str]], nouns: WordNetNouns
) -> tuple[list[dict[str, str]], Counter[str]]:
    """The concept rows from the reviewer's decisions, and how many of the grounding's
    candidates each `CHANGES` kind holds (overall and per grounding method).

    A decision names a synset (nltk style), a group, its change and a note on the sense; the
    wnid and the gloss come from WordNet. Unknown hexcodes or synsets, and a change that does
    not fit the candidate, are errors, not skipped rows."""
    by_name = {s.name: s for s in nouns.synsets.values()}
    by_hex = {c["hexcode"]: c for c in candidates}
    rows: list[dict[str, str]] = []
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    for i, d in enumerate(decisions, start=2):
        hexcode, synset = d["hexcode"].strip().upper(), d["synset"].strip()
        where = f"decision line {i} ({hexcode})"
        if hexcode in seen:
            raise InvalidArgument(f"{where}: hexcode decided twice")
        seen.add(hexcode)
        cand = by_hex.get(hexcode)
        if cand is None:
            raise InvalidArgument(f"{where}: not among the candidates")
        s = by_name.get(synset)
        if s is None:
            raise InvalidArgument(f"{where}: {synset!r} is not a WordNet 3.0 noun synset")
        if not d.get("group", "").strip() or not d.get("note", "").strip():
            raise InvalidArgument(f"{where}: group and note are required")
        change = d.get("change", "").strip()
        expected = _expected_change(cand, synset)
        if change not in expected:
            raise InvalidArgument(
                f"{where}: change {change!r} does not fit the candidate {cand['synset']!r}; "
                f"expected one of {sorted(expected)}"
            )
        counts[change] += 1
        counts[f"{change} ({cand['method'] or 'refused'})"] += 1
        rows.append(
            {
                "hexcode": hexcode,
                "name": cand["name"],
                "wnid": s.wnid,
                "synset": s.name,
                "group": d["group"].strip(),
                "reason": f"{s.name} '{_gloss(nouns, s.wnid, 60)}': {d['note'].strip()}",
            }
        )
    counts["skipped"] = len(candidates) - len(rows)
    return rows, counts


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mllgraph.hubs.emoji.build_concepts")
    sub = p.add_subparsers(dest="step", required=True)
    c = sub.add_parser("candidates", help="ground the emoji names; write the candidates TSV")
    c.add_argument("--packages", type=Path, help="folder with the npm tarballs (else fetched)")
    c.add_argument("--out", type=Path, default=HERE / "candidates.tsv")
    f = sub.add_parser("finalize", help="write concepts.tsv from the reviewed decisions")
    f.add_argument("--candidates", type=Path, default=HERE / "candidates.tsv")
    f.add_argument("--decisions", type=Path, default=HERE / "review.tsv")
    f.add_argument("--out", type=Path, default=HERE / "concepts.tsv")
    args = p.parse_args(argv)

    if args.step == "candidates":
        with tempfile.TemporaryDirectory() as tmp:
            tarballs = find_packages(args.packages) if args.packages else fetch_packages(Path(tmp))
            emoji = read_emoji(tarballs)
        kept = [e for e in emoji if e.group in OBJECT_GROUPS and len(e.styles) >= MIN_STYLES]
        print(f"{len(emoji)} emoji; {len(kept)} in object groups with >= {MIN_STYLES} styles")
        rows = ground_candidates(kept)
        write_tsv(args.out, CANDIDATE_COLUMNS, rows)
        print(f"wrote {len(rows)} candidates to {args.out}")
        return 0

    nouns = load_nouns()
    rows, counts = finalize(read_tsv(args.candidates), read_tsv(args.decisions), nouns)
    write_tsv(args.out, CONCEPT_COLUMNS, rows)
    print(summary(rows, counts, nouns))
    print(f"wrote {args.out}")
    return 0


def nested_concepts(rows: Sequence[dict[str, str]], nouns: WordNetNouns) -> list[tuple[str, str]]:
    """(concept, ancestor) pairs of the file's concepts where one lies under the other
    (poodle under dog): a task should not hold both as classes."""
    wnids = {r["wnid"] for r in rows}
    pairs: list[tuple[str, str]] = []
    for wnid in sorted(wnids):
        seen: set[str] = set()
        stack = [wnid]
        while stack:
            s = nouns.get(stack.pop())
            for parent in s.hypernyms + s.instance_hypernyms:
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        pairs += [(nouns.get(wnid).name, nouns.get(a).name) for a in sorted(seen & wnids)]
    return pairs


def summary(
    rows: Sequence[dict[str, str]], counts: Counter[str], nouns: WordNetNouns | None = None
) -> str:
    """How the review went (the grounding's candidates kept or changed, overall and by the
    grounding's method) and the concepts per group."""
    n = len(rows)
    lines = [
        f"{n} emoji, {len({r['wnid'] for r in rows})} concepts; "
        f"{counts['skipped']} candidates left out by the review",
        "the grounding's candidates for them: "
        + ", ".join(f"{k} {counts[k]} ({100 * counts[k] / max(n, 1):.1f}%)" for k in CHANGES),
    ]
    methods = sorted({k.split(" (", 1)[1][:-1] for k in counts if " (" in k})
    for m in methods:
        per = {k: counts[f"{k} ({m})"] for k in CHANGES if counts[f"{k} ({m})"]}
        total = sum(per.values())
        lines.append(f"  method {m} ({total}): " + ", ".join(f"{k} {v}" for k, v in per.items()))
    per_group: dict[str, set[str]] = {}
    for r in rows:
        per_group.setdefault(r["group"], set()).add(r["wnid"])
    for group, wnids in sorted(per_group.items()):
        emoji = sum(r["group"] == group for r in rows)
        lines.append(f"  group {group}: {len(wnids)} concepts, {emoji} emoji")
    if nouns is not None:
        pairs = nested_concepts(rows, nouns)
        lines.append(f"{len(pairs)} (concept, ancestor) pairs among the concepts, e.g. {pairs[:3]}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
