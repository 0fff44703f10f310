"""A synthetic hub for the scale benchmarks: models with heads labelled on Zipf-skewed
WordNet concepts and tiny probe sets, written in UNWIND batches to a scratch Neo4j."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from mllgraph.hub import probe_outputs
from mllgraph.settings import Settings

# Synthetic hubs are drawn from these subtrees (shares of the concept pool): real hubs are
# mostly animals and artifacts (ImageNet), with some food and plants.
SELECT_SUBTREES = {"n00015388": 0.4, "n00021939": 0.4, "n00021265": 0.1, "n00017222": 0.1}


SELECT_POOL = 4000  # concepts heads are drawn from (Zipf over a random order of them)


SELECT_ZIPF = 0.9


SELECT_TASK_POOL = 300  # concepts tasks draw from: each has a probe set


SELECT_PROBES_PER_SET = 5


class SyntheticHub:
    """Synthetic labelled models over the real SDAG, written the way the hub writes them:
    Model/Head/DECLARED/LABELED in Neo4j, probe outputs as `probe_outputs.npy` files."""

    def __init__(
        self, graph: Any, settings: Settings, wn: Any, seed: int, heads: tuple[int, int] = (20, 100)
    ) -> None:
        self.graph, self.settings, self.wn = graph, settings, wn
        self.heads_range = heads
        self.rng = np.random.default_rng(seed)
        self.children: dict[str, list[str]] = {}
        for s in wn.synsets.values():
            for p in s.hypernyms:
                self.children.setdefault(p, []).append(s.wnid)
        self._anc: dict[str, frozenset[str]] = {}
        pool: list[str] = []
        for root, share in SELECT_SUBTREES.items():
            below = sorted(self._below(root))
            take = min(len(below), int(SELECT_POOL * share))
            pool += [str(w) for w in self.rng.choice(below, size=take, replace=False)]
        self.pool = np.array(pool)
        self.rng.shuffle(self.pool)
        weights = 1.0 / np.arange(1, len(self.pool) + 1) ** SELECT_ZIPF
        self.weights = weights / weights.sum()
        self.models: list[str] = []
        self.head_concepts: set[str] = set()
        self.task_pool: list[str] = []
        self.probe_ids: list[str] = []
        self._under_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._pending: list[tuple[str, list[str], np.ndarray]] = []  # outputs not yet written

    def _below(self, root: str) -> set[str]:
        out, stack = set(), [root]
        while stack:
            for c in self.children.get(stack.pop(), []):
                if c not in out:
                    out.add(c)
                    stack.append(c)
        return out

    def ancestors(self, wnid: str) -> frozenset[str]:
        """Every ancestor of `wnid` (IS_A and instance-of), not `wnid` itself."""
        if wnid not in self._anc:
            s = self.wn.synsets[wnid]
            out: set[str] = set()
            for p in s.hypernyms + s.instance_hypernyms:
                out.add(p)
                out |= self.ancestors(p)
            self._anc[wnid] = frozenset(out)
        return self._anc[wnid]

    def _model_rows(self, index: int) -> tuple[dict[str, Any], list[dict[str, Any]], list[Any]]:
        rng = self.rng
        mid = f"synthetic-{index:05d}@1"
        h = int(rng.integers(self.heads_range[0], self.heads_range[1] + 1))
        concepts = [str(c) for c in rng.choice(self.pool, size=h, replace=False, p=self.weights)]
        quality = rng.beta(4.0, 2.0, size=h)
        heads = [
            {"index": i, "label": self.wn.synsets[c].lemmas[0].replace("_", " "), "wnid": c}
            for i, c in enumerate(concepts)
        ]
        labels: list[dict[str, Any]] = []
        for i, c in enumerate(concepts):
            hid = f"{mid}#{i}"
            labels.append(
                {
                    "head_id": hid,
                    "wnid": c,
                    "score": float(quality[i]),
                    "method": "probe",
                    "n_probe": 5,
                    "group_heads": None,
                }
            )
            parents = self.wn.synsets[c].hypernyms
            if parents and rng.random() < 0.4:
                labels.append(
                    {
                        "head_id": hid,
                        "wnid": parents[0],
                        "method": "propagated",
                        "score": float(quality[i] * rng.uniform(0.5, 0.9)),
                        "n_probe": 10,
                        "group_heads": None,
                    }
                )
        by_parent: dict[str, list[int]] = {}
        for i, c in enumerate(concepts):
            for p in self.wn.synsets[c].hypernyms[:1]:
                by_parent.setdefault(p, []).append(i)
        for p, members in by_parent.items():
            if len(members) >= 2:
                score = float(rng.uniform(0.5, 0.95))
                labels += [
                    {
                        "head_id": f"{mid}#{i}",
                        "wnid": p,
                        "score": score,
                        "method": "group",
                        "n_probe": 10,
                        "group_heads": members,
                    }
                    for i in members
                ]
        model = {"id": mid, "name": f"synthetic-{index:05d}", "num_classes": h, "heads": heads}
        return model, labels, [concepts, quality]

    def _signal(self, concept: str) -> tuple[np.ndarray, np.ndarray]:
        """Probe-set indices whose concept is `concept` or under it, and those above it."""
        if concept not in self._under_cache:
            under = [
                i
                for i, p in enumerate(self.task_pool)
                if p == concept or concept in self.ancestors(p)
            ]
            above = [i for i, p in enumerate(self.task_pool) if p in self.ancestors(concept)]
            self._under_cache[concept] = (np.array(under, int), np.array(above, int))
        return self._under_cache[concept]

    def _probe_outputs(self, mid: str, concepts: list[str], quality: np.ndarray) -> None:
        """Logits of the model on every probe set: a head fires on images of its concept and
        of concepts under it (strength grows with its label score), weakly on a broader
        concept's images, and noise elsewhere; each model has its own scale."""

        s, n, h = len(self.task_pool), SELECT_PROBES_PER_SET, len(concepts)
        signal = np.zeros((s, h), np.float32)
        strength = (2.0 + 6.0 * quality) * self.rng.uniform(0.6, 1.4)
        for j, c in enumerate(concepts):
            under, above = self._signal(c)
            signal[under, j] = strength[j]
            signal[above, j] = 0.5 * strength[j]
        noise = self.rng.normal(0.0, 1.0, size=(s, n, h)).astype(np.float32)
        logits = signal[:, None, :] + noise
        outputs = {sid: logits[i] for i, sid in enumerate(self.probe_ids)}
        probe_outputs.save_probe_outputs(self.settings, mid, outputs, 1.0)

    def register_task_probes(self, concepts: list[str]) -> None:
        """One small probe set per task concept (the images are never read by selection)."""
        from mllgraph.hub import probes

        self.task_pool = concepts
        image = np.zeros((SELECT_PROBES_PER_SET, 8, 8), np.uint8)
        for i, wnid in enumerate(concepts):
            ps, _ = probes.add_probe_set(
                self.graph,
                self.settings,
                concept=wnid,
                images=image + (i % 251),
                set_id=f"bench-{wnid}",
                source="bench select (synthetic)",
            )
            self.probe_ids.append(ps.id)
        for mid, head_concepts, quality in self._pending:  # models made before the probes
            self._probe_outputs(mid, head_concepts, quality)
        self._pending = []

    def grow(self, size: int, batch: int = 50) -> dict[str, float]:
        """Add models until the hub has `size`; returns seconds spent on graph and files."""
        t_graph = t_files = 0.0
        while len(self.models) < size:
            rows, labels, extra = [], [], []
            for _ in range(min(batch, size - len(self.models))):
                model, lab, (concepts, quality) = self._model_rows(len(self.models) + len(rows))
                rows.append(model)
                labels += lab
                extra.append((model["id"], concepts, quality))
            t = time.perf_counter()
            self.graph.write("eval/models_create", models=rows)
            for i in range(0, len(labels), 20_000):
                self.graph.write("eval/labels_create", labels=labels[i : i + 20_000])
            self.graph.write("eval/catalogue_bump")
            t_graph += time.perf_counter() - t
            t = time.perf_counter()
            if self.task_pool:
                for mid, concepts, quality in extra:
                    self._probe_outputs(mid, concepts, quality)
            else:
                self._pending += extra
            t_files += time.perf_counter() - t
            for model in rows:
                self.models.append(model["id"])
                self.head_concepts.update(h["wnid"] for h in model["heads"])
        return {"graph_s": round(t_graph, 1), "probe_outputs_s": round(t_files, 1)}
