"""The baselines that choose heads from the hub's candidates, scored by the shared rule
(`scoring`) with default weights at the calibrated temperatures: random (a uniformly random
candidate per class, mean of 5 draws), single (the one expert covering most classes) and
uniform (every candidate, equal weights); and hindsight (the best single expert through MLL's
own selection and inference rule). See `evaluate`'s module doc for what each sees.

Imports scoring only from the evaluation; it must not import evaluate, references or summary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mllgraph.combine.rule import ClassAssignment, HeadGroup, default_params
from mllgraph.errors import FailedPrecondition
from mllgraph.eval.scoring import InDomainOf, predict
from mllgraph.eval.tasks import Task
from mllgraph.graph.db import Graph
from mllgraph.plan import request as plan_request
from mllgraph.select import chco, probe_data
from mllgraph.select import run as select
from mllgraph.settings import Settings


@dataclass(frozen=True)
class TaskView:
    """What every baseline sees of one task: the candidate head groups per class (those
    selection finds), each model's calibrated temperature, and the evaluation images."""

    k: int
    candidates: list[chco.Candidate]
    temperatures: Mapping[str, float]
    logits_of: Callable[[str], np.ndarray]
    idx: np.ndarray
    labels: np.ndarray
    in_domain_of: InDomainOf | None = None

    def accuracy(self, assignment: list[ClassAssignment]) -> float:
        """Accuracy of a head choice with the parameter-free rule (`default_params`: weight
        1, bias log(label score)) at the calibrated temperatures."""
        models = {g.model_id for a in assignment for g in a.groups}
        missing = sorted(models - set(self.temperatures))
        if missing:
            raise FailedPrecondition(f"no calibrated temperature for models {missing}")
        params = default_params(assignment, {m: self.temperatures[m] for m in models})
        pred = predict(assignment, params, self.logits_of, self.idx, self.in_domain_of)
        return float((pred == self.labels).mean())


def candidates_for(
    graph: Graph, settings: Settings, task: Task, resolver: Any, models: tuple[str, ...] | None
) -> tuple[list[chco.Candidate], dict[str, float]]:
    """The task's candidate head groups (as selection finds them) and each candidate model's
    calibrated temperature (the one selection and inference use)."""
    ctx = select.select(
        graph,
        settings,
        [plan_request.TaskClass(n) for n in task.names],
        plan_request.SelectOptions(
            budget=1000, models=models, fit_params=False, solver="heuristic"
        ),
        resolver,
        store=False,
    )
    temps = dict(ctx.problem.temperatures) if ctx.problem is not None else {}
    for mid in sorted({c.group.model_id for c in ctx.candidates} - set(temps)):
        temps[mid] = probe_data.CACHE.get(settings, mid).temperature
    return ctx.candidates, temps


def baseline_random(view: TaskView, seed: int, draws: int = 5) -> float:
    by_class = _by_class(view.candidates, view.k)
    rng = np.random.default_rng(seed)
    accs = []
    for _ in range(draws):
        assignment = [
            ClassAssignment(c, (by_class[c][rng.integers(len(by_class[c]))].group,))
            if by_class[c]
            else ClassAssignment(c, ())
            for c in range(view.k)
        ]
        accs.append(view.accuracy(assignment))
    return float(np.mean(accs))


def single_expert(candidates: list[chco.Candidate]) -> tuple[str, dict[int, HeadGroup]] | None:
    """The expert covering most classes (ties: higher mean label score, then model id) and
    its best head group per covered class; None without candidates."""
    by_model: dict[str, dict[int, chco.Candidate]] = {}
    for c in candidates:
        best = by_model.setdefault(c.group.model_id, {}).get(c.class_index)
        if best is None or c.group.label_score > best.group.label_score:
            by_model[c.group.model_id][c.class_index] = c
    if not by_model:
        return None
    mid = max(
        sorted(by_model),
        key=lambda m: (
            len(by_model[m]),
            np.mean([c.group.label_score for c in by_model[m].values()]),
        ),
    )
    return mid, {ci: c.group for ci, c in by_model[mid].items()}


def baseline_single(view: TaskView) -> float:
    chosen = single_expert(view.candidates)
    covered = chosen[1] if chosen is not None else {}
    assignment = [
        ClassAssignment(c, (covered[c],)) if c in covered else ClassAssignment(c, ())
        for c in range(view.k)
    ]
    return view.accuracy(assignment)


def baseline_uniform(view: TaskView) -> float:
    by_class = _by_class(view.candidates, view.k)
    assignment = [
        ClassAssignment(
            c,
            tuple(
                HeadGroup(x.group.model_id, x.group.heads, x.group.kind, 1.0) for x in by_class[c]
            ),
        )
        for c in range(view.k)
    ]
    return view.accuracy(assignment)  # label score 1 everywhere: bias 0, plain mean


def _by_class(cands: list[chco.Candidate], k: int) -> list[list[chco.Candidate]]:
    out: list[list[chco.Candidate]] = [[] for _ in range(k)]
    for c in cands:
        out[c.class_index].append(c)
    return out


def baseline_hindsight(
    graph: Graph,
    settings: Settings,
    task: Task,
    resolver: Any,
    view: TaskView,
) -> tuple[float, str | None]:
    """The best single expert in hindsight, given what MLL gets: for each model with a
    candidate head, MLL's own selection restricted to that model (its calibration, fitted
    parameters, stacked rule and patch), scored by the inference rule on the task's images;
    the best accuracy and its model. It looks at the task's labels to pick: an upper bound
    on any one expert, not a method."""
    from mllgraph.eval.scoring import classify_plan

    best, best_model = 0.0, None
    for mid in sorted({c.group.model_id for c in view.candidates}):
        ctx = select.select(
            graph,
            settings,
            [plan_request.TaskClass(n) for n in task.names],
            plan_request.SelectOptions(budget=1, models=(mid,)),
            resolver,
            store=False,
        )
        pred = classify_plan(ctx.plan, view.logits_of, view.idx, view.in_domain_of)
        acc = float((pred == view.labels).mean())
        if acc > best or best_model is None:
            best, best_model = acc, mid
    return best, best_model
