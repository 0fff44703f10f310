"""The supervised reference on Fashion-MNIST: what labelled task data buys.

One network trained with Adam on the WHOLE Fashion-MNIST train split (60,000 labelled images,
all ten classes); a task's prediction is its ten-class probability summed over the Fashion
classes each task class stands for, argmax over the task's classes. Two architectures:
- ``mlp`` (the default): 784-256-128-10, 10 epochs; about 0.89 on the ten classes.
- ``cnn``: two 3x3 conv layers (16, 32 channels) with max-pooling, 64 hidden units, 3 epochs;
  about 0.90-0.91, at about ten times the MLP's CPU time (minutes on two cores), which is why
  the demo does not use it (`mllgraph bench zeroshot --supervised-arch cnn` does).
Both are well above logistic regression on raw pixels (about 0.84), the usual weak reference.
Why one ten-class model summed per task and not one model per task: it sees every labelled
image there is, and summing is exact for a task class that stands for several Fashion classes
("footwear").

It sees labelled images of the task's classes, which MLL never does. The trained weights are
cached under ``<home>/references/`` keyed by architecture, epochs and seed (and
`WEIGHTS_VERSION`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.errors import InvalidArgument
from mllgraph.eval.tasks import Task
from mllgraph.settings import Settings

EPOCHS = {"mlp": 10, "cnn": 3}
# 2: the initial weights come from the recipe's seed (before, from whatever the process had
# drawn first, so two demo runs trained two different references: 0.951 and 0.944).
WEIGHTS_VERSION = 2
BATCH = 128
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST train split pixel statistics


ARCHS = {
    "mlp": "an MLP (784-256-128-10)",
    "cnn": "a small CNN (conv 16-32, 64 hidden)",
}


@dataclass(frozen=True)
class SupervisedRecipe:
    arch: str = "mlp"
    epochs: int | None = None  # None: EPOCHS[arch]
    seed: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise InvalidArgument(
                f"supervised reference architecture {self.arch!r} is unknown; "
                f"known: {', '.join(ARCHS)}"
            )

    @property
    def epoch_count(self) -> int:
        return EPOCHS[self.arch] if self.epochs is None else self.epochs

    def describe(self) -> str:
        return (
            f"{ARCHS[self.arch]} trained with Adam for {self.epoch_count} epochs "
            f"(batch {BATCH}, seed {self.seed}) on all 60,000 labelled Fashion-MNIST train "
            "images; per task, its ten-class probabilities summed over each task class's "
            "Fashion classes"
        )


def _network(arch: str) -> Any:
    from torch import nn

    if arch == "mlp":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
            nn.Linear(128, 10),
        )  # fmt: skip
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10),
    )  # fmt: skip


def initial_network(recipe: SupervisedRecipe) -> Any:
    """The recipe's network with its initial weights drawn from its seed alone, on a forked
    random generator: what the process drew before does not change them, and drawing them
    moves no one else's random numbers."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        return _network(recipe.arch)


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
        name = f"fashion_{r.arch}_e{r.epoch_count}_s{r.seed}_v{WEIGHTS_VERSION}.pt"
        return self.settings.home / "references" / name

    def model(self) -> Any:
        if self._model is None:
            import torch

            net = initial_network(self.recipe)
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
        for _ in range(self.recipe.epoch_count):
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
