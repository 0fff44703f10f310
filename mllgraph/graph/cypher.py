"""Cypher statements, loaded by name from `.cypher` files.

Every statement the code runs lives in the top-level `cypher/` folder (installed as
`mllgraph._cypher`); names are paths without the suffix, e.g. `graph/create_concepts`. Values
are always passed as parameters, never formatted into the text.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

_REPO_DIR = Path(__file__).resolve().parents[2] / "cypher"


def _root() -> Path:
    if _REPO_DIR.is_dir():  # a checkout: read the files being edited
        return _REPO_DIR
    return Path(str(resources.files("mllgraph._cypher")))


@cache
def load(name: str) -> str:
    """The text of `cypher/<name>.cypher`, without comment lines."""
    path = _root() / f"{name}.cypher"
    if not path.is_file():
        raise KeyError(f"no Cypher file {name!r} under {_root()} (known: {', '.join(names())})")
    lines = path.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("//")).strip()


def statements(name: str) -> list[str]:
    """A file of several statements (schema), split on `;` at line ends."""
    return [s.strip() for s in load(name).split(";\n") if s.strip().rstrip(";")]


def doc(name: str) -> str:
    """The leading `//` comment of a file: what a cookbook query answers."""
    path = _root() / f"{name}.cypher"
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.lstrip().startswith("//"):
            break
        out.append(line.lstrip()[2:].strip())
    return " ".join(out)


def names(prefix: str = "") -> list[str]:
    root = _root()
    return sorted(
        str(p.relative_to(root).with_suffix(""))
        for p in root.rglob("*.cypher")
        if str(p.relative_to(root)).startswith(prefix)
    )
