"""SelectionService (grpc.aio): ground a task's class names, select expert heads under a model
budget (CHCO), store the plan, return it and explain it. Thin wiring over `mllgraph.select.run`.

* `SelectHeads` runs `select.select` in a worker thread (`asyncio.to_thread`); the grounding
  resolver is built and warmed once at start-up, so no request pays for WordNet or the text
  embedder. Health reports SERVING only once the resolver is warm and Neo4j answers, and
  NOT_SERVING again while Neo4j does not; a request that arrives before the resolver is warm
  gets UNAVAILABLE.
* What a catalogue version needs is kept in the process (`mllgraph.select.cache`): a request
  reads the catalogue version (one indexed lookup) and finds the candidates, probe sets and
  sense coverage of concepts earlier requests asked about; a registration, labelling,
  deletion or probe-set change anywhere moves the version and the next request reads afresh.
  Probe outputs stay memory-mapped per model file (`mllgraph.select.run.ProbeOutputCache`).
* Domain errors become gRPC statuses in one place (`services.common.rpc`). What each RPC
  answers:

  ==================================================  ===================
  no classes; one class; > 1,000 classes               INVALID_ARGUMENT
  an empty class name, control characters in a name    INVALID_ARGUMENT
  a name WordNet has nothing close to                  INVALID_ARGUMENT
  two classes grounding to one concept (names both)    INVALID_ARGUMENT
  budget < 0 (0 = the server default, 5)               INVALID_ARGUMENT
  an unknown solver; min_label_score outside [0, 1]    INVALID_ARGUMENT
  max_heads_per_class / time_limit_seconds != 0        INVALID_ARGUMENT (not supported yet)
  options.models with an empty id                      INVALID_ARGUMENT
  solver EXACT on a search space over its limit        INVALID_ARGUMENT
  pinned_wnid that is no WordNet noun / user concept   NOT_FOUND
  no labelled model in the catalogue                   FAILED_PRECONDITION
  GetPlan / ExplainSelection: empty plan_id            INVALID_ARGUMENT
  GetPlan / ExplainSelection: unknown or evicted plan  NOT_FOUND (evicted: see select.retention)
  Neo4j unreachable                                    UNAVAILABLE
  ==================================================  ===================

  Class names are data, never Cypher: quotes or Cypher text in a name are grounded like any
  other text (usually approximately or to a word inside it) or refused as INVALID_ARGUMENT.

Mapping the plan document (`mllgraph.select.run`) to the `Plan` message
-------------------------------------------------------------------
* Accuracies the plan cannot estimate (a class without probe images; a plan without
  candidates or probes) are ``null`` in the document and **0** in the message: the proto has
  no presence bit for them, and `ExplainSelection` says why in the class's reasons.
* A plan that had no candidate at all (nothing to search) reports ``SOLVER_EXACT``: its one
  assignment, every class uncovered, is trivially the optimum.
* ``combination_json`` is the whole plan document as JSON (it carries ``schema_version`` and
  ``combination``), exactly as stored; inference parses it. Like the stored copy it may hold
  ``NaN`` inside ``combination`` (Python's json reads it).
* Proto option defaults differ from the library's: ``allow_ancestor`` and ``fit_params`` are
  proto booleans and off unless set; budget 0 and min_label_score 0 take the server
  defaults (5, 0.05).

Run it with ``python -m services.selection [--port N] [--host H]`` (port default
MLLGRAPH_SELECTION_PORT, 50052) or ``mllgraph serve selection``. Each SelectHeads logs one
``select ...`` line with the plan id, whether it came from the store, and its grounding /
cypher / load / chco / total milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import sys
import time
from dataclasses import dataclass, fields
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from mllgraph.errors import InvalidArgument, MllgraphError, Unavailable
from mllgraph.graph.db import Graph
from mllgraph.graph.wordnet import concept_display_name
from mllgraph.hub import registry
from mllgraph.plan import document as plan_doc
from mllgraph.plan import request as plan_request
from mllgraph.select import retention
from mllgraph.select import run as select
from mllgraph.settings import Settings
from mllgraph.v1 import common_pb2, selection_pb2, selection_pb2_grpc
from services.common import (
    COVERAGE_TO_PROTO,
    UNCOVERED_WHY_TO_PROTO,
    HealthServicer,
    build_server,
    full_service_name,
    rpc,
    run_service_main,
    serve_until_signal,
    set_serving,
)

log = logging.getLogger("mllgraph.services.selection")

SERVICE_NAME = full_service_name(selection_pb2, "SelectionService")
DEFAULT_BUDGET = 5
DEFAULT_MIN_LABEL_SCORE = plan_request.SelectOptions().min_label_score
GRACE_S = 5.0
HEALTH_INTERVAL_S = 5.0

_SOLVER_FROM_PROTO = {
    selection_pb2.SOLVER_UNSPECIFIED: "auto",
    selection_pb2.SOLVER_AUTO: "auto",
    selection_pb2.SOLVER_EXACT: "exact",
    selection_pb2.SOLVER_HEURISTIC: "heuristic",
}
_SOLVER_TO_PROTO = {
    "auto": selection_pb2.SOLVER_AUTO,
    "exact": selection_pb2.SOLVER_EXACT,
    "heuristic": selection_pb2.SOLVER_HEURISTIC,
    "none": selection_pb2.SOLVER_EXACT,  # nothing to search: the empty plan is optimal
}
_KIND_TEXT = {
    "exact": "labelled with the concept itself",
    "group": "a group of one model's heads measured together on the concept",
    "descendants": "heads labelled with concepts under it, pooled",
    "ancestor": "a head labelled with an ancestor concept (score discounted)",
    "related": "a head labelled with a sibling or cousin concept (score discounted)",
    "declared": "declared, unmeasured: heads that declare the concept (quality a prior)",
    "declared_descendants": "declared, unmeasured: heads declaring concepts under it, pooled",
    "declared_ancestor": "declared, unmeasured: a head declaring an ancestor (discounted)",
}
# How a declared class's heads declare it (the plan's `declared_via`).
_DECLARED_VIA_TEXT = {
    "declared": "the concept itself",
    "declared_descendants": "concepts under it, pooled",
    "declared_ancestor": "an ancestor of it, discounted",
}
DECLARED_NOTE = plan_doc.DECLARED_NOTE


# --- request -> library -----------------------------------------------------------------------


def _f32(value: float) -> float:
    """A proto float32 as the decimal it was written as (0.3, not 0.30000001192092896)."""
    return float(f"{value:.7g}")


def _check_name(index: int, name: str) -> str:
    return plan_doc.check_class_name(name, f"classes[{index}].name")


def _models_option(opts: selection_pb2.SelectOptions) -> dict[str, Any]:
    """SelectOptions.models (a sub-hub), where both the proto and the library have it."""
    given = list(getattr(opts, "models", []) or [])
    if not given:
        return {}
    if "models" not in {f.name for f in fields(plan_request.SelectOptions)}:
        raise InvalidArgument("options.models is not supported by this server")
    models = sorted({m.strip() for m in given})
    if "" in models:
        raise InvalidArgument("options.models: an empty model id")
    return {"models": tuple(models)}


def request_to_task(
    request: selection_pb2.SelectHeadsRequest, default_budget: int = DEFAULT_BUDGET
) -> tuple[list[plan_request.TaskClass], plan_request.SelectOptions]:
    """The library's task classes and options for a SelectHeads request (validated)."""
    if request.budget < 0:
        raise InvalidArgument(
            f"budget must be a positive number of models (0 = server default), got {request.budget}"
        )
    opts = request.options
    if opts.solver not in _SOLVER_FROM_PROTO:
        raise InvalidArgument(f"options.solver: unknown value {opts.solver}")
    if opts.max_heads_per_class:
        raise InvalidArgument(
            "options.max_heads_per_class is not supported by this server yet; leave it 0"
        )
    if opts.time_limit_seconds:
        raise InvalidArgument(
            "options.time_limit_seconds is not supported by this server yet (the solver "
            "switches to its heuristic on large problems); leave it 0"
        )
    if len(request.classes) > plan_doc.MAX_CLASSES:
        raise InvalidArgument(
            f"classes: {len(request.classes)} is over the limit of {plan_doc.MAX_CLASSES}"
        )
    classes = [
        plan_request.TaskClass(
            name=_check_name(i, c.name), pinned_wnid=c.pinned_wnid.strip() or None
        )
        for i, c in enumerate(request.classes)
    ]
    options = plan_request.SelectOptions(
        budget=request.budget or default_budget,
        solver=_SOLVER_FROM_PROTO[opts.solver],
        allow_ancestor=bool(opts.allow_ancestor),
        fit_params=bool(opts.fit_params),
        min_label_score=(
            _f32(opts.min_label_score) if opts.min_label_score else DEFAULT_MIN_LABEL_SCORE
        ),
        **_models_option(opts),
    )
    options.validate()
    select.validate_classes(classes)
    return classes, options


# --- plan document -> messages ----------------------------------------------------------------


def _acc(value: float | None) -> float:
    """An accuracy for the wire: None (not estimated) and NaN become 0."""
    if value is None or value != value:
        return 0.0
    return float(value)


def _timestamp(value: str | None) -> Timestamp | None:
    if not value:
        return None
    ts = Timestamp()
    ts.FromJsonString(value)
    return ts


class Concepts:
    """Concept names and glosses for messages, from the resolver's lexicon (no Neo4j)."""

    def __init__(self, resolver: Any | None) -> None:
        self._nouns = getattr(resolver, "nouns", None)

    def ref(self, wnid: str | None, fallback_name: str = "") -> common_pb2.ConceptRef:
        if not wnid:
            return common_pb2.ConceptRef()
        synset = self._nouns.synsets.get(wnid) if self._nouns is not None else None
        if synset is not None:
            return common_pb2.ConceptRef(
                wnid=wnid,
                name=synset.lemmas[0].replace("_", " ") if synset.lemmas else synset.name,
                definition=synset.definition or "",
            )
        return common_pb2.ConceptRef(wnid=wnid, name=concept_display_name(fallback_name))


def head_ref(head: dict[str, Any]) -> common_pb2.HeadRef:
    return common_pb2.HeadRef(
        model_id=head["model_id"],
        model_version=head.get("model_version") or "",
        head_index=int(head["head_index"]),
        head_label=head.get("head_label") or "",
        label_score=float(head.get("label_score") or 0.0),
        label_wnid=head.get("label_wnid") or "",
    )


def _grounding(g: dict[str, Any]) -> selection_pb2.Grounding:
    return selection_pb2.Grounding(
        ambiguous=bool(g.get("ambiguous")),
        approximate=bool(g.get("approximate")),
        pinned=bool(g.get("pinned")),
        score=float(g.get("score") or 0.0),
        alternatives=[
            selection_pb2.GroundingAlternative(
                wnid=a["wnid"],
                name=concept_display_name(a.get("concept_name", "")),
                score=float(a.get("score") or 0.0),
            )
            for a in g.get("alternatives") or []
        ],
    )


def _options_to_proto(options: dict[str, Any]) -> selection_pb2.SelectOptions:
    msg = selection_pb2.SelectOptions(
        solver=_SOLVER_TO_PROTO.get(options.get("solver", "auto"), selection_pb2.SOLVER_AUTO),
        allow_ancestor=bool(options.get("allow_ancestor")),
        fit_params=bool(options.get("fit_params")),
        min_label_score=float(options.get("min_label_score") or 0.0),
    )
    if options.get("models") and hasattr(msg, "models"):
        msg.models.extend(options["models"])
    return msg


def plan_to_proto(plan: dict[str, Any], concepts: Concepts) -> selection_pb2.Plan:
    """The `Plan` message for a plan document (see the module docstring for the mapping)."""
    classes = []
    for c in plan["classes"]:
        classes.append(
            selection_pb2.PlannedClass(
                name=c["name"],
                concept=concepts.ref(c["concept"]["wnid"], c["concept"].get("name", "")),
                grounding=_grounding(c.get("grounding") or {}),
                coverage=COVERAGE_TO_PROTO.get(c["coverage"], selection_pb2.COVERAGE_UNCOVERED),
                heads=[head_ref(h) for h in c["heads"]],
                estimated_accuracy=_acc(c.get("estimated_accuracy")),
                uncovered_reason=UNCOVERED_WHY_TO_PROTO.get(
                    c.get("uncovered_why", ""), selection_pb2.UNCOVERED_REASON_UNSPECIFIED
                ),
            )
        )
    return selection_pb2.Plan(
        plan_id=plan["plan_id"],
        classes=classes,
        estimated_accuracy=_acc(plan.get("estimated_accuracy")),
        model_ids=list(plan["models"]),
        solver=_SOLVER_TO_PROTO.get(plan.get("solver", ""), selection_pb2.SOLVER_UNSPECIFIED),
        params_fitted=bool(plan.get("params_fitted")),
        catalogue_version=str(plan.get("catalogue_version", "")),
        created_at=_timestamp(plan.get("created_at")),
        combination_json=json.dumps(plan),
        budget=int(plan.get("budget") or 0),
        options=_options_to_proto(plan.get("options") or {}),
        measured_fraction=float(plan.get("measured_fraction", 1.0)),
    )


def _fmt(x: float | None) -> str:
    return "not estimated" if x is None or x != x else f"{x:.3f}"


def _grounding_reason(c: dict[str, Any]) -> str:
    g = c.get("grounding") or {}
    concept = f"{concept_display_name(c['concept'].get('name', ''))} ({c['concept']['wnid']})"
    if g.get("pinned"):
        return f"{c['name']!r} is pinned to {concept}."
    text = f"{c['name']!r} was grounded to {concept} by {g.get('method', 'lemma')}"
    text += f" with confidence {float(g.get('score') or 0):.2f}"
    if g.get("approximate"):
        text += "; WordNet lacks the name, so this is the nearest concept (approximate)"
    alts = g.get("alternatives") or []
    if g.get("ambiguous") and alts:
        shown = ", ".join(
            f"{concept_display_name(a.get('concept_name', ''))} ({a['wnid']})" for a in alts[:3]
        )
        text += f"; other senses: {shown} (pin the class to choose another)"
    if g.get("hub_preferred"):
        text += (
            "; of the senses that fit the task, this is the one the hub has heads for, "
            "so it was preferred over the more likely reading"
        )
    return text + "."


def _no_candidate_reason(options: dict[str, Any]) -> str:
    where = "on the concept or under it"
    if options.get("allow_ancestor"):
        where += ", on an ancestor or on a close relative"
    text = (
        f"Uncovered: no candidate head - no head labelled {where} with a label score of at "
        f"least {options.get('min_label_score', 0):g}"
    )
    if options.get("models"):
        text += f" among the {len(options['models'])} model(s) allowed"
    if not options.get("allow_ancestor"):
        text += " (ancestor and related heads were not allowed)"
    return text + ", or such models have no probe outputs."


def explain(plan: dict[str, Any], concepts: Concepts, current_catalogue: int | None = None):
    """The `Explanation` of a plan document: chosen heads, alternatives and reasons."""
    budget = int(plan.get("budget") or 0)
    models = list(plan.get("models") or [])
    budget_full = bool(budget) and len(models) >= budget
    alternatives_all = plan.get("alternatives") or [[] for _ in plan["classes"]]
    plan_acc = plan.get("estimated_accuracy")
    out_classes = []
    over_budget_classes = []
    for i, c in enumerate(plan["classes"]):
        alts = alternatives_all[i] if i < len(alternatives_all) else []
        reasons = [_grounding_reason(c)]
        chosen = []
        kind = c["coverage"]
        for h in c["heads"]:
            chosen.append(
                selection_pb2.HeadCandidate(
                    head=head_ref(h),
                    via_concept=concepts.ref(h.get("label_wnid")),
                    estimated_accuracy=_acc(c.get("estimated_accuracy")),
                    score=float(h.get("label_score") or 0.0),
                    reason=f"chosen: {_KIND_TEXT.get(kind, kind)}; the best plan accuracy "
                    f"under the budget ({_fmt(plan_acc)})",
                )
            )
        if kind == "uncovered":
            if not alts:
                reasons.append(_no_candidate_reason(plan.get("options") or {}))
            elif budget_full and any((a.get("extra_models") or 0) > 0 for a in alts):
                over_budget_classes.append(c["name"])
                reasons.append(
                    f"Uncovered: {len(alts)} candidate(s) exist, but covering it needs another "
                    f"model and the budget of {budget} model(s) is spent on other classes."
                )
            else:
                reasons.append(
                    f"Uncovered: {len(alts)} candidate(s) exist, but each lowered the plan's "
                    "estimated accuracy on the probe images (it is better left to the "
                    "fallback rule)."
                )
        else:
            via = {h.get("label_wnid") for h in c["heads"] if h.get("label_wnid")}
            where = ", ".join(sorted(via)) or "concepts under it"
            reasons.append(
                f"Covered ({kind}) by {len(c['heads'])} head(s) of "
                f"{', '.join(sorted({h['model_id'] for h in c['heads']}))}: "
                f"{_KIND_TEXT.get(kind, kind)} (via {where})."
            )
        if kind == "declared":
            reasons.append(
                f"{DECLARED_NOTE.capitalize()}: no measured label covers this concept; the "
                f"heads declare it ({_DECLARED_VIA_TEXT.get(c.get('declared_via'), 'it')}), "
                "and their quality is a prior (the model's stated top-1 accuracy or the "
                "default), not measured on probe images."
            )
        if c.get("estimated_accuracy") is not None and not c.get("measured", True):
            reasons.append(
                f"No probe images for this concept: its estimate {c['estimated_accuracy']:.3f} "
                "is the prior of its heads, not a measurement."
            )
        elif c.get("estimated_accuracy") is None:
            reasons.append(
                "No probe images for this concept: its accuracy is not estimated (reported as 0)."
            )
        else:
            reasons.append(
                f"Estimated accuracy {c['estimated_accuracy']:.3f} on "
                f"{c.get('probe_images', 0)} probe image(s)."
            )
        alt_msgs = []
        for a in alts:
            extra = int(a.get("extra_models") or 0)
            if extra > 0 and budget_full:
                why = f"needs {extra} more model(s); the budget of {budget} is full"
            elif extra > 0:
                why = f"needs {extra} more model(s)"
            elif (a.get("plan_accuracy_if_used") or 0) < (plan_acc or 0):
                why = "lowers the plan's estimated accuracy"
            else:
                why = "no better than the chosen heads (tie-break: label score, fewer models)"
            labels = a.get("head_labels") or []
            text = (
                f"{a.get('kind')}: plan accuracy {_fmt(a.get('plan_accuracy_if_used'))} "
                f"if used (chosen plan {_fmt(plan_acc)}); {why}"
            )
            if len(a["heads"]) > 1:
                text += f"; group of heads {a['heads']} counted together"
            for j, head_index in enumerate(a["heads"]):
                alt_msgs.append(
                    selection_pb2.HeadCandidate(
                        head=common_pb2.HeadRef(
                            model_id=a["model_id"],
                            head_index=int(head_index),
                            head_label=labels[j] if j < len(labels) else "",
                            label_score=float(a.get("label_score") or 0.0),
                            label_wnid=a.get("via") or "",
                        ),
                        via_concept=concepts.ref(a.get("via")),
                        estimated_accuracy=_acc(a.get("class_accuracy_if_used")),
                        score=float(a.get("label_score") or 0.0),
                        reason=text,
                    )
                )
        out_classes.append(
            selection_pb2.ClassExplanation(
                name=c["name"],
                concept=concepts.ref(c["concept"]["wnid"], c["concept"].get("name", "")),
                coverage=COVERAGE_TO_PROTO.get(kind, selection_pb2.COVERAGE_UNCOVERED),
                chosen=chosen,
                alternatives=alt_msgs,
                reasons=reasons,
            )
        )
    solver = str(plan.get("solver"))
    note = plan.get("solver_note") or ""
    if note and note != solver:
        solver += f" ({note})"
    notes = [
        f"Solver {solver}; {len(models)} of at most {budget} model(s) used: "
        f"{', '.join(models) or 'none'}.",
        f"Estimated accuracy {_fmt(plan_acc)}; combination parameters "
        f"{'fitted on the probe images' if plan.get('params_fitted') else 'at their defaults'}.",
    ]
    share = plan.get("measured_fraction")
    if share is not None and share < 1.0 and plan_acc is not None:
        notes.append(
            f"{share:.0%} of the estimated accuracy is measured on probe images; the rest "
            "is the prior of classes without probe images (e.g. declared, unmeasured)."
        )
    if over_budget_classes:
        notes.append(
            f"The budget of {budget} model(s) was binding: "
            f"{', '.join(repr(n) for n in over_budget_classes)} stayed uncovered for lack of it."
        )
    stacked = plan.get("stacked") or {}
    if plan.get("uncovered"):
        if stacked.get("used"):
            how = "scored by the stacked rule from the other heads"
        elif plan.get("patch"):
            how = (
                f"scored by the ConSE patch: {plan['patch']['model_id']}'s heads mapped to the "
                f"class names by text similarity (weight {plan['patch']['weight']:.3g})"
            )
        else:
            how = "scored by the constant fallback, or a VLM where the inference service has one"
        notes.append(f"Uncovered classes: {', '.join(repr(n) for n in plan['uncovered'])}; {how}.")
    if stacked:
        notes.append(
            f"Stacked rule (logistic regression on all {stacked['features']} heads of the "
            f"chosen models): out-of-fold accuracy {stacked['cv_accuracy']:.3f} against "
            f"{stacked['per_class_rule_accuracy']:.3f} for the per-class rule on the same probe "
            f"images; {'used' if stacked['used'] else 'not used'}."
        )
    for c in plan.get("classes", []):
        near = c.get("related_by_text")
        if near:
            notes.append(
                f"{c['name']!r} borrows the heads of {near['concept']}, a neighbour concept "
                f"whose name is close to it (text similarity {near['text_similarity']:.2f})."
            )
    if current_catalogue is not None and current_catalogue != plan.get("catalogue_version"):
        notes.append(
            f"The catalogue changed since this plan was made (version "
            f"{plan.get('catalogue_version')} -> {current_catalogue}); select again for a "
            "plan over the current models."
        )
    return selection_pb2.Explanation(plan_id=plan["plan_id"], classes=out_classes, notes=notes)


# --- the servicer -------------------------------------------------------------------------------


class SelectionServicer(selection_pb2_grpc.SelectionServiceServicer):
    """SelectHeads / GetPlan / ExplainSelection over one Graph and one warm resolver."""

    def __init__(
        self,
        settings: Settings,
        *,
        graph: Graph | None = None,
        resolver: Any | None = None,
        default_budget: int = DEFAULT_BUDGET,
    ) -> None:
        self.settings = settings
        self.graph = graph or Graph(settings)
        self._owns_graph = graph is None
        self.resolver = resolver
        self.concepts = Concepts(resolver)
        self.default_budget = default_budget
        self.ready = False
        self._last_sweep = 0.0  # time.monotonic() of the last plan eviction started
        self._background: set[asyncio.Task[int]] = set()
        self._sweeping = False

    async def evict_plans(self, *, throttle: float = 0.0) -> int:
        """Evict stored plans over the limits (`mllgraph.select.retention`), unless a sweep
        runs already or one started less than `throttle` s ago. Never raises: a failed
        sweep is logged and the next one tries again."""
        now = time.monotonic()
        if self._sweeping or now - self._last_sweep < throttle:
            return 0
        self._sweeping, self._last_sweep = True, now
        try:
            # A fresh context: no request deadline applies to the sweep.
            evicted = await asyncio.to_thread(
                contextvars.Context().run, retention.evict_plans, self.graph, self.settings
            )
        except Exception as e:  # noqa: BLE001 - eviction is housekeeping
            log.warning("plans_evict_failed error=%r", str(e))
            return 0
        finally:
            self._sweeping = False
        if evicted:
            log.info("plans_evicted n=%d", evicted)
        return evicted

    def warm_up(self) -> None:
        """Build and warm the resolver (unless given), check Neo4j, create the plan schema."""
        t = time.perf_counter()
        if self.resolver is None:
            from mllgraph.ground.resolve import default_resolver

            self.resolver = default_resolver(self.settings)
        self.resolver.warm_up()
        self.concepts = Concepts(self.resolver)
        self.graph.verify()
        select.ensure_schema(self.graph)
        self.ready = True
        log.info("selection_warm ms=%.0f", (time.perf_counter() - t) * 1000)

    def close(self) -> None:
        if self._owns_graph:
            self.graph.close()

    def _check_ready(self) -> None:
        if not self.ready:
            raise Unavailable("the selection service is still starting (grounding warm-up)")

    @rpc
    async def SelectHeads(self, request: Any, context: Any) -> selection_pb2.Plan:
        self._check_ready()
        classes, options = request_to_task(request, self.default_budget)
        if getattr(options, "models", None):
            await asyncio.to_thread(
                registry.require_models, self.graph, options.models, "options.models"
            )
        t = time.perf_counter()
        ctx = await asyncio.to_thread(
            select.select, self.graph, self.settings, classes, options, self.resolver
        )
        ms = (time.perf_counter() - t) * 1000
        plan = ctx.plan
        cached = ctx.timings.total_ms == 0.0
        tm = ctx.timings
        log.info(
            "select plan_id=%s classes=%d budget=%d cached=%s grounding_ms=%.1f cypher_ms=%.1f "
            "load_ms=%.1f chco_ms=%.1f select_ms=%.1f solver=%s models=%d uncovered=%d",
            plan["plan_id"],
            len(classes),
            options.budget,
            cached,
            tm.grounding_ms,
            tm.cypher_ms,
            tm.load_ms,
            tm.chco_ms,
            ms,
            plan.get("solver"),
            len(plan.get("models") or []),
            len(plan.get("uncovered") or []),
        )
        if not cached:  # a new plan was stored: keep the store within its bounds
            task = asyncio.create_task(self.evict_plans(throttle=retention.AFTER_SELECT_S))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return plan_to_proto(plan, self.concepts)

    async def _plan(self, plan_id: str) -> dict[str, Any]:
        plan_id = plan_id.strip()
        if not plan_id:
            raise InvalidArgument("plan_id: required")
        return await asyncio.to_thread(select.get_plan, self.graph, plan_id)

    @rpc
    async def GetPlan(self, request: Any, context: Any) -> selection_pb2.Plan:
        return plan_to_proto(await self._plan(request.plan_id), self.concepts)

    @rpc
    async def ExplainSelection(self, request: Any, context: Any) -> selection_pb2.Explanation:
        plan = await self._plan(request.plan_id)
        try:
            current = await asyncio.to_thread(registry.catalogue_version, self.graph)
        except MllgraphError:
            current = None
        return explain(plan, self.concepts, current)


# --- running the server -------------------------------------------------------------------------


async def watch_health(
    servicer: SelectionServicer,
    health: HealthServicer,
    stop: asyncio.Event,
    interval: float = HEALTH_INTERVAL_S,
    serving: bool | None = None,
) -> None:
    """SERVING while the resolver is warm and Neo4j answers, NOT_SERVING otherwise.

    `serving` is the status already reported (None: not yet)."""
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            if serving is not None:
                await asyncio.wait_for(stop.wait(), timeout=interval if serving else 1.0)
        if stop.is_set():
            break
        try:
            await asyncio.to_thread(servicer.graph.verify)
            ok, why = servicer.ready, "" if servicer.ready else "warming up"
        except Exception as e:  # noqa: BLE001 - any failure means: not serving
            ok, why = False, str(e) or type(e).__name__
        if ok != serving and not stop.is_set():
            await set_serving(health, [SERVICE_NAME], ok)
            if ok:
                log.info("health status=SERVING neo4j=%s", servicer.settings.bolt_uri)
            else:
                log.warning("health status=NOT_SERVING reason=%r", why)
            serving = ok


@dataclass
class SelectionServer:
    """A started server (from `start`): its port, health servicer and the servicer."""

    server: grpc.aio.Server
    health: HealthServicer
    port: int
    servicer: SelectionServicer
    stop_event: asyncio.Event
    watcher: asyncio.Task[None]
    sweeper: asyncio.Task[None] | None = None

    async def close(self, grace: float | None = GRACE_S) -> None:
        """Stop watching, report NOT_SERVING, stop the server (in-flight RPCs get `grace`)."""
        self.stop_event.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self.watcher
            if self.sweeper is not None:
                await self.sweeper
        await set_serving(self.health, [SERVICE_NAME], False)
        await self.server.stop(grace)
        self.servicer.close()


async def start(
    settings: Settings,
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    servicer: SelectionServicer | None = None,
    health_interval: float = HEALTH_INTERVAL_S,
) -> SelectionServer:
    """Build the server, warm the resolver and check Neo4j, then start it on `port` (0: a
    free one) and report SERVING. Raises Unavailable if Neo4j does not answer. Stop it with
    `await running.close()`."""
    servicer = servicer or SelectionServicer(settings)
    server, health, bound = await build_server(
        port,
        [(selection_pb2_grpc.add_SelectionServiceServicer_to_server, servicer)],
        [SERVICE_NAME],
        host=host,
        settings=settings,
        max_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    await server.start()
    try:
        await asyncio.to_thread(servicer.warm_up)
    except BaseException:
        await server.stop(None)
        servicer.close()
        raise
    await set_serving(health, [SERVICE_NAME], True)
    log.info("health status=SERVING neo4j=%s", settings.bolt_uri)
    stop = asyncio.Event()
    watcher = asyncio.create_task(
        watch_health(servicer, health, stop, health_interval, serving=True)
    )
    sweeper = asyncio.create_task(sweep_plans(servicer, stop))
    log.info("selection_started port=%d neo4j=%s", bound, settings.bolt_uri)
    return SelectionServer(server, health, bound, servicer, stop, watcher, sweeper)


async def sweep_plans(servicer: SelectionServicer, stop: asyncio.Event) -> None:
    """Evict stored plans over the limits now and every `retention.sweep_interval`."""
    while not stop.is_set():
        await servicer.evict_plans()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), retention.sweep_interval(servicer.settings))


async def serve(settings: Settings, *, port: int | None = None, host: str = "127.0.0.1") -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully."""
    running = await start(settings, settings.selection_port if port is None else port, host=host)
    try:
        await serve_until_signal(
            running.server, running.health, [SERVICE_NAME], GRACE_S, stop=running.stop_event
        )
    finally:
        await running.close(GRACE_S)


def main(argv: list[str] | None = None) -> int:
    return run_service_main(
        "selection", serve, argv, port_help="port (default MLLGRAPH_SELECTION_PORT, 50052)"
    )


if __name__ == "__main__":
    sys.exit(main())


class BackgroundServer:
    """A SelectionService on its own event loop in a daemon thread, for benchmarks and tests
    that call it with blocking stubs: ``with BackgroundServer(settings) as srv: srv.port``."""

    def __init__(self, settings: Settings, *, resolver: Any | None = None, port: int = 0) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="selection-server", daemon=True
        )
        self._thread.start()
        servicer = SelectionServicer(settings, resolver=resolver)
        try:
            self.running = self._run(start(settings, port, servicer=servicer))
        except BaseException:
            self._stop_loop()
            raise
        self.port = self.running.port
        self.address = f"127.0.0.1:{self.port}"

    def _run(self, coro: Any, timeout: float = 300.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()

    def close(self, grace: float | None = None) -> None:
        try:
            self._run(self.running.close(grace))
        finally:
            self._stop_loop()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
