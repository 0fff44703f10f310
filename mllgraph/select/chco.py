"""Classification Head Combination Optimization (CHCO). Pure numpy/scipy (and the heuristic's
compiled counting loops, `chco_kernels`), no I/O.

Given candidate head groups per task class and the stored logits of every model on probe
images of the task's concepts, choose at most one candidate per class, using at most
``budget`` distinct models, so that the combination rule of :mod:`mllgraph.combine.rule`
(parameter-free form) classifies the probe images best.

Search space: every class takes one of its candidates or none (uncovered). "None" is allowed
for every class, not only for classes without candidates, because a budget can make covering
all classes impossible and because a bad candidate can steal images from good ones; the
tie-break below still prefers covering a class when accuracy is equal.

A second, optional budget caps compute: ``max_cost``, the sum of the chosen models'
``model_cost`` (ms per image), honoured by both solvers like the model count.

Objective and tie-break (both solvers): maximise the number of probe images whose argmax
class is right, plus the prior credit of the classes without probe images (below); then
higher mean label score (uncovered = 0); then fewer models; then lower total
``model_cost``; then the lexicographically smallest sorted model-id list; then (exact solver
only) the first assignment in enumeration order.

Classes without probe images (e.g. covered only by what heads declare, or by labels on
concepts nobody has images of) cannot be simulated. They are scored with a prior instead,
under the same budget: covering such a class with a candidate counts as ``w * label_score``
right images, where ``w`` is the mean number of probe images of the classes that have some
(1 when none has), i.e. the candidate's label score is taken as its expected accuracy on
that class. Their columns still compete for the other classes' probe images, so a head that
steals images is still penalised. The plan's estimate counts these classes at their prior
and says how much of it is measured (``Plan.measured_fraction``).

Every class's score column depends only on its own candidate, so each candidate's score
vector (N,) is computed once; an assignment's accuracy is an argmax over the (N, K) matrix
of its columns. The heuristic keeps the top-2 classes of every image so that replacing one
column is evaluated for all options of that class at once, exactly (argmax semantics
included), in O(options x N), by compiled loops (`chco_kernels`): in numpy each such count
was ~20 array calls of fixed overhead on a few hundred images, most of a solve's time.

Long on purpose (over 800 lines): one subject — the problem, its two solvers and the parameter
fit they share — whose pieces are read together; split, each half would need the other's
internals.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mllgraph.combine.combination import Plan
from mllgraph.combine.rule import (
    QUALITY_FLOOR,
    UNCOVERED_SCORE,
    ClassAssignment,
    HeadGroup,
    accuracy,
    combine,
    default_params,
    fallback_evidence,
    fit_params,
    floor_evidence,
    group_evidence,
    group_evidence_from_stats,
    head_probabilities_from_stats,
    model_probabilities,
    per_class_accuracy,
    score_column,
)
from mllgraph.combine.stacked import ClassProbes
from mllgraph.errors import InvalidArgument
from mllgraph.select import chco_kernels as kernels
from mllgraph.select import exact_counts

DEFAULT_EXACT_LIMIT = 200_000
# Scores gathered per exact-search chunk (chunk x K x N floats): bounds memory at ~32 MB.
_EXACT_CHUNK_ELEMENTS = 4_000_000


# ---------------------------------------------------------------------------------------------
# Data types.


@dataclass(frozen=True)
class Candidate:
    """One way to cover task class ``class_index``: a head group of one model."""

    class_index: int
    group: HeadGroup

    def __post_init__(self) -> None:
        ci = self.class_index
        if isinstance(ci, bool) or not isinstance(ci, int | np.integer) or ci < 0:
            raise InvalidArgument(f"Candidate.class_index is {ci!r}; expected an int >= 0")
        if not isinstance(self.group, HeadGroup):
            raise InvalidArgument(f"Candidate.group is a {type(self.group).__name__}")
        object.__setattr__(self, "class_index", int(ci))

    def sort_key(self) -> tuple[Any, ...]:
        g = self.group
        return (self.class_index, g.model_id, g.heads, g.kind, g.label_score)

    def to_dict(self) -> dict[str, Any]:
        return {"class_index": self.class_index, "group": self.group.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Candidate:
        if not isinstance(d, Mapping) or "class_index" not in d or "group" not in d:
            raise InvalidArgument("Candidate needs class_index and group")
        return cls(d["class_index"], HeadGroup.from_dict(d["group"]))


@dataclass(frozen=True, eq=False)
class ChcoProblem:
    """A CHCO instance: candidates, probe logits per model and the probes' task-class labels.

    Candidates are deduplicated and sorted on construction, so their input order never
    changes the plan. ``model_cost`` (ms per image; missing models cost 0) breaks ties, and
    ``max_cost`` (None: no cap) bounds the chosen models' total cost.
    """

    num_classes: int
    candidates: list[Candidate]
    logits_by_model: dict[str, np.ndarray]
    labels: np.ndarray
    temperatures: dict[str, float]
    budget: int
    model_cost: dict[str, float] | None = None
    max_cost: float | None = None
    # Optional, per model: `rule.softmax_row_stats` of its logits rows at its temperature
    # (N, 2), so a candidate's evidence reads only its heads' columns (same values).
    row_stats: dict[str, np.ndarray] | None = None
    # Optional: models whose logits the caller has already found finite (selection checks
    # each probe-output file once, not each task's rows of it); the others are checked here.
    finite_models: frozenset[str] = frozenset()
    # Optional, per class: the (probe set, images used) pairs its probe images come from
    # (`select.probe_data.class_probes`). Given, the stacked rule's fits are kept across
    # requests (`select.stacked_choice`); None (a synthetic problem): always fitted anew.
    class_probes: tuple[ClassProbes, ...] | None = None
    # Optional, probe set id -> its source (a dataset, an art style): with `class_probes`,
    # the stacked rule's estimate holds one source out at a time (`combine.stacked.fit`).
    probe_sources: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        k = self.num_classes
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidArgument(f"num_classes is {k!r}; expected an int >= 1")
        b = self.budget
        if isinstance(b, bool) or not isinstance(b, int | np.integer) or b < 1:
            raise InvalidArgument(f"budget is {b!r}; expected an int >= 1 (max distinct models)")
        labels = np.asarray(self.labels)
        if labels.ndim != 1:
            raise InvalidArgument(f"labels must be a 1-D array, got shape {labels.shape}")
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise InvalidArgument(f"labels must be integers, got dtype {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= k):
            raise InvalidArgument(
                f"labels must lie in 0..{k - 1}, got range {labels.min()}..{labels.max()}"
            )
        labels = labels.astype(np.int64)
        labels.setflags(write=False)
        n = labels.size
        logits: dict[str, np.ndarray] = {}
        for model_id in sorted(self.logits_by_model):
            arr = np.asarray(self.logits_by_model[model_id])
            if arr.ndim != 2 or arr.shape[1] < 1:
                raise InvalidArgument(
                    f"logits_by_model[{model_id!r}] must be (N, H) with H >= 1, got {arr.shape}"
                )
            if arr.shape[0] != n:
                raise InvalidArgument(
                    f"logits_by_model[{model_id!r}] has {arr.shape[0]} rows but labels has {n}"
                )
            if not np.issubdtype(arr.dtype, np.floating):
                arr = arr.astype(np.float64)
            logits[model_id] = arr
        cands: dict[tuple[Any, ...], Candidate] = {}
        for c in self.candidates:
            if not isinstance(c, Candidate):
                raise InvalidArgument(f"candidates holds a {type(c).__name__}, not a Candidate")
            if c.class_index >= k:
                raise InvalidArgument(
                    f"candidate class_index {c.class_index} is outside 0..{k - 1}"
                )
            m = c.group.model_id
            if m not in logits:
                raise InvalidArgument(f"candidate for class {c.class_index}: unknown model {m!r}")
            h = logits[m].shape[1]
            if max(c.group.heads) >= h:
                raise InvalidArgument(
                    f"candidate for class {c.class_index}: head {max(c.group.heads)} is out of "
                    f"range for model {m!r} with {h} heads"
                )
            cands.setdefault(c.sort_key(), c)
        used = {c.group.model_id for c in cands.values()}
        for m in sorted(used - self.finite_models):
            if not np.all(np.isfinite(logits[m])):
                raise InvalidArgument(f"logits_by_model[{m!r}] has non-finite values")
        temps: dict[str, float] = {}
        for m in sorted(self.temperatures):
            t = float(self.temperatures[m])
            if not (math.isfinite(t) and t > 0):
                raise InvalidArgument(f"temperatures[{m!r}] is {t}; expected > 0")
            temps[m] = t
        costs: dict[str, float] | None = None
        if self.model_cost is not None:
            costs = {}
            for m in sorted(self.model_cost):
                v = float(self.model_cost[m])
                if not (math.isfinite(v) and v >= 0):
                    raise InvalidArgument(f"model_cost[{m!r}] is {v}; expected >= 0")
                costs[m] = v
        object.__setattr__(self, "max_cost", _checked_cap(self.max_cost))
        object.__setattr__(self, "num_classes", int(k))
        object.__setattr__(self, "budget", int(b))
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "logits_by_model", logits)
        object.__setattr__(self, "candidates", [cands[key] for key in sorted(cands)])
        object.__setattr__(self, "temperatures", temps)
        object.__setattr__(self, "model_cost", costs)
        for m, st in (self.row_stats or {}).items():
            if m not in logits or np.shape(st) != (n, 2):
                raise InvalidArgument(f"row_stats[{m!r}] must be ({n}, 2) for a known model")
        if self.class_probes is not None:
            per_class = [sum(n for _, n in sets) for sets in self.class_probes]
            if per_class != np.bincount(labels, minlength=k).tolist():
                raise InvalidArgument(
                    f"class_probes must give each of the {k} classes as many images as labels "
                    f"does: {per_class} against {np.bincount(labels, minlength=k).tolist()}"
                )
        object.__setattr__(self, "_evidence", {})

    def evidence(self, group: HeadGroup) -> np.ndarray:
        """The group's evidence on the probe images at its model's temperature (the sum of
        its heads' softmax probabilities), computed once per problem: the solver and the
        plan's alternatives (ExplainSelection) share it. Read-only."""
        memo: dict[tuple[str, tuple[int, ...]], np.ndarray] = self._evidence  # type: ignore[attr-defined]
        key = (group.model_id, tuple(group.heads))
        if key not in memo:
            self._fill_evidence(group.model_id, [key[1]])
        return memo[key]

    def _fill_evidence(self, model_id: str, groups: list[tuple[int, ...]]) -> None:
        """Evidence of these head groups of one model, from one softmax of its logits."""
        memo: dict[tuple[str, tuple[int, ...]], np.ndarray] = self._evidence  # type: ignore[attr-defined]
        todo = [g for g in dict.fromkeys(groups) if (model_id, g) not in memo]
        if not todo:
            return
        logits, t = self.logits_by_model[model_id], self.temperatures.get(model_id, 1.0)
        stats = (self.row_stats or {}).get(model_id)
        probs = model_probabilities(logits, t) if stats is None else None
        singles: list[tuple[int, ...]] = []
        if probs is None:
            # Single-head groups (most of them) from one gather and one exp: the same values.
            singles = [heads for heads in todo if len(heads) == 1]
            rows = head_probabilities_from_stats(logits, stats, [h[0] for h in singles], t)
            for heads, ev in zip(singles, rows, strict=True):
                ev.setflags(write=False)
                memo[(model_id, heads)] = ev
        for heads in todo:
            if probs is None:
                if len(heads) == 1:
                    continue
                ev = group_evidence_from_stats(logits, stats, heads, t)
            else:
                ev = group_evidence(probs, heads)
            ev.setflags(write=False)
            memo[(model_id, heads)] = ev

    def with_max_cost(self, cap: float | None) -> ChcoProblem:
        """This problem under another cost cap, sharing its checked inputs and evidence."""
        new = copy.copy(self)
        object.__setattr__(new, "max_cost", _checked_cap(cap))
        return new

    def plan_cost(self, models: list[str] | tuple[str, ...]) -> float:
        """Total cost (ms per image) of running these models (missing costs count 0)."""
        costs = self.model_cost or {}
        return math.fsum(costs.get(m, 0.0) for m in set(models))

    @property
    def num_images(self) -> int:
        return int(self.labels.size)

    @property
    def unprobed(self) -> np.ndarray:
        """(K,) bool: classes without probe images (scored with the prior, see module doc)."""
        return np.bincount(self.labels, minlength=self.num_classes) == 0

    @property
    def prior_weight(self) -> float:
        """Images a class without probes counts for: the probed classes' mean (1 if none)."""
        probed = int((~self.unprobed).sum())
        return self.num_images / probed if probed else 1.0


def _checked_cap(cap: Any) -> float | None:
    if cap is None:
        return None
    if isinstance(cap, bool) or not isinstance(cap, int | float | np.number):
        raise InvalidArgument(f"max_cost is {cap!r}; expected a number of ms per image")
    if not (math.isfinite(cap) and cap >= 0):
        raise InvalidArgument(f"max_cost is {cap}; expected a finite number >= 0")
    return float(cap)


# ---------------------------------------------------------------------------------------------
# Precomputation shared by both solvers.


@dataclass
class _Prepared:
    """Candidates in sorted order, grouped by class, with their score vectors."""

    problem: ChcoProblem
    k: int
    n: int
    labels: np.ndarray  # (N,) int64
    cands: list[Candidate]  # sorted by (class, model, heads, ...)
    start: np.ndarray  # (K+1,) candidates of class c are start[c]:start[c+1]
    model_ids: list[str]  # sorted models that have candidates
    cand_class: np.ndarray  # (C,) class index
    cand_model: np.ndarray  # (C,) index into model_ids
    cand_label: np.ndarray  # (C,) label scores
    cand_credit: np.ndarray  # (C,) prior credit (w * label score) for unprobed classes, else 0
    unprobed: np.ndarray  # indices of the classes without probe images
    is_unprobed: np.ndarray  # (K,) bool: class without probe images
    scores: np.ndarray  # (C, N) default-rule score column of each candidate, C-contiguous
    none_row: np.ndarray  # (1, N) the uncovered score
    cost: np.ndarray  # (M,) model costs
    pair_start: np.ndarray  # starts of runs of equal (class, model) in cands
    pair_model: np.ndarray  # model index of each run


def _prepare(problem: ChcoProblem) -> _Prepared:
    cands = problem.candidates  # already sorted and unique
    k, n = problem.num_classes, problem.num_images
    model_ids = sorted({c.group.model_id for c in cands})
    mindex = {m: i for i, m in enumerate(model_ids)}
    cand_class = np.array([c.class_index for c in cands], dtype=np.int64)
    cand_model = np.array([mindex[c.group.model_id] for c in cands], dtype=np.int64)
    cand_label = np.array([c.group.label_score for c in cands], dtype=np.float64)
    unprobed = problem.unprobed
    cand_credit = np.where(unprobed[cand_class], problem.prior_weight * cand_label, 0.0)
    start = np.searchsorted(cand_class, np.arange(k + 1), side="left")
    # One dtype and layout for the compiled loops (chco_kernels): no recompiling per caller.
    scores = np.ascontiguousarray(_score_vectors(problem, cands, model_ids), dtype=np.float64)
    costs = problem.model_cost or {}
    cost = np.array([costs.get(m, 0.0) for m in model_ids], dtype=np.float64)
    if cands:
        change = np.flatnonzero(
            (np.diff(cand_class) != 0) | (np.diff(cand_model) != 0)
        )  # runs of one (class, model)
        pair_start = np.concatenate([[0], change + 1])
    else:
        pair_start = np.zeros(0, dtype=np.int64)
    return _Prepared(
        problem=problem,
        k=k,
        n=n,
        # Fresh, writable copies: the compiled loops are typed by layout and by whether an
        # array is read-only, and `chco_kernels.warm_up` loads the writable ones.
        labels=np.array(problem.labels, dtype=np.int64),
        cands=cands,
        start=start,
        model_ids=model_ids,
        cand_class=cand_class,
        cand_model=cand_model,
        cand_label=cand_label,
        cand_credit=cand_credit,
        unprobed=np.flatnonzero(unprobed),
        is_unprobed=np.array(unprobed, dtype=bool),
        scores=scores,
        none_row=np.full((1, n), UNCOVERED_SCORE),
        cost=cost,
        pair_start=pair_start,
        pair_model=cand_model[pair_start],
    )


def _score_vectors(
    problem: ChcoProblem, cands: list[Candidate], model_ids: list[str]
) -> np.ndarray:
    """(C, N): each candidate's default-rule score column, `score_column(evidence, 1, log q)`
    with the same element-wise float ops as combine() with default_params() (so the same
    bits), computed for all candidates at once."""
    by_model: dict[str, list[int]] = {}
    for i, c in enumerate(cands):
        by_model.setdefault(c.group.model_id, []).append(i)
    for m in model_ids:
        # One softmax (or row-stats gather) per model, shared by all its candidates.
        problem._fill_evidence(m, [tuple(cands[i].group.heads) for i in by_model[m]])
    evidence = np.empty((len(cands), problem.num_images))
    for i, c in enumerate(cands):
        evidence[i] = problem.evidence(c.group)
    # The mean of one label score is itself: log(max(q, floor)) per candidate.
    bias = np.array([math.log(max(c.group.label_score, QUALITY_FLOOR)) for c in cands])
    return score_column(evidence, np.float64(1.0), bias[:, None])


def exact_search_size(problem: ChcoProblem) -> int:
    """Number of assignments the exact solver enumerates: prod over classes of (#candidates+1)."""
    counts = np.bincount([c.class_index for c in problem.candidates], minlength=problem.num_classes)
    return math.prod(int(x) + 1 for x in counts)


def _label_sum(labels: np.ndarray) -> float:
    """Order-independent sum (exactly rounded), so equal multisets of label scores compare
    equal."""
    return math.fsum(labels.tolist())


def _make_plan(prep: _Prepared, choice: np.ndarray, solver: str, evaluated: int) -> Plan:
    problem = prep.problem
    assignment = [
        ClassAssignment(c, (prep.cands[int(i)].group,) if i >= 0 else ())
        for c, i in enumerate(choice)
    ]
    models = sorted({a.groups[0].model_id for a in assignment if a.groups})
    temps = {m: problem.temperatures[m] for m in models if m in problem.temperatures}
    params = default_params(assignment, temps)
    uncovered = [c for c, i in enumerate(choice) if i < 0]
    if problem.num_images:
        # Estimated as inference scores it: uncovered classes at the offline floor. The
        # search itself compares plans without it (the floor depends on how many classes
        # stay uncovered); the figure a plan reports must not leave it out.
        floor = fallback_evidence(problem.num_images, uncovered)
        probs = combine(problem.logits_by_model, assignment, params, extra_evidence=floor)
        per_class = per_class_accuracy(probs, problem.labels)
        measured_acc = accuracy(probs, problem.labels)
    else:
        per_class, measured_acc = [float("nan")] * prep.k, float("nan")
    estimate, measured = with_priors(problem, assignment, per_class, measured_acc)
    return Plan(
        assignment=assignment,
        params=params,
        estimated_accuracy=estimate,
        per_class_accuracy=per_class,
        uncovered=uncovered,
        models=models,
        solver=solver,
        evaluated=int(evaluated),
        measured_fraction=measured,
    )


def with_priors(
    problem: ChcoProblem,
    assignment: list[ClassAssignment],
    per_class: list[float],
    measured_accuracy: float,
) -> tuple[float, float]:
    """(estimated accuracy, measured fraction), giving each covered class without probe images
    its prior (written into ``per_class``) at ``problem.prior_weight`` images.

    Classes with neither probes nor heads are left out, as before (the plan lists them as
    uncovered). Without any prior the estimate is ``measured_accuracy`` itself."""
    w = problem.prior_weight
    priors = []
    for c in np.flatnonzero(problem.unprobed):
        a = assignment[int(c)]
        if a.groups:
            per_class[int(c)] = a.label_score
            priors.append(a.label_score)
    if not priors:
        n = problem.num_images
        return (float(measured_accuracy), 1.0) if n else (float("nan"), 0.0)
    total = problem.num_images + w * len(priors)
    correct = measured_accuracy * problem.num_images if problem.num_images else 0.0
    estimate = (correct + w * math.fsum(priors)) / total
    return float(estimate), float(problem.num_images / total)


# ---------------------------------------------------------------------------------------------
# Exact solver.


def solve_exact(problem: ChcoProblem, *, limit: int = DEFAULT_EXACT_LIMIT) -> Plan:
    """Enumerate every assignment (one candidate or none per class) within the budget.

    Raises InvalidArgument when there are more than ``limit`` assignments.
    """
    size = exact_search_size(problem)
    if size > limit:
        raise InvalidArgument(
            f"exact search space has {size} assignments, over the limit of {limit}; "
            "use solve_heuristic (or solve) for this problem"
        )
    prep = _prepare(problem)
    k, n = prep.k, prep.n
    sizes = [int(prep.start[c + 1] - prep.start[c]) + 1 for c in range(k)]
    none = len(prep.cands)  # row index of the uncovered score in `ext`
    opt_ids = [np.append(np.arange(prep.start[c], prep.start[c + 1]), none) for c in range(k)]
    ext = np.vstack([prep.scores, prep.none_row])
    ext_model = np.append(prep.cand_model, -1)
    ext_label = np.append(prep.cand_label, 0.0)
    ext_credit = np.append(prep.cand_credit, 0.0)
    ext_cost = np.append(prep.cost, 0.0)
    best_key: tuple[float, float, int, float] | None = None
    finalists: list[np.ndarray] = []
    evaluated = 0
    # Right-image counts met in the middle (select/exact_counts) where the halves fit, best
    # bounds first, skipping assignments that cannot reach the best found so far; else every
    # assignment, scored directly.
    met = exact_counts.halves(ext, opt_ids, prep.labels, _EXACT_CHUNK_ELEMENTS)
    blocks: Iterator[tuple[np.ndarray, np.ndarray | None]]
    if met is None:
        chunk = max(1, _EXACT_CHUNK_ELEMENTS // max(1, k * n))
        blocks = ((np.arange(lo, min(size, lo + chunk)), None) for lo in range(0, size, chunk))
    else:
        blocks = exact_counts.best_first(
            met,
            exact_counts.option_sums(ext_credit, opt_ids[: met.split]),
            exact_counts.option_sums(ext_credit, opt_ids[met.split :]),
            max(1, _EXACT_CHUNK_ELEMENTS // max(1, met.size_b * n)),
            lambda: -math.inf if best_key is None else best_key[0],
        )
    for flat, right in blocks:
        opts = np.unravel_index(flat, sizes)
        cand = np.stack([opt_ids[c][opts[c]] for c in range(k)])  # (K, B)
        mdl = np.sort(ext_model[cand], axis=0)
        new = np.ones_like(mdl, dtype=bool)
        new[1:] = mdl[1:] != mdl[:-1]
        new &= mdl >= 0
        n_models = new.sum(axis=0)
        cost_sum = np.where(new, ext_cost[mdl], 0.0).sum(axis=0)
        valid = (n_models <= problem.budget) & _within_cost(cost_sum, problem.max_cost)
        if not valid.any():
            continue
        cand, mdl, new, n_models, flat, cost_sum = (
            cand[:, valid],
            mdl[:, valid],
            new[:, valid],
            n_models[valid],
            flat[valid],
            cost_sum[valid],
        )
        evaluated += flat.size
        if right is None:
            pred = ext[cand.T].argmax(axis=1)  # (B, N); first index on ties, like combine
            right = (pred == prep.labels).sum(axis=1)
        else:
            right = right[valid]
        correct = right + ext_credit[cand].sum(axis=0)
        # Sorted before summing so that equal multisets give bit-equal sums.
        label_sum = np.sort(ext_label[cand], axis=0).sum(axis=0)
        order = np.lexsort((flat, cost_sum, n_models, -label_sum, -correct))
        b = order[0]
        key = (float(correct[b]), float(label_sum[b]), int(n_models[b]), float(cost_sum[b]))
        tied = (
            (correct == correct[b])
            & (label_sum == label_sum[b])
            & (n_models == n_models[b])
            & (cost_sum == cost_sum[b])
        )
        if best_key is None or _better_exact(key, best_key):
            best_key, finalists = key, [flat[tied]]
        elif key == best_key:
            finalists.append(flat[tied])
    if best_key is None:  # unreachable: all-uncovered is within both budgets (cost 0)
        raise InvalidArgument("no assignment fits the budget")
    flats = np.concatenate(finalists)

    def model_tuple(f: int) -> tuple[str, ...]:
        opts = np.unravel_index(f, sizes)
        ids = {int(ext_model[opt_ids[c][opts[c]]]) for c in range(k)} - {-1}
        return tuple(prep.model_ids[i] for i in sorted(ids))

    best_flat = min((int(f) for f in flats), key=lambda f: (model_tuple(f), f))
    opts = np.unravel_index(best_flat, sizes)
    choice = np.array([opt_ids[c][opts[c]] for c in range(k)], dtype=np.int64)
    choice[choice == none] = -1
    return _make_plan(prep, choice, "exact", evaluated)


def _within_cost(cost: np.ndarray, cap: float | None) -> np.ndarray:
    """Which totals fit the cost cap; a relative tolerance so that a plan's own cost, summed
    in another order, still fits a cap set to it."""
    if cap is None:
        return np.ones(np.shape(cost), dtype=bool)
    return np.asarray(cost) <= cap * (1 + 1e-9) + 1e-12


def _better_exact(a: tuple[float, float, int, float], b: tuple[float, float, int, float]) -> bool:
    """More correct, then higher label sum, then fewer models, then lower cost."""
    return (a[0], a[1], -a[2], -a[3]) > (b[0], b[1], -b[2], -b[3])


# ---------------------------------------------------------------------------------------------
# Heuristic solver.


def top2(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 2 best (value, class) per row in argmax order (higher value, then lower index).

    A missing second entry (K = 1) is (-inf, K): every real score is finite, so the sentinel
    never ties with one and its index is never a label.
    """
    rows, k = z.shape
    vals = np.full((rows, 2), -np.inf)
    idx = np.full((rows, 2), k, dtype=np.int64)
    if rows == 0:
        return vals, idx
    r = np.arange(rows)
    a = z.argmax(axis=1)
    vals[:, 0] = z[r, a]
    idx[:, 0] = a
    if k > 1:
        work = z.copy()
        work[r, a] = -np.inf
        b = work.argmax(axis=1)
        vals[:, 1] = work[r, b]
        idx[:, 1] = b
    return vals, idx


# The state at a point of the search: its arrays (choice, zy, top values, top indices,
# rightness), its right-image count and its credit.
_Checkpoint = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, float]


class _State:
    """A current assignment, its (N, K) score matrix and each image's top-2 classes.

    Replacing class c's column by v changes an image i (label y) as follows, with argmax
    semantics (ties go to the lower index):
    - y == c: right iff v beats the best other column (top1, or top2 when top1 is c);
    - y != c: right iff y beats every column but c (i.e. i is right now, or top1 is c and
      top2 is y) and y beats v.
    So top-2 suffices, and all options of a class are scored in one O(options x N) pass
    (`chco_kernels`, compiled: these counts are most of a solve's work).
    """

    def __init__(self, prep: _Prepared) -> None:
        self.p = prep
        self.choice = np.full(prep.k, -1, dtype=np.int64)
        self.z = np.full((prep.n, prep.k), UNCOVERED_SCORE)
        self.zy = np.full(prep.n, UNCOVERED_SCORE)  # each image's own-class score
        self.top_val, self.top_idx = top2(self.z)
        self.correct = np.zeros(prep.n, dtype=bool)
        self._recount()
        self.evaluated = 0

    def _recount(self) -> None:
        # In place: the compiled moves write into these very arrays (`arrays`).
        np.equal(self.top_idx[:, 0], self.p.labels, out=self.correct)
        self.count = int(self.correct.sum())
        self._recredit()

    def _recredit(self) -> None:
        # The prior credit of the unprobed classes' choices: an exactly rounded sum, so equal
        # choices give bit-equal values whatever the order (`chco_kernels.fsum` sums alike).
        chosen = self.choice[self.p.unprobed]
        self.credit = math.fsum(self.p.cand_credit[chosen[chosen >= 0]].tolist())
        self.value = self.count + self.credit

    def key(self) -> tuple[float, float]:
        chosen = self.choice[self.choice >= 0]
        return self.value, _label_sum(self.p.cand_label[chosen])

    def models(self) -> set[int]:
        return {int(self.p.cand_model[i]) for i in self.choice if i >= 0}

    def first_order(self) -> np.ndarray:
        """(C,) correct counts if each candidate alone replaced its class's column."""
        p = self.p
        self.evaluated += p.cand_class.size
        return kernels.first_order(
            p.start, p.scores, p.labels, self.top_val, self.top_idx, self.correct, self.zy
        )

    def checkpoint(self) -> _Checkpoint:
        return (
            self.choice.copy(), self.zy.copy(), self.top_val.copy(), self.top_idx.copy(),
            self.correct.copy(), self.count, self.credit,
        )  # fmt: skip

    def restore(self, cp: _Checkpoint) -> None:
        """Return to a checkpoint without recomputing (cheaper than undoing each move)."""
        choice, zy, top_val, top_idx, correct, count, credit = cp
        kernels.restore(choice, zy, top_val, top_idx, correct, UNCOVERED_SCORE, self.arrays())
        self.count, self.credit = count, credit
        self.value = count + credit

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The arrays a compiled move reads and writes (`chco_kernels`' `state`, in its order)."""
        p = self.p
        return (
            p.scores, p.labels, self.z, self.top_val, self.top_idx, self.correct, self.zy,
            self.choice, p.cand_label, p.cand_credit, p.unprobed,
        )  # fmt: skip

    def _moved(self, count: int, credit: float, weighed: int) -> None:
        self.count, self.credit = int(count), float(credit)
        self.value = self.count + self.credit
        self.evaluated += int(weighed)

    def set(self, c: int, cand: int) -> None:
        """Give class c candidate `cand` (-1: uncovered), updating top-2 incrementally."""
        count, credit = kernels.move(
            c, cand, UNCOVERED_SCORE, self.count, self.credit, self.arrays()
        )
        self._moved(count, credit, 0)

    def try_model(self, m: int) -> int:
        """Move each class model m can cover to its best candidate there where that strictly
        raises (value, label score), one after the other: how many moved."""
        p = self.p
        moved, count, credit, weighed = kernels.try_model(
            m, p.pair_start, p.pair_model, p.cand_class, p.is_unprobed, UNCOVERED_SCORE,
            self.count, self.credit, self.arrays(),
        )  # fmt: skip
        self._moved(count, credit, weighed)
        return int(moved)

    def sweep(self, allowed: np.ndarray) -> bool:
        """Each class in turn to its best option among the `allowed` (M,) models' candidates
        or uncovered, where that strictly improves; whether any moved."""
        p = self.p
        improved, count, credit, weighed = kernels.sweep(
            allowed, p.start, p.cand_model, p.is_unprobed, UNCOVERED_SCORE, self.count,
            self.credit, self.arrays(),
        )  # fmt: skip
        self._moved(count, credit, weighed)
        return bool(improved)

    def remove_model(self, r: int, allowed: np.ndarray) -> None:
        """Each class using model r to its best option among the `allowed` models'
        candidates or uncovered, better or not."""
        p = self.p
        count, credit, weighed = kernels.remove_model(
            r, allowed, p.start, p.cand_model, p.is_unprobed, UNCOVERED_SCORE, self.count,
            self.credit, self.arrays(),
        )  # fmt: skip
        self._moved(count, credit, weighed)


def _allowed(prep: _Prepared, models: set[int]) -> np.ndarray:
    """(M,) bool: which models are in `models`."""
    allowed = np.zeros(len(prep.model_ids), dtype=bool)
    allowed[list(models)] = True
    return allowed


def _reassign_sweep(state: _State, chosen: set[int]) -> bool:
    """One pass over all classes, each moved to its best option among chosen models/none."""
    return state.sweep(_allowed(state.p, chosen))


def _rank_models(state: _State, chosen: set[int], excluded: set[int], top: int) -> list[int]:
    """Up to `top` outside models with positive first-order gain, best first.

    A candidate's first-order gain: the change in (count, label sum) when only its class
    switches to it, all else fixed; a model's: the sum over classes of its best candidate's
    positive gain (ties: lower cost, then model id).
    """
    prep = state.p
    if not prep.cands:
        return []
    # Count gain first; label gain / (K+1) only separates equal counts (its sum is < 1).
    model_gain = kernels.model_gains(
        state.first_order(), state.count, state.choice, prep.cand_class, prep.cand_label,
        prep.cand_credit, prep.pair_start, prep.pair_model, len(prep.model_ids),
    )  # fmt: skip
    model_gain[list(chosen | excluded)] = 0.0
    if prep.problem.max_cost is not None:  # models whose cost would break the cap: none
        spent = math.fsum(prep.cost[list(state.models() | chosen)])
        model_gain[~_within_cost(spent + prep.cost, prep.problem.max_cost)] = 0.0
    ids = np.flatnonzero(model_gain > 0)
    # Best gain, then lower cost, then model id (model_ids are sorted: the index orders them).
    order = np.lexsort((ids, prep.cost[ids], -model_gain[ids]))
    return [int(i) for i in ids[order[:top]]]


def _greedy_add(state: _State, chosen: set[int], excluded: set[int], lookahead: int) -> bool:
    """Add the model that raises (count, label sum) most; True if one was added.

    First-order gains of every candidate (switching only its class, all else fixed) rank
    the models; the top `lookahead` are tried for real (sequentially moving their classes)
    and the best resulting key wins.
    """
    order = _rank_models(state, chosen, excluded, lookahead)
    if not order:
        return False
    base = state.key()
    cp = state.checkpoint()
    # (key, model, the state it leads to): returning to it is cheaper than trying it again.
    best: tuple[tuple[float, float], int, _Checkpoint] | None = None
    for m in order:
        changes = state.try_model(int(m))
        key = state.key()
        if changes and key > base and (best is None or key > best[0]):
            best = (key, int(m), state.checkpoint())
        state.restore(cp)
    if best is None:
        return False
    state.restore(best[2])
    chosen.add(best[1])
    return True


def _drop_unused(state: _State, chosen: set[int]) -> None:
    chosen.intersection_update(state.models())


def _remove_model(state: _State, chosen: set[int], r: int) -> None:
    """Move the classes using model r to their best option among the other chosen models."""
    state.remove_model(r, _allowed(state.p, chosen - {r}))


def _try_swaps(state: _State, chosen: set[int], budget: int, lookahead: int, tries: int) -> bool:
    """Replace one chosen model by an outside one if that raises (count, label sum).

    Only the `tries` models whose removal alone costs least are tried (each try costs a
    first-order pass), so large budgets stay fast; first improvement wins.
    """
    prep = state.p
    before = state.key()
    cp = state.checkpoint()
    order = sorted(chosen, key=lambda i: prep.model_ids[i])
    if len(order) > tries:
        after: dict[int, tuple[float, float]] = {}
        for r in order:
            _remove_model(state, chosen, r)
            after[r] = state.key()
            state.restore(cp)
        order = sorted(order, key=lambda i: (-after[i][0], -after[i][1], prep.model_ids[i]))
    for r in order[:tries]:
        _remove_model(state, chosen, r)
        trial = chosen - {r}
        while len(trial) < budget and _greedy_add(state, trial, {r}, lookahead):
            pass
        _reassign_sweep(state, trial)
        if state.key() > before:
            chosen.clear()
            chosen.update(trial)
            _drop_unused(state, chosen)
            return True
        state.restore(cp)
    return False


# A local search's end from a round's start: (the end state, its chosen models, rounds used).
_Ends = dict[tuple[bytes, frozenset[int]], tuple[_Checkpoint, frozenset[int], int]]


def _local_search(
    state: _State,
    chosen: set[int],
    budget: int,
    lookahead: int,
    max_rounds: int,
    swaps: int,
    ends: _Ends | None = None,
) -> None:
    """Fill the budget greedily, then improve until no move helps (see solve_heuristic).

    A round depends only on the assignment and the chosen models at its start, so a search
    that reaches a start an earlier search (another restart, `ends`) went on from takes that
    search's end instead of repeating it; only searches that converged are recorded there,
    and one is taken only when it needed no more rounds than are left."""
    while len(chosen) < budget and _greedy_add(state, chosen, set(), lookahead):
        pass
    starts: list[tuple[tuple[bytes, frozenset[int]], int]] = []
    for r in range(max_rounds):
        start = (state.choice.tobytes(), frozenset(chosen))
        known = None if ends is None else ends.get(start)
        if known is not None and known[2] <= max_rounds - r:
            state.restore(known[0])
            chosen.clear()
            chosen.update(known[1])
            converged_at = r + known[2]
            break
        starts.append((start, r))
        improved = _reassign_sweep(state, chosen)
        _drop_unused(state, chosen)
        while len(chosen) < budget and _greedy_add(state, chosen, set(), lookahead):
            improved = True
        if not improved and swaps:
            improved = _try_swaps(state, chosen, budget, lookahead, swaps)
        if not improved:
            converged_at = r + 1
            break
    else:
        return  # out of rounds: not a converged end, so not recorded
    if ends is not None:
        end = (state.checkpoint(), frozenset(chosen))
        for start, r in starts:
            ends[start] = (*end, converged_at - r)


def _final_key(prep: _Prepared, choice: np.ndarray) -> tuple[Any, ...]:
    """The module's objective + tie-break as one ascending key (smaller is better)."""
    chosen = choice[choice >= 0]
    models = sorted({int(prep.cand_model[i]) for i in chosen})
    return (
        -_label_sum(prep.cand_label[chosen]),
        len(models),
        math.fsum(prep.cost[models]),
        tuple(prep.model_ids[i] for i in models),
    )


def solve_heuristic(
    problem: ChcoProblem,
    *,
    lookahead: int = 4,
    restarts: int | None = None,
    max_rounds: int = 50,
    swaps: int = 3,
) -> Plan:
    """Greedy model selection under the budget, then local search; deterministic.

    1. Start with every class uncovered and add models one at a time, each time the model
       that raises (correct count, label-score sum) most (:func:`_greedy_add`: first-order
       gains rank all models, the top `lookahead` are applied for real, the best kept).
    2. Local search until nothing improves (at most `max_rounds` rounds): move each class to
       its best option among the chosen models' candidates or none; drop models no class
       uses and refill the budget greedily; then try swapping a chosen model for an outside
       one (remove it, re-cover its classes from the others, greedily add, re-sweep; keep
       if better), for the `swaps` models whose removal costs least (0: no swaps).
    3. Multi-start: steps 1-2 are run once per start, each start forcing a different first
       model (the `restarts` best by first-order gain); the best result by the module's
       objective and tie-break wins. `restarts=None` picks 4 when candidates x images is at
       most 4 million, else 1 (large instances stay fast).
    """
    if lookahead < 1:
        raise InvalidArgument(f"lookahead is {lookahead}; expected >= 1")
    if restarts is not None and restarts < 1:
        raise InvalidArgument(f"restarts is {restarts}; expected >= 1")
    prep = _prepare(problem)
    if restarts is None:
        restarts = 4 if len(prep.cands) * prep.n <= 4_000_000 else 1
    state = _State(prep)
    empty = state.checkpoint()
    firsts = _rank_models(state, set(), set(), restarts)
    best: tuple[tuple[Any, ...], np.ndarray] | None = None
    ends: _Ends = {}
    for first in firsts or [None]:
        state.restore(empty)
        chosen: set[int] = set()
        if first is not None:
            state.try_model(first)
            chosen.add(first)
        _local_search(state, chosen, problem.budget, lookahead, max_rounds, swaps, ends)
        key = (-state.value, *_final_key(prep, state.choice))
        if best is None or key < best[0]:
            best = (key, state.choice.copy())
    assert best is not None
    return _make_plan(prep, best[1], "heuristic", state.evaluated)


# ---------------------------------------------------------------------------------------------
# Front door: pick a solver, then maybe fit the rule's parameters.


def solve(
    problem: ChcoProblem,
    exact_limit: int = DEFAULT_EXACT_LIMIT,
    *,
    fit: bool = True,
    min_probes_per_class: int = 5,
    l2: float = 1e-2,
    fit_temperatures: bool = False,
) -> Plan:
    """Exact search when the space has at most `exact_limit` assignments, else heuristic.

    Then, when every covered class has at least `min_probes_per_class` probe images, fit the
    rule's weights/biases and keep them only if they raise the accuracy. To limit optimism
    the fitted rule is scored by 2-fold cross-validation (per class, images alternate between
    folds in index order; fit on one fold, predict the other); the parameter-free rule is
    scored on all probes. If fitting wins, the plan carries params fitted on all probes, and
    its accuracy figures are the cross-validated ones.
    """
    if exact_search_size(problem) <= exact_limit:
        plan = solve_exact(problem, limit=exact_limit)
    else:
        plan = solve_heuristic(problem)
    if fit:
        plan = maybe_fit(problem, plan, min_probes_per_class, l2, fit_temperatures)
    return plan


def maybe_fit(
    problem: ChcoProblem, plan: Plan, min_probes: int, l2: float, fit_temperatures: bool
) -> Plan:
    """`plan` with weights/biases fitted on the probes when that raises its cross-validated
    accuracy over its estimate (see `solve`), with the uncovered classes at the offline floor
    in fit and score alike, as in the estimate (`_make_plan`)."""
    covered = [a.class_index for a in plan.assignment if a.groups]
    # One covered class has something to fit only against the floor of uncovered ones.
    if len(covered) < (1 if plan.uncovered else 2):
        return plan
    counts = np.bincount(problem.labels, minlength=problem.num_classes)
    if counts[covered].min() < min_probes:
        return plan
    logits = {m: problem.logits_by_model[m] for m in plan.models}
    fold = np.empty(problem.num_images, dtype=np.int64)
    for c in range(problem.num_classes):
        rows = np.flatnonzero(problem.labels == c)
        fold[rows] = np.arange(rows.size) % 2
    floor = floor_evidence(len(plan.uncovered)) if plan.uncovered else None
    cv_probs = np.empty((problem.num_images, problem.num_classes))
    for f in (0, 1):
        train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        params = fit_params(
            {m: x[train] for m, x in logits.items()},
            problem.labels[train],
            plan.assignment,
            plan.params,
            l2=l2,
            fit_temperatures=fit_temperatures,
            uncovered_evidence=floor,
        )
        cv_probs[test] = combine(
            {m: x[test] for m, x in logits.items()},
            plan.assignment,
            params,
            extra_evidence=fallback_evidence(test.size, plan.uncovered),
        )
    cv_acc = accuracy(cv_probs, problem.labels)
    if cv_acc <= plan.estimated_accuracy:
        return plan
    params = fit_params(
        logits,
        problem.labels,
        plan.assignment,
        plan.params,
        l2=l2,
        fit_temperatures=fit_temperatures,
        uncovered_evidence=floor,
    )
    return Plan(
        assignment=plan.assignment,
        params=params,
        estimated_accuracy=cv_acc,
        per_class_accuracy=per_class_accuracy(cv_probs, problem.labels),
        uncovered=plan.uncovered,
        models=plan.models,
        solver=plan.solver,
        evaluated=plan.evaluated,
        measured_fraction=plan.measured_fraction,
    )
