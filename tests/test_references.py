"""The references that need no hub: the supervised reference's per-task sum and one ImageNet
expert's summed subtrees, on made-up outputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from mllgraph.eval.supervised import predict_task
from mllgraph.eval.tasks import SuiteClass, Task
from mllgraph.settings import Settings


def test_supervised_sums_the_fashion_classes_of_each_task_class():
    task = Task("t", (SuiteClass("footwear", (5, 7, 9)), SuiteClass("bag", (8,))))
    probs = np.zeros((3, 10))
    probs[0, [5, 7, 9]] = [0.2, 0.2, 0.2]  # 0.6 footwear in three parts, 0.4 bag: footwear
    probs[0, 8] = 0.4
    probs[1, 8] = 0.9  # bag
    probs[2, [0, 5, 8]] = [0.5, 0.2, 0.3]  # mostly a class outside the task; bag > sandal
    assert predict_task(probs, task).tolist() == [0, 1, 1]


class _Logits:
    def __init__(self, by_model: dict[str, np.ndarray]) -> None:
        self.by_model = by_model

    def __call__(self, mid: str) -> np.ndarray:
        return self.by_model[mid]


def test_summed_subtrees_of_one_imagenet_expert():
    from mllgraph.eval.references import SubtreeSum
    from mllgraph.hub.loading import imagenet_wnids

    settings = Settings.from_env()
    if not (settings.wordnet_dir / "data.noun").exists():
        pytest.skip("WordNet 3.0 is not installed (scripts/run.sh installs it)")
    order = imagenet_wnids()
    retriever, tabby, sandal = (order.index(w) for w in ("n02099601", "n02123045", "n04133789"))
    logits = np.zeros((3, 1000), dtype=np.float32)
    logits[0, retriever] = 9.0  # golden retriever: under dog.n.01
    logits[1, tabby] = 9.0  # tabby: under cat.n.01 (via domestic cat)
    logits[2, sandal] = 9.0  # a sandal: under neither; the class with more mass wins
    ref = SubtreeSum(None, settings, _Logits({"efficientnet_lite0@1": logits}),
                     ["efficientnet_lite0@1", "fashion-x@1"])  # fmt: skip
    assert ref.models == ["efficientnet_lite0@1"]  # only ImageNet experts are read
    dog, cat, idea = "n02084071", "n02121620", "n05833840"  # idea.n.01: nothing under it
    assert retriever in ref.heads_under(dog) and tabby not in ref.heads_under(dog)
    assert tabby in ref.heads_under(cat)
    assert len(ref.heads_under(dog)) > 100  # ImageNet's ~120 dog breeds
    assert ref.heads_under(idea) == []
    plan = {"classes": [{"concept": {"wnid": dog}}, {"concept": {"wnid": cat}}]}
    idx = np.arange(2)
    assert ref.accuracy(plan, idx, np.array([0, 1])) == 1.0
    assert ref.accuracy(plan, idx, np.array([1, 0])) == 0.0
    # A class with no ImageNet class under it scores 0 everywhere: it never wins.
    plan3 = {"classes": [*plan["classes"], {"concept": {"wnid": idea}}]}
    assert ref.per_model(plan3, np.arange(3), np.array([2, 2, 2])) == {"efficientnet_lite0@1": 0.0}


def test_supervised_recipes_name_their_network():
    from mllgraph.errors import InvalidArgument
    from mllgraph.eval.supervised import SupervisedRecipe

    assert SupervisedRecipe().arch == "mlp" and SupervisedRecipe().epoch_count == 10
    assert "MLP" in SupervisedRecipe().describe() and "60,000" in SupervisedRecipe().describe()
    assert "CNN" in SupervisedRecipe("cnn").describe()
    assert SupervisedRecipe("cnn", epochs=1).epoch_count == 1
    with pytest.raises(InvalidArgument, match="'resnet' is unknown"):
        SupervisedRecipe("resnet")


def test_the_supervised_networks_initial_weights_come_from_its_seed_alone():
    """Whatever the process drew before, a recipe's network starts from the same weights (the
    demo trains the reference after other models), and drawing them leaves the process's
    random numbers where they were."""
    import torch

    from mllgraph.eval.supervised import SupervisedRecipe, initial_network

    first = initial_network(SupervisedRecipe()).state_dict()
    torch.rand(1000)  # other work in between
    state = torch.random.get_rng_state()
    again = initial_network(SupervisedRecipe()).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = initial_network(SupervisedRecipe(seed=1)).state_dict()
    assert not torch.equal(first["1.weight"], other["1.weight"])
