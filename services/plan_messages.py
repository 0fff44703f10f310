"""Plan documents (`mllgraph.select.run`) as SelectionService messages: `plan_to_proto` (the
`Plan` of SelectHeads and GetPlan) and `explain` (the `Explanation` of ExplainSelection), with
`Concepts` naming concepts from the grounding resolver's lexicon.

Imports no service module (services/selection.py imports it).

Mapping the plan document (`mllgraph.select.run`) to the `Plan` message
---------------------------------------------------------------------
* Accuracies the plan cannot estimate (a class without probe images; a plan without
  candidates or probes) are ``null`` in the document and **0** in the message: the proto has
  no presence bit for them, and `ExplainSelection` says why in the class's reasons.
* A plan that had no candidate at all (nothing to search) reports ``SOLVER_EXACT``: its one
  assignment, every class uncovered, is trivially the optimum.
* ``combination_json`` is the whole plan document as JSON (it carries ``schema_version`` and
  ``combination``), exactly as stored; inference parses it. Like the stored copy it may hold
  ``NaN`` inside ``combination`` (Python's json reads it).
* ``allow_ancestor`` and ``fit_params`` are optional booleans: unset, the server takes the
  library's defaults (both on, as the Python client and the CLI); a plan echoes both set.
  Budget 0 and min_label_score 0 take the server defaults (5, 0.05).
"""

from __future__ import annotations

import json
from typing import Any

from mllgraph.graph.wordnet import concept_display_name
from mllgraph.plan import document as plan_doc
from mllgraph.select.cost_front import COST_TIE
from mllgraph.v1 import common_pb2, selection_pb2
from mllgraph.wire import (
    COVERAGE_TO_PROTO,
    SOLVER_TO_PROTO,
    UNCOVERED_WHY_TO_PROTO,
    head_ref,
    timestamp,
)

_SOLVER_TO_PROTO = {
    **SOLVER_TO_PROTO,
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


def _acc(value: float | None) -> float:
    """An accuracy for the wire: None (not estimated) and NaN become 0."""
    if value is None or value != value:
        return 0.0
    return float(value)


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
    msg.max_cost_ms = float(options.get("max_cost_ms") or 0.0)
    if options.get("accuracy_slack") is not None:
        msg.accuracy_slack = float(options["accuracy_slack"])
    return msg


def _cost_estimated(plan: dict[str, Any]) -> bool:
    return any(c.get("estimated") for c in (plan.get("model_costs") or {}).values())


def _front_to_proto(plan: dict[str, Any]) -> list[selection_pb2.FrontPlan]:
    return [
        selection_pb2.FrontPlan(
            model_ids=list(p["models"]),
            estimated_accuracy=_acc(p.get("estimated_accuracy")),
            cost_ms_per_image=float(p["cost_ms_per_image"]),
            chosen=bool(p.get("chosen")),
        )
        for p in plan.get("cost_front") or []
    ]


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
        created_at=timestamp(plan.get("created_at")),
        combination_json=json.dumps(plan),
        budget=int(plan.get("budget") or 0),
        options=_options_to_proto(plan.get("options") or {}),
        measured_fraction=float(plan.get("measured_fraction", 1.0)),
        cost_ms_per_image=float(plan.get("cost_ms_per_image") or 0.0),
        cost_estimated=_cost_estimated(plan),
    )


def _fmt(x: float | None) -> str:
    return "not estimated" if x is None or x != x else f"{x:.3f}"


# How an approximate grounding read the name: its score term (ground.records.APPROXIMATE_ROLES).
_APPROXIMATE_READING = {
    "head_phrase": "read from the name's head noun",
    "modifier_phrase": "read from a word qualifying the name's head",
    "context_phrase": "read from the name's context (after a preposition or participle)",
    "narrower": "a kind of the name's head that fits the whole name better",
    "lexical": "spelt like the name",
}


def _grounding_reason(c: dict[str, Any]) -> str:
    g = c.get("grounding") or {}
    concept = f"{concept_display_name(c['concept'].get('name', ''))} ({c['concept']['wnid']})"
    if g.get("pinned"):
        return f"{c['name']!r} is pinned to {concept}."
    text = f"{c['name']!r} was grounded to {concept} by {g.get('method', 'lemma')}"
    text += f" with confidence {float(g.get('score') or 0):.2f}"
    reasons = g.get("reasons") or {}
    if g.get("approximate"):
        text += "; WordNet lacks the name, so this is the nearest concept (approximate"
        how = next((t for key, t in _APPROXIMATE_READING.items() if key in reasons), None)
        text += f": {how}, scored against the whole name)" if how else ")"
    alts = g.get("alternatives") or []
    if g.get("ambiguous") and alts:
        shown = ", ".join(
            f"{concept_display_name(a.get('concept_name', ''))} ({a['wnid']})" for a in alts[:3]
        )
        text += f"; other senses: {shown} (pin the class to choose another)"
    if g.get("ambiguous") and "prior_p" in reasons:
        # The one scored decision, in words: WordNet's sense frequency against the task.
        text += (
            f"; WordNet tags this sense {reasons.get('tag_count', 0):.0f} time(s) "
            f"(prior {float(reasons['prior_p']):.2f}), the next sense "
            f"{reasons.get('runner_up_tag_count', 0):.0f}"
        )
        if "context" in reasons:
            text += (
                f"; task context {float(reasons['context']):.2f} against "
                f"{float(reasons.get('runner_up_context', 0.0)):.2f}"
            )
    if g.get("ambiguous") and ("pictured" in reasons or "runner_up_pictured" in reasons):
        # ground.depict: the name names both an organism and its food.
        which = "this sense" if "pictured" in reasons else "the next sense"
        text += (
            "; the name names both an organism and the food it gives, and a photo of it "
            f"shows {which} (pictured {float(reasons.get('pictured', 0.0)):.2f} against "
            f"{float(reasons.get('runner_up_pictured', 0.0)):.2f})"
        )
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
        evidence = c.get("estimate_evidence")
        if isinstance(evidence, dict) and c.get("estimated_accuracy") is not None:
            # What the estimate rests on (select/evidence): its own probe images, a route
            # calibration measured on the hub's probed concepts, or chance.
            reasons.append(
                f"Estimated accuracy {c['estimated_accuracy']:.3f}: {evidence.get('text')}."
            )
            if c.get("domain_set_aside"):
                reasons.append(f"Not covering: {c['domain_set_aside']}.")
        elif c.get("estimated_accuracy") is not None and not c.get("measured", True):
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
    if plan.get("cost_ms_per_image") is not None:
        notes.append(_cost_note(plan))
    share = plan.get("measured_fraction")
    if share is not None and share < 1.0 and plan_acc is not None:
        notes.append(
            f"{share:.0%} of the estimated accuracy is measured on the classes' own probe "
            "images; the rest comes from the classes without any (route calibrations "
            "measured on the hub's probed concepts, or chance: each class's reasons say which)."
        )
    if over_budget_classes:
        notes.append(
            f"The budget of {budget} model(s) was binding: "
            f"{', '.join(repr(n) for n in over_budget_classes)} stayed uncovered for lack of it."
        )
    stacked = plan.get("stacked") or {}
    by_stacked, patched = plan_doc.split_uncovered(plan)
    if by_stacked:
        notes.append(
            f"Uncovered classes: {', '.join(repr(n) for n in by_stacked)}; scored by the "
            "stacked rule from the other heads."
        )
    if patched:
        if plan.get("patch"):
            how = (
                f"scored by the ConSE patch: {plan['patch']['model_id']}'s heads mapped to the "
                "class names by text similarity; " + plan_doc.patch_summary(plan["patch"])
            )
        else:
            how = "scored by the constant fallback, or a VLM where the inference service has one"
        notes.append(f"Uncovered classes: {', '.join(repr(n) for n in patched)}; {how}.")
    if stacked:
        held = plan_doc.held_out_text(stacked)
        notes.append(
            f"Stacked rule (ridge regression on the chosen models' {stacked['features']} most "
            f"class-dependent heads): out-of-fold accuracy {stacked['cv_accuracy']:.3f} "
            f"({held}) against {stacked['per_class_rule_accuracy']:.3f} for the per-class rule "
            f"on the same probe images (in-sample); {'used' if stacked['used'] else 'not used'}"
            + (
                " (held-out sources are what a new style of image meets)."
                if stacked["used"] and stacked.get("cv_folds") == "sources"
                else "."
            )
        )
        others = plan_doc.stacked_unscored(plan)
        if others is not None:
            k = len(plan["classes"])
            notes.append(
                f"The stacked rule scores {k - len(others)} of the {k} classes; "
                f"{', '.join(repr(n) for n in others)} (no probe images) are scored by the "
                "per-class rule, which decides between them and the stacked rule's classes."
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
    return selection_pb2.Explanation(
        plan_id=plan["plan_id"],
        classes=out_classes,
        notes=notes,
        cost_front=_front_to_proto(plan),
    )


def _cost_note(plan: dict[str, Any]) -> str:
    """The plan's cost, and how it was chosen from the accuracy-cost front."""
    options = plan.get("options") or {}
    cost = float(plan["cost_ms_per_image"])
    text = f"Cost {cost:.3g} ms per image" + (
        " (estimated for a model never measured)" if _cost_estimated(plan) else ""
    )
    cap = float(options.get("max_cost_ms") or 0.0)
    if cap > 0:
        text += f", under a cap of {cap:.3g} ms"
    front = plan.get("cost_front") or []
    if len(front) > 1:
        best = max(front, key=lambda p: p.get("estimated_accuracy") or 0.0)
        slack = float(options.get("accuracy_slack") or 0.0)
        best_acc = _fmt(best.get("estimated_accuracy"))
        text += (
            f"; the cheapest of {len(front)} plans on the accuracy-cost front within "
            f"{slack * 100:.2g} point(s) of the best estimate ({best_acc} at "
            f"{float(best['cost_ms_per_image']):.3g} ms), costs within "
            f"{COST_TIE * 100:.0f}% of the cheapest such plan counted as equal"
        )
    return text + "."
