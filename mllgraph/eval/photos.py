"""The `photos` suite: real photographs that ship inside scikit-image and scikit-learn.

A smoke test of the ImageNet experts' declared heads on real photos, not a benchmark: eight
photos, tasks of 3-6 classes in plain words ("cat", "coffee", "motorbike", "tripod",
"flower"). For each task the report gives, per photo, what MLL predicted and which heads
decided, beside each EfficientNet-Lite expert alone restricted to the task's classes (a
class scores the expert's summed probability over the heads it declares on the class's
concept or below it, the same concept MLL grounded the class to).

A cross-domain task mixes these photos with Fashion-MNIST test images ("sandal, handbag,
cat, coffee mug"): MLL has to pick Fashion experts and ImageNet experts in one plan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# photo id -> (where it comes from, what it shows: the class word a person would use)
PHOTOS: dict[str, tuple[str, str]] = {
    "chelsea": ("scikit-image data.chelsea()", "cat"),
    "coffee": ("scikit-image data.coffee()", "coffee"),
    "motorcycle": ("scikit-image data.stereo_motorcycle()[0]", "motorbike"),
    "camera": ("scikit-image data.camera() (a cameraman at a camera on a tripod)", "tripod"),
    "rocket": ("scikit-image data.rocket()", "rocket"),
    "astronaut": ("scikit-image data.astronaut() (a portrait)", "astronaut"),
    "china": ("scikit-learn load_sample_image('china.jpg') (a palace)", "palace"),
    "flower": ("scikit-learn load_sample_image('flower.jpg')", "flower"),
}


BUILTIN_EXPERTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


@dataclass(frozen=True)
class PhotoTask:
    name: str
    names: tuple[str, ...]  # class names as typed
    photos: tuple[tuple[str, str], ...]  # (photo id, true class name)
    fashion: tuple[tuple[int, str], ...] = ()  # (Fashion-MNIST class index, true class name)


def _photo_pairs(ids: Sequence[str]) -> tuple[tuple[str, str], ...]:
    return tuple((i, PHOTOS[i][1]) for i in ids)


PHOTO_TASKS: tuple[PhotoTask, ...] = (
    PhotoTask(
        "photos-5",
        ("cat", "coffee", "motorbike", "tripod", "flower"),
        _photo_pairs(["chelsea", "coffee", "motorcycle", "camera", "flower"]),
    ),
    PhotoTask(
        "photos-4",
        ("cat", "palace", "rocket", "flower"),
        _photo_pairs(["chelsea", "china", "rocket", "flower"]),
    ),
    PhotoTask(
        "photos-3-with-person",
        ("astronaut", "coffee", "motorbike"),
        _photo_pairs(["astronaut", "coffee", "motorcycle"]),
    ),
    PhotoTask(
        "cross-domain",
        ("sandal", "handbag", "cat", "coffee mug"),
        (("chelsea", "cat"), ("coffee", "coffee mug")),
        fashion=((5, "sandal"), (8, "handbag")),
    ),
)


def load_photo(photo_id: str) -> np.ndarray:
    """uint8 (H, W, 3) RGB or (H, W) gray, from the packages (no download)."""
    if photo_id in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(f"{photo_id}.jpg"), dtype=np.uint8)
    try:
        from skimage import data
    except ImportError as e:
        raise RuntimeError("the photos suite needs scikit-image (pip install scikit-image)") from e
    loaders: dict[str, Callable[[], Any]] = {
        "chelsea": data.chelsea,
        "coffee": data.coffee,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
        "camera": data.camera,
        "rocket": data.rocket,
        "astronaut": data.astronaut,
    }
    return np.asarray(loaders[photo_id](), dtype=np.uint8)


@dataclass
class TaskImages:
    images: list[np.ndarray]
    labels: np.ndarray  # index into the task's names
    ids: list[str]


def task_images(task: PhotoTask, fashion_dir: Path, per_fashion_class: int = 5) -> TaskImages:
    images: list[np.ndarray] = []
    labels: list[int] = []
    ids: list[str] = []
    for pid, cls in task.photos:
        images.append(load_photo(pid))
        labels.append(task.names.index(cls))
        ids.append(pid)
    if task.fashion:
        from mllgraph.hubs.fashion import data as fashion

        x, y = fashion.load_split("test", fashion_dir)
        for fcls, cls in task.fashion:
            for j in np.flatnonzero(y == fcls)[:per_fashion_class]:
                images.append(x[j])
                labels.append(task.names.index(cls))
                ids.append(f"fashion-test-{int(j)}")
    return TaskImages(images, np.asarray(labels, dtype=np.int64), ids)


# -- each ImageNet expert alone, restricted to the task's classes --------------------------------


def descendants_of(children: dict[str, list[str]], wnid: str) -> set[str]:
    out, stack = {wnid}, [wnid]
    while stack:
        for c in children.get(stack.pop(), ()):
            if c not in out:
                out.add(c)
                stack.append(c)
    return out


def children_index(synsets: dict[str, Any]) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {}
    for s in synsets.values():
        for p in list(s.hypernyms) + list(s.instance_hypernyms):
            children.setdefault(p, []).append(s.wnid)
    return children


def restricted_predictions(
    probabilities: np.ndarray, head_wnids: Sequence[str], class_concepts: Sequence[set[str]]
) -> tuple[np.ndarray, list[bool]]:
    """Argmax over the task's classes of the expert's summed probability on each class's
    concept subtree; classes with no head in their subtree score 0 (and are reported)."""
    cols = [[h for h, w in enumerate(head_wnids) if w in concepts] for concepts in class_concepts]
    scores = np.stack(
        [probabilities[:, c].sum(1) if c else np.zeros(len(probabilities)) for c in cols],
        axis=1,
    )
    return scores.argmax(1), [bool(c) for c in cols]


@dataclass
class PhotoResult:
    task: str
    classes: list[str]
    concepts: list[str]
    models: list[str]
    uncovered: list[str]
    coverage: list[str]
    mll_accuracy: float
    experts_alone: dict[str, float] = field(default_factory=dict)
    per_image: list[dict[str, Any]] = field(default_factory=list)
    # Cross-domain tasks: every hub expert alone, as a one-model sub-hub through the same
    # pipeline (selection with models=[it], then classification): {model id: accuracy}.
    single_experts: dict[str, float] = field(default_factory=dict)


class ExpertsAlone:
    """The builtin ImageNet experts' probabilities per image, computed once per image."""

    def __init__(self, names: Sequence[str]) -> None:
        from mllgraph.hub import forward, loading

        self.names = list(names)
        self._models = {}
        for n in self.names:
            model, spec, wnids = loading.load_efficientnet_lite(n)
            self._models[n] = (forward.prepare(model, spec), spec, wnids)
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def head_wnids(self, name: str) -> list[str]:
        return list(self._models[name][2])

    def probabilities(self, name: str, image_id: str, image: np.ndarray) -> np.ndarray:
        key = (name, image_id)
        if key not in self._cache:
            import torch

            from mllgraph.hub import forward

            model, spec, _ = self._models[name]
            z = forward.logits(model, spec, image[None])
            self._cache[key] = torch.softmax(torch.from_numpy(z).double(), 1).numpy()[0]
        return self._cache[key]


def run_suite(
    pipeline: Any,
    fashion_dir: Path,
    wordnet_dir: Path,
    *,
    budget: int = 5,
    tasks: Sequence[PhotoTask] = PHOTO_TASKS,
    experts_alone: Sequence[str] = (
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
    ),
    log: Callable[[str], None] = print,
) -> list[PhotoResult]:
    """Each task through `pipeline` (select, then classify with details), beside each
    ImageNet expert alone restricted to the task's classes."""
    from mllgraph.graph.wordnet import load_nouns

    children = children_index(load_nouns(wordnet_dir).synsets)
    alone = ExpertsAlone(experts_alone)
    results = []
    for task in tasks:
        data = task_images(task, fashion_dir)
        plan = pipeline.select(task, budget, None)
        classes = plan["classes"]
        details = pipeline.classify_detailed(plan, data.images)
        preds = np.asarray([d["class_index"] for d in details])
        concepts = [c["concept"]["wnid"] for c in classes]
        subtrees = [descendants_of(children, w) for w in concepts]
        per_expert: dict[str, float] = {}
        per_image = []
        expert_preds: dict[str, np.ndarray] = {}
        for name in alone.names:
            probs = np.stack(
                [
                    alone.probabilities(name, i, im)
                    for i, im in zip(data.ids, data.images, strict=True)
                ]
            )
            expert_preds[name], _ = restricted_predictions(probs, alone.head_wnids(name), subtrees)
            per_expert[name] = float(np.mean(expert_preds[name] == data.labels))
        for j, d in enumerate(details):
            per_image.append(
                {
                    "image": data.ids[j],
                    "truth": task.names[int(data.labels[j])],
                    "mll": d["class_name"],
                    "probability": round(float(d["probability"]), 3),
                    "right": bool(d["class_index"] == data.labels[j]),
                    "used_fallback": d["used_fallback"],
                    "patch": d.get("patch", ""),
                    "out_of_domain": d.get("out_of_domain", []),
                    "heads": d["heads"],
                    "experts_alone": {n: task.names[int(p[j])] for n, p in expert_preds.items()},
                }
            )
        singles: dict[str, float] = {}
        if task.fashion:  # a task across domains: MLL against every expert alone
            for mid in sorted(m.id for m in pipeline.list_models()):
                one = pipeline.select(task, 1, (mid,))
                got = [d["class_index"] for d in pipeline.classify_detailed(one, data.images)]
                singles[mid] = float(np.mean(np.asarray(got) == data.labels))
        result = PhotoResult(
            task=task.name,
            classes=list(task.names),
            concepts=[f"{c['concept'].get('name', '')} ({c['concept']['wnid']})" for c in classes],
            models=list(plan.get("models", [])),
            uncovered=list(plan.get("uncovered", [])),
            coverage=[c.get("coverage", "") for c in classes],
            mll_accuracy=float(np.mean(preds == data.labels)),
            experts_alone=per_expert,
            per_image=per_image,
            single_experts=singles,
        )
        log(
            f"{task.name}: MLL {result.mll_accuracy:.2f} "
            + " ".join(f"{n} {a:.2f}" for n, a in per_expert.items())
            + f" | models {result.models} | uncovered {result.uncovered}"
            + (f" | best single expert {best_single(result)}" if singles else "")
        )
        results.append(result)
    return results


def best_single(result: PhotoResult) -> tuple[str, float] | None:
    """The best of the hub's experts alone (cross-domain tasks), as (model id, accuracy)."""
    if not result.single_experts:
        return None
    mid = max(sorted(result.single_experts), key=lambda m: result.single_experts[m])
    return mid, result.single_experts[mid]


def markdown(results: Sequence[PhotoResult]) -> str:
    lines = ["## Photos (real photographs from scikit-image / scikit-learn; a smoke test)", ""]
    if not results:
        return "\n".join(lines)
    names = list(results[0].experts_alone)
    lines.append(
        "| task | MLL | " + " | ".join(f"{n} alone" for n in names) + " | models | uncovered |"
    )
    lines.append("|---" * (len(names) + 4) + "|")
    for r in results:
        lines.append(
            f"| {r.task} | {r.mll_accuracy:.2f} | "
            + " | ".join(f"{r.experts_alone[n]:.2f}" for n in names)
            + f" | {', '.join(r.models)} | {', '.join(r.uncovered) or '-'} |"
        )
    for r in results:
        best = best_single(r)
        if best is not None:
            lines += [
                "",
                f"{r.task}: MLL {r.mll_accuracy:.2f} against every hub expert alone (each as a "
                f"one-model sub-hub, same selection and inference): best {best[0]} "
                f"{best[1]:.2f}; "
                + ", ".join(f"{m} {a:.2f}" for m, a in sorted(r.single_experts.items())),
            ]
    lines += ["", "Per image (MLL's prediction and the heads that decided):", ""]
    lines.append("| task | image | truth | MLL | p | heads | " + " | ".join(names) + " |")
    lines.append("|---" * (len(names) + 6) + "|")
    for r in results:
        for im in r.per_image:
            heads = ", ".join(f"{h['model_id']}:{h['head_label']}" for h in im["heads"][:3])
            if im["used_fallback"]:
                heads = f"uncovered: patch {im.get('patch') or 'constant'}"
            lines.append(
                f"| {r.task} | {im['image']} | {im['truth']} | {im['mll']} | {im['probability']} "
                f"| {heads} | " + " | ".join(im["experts_alone"][n] for n in names) + " |"
            )
    return "\n".join(lines)
