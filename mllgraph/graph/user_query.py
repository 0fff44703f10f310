"""Cypher from a person (`mllgraph query`, `Graph.run_user_query`): what is refused before the
text reaches any server. Pure: no I/O.

The query already runs in a READ transaction (writes are refused by Neo4j) with a timeout and
a row cap (see `Graph.run_user_query`). A read can still reach outside the graph, so these
are refused here, on any server (a user's own Neo4j included), with the clause named:

* `LOAD CSV` (reads host files and makes requests from the database host);
* `CALL` of any procedure outside `ALLOWED_PROCEDURES` (`dbms.listConfig`, `db.*`, plugins);
* any `apoc.*` or `dbms.*` name, procedure or function;
* `SHOW` other than indexes, constraints, procedures and functions (`SHOW USERS`,
  `SHOW SETTINGS`, `SHOW TRANSACTIONS`, ...), `TERMINATE`, `USE` (another database) and the
  administration commands (`GRANT`, `DENY`, `REVOKE`, `ALTER`).

Comments and string literals are blanked first (so `LOAD/**/CSV` is caught and
`WHERE c.name = 'load csv'` is not), and backtick-quoted names are unquoted (so
`` CALL `dbms`.`listConfig`() `` is caught). The project-managed server is locked down as
well (see `mllgraph.graph.neo4j_server`); this check is what protects a server configured by
someone else.
"""

from __future__ import annotations

import re

from mllgraph.errors import InvalidArgument

MAX_QUERY_CHARS = 100_000

ALLOWED_PROCEDURES = (
    "db.labels",
    "db.relationshipTypes",
    "db.propertyKeys",
    "db.schema.visualization",
    "db.schema.nodeTypeProperties",
    "db.schema.relTypeProperties",
)
_ALLOWED_LOWER = {name.lower() for name in ALLOWED_PROCEDURES}

# What may follow SHOW (after modifiers such as ALL, RANGE, UNIQUE): listings of the schema.
_SHOW_ALLOWED = {"INDEX", "INDEXES", "CONSTRAINT", "CONSTRAINTS", "PROCEDURE", "PROCEDURES"}
_SHOW_ALLOWED |= {"FUNCTION", "FUNCTIONS"}
_SHOW_MODIFIERS = {
    "ALL", "RANGE", "TEXT", "POINT", "LOOKUP", "FULLTEXT", "VECTOR", "BTREE", "UNIQUE",
    "UNIQUENESS", "EXISTENCE", "EXIST", "EXISTS", "NODE", "RELATIONSHIP", "REL", "KEY",
    "PROPERTY", "TYPE", "BUILT", "IN", "USER", "DEFINED",
}  # fmt: skip

# A keyword starts where no name, property access or parameter continues.
_K = r"(?<![\w.$])"
_LOAD_CSV = re.compile(_K + r"LOAD\s+CSV\b", re.IGNORECASE)
_CALL = re.compile(_K + r"CALL\s+([A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*)", re.IGNORECASE)
_NAMESPACE = re.compile(_K + r"(apoc|dbms)\s*\.\s*([A-Za-z_][\w.]*)?", re.IGNORECASE)
_SHOW = re.compile(_K + r"SHOW\s+((?:[A-Za-z_]\w*\s*){1,6})", re.IGNORECASE)
_ADMIN = re.compile(_K + r"(TERMINATE|GRANT|DENY|REVOKE|ALTER)\b", re.IGNORECASE)
_USE = re.compile(r"(?:^|[{(]|\bUNION(?:\s+ALL)?)\s*USE\s+([\w.]+)", re.IGNORECASE)


def blank_literals(text: str) -> str:
    """`text` with comments as one space, string literals as `''` and backtick-quoted names
    unquoted. An unterminated literal or comment blanks the rest (the server then refuses
    the syntax)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        two = text[i : i + 2]
        if two == "//":
            end = text.find("\n", i)
            i = n if end < 0 else end
            out.append(" ")
        elif two == "/*":
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            out.append(" ")
        elif ch in "'\"":
            i += 1
            while i < n and text[i] != ch:
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append("''")
        elif ch == "`":
            i += 1
            name: list[str] = []
            while i < n:
                if text[i] == "`":
                    if text[i + 1 : i + 2] == "`":  # `` is an escaped backtick
                        name.append("`")
                        i += 2
                        continue
                    break
                name.append(text[i])
                i += 1
            i += 1
            out.append("".join(name))
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def check(text: str) -> None:
    """Raise InvalidArgument naming the first refused clause of `text`; return if none."""
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidArgument(
            f"query of {len(text):,} characters: at most {MAX_QUERY_CHARS:,} are accepted"
        )
    code = blank_literals(text)
    why = "`mllgraph query` reads the graph only"
    if _LOAD_CSV.search(code):
        raise InvalidArgument(f"LOAD CSV is refused: {why}, never files or URLs")
    for m in _CALL.finditer(code):
        name = re.sub(r"\s+", "", m.group(1))
        if name.lower() not in _ALLOWED_LOWER:
            raise InvalidArgument(
                f"CALL {name} is refused: {why}; the procedures allowed are "
                + ", ".join(ALLOWED_PROCEDURES)
            )
    m = _NAMESPACE.search(code)
    if m:
        name = re.sub(r"\s+", "", m.group(0))
        raise InvalidArgument(f"{name} is refused: {why}; no apoc.* or dbms.* name may be used")
    for m in _SHOW.finditer(code):
        words = m.group(1).upper().split()
        what = next((w for w in words if w not in _SHOW_MODIFIERS), words[-1])
        if what not in _SHOW_ALLOWED:
            shown = " ".join(words[: words.index(what) + 1])
            raise InvalidArgument(
                f"SHOW {shown} is refused: {why}; only SHOW INDEXES, CONSTRAINTS, PROCEDURES "
                "and FUNCTIONS are allowed"
            )
    m = _ADMIN.search(code)
    if m:
        raise InvalidArgument(f"{m.group(1).upper()} is refused: {why}")
    m = _USE.search(code)
    if m:
        raise InvalidArgument(
            f"USE {m.group(1)} is refused: {why}, and only the configured database (NEO4J_DATABASE)"
        )
