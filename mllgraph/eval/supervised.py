"""The supervised reference on Fashion-MNIST: what labelled task data buys.

One small CNN (two 3x3 conv layers of 16 and 32 channels, each with max-pooling, then 64
hidden units) trained with Adam on the WHOLE Fashion-MNIST train split (60,000 labelled images,
all ten classes) for :data:`EPOCHS` epochs; a task's prediction is its ten-class probability
summed over the Fashion classes each task class stands for, argmax over the task's classes.

Why this and not logistic regression on pixels: a user with labelled data would pick a small
CNN; it reaches about 0.90 on the ten classes where logistic regression on raw pixels stops near
0.84, so it is the stronger (more demanding) reference. Why one ten-class model summed per task
and not one model per task: it sees every labelled image there is, and summing is exact for a
task class that stands for several Fashion classes ("footwear").

It sees labelled images of the task's classes, which MLL never does. The trained weights are
cached under ``<home>/references/`` keyed by epochs and seed (training takes a minute or two on
two cores).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.eval.tasks import Task
from mllgraph.settings import Settings

EPOCHS = 3
BATCH = 128
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST train split pixel statistics


@dataclass(frozen=True)
class SupervisedRecipe:
    epochs: int = EPOCHS
    seed: int = 0

    def describe(self) -> str:
        return (
            f"a small CNN (conv 16-32, 64 hidden) trained with Adam for {self.epochs} epochs "
            f"(batch {BATCH}, seed {self.seed}) on all 60,000 labelled Fashion-MNIST train "
            "images; per task, its ten-class probabilities summed over each task class's "
            "Fashion classes"
        )


def _network() -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10),
    )  # fmt: skip


def _tensor(images: np.ndarray) -> Any:
    import torch

    x = torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0)
    return ((x - MEAN) / STD).unsqueeze(1)


class Supervised:
    """The reference of the module doc; :meth:`accuracy` per task."""

    def __init__(self, settings: Settings, recipe: SupervisedRecipe | None = None) -> None:
        self.settings, self.recipe = settings, recipe or SupervisedRecipe()
        self.seconds = 0.0
        self.final_loss: float | None = None
        self._model: Any = None
        self._probs: dict[int, np.ndarray] = {}  # id(images) -> (N, 10)

    @property
    def weights_path(self) -> Path:
        r = self.recipe
        return self.settings.home / "references" / f"fashion_cnn_e{r.epochs}_s{r.seed}.pt"

    def model(self) -> Any:
        if self._model is None:
            import torch

            net = _network()
            path = self.weights_path
            if path.exists():
                net.load_state_dict(torch.load(path, weights_only=True))
            else:
                t = time.perf_counter()
                self._train(net)
                self.seconds = time.perf_counter() - t
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                torch.save(net.state_dict(), tmp)
                tmp.replace(path)  # never a half-written cache
            self._model = net.eval()
        return self._model

    def _train(self, net: Any) -> None:
        import torch

        from mllgraph.hubs.fashion import data as fashion

        x, y = fashion.load_split("train", self.settings.fashion_mnist_dir)
        xt, yt = _tensor(x), torch.from_numpy(y.astype(np.int64))
        gen = torch.Generator().manual_seed(self.recipe.seed)
        torch.manual_seed(self.recipe.seed)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        loss_fn = torch.nn.CrossEntropyLoss()
        net.train()
        for _ in range(self.recipe.epochs):
            order = torch.randperm(len(xt), generator=gen)
            total = 0.0
            for i in range(0, len(order), BATCH):
                b = order[i : i + BATCH]
                opt.zero_grad()
                loss = loss_fn(net(xt[b]), yt[b])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(b)
            self.final_loss = total / len(order)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, 10) Fashion-class probabilities (cached per image array)."""
        key = id(images)
        if key not in self._probs:
            import torch

            net = self.model()
            with torch.inference_mode():
                out = [
                    torch.softmax(net(_tensor(images[i : i + 1024])), 1).numpy()
                    for i in range(0, len(images), 1024)
                ]
            self._probs[key] = np.concatenate(out) if out else np.zeros((0, 10), np.float32)
        return self._probs[key]

    def accuracy(
        self, task: Task, images: np.ndarray, idx: np.ndarray, labels: np.ndarray
    ) -> float:
        """`images`: the whole evaluation array; `idx` the task's rows; `labels` task indices."""
        return float((predict_task(self.probabilities(images)[idx], task) == labels).mean())


def predict_task(fashion_probs: np.ndarray, task: Task) -> np.ndarray:
    """Task-class index per row: the Fashion-class probabilities summed per task class."""
    summed = np.zeros((len(fashion_probs), len(task.classes)))
    for i, c in enumerate(task.classes):
        summed[:, i] = fashion_probs[:, list(c.fashion)].sum(1)
    return summed.argmax(1)
