"""The concept search of the hub page: a concept, its ancestors, its children and the heads
that cover it, read from the SDAG in Neo4j (no gRPC service serves the concept graph), and
drawn as a small layered SVG (`draw`, pure)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from mllgraph.errors import InvalidArgument, NotFound

MAX_CHILDREN = 12
MAX_HEADS = 12
MIN_HEAD_SCORE = 0.05


@dataclass
class Neighbourhood:
    concept: dict[str, Any]  # wnid, name, definition, lemmas, depth
    ancestors: list[dict[str, Any]]  # wnid, name, depth; root last
    children: list[dict[str, Any]]  # wnid, name, depth
    descendant_count: int
    edges: list[tuple[str, str]]  # (child, parent) among the concept and its ancestors
    heads: list[dict[str, Any]]  # model, head, head_label, concept, score, method
    other_senses: list[dict[str, Any]] = field(default_factory=list)  # same word, other concepts

    def to_dict(self) -> dict[str, Any]:
        return {
            "concept": self.concept,
            "ancestors": self.ancestors,
            "children": self.children,
            "descendant_count": self.descendant_count,
            "edges": [{"child": c, "parent": p} for c, p in self.edges],
            "heads": self.heads,
            "other_senses": self.other_senses,
        }


def lookup(graph: Any, query: str) -> Neighbourhood:
    """`query`: a wnid ('n04133789'), a name ('sandal.n.01') or a word ('sandal', first sense)."""
    from mllgraph.graph import sdag

    query = query.strip()
    if not query:
        raise InvalidArgument("concept: type a word, a name like sandal.n.01 or a wnid")
    senses: list[dict[str, Any]] = []
    try:
        concept = sdag.concept(graph, query)
    except NotFound:
        senses = sdag.by_lemma(graph, query)
        if not senses:
            raise NotFound(f"concept {query!r}: no WordNet noun is called that") from None
        concept = sdag.concept(graph, senses[0]["wnid"])
    wnid = concept["wnid"]
    # The concept is resolved: read by wnid (sdag.ancestors/descendants would look it up again).
    ancestors = graph.read("graph/ancestors", wnid=wnid)
    total = graph.read("graph/descendant_count", wnid=wnid)[0]["descendants"]
    children = graph.read("graph/children", wnid=wnid, limit=MAX_CHILDREN)
    wnids = [wnid, *(a["wnid"] for a in ancestors)]
    edges = [(r["child"], r["parent"]) for r in graph.read("graph/is_a_among", wnids=wnids)]
    heads = graph.read(
        "cookbook/heads_covering_subtree", wnid=wnid, min_score=MIN_HEAD_SCORE, limit=MAX_HEADS
    )
    others = [s for s in senses if s.get("wnid") != wnid]
    return Neighbourhood(concept, ancestors, children, total, edges, heads, others)


# --- drawing ------------------------------------------------------------------------------------

NODE_W, NODE_H, GAP_X, GAP_Y = 150, 26, 16, 22


def _label(name: str) -> str:
    text = name.split(".")[0].replace("_", " ")
    return text if len(text) <= 20 else text[:19] + "…"


def draw(n: Neighbourhood) -> str:
    """An SVG: ancestors in layers by depth (root on top), the concept, its children below;
    the covering heads in a column on the right, linked to the concept."""
    wnid = n.concept["wnid"]
    layers: dict[int, list[dict[str, Any]]] = {}
    for a in n.ancestors:
        layers.setdefault(int(a.get("depth") or 0), []).append(a)
    top = sorted(layers)
    rows = [layers[d] for d in top] + [[n.concept]] + ([n.children] if n.children else [])
    widest = max(len(r) for r in rows)
    graph_w = widest * (NODE_W + GAP_X)
    heads_x = graph_w + 60
    width = heads_x + (NODE_W + 60 if n.heads else 0)
    height = max(len(rows), len(n.heads) + 1) * (NODE_H + GAP_Y) + GAP_Y
    pos: dict[str, tuple[float, float]] = {}
    parts: list[str] = []
    nodes: list[str] = []
    for i, row in enumerate(rows):
        y = GAP_Y + i * (NODE_H + GAP_Y)
        x0 = (graph_w - len(row) * (NODE_W + GAP_X)) / 2
        for j, c in enumerate(row):
            x = x0 + j * (NODE_W + GAP_X)
            pos.setdefault(c["wnid"], (x, y))
            is_child = i == len(rows) - 1 and c in n.children
            kind = "focus" if c["wnid"] == wnid else ("child" if is_child else "ancestor")
            title = html.escape(f"{c['name']} ({c['wnid']})")
            nodes.append(
                f'<a href="?q={html.escape(c["wnid"])}"><g class="node {kind}">'
                f"<title>{title}</title>"
                f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
                f'<text x="{x + NODE_W / 2:.0f}" y="{y + 17:.0f}">'
                f"{html.escape(_label(c['name']))}</text></g></a>"
            )
    edges = list(n.edges) + [(c["wnid"], wnid) for c in n.children]
    for child, parent in edges:
        if child in pos and parent in pos:
            (cx, cy), (px, py) = pos[child], pos[parent]
            parts.append(
                f'<line class="isa" x1="{cx + NODE_W / 2:.0f}" y1="{cy:.0f}" '
                f'x2="{px + NODE_W / 2:.0f}" y2="{py + NODE_H:.0f}"/>'
            )
    fx, fy = pos[wnid]
    for k, h in enumerate(n.heads):
        y = GAP_Y + k * (NODE_H + GAP_Y)
        label = f"{h['model']}:{h['head']} {h['score']:.2f}"
        title = html.escape(f"{h['model']} head {h['head']} ({h['head_label']}) on {h['concept']}")
        parts.append(
            f'<line class="covers" x1="{fx + NODE_W:.0f}" y1="{fy + NODE_H / 2:.0f}" '
            f'x2="{heads_x:.0f}" y2="{y + NODE_H / 2:.0f}"/>'
        )
        nodes.append(
            f'<g class="node head"><title>{title}</title>'
            f'<rect x="{heads_x:.0f}" y="{y:.0f}" width="{NODE_W + 40}" height="{NODE_H}" rx="3"/>'
            f'<text x="{heads_x + (NODE_W + 40) / 2:.0f}" y="{y + 17:.0f}">'
            f"{html.escape(label if len(label) <= 28 else label[:27] + '…')}</text></g>"
        )
    return (
        f'<svg class="concept-graph" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}">'
        + "".join(parts)
        + "".join(nodes)
        + "</svg>"
    )
