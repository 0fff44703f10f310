"""Labelling as Ray tasks (MLLGRAPH_EXECUTOR=ray) on a local Ray of 2 CPUs: the same labels as
in-process, a worker killed mid-task is retried and the catalogue ends consistent, and a task
that fails for good writes nothing.

Two tiny 2-head experts (random weights, saved once, so every run sees the same model) over
two small probe sets; everything carries a unique `raytest-<hex>` prefix and is removed
afterwards. Ray is started once for the module and shut down at its end.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mllgraph.errors import InvalidArgument, NotFound, Unavailable
from mllgraph.hub import executor, probe_outputs, probes, registry
from mllgraph.hub import loading as experts
from mllgraph.hubs.fashion import experts as fashion_experts
from mllgraph.label import ray_exec, work
from mllgraph.label import run as labeller
from mllgraph.settings import Settings

pytestmark = [pytest.mark.neo4j, pytest.mark.ray]

SANDAL, GYM_SHOE = "n04133789", "n03472535"
PREFIX = f"raytest-{uuid.uuid4().hex[:8]}"
OPTIONS = work.LabelOptions(samples_per_concept=40)


@pytest.fixture(scope="module")
def probe_sets(sdag_graph, neo4j_settings) -> Iterator[list[probes.ProbeSet]]:
    rng = np.random.default_rng(2)
    made = []
    try:
        for wnid in (SANDAL, GYM_SHOE):
            ps, _ = probes.add_probe_set(
                sdag_graph,
                neo4j_settings,
                concept=wnid,
                images=rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8),
                set_id=f"{PREFIX}-{wnid}",
                source="tests/test_ray_labelling.py",
            )
            made.append(ps)
        yield made
    finally:
        for ps in made:
            probes.remove_probe_set(sdag_graph, ps.id)


def _register(graph, settings: Settings, tmp: Path, name: str, seed: int) -> str:
    torch.manual_seed(seed)
    path = experts.save_weights(experts.build_timm("test_efficientnet", 2, 1), tmp / f"{name}.st")
    return registry.register_model(
        graph,
        settings,
        registry.Registration(
            name=name,
            arch="test_efficientnet",
            weights_bytes=path.read_bytes(),
            wnids=[SANDAL, GYM_SHOE],
            input_spec=fashion_experts.FASHION_INPUT_SPEC,
        ),
    ).record["id"]


@pytest.fixture(scope="module")
def models(sdag_graph, neo4j_settings, probe_sets, tmp_path_factory) -> Iterator[list[str]]:
    tmp = tmp_path_factory.mktemp("ray-experts")
    ids: list[str] = []
    try:
        for i in range(2):
            ids.append(_register(sdag_graph, neo4j_settings, tmp, f"{PREFIX}-{i}", seed=i))
        yield ids
    finally:
        for mid in ids:
            with contextlib.suppress(NotFound):
                registry.delete_model(sdag_graph, neo4j_settings, mid)


@pytest.fixture(scope="module")
def ray_settings(neo4j_settings) -> Iterator[Settings]:
    settings = replace(neo4j_settings, executor="ray", ray_address=None, device="cpu")
    with executor.session(settings, num_cpus=2):
        yield settings


def _edges(graph, mid: str) -> list[dict[str, Any]]:
    return graph.run_user_query(
        "MATCH (:Model {id: $id})-[:HAS_HEAD]->(h:Head)-[l:LABELED]->(c:Concept) "
        "RETURN h.index AS head, c.wnid AS wnid, l.method AS method, l.n_probe AS n_probe, "
        "l.score AS score, l.precision AS precision, l.recall AS recall, "
        "l.mean_prob AS mean_prob, l.group_heads AS group_heads "
        "ORDER BY head, wnid, method",
        {"id": mid},
    )


def _state(graph, settings: Settings, mid: str) -> dict[str, Any]:
    """A model's catalogue state: its edges, graph temperature and stored probe outputs."""
    outputs, file_temperature = probe_outputs.load_probe_outputs(settings, mid)
    return {
        "edges": _edges(graph, mid),
        "temperature": registry.get_model(graph, mid)["temperature"],
        "file_temperature": file_temperature,
        "outputs": outputs,
    }


def _assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    exact = ("head", "wnid", "method", "n_probe", "group_heads")
    assert [{k: e[k] for k in exact} for e in got["edges"]] == [
        {k: e[k] for k in exact} for e in want["edges"]
    ]
    for g, w in zip(got["edges"], want["edges"], strict=True):
        for k in ("score", "precision", "recall", "mean_prob"):
            assert g[k] == pytest.approx(w[k], rel=1e-4, abs=1e-6), (k, g, w)
    assert got["temperature"] == pytest.approx(want["temperature"], rel=1e-4)
    # The file and the graph agree: one outcome, written together.
    assert got["file_temperature"] == pytest.approx(got["temperature"], rel=1e-6)
    assert sorted(got["outputs"]) == sorted(want["outputs"])
    for s, arr in want["outputs"].items():
        np.testing.assert_allclose(got["outputs"][s], arr, rtol=2e-3, atol=2e-3)


def _leftovers(settings: Settings, mid: str) -> list[str]:
    folder = registry.model_dir(settings, mid)
    return sorted(p.name for p in folder.glob("*.part*")) if folder.is_dir() else []


@pytest.fixture(scope="module")
def in_process(sdag_graph, neo4j_settings, models) -> dict[str, dict[str, Any]]:
    """Both models labelled in this process: the reference state."""
    local = replace(neo4j_settings, executor="local", device="cpu")
    results = labeller.label_models(sdag_graph, local, models, OPTIONS)
    assert [r.model_id for r in results] == models
    states = {mid: _state(sdag_graph, local, mid) for mid in models}
    assert all(s["edges"] for s in states.values())
    return states


def test_ray_labels_equal_in_process(sdag_graph, ray_settings, models, in_process) -> None:
    version = registry.catalogue_version(sdag_graph)
    done: list[str] = []
    results = labeller.label_models(
        sdag_graph, ray_settings, models, OPTIONS, on_done=lambda r: done.append(r.model_id)
    )
    assert [r.model_id for r in results] == models and sorted(done) == sorted(models)
    assert all(r.images == 80 and r.concepts == 2 for r in results)
    assert registry.catalogue_version(sdag_graph) >= version + 2
    for mid in models:
        _assert_same(_state(sdag_graph, ray_settings, mid), in_process[mid])
        assert _leftovers(ray_settings, mid) == []


def test_killed_worker_is_retried_and_catalogue_consistent(
    sdag_graph, ray_settings, models, in_process, tmp_path
) -> None:
    marker = str(tmp_path / "killed-once")

    def dies_once(settings: Settings, job: work.LabelWork, *, device: str):
        outcome = work.compute(settings, job, device=device)
        try:  # the first attempt to get here dies, its work computed but not returned
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return outcome
        os._exit(1)

    results = ray_exec.label_models(sdag_graph, ray_settings, models, OPTIONS, compute=dies_once)
    assert Path(marker).is_file()  # a worker did die mid-task
    assert [r.model_id for r in results] == models
    for mid in models:
        _assert_same(_state(sdag_graph, ray_settings, mid), in_process[mid])
        assert _leftovers(ray_settings, mid) == []


def test_task_failing_for_good_writes_nothing(
    sdag_graph, ray_settings, probe_sets, tmp_path
) -> None:
    mid = _register(sdag_graph, ray_settings, tmp_path, f"{PREFIX}-doomed", seed=7)
    try:

        def always_dies(settings: Settings, work: work.LabelWork, *, device: str):
            work.compute(settings, work, device=device)
            os._exit(1)

        version = registry.catalogue_version(sdag_graph)
        with pytest.raises(Unavailable, match=f"labelling {mid} on Ray failed"):
            ray_exec.label_models(
                sdag_graph, ray_settings, [mid], OPTIONS, compute=always_dies, max_retries=0
            )
        assert not registry.get_model(sdag_graph, mid).get("labelled_at")
        assert _edges(sdag_graph, mid) == []
        assert not probe_outputs.probe_outputs_path(ray_settings, mid).exists()
        assert not probe_outputs.probe_index_path(ray_settings, mid).exists()
        assert _leftovers(ray_settings, mid) == []
        assert registry.catalogue_version(sdag_graph) == version
    finally:
        with contextlib.suppress(NotFound):
            registry.delete_model(sdag_graph, ray_settings, mid)


def test_unknown_executor_is_refused(sdag_graph, neo4j_settings, models) -> None:
    bogus = replace(neo4j_settings, executor="spark")
    with pytest.raises(InvalidArgument, match="MLLGRAPH_EXECUTOR='spark'"):
        labeller.label_model(sdag_graph, bogus, models[0])


def test_executor_settings_from_env(monkeypatch) -> None:
    monkeypatch.setenv("MLLGRAPH_EXECUTOR", "Ray")
    monkeypatch.delenv("MLLGRAPH_RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    s = Settings.from_env()
    assert s.executor == "ray" and s.ray_address == "ray://head:10001"
    monkeypatch.setenv("MLLGRAPH_RAY_ADDRESS", "10.0.0.5:6379")
    assert Settings.from_env().ray_address == "10.0.0.5:6379"
    monkeypatch.delenv("MLLGRAPH_EXECUTOR")
    assert Settings.from_env().executor == "local"


def test_empty_batch_starts_no_ray(monkeypatch) -> None:
    def no_start(*_a: Any, **_k: Any) -> bool:
        raise AssertionError("Ray started for nothing")

    monkeypatch.setattr(ray_exec, "start", no_start)
    settings = replace(Settings(), executor="ray")
    assert labeller.label_models(None, settings, [], OPTIONS) == []  # type: ignore[arg-type]


def test_cli_labels_models_through_ray(sdag_graph, ray_settings, models, in_process) -> None:
    """The documented `mllgraph models label A B --executor ray` gives the in-process state."""
    from mllgraph import cli

    argv = ["models", "label", *models, "--executor", "ray", "--samples-per-concept", "40"]
    assert cli.main(argv, settings=replace(ray_settings, executor="local")) == 0
    for mid in models:
        _assert_same(_state(sdag_graph, ray_settings, mid), in_process[mid])
        assert _leftovers(ray_settings, mid) == []


def test_evaluation_forward_passes_on_ray_equal_in_process(sdag_graph, ray_settings, models):
    """MLLGRAPH_EXECUTOR=ray: the evaluation's per-model forward passes run as one Ray task per
    model (LogitCache.prefetch) and give the logits this process computes."""
    from mllgraph.eval import evaluate as ev

    rng = np.random.default_rng(5)
    images = ev.EvalImages(rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), np.zeros(6, int))
    on_ray = ev.LogitCache(sdag_graph, ray_settings, images)
    on_ray.prefetch(models)
    here = ev.LogitCache(sdag_graph, replace(ray_settings, executor="local"), images)
    for mid in models:
        assert on_ray(mid).shape == (6, 2)
        np.testing.assert_allclose(on_ray(mid), here(mid), rtol=1e-4, atol=1e-5)
