"""Task suites: JSON files of zero-shot tasks, each a list of class names in any wording.

    {"name": "...", "tasks": [{"name": "footwear-garment-bag", "classes": [
        {"name": "footwear", "fashion": ["Sandal", "Sneaker", "Ankle boot"]}, ...]}]}

For each class name, `fashion` lists the Fashion-MNIST classes it stands for; that mapping is
used only to score predictions, never by selection or inference.

A tuning discipline: each task may carry `"split": "dev"` (look at it while changing a rule)
or `"split": "test"` (run it only to report); `bench zeroshot` reports the halves side by
side. The shipped suite splits every task; a task without `split` counts in neither half.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mllgraph.errors import InvalidArgument
from mllgraph.hubs.fashion.data import FASHION_CLASSES

DEFAULT_SUITE = "tasks_default.json"
SPLITS = ("dev", "test")


@dataclass(frozen=True)
class SuiteClass:
    name: str
    fashion: tuple[int, ...]  # Fashion-MNIST class indices it stands for


@dataclass(frozen=True)
class Task:
    name: str
    classes: tuple[SuiteClass, ...]
    split: str | None = None  # "dev", "test" or None (module doc)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def label_map(self) -> dict[int, int]:
        """Fashion class index -> task class index."""
        return {f: i for i, c in enumerate(self.classes) for f in c.fashion}


@dataclass(frozen=True)
class Suite:
    name: str
    tasks: tuple[Task, ...]

    def half(self, split: str) -> Suite:
        """The tasks of one split ("dev" or "test")."""
        if split not in SPLITS:
            raise InvalidArgument(f"split is {split!r}; expected one of {SPLITS}")
        return Suite(f"{self.name}[{split}]", tuple(t for t in self.tasks if t.split == split))


def _fail(where: str, what: str) -> InvalidArgument:
    return InvalidArgument(f"task suite {where}: {what}")


def parse_suite(data: Any, source: str = "<data>") -> Suite:
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise _fail(source, "must be an object with a list under 'tasks'")
    if not data["tasks"]:
        raise _fail(source, "has no tasks")
    index = {name.lower(): i for i, name in enumerate(FASHION_CLASSES)}
    tasks, seen_names = [], set()
    for t_i, t in enumerate(data["tasks"]):
        where = f"{source} task #{t_i}"
        if not isinstance(t, dict):
            raise _fail(where, "must be an object")
        name = str(t.get("name") or f"task-{t_i}")
        where = f"{source} task #{t_i} ({name!r})"
        if name in seen_names:
            raise _fail(where, "duplicate task name")
        seen_names.add(name)
        split = t.get("split")
        if split is not None and split not in SPLITS:
            raise _fail(where, f"split is {split!r}; expected one of {', '.join(SPLITS)}")
        classes = t.get("classes")
        if not isinstance(classes, list) or not classes:
            raise _fail(where, "empty task: 'classes' must be a non-empty list")
        if len(classes) < 2:
            raise _fail(where, "a task needs at least two classes")
        parsed, used = [], {}
        for c_i, c in enumerate(classes):
            if (
                not isinstance(c, dict)
                or not isinstance(c.get("name"), str)
                or not c["name"].strip()
            ):
                raise _fail(where, f"class #{c_i} needs a non-empty 'name'")
            fashion = c.get("fashion")
            if not isinstance(fashion, list) or not fashion:
                raise _fail(where, f"class {c['name']!r} needs a non-empty 'fashion' list")
            ids = []
            for f in fashion:
                if not isinstance(f, str) or f.lower() not in index:
                    raise _fail(
                        where,
                        f"class {c['name']!r}: unknown Fashion-MNIST class {f!r} "
                        f"(known: {', '.join(FASHION_CLASSES)})",
                    )
                fid = index[f.lower()]
                if fid in used:
                    raise _fail(where, f"{f!r} is claimed by both {used[fid]!r} and {c['name']!r}")
                used[fid] = c["name"]
                ids.append(fid)
            parsed.append(SuiteClass(c["name"].strip(), tuple(ids)))
        tasks.append(Task(name, tuple(parsed), split))
    return Suite(str(data.get("name") or source), tuple(tasks))


def read_suite_json(
    path: str | Path | None, packaged: str, what: str = "task suite"
) -> tuple[Any, str]:
    """(a suite file's JSON data, where it came from): `path`, or the file `packaged` beside
    this module. `what` names the suite in the errors."""
    if path is None:
        text, source = (resources.files("mllgraph.eval") / packaged).read_text(), packaged
    else:
        p = Path(path)
        if not p.is_file():
            raise InvalidArgument(f"{what} {p}: no such file")
        text, source = p.read_text(encoding="utf-8"), str(p)
    try:
        return json.loads(text), source
    except json.JSONDecodeError as e:
        raise InvalidArgument(
            f"{what} {source}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from e


def load_suite(path: str | Path | None = None) -> Suite:
    """A suite from a file, or the default suite shipped with mllgraph."""
    return parse_suite(*read_suite_json(path, DEFAULT_SUITE))
