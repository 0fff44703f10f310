"""The probe data CHCO simulates on: stored probe outputs, read and aligned per task.

- `ProbeOutputCache` (and the process's `CACHE`): each model's memory-mapped probe outputs,
  opened once per file version, and its softmax row statistics.
- `proxy_probes`: stand-in probe sets for classes with none under their own concept.
- `probe_matrix`: task-class labels of the usable probe images and each model's logits on
  them, aligned (one gather per model); `class_probes`: which probe sets form each class;
  `probe_sources`: where each set's images come from, where that can be held out.

No model runs here. Imports hub (probe outputs), combine and below, and `select.reads`; must
not import `select.run` or anything above select.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from mllgraph.combine.rule import softmax_row_stats
from mllgraph.combine.stacked import ClassProbes
from mllgraph.hub import probe_outputs
from mllgraph.select.reads import Reads
from mllgraph.settings import Settings

# -- probe outputs cache ---------------------------------------------------------------------


class ProbeOutputCache:
    """Each model's memory-mapped probe outputs, opened once per file version (an LRU of
    `capacity` models); only the probe sets a task needs are ever read."""

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, float], probe_outputs.ProbeOutputs] = OrderedDict()
        self._layouts: dict[tuple[Any, ...], dict[str, tuple[int, int]]] = {}
        # id(data) -> (data, row stats, whether all of data is finite)
        self._stats: OrderedDict[int, tuple[np.ndarray, np.ndarray, bool]] = OrderedDict()
        self._stats_bytes = 0
        self._lock = threading.Lock()

    def get(
        self, settings: Settings, mid: str, model_store: str | None = None
    ) -> probe_outputs.ProbeOutputs:
        """`model_store`: `str(settings.model_store)`, when the caller asks for many models
        (and has called `probe_outputs.refresh_current` for them: a model store at a URL)."""
        if model_store is None:
            probe_outputs.refresh_current(settings, (mid,))
        path = probe_outputs.probe_index_file(model_store or str(settings.model_store), mid)
        try:
            mtime = os.stat(path).st_mtime
        except (FileNotFoundError, NotADirectoryError):  # as Path.exists()
            mtime = -1.0
        key = (mid, mtime)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = probe_outputs.open_probe_outputs(settings, mid)
        with self._lock:
            # Models labelled on the same probe sets share one index object, so a task's
            # usable rows are worked out once per layout, not once per model.
            layout = self._layouts.setdefault(tuple(sorted(value.sets.items())), value.sets)
            value = probe_outputs.ProbeOutputs(value.data, layout, value.temperature)
            self._items[key] = value
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            if len(self._layouts) > self.capacity:
                self._layouts.clear()
        return value

    def row_stats(
        self, settings: Settings, outputs: probe_outputs.ProbeOutputs
    ) -> np.ndarray | None:
        """`softmax_row_stats` of all of a model's probe rows at its temperature, computed once
        per file version and kept in an LRU of `settings.select_probe_stats_mb` (None: off)."""
        budget = settings.select_probe_stats_mb * 2**20
        if budget <= 0:
            return None
        key = id(outputs.data)
        with self._lock:
            hit = self._stats.get(key)
            if hit is not None and hit[0] is outputs.data:
                self._stats.move_to_end(key)
                return hit[1]
        data = np.asarray(outputs.data, dtype=np.float32)
        stats = softmax_row_stats(data, outputs.temperature)
        stats.setflags(write=False)
        finite = bool(np.isfinite(data).all())
        with self._lock:
            old = self._stats.pop(key, None)
            if old is not None:
                self._stats_bytes -= old[1].nbytes
            self._stats[key] = (outputs.data, stats, finite)  # holding data keeps its id unique
            self._stats_bytes += stats.nbytes
            while self._stats_bytes > budget and self._stats:
                _, (_, dropped, _) = self._stats.popitem(last=False)
                self._stats_bytes -= dropped.nbytes
        return stats

    def all_finite(self, outputs: probe_outputs.ProbeOutputs) -> bool:
        """Whether all of the model's probe logits are finite, as found beside its row stats
        (False when they are not kept): then so is any subset of its rows, and CHCO need not
        scan them again (about 40 ms for the 1,300 models of a 100-class task)."""
        with self._lock:
            hit = self._stats.get(id(outputs.data))
            return hit is not None and hit[0] is outputs.data and hit[2]


CACHE = ProbeOutputCache()


# -- the task's probe images -----------------------------------------------------------------


def nearest_first(row: dict[str, Any]) -> tuple[bool, int, float, str]:
    """`proxy_probes`' order of a class's ancestor and related candidate rows: ancestors
    first, then the deepest concept, then the better label."""
    return (
        row["kind"] != "ancestor",
        -(row.get("via_depth") or 0),
        -row["score"],
        row["via"] or "",
    )


def proxy_probes(
    reads: Reads, rows: list[dict[str, Any]], probe_rows: list[dict[str, Any]], k: int
) -> list[dict[str, Any]]:
    """Stand-in probes for classes with none under their own concept.

    Without images a class cannot be simulated, and CHCO would then pick whichever head hurts
    the other classes least, however unrelated. So such a class borrows the probe sets under
    the nearest concept its ancestor/related candidates were labelled on, provided no other
    class of the task has probes there: its ancestors first, the deepest first (every image
    of the class is an image of an ancestor: "slacks" borrows the trouser probes its
    trouser.n.01 candidates came from), then its related concepts, the deepest first (a
    sibling's images are of another thing: T-shirt images for "slacks" made CHCO cover it
    with a T-shirt head). Marked `proxy` with a large distance, so a class's own sets always
    win.
    """
    have = {r["class_index"] for r in probe_rows}
    near: dict[int, list[str]] = {}
    for r in sorted(rows, key=nearest_first):
        if r["class_index"] not in have and r["kind"] in ("ancestor", "related") and r["via"]:
            near.setdefault(r["class_index"], []).append(r["via"])
    vias = sorted({v for vs in near.values() for v in vs})
    if not vias:
        return []
    # task_probes keys its rows by `index`: here the position of each concept in `vias`.
    sets_under: dict[str, list[dict[str, Any]]] = {v: [] for v in vias}
    for r in reads.task_probes(vias):
        sets_under[vias[r["class_index"]]].append(r)
    claimed = {r["set_id"] for r in probe_rows}
    extra: list[dict[str, Any]] = []
    for ci in sorted(near):
        for via in dict.fromkeys(near[ci]):  # each concept once
            found = [{**r, "class_index": ci} for r in sets_under[via]]
            free = [r for r in found if r["set_id"] not in claimed]
            if free and len(free) == len(found):
                extra += [{**r, "distance": 1000 + r["distance"], "proxy": via} for r in free]
                claimed |= {r["set_id"] for r in free}
                break
    return extra


def _usable_sets(
    probe_rows: list[dict[str, Any]], outputs: dict[str, probe_outputs.ProbeOutputs]
) -> tuple[dict[str, tuple[int, int]], list[tuple[str, int]]]:
    """{set: (its task class, distance)}, a set under two task classes going to the nearer
    one; and the usable sets, in id order, with the images of each that every model in
    `outputs` has outputs for."""
    nearest: dict[str, tuple[int, int]] = {}
    for r in probe_rows:
        best = nearest.get(r["set_id"])
        if best is None or r["distance"] < best[1]:
            nearest[r["set_id"]] = (r["class_index"], r["distance"])
    layouts = list({id(o.sets): o.sets for o in outputs.values()}.values())
    usable = []
    for set_id in sorted(nearest):
        counts = [lay[set_id][1] for lay in layouts if set_id in lay]
        if outputs and len(counts) == len(layouts) and min(counts) > 0:
            usable.append((set_id, min(counts)))
    return nearest, usable


def class_probes(
    probe_rows: list[dict[str, Any]], outputs: dict[str, probe_outputs.ProbeOutputs], k: int
) -> tuple[ClassProbes, ...]:
    """Per task class, the (probe set, images used) pairs whose images `probe_matrix` labels
    with it: which probe images form each class, whatever the classes are called (the
    stacked rule's fit cache is keyed by it)."""
    nearest, usable = _usable_sets(probe_rows, outputs)
    return tuple(tuple((s, n) for s, n in usable if nearest[s][0] == c) for c in range(k))


def probe_sources(probe_rows: list[dict[str, Any]]) -> dict[str, str]:
    """{probe set: its source} for the sets whose concept has probe sets from two sources or
    more (one emoji in several art styles); "" for the others. Only such sets say how a rule
    fares on a new rendering of the same concept; two sets of different concepts under one
    task class (Fashion's "Shirt" and "T-shirt/top" pools under "shirt") differ by concept,
    not by source, and holding one out would measure something else
    (`combine.stacked.source_folds`)."""
    by_concept: dict[str, set[str]] = {}
    for r in probe_rows:
        by_concept.setdefault(r["wnid"], set()).add(r.get("source") or "")
    return {
        r["set_id"]: (r.get("source") or "") if len(by_concept[r["wnid"]]) > 1 else ""
        for r in probe_rows
    }


def probe_matrix(
    probe_rows: list[dict[str, Any]], outputs: dict[str, probe_outputs.ProbeOutputs], k: int
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Task-class labels of the probe images and each model's logits on them, aligned.

    A set under two task classes goes to the nearer one. Only images every candidate model
    has outputs for are used (models labelled on different probe sets stay comparable).
    Which rows those are comes from each model's index; its logits are then read with one
    gather from its memory map (not one slice per probe set: 100 classes x 1,000 models).
    Also returns each model's row numbers in its file.
    """
    nearest, usable = _usable_sets(probe_rows, outputs)
    models = sorted(outputs)
    layouts = list({id(outputs[m].sets): outputs[m].sets for m in models}.values())
    labels = np.concatenate(
        [np.full(n, nearest[s][0], dtype=np.int64) for s, n in usable] or [np.zeros(0, np.int64)]
    )
    logits: dict[str, np.ndarray] = {}
    rows_by_model: dict[str, np.ndarray] = {}
    if not usable:
        return labels, logits, rows_by_model
    lengths = np.array([n for _, n in usable], dtype=np.int64)
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    rows_of: dict[int, np.ndarray] = {}
    for lay in layouts:
        starts = np.array([lay[s][0] for s, _ in usable], dtype=np.int64)
        rows_of[id(lay)] = np.repeat(starts, lengths) + within
    for m in models:
        rows_by_model[m] = rows_of[id(outputs[m].sets)]
        # Gathered from a plain view of the memory map: memmap's own indexing costs more.
        logits[m] = np.asarray(outputs[m].data)[rows_by_model[m]].astype(np.float32)
    return labels, logits, rows_by_model
