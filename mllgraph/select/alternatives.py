"""Plans from a CHCO problem, and the alternatives to a plan's choices.

- `solve`: CHCO's plan for a problem under the request's solver and fitting options.
- `uncovered_plan`: the plan of a task no candidate covers (every class uncovered).
- `alternatives`: per class, the best other candidates and the plan's estimate with each
  swapped in (the plan document's `alternatives`, which ExplainSelection shows).

Pure: no graph, no files. Imports plan, combine and below, and `select.chco`; must not import
`select.run` or anything above select.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mllgraph.combine.rule import (
    ClassAssignment,
    class_scores,
    fallback_evidence,
    group_evidence,
    model_probabilities,
    score_column,
)
from mllgraph.plan.request import SelectOptions
from mllgraph.select import chco


def solve(problem: chco.ChcoProblem, options: SelectOptions) -> chco.Plan:
    if options.solver == "exact":
        plan = chco.solve_exact(problem)
    elif options.solver == "heuristic":
        plan = chco.solve_heuristic(problem)
    else:
        return chco.solve(problem, fit=options.fit_params)
    if options.fit_params:
        plan = chco.maybe_fit(problem, plan, 5, 1e-2, False)
    return plan


def uncovered_plan(k: int) -> chco.Plan:
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


def alternatives(
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
