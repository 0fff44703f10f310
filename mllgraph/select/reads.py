"""What SelectHeads reads from the graph, through the per-catalogue-version cache.

Each reader answers exactly what its query answers; the cache only decides which concepts
still need a round trip. Keys (all at one catalogue version, see `mllgraph.select.cache`):

* candidates (`select/candidates`): per class concept, with the options that shape the
  query and, when ancestors are allowed, the task's blocked concepts among that concept's
  ancestors (the only part of a concept's answer that depends on the other classes). The
  ancestors come from `select/ancestors`, also cached per concept;
* a few models' own candidates (the same query, for the stacked rule's screen): per class
  concept and model, as candidates are, each model's own best heads per kind; a subset of
  models merges them (`select.per_kind`), so a screen picking other models reads only the
  pairs never read before;
* declared candidates (`select/declared_candidates`): per whole request (a declared
  descendant is excluded when it lies under any other class of the task), so only a repeated
  request finds them; they are read only for classes no measured label covers;
* probe sets under a concept (`select/task_probes`): per concept;
* sense coverage for grounding (`select/sense_coverage`): per concept and options;
* the labelled-model count (the "no labelled models" precondition): one entry;
* the ConSE patch's broad expert (`select/patch_model`): one entry per sub-hub;
* the broadest labelled experts for the stacked rule's screen (`select/broad_models`): one
  entry per sub-hub;
* each model's cost per image (`select/model_costs`): one entry per model.
* the probe sets with their concepts' ancestors, for the "none of these" calibration and the
  estimate calibrations (`select/probe_set_concepts`): one entry.
* per model, its heads declaring probed concepts (`select/declared_heads`) and its input
  domain record (`select/model_domains`): one entry each per model.

With no cache (or a disabled one) every reader sends the same one query for the whole task
that selection always sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mllgraph.select.cache import MISSING, CatalogueCache
from mllgraph.select.coverage import coverage_of_row
from mllgraph.select.per_kind import top_per_kind

if TYPE_CHECKING:
    from mllgraph.graph.db import Graph
    from mllgraph.plan.request import SelectOptions


def _without_group(row: dict[str, Any]) -> dict[str, Any]:
    """A candidates row without the query's `model_group` tag (one group: always 0)."""
    return {k: v for k, v in row.items() if k != "model_group"}


def _models(options: SelectOptions) -> list[str] | None:
    return sorted(options.models) if options.models is not None else None


def _options_key(options: SelectOptions) -> tuple[Any, ...]:
    return (
        options.min_label_score,
        options.per_kind_limit,
        options.allow_ancestor,
        options.ancestor_discount,
        options.related_discount,
        options.declared_prior,
        tuple(_models(options) or ()) if options.models is not None else None,
    )


@dataclass
class Reads:
    """The graph reads of one request, at catalogue `version`."""

    graph: Graph
    cache: CatalogueCache | None
    version: int

    def _get(self, key: Any) -> Any:
        if self.cache is None or not self.cache.enabled:
            return MISSING
        return self.cache.get(self.version, key)

    def _put(self, key: Any, value: Any) -> None:
        if self.cache is not None:
            self.cache.put(self.version, key, value)

    # -- one entry per version -------------------------------------------------------------

    def labelled_models(self) -> dict[str, int]:
        key = ("labelled_models",)
        found = self._get(key)
        if found is MISSING:
            found = dict(self.graph.read("select/labelled_models")[0])
            self._put(key, found)
        return found

    def model_costs(self, model_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Per model: its recorded cost per image, or what its estimate is made from
        (`select/model_costs`; `hub.cost.cost_of` reads the rows). One entry per model."""
        out: dict[str, dict[str, Any]] = {}
        todo = []
        for m in sorted(set(model_ids)):
            found = self._get(("model_cost", m))
            if found is MISSING:
                todo.append(m)
            else:
                out[m] = found
        if todo:
            for row in self.graph.read("select/model_costs", ids=todo):
                out[row["id"]] = dict(row)
                self._put(("model_cost", row["id"]), out[row["id"]])
        return out

    def patch_model(self, min_heads: int, options: SelectOptions) -> list[dict[str, Any]]:
        """`select/patch_model`: the broad expert of the options' sub-hub that patches
        uncovered classes (at most one row). Asked by every plan that leaves a class
        uncovered, so kept per version."""
        models = _models(options)
        key = ("patch_model", min_heads, tuple(models) if models is not None else None)
        found = self._get(key)
        if found is MISSING:
            found = self.graph.read("select/patch_model", min_heads=min_heads, models=models)
            self._put(key, found)
        return list(found)

    def broad_models(
        self, min_heads: int, limit: int, options: SelectOptions
    ) -> list[dict[str, Any]]:
        """`select/broad_models`: the broadest labelled experts of the options' sub-hub, for
        the stacked rule's screen. The same for every task of a sub-hub, so kept per version."""
        models = _models(options)
        key = ("broad_models", min_heads, limit, tuple(models) if models is not None else None)
        found = self._get(key)
        if found is MISSING:
            found = self.graph.read(
                "select/broad_models", min_heads=min_heads, limit=limit, models=models
            )
            self._put(key, found)
        return list(found)

    def probe_set_concepts(self, limit: int) -> list[dict[str, Any]]:
        """`select/probe_set_concepts`: probe sets (at most `limit`, by id) with their concept
        and its ancestors. The same for every task, so kept per version."""
        key = ("probe_set_concepts", limit)
        found = self._get(key)
        if found is MISSING:
            found = self.graph.read("select/probe_set_concepts", limit=limit)
            self._put(key, found)
        return list(found)

    def _per_model(self, what: str, ids: Sequence[str], fetch: Any) -> dict[str, Any]:
        """{model: its value}, one entry per model and version: cached ones as they are, the
        others from one `fetch(ids)` call that returns {model: value} (absent: `None`)."""
        out: dict[str, Any] = {}
        todo = []
        for m in sorted(set(ids)):
            found = self._get((what, m))
            if found is MISSING:
                todo.append(m)
            else:
                out[m] = found
        if todo:
            fetched = fetch(todo)
            for m in todo:
                out[m] = fetched.get(m)
                self._put((what, m), out[m])
        return out

    def declared_heads(self, ids: Sequence[str]) -> dict[str, dict[str, list[int]]]:
        """`select/declared_heads`: per model, {probed concept: the heads declaring it or a
        concept under it} (the estimate calibrations' "own heads")."""

        def fetch(todo: list[str]) -> dict[str, dict[str, list[int]]]:
            found: dict[str, dict[str, list[int]]] = {m: {} for m in todo}
            for r in self.graph.read("select/declared_heads", ids=todo):
                for wnid in r["probed"]:
                    found[r["model"]].setdefault(wnid, []).append(int(r["head"]))
            return found

        return self._per_model("declared_heads", ids, fetch)

    def model_domains(self, ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """`select/model_domains`: per model, its domain record ({id, domain_sha256}), or
        None for a model that states no input domain."""

        def fetch(todo: list[str]) -> dict[str, dict[str, Any]]:
            return {r["id"]: dict(r) for r in self.graph.read("select/model_domains", ids=todo)}

        return self._per_model("model_domain", ids, fetch)

    # -- per concept ------------------------------------------------------------------------

    def _per_concept(self, keys: Sequence[Any], fetch: Any) -> list[list[dict[str, Any]]]:
        """Each key's rows: cached ones as they are, the others from one `fetch(positions)`
        call that returns rows with `class_index` = the position among `keys`."""
        out: list[list[dict[str, Any]] | None] = [None] * len(keys)
        todo = []
        for i, key in enumerate(keys):
            found = self._get(key)
            if found is MISSING:
                todo.append(i)
            else:
                out[i] = found
        if todo:
            fetched: dict[int, list[dict[str, Any]]] = {i: [] for i in todo}
            for r in fetch(todo):
                fetched[r["class_index"]].append(r)
            for i in todo:
                out[i] = fetched[i]
                self._put(keys[i], fetched[i])
        return [rows or [] for rows in out]

    def ancestors(self, wnids: Sequence[str]) -> list[frozenset[str]]:
        def fetch(todo: list[int]) -> list[dict[str, Any]]:
            rows = self.graph.read("select/ancestors", wnids=[wnids[i] for i in todo])
            index = {wnids[i]: i for i in todo}
            return [{"class_index": index[r["wnid"]], "ancestors": r["ancestors"]} for r in rows]

        found = self._per_concept([("ancestors", w) for w in wnids], fetch)
        return [frozenset(a for r in rows for a in r["ancestors"]) for rows in found]

    def _blocked(self, wnids: Sequence[str], options: SelectOptions) -> list[tuple[str, ...]]:
        """Per class, the task's blocked concepts among its ancestors (what its candidates
        depend on besides its own concept); all empty when nothing is cached (not needed)."""
        if not (options.allow_ancestor and self.cache is not None and self.cache.enabled):
            return [()] * len(wnids)
        above = self.ancestors(wnids)
        counts = Counter(x for w, anc in zip(wnids, above, strict=True) for x in anc | {w})
        shared = {x for x, n in counts.items() if n >= 2}
        return [tuple(sorted(shared & anc)) for anc in above]

    def _candidate_rows(
        self,
        wnids: Sequence[str],
        options: SelectOptions,
        targets: Sequence[int],
        model_groups: Sequence[Sequence[str] | None],
    ) -> list[dict[str, Any]]:
        groups = [None if g is None else sorted(set(g)) for g in model_groups]
        scope = None if any(g is None for g in groups) else sorted({m for g in groups for m in g})
        return self.graph.read(
            "select/candidates",
            targets=[{"index": i, "wnid": wnids[i]} for i in targets],
            all_wnids=list(wnids),
            min_score=options.min_label_score,
            per_kind_limit=options.per_kind_limit,
            allow_ancestor=options.allow_ancestor,
            ancestor_discount=options.ancestor_discount,
            related_discount=options.related_discount,
            model_groups=groups,
            scope=scope,
        )

    def candidates(self, wnids: Sequence[str], options: SelectOptions) -> list[dict[str, Any]]:
        """`select/candidates` for a task's class concepts (rows with `class_index`)."""
        opts = _options_key(options)
        blocked = self._blocked(wnids, options)
        keys = [("candidates", w, opts, b) for w, b in zip(wnids, blocked, strict=True)]

        def fetch(todo: list[int]) -> list[dict[str, Any]]:
            return self._candidate_rows(wnids, options, todo, [_models(options)])

        per_class = self._per_concept(keys, fetch)
        return [
            {**_without_group(r), "class_index": i}
            for i, rows in enumerate(per_class)
            for r in rows
        ]

    def own_candidates(
        self, wnids: Sequence[str], models: Sequence[str], options: SelectOptions
    ) -> list[dict[str, Any]]:
        """`select/candidates` for the sub-hub of `models` alone (`options.models` aside): the
        same rows, in the same order. Cached per concept and model: each model's own best
        heads per kind (a query of one-model groups), merged and cut to the per-kind limit
        (`select.per_kind.top_per_kind`), so that another subset of models, as the stacked
        rule's screen picks one per task, reads nothing it has read before."""
        models = sorted(set(models))
        if self.cache is None or not self.cache.enabled:
            rows = self._candidate_rows(wnids, options, range(len(wnids)), [models])
            return [_without_group(r) for r in rows]
        opts = _options_key(replace(options, models=None))
        blocked = self._blocked(wnids, options)
        key = {
            (i, m): ("own_candidates", w, m, opts, blocked[i])
            for i, w in enumerate(wnids)
            for m in models
        }
        found = {im: self._get(k) for im, k in key.items()}
        missing = [im for im, rows in found.items() if rows is MISSING]
        if missing:
            # One query: every class missing a pair, searched for every model missing one.
            classes = sorted({i for i, _ in missing})
            wanted = sorted({m for _, m in missing})
            fetched: dict[tuple[int, str], list[dict[str, Any]]] = {
                (i, m): [] for i in classes for m in wanted
            }
            for r in self._candidate_rows(wnids, options, classes, [[m] for m in wanted]):
                fetched[(r["class_index"], wanted[r["model_group"]])].append(_without_group(r))
            for im, rows in fetched.items():
                self._put(key[im], rows)
                found[im] = rows
        merged = [{**r, "class_index": i} for (i, _), rows in found.items() for r in rows]
        return top_per_kind(merged, options.per_kind_limit)

    def task_probes(self, wnids: Sequence[str]) -> list[dict[str, Any]]:
        """`select/task_probes` for these concepts (`class_index` = position in `wnids`)."""

        def fetch(todo: list[int]) -> list[dict[str, Any]]:
            return self.graph.read(
                "select/task_probes", targets=[{"index": i, "wnid": wnids[i]} for i in todo]
            )

        per_class = self._per_concept([("task_probes", w) for w in wnids], fetch)
        rows = [{**r, "class_index": i} for i, rows in enumerate(per_class) for r in rows]
        rows.sort(key=lambda r: (r["set_id"], r["distance"], r["class_index"]))
        return rows

    def sense_coverage(
        self, wnids: Sequence[str], *, min_score: float, models: Sequence[str] | None
    ) -> dict[str, float]:
        """wnid -> coverage strength (see `mllgraph.select.coverage`)."""
        wnids = list(dict.fromkeys(wnids))
        mkey = tuple(sorted(models)) if models is not None else None

        def fetch(todo: list[int]) -> list[dict[str, Any]]:
            rows = self.graph.read(
                "select/sense_coverage",
                wnids=[wnids[i] for i in todo],
                min_score=min_score,
                models=list(models) if models is not None else None,
            )
            index = {wnids[i]: i for i in todo}
            return [{"class_index": index[r["wnid"]], "value": coverage_of_row(r)} for r in rows]

        found = self._per_concept([("coverage", w, min_score, mkey) for w in wnids], fetch)
        pairs = zip(wnids, found, strict=True)
        return {w: (rows[0]["value"] if rows else 0.0) for w, rows in pairs}

    # -- per request ------------------------------------------------------------------------

    def declared_candidates(
        self, todo: list[dict[str, Any]], all_wnids: list[str], options: SelectOptions
    ) -> list[dict[str, Any]]:
        key = (
            "declared",
            tuple((t["index"], t["wnid"]) for t in todo),
            tuple(all_wnids),
            _options_key(options),
        )
        found = self._get(key)
        if found is MISSING:
            found = self.graph.read(
                "select/declared_candidates",
                targets=todo,
                all_wnids=all_wnids,
                models=_models(options),
                per_kind_limit=options.per_kind_limit,
                default_prior=options.declared_prior,
                allow_ancestor=options.allow_ancestor,
                ancestor_discount=options.ancestor_discount,
            )
            self._put(key, found)
        return list(found)
