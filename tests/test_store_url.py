"""Model and probe stores at a URL (mllgraph.hub.store), on fsspec's in-process `memory://`
file system: what a local store gives, a remote one gives too.

A second "machine" is a second `MLLGRAPH_HOME` on the same URL: its own cache, its own look
at the store's CURRENT. Labelling through Ray is not tried with `memory://`: that file
system lives in one process, so a Ray worker would find it empty (tests/test_ray_labelling.py
covers Ray on a local store; a `file://` URL is that very code path).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest

from mllgraph import paths
from mllgraph.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from mllgraph.hub import loading, probe_outputs, probes, registry, store
from mllgraph.hubs.fashion import experts as fashion_experts
from mllgraph.label import run as labeller
from mllgraph.label import work as label_work
from mllgraph.plan import request as plan_request
from mllgraph.settings import Settings

CLOG, MOCCASIN, KILT = "n03047553", "n03776877", "n03617312"
PATTERN = {CLOG: 0, MOCCASIN: 1, KILT: 2}
ARCH = "test_efficientnet"
PREFIX = f"storetest-{uuid.uuid4().hex[:8]}"


def _memory_url(tag: str) -> str:
    return f"memory://{PREFIX}-{tag}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def stores(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """(model store URL, probe store URL), both in this process's memory file system."""
    urls = (_memory_url("models"), _memory_url("probes"))
    monkeypatch.setenv(paths.MODEL_STORE_VAR, urls[0])
    monkeypatch.setenv(paths.PROBE_STORE_VAR, urls[1])
    yield urls
    memory = fsspec.filesystem("memory")
    for url in urls:
        with contextlib.suppress(FileNotFoundError):
            memory.rm(url.split("://", 1)[1], recursive=True)


def _remote_names(url: str, key: str) -> list[str]:
    return store.Remote("test", url, Path("/nonexistent")).listdir(key)


# --- locations and errors -------------------------------------------------------------------


def test_paths_and_file_urls_are_local_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(home=tmp_path)
    monkeypatch.delenv(paths.MODEL_STORE_VAR, raising=False)
    assert (
        settings.model_store == tmp_path / "models" and settings.probe_store == tmp_path / "probes"
    )
    for value in (str(tmp_path / "elsewhere"), f"file://{tmp_path}/elsewhere"):
        monkeypatch.setenv(paths.MODEL_STORE_VAR, value)
        assert settings.model_store == tmp_path / "elsewhere"
        assert store.model_remote(settings) is None
    url = _memory_url("loc")
    monkeypatch.setenv(paths.MODEL_STORE_VAR, url)
    assert settings.model_store_url == url
    assert settings.model_store == paths.cache_root(tmp_path, url)
    assert settings.model_store.parent == tmp_path / "cache"
    remote = store.model_remote(settings)
    assert remote is not None and remote.cache == settings.model_store
    assert remote.key_of(remote.url_of("blobs/ab/x.pt")) == "blobs/ab/x.pt"
    assert remote.key_of("memory://other/blobs/ab/x.pt") is None


def test_an_unknown_protocol_names_the_variable_and_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(paths.MODEL_STORE_VAR, "nosuchfs://bucket/models")
    settings = Settings(home=tmp_path)
    with pytest.raises(InvalidArgument, match=r"MLLGRAPH_MODEL_STORE='nosuchfs://bucket/models'"):
        _ = settings.model_store
    with pytest.raises(InvalidArgument, match="no protocol 'nosuchfs'"):
        store.model_remote(settings)


def test_a_missing_backend_names_the_package_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("s3fs") is not None:
        pytest.skip("s3fs is installed here")
    monkeypatch.setenv(paths.PROBE_STORE_VAR, "s3://bucket/probes")
    with pytest.raises(
        FailedPrecondition, match=r"MLLGRAPH_PROBE_STORE='s3://bucket/probes'.*pip install s3fs"
    ):
        _ = Settings(home=tmp_path).probe_store


def test_credentials_in_a_store_url_never_reach_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("aiohttp") is not None:
        pytest.skip("aiohttp is installed here")
    monkeypatch.setenv(paths.MODEL_STORE_VAR, "http://alice:hunter22@example.invalid/models")
    with pytest.raises(FailedPrecondition) as info:
        _ = Settings(home=tmp_path).model_store
    message = str(info.value)
    assert "hunter22" not in message and "alice" not in message
    assert "'http://***@example.invalid/models'" in message
    assert "pip install aiohttp" in message  # not fsspec, which is installed


def test_an_unreachable_store_is_one_clear_error_without_credentials(tmp_path: Path) -> None:
    url = "ftp://bob:hunter22@host.invalid/models"
    with pytest.raises(Unavailable, match=r"'ftp://\*\*\*@host.invalid/models': cannot reach") as e:
        paths.filesystem(paths.MODEL_STORE_VAR, url)
    assert "hunter22" not in str(e.value) and "bob" not in str(e.value)


def test_redact_hides_users_passwords_and_query_values() -> None:
    assert paths.redact("s3://bucket/x") == "s3://bucket/x"
    assert paths.redact("http://u:p@h/x?sig=abc&k=1") == "http://***@h/x?sig=***&k=***"
    assert paths.redact("simplecache::sftp://me:pw@h/x") == "simplecache::sftp://***@h/x"


def test_a_file_url_must_name_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(paths.MODEL_STORE_VAR, "file://etc/x")
    with pytest.raises(
        InvalidArgument, match=r"MLLGRAPH_MODEL_STORE='file://etc/x'.*file:///etc/x"
    ):
        _ = Settings(home=tmp_path).model_store
    monkeypatch.setenv(paths.MODEL_STORE_VAR, f"file://localhost{tmp_path}/m")
    assert Settings(home=tmp_path).model_store == tmp_path / "m"


# --- probe outputs: versions and CURRENT ----------------------------------------------------


def test_a_new_version_switches_current_and_old_readers_keep_theirs(
    stores: tuple[str, str], tmp_path: Path
) -> None:
    """A writer on one machine, a reader on another: the reader memory-maps its local copy,
    sees each new version once it looks again, and an array it opened stays readable."""
    writer = Settings(home=tmp_path / "a", store_refresh_s=0)
    reader = Settings(home=tmp_path / "b", store_refresh_s=0)
    mid = "org/versions@1"
    with pytest.raises(FailedPrecondition, match="no probe outputs"):
        probe_outputs.open_probe_outputs(reader, mid)

    def save(k: int) -> None:
        rows = 1 + k % 4  # the shape changes too: a mixed pair would misread rows
        probe_outputs.save_probe_outputs(writer, mid, {"s": np.full((rows, 3), k, np.float32)}, k)

    save(1)
    old = probe_outputs.open_probe_outputs(reader, mid)
    assert old.temperature == 1.0 and (old.get("s") == 1).all()
    assert str(old.data.filename).startswith(str(reader.model_store))  # a local memory map
    for k in range(2, 6):
        save(k)
    new = probe_outputs.open_probe_outputs(reader, mid)
    assert new.temperature == 5.0 and new.get("s").shape == (2, 3) and (new.get("s") == 5).all()
    assert old.get("s").shape == (2, 3) and (old.get("s") == 1).all()  # still readable

    # The store holds CURRENT (naming the reader's version) and at most one older version.
    key = f"{registry.model_key(mid)}/{probe_outputs.OUTPUTS_DIR}"
    names = _remote_names(stores[0], key)
    current = probe_outputs.current_version(reader, mid)
    assert current is not None and probe_outputs.CURRENT in names and current.name in names
    assert len(names) <= 3, names
    remote = store.model_remote(reader)
    assert remote is not None and remote.read(f"{key}/CURRENT") == current.name.encode()
    # Selection's fast index path reads the local copy.
    assert probe_outputs.probe_index_file(str(reader.model_store), mid) == str(
        probe_outputs.probe_index_path(reader, mid)
    )

    # A reader that looked recently keeps its version until store_refresh_s has passed.
    patient = replace(reader, store_refresh_s=3600)
    save(6)
    assert (probe_outputs.open_probe_outputs(patient, mid).get("s") == 5).all()
    assert (probe_outputs.open_probe_outputs(reader, mid).get("s") == 6).all()


def test_a_batched_refresh_mirrors_several_models(stores: tuple[str, str], tmp_path: Path) -> None:
    writer = Settings(home=tmp_path / "a", store_refresh_s=0)
    reader = Settings(home=tmp_path / "b", store_refresh_s=0)
    mids = [f"batch-{i}@1" for i in range(3)]
    for i, mid in enumerate(mids[:2]):
        probe_outputs.save_probe_outputs(writer, mid, {"s": np.full((2, 2), i, np.float32)}, 1.0)
    probe_outputs.refresh_current(reader, mids)
    root = str(reader.model_store)
    for i, mid in enumerate(mids[:2]):
        index = Path(probe_outputs.probe_index_file(root, mid))
        assert index.is_file() and json.loads(index.read_text())["sets"] == {"s": [0, 2]}
        assert (np.load(index.with_name(probe_outputs.PROBE_OUTPUTS)) == i).all()
    assert not Path(probe_outputs.probe_index_file(root, mids[2])).exists()  # never labelled


def test_an_unreachable_store_leaves_readers_their_cached_version(
    stores: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = Settings(home=tmp_path / "a", store_refresh_s=0)
    reader = Settings(home=tmp_path / "b", store_refresh_s=0)
    mid = "unreachable@1"
    probe_outputs.save_probe_outputs(writer, mid, {"s": np.ones((2, 2), np.float32)}, 1.0)
    assert probe_outputs.open_probe_outputs(reader, mid).temperature == 1.0
    probe_outputs.save_probe_outputs(writer, mid, {"s": np.ones((2, 2), np.float32)}, 2.0)
    remote = store.model_remote(reader)
    assert remote is not None

    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("store down")

    with monkeypatch.context() as patch:
        patch.setattr(remote.fs, "cat", down)
        assert probe_outputs.open_probe_outputs(reader, mid).temperature == 1.0  # what it has
    assert probe_outputs.open_probe_outputs(reader, mid).temperature == 2.0  # looked again


# --- weight blobs: removal against a racing registration ------------------------------------


class _Graph:
    """Answers `hub/sha256_in_use` with a fixed count (or raises)."""

    def __init__(self, models: int | Exception) -> None:
        self.models = models

    def read(self, name: str, **params: Any) -> list[dict[str, int]]:
        assert name == "hub/sha256_in_use", name
        if isinstance(self.models, Exception):
            raise self.models
        return [{"models": self.models}]


def test_a_removed_blob_is_put_back_when_a_model_uses_it_again(
    stores: tuple[str, str], tmp_path: Path
) -> None:
    remote = store.model_remote(Settings(home=tmp_path))
    assert remote is not None
    sha = "ab" * 32
    key = registry.blob_key(sha, ".pt")
    remote.write(key, b"weights")
    # A registration elsewhere wrote its Model after the delete counted none: put back.
    assert not registry._remove_remote_blob(_Graph(1), remote, key, sha)  # type: ignore[arg-type]
    assert remote.read(key) == b"weights"
    # The graph cannot be asked: kept, and the error raised.
    with pytest.raises(RuntimeError, match="graph down"):
        registry._remove_remote_blob(_Graph(RuntimeError("graph down")), remote, key, sha)  # type: ignore[arg-type]
    assert remote.read(key) == b"weights"
    # Nobody uses it: removed; nothing is left aside.
    assert registry._remove_remote_blob(_Graph(0), remote, key, sha)  # type: ignore[arg-type]
    assert remote.read(key) is None and remote.listdir("trash") == []
    assert not registry._remove_remote_blob(_Graph(0), remote, key, sha)  # type: ignore[arg-type]


# --- against Neo4j: register, label, select, classify, delete -------------------------------


def _pattern_images(kind: int, n: int, seed: int) -> np.ndarray:
    """n noisy 28x28 images of one of three patterns (stripes -, stripes |, a disc)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    base = [(yy // 3) % 2 == 0, (xx // 3) % 2 == 0, (yy - 13.5) ** 2 + (xx - 13.5) ** 2 < 80]
    img = 200 * base[kind].astype(np.float32)[None] + 25 + rng.normal(0, 20, (n, 28, 28))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small experts trained for an epoch: a = (clog, moccasin), b = (moccasin, kilt)."""
    tmp = tmp_path_factory.mktemp("store-weights")
    out = {}
    for i, (name, wnids) in enumerate((("a", [CLOG, MOCCASIN]), ("b", [MOCCASIN, KILT]))):
        x = np.concatenate(
            [_pattern_images(PATTERN[w], 40, seed=10 * i + j) for j, w in enumerate(wnids)]
        )
        y = np.repeat(np.arange(2), 40)
        model = fashion_experts.train_expert(ARCH, [0, 1], x, y, epochs=1, seed=i, batch_size=20)
        out[name] = loading.save_weights(model, tmp / f"{name}.safetensors")
    return out


WNIDS = {"a": [CLOG, MOCCASIN], "b": [MOCCASIN, KILT]}


def _registration(name: str, path: Path, wnids: list[str]) -> registry.Registration:
    return registry.Registration(
        name=name,
        arch=ARCH,
        weights_path=path,
        wnids=wnids,
        input_spec=fashion_experts.FASHION_INPUT_SPEC,
    )


def _labels(graph: Any, mid: str) -> list[tuple[Any, ...]]:
    rows = graph.run_user_query(
        "MATCH (:Model {id: $id})-[:HAS_HEAD]->(h:Head)-[l:LABELED]->(c:Concept) "
        "RETURN h.index AS head, c.wnid AS wnid, l.score AS score, l.method AS method",
        {"id": mid},
    )
    return sorted((r["head"], r["wnid"], r["score"], r["method"]) for r in rows)


def _deployment(graph: Any, settings: Settings, weights: dict[str, Path], check: Any) -> dict:
    """Probe sets, two models, labels, a plan and its classifications on `settings`' stores;
    what a reader sees, compared across stores by the caller; everything removed after."""
    from mllgraph.ground.resolve import default_resolver
    from mllgraph.reuse import cache as model_cache
    from mllgraph.reuse import classifier
    from mllgraph.select import run as select
    from mllgraph.select.probe_data import ProbeOutputCache

    sets, mids = [], []
    try:
        for w, kind in PATTERN.items():
            images = _pattern_images(kind, 16, seed=100 + kind)
            sets.append(
                probes.add_probe_set(
                    graph, settings, concept=w, images=images, set_id=f"{PREFIX}-{w}"
                )[0]
            )
        for name, path in weights.items():
            reg = _registration(f"{PREFIX}-{name}", path, WNIDS[name])
            mids.append(registry.register_model(graph, settings, reg).record["id"])
        options = label_work.LabelOptions(samples_per_concept=16, top_k=100)
        for mid in mids:
            labeller.label_model(graph, settings, mid, options, device="cpu")
        ctx = select.select(
            graph,
            settings,
            [plan_request.TaskClass(n, pinned_wnid=w) for n, w in (("clog", CLOG), ("kilt", KILT))],
            plan_request.SelectOptions(budget=2, models=tuple(mids)),
            default_resolver(Settings.from_env(), use_embeddings=False),  # the suite's home
            cache=ProbeOutputCache(),
            store=False,
            reads_cache=False,
        )
        plan = ctx.plan
        cache = model_cache.ModelCache(settings, device="cpu", loader=model_cache.load_from_blob)
        x = np.concatenate([_pattern_images(k, 4, seed=200 + k) for k in PATTERN.values()])
        clf = classifier.PlanClassifier(plan, graph, settings, cache)
        seen = {
            "outputs": {m: probe_outputs.load_probe_outputs(settings, m) for m in mids},
            "labels": {m: _labels(graph, m) for m in mids},
            "plan": (
                [[(h["model_id"], h["head_index"]) for h in c["heads"]] for c in plan["classes"]],
                plan["models"],
                plan["estimated_accuracy"],
                plan["uncovered"],
            ),
            "probabilities": np.stack([r.probabilities for r in clf.classify(list(x))]),
            "records": {m: registry.get_model(graph, m) for m in mids},
            "sets": sets,
        }
        check(mids, seen)
        return seen
    finally:
        for mid in mids:
            with contextlib.suppress(NotFound):
                registry.delete_model(graph, settings, mid)
        for ps in sets:
            with contextlib.suppress(NotFound):
                probes.remove_probe_set(graph, ps.id, settings)


@pytest.mark.neo4j
def test_memory_stores_label_select_and_classify_as_a_local_store(
    sdag_graph: Any,
    neo4j_settings: Settings,
    weights: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    graph = sdag_graph
    local = replace(neo4j_settings, home=tmp_path / "local", device="cpu")
    monkeypatch.delenv(paths.MODEL_STORE_VAR, raising=False)
    monkeypatch.delenv(paths.PROBE_STORE_VAR, raising=False)
    here = _deployment(graph, local, weights, lambda mids, seen: None)

    model_url, probe_url = _memory_url("models"), _memory_url("probes")
    monkeypatch.setenv(paths.MODEL_STORE_VAR, model_url)
    monkeypatch.setenv(paths.PROBE_STORE_VAR, probe_url)
    settings = replace(local, home=tmp_path / "remote", store_refresh_s=0)
    other = replace(settings, home=tmp_path / "other-machine")

    def check(mids: list[str], seen: dict) -> None:
        for mid, record in seen["records"].items():
            assert record["weights_path"].startswith(f"{model_url}/blobs/")
            assert json.loads(record["probe_outputs"])["path"].startswith(f"{model_url}/models/")
            # Another machine: weights fetched (and sha256-checked) into its own cache, the
            # same probe outputs memory-mapped from its own cache.
            assert loading.weights_file(other, record).is_relative_to(other.model_store)
            loading.load_model(other, record)
            data, temperature = probe_outputs.load_probe_outputs(other, mid)
            want, want_t = seen["outputs"][mid]
            assert temperature == want_t and data.keys() == want.keys()
            for s in data:
                np.testing.assert_array_equal(data[s], want[s])
        # A domain profile written here is read on the other machine from the store.
        from mllgraph.hub import domains

        kind = next(iter(PATTERN.values()))
        info = domains.describe(
            graph, settings, mids[0], list(_pattern_images(kind, 60, seed=7)), "patterns"
        )
        profile = domains.load(other, mids[0], registry.get_model(graph, mids[0]))
        assert profile.images == 60 and profile.threshold == info["domain_threshold"]
        assert domains.profile_path(other, mids[0], info["domain_sha256"]).is_file()
        assert all(ps.path.startswith(f"{probe_url}/") for ps in seen["sets"])
        assert probes.load_images(seen["sets"][0], 2, settings=other).shape == (2, 28, 28)
        # Labelling again makes a new version current in the store and in the graph.
        mid = mids[0]
        before = probe_outputs.current_version(settings, mid)
        labeller.label_model(
            graph, settings, mid, label_work.LabelOptions(16, top_k=100), device="cpu"
        )
        after = probe_outputs.current_version(other, mid)
        assert before is not None and after is not None and after.name != before.name
        assert after.name in registry.get_model(graph, mid)["probe_outputs"]

    there = _deployment(graph, settings, weights, check)

    assert here["labels"] == there["labels"] and any(here["labels"].values())
    assert here["outputs"].keys() == there["outputs"].keys()
    for mid, (data, temperature) in here["outputs"].items():
        assert there["outputs"][mid][1] == temperature
        for s, array in data.items():
            np.testing.assert_array_equal(there["outputs"][mid][0][s], array)
    assert here["plan"] == there["plan"] and here["plan"][1]
    np.testing.assert_array_equal(here["probabilities"], there["probabilities"])
    # Deleting the models removed their blobs and probe outputs from the store.
    memory = fsspec.filesystem("memory")
    left = memory.find(model_url.split("://", 1)[1])
    assert left == [], left


@pytest.mark.neo4j
def test_deleting_models_removes_a_remote_blob_only_when_unreferenced(
    sdag_graph: Any,
    neo4j_settings: Settings,
    weights: dict[str, Path],
    stores: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    graph, settings = sdag_graph, replace(neo4j_settings, home=tmp_path, device="cpu")
    remote = store.model_remote(settings)
    assert remote is not None
    mids = []
    for tag in ("one", "two"):
        reg = _registration(f"{PREFIX}-{tag}", weights["a"], WNIDS["a"])
        mids.append(registry.register_model(graph, settings, reg).record["id"])
    record = registry.get_model(graph, mids[0])
    key = remote.key_of(record["weights_path"])
    assert key == registry.blob_key(record["sha256"], ".safetensors") and remote.exists(key)
    try:
        first = registry.delete_model(graph, settings, mids[0])
        assert not first["weights_removed"] and remote.exists(key)
        loading.load_model(replace(settings, home=tmp_path / "fresh"), record)  # still there
        # A deletion elsewhere removes the blob between this registration's put and its
        # Model's write: the registration puts it back.
        real_create = registry._create

        def create_after_a_removal(*args: Any, **kwargs: Any) -> Any:
            remote.remove(key)
            return real_create(*args, **kwargs)

        monkeypatch.setattr(registry, "_create", create_after_a_removal)
        reg = _registration(f"{PREFIX}-three", weights["a"], WNIDS["a"])
        mids.append(registry.register_model(graph, settings, reg).record["id"])
        monkeypatch.setattr(registry, "_create", real_create)
        assert remote.exists(key)
        assert not registry.delete_model(graph, settings, mids[1])["weights_removed"]
        last = registry.delete_model(graph, settings, mids[2])
        assert last["weights_removed"] and not remote.exists(key)
        assert not (remote.cache / key).exists() and remote.listdir("trash") == []
    finally:
        for mid in mids:
            with contextlib.suppress(NotFound):
                registry.delete_model(graph, settings, mid)
