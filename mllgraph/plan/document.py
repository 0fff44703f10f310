"""The plan document: the one contract between selection (which writes it) and inference
(which reads it), so both sides live here. Pure: no Neo4j, no torch.

A plan is a JSON object: the task's classes (name, grounded concept, coverage, heads,
estimates), the chosen models and, under ``combination``, what the shared rule
(`mllgraph.combine.rule`) needs, versioned by ``schema_version``. Plan ids are derived from the
request, the catalogue version and :data:`SELECTION_VERSION`, so the same inputs give the same
plan and plans made by older selection rules are not reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mllgraph.combine.combination import Plan as Combination
from mllgraph.combine.conse import SHARE, UNCALIBRATED, Calibration, ConsePatch
from mllgraph.combine.none_of_these import NoneCalibration
from mllgraph.combine.none_ridge import RULE as NONE_RIDGE
from mllgraph.combine.none_ridge import NoneRidge
from mllgraph.combine.rule import KINDS as HEAD_GROUP_KINDS
from mllgraph.combine.rule import ClassAssignment, CombinationParams
from mllgraph.combine.stacked import StackedRule
from mllgraph.errors import FailedPrecondition, InvalidArgument
from mllgraph.plan.request import SelectOptions, TaskClass, Timings

# combination["schema_version"]: 1 = the per-class rule (with an optional ConSE "patch");
# 2 = the same plus the stacked rule (combination["stacked"], mllgraph.combine.stacked), which
# a server reading only 1 must refuse rather than ignore. Both are served.
PLAN_SCHEMA_VERSION = 1
STACKED_SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (PLAN_SCHEMA_VERSION, STACKED_SCHEMA_VERSION)

# Part of every plan id: bump it when selection itself changes, so stored plans made by the
# old rules are not served for the same request (2: proxy probes for classes without any;
# 3: declared, unmeasured candidates and the prior of classes without probe images;
# grounding prefers senses the hub covers; 4: text-close neighbours for classes nothing covers,
# the ConSE patch for uncovered classes; 6: the stacked rule; 7: weights/biases fitted, and
# plans estimated, with the uncovered classes at the offline floor inference gives them;
# 8: the stacked rule may read models screened for it, select/feature_sets; 9: the screen
# also considers the broadest labelled experts, select/broad_models; 10: the screened plan maps
# classes to its models' own best heads, and is served by its per-class rule if that is better;
# 11: an uncovered class says why, UNCOVERED_WHY; 12: a plan served by its stacked rule
# reports that rule's per-class recall and covers classes through the heads it reads;
# 13: the stacked rule fitted in closed form (ridge with leave-one-out, combine/stacked), the
# ConSE patch's mass rule, calibrated to take <= 2% of covered-class probe images, and a cost
# budget, ms per image, with the cheapest plan within the accuracy slack served; 14: the
# "none of these" calibration, combination["none"]; 15: estimates from evidence of each
# class's kind, select/evidence, and the domain gate on candidates, select/estimates;
# 16: names WordNet lacks read as noun phrases, ground/approximate; 17: where a task's classes
# have probe images from several sources, the stacked rule and its screen hold one source out
# at a time, combine/stacked; 18: the `pictured` term of grounding, ground/depict: a name of an
# organism and its food grounds to the plant's food or to the animal; equal priors for the
# senses of a lemma none of which WordNet tagged); 19: a task with classes without probe
# images keeps the stacked rule for the others, `StackedRule.classes`; 20: where the task's
# probe images come from several sources, the "none of these" threshold is set on scores that
# leave one source out at a time, combine/none_of_these; 21: plan costs within
# select/cost_front.COST_TIE of the cheapest within the slack count as equal, and the best
# estimate among them is served; 22: the cost front is searched at the band's resolution,
# each next cap below the last plan's cost divided by 1 + COST_TIE, select/cost_front; 23: the
# "none of these" score is one more class of a ridge rule over the plan models' heads,
# combine/none_ridge; 24: a class without probe images borrows its nearest ancestor's sets
# before a related concept's, select/probe_data.proxy_probes; a name WordNet lacks grounds to
# a reading whose definition holds its modifiers, ground/approximate `defined`).
SELECTION_VERSION = 24

MAX_CLASSES = 1000
MIN_CLASSES = 2
MAX_NAME_CHARS = 256
# Unicode categories refused in class names: control, format (invisible: zero-width, bidi
# overrides), line and paragraph separators.
_REFUSED_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")
# The coverage a plan reports per class: a head-group kind of the rule, or uncovered.
COVERAGES = (*HEAD_GROUP_KINDS, "uncovered")
# Why a class is uncovered (its "uncovered_why" in the plan document): the hub (or the
# request's sub-hub) has no candidate head for it at all, or it has some and the plan left
# them out (another model over the budget, or they lowered the estimate on probe images).
UNCOVERED_WHY = ("no head", "not chosen")


def uncovered_names(names: Sequence[str], why: Mapping[str, str]) -> str:
    """E.g. "sweater (not chosen), tee (no head)"; a name without a reason (a plan made
    before reasons existed) alone."""
    return ", ".join(f"{n} ({why[n]})" if why.get(n) else n for n in names)


def held_out_text(note: Mapping[str, Any]) -> str:
    """What a stacked rule's estimate held out (its plan note), for the CLI and
    ExplainSelection."""
    if note.get("cv_folds") != "sources":
        return "folds of probe images"
    n = note.get("cv_sources")
    text = "one probe source held out at a time"
    if n == 2:
        text += (
            " (only two sources: each fold's rule learnt from one, the served rule learns "
            "from both, so the estimate is likely low)"
        )
    return text


def stacked_unscored(plan: Mapping[str, Any]) -> list[str] | None:
    """The class names a plan document's stacked rule leaves to the per-class rule (they have
    no probe images); None when the rule lists no `scored_classes` (it scores them all)."""
    listed = (plan.get("stacked") or {}).get("scored_classes")
    if listed is None:
        return None
    scored = set(listed)
    return [c["name"] for i, c in enumerate(plan.get("classes", [])) if i not in scored]


def split_uncovered(plan: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """A plan document's uncovered class names: (those its stacked rule scores from the
    other heads, those the patch or the fallback scores). A stacked rule that lists
    `scored_classes` scores only those (the others have no probe images)."""
    uncovered = list(plan.get("uncovered") or [])
    note = plan.get("stacked") or {}
    if not note.get("used"):
        return [], uncovered
    names = [c.get("name") for c in plan.get("classes", [])]
    listed = note.get("scored_classes")
    scored = set(names) if listed is None else {names[i] for i in listed if 0 <= i < len(names)}
    return [n for n in uncovered if n in scored], [n for n in uncovered if n not in scored]


def patch_summary(patch: Mapping[str, Any]) -> str:
    """One line on a plan's ConSE patch (the document's top-level `patch`): its model, rule,
    weight and how the weight was calibrated, e.g. for the CLI and ExplainSelection."""
    raw = patch.get("calibration")
    try:
        calibration = Calibration(UNCALIBRATED) if raw is None else Calibration.from_dict(raw)
    except InvalidArgument:
        calibration = Calibration(UNCALIBRATED)
    rule, weight = patch.get("evidence", SHARE), float(patch.get("weight") or 0)
    floor = patch.get("floor")
    floor_text = "the rule's constant" if floor is None else f"{float(floor):.3g}"
    return (
        f"ConSE of {patch.get('model_id')} ({rule} rule), weight {weight:.3g}, floor "
        f"{floor_text}; {calibration.describe()}"
    )


# The candidates query's kinds, as coverage (a group of heads covers through descendants).
COVERAGE_OF_QUERY_KIND = {
    "exact": "exact",
    "group": "descendants",
    "descendants": "descendants",
    "ancestor": "ancestor",
    "related": "related",
    # Declared, unmeasured (select/declared_candidates): the head's declared concept is the
    # class's concept, lies under it (pooled) or above it; its quality is a prior.
    "declared": "declared",
    "declared_descendants": "declared",
    "declared_ancestor": "declared",
    # A text-close neighbour's declared heads (select/nearby): coverage declared.
    "declared_related": "declared",
}
# A plan's words for coverage "declared" (CLI and explanations).
DECLARED_NOTE = "declared, unmeasured"


def check_class_name(name: object, where: str) -> str:
    """A class name as a person may type it, normalised to NFC: a non-empty string, at most
    MAX_NAME_CHARS characters, no control (Cc), format (Cf: zero-width space and joiner,
    right-to-left override, ...) or line/paragraph separator characters; a refusal names
    each such character's code point. Returns the NFC form."""
    if not isinstance(name, str):
        raise InvalidArgument(f"{where}: a class name must be a string, got {type(name).__name__}")
    # Length before normalising too: NFC of a huge string costs, and it changes lengths
    # by at most a factor of 3.
    if len(name) > 3 * MAX_NAME_CHARS or len(name := unicodedata.normalize("NFC", name)) > (
        MAX_NAME_CHARS
    ):
        raise InvalidArgument(
            f"{where}: the class name is {len(name)} characters long (at most {MAX_NAME_CHARS})"
        )
    if not name.strip():
        raise InvalidArgument(f"{where}: the class name is empty")
    bad = dict.fromkeys(ch for ch in name if unicodedata.category(ch) in _REFUSED_CATEGORIES)
    if bad:
        listed = ", ".join(
            f"U+{ord(ch):04X} {unicodedata.name(ch, unicodedata.category(ch))}" for ch in bad
        )
        raise InvalidArgument(
            f"{where}: the class name contains control characters or invisible format "
            f"characters ({listed})"
        )
    return name


def plan_id_for(classes: list[TaskClass], options: SelectOptions, catalogue_version: int) -> str:
    key = json.dumps(
        {
            "classes": [[c.name, c.pinned_wnid] for c in classes],
            "options": asdict(options),
            "catalogue_version": catalogue_version,
            "schema": PLAN_SCHEMA_VERSION,
            "selection": SELECTION_VERSION,
        },
        sort_keys=True,
    )
    return "plan-" + hashlib.sha256(key.encode()).hexdigest()[:20]


def _finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def plan_document(
    pid: str,
    classes: list[TaskClass],
    groundings: list[Any],
    plan: Combination,
    info: dict[tuple[int, str, tuple[int, ...]], dict[str, Any]],
    versions: dict[str, str],
    options: SelectOptions,
    catalogue_version: int,
    labels: np.ndarray,
    timings: Timings,
    candidate_classes: frozenset[int] = frozenset(),
) -> dict[str, Any]:
    """The stored plan. `candidate_classes`: the classes some candidate head of the hub
    covers (an uncovered one among them was "not chosen", the others have "no head")."""
    counts = np.bincount(labels, minlength=len(classes)) if labels.size else [0] * len(classes)
    planned = []
    for i, (cls, g) in enumerate(zip(classes, groundings, strict=True)):
        a = plan.assignment[i]
        heads = []
        coverage = "uncovered"
        declared_via = None
        text_close: dict[str, Any] | None = None
        for grp in a.groups:
            meta = info.get((i, grp.model_id, grp.heads), {"labels": [], "via": None})
            coverage = grp.kind
            if "text_similarity" in meta:  # a neighbour kept by the text test (select/nearby)
                text_close = {"concept": meta["via"], "text_similarity": meta["text_similarity"]}
            if grp.kind == "declared":  # which declared kind: the concept, below or above it
                declared_via = meta.get("kind", "declared")
            for j, h in enumerate(grp.heads):
                heads.append(
                    {
                        "model_id": grp.model_id,
                        "model_version": versions.get(grp.model_id, ""),
                        "head_index": h,
                        "head_label": meta["labels"][j] if j < len(meta["labels"]) else "",
                        "label_score": grp.label_score,
                        "label_wnid": meta["via"] or "",
                    }
                )
        planned.append(
            {
                "name": cls.name,
                "concept": {"wnid": g.wnid, "name": g.concept_name},
                "grounding": g.to_dict(),
                "coverage": coverage,
                "heads": heads,
                "estimated_accuracy": _finite(plan.per_class_accuracy[i]),
                "probe_images": int(counts[i]),
                # False: the estimate is a prior (no probe images), not a measurement.
                "measured": bool(counts[i] > 0),
            }
        )
        if coverage == "uncovered":
            planned[-1]["uncovered_why"] = "not chosen" if i in candidate_classes else "no head"
        if text_close is not None:
            planned[-1]["related_by_text"] = text_close
        if coverage == "declared":
            planned[-1]["declared_via"] = declared_via
            planned[-1]["note"] = DECLARED_NOTE
    return {
        "plan_id": pid,
        "schema_version": PLAN_SCHEMA_VERSION,
        "classes": planned,
        "estimated_accuracy": _finite(plan.estimated_accuracy),
        # The share of estimated_accuracy that rests on probe images (the rest: priors).
        "measured_fraction": float(plan.measured_fraction),
        "models": plan.models,
        "uncovered": [classes[i].name for i in plan.uncovered],
        "solver": plan.solver,
        "params_fitted": bool(plan.params.fitted),
        "catalogue_version": catalogue_version,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "budget": options.budget,
        "options": asdict(options),
        "timings_ms": asdict(timings),
        "combination": {"schema_version": PLAN_SCHEMA_VERSION, "plan": plan.to_dict()},
    }


# -- reading a plan (inference) ------------------------------------------------------------


@dataclass(frozen=True)
class HeadInfo:
    """A head that scores a class (HeadRef in the proto)."""

    model_id: str
    model_version: str
    head_index: int
    head_label: str = ""
    label_score: float = 0.0
    label_wnid: str = ""


@dataclass(frozen=True)
class ParsedPlan:
    """What inference needs from a plan document."""

    plan_id: str
    class_names: list[str]
    assignment: list[ClassAssignment]  # ordered by class index
    params: CombinationParams
    models: list[str]
    heads: list[tuple[HeadInfo, ...]]  # per class, as the document lists them
    # The ConSE patch for the uncovered classes (combination["patch"]), if selection made one.
    patch: ConsePatch | None = None
    # The stacked rule (combination["stacked"], schema 2): when set, it alone scores its
    # classes (all, or those with probe images: `plan.apply`).
    stacked: StackedRule | None = None
    # The "none of these" score and threshold (combination["none"], mllgraph.combine.
    # none_ridge; plans of SELECTION_VERSION 14-22: none_of_these); absent in plans made before
    # it, or without probe images outside the task.
    none: NoneRidge | NoneCalibration | None = None

    @property
    def uncovered(self) -> list[int]:
        return [a.class_index for a in self.assignment if not a.groups]

    @property
    def k(self) -> int:
        return len(self.class_names)


# What a malformed document raises while it is read (wrong types, missing keys, too deep):
# always reported as InvalidArgument, never as an internal error.
_MALFORMED = (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError)
_MALFORMED += (RecursionError,)


def read_combination_json(text: str, where: str = "inline_plan.combination_json") -> Any:
    """The combination part of a Plan message's `combination_json`, whichever of the two
    shapes it carries:

    * the whole plan document, as SelectHeads returns it (its ``combination`` key is taken):
      so the Plan that SelectHeads returned works unchanged as an inline plan;
    * the combination part alone, ``{"schema_version": 1, "plan": {...}}`` (older clients,
      and what inference's `plan_to_proto` writes).

    Not JSON, too deeply nested, or not an object: InvalidArgument. The schema version is
    checked by `combination_of` (FailedPrecondition for a version this server does not read).
    """
    if not text:
        raise InvalidArgument(f"{where} is empty: pass the Plan unchanged")
    try:
        value = json.loads(text)
    except RecursionError as e:
        raise InvalidArgument(f"{where} is nested too deeply to be a plan") from e
    except ValueError as e:
        raise InvalidArgument(f"{where} is not JSON: {e}") from e
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{where} must be a JSON object, got {type(value).__name__}")
    if isinstance(value.get("combination"), Mapping):
        value = value["combination"]  # the whole plan document
    if "schema_version" not in value:
        raise InvalidArgument(
            f"{where} must be a plan document or its combination part (with schema_version)"
        )
    return value


def combination_of(plan: Mapping[str, Any]) -> Combination:
    """The combination rule's inputs from a plan document."""
    comb = plan.get("combination") or {}
    version = comb.get("schema_version") if isinstance(comb, Mapping) else None
    if isinstance(version, bool) or not isinstance(version, int | str | float):
        version = None if version is None else type(version).__name__
    if not isinstance(comb, Mapping) or version not in READABLE_SCHEMA_VERSIONS:
        raise FailedPrecondition(
            f"plan {str(plan.get('plan_id'))[:80]} has combination schema {str(version)[:40]}, "
            f"this server reads {' and '.join(map(str, READABLE_SCHEMA_VERSIONS))}: "
            "select the task again"
        )
    if not isinstance(comb.get("plan"), Mapping):
        raise InvalidArgument("the plan's combination has no 'plan' object (the rule's inputs)")
    assignment = comb["plan"].get("assignment")
    if isinstance(assignment, list) and len(assignment) > MAX_CLASSES:
        raise InvalidArgument(
            f"the plan has {len(assignment)} classes; at most {MAX_CLASSES} are accepted"
        )
    try:
        return Combination.from_dict(comb["plan"])
    except _MALFORMED as e:
        raise InvalidArgument(
            f"the plan's combination is malformed ({type(e).__name__}: {str(e)[:200]})"
        ) from e


def parse_plan(doc: Mapping[str, Any]) -> ParsedPlan:
    """Check a plan document (select's JSON, or one rebuilt from an inline proto Plan).
    Anything malformed is InvalidArgument (FailedPrecondition for an unknown schema)."""
    if not isinstance(doc, Mapping):
        raise InvalidArgument("plan must be a JSON object")
    try:
        return _parse_plan(doc)
    except _MALFORMED as e:
        raise InvalidArgument(f"the plan is malformed ({type(e).__name__}: {str(e)[:200]})") from e


def _parse_plan(doc: Mapping[str, Any]) -> ParsedPlan:
    comb = combination_of(doc)
    assignment = sorted(comb.assignment, key=lambda a: a.class_index)
    k = len(assignment)
    if k > MAX_CLASSES:
        raise InvalidArgument(f"the plan has {k} classes; at most {MAX_CLASSES} are accepted")
    if [a.class_index for a in assignment] != list(range(k)) or k == 0:
        raise InvalidArgument("plan combination must assign each class index 0..K-1 once")
    if comb.params.num_classes != k:
        raise InvalidArgument(f"plan params have {comb.params.num_classes} classes, plan has {k}")
    classes = doc.get("classes") or []
    if not isinstance(classes, list) or len(classes) != k:
        n = len(classes) if isinstance(classes, list) else type(classes).__name__
        raise InvalidArgument(f"plan lists {n} classes but its combination has {k}")
    if not all(isinstance(c, Mapping) for c in classes):
        raise InvalidArgument("plan classes must be objects")
    names = [
        check_class_name(c.get("name"), f"plan class {i}").strip() for i, c in enumerate(classes)
    ]
    heads: list[tuple[HeadInfo, ...]] = []
    for c in classes:
        listed = []
        for h in c.get("heads") or []:
            listed.append(
                HeadInfo(
                    model_id=str(h.get("model_id", "")),
                    model_version=str(h.get("model_version", "")),
                    head_index=int(h.get("head_index", 0)),
                    head_label=str(h.get("head_label", "") or ""),
                    label_score=float(h.get("label_score", 0.0) or 0.0),
                    label_wnid=str(h.get("label_wnid", "") or ""),
                )
            )
        heads.append(tuple(listed))
    # The stacked rule may also read models no class is mapped to (combine/screen).
    models = sorted({g.model_id for a in assignment for g in a.groups})
    raw_patch = doc["combination"].get("patch")
    patch = None
    if raw_patch is not None and any(not a.groups for a in assignment):
        patch = ConsePatch.from_dict(raw_patch, k)
    stacked = None
    if doc["combination"]["schema_version"] == STACKED_SCHEMA_VERSION:
        if "stacked" not in doc["combination"]:
            raise InvalidArgument("a schema 2 combination must carry its 'stacked' rule")
        stacked = StackedRule.from_dict(doc["combination"]["stacked"], k)
        if not set(stacked.models) <= set(models) | set(comb.models):
            raise InvalidArgument("the stacked rule reads models the plan does not list")
        models = sorted(set(models) | set(stacked.models))
    none = None
    if doc["combination"].get("none") is not None:
        found = doc["combination"]["none"]
        is_ridge = isinstance(found, dict) and found.get("rule") == NONE_RIDGE
        none = NoneRidge.from_dict(found) if is_ridge else NoneCalibration.from_dict(found)
        if not set(none.models) <= set(models):
            raise InvalidArgument("the none-of-these calibration reads models the plan does not")
    return ParsedPlan(
        plan_id=str(doc.get("plan_id", "") or ""),
        class_names=names,
        assignment=assignment,
        params=comb.params,
        models=models,
        heads=heads,
        patch=patch,
        stacked=stacked,
        none=none,
    )


def plan_key(doc: Mapping[str, Any]) -> str:
    """A stable id for a plan document's content (inline plans have no trusted id)."""
    parsed = parse_plan(doc)
    body = {
        "names": parsed.class_names,
        "combination": doc.get("combination"),
        "heads": [[dataclasses.astuple(h) for h in hs] for hs in parsed.heads],
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]
