"""Scoring shared by every method: the shared rule at the calibrated temperatures, the
offline fallback evidence for uncovered classes and each model's input domain, as inference
applies them (:func:`task_scores`, :func:`predict`; :func:`classify_plan` for MLL's plans).

It must not import evaluate, baselines, references or summary (they build on it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mllgraph.combine.rule import (
    ClassAssignment,
    CombinationParams,
    class_scores,
    fallback_evidence,
)
from mllgraph.plan import apply
from mllgraph.plan import document as plan_doc

InDomainOf = Callable[[str], "np.ndarray | None"]  # model -> (N_all,) mask, None: every image


def _masks(
    models: Sequence[str], in_domain_of: InDomainOf | None, idx: np.ndarray
) -> dict[str, np.ndarray]:
    if in_domain_of is None:
        return {}
    masks = {m: in_domain_of(m) for m in models}
    return {m: v[idx] for m, v in masks.items() if v is not None}


def task_scores(
    assignment: Sequence[ClassAssignment],
    params: CombinationParams,
    logits_of: Callable[[str], np.ndarray],
    idx: np.ndarray,
    in_domain_of: InDomainOf | None = None,
) -> np.ndarray:
    """Class scores (N, K) of any method's head choice: the shared rule at the temperatures in
    `params`, with the offline fallback evidence for every uncovered class and each model's
    input domain (as inference)."""
    models = sorted({g.model_id for a in assignment for g in a.groups})
    logits = {m: logits_of(m)[idx] for m in models}
    uncovered = [a.class_index for a in assignment if not a.groups]
    extra = fallback_evidence(len(idx), uncovered) if uncovered else None
    masks = _masks(models, in_domain_of, idx)
    return class_scores(logits, assignment, params, extra_evidence=extra, in_domain=masks)


def predict(
    assignment: Sequence[ClassAssignment],
    params: CombinationParams,
    logits_of: Callable[[str], np.ndarray],
    idx: np.ndarray,
    in_domain_of: InDomainOf | None = None,
) -> np.ndarray:
    """Predicted task-class index per image (first class on ties)."""
    return task_scores(assignment, params, logits_of, idx, in_domain_of).argmax(1)


def classify_plan(
    plan: Mapping[str, Any],
    logits_of: Callable[[str], np.ndarray],
    idx: np.ndarray,
    in_domain_of: InDomainOf | None = None,
) -> np.ndarray:
    """MLL's predictions from a plan document, exactly as inference makes them without a VLM
    (`mllgraph.plan.apply`: its heads and fitted parameters, or its stacked rule; its patch
    for uncovered classes; each model's input domain)."""
    parsed = plan_doc.parse_plan(plan)
    logits = {m: logits_of(m)[idx] for m in apply.models_to_run(parsed)}
    masks = _masks(parsed.models, in_domain_of, idx)
    return apply.probabilities(parsed, logits, len(idx), None, masks).argmax(1)
