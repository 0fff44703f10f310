"""SelectionService over gRPC and `mllgraph.select.run`, on a real Neo4j with a tiny hub built here.

The hub: three tiny timm experts trained for a few steps on synthetic 28x28 patterns, one
pattern per concept (clog, moccasin, tote bag, kilt: concepts nothing else in a dev database
is labelled on), registered by wnid, with a 24-image probe set per concept, labelled with
`labeller.label_model`. Everything is created under a per-run prefix and removed afterwards
(models with their blobs and probe outputs, probe sets, the Plan nodes the tests stored).

"No labelled models" (FAILED_PRECONDITION) needs a catalogue without any, which the shared
dev database is not: that test runs a second SelectionService against a throwaway, empty
project-managed Neo4j (`neo4j_server.scratch_settings`, ~12 s to start), started in the background
while the hub is built so it costs little wall time. It skips where no local Neo4j jars are
at hand (a NEO4J_URI / testcontainers run without them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mllgraph.errors import FailedPrecondition, InvalidArgument, NotFound
from mllgraph.hub import loading, probes, registry
from mllgraph.hubs.fashion import experts as fashion_experts
from mllgraph.label import run as labeller
from mllgraph.label import work as label_work
from mllgraph.plan import document as plan_doc
from mllgraph.plan import request as plan_request
from mllgraph.select import run as select
from mllgraph.settings import Settings
from mllgraph.v1 import selection_pb2, selection_pb2_grpc

pytestmark = pytest.mark.neo4j

CLOG, MOCCASIN, TOTE, KILT = "n03047553", "n03776877", "n02970408", "n03617312"
HANDBAG = "n02774152"  # bag.n.04: no probe images; related heads labelled on the tote bag
DEMOCRACY = "n06217103"  # no probe images, no labelled heads: always uncovered
NAMES = {CLOG: "clog", MOCCASIN: "moccasin", TOTE: "tote bag", KILT: "kilt"}
LEMMAS = {CLOG: "clog", MOCCASIN: "moccasin", TOTE: "carryall", KILT: "kilt"}  # first lemmas
PATTERN = {CLOG: 0, MOCCASIN: 1, TOTE: 2, KILT: 3}
PROBES_PER_CONCEPT = 24
ARCH = "test_efficientnet"
BACKGROUND = "n05933834"  # background.n.02: every expert's last head, "none of mine"
# name suffix -> the concepts of its heads, in logit order (plus the background head)
EXPERTS = {"a": [CLOG, MOCCASIN], "b": [TOTE, KILT], "c": [KILT, CLOG]}


def pattern_images(kind: int, n: int, seed: int) -> np.ndarray:
    """n noisy 28x28 images of one of four patterns (stripes -, stripes |, checks, disc)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    base = [
        (yy // 3) % 2 == 0,
        (xx // 3) % 2 == 0,
        ((yy // 5) + (xx // 5)) % 2 == 0,
        (yy - 13.5) ** 2 + (xx - 13.5) ** 2 < 80,
    ][kind].astype(np.float32)
    out = np.empty((n, 28, 28), dtype=np.uint8)
    for i in range(n):
        img = np.roll(base, (rng.integers(-2, 3), rng.integers(-2, 3)), axis=(0, 1))
        img = 200 * img + 25 + rng.normal(0, 20, img.shape)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


# --- the scratch (empty) Neo4j for FAILED_PRECONDITION ------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ScratchNeo4j:
    """An empty project-managed Neo4j, started in a background thread."""

    def __init__(self, settings: Settings) -> None:
        from mllgraph.graph import neo4j_server

        self.error: BaseException | None = None
        self.settings: Settings | None = None
        self.home = Path(tempfile.mkdtemp(prefix="mllgraph-selection-test-"))
        main = Settings.from_env()
        if not neo4j_server.paths(main).fetched_marker.exists():
            self.error = RuntimeError("no fetched Neo4j jars for a scratch server")
            self._thread = None
            return
        self.settings = neo4j_server.scratch_settings(main, self.home, _free_port())
        self._thread = threading.Thread(target=self._start, daemon=True)
        self._thread.start()

    def _start(self) -> None:
        from mllgraph.graph import neo4j_server

        try:
            neo4j_server.start(self.settings)  # type: ignore[arg-type]
        except BaseException as e:  # noqa: BLE001 - reported by the test that needs it
            self.error = e

    def wait(self) -> Settings:
        if self._thread is not None:
            self._thread.join(timeout=180)
        if self.error is not None or self.settings is None:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"CI=true and no scratch Neo4j: {self.error}")
            pytest.skip(f"no scratch Neo4j: {self.error}")
        return self.settings

    def stop(self) -> None:
        """Kill the throwaway server (its data is deleted anyway) and remove its folder."""
        from mllgraph.graph import neo4j_server

        if self._thread is not None:
            self._thread.join(timeout=180)
        pid = neo4j_server.running_pid(self.settings) if self.settings else None
        if pid is not None:
            os.kill(pid, signal.SIGKILL)  # the JVM this process started, by its pid
            try:
                os.waitpid(pid, 0)  # our child: reap it
            except ChildProcessError:
                deadline = time.monotonic() + 10
                while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
        shutil.rmtree(self.home, ignore_errors=True)


# --- the hub -----------------------------------------------------------------------------------


@dataclass
class Hub:
    settings: Settings
    graph: Any
    resolver: Any
    prefix: str
    models: dict[str, str] = field(default_factory=dict)  # suffix -> model id
    probe_sets: list[str] = field(default_factory=list)
    plan_ids: set[str] = field(default_factory=set)
    scratch: ScratchNeo4j | None = None

    def heads_of(self, mid: str) -> list[str]:
        suffix = next(k for k, v in self.models.items() if v == mid)
        return [*EXPERTS[suffix], BACKGROUND]


def _training_set(wnids: list[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """48 images per head concept, and for the background head the other patterns and noise."""
    n = 48
    others = [w for w in PATTERN if w not in wnids]
    parts = [pattern_images(PATTERN[w], n, seed=seed + j) for j, w in enumerate(wnids)]
    parts += [pattern_images(PATTERN[w], n // 2, seed=seed + 10 + j) for j, w in enumerate(others)]
    rng = np.random.default_rng(seed)
    parts.append(rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
    labels = [np.full(n, i) for i in range(len(wnids))]
    labels.append(np.full(sum(p.shape[0] for p in parts[len(wnids) :]), len(wnids)))
    return np.concatenate(parts), np.concatenate(labels)


def _build(hub: Hub, tmp: Path) -> None:
    settings, graph = hub.settings, hub.graph
    for wnid in (CLOG, MOCCASIN, TOTE, KILT):
        ps, _ = probes.add_probe_set(
            graph,
            settings,
            concept=wnid,
            images=pattern_images(PATTERN[wnid], PROBES_PER_CONCEPT, seed=PATTERN[wnid]),
            set_id=f"{hub.prefix}-{wnid}",
            source="tests/test_selection.py synthetic patterns",
        )
        hub.probe_sets.append(ps.id)
    for i, (suffix, wnids) in enumerate(EXPERTS.items()):
        x, y = _training_set(wnids, seed=100 * (i + 1))
        heads = [*wnids, BACKGROUND]
        model = fashion_experts.train_expert(
            ARCH, list(range(len(heads))), x, y, epochs=2, seed=i, batch_size=32
        )
        path = loading.save_weights(model, tmp / f"{suffix}.safetensors")
        reg = registry.Registration(
            name=f"{hub.prefix}-{suffix}",
            arch=ARCH,
            weights_path=path,
            wnids=heads,
            input_spec=fashion_experts.FASHION_INPUT_SPEC,
        )
        mid = registry.register_model(graph, settings, reg).record["id"]
        hub.models[suffix] = mid
        # top_k: the shared database's other probe sets must not crowd our concepts out
        options = label_work.LabelOptions(samples_per_concept=30, top_k=100)
        labeller.label_model(graph, settings, mid, options, device="cpu")


def _cleanup(hub: Hub) -> None:
    for mid in hub.models.values():
        with contextlib.suppress(NotFound):
            registry.delete_model(hub.graph, hub.settings, mid)
    for set_id in hub.probe_sets:
        with contextlib.suppress(NotFound):
            probes.remove_probe_set(hub.graph, set_id, hub.settings)
    if hub.plan_ids:
        hub.graph.driver.execute_query(
            "MATCH (p:Plan) WHERE p.id IN $ids DETACH DELETE p",
            ids=sorted(hub.plan_ids),
            database_=hub.graph.database,
        )
    left = hub.graph.run_user_query(
        "OPTIONAL MATCH (m:Model) WHERE m.id STARTS WITH $prefix WITH count(m) AS models "
        "OPTIONAL MATCH (p:ProbeSet) WHERE p.id STARTS WITH $prefix WITH models, count(p) AS sets "
        "OPTIONAL MATCH (x:Plan) WHERE x.id IN $ids RETURN models, sets, count(x) AS plans",
        {"prefix": hub.prefix, "ids": sorted(hub.plan_ids)},
    )[0]
    assert left == {"models": 0, "sets": 0, "plans": 0}, left
    for mid in hub.models.values():
        assert not registry.model_dir(hub.settings, mid).exists()


@pytest.fixture(scope="module")
def hub(neo4j_settings: Settings, sdag_graph: Any) -> Iterator[Hub]:
    from mllgraph.ground.resolve import default_resolver

    settings = neo4j_settings
    scratch = ScratchNeo4j(settings) if settings.uses_local_neo4j else None
    resolver = default_resolver(settings)
    hub = Hub(settings, sdag_graph, resolver, f"tsel-{uuid.uuid4().hex[:8]}", scratch=scratch)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            _build(hub, Path(tmp))
            yield hub
        finally:
            _cleanup(hub)
            if scratch is not None:
                scratch.stop()


@pytest.fixture(scope="module")
def stub(hub: Hub) -> Iterator[selection_pb2_grpc.SelectionServiceStub]:
    from services.selection import BackgroundServer

    server = BackgroundServer(hub.settings, resolver=hub.resolver)
    channel = grpc.insecure_channel(server.address)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service="mllgraph.v1.SelectionService"))
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        yield selection_pb2_grpc.SelectionServiceStub(channel)
    finally:
        channel.close()
        server.close()


def _select(hub: Hub, stub: Any, classes: list[Any], **kw: Any) -> selection_pb2.Plan:
    request = selection_pb2.SelectHeadsRequest(
        classes=[
            c if isinstance(c, selection_pb2.TaskClass) else selection_pb2.TaskClass(name=c)
            for c in classes
        ],
        **kw,
    )
    plan = stub.SelectHeads(request, timeout=60)
    hub.plan_ids.add(plan.plan_id)
    return plan


def _error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


TASK = ["clog", "moccasin", "tote bag", "kilt"]


# --- the happy path ---------------------------------------------------------------------------


def test_select_covers_classes_with_the_right_heads(hub: Hub, stub: Any) -> None:
    plan = _select(hub, stub, TASK)
    assert [c.concept.wnid for c in plan.classes] == [CLOG, MOCCASIN, TOTE, KILT]
    assert [c.name for c in plan.classes] == TASK
    assert plan.budget == 5  # budget 0 -> the server default
    assert plan.solver in (selection_pb2.SOLVER_EXACT, selection_pb2.SOLVER_HEURISTIC)
    assert set(plan.model_ids) <= set(hub.models.values())
    assert 0 < int(plan.catalogue_version) <= registry.catalogue_version(hub.graph)
    assert plan.created_at.seconds > 0
    for c in plan.classes:
        assert c.concept.name == LEMMAS[c.concept.wnid] and c.concept.definition
        assert not c.grounding.pinned
        # every class is covered exactly, by heads measured on its concept, of plan models
        assert c.coverage == selection_pb2.COVERAGE_EXACT and c.heads
        for h in c.heads:
            assert h.model_id in plan.model_ids and h.label_wnid == c.concept.wnid
            assert 0 < h.label_score <= 1 and h.model_version == "1"
            assert h.head_label in ("clog", "moccasin", "carryall", "kilt", "background")
    # the experts trained on each concept cover it (a background head may help, never all)
    declared = [
        any(hub.heads_of(h.model_id)[h.head_index] == c.concept.wnid for h in c.heads)
        for c in plan.classes
    ]
    assert sum(declared) >= 3, declared
    assert 0.95 <= plan.estimated_accuracy <= 1.0
    doc = json.loads(plan.combination_json)
    assert doc["plan_id"] == plan.plan_id and doc["schema_version"] == 1
    rule = plan_doc.combination_of(doc)  # what inference rebuilds the combination from
    assert rule.models == list(plan.model_ids)


def test_same_request_same_plan_and_get_plan_round_trips(hub: Hub, stub: Any) -> None:
    before = registry.catalogue_version(hub.graph)
    first = _select(hub, stub, TASK)
    second = _select(hub, stub, TASK)
    if registry.catalogue_version(hub.graph) != before:
        pytest.skip("someone changed the shared catalogue during the test")
    assert second.plan_id == first.plan_id
    assert second == first
    assert stub.GetPlan(selection_pb2.GetPlanRequest(plan_id=first.plan_id)) == first
    other = _select(hub, stub, TASK, budget=2)
    assert other.plan_id != first.plan_id and other.budget == 2


def test_explain_lists_chosen_alternatives_and_reasons(hub: Hub, stub: Any) -> None:
    democracy = selection_pb2.TaskClass(name="democracy", pinned_wnid=DEMOCRACY)
    plan = _select(hub, stub, [*TASK, democracy])
    uncovered = plan.classes[4]
    assert uncovered.concept.wnid == DEMOCRACY
    assert uncovered.coverage == selection_pb2.COVERAGE_UNCOVERED and not uncovered.heads
    assert uncovered.estimated_accuracy == 0.0  # no probe images: not estimated
    ex = stub.ExplainSelection(selection_pb2.ExplainSelectionRequest(plan_id=plan.plan_id))
    assert ex.plan_id == plan.plan_id and len(ex.classes) == 5 and ex.notes
    assert any("no candidate" in r for r in ex.classes[4].reasons)
    assert any("not estimated" in r for r in ex.classes[4].reasons)
    assert json.loads(plan.combination_json)["classes"][4]["uncovered_why"] == "no head"
    assert uncovered.uncovered_reason == selection_pb2.UNCOVERED_REASON_NO_HEAD
    assert {c.uncovered_reason for c in plan.classes[:4]} == {
        selection_pb2.UNCOVERED_REASON_UNSPECIFIED
    }
    alternatives = [a for c in ex.classes for a in c.alternatives]
    assert alternatives, "each covered concept has a head in two models: one is an alternative"
    for c, pc in zip(ex.classes, plan.classes, strict=True):
        assert c.name == pc.name and c.coverage == pc.coverage
        assert [x.head for x in c.chosen] == list(pc.heads)
        assert c.reasons and ("grounded" in c.reasons[0] or "pinned" in c.reasons[0])
        for a in c.alternatives:
            assert a.head.model_id in hub.models.values()
            assert a.head.label_wnid == pc.concept.wnid == a.via_concept.wnid
            assert a.reason and "if used" in a.reason
            assert (a.head.model_id, a.head.head_index) not in {
                (h.model_id, h.head_index) for h in pc.heads
            }


def test_budget_one_uses_one_model(hub: Hub, stub: Any) -> None:
    free = _select(hub, stub, TASK)
    assert len(free.model_ids) >= 2  # no single expert knows all four concepts
    plan = _select(hub, stub, TASK, budget=1)
    assert len(plan.model_ids) == 1 and plan.budget == 1
    assert {h.model_id for c in plan.classes for h in c.heads} == set(plan.model_ids)
    assert plan.estimated_accuracy < free.estimated_accuracy
    ex = stub.ExplainSelection(selection_pb2.ExplainSelectionRequest(plan_id=plan.plan_id))
    reasons = [a.reason for c in ex.classes for a in c.alternatives] + [
        r for c in ex.classes for r in c.reasons
    ]
    assert any("budget of 1" in r for r in reasons)
    # The hub has heads for every class: any left out was "not chosen", none has "no head".
    for c, pc in zip(json.loads(plan.combination_json)["classes"], plan.classes, strict=True):
        left = c["coverage"] == "uncovered"
        assert c.get("uncovered_why") == ("not chosen" if left else None)
        assert pc.uncovered_reason == (
            selection_pb2.UNCOVERED_REASON_NOT_CHOSEN
            if left
            else selection_pb2.UNCOVERED_REASON_UNSPECIFIED
        )


def test_pinned_classes_and_options(hub: Hub, stub: Any) -> None:
    classes = [selection_pb2.TaskClass(name=f"thing {w}", pinned_wnid=w) for w in NAMES]
    plan = _select(
        hub,
        stub,
        classes,
        options=selection_pb2.SelectOptions(
            solver=selection_pb2.SOLVER_HEURISTIC, min_label_score=0.06, fit_params=True
        ),
    )
    assert [c.concept.wnid for c in plan.classes] == list(NAMES)
    assert all(c.grounding.pinned and c.grounding.score == 1.0 for c in plan.classes)
    assert plan.solver == selection_pb2.SOLVER_HEURISTIC
    assert plan.options.min_label_score == pytest.approx(0.06)
    # Unset optional flags take the library's defaults (as the client and the CLI).
    assert plan.options.fit_params and plan.options.allow_ancestor


def test_option_flags_unset_take_the_librarys_defaults_and_false_is_kept() -> None:
    from services.selection import request_to_task

    def options(**kw: Any) -> plan_request.SelectOptions:
        request = selection_pb2.SelectHeadsRequest(
            classes=[selection_pb2.TaskClass(name=n) for n in ("kilt", "clog")],
            options=selection_pb2.SelectOptions(**kw),
        )
        return request_to_task(request)[1]

    default = plan_request.SelectOptions()
    unset = options()
    assert (unset.allow_ancestor, unset.fit_params) == (default.allow_ancestor, default.fit_params)
    assert (unset.allow_ancestor, unset.fit_params) == (True, True)
    off = options(allow_ancestor=False, fit_params=False)
    assert (off.allow_ancestor, off.fit_params) == (False, False)


# --- bad input -------------------------------------------------------------------------------

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("classes", "budget", "code", "needle"),
    [
        ([], 0, INVALID, "no classes"),
        (["kilt"], 0, INVALID, "at least two"),
        (["kilt", "kilts"], 0, INVALID, "'kilts'"),
        ([f"class {i}" for i in range(1001)], 0, INVALID, "1001"),
        (TASK, -1, INVALID, "budget"),
        (["kilt", "clo\x00g"], 0, INVALID, "control characters"),
        (["kilt", "tote\nbag"], 0, INVALID, "control characters"),
        (["kilt", ""], 0, INVALID, "empty"),
    ],
)
def test_bad_requests(
    hub: Hub, stub: Any, classes: list[str], budget: int, code: grpc.StatusCode, needle: str
) -> None:
    err = _error(lambda: _select(hub, stub, classes, budget=budget))
    assert err.code() == code, err.details()
    assert needle in err.details()
    if needle == "'kilts'":
        assert "'kilt'" in err.details()  # the message names both classes


def test_unknown_pinned_wnid_is_not_found(hub: Hub, stub: Any) -> None:
    classes = [selection_pb2.TaskClass(name="kilt"), selection_pb2.TaskClass(name="x",
               pinned_wnid="n99999999")]  # fmt: skip
    err = _error(lambda: _select(hub, stub, classes))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "n99999999" in err.details()


def test_sub_hub_naming_an_unknown_model_is_not_found(hub: Hub, stub: Any) -> None:
    """Not an all-uncovered plan: the unknown id is named (issue #12)."""
    known = sorted(hub.models.values())[0]
    options = selection_pb2.SelectOptions(models=[known, "no-such-model@1"])
    err = _error(lambda: _select(hub, stub, TASK, options=options))
    assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
    assert "no-such-model@1" in err.details() and known not in err.details()
    plan = _select(hub, stub, TASK, options=selection_pb2.SelectOptions(models=[known]))
    assert set(plan.model_ids) <= {known}


def test_unsupported_options_are_refused(hub: Hub, stub: Any) -> None:
    for opts in (
        selection_pb2.SelectOptions(max_heads_per_class=2),
        selection_pb2.SelectOptions(time_limit_seconds=1.0),
        selection_pb2.SelectOptions(min_label_score=1.5),
        selection_pb2.SelectOptions(solver=42),
    ):
        err = _error(lambda o=opts: _select(hub, stub, TASK, options=o))
        assert err.code() == INVALID, err.details()


@pytest.mark.parametrize(
    "name",
    [
        'Robert"); MATCH (n) DETACH DELETE n //',
        "O'Brien's `kilt`",
        "}) RETURN 1 UNION MATCH (m:Model) RETURN m.id AS model //",
        "$targets",
    ],
)
def test_quotes_and_cypher_in_names_are_just_text(hub: Hub, stub: Any, name: str) -> None:
    try:
        plan = _select(hub, stub, ["kilt", name])
    except grpc.RpcError as err:
        assert err.code() == INVALID, err.details()
    else:
        assert plan.classes[1].name == name
    # nothing was run as Cypher: the hub is intact
    for mid in hub.models.values():
        assert registry.get_model(hub.graph, mid)["labelled_at"]


def test_plan_lookups(hub: Hub, stub: Any) -> None:
    for call in (stub.GetPlan, stub.ExplainSelection):
        request_type = (
            selection_pb2.GetPlanRequest
            if call is stub.GetPlan
            else selection_pb2.ExplainSelectionRequest
        )
        err = _error(lambda c=call, r=request_type: c(r(plan_id="plan-doesnotexist")))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        err = _error(lambda c=call, r=request_type: c(r(plan_id="")))
        assert err.code() == INVALID


def test_library_select_matches_the_service(hub: Hub, stub: Any) -> None:
    plan = _select(hub, stub, TASK)
    classes = [plan_request.TaskClass(n) for n in TASK]
    options = plan_request.SelectOptions(allow_ancestor=False, fit_params=False)
    ctx = select.select(hub.graph, hub.settings, classes, options, hub.resolver, store=False)
    assert ctx.plan["models"] == list(plan.model_ids)
    assert ctx.problem is not None and ctx.problem.num_classes == 4
    with pytest.raises(InvalidArgument, match="budget"):
        select.select(hub.graph, hub.settings, classes, plan_request.SelectOptions(budget=0), None)


def test_a_task_worded_and_ordered_otherwise_reuses_the_stacked_fit(hub: Hub) -> None:
    """The stacked rule's fits are kept by the models and the probe images of each class
    (select.stacked_choice.FITS), not by the wording or order of the classes: the same
    concepts under other names, in another order, find the fits and get the same rule with
    its classes permuted."""
    from mllgraph.select import stacked_choice

    options = plan_request.SelectOptions(solver="exact")
    wnids = [CLOG, MOCCASIN, TOTE, KILT]
    named = [plan_request.TaskClass(NAMES[w]) for w in wnids]
    first = select.select(hub.graph, hub.settings, named, options, hub.resolver, store=False)
    assert [c["concept"]["wnid"] for c in first.plan["classes"]] == wnids
    assert "stacked" in first.plan  # every class has probe images: a rule was fitted
    hits, misses = stacked_choice.FITS.hits, stacked_choice.FITS.misses
    order = [2, 0, 3, 1]
    other = [
        plan_request.TaskClass(f"thing {i}", pinned_wnid=wnids[c]) for i, c in enumerate(order)
    ]
    second = select.select(hub.graph, hub.settings, other, options, hub.resolver, store=False)
    assert stacked_choice.FITS.hits > hits and stacked_choice.FITS.misses == misses
    assert second.plan["stacked"]["cv_accuracy"] == first.plan["stacked"]["cv_accuracy"]
    assert second.plan["models"] == first.plan["models"]
    if first.plan["stacked"]["used"]:
        a, b = first.plan["combination"]["stacked"], second.plan["combination"]["stacked"]
        assert b["coef"] == [a["coef"][c] for c in order]
        assert b["cv_recall"] == [a["cv_recall"][c] for c in order]


# --- a catalogue without labelled models ---------------------------------------------------------


def test_empty_hub_is_failed_precondition(hub: Hub) -> None:
    if hub.scratch is None:
        pytest.skip("needs the project-managed Neo4j to start a scratch server")
    settings = hub.scratch.wait()
    from mllgraph.graph.db import Graph
    from services.selection import BackgroundServer

    classes = [plan_request.TaskClass(n) for n in TASK]
    with Graph(settings) as graph, pytest.raises(FailedPrecondition, match="no labelled models"):
        select.select(graph, settings, classes, plan_request.SelectOptions(), hub.resolver)
    with (
        BackgroundServer(settings, resolver=hub.resolver) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        empty = selection_pb2_grpc.SelectionServiceStub(channel)
        err = _error(lambda: _select(hub, empty, TASK))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no labelled models" in err.details()


def test_the_service_warms_up_on_a_task_of_the_hubs_own(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    """Before it reports SERVING, the service selects once for two of the hub's probed and
    labelled concepts (so Neo4j has planned the queries a request runs), storing nothing;
    a warm-up that fails (here a grounder that breaks on its first task) is only logged:
    the service serves all the same."""
    from services.selection import BackgroundServer

    def plans() -> int:
        return hub.graph.run_user_query("MATCH (p:Plan) RETURN count(p) AS n")[0]["n"]

    covered = hub.graph.run_user_query(
        "MATCH (:ProbeSet)-[:PROBES]->(c:Concept)<-[:LABELED]-(:Head) "
        "RETURN collect(DISTINCT c.wnid) AS wnids"
    )[0]["wnids"]
    before = plans()
    wnids = select.warm_up(hub.graph, hub.settings, hub.resolver)
    assert len(wnids) == 2 and set(wnids) <= set(covered)
    assert plans() == before

    class BreaksOnTasks:  # the real grounder, but its task grounding fails
        def __getattr__(self, name: str) -> Any:
            return getattr(hub.resolver, name)

        def resolve_task(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("grounder broken for this test")

    for resolver, logged in ((hub.resolver, "task=" + ",".join(wnids)), (BreaksOnTasks(), "")):
        caplog.clear()
        with (
            caplog.at_level("INFO"),
            BackgroundServer(hub.settings, resolver=resolver) as server,
            grpc.insecure_channel(server.address) as channel,
        ):
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="mllgraph.v1.SelectionService")
            )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        if logged:
            assert logged in caplog.text
        else:
            assert "selection_warm_task_failed error_type=RuntimeError" in caplog.text
            assert "selection_warm ms=" in caplog.text and "task=-" in caplog.text
    assert plans() == before


def _handbag_clog_kilt(hub: Hub) -> select.SelectionContext:
    """handbag (no probe images), clog and kilt, pinned; default rule parameters, not stored."""
    classes = [
        plan_request.TaskClass("handbag", pinned_wnid=HANDBAG),
        plan_request.TaskClass("clog", pinned_wnid=CLOG),
        plan_request.TaskClass("kilt", pinned_wnid=KILT),
    ]
    options = plan_request.SelectOptions(fit_params=False)
    return select.select(hub.graph, hub.settings, classes, options, hub.resolver, store=False)


def test_class_without_probes_borrows_its_nearest_concepts_probes(hub: Hub) -> None:
    """handbag (bag.n.04) has no probe images; its related candidates were labelled on the
    tote bag, a cousin under container.n.01, so it borrows the tote probes to be simulated."""
    ctx = _handbag_clog_kilt(hub)
    bag = ctx.plan["classes"][0]
    assert bag["coverage"] == "related"
    assert bag["probe_images"] == PROBES_PER_CONCEPT  # the tote bag's probe set
    assert {h["label_wnid"] for h in bag["heads"]} == {TOTE}
    assert bag["estimated_accuracy"] is not None


def test_sub_hub_sees_its_own_heads_before_the_per_kind_limit(hub: Hub) -> None:
    """Experts b and c both have a kilt head. With one candidate per kind, the whole hub's
    top-1 kilt head belongs to one of them; a sub-hub of the other one must still see its own
    kilt head (the filter runs inside the candidates query, before the limit)."""
    classes = [plan_request.TaskClass(n) for n in TASK]
    for suffix in ("b", "c"):
        mid = hub.models[suffix]
        options = plan_request.SelectOptions(per_kind_limit=1, fit_params=False, models=(mid,))
        ctx = select.select(hub.graph, hub.settings, classes, options, hub.resolver, store=False)
        assert {c.group.model_id for c in ctx.candidates} == {mid}
        kilt = next(c for c in ctx.plan["classes"] if c["concept"]["wnid"] == KILT)
        assert kilt["coverage"] == "exact", (suffix, kilt)
        assert [(h["model_id"], h["label_wnid"]) for h in kilt["heads"]] == [(mid, KILT)]


class _CountingGraph:
    """The hub's graph, counting the reads that reach it."""

    def __init__(self, graph: Any) -> None:
        self.graph, self.reads = graph, 0

    def read(self, name: str, **params: Any) -> list[dict[str, Any]]:
        self.reads += 1
        return self.graph.read(name, **params)

    def __getattr__(self, name: str) -> Any:  # writes, schema, the driver: the graph's own
        return getattr(self.graph, name)


def test_a_repeated_request_is_one_read_and_never_a_stale_plan(hub: Hub) -> None:
    """A stored plan is found in one round trip (the plan id at the version last seen, checked
    against the version now); once the catalogue moves on, the old version's plan is not
    served: a plan is made at the new version."""
    from mllgraph.select.cache import CatalogueCache

    counting = _CountingGraph(hub.graph)
    cache = CatalogueCache(1_000)
    classes = [plan_request.TaskClass(name=n) for n in TASK]
    options = plan_request.SelectOptions()

    def run() -> dict[str, Any]:
        ctx = select.select(  # type: ignore[arg-type]
            counting, hub.settings, classes, options, hub.resolver, reads_cache=cache
        )
        hub.plan_ids.add(ctx.plan["plan_id"])
        return ctx.plan

    first = run()
    counting.reads = 0
    assert run() == first and counting.reads == 1
    # Any change to the catalogue moves its version (here: a cost record, unchanged).
    hub.graph.write("hub/model_set_cost", id=first["models"][0], cost={})
    counting.reads = 0
    after = run()
    assert after["catalogue_version"] == registry.catalogue_version(hub.graph)
    assert after["catalogue_version"] > first["catalogue_version"]
    assert after["plan_id"] != first["plan_id"] and counting.reads > 1
    counting.reads = 0
    assert run() == after and counting.reads == 1


def test_own_candidates_merged_per_model_are_the_sub_hubs_query(hub: Hub) -> None:
    """The stacked rule's screen asks for a few models' own candidates, another few per task.
    Read and kept per concept and model, then merged and cut to the per-kind limit, they must
    be exactly the rows the candidates query gives for that sub-hub, in its order; a subset
    of models read before costs no read at all."""
    from dataclasses import replace
    from itertools import combinations

    from mllgraph.select.cache import CatalogueCache
    from mllgraph.select.reads import Reads

    version = registry.catalogue_version(hub.graph)
    counting = _CountingGraph(hub.graph)
    cache = CatalogueCache(10_000)
    cache.at(version)
    cached = Reads(counting, cache, version)  # type: ignore[arg-type]
    direct = Reads(hub.graph, None, version)
    mids = sorted(hub.models.values())
    tasks = [[CLOG, MOCCASIN, KILT], [CLOG, TOTE, KILT], [HANDBAG, CLOG, KILT], [TOTE]]
    kinds: set[str] = set()
    cut = False  # some sub-hub's answer lost rows to the limit
    for limit in (1, 2, 50):
        for allow_ancestor in (True, False):
            options = plan_request.SelectOptions(
                per_kind_limit=limit, allow_ancestor=allow_ancestor
            )
            for wnids in tasks:
                for n in (1, 2, 3):
                    for models in combinations(mids, n):
                        want = direct.candidates(wnids, replace(options, models=models))
                        got = cached.own_candidates(wnids, models, options)
                        assert got == want, (limit, allow_ancestor, wnids, models)
                        kinds |= {r["kind"] for r in want}
                        everyone = direct.candidates(
                            wnids, replace(options, models=models, per_kind_limit=50)
                        )
                        cut |= len(everyone) > len(want)
    assert {"exact", "ancestor", "related"} <= kinds and cut  # the test sees what it tests
    before = counting.reads
    options = plan_request.SelectOptions(per_kind_limit=2)
    cached.own_candidates([CLOG, TOTE, KILT], mids[1:], options)
    assert counting.reads == before  # every (concept, model) pair was read above


@pytest.mark.parametrize("name", ["ancestor_discount", "related_discount"])
@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, float("nan"), True, "0.5"])
def test_a_discount_outside_zero_to_one_is_refused(name: str, bad: Any) -> None:
    with pytest.raises(InvalidArgument, match=name):
        plan_request.SelectOptions(**{name: bad}).validate()


def test_broad_models_are_the_sub_hubs_broadest_labelled_experts(hub: Hub) -> None:
    """select/broad_models (what the stacked rule's screen considers beside the candidates'
    models): labelled models with at least min_heads heads, broadest first, in the sub-hub."""
    from mllgraph.select.reads import Reads

    reads = Reads(hub.graph, None, registry.catalogue_version(hub.graph))
    mids = sorted(hub.models.values())
    sub_hub = plan_request.SelectOptions(models=tuple(mids))
    found = reads.broad_models(3, 10, sub_hub)
    assert sorted(r["model"] for r in found) == mids
    assert all(r["num_heads"] == 3 and r["version"] for r in found)
    assert [r["model"] for r in reads.broad_models(3, 2, sub_hub)] == mids[:2]  # ties: the id
    one = plan_request.SelectOptions(models=(mids[0],))
    assert reads.broad_models(3, 10, one)[0]["model"] == mids[0]
    assert reads.broad_models(4, 10, sub_hub) == []


# --- the cache of graph reads per catalogue version ---------------------------------------------


def _same(ctx: select.SelectionContext) -> dict[str, Any]:
    """A plan document without what differs between two runs (timings, creation time)."""
    return {k: v for k, v in ctx.plan.items() if k not in ("timings_ms", "created_at")}


def _both(hub: Hub, cache: Any, classes: list[Any], options: plan_request.SelectOptions) -> Any:
    """The plan through `cache` and without any cache: they must be equal."""
    cached = select.select(
        hub.graph, hub.settings, classes, options, hub.resolver, store=False, reads_cache=cache
    )
    direct = select.select(
        hub.graph, hub.settings, classes, options, hub.resolver, store=False, reads_cache=None
    )
    assert _same(cached) == _same(direct)
    assert [c.group for c in cached.candidates] == [c.group for c in direct.candidates]
    return cached


def test_cached_and_uncached_plans_are_equal(hub: Hub) -> None:
    from mllgraph.select.cache import CatalogueCache

    cache = CatalogueCache(1000)
    tasks = [
        [plan_request.TaskClass(n) for n in TASK],
        [plan_request.TaskClass(n) for n in ("clog", "moccasin", "kilt")],
        # Overlapping the first two, with other classes blocking other ancestors: a cached
        # concept's ancestor candidates must not leak into a task where they are blocked.
        [plan_request.TaskClass(n) for n in ("clog", "tote bag", "kilt")],
        [
            plan_request.TaskClass("handbag", pinned_wnid=HANDBAG),  # proxy probes, related heads
            plan_request.TaskClass("clog", pinned_wnid=CLOG),
            plan_request.TaskClass("kilt", pinned_wnid=KILT),
        ],
        [
            plan_request.TaskClass("democracy", pinned_wnid=DEMOCRACY),
            plan_request.TaskClass("clog"),
        ],
    ]
    option_sets = [
        plan_request.SelectOptions(fit_params=False),
        plan_request.SelectOptions(allow_ancestor=False, fit_params=False),
        plan_request.SelectOptions(per_kind_limit=1, fit_params=False, models=(hub.models["b"],)),
    ]
    for options in option_sets:
        for classes in tasks:
            _both(hub, cache, classes, options)
    hits = cache.hits
    for options in option_sets:  # every task again: all of it comes from the cache
        for classes in tasks:
            _both(hub, cache, classes, options)
    assert cache.hits > hits
    assert len(cache) > 0


def test_the_next_select_sees_a_registration_labelling_and_deletion(
    hub: Hub, tmp_path: Path
) -> None:
    """Through one cache: a model registered with a head declaring "democracy" (covered by
    nothing measured) becomes its declared candidate, unsimulated; once labelled it is
    simulated on the probe images; once deleted it is gone. Each plan equals the uncached
    one, and each change moved the catalogue version the cache is keyed by."""
    from mllgraph.select.cache import CatalogueCache

    cache = CatalogueCache(1000)
    classes = [
        plan_request.TaskClass("democracy", pinned_wnid=DEMOCRACY),
        plan_request.TaskClass("kilt"),
    ]
    options = plan_request.SelectOptions(fit_params=False)

    def models_of(ctx: select.SelectionContext) -> set[str]:
        return {c.group.model_id for c in ctx.candidates}

    before = _both(hub, cache, classes, options)
    v0 = cache.version
    x = pattern_images(PATTERN[KILT], 48, seed=7)
    noise = np.random.default_rng(7).integers(0, 256, size=(48, 28, 28), dtype=np.uint8)
    model = fashion_experts.train_expert(
        ARCH, [0, 1], np.concatenate([x, noise]), np.repeat([0, 1], 48), epochs=1, seed=7
    )
    reg = registry.Registration(
        name=f"{hub.prefix}-d",
        arch=ARCH,
        weights_path=loading.save_weights(model, tmp_path / "d.safetensors"),
        wnids=[DEMOCRACY, BACKGROUND],
        input_spec=fashion_experts.FASHION_INPUT_SPEC,
    )
    mid = registry.register_model(hub.graph, hub.settings, reg).record["id"]
    hub.models["d"] = mid  # removed by the hub's clean-up if the test fails half-way
    try:
        registered = _both(hub, cache, classes, options)
        assert cache.version != v0
        assert mid not in models_of(before) and mid in models_of(registered)
        assert not registered.problem.logits_by_model[mid].any()  # declared, unsimulated
        v1 = cache.version

        options_l = label_work.LabelOptions(samples_per_concept=30, top_k=100)
        labeller.label_model(hub.graph, hub.settings, mid, options_l, device="cpu")
        labelled = _both(hub, cache, classes, options)
        assert cache.version != v1
        assert mid in models_of(labelled)
        assert labelled.problem.logits_by_model[mid].any()  # simulated on the probe images
        v2 = cache.version
    finally:
        registry.delete_model(hub.graph, hub.settings, mid)
        del hub.models["d"]
    deleted = _both(hub, cache, classes, options)
    assert cache.version != v2
    assert mid not in models_of(deleted)
    assert deleted.plan["models"] == before.plan["models"]
    assert [c["coverage"] for c in deleted.plan["classes"]] == [
        c["coverage"] for c in before.plan["classes"]
    ]


# --- what each estimate rests on (select/evidence, select/estimates) ----------------------------


def test_a_class_without_probes_is_estimated_by_its_route_calibration_not_its_proxy(
    hub: Hub,
) -> None:
    """handbag is covered only through a neighbour (the tote bag's heads, simulated on the
    tote probes). Its estimate is the ancestor-route calibration measured leave-one-concept-
    out on the hub's probed concepts, whatever the proxy images scored."""
    from mllgraph.select import estimates
    from mllgraph.select.probe_data import CACHE
    from mllgraph.select.reads import Reads

    ctx = _handbag_clog_kilt(hub)
    bag, clog = ctx.plan["classes"][0], ctx.plan["classes"][1]
    assert bag["own_probe_images"] == 0 and not bag["measured"]
    evidence = bag["estimate_evidence"]
    assert evidence["kind"] == "ancestor" and "ancestor route" in evidence["text"]
    model = bag["heads"][0]["model_id"]
    reads = Reads(hub.graph, None, registry.catalogue_version(hub.graph))
    routes, pool = estimates.calibrations(reads, hub.settings, CACHE, [model])
    cal = routes[(model, "ancestor")] or pool["ancestor"]
    expected = max(cal.accuracy, 1 / 3) if cal is not None else 1 / 3
    assert bag["estimated_accuracy"] == pytest.approx(expected)
    assert bag["simulated_accuracy"] is not None  # what the proxy images scored, kept aside
    assert clog["estimate_evidence"]["kind"] == "measured"
    assert clog["estimate_evidence"]["images"] == clog["own_probe_images"] == PROBES_PER_CONCEPT
    assert 0.0 < ctx.plan["measured_fraction"] < 1.0


def test_a_model_its_input_domain_sets_aside_does_not_cover(hub: Hub) -> None:
    """Expert a (clog, moccasin) given an input domain of colour noise refuses the gray
    pattern probe images of clog: in a sub-hub of experts a and b (b: tote bag, kilt), its
    heads are then no candidate for clog and the plan says why; without the profile, expert
    a covers clog."""
    from mllgraph.hub import domains

    mid = hub.models["a"]
    classes = [
        plan_request.TaskClass("clog", pinned_wnid=CLOG),
        plan_request.TaskClass("tote bag", pinned_wnid=TOTE),
    ]
    options = plan_request.SelectOptions(fit_params=False, models=(mid, hub.models["b"]))
    before = select.select(hub.graph, hub.settings, classes, options, hub.resolver, store=False)
    assert before.plan["classes"][0]["coverage"] == "exact"
    noise = np.random.default_rng(0).integers(0, 256, size=(80, 28, 28, 3), dtype=np.uint8)
    domains.describe(hub.graph, hub.settings, mid, list(noise), "tests: colour noise")
    try:
        ctx = select.select(hub.graph, hub.settings, classes, options, hub.resolver, store=False)
    finally:
        domains.clear(hub.graph, hub.settings, mid)
    clog, was = ctx.plan["classes"][0], before.plan["classes"][0]
    assert mid in {h["model_id"] for h in was["heads"]}
    assert mid not in {h["model_id"] for h in clog["heads"]}
    assert not [c for c in ctx.candidates if c.class_index == 0 and c.group.model_id == mid]
    aside = [a for a in ctx.plan["domain_set_aside"] if a["class"] == "clog"]
    assert aside and aside[0]["model"] == mid and aside[0]["accepted"] < 0.5
    assert "set aside by its input domain" in aside[0]["why"]
    if clog["coverage"] == "uncovered":  # else expert b covers it (its background head)
        assert "set aside by its input domain" in clog["domain_set_aside"]
    assert clog["estimate_evidence"]["kind"] == "measured"  # on its own probe images


def test_explain_says_what_each_estimate_rests_on(hub: Hub, stub: Any) -> None:
    handbag = selection_pb2.TaskClass(name="handbag", pinned_wnid=HANDBAG)
    options = selection_pb2.SelectOptions(allow_ancestor=True)  # proto bools default off
    plan = _select(hub, stub, ["clog", "kilt", handbag], options=options)
    ex = stub.ExplainSelection(selection_pb2.ExplainSelectionRequest(plan_id=plan.plan_id))
    assert any(f"measured on {PROBES_PER_CONCEPT} probe images" in r for r in ex.classes[0].reasons)
    # calibrated, or "nothing measured of this kind" where no probed concept has a rival
    assert any(r.startswith("Estimated accuracy") and "ancestor route" in r
               for r in ex.classes[2].reasons), list(ex.classes[2].reasons)  # fmt: skip
