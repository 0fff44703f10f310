"""The references MLL is compared with that do not choose the hub's heads: the expert_recipe (a
supervised model trained per task with the experts' recipe, :class:`ExpertRecipe`) and ConSE
(text-only zero-shot from ImageNet probabilities and class-name embeddings).

Imports evalset only from the evaluation; it must not import evaluate, baselines or summary.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mllgraph.errors import InvalidArgument
from mllgraph.eval.evalset import EvalImages, LogitCache
from mllgraph.eval.tasks import Task
from mllgraph.graph.db import Graph
from mllgraph.hub import forward, registry
from mllgraph.hub.workers import run_jobs, worker_count
from mllgraph.settings import Settings
from mllgraph.threads import local_threads


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
        raise InvalidArgument("the expert_recipe's image budget needs at least one expert")
    return max(1, round(max_train_per_expert / float(np.median(expert_class_counts))))


@dataclass(frozen=True)
class ExpertRecipe:
    """How the expert_recipe is trained, the same in the demo and the benchmark.

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


@dataclass(frozen=True)
class _RecipeJob:
    """One task's expert-recipe model to train (plain data: it crosses to a worker)."""

    arch: str
    classes: int
    images: np.ndarray
    labels: np.ndarray
    epochs: int
    seed: int


def _train_recipe(job: _RecipeJob) -> Any:
    """The expert-recipe model of one task. One torch thread, here (for this thread only:
    `threads.local_threads`) or in a worker (`hub.workers`): the same weights either way."""
    from mllgraph.hubs.fashion import experts as fashion_experts

    with local_threads(1):
        # train_expert trains head i on label value classes[i]: the labels are task indices.
        return fashion_experts.train_expert(
            job.arch, list(range(job.classes)), job.images, job.labels,
            epochs=job.epochs, seed=job.seed,
        )  # fmt: skip


class ExpertRecipeModel:
    """A supervised reference per task: :class:`ExpertRecipe` (cached per class set)."""

    def __init__(self, settings: Settings, recipe: ExpertRecipe) -> None:
        self.settings, self.recipe = settings, recipe
        self._cache: dict[tuple[tuple[int, ...], ...], Any] = {}
        self.seconds = 0.0

    @staticmethod
    def _key(task: Task) -> tuple[tuple[int, ...], ...]:
        return tuple(c.fashion for c in task.classes)

    def training_indices(self, task: Task, pool: np.ndarray, pool_labels: np.ndarray) -> np.ndarray:
        """Sorted positions into `pool` of the expert_recipe's training images for `task`."""
        rng = np.random.default_rng(self.recipe.seed)
        keep = []
        for f in sorted(task.label_map()):
            idx = np.flatnonzero(pool_labels == f)
            n = self.recipe.per_class_images
            if n is not None and idx.size > n:
                idx = rng.choice(idx, n, replace=False)
            keep.append(idx)
        return np.sort(np.concatenate(keep))

    def _jobs(self, tasks: Sequence[Task]) -> dict[tuple[tuple[int, ...], ...], _RecipeJob]:
        """The training of every task's model not yet kept (one per class set)."""
        from mllgraph.hubs.fashion import data as fashion

        todo = {self._key(t): t for t in tasks if self._key(t) not in self._cache}
        if not todo:
            return {}
        train_x, train_y = fashion.load_split("train", self.settings.fashion_mnist_dir)
        pool, _ = fashion.split_pools(self.recipe.split_seed, root=self.settings.fashion_mnist_dir)
        jobs = {}
        for key, task in todo.items():
            keep = pool[self.training_indices(task, pool, train_y[pool])]
            mapping = task.label_map()
            y = np.array([mapping[int(f)] for f in train_y[keep]], dtype=np.int64)
            jobs[key] = _RecipeJob(
                self.recipe.arch, len(task.classes), train_x[keep], y,
                self.recipe.epochs, self.recipe.seed,
            )  # fmt: skip
        return jobs

    def train(self, tasks: Sequence[Task], workers: int | None = None) -> None:
        """Train the models of `tasks` not yet kept, `workers` processes at once (None:
        `hub.workers.worker_count` for them): before a suite is evaluated, so that they
        train side by side on the cores rather than one per task as the tasks come."""
        from mllgraph.hubs.fashion import experts as fashion_experts

        t = time.perf_counter()
        jobs = self._jobs(tasks)
        if workers is None:
            workers = worker_count(self.settings, len(jobs))
        models = run_jobs(_train_recipe, list(jobs.values()), workers)
        for key, model in zip(jobs, models, strict=True):
            # Prepared once (hub/fold), not at every evaluation of this task's classes.
            self._cache[key] = forward.prepare(model, fashion_experts.FASHION_INPUT_SPEC)
        self.seconds += time.perf_counter() - t

    def accuracy(
        self, task: Task, images: EvalImages, idx: np.ndarray, labels: np.ndarray
    ) -> float:
        import torch

        from mllgraph.hubs.fashion import experts as fashion_experts

        if self._key(task) not in self._cache:
            self.train([task], workers=1)
        model = self._cache[self._key(task)]
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


def task_concepts(plan: dict[str, Any]) -> list[str]:
    """The wnid each task class grounds to in MLL's plan (the references use MLL's grounding:
    they differ from it in what they do with the concepts, not in what the names mean)."""
    return [c["concept"]["wnid"] for c in plan["classes"]]


class StackAll:
    """*stack-all*: the stacked rule (`mllgraph.combine.stacked`) over every head of every
    hub model that has probe outputs, fitted on the probe images of the task's concepts — the
    same images MLL's selection reads — with no graph search, no CHCO and no budget. What it
    loses or gains against MLL is what grounding-driven selection adds (and whether the
    budget costs accuracy). Fitted as MLL's stacked rule is, with each probe image's source
    (so it too holds one source out where classes have several).

    Where some task classes have no probe images, it is fitted, as MLL's partial rule is
    (`StackedRule.classes`), on the others, and MLL's own plan scores the rest (its heads or
    its patch) and how much the rule's classes get together (`plan.apply`): the reference then
    differs from MLL only in the rule over the probed classes. None for a task with fewer
    than two classes with probe images, or where no rule fits."""

    def __init__(
        self, graph: Graph, settings: Settings, logits: LogitCache, models: Sequence[str]
    ) -> None:
        self.graph, self.settings, self.logits = graph, settings, logits
        self.models = tuple(models)

    def accuracy(self, plan: dict[str, Any], idx: np.ndarray, labels: np.ndarray) -> float | None:
        from mllgraph.combine import stacked
        from mllgraph.errors import FailedPrecondition
        from mllgraph.plan import apply
        from mllgraph.plan import document as plan_doc
        from mllgraph.select.probe_data import CACHE, class_probes, probe_matrix, probe_sources
        from mllgraph.select.reads import Reads

        wnids = task_concepts(plan)
        reads = Reads(self.graph, None, registry.catalogue_version(self.graph))
        outputs = {}
        for mid in self.models:
            try:
                outputs[mid] = CACHE.get(self.settings, mid)
            except FailedPrecondition:  # declared only: no probe outputs to fit on
                continue
        rows = reads.task_probes(wnids)
        probe_labels, probe_logits, _ = probe_matrix(rows, outputs, len(wnids))
        if not probe_logits:
            return None
        temperatures = {m: o.temperature for m, o in outputs.items()}
        models = sorted(probe_logits)
        # Each image's probe source, as selection gives it: the same rule as MLL's.
        sources = stacked.row_sources(class_probes(rows, outputs, len(wnids)), probe_sources(rows))
        probed = stacked.probed_classes(probe_labels, len(wnids))
        if probed.size < 2:
            return None
        renumber = np.full(len(wnids), -1, dtype=np.int64)
        renumber[probed] = np.arange(probed.size)
        rule = stacked.fit(
            probe_logits, renumber[probe_labels], int(probed.size), models, temperatures,
            sources=sources,
        )  # fmt: skip
        if rule is None:
            return None
        if probed.size < len(wnids):
            rule = replace(rule, classes=tuple(int(c) for c in probed))
        # MLL's plan with this rule in place of its own, scored as inference scores it (a rule
        # over every class alone decides; a partial one within the per-class rule's share).
        parsed = replace(plan_doc.parse_plan(plan), stacked=rule)
        needed = {*apply.models_to_run(parsed), *rule.models}
        probs = apply.probabilities(parsed, {m: self.logits(m)[idx] for m in needed}, len(idx))
        return float((probs.argmax(1) == labels).mean())


class SubtreeSum:
    """*one ImageNet expert, summed subtrees*: the expert's 1000 ImageNet probabilities summed
    over each task class's WordNet subtree (the ImageNet classes at or below the class's
    concept), argmax over the task's classes — what a user writes in 30 lines, with no hub.
    A class with no ImageNet class under it scores 0. Each of the hub's ImageNet experts is
    scored; :meth:`accuracy` gives the best of them on the task (in hindsight)."""

    def __init__(
        self, graph: Graph, settings: Settings, logits: LogitCache, models: Sequence[str]
    ) -> None:
        from mllgraph.graph.wordnet import load_nouns
        from mllgraph.hub.loading import imagenet_wnids

        self.logits = logits
        self.models = [m for m in models if m.split("@", 1)[0] in registry.BUILTINS]
        wn = load_nouns(settings.wordnet_dir)
        self.ancestors = [wn.with_ancestors(w) for w in imagenet_wnids()]

    def heads_under(self, wnid: str) -> list[int]:
        return [h for h, anc in enumerate(self.ancestors) if wnid in anc]

    def per_model(
        self, plan: dict[str, Any], idx: np.ndarray, labels: np.ndarray
    ) -> dict[str, float]:
        from mllgraph.combine.rule import model_probabilities

        heads = [self.heads_under(w) for w in task_concepts(plan)]
        out = {}
        for mid in self.models:
            p = model_probabilities(self.logits(mid)[idx].astype(np.float64), 1.0)
            scores = np.stack([p[:, h].sum(1) if h else np.zeros(len(p)) for h in heads], 1)
            out[mid] = float((scores.argmax(1) == labels).mean())
        return out

    def accuracy(self, plan: dict[str, Any], idx: np.ndarray, labels: np.ndarray) -> float | None:
        scores = self.per_model(plan, idx, labels)
        return max(scores.values()) if scores else None
