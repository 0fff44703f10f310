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
3. Run CHCO on the candidate models' stored probe outputs (no model runs here), under the
   model count and the cost cap (ms per image, `hub.cost`), once per point of the
   accuracy-cost front (`select.cost_front`); the cheapest plan within the accuracy slack of
   the best is served. Classes
   without probe images are scored with their candidates' prior (see `chco`). A model with
   declared candidates but no stored probe outputs (never labelled) is taken to spread its
   mass evenly over its heads on the probe images (uniform logits): it cannot be simulated,
   so it is assumed not to take the measured classes' images.
4. When two classes or more have probe images, the stacked rule (`mllgraph.combine.stacked`: a
   linear softmax on all heads of the chosen models, fitted in closed form, milliseconds; fits
   kept across requests by what they depend on, `stacked_choice.FITS`), kept if it beats the
   per-class rule out of fold; it is also fitted on the models a cheap screen picks
   (`feature_sets`: among the best-covering candidates' models and the sub-hub's broadest
   labelled experts, which `select/broad_models` finds even when no head of theirs is a
   candidate), and the better of the two is served. A plan its stacked rule serves reports what
   that rule does: each class's estimate is the rule's out-of-fold recall, and a class CHCO
   left uncovered is covered by the best candidate head the rule reads. A class without probe
   images is not the rule's: the per-class rule scores it, and the stacked rule shares out
   among the others the mass that rule gives them (`StackedRule.classes`). For classes left
   uncovered that no stacked rule scores, the ConSE patch (`mllgraph.combine.conse`): the hub's
   broadest expert and text similarities of its heads to the class names, calibrated so that it
   takes at most 2% of the covered classes' probe images (the plan's `patch.calibration` says
   how, on how many, and what it took); inference applies it when no VLM is configured.
5. Each class's estimate rests on evidence of its kind (`select/estimates`,
   `select/evidence`): its own probe images, else a route calibration measured on the hub's
   probed concepts (ancestor route, declared heads), else chance; what CHCO simulated stays
   as `simulated_accuracy`. Before CHCO, a model whose input domain refuses a class's probe
   images is taken out of that class's candidates (`estimates.domain_gate`).
6. The "none of these" calibration (`select/none_calibration`): the plan's score that an image
   fits none of its classes, fitted on the task's probe images against probe images of
   concepts outside the task, with its default threshold.
7. Store the plan in Neo4j under an id derived from the request and the catalogue version,
   so the same inputs always give the same plan.

Steps 1-2 read the graph through `mllgraph.select.reads`, which keeps what it read per
catalogue version (`mllgraph.select.cache`): a repeated or overlapping request at an unchanged
version costs one version read. Step 3 reads each model's logits with one gather from its
memory map and scores a candidate from its own heads' columns and the model's softmax row
statistics (kept per model file, `mllgraph.select.probe_data`), the same values a full
softmax gives.

This module holds `select()`, which runs the steps in order, its request checks and
`get_plan`; the steps' parts live beside it in `mllgraph.select`: `candidates` (step 2's
declared and nearby candidates, and CHCO candidates from the query rows), `probe_data` (the
probe-output cache, proxy probes and the aligned probe matrix), `alternatives` (step 3's
solver call, the all-uncovered plan and each class's alternatives), `stacked_choice` (step 4's
stacked rule and screen) and `patch` (step 4's ConSE patch).

The plan is a JSON document; `combination` holds what inference needs to rebuild the shared
combination rule (`mllgraph.combine.rule`), versioned by `schema_version`.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mllgraph import threads
from mllgraph.combine.softmax import softmax_memo
from mllgraph.errors import FailedPrecondition, InvalidArgument, NotFound
from mllgraph.graph import deadline
from mllgraph.graph.db import Graph
from mllgraph.hub import cost as hub_cost
from mllgraph.hub import probe_outputs, registry
from mllgraph.plan.document import (
    STACKED_SCHEMA_VERSION,
    plan_document,
    plan_id_for,
)
from mllgraph.plan.request import SelectOptions, TaskClass, Timings
from mllgraph.select import chco, none_calibration
from mllgraph.select.alternatives import alternatives, solve, uncovered_plan
from mllgraph.select.cache import CatalogueCache
from mllgraph.select.candidates import (
    CandidateInfo,
    candidates_of_rows,
    declared_candidates,
    nearby_candidates,
)
from mllgraph.select.cost_front import FrontPoint, front_document, solve_front
from mllgraph.select.estimates import (
    ancestor_probe_images,
    domain_gate,
    estimate_plan,
    own_probe_images,
)
from mllgraph.select.patch import conse_patch
from mllgraph.select.probe_data import (
    CACHE,
    ProbeOutputCache,
    class_probes,
    probe_matrix,
    probe_sources,
    proxy_probes,
)
from mllgraph.select.reads import Reads
from mllgraph.select.stacked_choice import broad_models, stacked_choice
from mllgraph.select.stored import stored_now, validate_classes
from mllgraph.settings import Settings


@dataclass
class SelectionContext:
    """Everything CHCO saw, kept for ExplainSelection and the benchmark."""

    plan: dict[str, Any]
    candidates: list[chco.Candidate] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    problem: chco.ChcoProblem | None = None  # None for a stored plan or an empty problem


def ensure_schema(graph: Graph) -> None:
    graph.ensure_schema("select/schema")


# -- the request -----------------------------------------------------------------------------


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


@softmax_memo()  # one request's softmaxes, computed once each
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
    if reads_cache is True:
        reads_cache = catalogue_cache(graph, settings)
    if not isinstance(reads_cache, CatalogueCache):
        reads_cache = None  # (an empty cache is falsy: its length is 0)
    existing = None
    if store:  # a repeated request: one round trip where the version last seen still holds
        guess = reads_cache.version if reads_cache is not None else None
        existing, version = stored_now(graph, classes, options, guess)
    else:
        version = registry.catalogue_version(graph)
    if reads_cache is not None:
        reads_cache.at(version)
    if existing is not None:
        return SelectionContext(plan=existing)
    reads = Reads(graph, reads_cache, version)
    if reads.labelled_models()["models"] == 0:
        raise FailedPrecondition(
            "the hub has no labelled models (no models at all): register and label some first "
            "(`mllgraph hub build` or `mllgraph models register` and `mllgraph models label`)"
        )
    pid = plan_id_for(classes, options, version)

    timings = Timings()
    t = time.perf_counter()
    groundings = _ground(classes, resolver, reads, options)
    timings.grounding_ms = (time.perf_counter() - t) * 1000
    deadline.check("grounding the class names")
    wnids = [g.wnid for g in groundings]
    if len(set(wnids)) != len(wnids):  # pinned wnids can collide; the resolver checks names
        dup = [(classes[i].name, w) for i, w in enumerate(wnids) if wnids.count(w) > 1]
        raise InvalidArgument(f"classes ground to the same concept: {dup}")

    t = time.perf_counter()
    rows = reads.candidates(wnids, options)
    rows += declared_candidates(reads, rows, wnids, options)
    rows += nearby_candidates(graph, rows, wnids, classes, options, resolver)
    probe_rows = reads.task_probes(wnids)
    probe_rows += proxy_probes(reads, rows, probe_rows, len(classes))
    timings.cypher_ms = (time.perf_counter() - t) * 1000
    deadline.check("reading the candidates")

    t = time.perf_counter()
    outputs: dict[str, probe_outputs.ProbeOutputs] = {}
    temperatures: dict[str, float] = {}
    versions: dict[str, str] = {}
    for r in rows:
        versions[r["model"]] = r["version"]
    broad = broad_models(reads, classes, options)
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
    labels, logits, rows_of = probe_matrix(probe_rows, outputs, len(classes))
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
    deadline.check("loading the probe outputs")

    info: CandidateInfo = {}
    candidates = candidates_of_rows(rows, logits, declared_only, info)
    # A model whose input domain refuses a class's probe images does not cover that class.
    candidates, set_aside = domain_gate(reads, settings, candidates, probe_rows)

    own_of: dict[tuple[str, ...], list[chco.Candidate]] = {}

    def own_candidates(picked: Sequence[str]) -> list[chco.Candidate]:
        # The candidates query filters by model before its per-kind limit, so asked for the
        # screen's models alone it returns their own best heads per class, which the whole
        # hub's query may have left out (a broad expert among narrow ones). Kept per model
        # set: asked again, the same list (`info` already holds its heads, so converting the
        # rows again would return none of them).
        key = tuple(sorted(picked))
        if key not in own_of:
            own = reads.own_candidates(wnids, key, options)
            mine = candidates_of_rows(own, logits, declared_only, info)
            own_of[key] = domain_gate(reads, settings, mine, probe_rows)[0]
        return own_of[key]

    t = time.perf_counter()
    problem = None
    front: list[FrontPoint] = []
    costs = {m: hub_cost.cost_of(row) for m, row in reads.model_costs(sorted(logits)).items()}
    if not candidates:
        plan = uncovered_plan(len(classes))
        solver_note = "no candidates"
    else:
        problem = chco.ChcoProblem(
            num_classes=len(classes),
            candidates=candidates,
            logits_by_model=logits,
            labels=labels,
            temperatures={m: temperatures[m] for m in logits},
            budget=options.budget,
            model_cost={m: c for m, (c, _) in costs.items()},
            max_cost=options.cost_cap,
            row_stats=row_stats,
            finite_models=frozenset(finite),
            class_probes=class_probes(probe_rows, outputs, len(classes)),
            probe_sources=probe_sources(probe_rows),
        )
        plan, front = solve_front(problem, lambda p: solve(p, options), options.accuracy_slack)
        solver_note = plan.solver
    timings.chco_ms = (time.perf_counter() - t) * 1000
    deadline.check("CHCO")
    t = time.perf_counter()
    fit = None
    if problem is not None and options.fit_params and not set(plan.models) & set(declared_only):
        extra = [r["model"] for r in broad if r["model"] in outputs]
        pool = threads.work_pool(settings.work_threads)
        plan, fit = stacked_choice(problem, plan, options, extra, own_candidates, pool)
    timings.stacked_ms = (time.perf_counter() - t) * 1000
    timings.total_ms = (time.perf_counter() - t_start) * 1000

    body = plan_document(
        pid, classes, groundings, plan, info, versions, options, version, labels, timings,
        frozenset(c.class_index for c in candidates),
    )  # fmt: skip
    body["solver_note"] = solver_note
    # What the served plan costs to run, ms per image (hub.cost; "estimated" where unmeasured).
    body["cost_ms_per_image"] = math.fsum(costs.get(m, (0.0, False))[0] for m in plan.models)
    body["model_costs"] = {
        m: {"ms_per_image": costs[m][0], "estimated": costs[m][1]}
        for m in plan.models
        if m in costs
    }
    body["cost_front"] = front_document(front, plan.models)
    body["alternatives"] = alternatives(plan, candidates, logits, labels, info, problem)
    stacked_rule = None
    if fit is not None:
        stacked_rule, body["stacked"] = fit
    if stacked_rule is not None:
        body["combination"]["schema_version"] = STACKED_SCHEMA_VERSION
        body["combination"]["stacked"] = stacked_rule.to_dict()
        if not stacked_rule.classes:
            # Out-of-fold, so honest; every class has probe images, so all of it is measured.
            body["estimated_accuracy"] = stacked_rule.cv_accuracy
            body["measured_fraction"] = 1.0
    scored = set(stacked_rule.scores(len(classes))) if stacked_rule is not None else set()
    if set(plan.uncovered) - scored:  # uncovered classes no stacked rule scores: the patch
        patch = conse_patch(
            graph, reads, settings, plan, classes, options, resolver, probe_rows, cache
        )
        if patch is not None:
            body["combination"]["patch"] = patch.to_dict()
            body["patch"] = {
                "rule": "conse",
                "model_id": patch.model_id,
                "evidence": patch.rule,
                "weight": patch.weight,
                "floor": patch.floor,
                "calibration": patch.calibration.to_dict(),
                "classes": [classes[c].name for c in plan.uncovered],
            }
    for (ci, _mid), why in sorted(set_aside.items()):
        if body["classes"][ci]["coverage"] == "uncovered":
            body["classes"][ci]["domain_set_aside"] = why["why"]
    body["domain_set_aside"] = [
        {"class": classes[ci].name, "model": mid, **{k: v for k, v in why.items() if k != "covers"}}
        for (ci, mid), why in sorted(set_aside.items())
    ]
    # Each class's estimate from the evidence of its kind (select/estimates, select/evidence).
    class_sets = class_probes(probe_rows, outputs, len(classes))
    own = own_probe_images(class_sets, probe_rows)
    parents = ancestor_probe_images(class_sets, probe_rows)
    estimate_plan(reads, settings, cache, body, candidates, own, parents)
    t = time.perf_counter()
    known = {m: (rows_of[m], logits[m]) for m in rows_of}
    none, body["none_of_these"] = none_calibration.calibrate(
        reads, settings, body, wnids, probe_rows, outputs, cache, known
    )
    if none is not None:
        body["combination"]["none"] = none
    timings.none_ms = (time.perf_counter() - t) * 1000
    timings.total_ms = (time.perf_counter() - t_start) * 1000
    body["timings_ms"] = asdict(timings)
    if store:
        graph.write("select/plan_put", id=pid, body=json.dumps(body), catalogue_version=version)
    return SelectionContext(plan=body, candidates=candidates, timings=timings, problem=problem)


def warm_up(graph: Graph, settings: Settings, resolver: Any) -> list[str]:
    """One selection, stored nowhere, of a small task from the hub's own probed and labelled
    concepts (`select/warm_task`, pinned, so no grounding choice is involved): the selection
    service runs it before it reports SERVING. The first requests after Neo4j starts
    otherwise pay the planning of each query shape and cold pages (in process on the demo
    hub, the first 3-class task took 7.6 s, the fifth 0.2 s; after a warm-up selection the
    first took 0.47 s). The concepts used (none where the hub has fewer than two)."""
    rows = graph.read("select/warm_task", limit=2)
    if len(rows) < 2:
        return []
    classes = [TaskClass(name=str(r["name"]), pinned_wnid=str(r["wnid"])) for r in rows]
    options = SelectOptions()
    done = select(graph, settings, classes, options, resolver, store=False)
    wnids = [str(r["wnid"]) for r in rows]
    # The candidates query for chosen models alone (`Reads.own_candidates`: the stacked
    # rule's screen) has other parameter types, so Neo4j plans it apart (1.3-1.8 s on the
    # demo hub); the warm task's screen may not have asked for it.
    models = done.plan.get("models")
    if models:
        Reads(graph, None, done.plan["catalogue_version"]).own_candidates(wnids, models, options)
    return wnids


def get_plan(graph: Graph, plan_id: str) -> dict[str, Any]:
    ensure_schema(graph)
    rows = graph.read("select/plan_get", id=plan_id)
    if not rows:
        raise NotFound(f"plan {plan_id!r} does not exist (plans come from SelectHeads)")
    return json.loads(rows[0]["body"])
