"""A parsed plan applied to its models' logits: the one place that decides which rule scores
an image (pure: no I/O). Inference (`classifier.PlanClassifier`) and the evaluation's
in-process path both call it, so they cannot drift apart.

- A plan with a stacked rule (schema 2, :mod:`mllgraph.reuse.stacked`): that rule alone.
- Otherwise the per-class rule (:mod:`mllgraph.reuse.rule`), where uncovered classes get
  `extra` evidence when the caller has some (a configured VLM), else the plan's ConSE patch
  (:mod:`mllgraph.reuse.conse`), else the constant fallback (:mod:`mllgraph.reuse.vlm`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mllgraph.reuse.rule import combine, fallback_evidence
from mllgraph.select.plan import ParsedPlan


def patch_rule(plan: ParsedPlan, has_vlm: bool = False) -> str:
    """What scores the uncovered classes: "none", "stacked", "vlm", "conse:<model>" or
    "constant"."""
    if not plan.uncovered:
        return "none"
    if plan.stacked is not None:
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
) -> np.ndarray:
    """(n, K) class probabilities of the plan on `n` images."""
    if plan.stacked is not None:
        return plan.stacked.probabilities(logits)
    if extra is None and plan.uncovered:
        if plan.patch is not None:
            extra = plan.patch.evidence(logits[plan.patch.model_id], plan.uncovered)
        else:
            extra = fallback_evidence(n, plan.uncovered)
    return combine(logits, plan.assignment, plan.params, extra_evidence=extra)
