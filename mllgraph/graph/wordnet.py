"""WordNet 3.0 nouns, read from Debian's `wordnet-base` files.

The SDAG is WordNet's noun hierarchy. Loading parses `data.noun` and `index.noun` directly
(under a second) rather than walking nltk's reader synset by synset (tens of seconds); the
names it gives (`dog.n.01`) follow nltk's rule exactly: first lemma, lower-cased, and the
synset's position among that lemma's senses in `index.noun`. Morphology reads the same files:
`noun_morphology_data` gives what nltk's morphy consults for nouns (the `index.noun` lemmas and
the `noun.exc` exception lists) in well under a second, where building nltk's reader took tens
of seconds (all four parts of speech, and its multilingual `map_wn` mapping over
`index.sense`). `noun_tag_counts` reads WordNet's sense frequencies from `index.sense` (the
tag counts of the semantic concordance: how often each sense of a lemma was tagged), the
prior grounding puts on a lemma's senses. `nltk_wordnet` still builds nltk's reader — the
test that checks our morphology against nltk's uses it — over a folder `prepare_nltk_data`
lays out as nltk expects (a real copy, plus the `lexnames` file Debian does not ship); we
never call `nltk.download`.
"""

from __future__ import annotations

import re
import shutil
from collections import deque
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from mllgraph import gc_pause
from mllgraph.errors import FailedPrecondition

ROOT_WNID = "n00001740"  # entity.n.01

# The 45 lexicographer files (man 5 lexnames); Debian ships no `lexnames` file.
LEXNAMES: tuple[str, ...] = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather",
    "adj.ppl",
)  # fmt: skip
_LEXNAME_CATEGORY = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}

WORDNET_FILES = ("data.noun", "index.noun", "noun.exc", "index.sense")


@dataclass
class Synset:
    wnid: str  # 'n' + 8-digit offset: the ImageNet id
    name: str  # nltk-style 'dog.n.01'
    lemmas: list[str]  # as written in WordNet, underscores for spaces
    definition: str
    lexname: str
    hypernyms: list[str] = field(default_factory=list)  # wnids
    instance_hypernyms: list[str] = field(default_factory=list)
    depth: int = -1  # shortest IS_A path to entity.n.01


@dataclass
class WordNetNouns:
    synsets: dict[str, Synset]
    lemma_index: dict[str, list[str]]  # lower-case lemma ('domestic_dog') -> wnids, sense order

    def get(self, wnid: str) -> Synset:
        return self.synsets[wnid]

    def with_ancestors(self, wnid: str) -> frozenset[str]:
        """`wnid` and every concept above it (hypernyms and instance hypernyms)."""
        seen, todo = {wnid}, [wnid]
        while todo:
            s = self.synsets[todo.pop()]
            for up in (*s.hypernyms, *s.instance_hypernyms):
                if up not in seen:
                    seen.add(up)
                    todo.append(up)
        return frozenset(seen)


def lemma_key(text: str) -> str:
    """The form lemmas are indexed under: lower case, spaces as underscores."""
    return "_".join(text.strip().lower().split())


def _check_dir(wordnet_dir: Path) -> None:
    missing = [f for f in ("data.noun", "index.noun") if not (wordnet_dir / f).is_file()]
    if missing:
        raise FailedPrecondition(
            f"WordNet 3.0 files {missing} not found in {wordnet_dir}; install them with "
            "`apt-get install wordnet-base wordnet-sense-index` or set MLLGRAPH_WORDNET_DIR"
        )


def _parse_index(path: Path) -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith(" "):
                continue  # licence header
            parts = line.split()
            lemma, p_cnt = parts[0], int(parts[3])
            synset_cnt = int(parts[2])
            offsets = parts[4 + p_cnt + 2 :]
            assert len(offsets) == synset_cnt, line
            index[lemma] = ["n" + o for o in offsets]
    return index


def _parse_data(path: Path) -> dict[str, Synset]:
    synsets: dict[str, Synset] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith(" "):
                continue
            body, _, gloss = line.partition(" | ")
            parts = body.split()
            offset, lex_filenum = parts[0], int(parts[1])
            w_cnt = int(parts[3], 16)
            lemmas = [parts[4 + 2 * i] for i in range(w_cnt)]
            i = 4 + 2 * w_cnt
            p_cnt = int(parts[i])
            hyper, inst = [], []
            for j in range(p_cnt):
                symbol, target, pos = parts[i + 1 + 4 * j : i + 4 + 4 * j]
                if pos != "n":
                    continue
                if symbol == "@":
                    hyper.append("n" + target)
                elif symbol == "@i":
                    inst.append("n" + target)
            wnid = "n" + offset
            synsets[wnid] = Synset(
                wnid=wnid,
                name="",
                lemmas=lemmas,
                definition=gloss.strip(),
                lexname=LEXNAMES[lex_filenum],
                hypernyms=hyper,
                instance_hypernyms=inst,
            )
    return synsets


def _assign_depths(synsets: dict[str, Synset]) -> None:
    children: dict[str, list[str]] = {}
    for s in synsets.values():
        for parent in s.hypernyms + s.instance_hypernyms:
            children.setdefault(parent, []).append(s.wnid)
    synsets[ROOT_WNID].depth = 0
    queue = deque([ROOT_WNID])
    while queue:
        wnid = queue.popleft()
        for child in children.get(wnid, ()):
            if synsets[child].depth < 0:
                synsets[child].depth = synsets[wnid].depth + 1
                queue.append(child)


@cache
def load_nouns(wordnet_dir: Path = Path("/usr/share/wordnet")) -> WordNetNouns:
    """All WordNet 3.0 noun synsets with nltk-compatible names, parents and depths."""
    _check_dir(wordnet_dir)
    with gc_pause.paused(freeze=True):  # kept for the process (@cache): mllgraph.gc_pause
        synsets = _parse_data(wordnet_dir / "data.noun")
        index = _parse_index(wordnet_dir / "index.noun")
        for s in synsets.values():
            first = s.lemmas[0].lower()
            sense = index[first].index(s.wnid) + 1
            s.name = f"{first}.n.{sense:02d}"
        _assign_depths(synsets)
    return WordNetNouns(synsets=synsets, lemma_index=index)


@cache
def noun_tag_counts(wordnet_dir: Path = Path("/usr/share/wordnet")) -> dict[str, dict[str, int]]:
    """Lemma key ('coffee') -> {wnid: tag count} for every noun sense `index.sense` lists.

    A line is `lemma%ss_type:lex_filenum:lex_id:head_word:head_id offset sense_number
    tag_cnt`; ss_type 1 is a noun. Most senses were never tagged (count 0): the counts say
    which sense is dominant where they exist, nothing where they do not. Raises
    FailedPrecondition when the file is missing (Debian package `wordnet-sense-index`).
    """
    path = wordnet_dir / "index.sense"
    if not path.is_file():
        raise FailedPrecondition(
            f"WordNet sense index {path} not found; install it with "
            "`apt-get install wordnet-sense-index` or set MLLGRAPH_WORDNET_DIR"
        )
    counts: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                key, offset, _sense_number, tag_count = parts
                lemma, _, lex_sense = key.partition("%")
                if not lex_sense.startswith("1:"):
                    continue  # not a noun
                counts.setdefault(lemma.lower(), {})["n" + offset] = int(tag_count)
            except ValueError as e:
                raise FailedPrecondition(f"{path} line {number} is malformed: {line!r}") from e
    return counts


@cache
def noun_morphology_data(
    wordnet_dir: Path = Path("/usr/share/wordnet"),
) -> tuple[frozenset[str], dict[str, tuple[str, ...]]]:
    """What nltk's morphy consults for nouns: the `index.noun` lemmas and `noun.exc`
    (inflected form -> base forms; a form listed twice keeps its last line, as in nltk)."""
    _check_dir(wordnet_dir)
    with (wordnet_dir / "index.noun").open(encoding="utf-8") as f:
        lemmas = frozenset(line.split(None, 1)[0] for line in f if not line.startswith(" "))
    exceptions: dict[str, tuple[str, ...]] = {}
    with (wordnet_dir / "noun.exc").open(encoding="utf-8") as f:
        for line in f:
            terms = line.split()
            exceptions[terms[0]] = tuple(terms[1:])
    return lemmas, exceptions


def prepare_nltk_data(wordnet_dir: Path, nltk_data: Path) -> Path:
    """Lay out `nltk_data/corpora/wordnet` as nltk's reader expects; returns `nltk_data`.

    nltk ignores a symlinked corpus folder and needs `lexnames`, so we copy the files and
    write that one ourselves. Idempotent.
    """
    _check_dir(wordnet_dir)
    target = nltk_data / "corpora" / "wordnet"
    target.mkdir(parents=True, exist_ok=True)
    for name in sorted(p.name for p in wordnet_dir.iterdir() if p.is_file()):
        dst = target / name
        src = wordnet_dir / name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, dst)
    lexnames = target / "lexnames"
    if not lexnames.exists():
        lines = [
            f"{i:02d}\t{name}\t{_LEXNAME_CATEGORY[name.split('.')[0]]}\n"
            for i, name in enumerate(LEXNAMES)
        ]
        lexnames.write_text("".join(lines), encoding="utf-8")
    return nltk_data


@cache
def nltk_wordnet(wordnet_dir: Path, nltk_data: Path):  # -> nltk.corpus.reader.WordNetCorpusReader
    """An nltk WordNet reader over the Debian files (no download)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    root = prepare_nltk_data(wordnet_dir, nltk_data) / "corpora" / "wordnet"
    # nltk only opens corpora under its data path (a sandbox since nltk 3.9.x).
    if str(nltk_data) not in nltk.data.path:
        nltk.data.path.insert(0, str(nltk_data))
    return WordNetCorpusReader(str(root), None)


def concept_display_name(name: str) -> str:
    """'gym_shoe.n.01' -> 'gym shoe' (first lemma, underscores as spaces)."""
    m = re.match(r"^(.+)\.n\.\d+$", name or "")
    return (m.group(1) if m else name or "").replace("_", " ")
