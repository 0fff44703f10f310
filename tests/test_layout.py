"""The rooms' layout: no import circle among mllgraph/ and services/ modules, and no room
importing a room listed after it in `mllgraph/__init__.py` (lazy imports and imports under
TYPE_CHECKING included), and no module over 800 lines unless its docstring says why."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import mllgraph

ROOT = Path(__file__).resolve().parents[1]
BASE = {"errors", "paths", "settings", "auth", "protos", "threads", "gc_pause", "v1"}
PART_OF = {"__main__": "cli", "client_types": "client"}  # top-level modules of a room
MAX_LINES = 800
LONG_MARK = "long on purpose"


def room_order() -> list[str]:
    """The rooms as `mllgraph/__init__.py` lists them, lowest first."""
    doc = mllgraph.__doc__ or ""
    block = doc.split("Rooms, lowest first", 1)[1]
    return re.findall(r"^    ([a-z]+)\s", block, re.M)


def modules() -> dict[str, Path]:
    out = {}
    for top in ("mllgraph", "services"):
        for path in (ROOT / top).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            if "v1" in rel.parts:
                continue  # generated
            name = ".".join(rel.parts)
            out[name.removesuffix(".__init__")] = path
    return out


def room_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "services":
        return "services"
    if len(parts) == 1:
        return "base"
    if parts[1] in PART_OF:
        return PART_OF[parts[1]]
    return "base" if parts[1] in BASE else parts[1]


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Every project module `module` imports, anywhere in the file."""

    def resolve(name: str) -> str | None:
        while name:
            if name in known:
                return name
            if name.startswith("mllgraph.v1"):
                return None
            name = name.rpartition(".")[0]
        return None

    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            targets = [f"{base}.{a.name}" for a in node.names] or [base]
            targets = [t if resolve(t) == t else base for t in targets]
        else:
            continue
        for t in targets:
            hit = resolve(t)
            if hit and hit != module:
                found.add(hit)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports_of(m, p, set(mods)) for m, p in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_order_lists_every_room():
    order = room_order()
    assert order[0] == "base" and order[-1] == "cli"
    rooms = {room_of(m) for m in modules()}
    assert rooms <= set(order), f"rooms missing from mllgraph/__init__.py: {rooms - set(order)}"


def test_no_import_circle():
    assert cycles(graph()) == []


def test_no_room_imports_a_room_above_it():
    rank = {room: i for i, room in enumerate(room_order())}
    upward = [
        f"{a} ({room_of(a)}) imports {b} ({room_of(b)})"
        for a, targets in graph().items()
        for b in targets
        if rank[room_of(b)] > rank[room_of(a)]
    ]
    assert upward == []


def test_modules_stay_short_or_say_why():
    long = []
    for name, path in modules().items():
        text = path.read_text()
        doc = ast.get_docstring(ast.parse(text)) or ""
        if text.count("\n") > MAX_LINES and LONG_MARK not in doc.lower():
            long.append(f"{name}: {text.count(chr(10))} lines")
    assert long == []


def test_the_checks_catch_what_they_are_for():
    # A circle and an upward import on a made-up graph: the checks can fail.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert room_of("mllgraph.select.run") == "select"
    assert room_of("mllgraph.settings") == "base"
    assert room_of("services.common") == "services"
    assert room_order().index("select") < room_order().index("reuse")


def test_every_package_is_installed() -> None:
    """pyproject.toml lists packages by hand (cypher/ is mapped into the wheel): every
    package folder must be listed, or a non-editable install lacks it."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    folders = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("mllgraph", "services")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert folders - listed == set()
