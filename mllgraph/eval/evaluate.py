"""Zero-shot evaluation: MLL against baselines on the same tasks and test images.

For every task of a suite: SelectHeads (CHCO) then Classify on Fashion-MNIST test images of
the task's classes, through a `Pipeline` — the gRPC services in `bench zeroshot` and the
demo, or the library in-process (the hub-size study, where hundreds of selections run).

Baselines, computed on the same images from each model's logits (every model runs once on
the evaluation images and its logits are cached). Every method is scored by the same code
(:func:`task_scores`): the shared rule (`mllgraph.combine.rule.combine`) at each model's
calibrated temperature (the one labelling fitted on the hub's probe images, which selection
and inference use too), and the same offline fallback evidence
(`mllgraph.combine.rule.fallback_evidence`) for every class the method leaves uncovered. Only the
choice of heads and the combination's per-class weights differ:
  (a) random   — a uniformly random candidate per class (mean of 5 draws), default weights;
  (b) single   — the one expert covering most classes (ties: higher mean label score), its
                 best head group per covered class, default weights; the classes it does not
                 cover get the fallback like any uncovered class;
  (c) uniform  — every candidate group of every candidate model, evidence averaged with
                 equal weights (label scores ignored), no budget and no optimisation;
  (d) oracle   — :class:`OracleRecipe`: the hub's strongest expert architecture trained with
                 the experts' recipe and per-class image budget on the task's classes (a
                 supervised reference: it sees labelled task images, MLL does not);
  (e) conse    — text-only zero-shot from offline parts (a stand-in for a VLM):
                 EfficientNet-Lite0's ImageNet top-10 probabilities mapped to the task's class
                 names by MiniLM text-embedding similarity (ConSE-style).
MLL's plan adds what selection fitted on the hub's probe images (per-class weights and
biases); an uncovered class keeps weight 1 and bias 0 there, as in the baselines.

What MLL uses, exactly (:data:`MLL_USES`): the task's class names and the hub's own probe
images (labelled concept images the hub keeps to label its models; the temperatures and
combination weights are fitted on them); no image or label of the task. The random, single
and uniform baselines use the same; ConSE uses class names only; the oracle is trained on
labelled images of the task's classes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mllgraph.combine.domain import thumbnails
from mllgraph.combine.rule import (
    ClassAssignment,
    CombinationParams,
    HeadGroup,
    class_scores,
    default_params,
    fallback_evidence,
)
from mllgraph.errors import FailedPrecondition, InvalidArgument
from mllgraph.eval.tasks import SPLITS, Suite, Task
from mllgraph.graph.db import Graph
from mllgraph.hub import domains, executor, forward, loading, registry
from mllgraph.hubs.fashion import experts as fashion_experts
from mllgraph.hubs.fashion.data import FASHION_CLASSES
from mllgraph.plan import apply
from mllgraph.plan import document as plan_doc
from mllgraph.plan import request as plan_request
from mllgraph.plan.document import UNCOVERED_WHY, uncovered_names
from mllgraph.select import chco, probe_data
from mllgraph.select import run as select
from mllgraph.settings import Settings

BASELINES = ("random", "single", "uniform", "oracle", "conse")
# What MLL sees of a task, stated wherever its figures are shown (module doc).
MLL_USES = (
    "MLL uses the task's class names and the hub's own probe images (temperatures and "
    "combination weights are fitted on them); no image or label of the task"
)
ORACLE_USES = "the oracle is trained on labelled images of the task's classes"
Log = Callable[[str], None]


# -- evaluation images -----------------------------------------------------------------------


@dataclass(frozen=True)
class EvalImages:
    images: np.ndarray  # uint8 (N, 28, 28), Fashion-MNIST test split
    fashion: np.ndarray  # (N,) Fashion class index

    def for_task(self, task: Task) -> tuple[np.ndarray, np.ndarray]:
        """Indices into `images` of the task's classes, and their task-class labels."""
        mapping = task.label_map()
        idx = np.flatnonzero(np.isin(self.fashion, list(mapping)))
        labels = np.array([mapping[int(f)] for f in self.fashion[idx]], dtype=np.int64)
        return idx, labels


def eval_images(settings: Settings, per_class: int | None, seed: int = 0) -> EvalImages:
    """The first `per_class` test images of every class in a seeded order (all if None)."""
    from mllgraph.hubs.fashion import data as fashion

    images, labels = fashion.load_split("test", settings.fashion_mnist_dir)
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(len(FASHION_CLASSES)):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        keep.append(idx if per_class is None else idx[:per_class])
    order = np.sort(np.concatenate(keep))
    return EvalImages(images[order], labels[order])


class LogitCache:
    """Each model's logits on the evaluation images, computed once: in this process, or, with
    MLLGRAPH_EXECUTOR=ray, as one Ray task per model for a batch given to :meth:`prefetch`."""

    def __init__(self, graph: Graph, settings: Settings, images: EvalImages) -> None:
        self.graph, self.settings, self.images = graph, settings, images
        self._logits: dict[str, np.ndarray] = {}
        self._in_domain: dict[str, np.ndarray | None] = {}
        self._thumbnails: np.ndarray | None = None
        self.seconds: dict[str, float] = {}

    def in_domain(self, mid: str) -> np.ndarray | None:
        """(N,) bool: the evaluation images inside the model's described input domain, as
        inference decides it; None for a model without a domain profile (every image)."""
        if mid not in self._in_domain:
            record = registry.get_model(self.graph, mid)
            mask = None
            if record.get("domain_sha256"):
                if self._thumbnails is None:
                    self._thumbnails = thumbnails(list(self.images.images))
                mask = domains.load(self.settings, mid, record).accepts(self._thumbnails)
            self._in_domain[mid] = mask
        return self._in_domain[mid]

    def __call__(self, mid: str) -> np.ndarray:
        if mid not in self._logits:
            record = registry.get_model(self.graph, mid)
            t = time.perf_counter()
            self._logits[mid] = model_logits(self.settings, self.images.images, record)
            self.seconds[mid] = time.perf_counter() - t
        return self._logits[mid]

    def prefetch(self, mids: Sequence[str]) -> None:
        """Compute the logits of `mids` now; on Ray (MLLGRAPH_EXECUTOR=ray) one task each."""
        todo = [m for m in dict.fromkeys(mids) if m not in self._logits]
        if not todo:
            return
        if self.settings.executor != "ray":
            for mid in todo:
                self(mid)
            return

        records = {mid: (registry.get_model(self.graph, mid),) for mid in todo}
        t = time.perf_counter()
        out = executor.map_models(
            self.settings, model_logits, records, shared=(self.settings, self.images.images)
        )
        per_model = (time.perf_counter() - t) / len(todo)  # wall time, shared by the tasks
        for mid in todo:
            self._logits[mid] = out[mid]
            self.seconds[mid] = per_model


def model_logits(
    settings: Settings, images: np.ndarray, record: Mapping[str, Any], device: str = "cpu"
) -> np.ndarray:
    """One model's logits on the evaluation images (in this process or in a Ray task)."""
    model, spec = loading.load_model(settings, dict(record))
    return forward.logits(
        model, spec, images, batch_size=128, device=device, cpu_chunk=settings.infer_cpu_chunk
    )


# -- the system under test -------------------------------------------------------------------


class Pipeline(Protocol):
    def select(self, task: Task, budget: int, models: tuple[str, ...] | None) -> dict[str, Any]:
        """The plan document for a task."""
        ...

    def classify(self, plan: dict[str, Any], images: np.ndarray) -> np.ndarray:
        """Predicted task-class index per image."""
        ...


class LibraryPipeline:
    """Selection and classification in-process (same code the services wrap)."""

    def __init__(self, graph: Graph, settings: Settings, logits: LogitCache) -> None:
        from mllgraph.ground.resolve import default_resolver

        self.graph, self.settings, self.logits = graph, settings, logits
        self.resolver = default_resolver(settings)

    def select(self, task: Task, budget: int, models: tuple[str, ...] | None) -> dict[str, Any]:
        ctx = select.select(
            self.graph,
            self.settings,
            [plan_request.TaskClass(n) for n in task.names],
            plan_request.SelectOptions(budget=budget, models=models),
            self.resolver,
        )
        return ctx.plan

    def classify_indices(self, plan: dict[str, Any], idx: np.ndarray) -> np.ndarray:
        """What the inference service answers (same rule, same offline fallback for uncovered
        classes), from cached logits."""
        return classify_plan(plan, self.logits, idx, self.logits.in_domain)

    def classify(self, plan: dict[str, Any], images: np.ndarray) -> np.ndarray:
        raise NotImplementedError("LibraryPipeline classifies by index: use classify_indices")


# -- scoring shared by every method ----------------------------------------------------------


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


# -- baselines -------------------------------------------------------------------------------


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


def expert_per_class_budget(
    max_train_per_expert: int | None, expert_class_counts: Sequence[int]
) -> int | None:
    """Training images per Fashion class an expert gets: None (every pool image of each of
    its classes) when the experts are uncapped; else the cap spread over the median number of
    classes an expert has (an expert draws its `max_train_per_expert` images uniformly from
    its 2-5 classes, so about cap / classes of each)."""
    if max_train_per_expert is None:
        return None
    if not expert_class_counts:
        raise InvalidArgument("the oracle's image budget needs at least one expert")
    return max(1, round(max_train_per_expert / float(np.median(expert_class_counts))))


@dataclass(frozen=True)
class OracleRecipe:
    """How the oracle is trained, the same in the demo and the benchmark.

    The hub's strongest expert architecture (largest by parameter count), trained with the
    experts' own training code and epochs (`fashion_experts.train_expert`), on the task's classes
    only, from the same expert-training pool the experts use (never the probe pool or the
    test split), with the experts' per-class image budget (:func:`expert_per_class_budget`):
    at most `per_class_images` images of each Fashion-MNIST class the task's classes stand
    for, drawn with `seed` (all of them when None). It is a supervised reference that sees
    labelled images of the task, which MLL never does.
    """

    arch: str
    epochs: int
    per_class_images: int | None
    seed: int = 0
    split_seed: int = 0

    def describe(self) -> str:
        images = (
            "every expert-training-pool image of each task class"
            if self.per_class_images is None
            else f"at most {self.per_class_images} expert-training-pool images per Fashion class"
        )
        return (
            f"{self.arch} (the hub's largest expert architecture), {self.epochs} epoch(s) with "
            f"the experts' training code, trained on the task's classes only with {images} "
            f"(the experts' per-class budget; split seed {self.split_seed}, seed {self.seed})"
        )


class Oracle:
    """A supervised reference per task: :class:`OracleRecipe` (cached per class set)."""

    def __init__(self, settings: Settings, recipe: OracleRecipe) -> None:
        self.settings, self.recipe = settings, recipe
        self._cache: dict[tuple[tuple[int, ...], ...], Any] = {}
        self.seconds = 0.0

    def training_indices(self, task: Task, pool: np.ndarray, pool_labels: np.ndarray) -> np.ndarray:
        """Sorted positions into `pool` of the oracle's training images for `task`."""
        rng = np.random.default_rng(self.recipe.seed)
        keep = []
        for f in sorted(task.label_map()):
            idx = np.flatnonzero(pool_labels == f)
            n = self.recipe.per_class_images
            if n is not None and idx.size > n:
                idx = rng.choice(idx, n, replace=False)
            keep.append(idx)
        return np.sort(np.concatenate(keep))

    def accuracy(
        self, task: Task, images: EvalImages, idx: np.ndarray, labels: np.ndarray
    ) -> float:
        import torch

        from mllgraph.hubs.fashion import data as fashion

        key = tuple(c.fashion for c in task.classes)
        if key not in self._cache:
            t = time.perf_counter()
            train_x, train_y = fashion.load_split("train", self.settings.fashion_mnist_dir)
            pool, _ = fashion.split_pools(
                self.recipe.split_seed, root=self.settings.fashion_mnist_dir
            )
            keep = pool[self.training_indices(task, pool, train_y[pool])]
            mapping = task.label_map()
            y = np.array([mapping[int(f)] for f in train_y[keep]], dtype=np.int64)
            # train_expert trains head i on label value classes[i]: give it task indices.
            model = fashion_experts.train_expert(
                self.recipe.arch,
                list(range(len(task.classes))),
                train_x[keep],
                y,
                epochs=self.recipe.epochs,
                seed=self.recipe.seed,
            )
            self._cache[key] = model
            self.seconds += time.perf_counter() - t
        model = self._cache[key]
        with torch.inference_mode():
            out = forward.logits(model, fashion_experts.FASHION_INPUT_SPEC, images.images[idx])
        return float((out.argmax(1) == labels).mean())


class ConSE:
    """EfficientNet-Lite0's ImageNet top-10 mapped to class names by text similarity."""

    def __init__(self, graph: Graph, settings: Settings, logits: LogitCache, top: int = 10) -> None:
        from mllgraph.graph.wordnet import load_nouns
        from mllgraph.ground.embed import default_embedder

        self.logits, self.top = logits, top
        self.model_id = registry.model_id("efficientnet_lite0", "1")
        registry.get_model(graph, self.model_id)  # NotFound if the hub lacks it
        wn = load_nouns(settings.wordnet_dir)
        from mllgraph.hub.loading import imagenet_wnids

        names = [wn.synsets[w].lemmas[0].replace("_", " ") for w in imagenet_wnids()]
        self.embedder = default_embedder().load()
        self.imagenet_emb = self.embedder.encode([f"a photo of a {n}" for n in names])

    def accuracy(self, task: Task, idx: np.ndarray, labels: np.ndarray) -> float:
        from mllgraph.combine.rule import model_probabilities

        class_emb = self.embedder.encode([f"a photo of a {n}" for n in task.names])
        sim = self.imagenet_emb @ class_emb.T  # (1000, K)
        p = model_probabilities(self.logits(self.model_id)[idx].astype(np.float64), 1.0)
        top = np.argsort(-p, axis=1)[:, : self.top]
        rows = np.arange(len(idx))[:, None]
        scores = np.einsum("nt,ntk->nk", p[rows, top], sim[top])
        return float((scores.argmax(1) == labels).mean())


# -- the run ---------------------------------------------------------------------------------


@dataclass
class TaskResult:
    task: str
    classes: list[str]
    images: int
    mll: float
    estimated: float | None
    models: list[str]
    uncovered: list[str]
    selection_ms: float
    classify_ms: float
    baselines: dict[str, float] = field(default_factory=dict)
    split: str | None = None  # the task's suite half: "dev", "test" or None
    # What scored the uncovered classes (reuse/apply.patch_rule): "none", "stacked",
    # "conse:<model>" or "constant".
    patch: str = "none"
    # Per uncovered class, why (select/plan.UNCOVERED_WHY): "no head" or "not chosen".
    uncovered_why: dict[str, str] = field(default_factory=dict)

    def uncovered_text(self) -> str:
        """E.g. "sweater (not chosen), tee (no head); scored by stacked", or "-"."""
        if not self.uncovered:
            return "-"
        return f"{uncovered_names(self.uncovered, self.uncovered_why)}; scored by {self.patch}"


def run_suite(
    graph: Graph,
    settings: Settings,
    suite: Suite,
    pipeline: Pipeline,
    images: EvalImages,
    logits: LogitCache,
    *,
    budget: int,
    models: tuple[str, ...] | None = None,
    oracle: Oracle | None = None,
    conse: ConSE | None = None,
    baselines: tuple[str, ...] = BASELINES,
    seed: int = 0,
    log: Log = print,
) -> list[TaskResult]:
    from mllgraph.ground.resolve import default_resolver

    resolver = default_resolver(settings)
    results = []
    for t_i, task in enumerate(suite.tasks):
        idx, labels = images.for_task(task)
        k = len(task.classes)
        t = time.perf_counter()
        plan = pipeline.select(task, budget, models)
        sel_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        if isinstance(pipeline, LibraryPipeline):
            pred = pipeline.classify_indices(plan, idx)
        else:
            pred = pipeline.classify(plan, images.images[idx])
        cls_ms = (time.perf_counter() - t) * 1000
        r = TaskResult(
            task=task.name,
            classes=task.names,
            images=len(idx),
            mll=float((pred == labels).mean()),
            estimated=plan.get("estimated_accuracy"),
            models=plan.get("models", []),
            uncovered=plan.get("uncovered", []),
            selection_ms=sel_ms,
            classify_ms=cls_ms,
            split=task.split,
            patch=apply.patch_rule(plan_doc.parse_plan(plan)),
            uncovered_why={
                c["name"]: c["uncovered_why"] for c in plan["classes"] if "uncovered_why" in c
            },
        )
        cands, temps = candidates_for(graph, settings, task, resolver, models)
        view = TaskView(k, cands, temps, logits, idx, labels, logits.in_domain)
        if "random" in baselines:
            r.baselines["random"] = baseline_random(view, seed + t_i)
        if "single" in baselines:
            r.baselines["single"] = baseline_single(view)
        if "uniform" in baselines:
            r.baselines["uniform"] = baseline_uniform(view)
        if oracle is not None and "oracle" in baselines:
            r.baselines["oracle"] = oracle.accuracy(task, images, idx, labels)
        if conse is not None and "conse" in baselines:
            r.baselines["conse"] = conse.accuracy(task, idx, labels)
        results.append(r)
        shown = "  ".join(f"{b} {v:.3f}" for b, v in r.baselines.items())
        log(f"{task.name:<44} MLL {r.mll:.3f}  {shown}")
    return results


def summarise(results: list[TaskResult]) -> dict[str, Any]:
    """Mean accuracy per method over the tasks, and each method's share of the oracle (its
    mean over the oracle's mean, on the tasks that have an oracle figure)."""
    methods = ["mll"] + sorted({b for r in results for b in r.baselines})
    mean: dict[str, float | None] = {}
    share: dict[str, float | None] = {}
    with_oracle = [r for r in results if r.baselines.get("oracle") is not None]
    oracle_mean = float(np.mean([r.baselines["oracle"] for r in with_oracle])) if with_oracle else 0
    for m in methods:
        mean[m] = _mean([_value(r, m) for r in results])
        paired = [_value(r, m) for r in with_oracle]
        share[m] = (
            _mean(paired) / oracle_mean
            if oracle_mean > 0 and paired and None not in paired
            else None
        )
    # The coverage goal: no class left uncovered where the hub has a head for it.
    tasks_uncovered = {
        why: sum(why in r.uncovered_why.values() for r in results) for why in UNCOVERED_WHY
    }
    return {
        "tasks": len(results),
        "mean_accuracy": mean,
        "share_of_oracle": share,
        "tasks_with_uncovered": tasks_uncovered,
    }


def summarise_halves(results: list[TaskResult]) -> dict[str, dict[str, Any]]:
    """:func:`summarise` of the `dev` half, the `test` half and all tasks, side by side."""
    out = {h: summarise([r for r in results if r.split == h]) for h in SPLITS}
    out["all"] = summarise(results)
    return out


def _value(r: TaskResult, method: str) -> float | None:
    return r.mll if method == "mll" else r.baselines.get(method)


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def halves_table(results: list[TaskResult]) -> str:
    """Markdown: per method, mean accuracy and share of the oracle on each half and on all."""
    halves = summarise_halves(results)
    methods = ["mll"] + sorted({b for r in results for b in r.baselines})
    cols = [*SPLITS, "all"]
    lines = [
        "| method | "
        + " | ".join(f"{h} ({halves[h]['tasks']} tasks) | {h}: share of oracle" for h in cols)
        + " |",
        "|---|" + "---|---|" * len(cols),
    ]
    for m in methods:
        cells = []
        for h in cols:
            acc, share = halves[h]["mean_accuracy"].get(m), halves[h]["share_of_oracle"].get(m)
            cells += ["" if acc is None else f"{acc:.3f}", "" if share is None else f"{share:.1%}"]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_table(results: list[TaskResult]) -> str:
    methods = ["mll"] + sorted({b for r in results for b in r.baselines})
    lines = [
        "| task | half | K | images | "
        + " | ".join(methods)
        + " | mll estimated | models | uncovered (why; scored by) |",
        "|---|---|---|---|" + "---|" * len(methods) + "---|---|---|",
    ]
    for r in results:
        vals = [r.mll] + [r.baselines.get(m) for m in methods[1:]]
        cells = " | ".join("" if v is None else f"{v:.3f}" for v in vals)
        est = "-" if r.estimated is None else f"{r.estimated:.3f}"
        lines.append(
            f"| {r.task} | {r.split or '-'} | {len(r.classes)} | {r.images} | {cells} | "
            f"{est} | {len(r.models)} | {r.uncovered_text()} |"
        )
    s = summarise(results)["mean_accuracy"]
    cells = " | ".join("" if s[m] is None else f"**{s[m]:.3f}**" for m in methods)
    lines.append(f"| **mean** | | | | {cells} | | | |")
    return "\n".join(lines)


def results_json(results: list[TaskResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return path
