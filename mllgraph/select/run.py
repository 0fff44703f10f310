"""Selection: from a task's class names to a stored plan of heads (the paper's second step).

1. Ground the class names to SDAG concepts (the shared resolver; callers may pin wnids).
2. Find candidate heads for every class with one Cypher query (`select/candidates`, measured
   `LABELED` edges); for the classes no measured label covers (no exact, group or
   descendants candidate: measured labels win wherever they exist), the heads that declare
   the class's concept, its descendants or an ancestor (`select/declared_candidates`, kind
   `declared`: "declared, unmeasured", quality = the model's stated top-1 accuracy or
   `SelectOptions.declared_prior`); the task's probe sets (`select/task_probes`) and, for
   classes without probes, the probe sets of the nearest candidate concepts (proxy probes).
   A class still without any candidate borrows the heads of a sibling or cousin concept
   whose name the text encoder puts close to it (`select/nearby_candidates`, `nearby`).
3. Run CHCO on the candidate models' stored probe outputs (no model runs here). Classes
   without probe images are scored with their candidates' prior (see `chco`). A model with
   declared candidates but no stored probe outputs (never labelled) is taken to spread its
   mass evenly over its heads on the probe images (uniform logits): it cannot be simulated,
   so it is assumed not to take the measured classes' images.
4. When every class has probe images, the stacked rule (`mllgraph.combine.stacked`: a logistic
   regression on all heads of the chosen models), kept if it beats the per-class rule out of
   fold; it is also fitted on the models a cheap screen picks (`feature_sets`: among the
   best-covering candidates' models and the sub-hub's broadest labelled experts, which
   `select/broad_models` finds even when no head of theirs is a candidate), and the better
   of the two is served. A plan its stacked rule serves reports what that rule does: each
   class's estimate is the rule's out-of-fold recall, and a class CHCO left uncovered is
   covered by the best candidate head the rule reads. Otherwise, for classes left uncovered,
   the ConSE patch
   (`mllgraph.combine.conse`): the hub's broadest expert and text similarities of its heads to
   the class names, calibrated on the covered classes' probe images; inference applies it
   when no VLM is configured.
5. Store the plan in Neo4j under an id derived from the request and the catalogue version,
   so the same inputs always give the same plan.

Steps 1-2 read the graph through `mllgraph.select.reads`, which keeps what it read per
catalogue version (`mllgraph.select.cache`): a repeated or overlapping request at an unchanged
version costs one version read. Step 3 reads each model's logits with one gather from its
memory map and scores a candidate from its own heads' columns and the model's softmax row
statistics (kept per model file), the same values a full softmax gives.

The plan is a JSON document; `combination` holds what inference needs to rebuild the shared
combination rule (`mllgraph.combine.rule`), versioned by `schema_version`.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from mllgraph.combine import conse, stacked
from mllgraph.combine import screen as feature_sets
from mllgraph.combine.rule import (
    QUALITY_FLOOR,
    ClassAssignment,
    HeadGroup,
    class_scores,
    fallback_evidence,
    group_evidence,
    model_probabilities,
    score_column,
    softmax_row_stats,
)
from mllgraph.errors import FailedPrecondition, InvalidArgument, NotFound
from mllgraph.graph.db import Graph
from mllgraph.hub import probe_outputs, registry
from mllgraph.plan.document import (
    COVERAGE_OF_QUERY_KIND,
    MAX_CLASSES,
    STACKED_SCHEMA_VERSION,
    plan_document,
    plan_id_for,
)
from mllgraph.plan.request import SelectOptions, TaskClass, Timings
from mllgraph.select import chco, nearby
from mllgraph.select.cache import CatalogueCache
from mllgraph.select.reads import Reads
from mllgraph.settings import Settings

PATCH_MIN_HEADS = 100  # a model this broad (declaring concepts) may patch uncovered classes


@dataclass
class SelectionContext:
    """Everything CHCO saw, kept for ExplainSelection and the benchmark."""

    plan: dict[str, Any]
    candidates: list[chco.Candidate] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    problem: chco.ChcoProblem | None = None  # None for a stored plan or an empty problem


def ensure_schema(graph: Graph) -> None:
    graph.ensure_schema("select/schema")


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


# -- the request -----------------------------------------------------------------------------


def validate_classes(classes: list[TaskClass]) -> None:
    if not classes:
        raise InvalidArgument("classes: the task has no classes")
    if len(classes) < 2:
        raise InvalidArgument(
            f"classes: a task needs at least two classes, got one ({classes[0].name!r})"
        )
    if len(classes) > MAX_CLASSES:
        raise InvalidArgument(f"classes: {len(classes)} is over the limit of {MAX_CLASSES}")


def _ground(
    classes: list[TaskClass], resolver: Any, reads: Reads, options: SelectOptions
) -> list[Any]:
    """Ground the names together; among senses that fit the task, prefer those the hub (or
    the sub-hub in `options.models`) has heads for."""
    pinned = {i: c.pinned_wnid for i, c in enumerate(classes) if c.pinned_wnid}

    def covered(wnids: list[str]) -> dict[str, float]:
        return reads.sense_coverage(wnids, min_score=options.min_label_score, models=options.models)

    return resolver.resolve_task(
        [c.name for c in classes], pinned=pinned or None, sense_coverage=covered
    )


# -- what a catalogue version needs, kept across requests -----------------------------------

_READS: dict[tuple[str, str], CatalogueCache] = {}
_READS_LOCK = threading.Lock()


def catalogue_cache(graph: Graph, settings: Settings) -> CatalogueCache:
    """This process's cache of `graph`'s reads (one per database: two databases can be at the
    same version number; see `mllgraph.select.cache`), shared by every select() that does not
    pass its own, sized by `settings.select_cache_entries`."""
    key = (graph.settings.bolt_uri, graph.database)
    with _READS_LOCK:
        cache = _READS.get(key)
        if cache is None or cache.capacity != max(0, settings.select_cache_entries):
            cache = _READS[key] = CatalogueCache(settings.select_cache_entries)
        return cache


# -- selection -------------------------------------------------------------------------------


def select(
    graph: Graph,
    settings: Settings,
    classes: list[TaskClass],
    options: SelectOptions,
    resolver: Any,
    *,
    cache: ProbeOutputCache = CACHE,
    store: bool = True,
    reads_cache: CatalogueCache | None | bool = True,
) -> SelectionContext:
    """Select heads for `classes`. `reads_cache`: True (this process's cache of graph reads,
    sized by `settings.select_cache_entries`), a cache of the caller's, or None/False (every
    read goes to the graph; the plan is the same either way)."""
    t_start = time.perf_counter()
    options.validate()
    validate_classes(classes)
    ensure_schema(graph)
    version = registry.catalogue_version(graph)
    if reads_cache is True:
        reads_cache = catalogue_cache(graph, settings)
    if not isinstance(reads_cache, CatalogueCache):
        reads_cache = None  # (an empty cache is falsy: its length is 0)
    else:
        reads_cache.at(version)
    reads = Reads(graph, reads_cache, version)
    if reads.labelled_models()["models"] == 0:
        raise FailedPrecondition(
            "the hub has no labelled models (no models at all): register and label some first "
            "(`mllgraph hub build` or `mllgraph models register` and `mllgraph models label`)"
        )
    pid = plan_id_for(classes, options, version)
    if store:
        existing = graph.read("select/plan_get", id=pid)
        if existing:
            return SelectionContext(plan=json.loads(existing[0]["body"]))

    timings = Timings()
    t = time.perf_counter()
    groundings = _ground(classes, resolver, reads, options)
    timings.grounding_ms = (time.perf_counter() - t) * 1000
    wnids = [g.wnid for g in groundings]
    if len(set(wnids)) != len(wnids):  # pinned wnids can collide; the resolver checks names
        dup = [(classes[i].name, w) for i, w in enumerate(wnids) if wnids.count(w) > 1]
        raise InvalidArgument(f"classes ground to the same concept: {dup}")

    t = time.perf_counter()
    rows = reads.candidates(wnids, options)
    rows += _declared_candidates(reads, rows, wnids, options)
    rows += _nearby_candidates(graph, rows, wnids, classes, options, resolver)
    probe_rows = reads.task_probes(wnids)
    probe_rows += _proxy_probes(reads, rows, probe_rows, len(classes))
    timings.cypher_ms = (time.perf_counter() - t) * 1000

    t = time.perf_counter()
    outputs: dict[str, probe_outputs.ProbeOutputs] = {}
    temperatures: dict[str, float] = {}
    versions: dict[str, str] = {}
    for r in rows:
        versions[r["model"]] = r["version"]
    broad = _broad_models(reads, classes, options)
    for r in broad:
        versions.setdefault(r["model"], r["version"])
    declared_only: dict[str, int] = {}  # model -> heads, for models without probe outputs
    model_store = str(settings.model_store)
    probe_outputs.refresh_current(settings, sorted(versions))  # a store at a URL: one call for all
    for mid in sorted(versions):
        try:
            stored = cache.get(settings, mid, model_store)
        except FailedPrecondition:
            # Labelled in the graph but its outputs are gone: its measured candidates go;
            # its declared ones stay, unsimulated (uniform logits on the probe images).
            mine = [r for r in rows if r["model"] == mid]
            if any(r["kind"].startswith("declared") for r in mine):
                declared_only[mid] = int(mine[0]["num_heads"])
                temperatures[mid] = float(mine[0]["temperature"])
            continue
        outputs[mid], temperatures[mid] = stored, stored.temperature
    labels, logits, rows_of = _probe_matrix(probe_rows, outputs, len(classes))
    row_stats: dict[str, np.ndarray] = {}
    finite: set[str] = set()  # models whose whole probe-output file is finite
    for mid, file_rows in rows_of.items():
        stats = cache.row_stats(settings, outputs[mid])
        if stats is not None:
            row_stats[mid] = stats[file_rows]
            if cache.all_finite(outputs[mid]):
                finite.add(mid)
    heads_of = {r["model"]: int(r["num_heads"]) for r in [*broad, *rows]}
    for mid in sorted(outputs):  # no usable probe set at all: (0, H) logits
        logits.setdefault(mid, np.zeros((labels.size, heads_of[mid]), dtype=np.float32))
    for mid, h in declared_only.items():
        logits[mid] = np.zeros((labels.size, h), dtype=np.float32)
    timings.load_ms = (time.perf_counter() - t) * 1000

    info: CandidateInfo = {}
    candidates = _candidates_of_rows(rows, logits, declared_only, info)

    own_of: dict[tuple[str, ...], list[chco.Candidate]] = {}

    def own_candidates(picked: Sequence[str]) -> list[chco.Candidate]:
        # The candidates query filters by model before its per-kind limit, so asked for the
        # screen's models alone it returns their own best heads per class, which the whole
        # hub's query may have left out (a broad expert among narrow ones). Kept per model
        # set: asked again, the same list (`info` already holds its heads, so converting the
        # rows again would return none of them).
        key = tuple(sorted(picked))
        if key not in own_of:
            own = reads.candidates(wnids, replace(options, models=key))
            own_of[key] = _candidates_of_rows(own, logits, declared_only, info)
        return own_of[key]

    t = time.perf_counter()
    problem = None
    if not candidates:
        plan = _uncovered_plan(len(classes))
        solver_note = "no candidates"
    else:
        problem = chco.ChcoProblem(
            num_classes=len(classes),
            candidates=candidates,
            logits_by_model=logits,
            labels=labels,
            temperatures={m: temperatures[m] for m in logits},
            budget=options.budget,
            row_stats=row_stats,
            finite_models=frozenset(finite),
        )
        plan = _solve(problem, options)
        solver_note = plan.solver
    timings.chco_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    fit = None
    if problem is not None and options.fit_params and not set(plan.models) & set(declared_only):
        extra = [r["model"] for r in broad if r["model"] in outputs]
        plan, fit = _stacked_choice(problem, plan, options, extra, own_candidates)
    timings.stacked_ms = (time.perf_counter() - t) * 1000
    timings.total_ms = (time.perf_counter() - t_start) * 1000

    body = plan_document(
        pid, classes, groundings, plan, info, versions, options, version, labels, timings,
        frozenset(c.class_index for c in candidates),
    )  # fmt: skip
    body["solver_note"] = solver_note
    body["alternatives"] = _alternatives(plan, candidates, logits, labels, info, problem)
    stacked_rule = None
    if fit is not None:
        stacked_rule, body["stacked"] = fit
    if stacked_rule is not None:
        body["combination"]["schema_version"] = STACKED_SCHEMA_VERSION
        body["combination"]["stacked"] = stacked_rule.to_dict()
        # Out-of-fold, so honest; every class has probe images, so all of it is measured.
        body["estimated_accuracy"] = stacked_rule.cv_accuracy
        body["measured_fraction"] = 1.0
    elif plan.uncovered:
        patch = _conse_patch(
            graph, reads, settings, plan, classes, options, resolver, probe_rows, cache
        )
        if patch is not None:
            body["combination"]["patch"] = patch.to_dict()
            body["patch"] = {
                "rule": "conse",
                "model_id": patch.model_id,
                "weight": patch.weight,
                "classes": [classes[c].name for c in plan.uncovered],
            }
    if store:
        graph.write("select/plan_put", id=pid, body=json.dumps(body), catalogue_version=version)
    return SelectionContext(plan=body, candidates=candidates, timings=timings, problem=problem)


StackedFit = tuple[stacked.StackedRule | None, dict[str, Any]]


CandidateInfo = dict[tuple[int, str, tuple[int, ...]], dict[str, Any]]


def _candidates_of_rows(
    rows: list[dict[str, Any]],
    logits: dict[str, np.ndarray],
    declared_only: dict[str, int],
    info: CandidateInfo,
) -> list[chco.Candidate]:
    """CHCO candidates from candidate-query rows (models with logits only); what the plan
    document says of each goes into `info`, and rows for heads already in it are skipped."""
    candidates: list[chco.Candidate] = []
    for r in rows:
        if r["model"] not in logits:
            continue
        if r["model"] in declared_only and not r["kind"].startswith("declared"):
            continue
        heads = tuple(sorted(int(h) for h in r["heads"]))
        key = (r["class_index"], r["model"], heads)
        if key in info:
            continue  # the same heads found through two kinds: keep the first (best) one
        kind = COVERAGE_OF_QUERY_KIND[r["kind"]]
        group = HeadGroup(r["model"], heads, kind, float(min(1.0, r["score"])))
        candidates.append(chco.Candidate(r["class_index"], group))
        info[key] = {"labels": r["labels"], "via": r["via"], "kind": r["kind"]}
        if "text_similarity" in r:
            info[key]["text_similarity"] = r["text_similarity"]
    return candidates


def _broad_models(
    reads: Reads, classes: Sequence[TaskClass], options: SelectOptions
) -> list[dict[str, Any]]:
    """The sub-hub's broadest labelled experts, which the stacked rule's screen considers
    beside the candidates' models (`select/broad_models`); none where no stacked rule is
    fitted."""
    if not options.fit_params or len(classes) > stacked.MAX_CLASSES:
        return []
    return reads.broad_models(feature_sets.BROAD_MIN_HEADS, feature_sets.BROAD_MODELS, options)


def _stacked_choice(
    problem: chco.ChcoProblem,
    plan: chco.Plan,
    options: SelectOptions,
    broad: Sequence[str] = (),
    own_candidates: Callable[[Sequence[str]], list[chco.Candidate]] | None = None,
) -> tuple[chco.Plan, StackedFit | None]:
    """CHCO's plan with the stacked rule over its models, or, when the screen
    (`feature_sets.greedy_models`, over the candidates' best-covering models, CHCO's and the
    `broad` experts) picks other models for the stacked rule, CHCO's plan restricted to
    those with the stacked rule over them: whichever serves the probe images better (the
    stacked rule's out-of-fold accuracy where it is kept, else the per-class rule's
    estimate, for either plan). Ties keep CHCO's.
    `own_candidates(models)`: those models' own candidate heads, for CHCO's plan restricted
    to them (the problem's candidates may hold none of a broad expert's)."""
    first = _stacked(problem, plan)
    if first is None:  # no stacked rule possible for this task (a class without images, ...)
        return plan, None
    coverage: dict[str, dict[int, float]] = {}
    for c in problem.candidates:
        best = coverage.setdefault(c.group.model_id, {})
        best[c.class_index] = max(best.get(c.class_index, 0.0), c.group.label_score)
    screened = sorted({*feature_sets.shortlist(coverage), *plan.models, *broad})
    picked, _ = feature_sets.greedy_models(
        problem.logits_by_model, problem.temperatures, screened, problem.labels,
        problem.num_classes, problem.budget,
    )  # fmt: skip
    if not picked or set(picked) == set(plan.models):
        return _as_stacked_serves(plan, first, problem, own_candidates)
    kept = [c for c in problem.candidates if c.group.model_id in picked]
    if own_candidates is not None:
        kept += own_candidates(picked)  # (ChcoProblem drops duplicates)
    sub = replace(problem, candidates=kept)
    solved = _solve(sub, options) if sub.candidates else _uncovered_plan(problem.num_classes)
    # The stacked rule reads every picked model, even one CHCO maps no class to (a broad
    # expert may have no candidate heads at all).
    second = _stacked(sub, replace(solved, models=picked))

    # Each plan as it would be served: its stacked rule where kept, else its per-class rule
    # (which reads only the models it maps).
    current = first[1]["cv_accuracy"] if first[0] is not None else plan.estimated_accuracy
    if second is not None and second[0] is not None:
        other, served = replace(solved, models=picked), second[1]["cv_accuracy"]
    else:
        other, served = solved, solved.estimated_accuracy
    if second is None or not served > current:
        first[1]["screened_models"] = picked
        return _as_stacked_serves(plan, first, problem, own_candidates)
    second[1]["screened_models"] = picked
    second[1]["chco_models"] = list(plan.models)
    second[1]["chco_served_estimate"] = current
    return _as_stacked_serves(other, second, problem, own_candidates)


def _as_stacked_serves(
    plan: chco.Plan,
    fit: StackedFit,
    problem: chco.ChcoProblem,
    own_candidates: Callable[[Sequence[str]], list[chco.Candidate]] | None,
) -> tuple[chco.Plan, StackedFit]:
    """The plan as its stacked rule serves it (unchanged when the rule is not kept): per
    class, the rule's out-of-fold recall as the estimate; and a class CHCO left uncovered
    covered by its best candidate head group (the class's concept, below or above it, in the
    plan's models) of which the rule reads a head, since the rule scores the class through
    it. A class with no such group stays uncovered (the rule scores it from other heads)."""
    rule = fit[0]
    if rule is None:
        return plan, fit
    plan = replace(plan, per_class_accuracy=list(rule.cv_recall or plan.per_class_accuracy))
    if not plan.uncovered:
        return plan, fit
    read = rule.read_heads()
    pool = [*problem.candidates, *(own_candidates(rule.models) if own_candidates else ())]
    pool.sort(key=lambda c: (-c.group.label_score, c.sort_key()))
    found: dict[int, HeadGroup] = {}
    for c in pool:
        if c.class_index not in plan.uncovered or c.class_index in found:
            continue
        if any((c.group.model_id, h) in read for h in c.group.heads):
            found[c.class_index] = c.group
    if not found:
        return plan, fit
    assignment = [
        ClassAssignment(a.class_index, (found[a.class_index],)) if a.class_index in found else a
        for a in plan.assignment
    ]
    biases = plan.params.biases.copy()
    temperatures = dict(plan.params.temperatures)
    for ci, g in found.items():  # the parameter-free rule's bias (reuse.rule.default_params)
        biases[ci] = math.log(max(g.label_score, QUALITY_FLOOR))
        temperatures.setdefault(g.model_id, problem.temperatures.get(g.model_id, 1.0))
    params = replace(plan.params, temperatures=temperatures, biases=biases)
    uncovered = [c for c in plan.uncovered if c not in found]
    return replace(plan, assignment=assignment, params=params, uncovered=uncovered), fit


def _stacked(problem: chco.ChcoProblem, plan: chco.Plan) -> StackedFit | None:
    """The stacked rule for the chosen models, kept only when its out-of-fold accuracy on the
    probe images beats the per-class rule's (in-sample) accuracy there (reuse/stacked)."""
    if not plan.models:
        return None
    rule = stacked.fit(
        problem.logits_by_model, problem.labels, problem.num_classes, plan.models,
        problem.temperatures,
    )  # fmt: skip
    if rule is None:
        return None
    logits = {m: problem.logits_by_model[m] for m in plan.models}
    extra = fallback_evidence(problem.num_images, plan.uncovered) if plan.uncovered else None
    z = class_scores(logits, plan.assignment, plan.params, extra_evidence=extra)
    per_class = float((z.argmax(1) == problem.labels).mean())
    used = rule.cv_accuracy > per_class
    note = {
        "used": used,
        "cv_accuracy": rule.cv_accuracy,
        "per_class_rule_accuracy": per_class,
        "c": rule.c,
        "features": len(rule.columns),
    }
    return (rule if used else None), note


def _declared_candidates(
    reads: Reads, rows: list[dict[str, Any]], wnids: list[str], options: SelectOptions
) -> list[dict[str, Any]]:
    """Declared, unmeasured candidates for the classes no measured label covers.

    "Covers" means an exact, group or descendants candidate: a class with only measured
    ancestor/related candidates gets declared ones too, and CHCO weighs both."""
    covered = {r["class_index"] for r in rows if r["kind"] in ("exact", "group", "descendants")}
    todo = [{"index": i, "wnid": w} for i, w in enumerate(wnids) if i not in covered]
    if not todo:
        return []
    return reads.declared_candidates(todo, list(wnids), options)


def _nearby_candidates(
    graph: Graph,
    rows: list[dict[str, Any]],
    wnids: list[str],
    classes: list[TaskClass],
    options: SelectOptions,
    resolver: Any,
) -> list[dict[str, Any]]:
    """Heads on a text-close sibling or cousin, for the classes no candidate covers at all
    (select/nearby: the text encoder decides where a shared ancestor blocked `related`).
    Read past the catalogue cache: it runs only for classes nothing else covers."""
    have = {r["class_index"] for r in rows}
    todo = [{"index": i, "wnid": w} for i, w in enumerate(wnids) if i not in have]
    encode = getattr(resolver, "encode_texts", None)
    if not todo or not options.allow_ancestor or encode is None:
        return []
    found = graph.read(
        "select/nearby_candidates",
        targets=todo,
        all_wnids=list(wnids),
        min_score=options.min_label_score,
        per_kind_limit=options.per_kind_limit,
        declared_prior=options.declared_prior,
        models=sorted(options.models) if options.models is not None else None,
    )
    if not found:
        return []

    return nearby.keep_text_close(
        found, [c.name for c in classes], encode, discount=options.related_discount
    )


_PATCH_TEXTS: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()  # head-name vectors
_PATCH_TEXTS_MAX = 8
_CLASS_TEXTS: OrderedDict[str, np.ndarray] = OrderedDict()  # class-text vectors, one per text
_CLASS_TEXTS_MAX = 20_000  # 1.5 KB each
_CLASS_TEXTS_LOCK = threading.Lock()


def _class_text_vectors(encode: Any, texts: list[str]) -> np.ndarray | None:
    """(len(texts), D) vectors of class texts, each encoded ALONE and kept across requests.

    Alone, because a text's vector from a batch depends slightly on the batch (padding,
    kernel shapes): a vector of its own is the same whatever task it comes with, so cached
    and fresh plans agree bit for bit. Encoding a big task's names was most of a warm
    SelectHeads (~200 ms of 100 class names) and names recur across tasks."""
    with _CLASS_TEXTS_LOCK:
        known = {t: _CLASS_TEXTS[t] for t in texts if t in _CLASS_TEXTS}
        for t in known:
            _CLASS_TEXTS.move_to_end(t)
    for t in dict.fromkeys(texts):
        if t in known:
            continue
        vec = encode([t])
        if vec is None:
            return None
        known[t] = np.asarray(vec[0])
        known[t].setflags(write=False)
        with _CLASS_TEXTS_LOCK:
            _CLASS_TEXTS[t] = known[t]
            while len(_CLASS_TEXTS) > _CLASS_TEXTS_MAX:
                _CLASS_TEXTS.popitem(last=False)
    return np.stack([known[t] for t in texts]) if texts else None


def _conse_patch(
    graph: Graph,
    reads: Reads,
    settings: Settings,
    plan: chco.Plan,
    classes: list[TaskClass],
    options: SelectOptions,
    resolver: Any,
    probe_rows: list[dict[str, Any]],
    cache: ProbeOutputCache,
) -> conse.ConsePatch | None:
    """The ConSE patch for the plan's uncovered classes (mllgraph.combine.conse), or None when
    the hub has no broad expert or grounding has no text encoder (then inference falls back
    to the constant rule)."""
    encode = getattr(resolver, "encode_texts", None)
    found = reads.patch_model(PATCH_MIN_HEADS, options)
    if not found or encode is None:
        return None
    mid, version = found[0]["model"], str(found[0]["version"])
    key = (mid, version)
    head_vecs = _PATCH_TEXTS.get(key)
    if head_vecs is None:
        names = [r["name"] for r in graph.read("select/patch_heads", id=mid)]
        head_vecs = encode([conse.TEMPLATE.format(n.replace("_", " ")) for n in names])
        if head_vecs is None:
            return None
        _PATCH_TEXTS[key] = head_vecs
        while len(_PATCH_TEXTS) > _PATCH_TEXTS_MAX:
            _PATCH_TEXTS.popitem(last=False)
    class_vecs = _class_text_vectors(encode, [conse.TEMPLATE.format(c.name) for c in classes])
    if class_vecs is None:
        return None
    heads, sim = conse.similarity_table(class_vecs, head_vecs)
    patch = conse.ConsePatch(mid, float(found[0]["temperature"]), heads, sim, model_version=version)
    # Calibrate on the probe images of the covered classes, seen by the plan's models and
    # the patch model alike.
    try:
        outputs = {m: cache.get(settings, m) for m in {*plan.models, mid}}
    except FailedPrecondition:
        return patch  # some outputs are gone: the default weight
    labels, logits, _ = _probe_matrix(probe_rows, outputs, len(classes))
    if labels.size == 0:
        return patch
    z = class_scores(logits, plan.assignment, plan.params)
    weight = conse.calibrate_weight(z, patch.probabilities(logits[mid]), plan.uncovered)
    return replace(patch, weight=weight)


def _proxy_probes(
    reads: Reads, rows: list[dict[str, Any]], probe_rows: list[dict[str, Any]], k: int
) -> list[dict[str, Any]]:
    """Stand-in probes for classes with none under their own concept.

    Without images a class cannot be simulated, and CHCO would then pick whichever head hurts
    the other classes least, however unrelated. So such a class borrows the probe sets under
    the nearest concept its ancestor/related candidates were labelled on (e.g. "slacks"
    borrows the trouser probes its trouser.n.01 candidates came from), provided no other
    class of the task has probes there. Marked `proxy` with a large distance, so a class's own sets
    always win.
    """
    have = {r["class_index"] for r in probe_rows}
    near: dict[int, list[str]] = {}
    for r in sorted(rows, key=lambda r: (-(r.get("via_depth") or 0), -r["score"], r["via"] or "")):
        # The nearest concept first (deepest), then the better label.
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


def _probe_matrix(
    probe_rows: list[dict[str, Any]], outputs: dict[str, probe_outputs.ProbeOutputs], k: int
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Task-class labels of the probe images and each model's logits on them, aligned.

    A set under two task classes goes to the nearer one. Only images every candidate model
    has outputs for are used (models labelled on different probe sets stay comparable).
    Which rows those are comes from each model's index; its logits are then read with one
    gather from its memory map (not one slice per probe set: 100 classes x 1,000 models).
    Also returns each model's row numbers in its file.
    """
    nearest: dict[str, tuple[int, int]] = {}
    for r in probe_rows:
        best = nearest.get(r["set_id"])
        if best is None or r["distance"] < best[1]:
            nearest[r["set_id"]] = (r["class_index"], r["distance"])
    models = sorted(outputs)
    layouts = list({id(outputs[m].sets): outputs[m].sets for m in models}.values())
    usable = []
    for set_id in sorted(nearest):
        counts = [lay[set_id][1] for lay in layouts if set_id in lay]
        if models and len(counts) == len(layouts) and min(counts) > 0:
            usable.append((set_id, min(counts)))
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


def _solve(problem: chco.ChcoProblem, options: SelectOptions) -> chco.Plan:
    if options.solver == "exact":
        plan = chco.solve_exact(problem)
    elif options.solver == "heuristic":
        plan = chco.solve_heuristic(problem)
    else:
        return chco.solve(problem, fit=options.fit_params)
    if options.fit_params:
        plan = chco.maybe_fit(problem, plan, 5, 1e-2, False)
    return plan


def _uncovered_plan(k: int) -> chco.Plan:
    from mllgraph.combine.rule import default_params

    assignment = [ClassAssignment(i, ()) for i in range(k)]
    return chco.Plan(
        assignment=assignment,
        params=default_params(assignment),
        estimated_accuracy=float("nan"),
        per_class_accuracy=[float("nan")] * k,
        uncovered=list(range(k)),
        models=[],
        solver="none",
        evaluated=0,
        measured_fraction=0.0,
    )


def _alternatives(
    plan: chco.Plan,
    candidates: list[chco.Candidate],
    logits: dict[str, np.ndarray],
    labels: np.ndarray,
    info: dict[tuple[int, str, tuple[int, ...]], dict[str, Any]],
    problem: chco.ChcoProblem | None = None,
    per_class: int = 5,
) -> list[list[dict[str, Any]]]:
    """Per class, the best other candidates and the plan's estimate with each swapped in.

    Only the swapped class's score column changes, so the plan's scores are computed once
    and each alternative costs one column and an argmax. The evidence the solver already
    computed (same model, heads and temperature) is reused from `problem`."""
    out: list[list[dict[str, Any]]] = [[] for _ in plan.assignment]
    if labels.size == 0 or not plan.models:
        return out
    params = plan.params
    # As the plan is served and estimated: uncovered classes at the floor. (Covering one of
    # them raises the others' floor share a little; that is left out.)
    base = class_scores(
        {m: logits[m] for m in plan.models},
        plan.assignment,
        params,
        extra_evidence=fallback_evidence(labels.size, plan.uncovered),
    )
    top_val, top_idx = chco.top2(base)
    probs: dict[str, np.ndarray] = {}
    by_class: dict[int, list[chco.Candidate]] = {}
    for c in candidates:
        by_class.setdefault(c.class_index, []).append(c)
    for ci, cands in by_class.items():
        chosen = plan.assignment[ci].groups
        others = [c for c in cands if (c.group,) != chosen]
        others.sort(key=lambda c: (-c.group.label_score, c.group.model_id, c.group.heads))
        in_class = labels == ci
        # Each row's best class other than ci (argmax order), from the plan's top 2.
        other_first = top_idx[:, 0] != ci
        best_val = np.where(other_first, top_val[:, 0], top_val[:, 1])
        best_idx = np.where(other_first, top_idx[:, 0], top_idx[:, 1])
        for cand in others[:per_class]:
            g = cand.group
            temperature = params.temperature(g.model_id)
            if problem is not None and temperature == problem.temperatures.get(g.model_id, 1.0):
                evidence = problem.evidence(g)
            else:
                if g.model_id not in probs:
                    probs[g.model_id] = model_probabilities(logits[g.model_id], temperature)
                evidence = group_evidence(probs[g.model_id], g.heads)
            column = score_column(evidence, float(params.weights[ci]), float(params.biases[ci]))
            # argmax of the plan's scores with column ci swapped (ties to the lower index),
            # without copying the (N, K) scores per alternative.
            wins = (column > best_val) | ((column == best_val) & (ci < best_idx))
            right = np.where(wins, ci, best_idx) == labels
            meta = info.get((ci, g.model_id, g.heads), {})
            extra = 0 if g.model_id in plan.models else 1
            out[ci].append(
                {
                    "model_id": g.model_id,
                    "heads": list(g.heads),
                    "head_labels": meta.get("labels", []),
                    "kind": g.kind,
                    "via": meta.get("via"),
                    "label_score": g.label_score,
                    "plan_accuracy_if_used": float(right.mean()),
                    "class_accuracy_if_used": float(right[in_class].mean())
                    if in_class.any()
                    else None,
                    "extra_models": extra,
                }
            )
    return out


def get_plan(graph: Graph, plan_id: str) -> dict[str, Any]:
    ensure_schema(graph)
    rows = graph.read("select/plan_get", id=plan_id)
    if not rows:
        raise NotFound(f"plan {plan_id!r} does not exist (plans come from SelectHeads)")
    return json.loads(rows[0]["body"])
