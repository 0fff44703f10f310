"""CHCO's heuristic against its exact solver on synthetic problems (the gap study).

Synthetic problems draw classes and heads from random unit vectors, so head quality and
confusions vary the way real hubs' do; `gap_study` solves each one both ways and reports the
accuracy gap. Evaluation code: the library never imports it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mllgraph.combine.rule import HeadGroup, model_probabilities
from mllgraph.errors import InvalidArgument
from mllgraph.select.chco import (
    Candidate,
    ChcoProblem,
    exact_search_size,
    solve_exact,
    solve_heuristic,
)


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@dataclass
class _Universe:
    """Concept prototypes of a synthetic hub (latent feature space)."""

    protos: np.ndarray  # (U, d)
    kind: list[str]  # "class", "sub", "super", "other"
    cls: np.ndarray  # task class of "class"/"sub" concepts, else -1
    sup: np.ndarray  # superclass id of "super" concepts, else -1
    sub_protos: np.ndarray  # (K, 2, d)
    class_super: np.ndarray  # (K,)
    members: dict[int, list[int]] = field(default_factory=dict)


def _universe(rng: np.random.Generator, k: int, d: int) -> _Universe:
    n_super = max(1, k // 3)
    centers = rng.normal(size=(n_super, d))
    class_super = np.arange(k) % n_super
    # Classes of one superclass look alike: the confusions closed-set experts make.
    class_p = _normalize(0.9 * centers[class_super] + rng.normal(size=(k, d)))
    sub_p = _normalize(class_p[:, None, :] + 0.35 * rng.normal(size=(k, 2, d)))
    members = {s: [c for c in range(k) if class_super[c] == s] for s in range(n_super)}
    super_p = _normalize(np.stack([class_p[members[s]].mean(axis=0) for s in range(n_super)]))
    other_p = _normalize(rng.normal(size=(k, d)))
    protos = np.vstack([class_p, sub_p.reshape(2 * k, d), super_p, other_p])
    kind = ["class"] * k + ["sub"] * (2 * k) + ["super"] * n_super + ["other"] * k
    cls = np.concatenate([np.arange(k), np.repeat(np.arange(k), 2), -np.ones(n_super + k, int)])
    sup = np.concatenate([-np.ones(3 * k, int), np.arange(n_super), -np.ones(k, int)])
    return _Universe(protos, kind, cls, sup, sub_p, class_super, members)


def synthetic_problem(
    rng_seed: int = 0,
    num_classes: int = 8,
    num_models: int = 12,
    heads_per_model: int = 4,
    images_per_class: int = 20,
    budget: int = 3,
) -> ChcoProblem:
    """A random CHCO instance whose models behave like closed-set experts.

    Concepts (task classes, two sub-concepts per class, superclasses of similar classes,
    unrelated concepts) are prototypes in a latent space; an image is its sub-concept's
    prototype plus noise. Each model has `heads_per_model` heads on random concepts; a head's
    logit is ``scale * <image, head weight> + bias``, so a model scores its own classes' images
    high and spreads a foreign image's mass over its most similar heads. A quarter of the
    models are noisy (blurred weights, low scale); scales vary (miscalibration). Candidates:
    "exact" (head on the class), "descendants" (its sub-concept heads, summed), "ancestor"
    (superclass head; label score halved). Label scores are measured on a separate labelling
    set: mean group evidence on images of the class. Deterministic in `rng_seed`.
    """
    for name, value in (
        ("num_classes", num_classes),
        ("num_models", num_models),
        ("heads_per_model", heads_per_model),
        ("images_per_class", images_per_class),
    ):
        if value < 1:
            raise InvalidArgument(f"{name} is {value}; expected >= 1")
    rng = np.random.default_rng(rng_seed)
    k, d = num_classes, 24
    uni = _universe(rng, k, d)

    def images(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(k), per_class)
        sub = rng.integers(0, 2, y.size)
        x = _normalize(uni.sub_protos[y, sub] + 0.12 * rng.normal(size=(y.size, d)))
        return x.astype(np.float32), y

    x_probe, labels = images(images_per_class)
    x_label, y_label = images(8)
    label_rows = [np.flatnonzero(y_label == c) for c in range(k)]
    n_concepts = uni.protos.shape[0]
    heads = min(heads_per_model, n_concepts)
    width = len(str(num_models - 1))
    logits: dict[str, np.ndarray] = {}
    candidates: list[Candidate] = []
    for mi in range(num_models):
        model_id = f"m{mi:0{width}d}"
        concepts = np.sort(rng.choice(n_concepts, size=heads, replace=False))
        noisy = rng.random() < 0.25
        w = _normalize(uni.protos[concepts] + (0.8 if noisy else 0.2) * rng.normal(size=(heads, d)))
        scale = rng.uniform(2.0, 5.0) if noisy else rng.uniform(5.0, 14.0)
        bias = rng.normal(0.0, 0.5, heads)
        # einsum, not @: tiny products, and BLAS threads thrash on a busy machine.
        sim = np.einsum("nd,hd->nh", x_probe, w.astype(np.float32))
        logits[model_id] = (scale * sim + bias).astype(np.float32)
        probs_label = model_probabilities(scale * np.einsum("nd,hd->nh", x_label, w) + bias)
        # Head groups per (class, kind): only the classes this model's heads relate to.
        found: dict[tuple[int, str], list[int]] = {}
        for h, cc in enumerate(concepts):
            kind = uni.kind[cc]
            if kind in ("class", "sub"):
                name = "exact" if kind == "class" else "descendants"
                found.setdefault((int(uni.cls[cc]), name), []).append(h)
            elif kind == "super" and len(uni.members[int(uni.sup[cc])]) > 1:
                for c in uni.members[int(uni.sup[cc])]:
                    found.setdefault((c, "ancestor"), []).append(h)
        for (c, kind), hs in sorted(found.items()):
            ev = probs_label[label_rows[c]][:, hs].sum(axis=1).mean()
            score = float(np.clip(ev, 0.0, 1.0)) * (0.5 if kind == "ancestor" else 1.0)
            candidates.append(Candidate(c, HeadGroup(model_id, tuple(hs), kind, round(score, 4))))
    return ChcoProblem(
        num_classes=k,
        candidates=candidates,
        logits_by_model=logits,
        labels=labels,
        temperatures=dict.fromkeys(logits, 1.0),
        budget=budget,
    )


def gap_study(n_instances: int = 200, seed: int = 0) -> dict[str, float]:
    """Heuristic vs exact (parameter-free rule) on random small instances.

    Returns the accuracy-gap distribution (exact - heuristic): mean, median, p95, max, min,
    the fraction of instances solved exactly optimally, and total solver seconds.
    """
    if n_instances < 1:
        raise InvalidArgument(f"n_instances is {n_instances}; expected >= 1")
    rng = np.random.default_rng(seed)
    gaps: list[float] = []
    t_exact = t_heur = 0.0
    skipped = 0
    while len(gaps) < n_instances:
        problem = synthetic_problem(
            rng_seed=int(rng.integers(0, 2**31 - 1)),
            num_classes=int(rng.integers(3, 7)),
            num_models=int(rng.integers(4, 10)),
            heads_per_model=int(rng.integers(2, 6)),
            images_per_class=int(rng.integers(5, 16)),
            budget=int(rng.integers(1, 4)),
        )
        if exact_search_size(problem) > 20_000:  # keep the study fast
            skipped += 1
            continue
        t0 = time.perf_counter()
        exact = solve_exact(problem)
        t1 = time.perf_counter()
        heur = solve_heuristic(problem)
        t2 = time.perf_counter()
        t_exact += t1 - t0
        t_heur += t2 - t1
        gaps.append(exact.estimated_accuracy - heur.estimated_accuracy)
    g = np.array(gaps)
    return {
        "n_instances": float(g.size),
        "mean_gap": float(g.mean()),
        "median_gap": float(np.median(g)),
        "p95_gap": float(np.percentile(g, 95)),
        "max_gap": float(g.max()),
        "min_gap": float(g.min()),
        "frac_optimal": float(np.mean(g <= 1e-12)),
        "exact_seconds": t_exact,
        "heuristic_seconds": t_heur,
        "skipped_large": float(skipped),
    }


def _format_study(study: Mapping[str, float]) -> str:
    return json.dumps(study, sort_keys=True)


if __name__ == "__main__":  # python -m mllgraph.eval.gap_study: the study as one JSON line
    print(_format_study(gap_study(200, 0)))
