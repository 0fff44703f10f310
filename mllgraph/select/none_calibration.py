"""Selection's last step: the plan's "none of these" calibration, fitted on the hub's probe
images: the ridge rule of `mllgraph.combine.none_ridge` (the logistic rule of
`mllgraph.combine.none_of_these` for plans of SELECTION_VERSION 14-22, and with `RULE`).

Positives: the task's probe images (the sets under its classes, as CHCO used them; at most
:data:`RIDGE_INSIDE_IMAGES`, evenly spread), each with its class.
Negatives: probe sets of concepts outside the task, neither under a class (those are the
task's) nor above one (an image of "footwear" may well be a sandal): at most
:data:`RIDGE_OUTSIDE_IMAGES` images, spread evenly over at most :data:`MAX_OUTSIDE_SETS` sets.
Both are scored as inference scores them: the plan parsed from its document, its models'
stored probe outputs, `mllgraph.plan.apply`. Nothing runs a model here. Each image's source
(`probe_data.probe_sources`: the art style of an emoji's probe set, "" where a concept has
one source) goes with it: where the task's images come from two sources or more, the fit's
held-out scores, which set the threshold, leave one source out at a time
(`none_of_these.fit`).

A plan gets no calibration (and says why in its document's ``none_of_these``) when its
models are not all simulable (a model without probe outputs), or either side has fewer than
`none_of_these.MIN_IMAGES` images (a hub whose probe sets all lie under the task). Inference
then refuses ``allow_none`` with FAILED_PRECONDITION rather than guess a threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mllgraph.combine import none_of_these, none_ridge, stacked
from mllgraph.combine.softmax import log_probabilities
from mllgraph.errors import FailedPrecondition
from mllgraph.hub import probe_outputs
from mllgraph.plan import apply
from mllgraph.plan.document import parse_plan
from mllgraph.select.probe_data import (
    ProbeOutputCache,
    class_probes,
    probe_matrix,
    probe_sources,
)
from mllgraph.select.reads import Reads
from mllgraph.settings import Settings

MAX_OUTSIDE_SETS = 200
MAX_OUTSIDE_IMAGES = 3000
MAX_INSIDE_IMAGES = 5000  # evenly spread; a 1,000-head model costs 40 MB per 5,000 rows
# The ridge rule (combine/none_ridge) reads every head of the plan's models: fewer rows keep its
# fit in milliseconds. 600 outside images scored as 3,000 did on the emoji dev half (AUROC 0.878
# and 0.877, 256 t-ranked heads).
RIDGE_INSIDE_IMAGES = 2000
RIDGE_OUTSIDE_IMAGES = 600
# Which rule new plans get: "ridge" (combine/none_ridge) or "logistic" (combine/none_of_these,
# plans of SELECTION_VERSION 14-22; kept for side-by-side runs).
RULE = "ridge"
PROBE_SET_LIMIT = 20_000  # probe sets the graph read looks at, by id


def inside_rows(
    reads: Reads, wnids: Sequence[str], probe_rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The task's probe rows the calibration learns each class from: its own sets (at or under
    its concept). A class with none takes the sets at its nearest ancestor that has some
    (every image of the class is an image of that concept: "slacks" learns from trouser
    images); only where there is none, the proxy sets selection borrowed for it (probe_data.
    proxy_probes, possibly of a related concept)."""
    own = [r for r in probe_rows if not r.get("proxy")]
    have = {r["class_index"] for r in own}
    missing = [c for c in range(len(wnids)) if c not in have]
    if not missing:
        return own
    taken = {r["set_id"] for r in own}
    sets = [r for r in reads.probe_set_concepts(PROBE_SET_LIMIT) if r["count"]]
    rows = list(own)
    for c, above in zip(missing, reads.ancestors([wnids[c] for c in missing]), strict=True):
        at = [r for r in sets if r["wnid"] in above and r["set_id"] not in taken]
        if at:
            nearest = max(len(r["ancestors"]) for r in at)  # the deepest ancestor's sets
            found = [r for r in at if len(r["ancestors"]) == nearest]
            rows += [
                {"class_index": c, "set_id": r["set_id"], "distance": 1000, "wnid": r["wnid"],
                 "source": r.get("source") or ""}
                for r in found
            ]  # fmt: skip
        else:
            found = [r for r in probe_rows if r.get("proxy") and r["class_index"] == c]
            rows += found
        taken |= {r["set_id"] for r in found}
    return rows


def calibration_rows(
    reads: Reads, wnids: Sequence[str], probe_rows: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the task's rows, `inside_rows`; the outside sets, `outside_sets`, less any set the
    task learns a class from: a related proxy is never both)."""
    inside = inside_rows(reads, wnids, probe_rows)
    positives = {r["set_id"] for r in inside}
    return inside, [r for r in outside_sets(reads, wnids) if r["set_id"] not in positives]


def outside_sets(
    reads: Reads, wnids: Sequence[str], limit: int = MAX_OUTSIDE_SETS
) -> list[dict[str, Any]]:
    """Probe sets whose concept is neither under nor above (nor equal to) any task class's
    concept, by id, at most `limit`, as `probe_matrix` rows (one pseudo-class, 0)."""
    task = set(wnids)
    above = set().union(*reads.ancestors(wnids)) if wnids else set()
    out = []
    for r in reads.probe_set_concepts(PROBE_SET_LIMIT):
        concept = r["wnid"]
        if not r["count"] or concept in task or concept in above:
            continue
        if task & set(r["ancestors"]):  # under a class: the task's own images
            continue
        out.append(
            {
                "class_index": 0,
                "set_id": r["set_id"],
                "distance": 0,
                "wnid": concept,
                "source": r.get("source") or "",
            }
        )
        if len(out) >= limit:
            break
    return out


def _row_sources(
    rows: list[dict[str, Any]], outs: dict[str, probe_outputs.ProbeOutputs], k: int
) -> np.ndarray:
    """(N,) each `probe_matrix(rows, outs, k)` row's source (`stacked.row_sources`)."""
    return stacked.row_sources(class_probes(rows, outs, k), probe_sources(rows))


def _even(n: int, cap: int) -> np.ndarray:
    """At most `cap` of `n` rows, evenly spread (deterministic)."""
    if n <= cap:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))


def calibrate(
    reads: Reads,
    settings: Settings,
    document: Mapping[str, Any],
    wnids: Sequence[str],
    probe_rows: list[dict[str, Any]],
    outputs: Mapping[str, probe_outputs.ProbeOutputs],
    cache: ProbeOutputCache,
    known: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the calibration for ``combination["none"]`` or None, the document's summary).
    `known`: {model: (its file rows, its logits)} of the task's probe images as selection
    read them (`probe_matrix`); where a model's rows here are the same, that very array is
    used, so the softmaxes selection's fits kept for it (`softmax_memo`) are read again."""
    plan = parse_plan(document)
    if not plan.models:
        return None, {"calibrated": False, "why": "the plan has no expert heads"}
    run = apply.models_to_run(plan)
    outs: dict[str, probe_outputs.ProbeOutputs] = {}
    for m in run:
        try:
            outs[m] = outputs[m] if m in outputs else cache.get(settings, m)
        except FailedPrecondition:
            return None, {"calibrated": False, "why": f"model {m} has no stored probe outputs"}
    probe_rows, negative_rows = calibration_rows(reads, wnids, probe_rows)
    labels, inside, rows = probe_matrix(probe_rows, outs, len(plan.class_names))
    for m, (file_rows, same) in (known or {}).items():
        if m in inside and np.array_equal(rows[m], file_rows):
            inside[m] = same
    _, outside, _ = probe_matrix(negative_rows, outs, 1)
    n_in = labels.size
    n_out = next(iter(outside.values())).shape[0] if outside else 0
    if min(n_in, n_out) < none_of_these.MIN_IMAGES:
        return None, {
            "calibrated": False,
            "why": f"too few probe images: {n_in} of the task's concepts, {n_out} of concepts "
            f"outside it (at least {none_of_these.MIN_IMAGES} each)",
        }
    ridge = RULE == "ridge"
    keep_in = _even(n_in, RIDGE_INSIDE_IMAGES if ridge else MAX_INSIDE_IMAGES)
    keep_out = _even(n_out, RIDGE_OUTSIDE_IMAGES if ridge else MAX_OUTSIDE_IMAGES)
    if keep_in.size < n_in:
        inside = {m: v[keep_in] for m, v in inside.items()}
    outside = {m: v[keep_out] for m, v in outside.items()}
    # Where each image comes from, in probe_matrix's row order (as the stacked rule reads it):
    # the fit's held-out scores leave one source out at a time.
    sources = np.concatenate(
        [
            _row_sources(probe_rows, outs, len(plan.class_names))[keep_in],
            _row_sources(negative_rows, outs, 1)[keep_out],
        ]
    )
    temperatures = {m: float(outs[m].temperature) for m in plan.models}
    fitted: none_ridge.NoneRidge | none_of_these.NoneCalibration | None
    if ridge:
        fitted = _fit_ridge(inside, outside, labels[keep_in], plan.models, temperatures, sources)
    else:
        fitted = _fit_logistic(inside, outside, plan, temperatures, sources)
    if fitted is None:
        return None, {"calibrated": False, "why": "too few probe images"}
    summary = {
        "calibrated": True,
        "rule": "ridge" if ridge else "logistic",
        "threshold": fitted.threshold,
        "probe_auroc": fitted.probe_auroc,
        "probe_rejected": fitted.probe_rejected,
        "inside_images": fitted.positives,
        "outside_images": fitted.negatives,
        "outside_sets": len(negative_rows),
        "held_out": fitted.held_out,
    }
    return fitted.to_dict(), summary


def _fit_ridge(
    inside: Mapping[str, np.ndarray],
    outside: Mapping[str, np.ndarray],
    labels: np.ndarray,
    models: Sequence[str],
    temperatures: Mapping[str, float],
    sources: np.ndarray,
) -> none_ridge.NoneRidge | None:
    """The ridge rule over every head of the plan's models (`none_ridge.fit` keeps the telling
    ones)."""
    columns = [(m, h) for m in models for h in range(inside[m].shape[1])]

    def logp(logits: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([log_probabilities(logits[m], temperatures[m]) for m in models], 1)

    return none_ridge.fit(
        logp(inside), labels, logp(outside), columns, temperatures, sources=sources
    )


def _fit_logistic(
    inside: Mapping[str, np.ndarray],
    outside: Mapping[str, np.ndarray],
    plan: Any,
    temperatures: Mapping[str, float],
    sources: np.ndarray,
) -> none_of_these.NoneCalibration | None:
    """The logistic rule of SELECTION_VERSION 14-22 (`none_of_these.fit`)."""
    heads = none_of_these.task_heads(plan.assignment)
    extra = none_of_these.head_columns(
        inside, outside, plan.models, temperatures, none_of_these.HEAD_FEATURES
    )

    def feats(logits: Mapping[str, np.ndarray]) -> np.ndarray:
        return none_of_these.features(logits, plan.models, heads, temperatures, extra)

    return none_of_these.fit(
        feats(inside), feats(outside), plan.models, heads, temperatures, extra=extra,
        sources=sources,
    )  # fmt: skip
