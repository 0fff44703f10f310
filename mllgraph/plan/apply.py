"""A parsed plan applied to its models' logits: the one place that decides which rule scores
an image (pure: no I/O). Inference (`classifier.PlanClassifier`) and the evaluation's
in-process path both call it, so they cannot drift apart.

- A plan with a stacked rule (schema 2, :mod:`mllgraph.combine.stacked`): that rule alone;
  where it scores only some classes (the others have no probe images), the per-class rule
  below decides between those others and the rule's classes, the rule among its own
  (`stacked.within`).
- Otherwise the per-class rule (:mod:`mllgraph.combine.rule`), where uncovered classes get
  `extra` evidence when the caller has some (a configured VLM), else the plan's ConSE patch
  (:mod:`mllgraph.combine.conse`), else the constant fallback (:mod:`mllgraph.reuse.vlm`).
- `in_domain` (:mod:`mllgraph.combine.domain`): a model's heads say nothing about an image its
  domain profile refuses. The stacked rule reads every plan model on every image, so an image
  that any plan model refuses is scored by the per-class rule, without that model.
- "None of these" (:mod:`mllgraph.combine.none_of_these`): `none_scores` from the plan's
  calibration, the same models' logits and the same `in_domain`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mllgraph.combine.rule import combine, fallback_evidence
from mllgraph.combine.stacked import within
from mllgraph.plan.document import ParsedPlan


def patch_rule(plan: ParsedPlan, has_vlm: bool = False) -> str:
    """What scores the uncovered classes: "none", "stacked", "vlm", "conse:<model>" or
    "constant"."""
    if not plan.uncovered:
        return "none"
    if plan.stacked is not None and set(plan.uncovered) <= set(plan.stacked.scores(plan.k)):
        return "stacked"
    if has_vlm:
        return "vlm"
    return f"conse:{plan.patch.model_id}" if plan.patch is not None else "constant"


def models_to_run(plan: ParsedPlan, has_vlm: bool = False) -> list[str]:
    """The plan's models, and the patch's broad expert when it will be used."""
    extra = [plan.patch.model_id] if patch_rule(plan, has_vlm).startswith("conse:") else []
    return sorted({*plan.models, *extra})


def probabilities(
    plan: ParsedPlan,
    logits: Mapping[str, np.ndarray],
    n: int,
    extra: Mapping[int, np.ndarray] | None = None,
    in_domain: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """(n, K) class probabilities of the plan on `n` images; `in_domain` maps a model to the
    images (an (n,) bool mask) it may speak about, models not in it: all."""
    masks = {m: np.asarray(v, bool) for m, v in (in_domain or {}).items() if m in plan.models}
    refused = np.zeros(n, bool)
    for mask in masks.values():
        refused |= ~mask
    whole = plan.stacked is not None and not plan.stacked.classes
    if whole and not refused.any():
        return plan.stacked.probabilities(logits)
    if extra is None and plan.uncovered:
        if plan.patch is not None:
            extra = plan.patch.evidence(logits[plan.patch.model_id], plan.uncovered)
        else:
            extra = fallback_evidence(n, plan.uncovered)
    probs = combine(
        logits, plan.assignment, plan.params, extra_evidence=extra, in_domain=masks or None
    )
    if plan.stacked is not None:  # the stacked rule where every plan model sees the image
        keep = ~refused
        rule = plan.stacked.probabilities({m: v[keep] for m, v in logits.items()})
        probs[keep] = within(rule, probs[keep], plan.stacked.classes) if not whole else rule
    return probs


def none_scores(
    plan: ParsedPlan,
    logits: Mapping[str, np.ndarray],
    in_domain: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray | None:
    """(n,) "none of these" scores of the plan's calibration (the same `in_domain` as
    `probabilities`); None for a plan without one."""
    if plan.none is None:
        return None
    return plan.none.scores(logits, in_domain)
