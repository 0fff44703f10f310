"""The model catalogue: registering, reading, listing and deleting expert models.

A model is `(:Model)-[:HAS_HEAD]->(:Head)-[:DECLARED]->(:Concept)`; its weights live
content-addressed in the model store (`<store>/blobs/<sha[:2]>/<sha>.<ext>`). Registration
validates everything first — weights load safely, a dummy forward pass works, the head count
matches the labels, every label grounds to a concept — and only then copies the weights and
writes the graph in one transaction, so a failed registration leaves nothing behind.

Model ids are `name@version`. Versions are immutable: the same weights under the same id are
an idempotent re-registration; different weights under an existing id are refused.

Weights files are shared by every model with the same sha256, so writing and removing them
is serialised by the store lock (`store_lock`: a thread lock in this process and an `flock`
on `<store>/blobs/.lock` across processes — the services and the CLI on one store):
registration copies the file and writes its Model under the lock, after checking again that
the id is free; deletion deletes the Model and, in the same transaction, counts the other
models that reference the sha256, and removes the file under the lock only when none does.
A failed registration removes a file it copied only when no model references it.

A model store at a URL (`MLLGRAPH_MODEL_STORE=s3://...`, see `store`) has no lock across
machines: a blob is put as is (content-addressed: every writer writes the same bytes) and the
graph records its URL; removing a blob no model references is settled through the graph
(`_remove_remote_blob`). The store lock then only orders this machine's processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mllgraph import paths
from mllgraph.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    MllgraphError,
    NotFound,
)
from mllgraph.hub import store
from mllgraph.hub.preprocess import InputSpec
from mllgraph.hub.store import sha256_file
from mllgraph.settings import Settings

if TYPE_CHECKING:  # annotations only: load_model works without the neo4j driver
    from mllgraph.graph.db import Graph

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
WNID_RE = re.compile(r"^[a-z]\d{8}$")
BUILTINS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")  # loading knows them
MAX_HEADS = 100_000


@dataclass
class Registration:
    """What a caller asks to register (the gRPC request and the CLI both build one)."""

    name: str
    version: str = "1"
    arch: str = ""
    builtin: str | None = None
    weights_path: Path | None = None
    weights_bytes: bytes | None = None
    class_names: list[str] | None = None
    wnids: list[str] | None = None
    input_spec: InputSpec | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # Stated top-1 accuracy on the model's own label set, in (0, 1]: the prior quality of
    # its declared (unmeasured) heads. None = not stated (builtins state their own).
    top1_accuracy: float | None = None
    # (source, source_ref) to record for weights_path, when the path is a private copy (the
    # services copy imports and uploads first): e.g. ("file", "experts/a.safetensors") or
    # ("stream", "<sha256>"). None: ("file", the path).
    origin: tuple[str, str] | None = None


@dataclass(frozen=True)
class RegisteredModel:
    record: dict[str, Any]
    created: bool  # False: the identical model was already registered


def model_id(name: str, version: str) -> str:
    return f"{name}@{version}"


def ensure_schema(graph: Graph) -> None:
    graph.ensure_schema("hub/schema")


def blob_key(sha256: str, suffix: str) -> str:
    """A weights file's place in the model store: named by its content."""
    return f"blobs/{sha256[:2]}/{sha256}{suffix}"


def blob_path(settings: Settings, sha256: str, suffix: str) -> Path:
    return settings.model_store / blob_key(sha256, suffix)


def stored_blob(settings: Settings, sha256: str) -> Path | None:
    """A local copy of the weights with this sha256 when the store has them, else None."""
    remote = store.model_remote(settings)
    for suffix in (".safetensors", ".pt"):
        if remote is None:
            blob = blob_path(settings, sha256, suffix)
            if blob.is_file():
                return blob
        elif remote.exists(blob_key(sha256, suffix)):
            return remote.fetch(blob_key(sha256, suffix), sha256)
    return None


_STORE_LOCKS: dict[Path, threading.Lock] = {}
_STORE_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def store_lock(settings: Settings) -> Iterator[None]:
    """Exclusive use of the weights files of `settings.model_store`: within this process (a
    thread lock per store) and across processes (`flock` on `<store>/blobs/.lock`)."""
    root = settings.model_store / "blobs"
    root.mkdir(parents=True, exist_ok=True)
    key = root.resolve()
    with _STORE_LOCKS_GUARD:
        local = _STORE_LOCKS.setdefault(key, threading.Lock())
    with local, (root / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def model_key(mid: str) -> str:
    return f"models/{mid.replace('/', '_')}"


def model_dir(settings: Settings, mid: str) -> Path:
    """Per-model files beside the weights (probe outputs)."""
    return settings.model_store / model_key(mid)


# -- reading ---------------------------------------------------------------------------------


def get_model(graph: Graph, mid: str) -> dict[str, Any]:
    rows = graph.read("hub/model_get", id=mid)
    if not rows:
        raise NotFound(f"model {mid!r} is not registered (ids look like 'name@version')")
    return _plain(rows[0]["model"])


def heads(graph: Graph, mid: str, top_k: int = 3) -> list[dict[str, Any]]:
    get_model(graph, mid)
    return graph.read("hub/model_heads", id=mid, top_k=top_k)


def require_models(graph: Graph, ids: list[str] | tuple[str, ...], where: str) -> None:
    """NotFound naming every id in `ids` that is no registered model (e.g. a sub-hub)."""
    missing = graph.read("hub/models_missing", ids=sorted(set(ids)))[0]["missing"]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise NotFound(f"{where}: no registered model {shown}{more} (ids are 'name@version')")


def list_models(
    graph: Graph,
    *,
    name: str | None = None,
    arch: str | None = None,
    covers: str | None = None,
    min_score: float = 0.0,
    limit: int = 50,
    after: str | None = None,
) -> list[dict[str, Any]]:
    if limit < 1 or limit > 1000:
        raise InvalidArgument(f"page_size must be between 1 and 1000, got {limit}")
    if covers is not None:
        from mllgraph.graph import sdag

        covers = sdag.concept(graph, covers)["wnid"]
    rows = graph.read(
        "hub/models_list",
        name_part=name or None,  # not `name`: Graph.read's first parameter is the file name
        arch=arch or None,
        covers=covers,
        min_score=float(min_score),
        limit=limit,
        after=after or None,
    )
    return [_plain(r["model"]) for r in rows]


def measure_cost(graph: Graph, settings: Settings, mid: str) -> dict[str, Any]:
    """Measure a registered model's cost per image now (`hub.cost`) and record it on its
    node; the record as written. For models registered before costs were measured."""
    from mllgraph.hub import cost as hub_cost
    from mllgraph.hub import loading

    record = get_model(graph, mid)
    model, spec = loading.load_model(settings, record)
    cost = hub_cost.measure(
        model, spec, settings.torch_device(), cpu_chunk=settings.infer_cpu_chunk
    )
    rows = graph.write("hub/model_set_cost", id=mid, cost=cost)
    if not rows:
        raise NotFound(f"model {mid!r} was deleted while its cost was measured")
    return _plain(rows[0]["model"])


def catalogue_version(graph: Graph) -> int:
    return int(graph.read("hub/catalogue_version")[0]["version"])


def _plain(node: dict[str, Any]) -> dict[str, Any]:
    """Neo4j temporal values as ISO strings, the input spec as a dict."""
    out = {}
    for key, value in node.items():
        out[key] = value.iso_format() if hasattr(value, "iso_format") else value
    if isinstance(out.get("input_spec"), str):
        out["input_spec"] = json.loads(out["input_spec"])
    if isinstance(out.get("metadata"), str):
        out["metadata"] = json.loads(out["metadata"])
    return out


# -- registering -----------------------------------------------------------------------------


Grounder = Callable[[str], str]  # class name -> wnid, raising InvalidArgument if it cannot


def validate_identity(reg: Registration) -> None:
    """Name, version, one weights source, labels, top-1 and metadata (InvalidArgument)."""
    if not NAME_RE.match(reg.name or ""):
        raise InvalidArgument(
            f"name {reg.name!r}: use 1-100 letters, digits, '.', '_' or '-' (starting with a "
            "letter or digit)"
        )
    if not VERSION_RE.match(reg.version or ""):
        raise InvalidArgument(f"version {reg.version!r}: use 1-32 letters, digits, '.', '_', '-'")
    sources = [
        s for s in (reg.builtin, reg.weights_path, reg.weights_bytes) if s not in (None, b"")
    ]
    if len(sources) != 1:
        raise InvalidArgument(
            "source: give exactly one of builtin, weights_path or weights_bytes "
            f"(got {len(sources)})"
        )
    if reg.class_names and reg.wnids:
        raise InvalidArgument("labels: give class_names or wnids, not both")
    if reg.top1_accuracy is not None and not (
        isinstance(reg.top1_accuracy, int | float)
        and not isinstance(reg.top1_accuracy, bool)
        and math.isfinite(reg.top1_accuracy)
        and 0.0 < reg.top1_accuracy <= 1.0
    ):
        raise InvalidArgument(
            f"top1_accuracy {reg.top1_accuracy!r}: a fraction in (0, 1], e.g. 0.751 for 75.1%"
        )
    if len(reg.metadata) > 100 or any(
        len(k) > 100 or len(v) > 2000 for k, v in reg.metadata.items()
    ):
        raise InvalidArgument("metadata: at most 100 entries, keys ≤ 100 and values ≤ 2000 chars")


def _builtin(reg: Registration) -> tuple[Path, str, list[str], InputSpec]:
    from mllgraph.hub import loading

    if reg.builtin not in BUILTINS:
        raise InvalidArgument(f"builtin {reg.builtin!r} is unknown; known: {', '.join(BUILTINS)}")
    if reg.arch and reg.arch != reg.builtin:
        raise InvalidArgument(f"arch {reg.arch!r} contradicts builtin {reg.builtin!r}")
    if reg.class_names:
        raise InvalidArgument(f"class_names: {reg.builtin} declares its ImageNet wnids itself")
    spec, wnids = loading.EFFICIENTNET_LITE[reg.builtin].input_spec, loading.imagenet_wnids()
    if reg.wnids and list(reg.wnids) != wnids:
        raise InvalidArgument(f"wnids: {reg.builtin} declares the 1000 ImageNet-1k wnids in order")
    path = loading.efficientnet_lite_weights_path(reg.builtin)
    return path, reg.builtin, wnids, reg.input_spec or spec


def _labels_to_wnids(
    graph: Graph, reg: Registration, n_labels: int, ground: Grounder | None
) -> tuple[list[str], list[str]]:
    """(head labels, declared wnids), validating every one against the SDAG."""
    if reg.wnids:
        wnids = [w.strip() for w in reg.wnids]
        bad = [f"#{i} {w!r}" for i, w in enumerate(wnids) if not WNID_RE.match(w)]
        if bad:
            raise InvalidArgument(f"wnids: not wnids like 'n02084071': {', '.join(bad[:5])}")
        _refuse_repeats("wnids", wnids, wnids)
        labels = list(wnids)
    else:
        labels = [n.strip() for n in reg.class_names or []]
        if any(not n for n in labels):
            raise InvalidArgument("class_names: an empty class name")
        _refuse_repeats("class_names", [" ".join(n.split()).casefold() for n in labels], labels)
        if ground is None:
            raise FailedPrecondition("class_names need a grounding resolver")
        wnids = [ground(n) for n in labels]  # raises InvalidArgument naming the class
        _refuse_repeats("class_names", wnids, labels, grounded=True)
    found = set(graph.read("hub/concept_ids", wnids=sorted(set(wnids)))[0]["found"])
    unknown = [f"#{i} {w}" for i, w in enumerate(wnids) if w not in found]
    if unknown:
        raise InvalidArgument(
            f"wnids: unknown concept(s) {', '.join(unknown[:5])}; is the SDAG loaded "
            "(`mllgraph sdag load`)?"
        )
    if reg.wnids:  # label heads with the concept's first lemma, readable in Cypher
        names = {r["wnid"]: r["lemmas"][0] for r in graph.read("graph/concept", keys=sorted(found))}
        labels = [names[w].replace("_", " ") for w in wnids]
    return labels, wnids


def _refuse_repeats(
    field_name: str, keys: list[str], given: list[str], *, grounded: bool = False
) -> None:
    """InvalidArgument when two heads share a key: a class name (after normalising case and
    spaces), a wnid, or the concept class names ground to. A model's heads are distinct
    classes, so two heads declaring one concept are a mistake (four heads all "coat").
    Classes that share a name but are different concepts (ImageNet's two "crane"s) are
    given as wnids."""
    heads: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        heads.setdefault(key, []).append(i)
    repeated = [(key, idx) for key, idx in heads.items() if len(idx) > 1]
    if not repeated:
        return
    verb = "ground to" if grounded else "are"
    shown = "; ".join(
        f"heads {', '.join(f'#{i} {given[i]!r}' for i in idx[:5])}"
        + (f" (and {len(idx) - 5} more)" if len(idx) > 5 else "")
        + (f" {verb} {key}" if grounded else f" {verb} the same")
        for key, idx in repeated[:5]
    )
    raise InvalidArgument(
        f"{field_name}: each head must declare its own concept, but {shown}"
        + (f"; and {len(repeated) - 5} more repeats" if len(repeated) > 5 else "")
        + ("; give wnids to say which concept each class means" if field_name != "wnids" else "")
    )


def register_model(
    graph: Graph, settings: Settings, reg: Registration, ground: Grounder | None = None
) -> RegisteredModel:
    """Validate, store and write one model; see the module docstring for the guarantees."""
    from mllgraph.hub import cost as hub_cost
    from mllgraph.hub import loading

    validate_identity(reg)
    ensure_schema(graph)
    mid = model_id(reg.name, reg.version)
    with tempfile.TemporaryDirectory(prefix="mllgraph-register-") as tmp:
        if reg.builtin:
            path, arch, builtin_wnids, spec = _builtin(reg)
            top1 = reg.top1_accuracy
            if top1 is None:
                top1 = loading.EFFICIENTNET_LITE[reg.builtin].top1_accuracy  # type: ignore[index]
            reg = Registration(**{**reg.__dict__, "wnids": builtin_wnids, "top1_accuracy": top1})
            source, source_ref = "builtin", reg.builtin
        else:
            if not reg.arch:
                raise InvalidArgument("arch: required (a timm model name) for uploaded weights")
            arch = reg.arch
            if reg.input_spec is None:
                raise InvalidArgument("input_spec: required for uploaded weights")
            spec = reg.input_spec
            if reg.weights_bytes:
                # Named by content: the loader picks safetensors or torch.load by suffix.
                path = Path(tmp) / "weights.pt"
                path.write_bytes(reg.weights_bytes)
                if is_safetensors(path):
                    path = path.rename(path.with_suffix(".safetensors"))
                source, source_ref = "upload", f"{len(reg.weights_bytes)} bytes"
            else:
                path = Path(reg.weights_path).expanduser()  # type: ignore[arg-type]
                if not path.is_file():
                    raise InvalidArgument(f"weights_path: no such file {path}")
                source, source_ref = reg.origin or ("file", str(path))
        spec.validate()
        sha = sha256_file(path)

        existing = _already_registered(graph, mid, sha, reg, arch, spec)
        if existing is not None:
            return existing

        n_labels = len(reg.wnids or reg.class_names or [])
        if n_labels == 0:
            raise InvalidArgument("labels: give one class name or wnid per head, in logit order")
        if n_labels > MAX_HEADS:
            raise InvalidArgument(f"labels: {n_labels} heads is over the limit of {MAX_HEADS}")
        # Load and run the model before touching the catalogue: bad weights, a spec the model
        # cannot take, a forward that raises or a head count that differs all stop here.
        if reg.builtin:
            model, _, _ = loading.load_efficientnet_lite(reg.builtin)
        else:
            try:
                model = loading.build_with_weights(
                    arch,
                    n_labels,
                    spec.channels,
                    path,
                    max_params=settings.max_model_params,
                    label=_weights_label(reg, path),
                )
            except InvalidArgument as e:
                if "does not fit" not in str(e):  # corrupt or refused: already clear
                    raise
                raise InvalidArgument(
                    f"the weights do not fit {arch} built with {n_labels} heads (one per label "
                    f"given) and {spec.channels} input channel(s) (input_spec.channels): {e}"
                ) from e
            except MllgraphError:
                raise
            except Exception as e:  # torch's unpicklers raise assorted errors on garbage
                raise InvalidArgument(
                    f"the weights file is corrupt or not a weights file: {type(e).__name__}: {e}"
                ) from e
        loading.check_forward(model, spec, n_labels)
        cost = hub_cost.measure(
            model, spec, settings.torch_device(), cpu_chunk=settings.infer_cpu_chunk
        )
        labels, wnids = _labels_to_wnids(graph, reg, n_labels, ground)

        suffix = ".safetensors" if is_safetensors(path) else ".pt"
        blob = blob_path(settings, sha, suffix)
        remote = store.model_remote(settings)
        with store_lock(settings):
            # Again under the lock: another registration of this id may have won meanwhile.
            existing = _already_registered(graph, mid, sha, reg, arch, spec)
            if existing is not None:
                return existing
            if remote is None:
                weights, discard = str(blob), _copy_blob(graph, path, blob, sha)
            else:
                key = blob_key(sha, suffix)
                weights, discard = remote.url_of(key), _put_blob(graph, remote, path, key, sha)
            created = _create(graph, reg, mid, arch, source, source_ref, sha, weights,
                              path.stat().st_size, spec, labels, wnids, discard,
                              cost)  # fmt: skip
            if remote is not None and not remote.exists(key):
                # A deletion elsewhere of the last other model with these weights removed the
                # blob between the put and the write of the Model (see _remove_remote_blob).
                remote.put(path, key)
            return created


def _weights_label(reg: Registration, path: Path) -> str:
    """How errors name the weights: as the caller gave them, not a temporary copy's path."""
    if reg.weights_bytes:
        return f"the uploaded weights ({len(reg.weights_bytes):,} bytes)"
    if reg.origin is not None:
        kind, ref = reg.origin
        return (
            f"the uploaded weights (sha256 {ref[:12]}…)"
            if kind == "stream"
            else f"weights {kind} {ref}"
        )
    return f"weights file {path}"


Discard = Callable[[], object]  # undoes a registration's store of a blob (on a failed write)


def _copy_blob(graph: Graph, path: Path, blob: Path, sha: str) -> Discard | None:
    """Copy the weights into a local store unless they are there (under the store lock);
    what removes the copy again unless a model references it, None when none was made."""
    if blob.exists():
        return None
    blob.parent.mkdir(parents=True, exist_ok=True)
    part = blob.with_name(f"{blob.name}.part-{os.getpid()}-{threading.get_ident()}")
    shutil.copyfile(path, part)
    os.replace(part, blob)

    def discard() -> None:
        if graph.read("hub/sha256_in_use", sha256=sha)[0]["models"] == 0:
            blob.unlink(missing_ok=True)

    return discard


def _put_blob(graph: Graph, remote: store.Remote, path: Path, key: str, sha: str) -> Discard | None:
    """`_copy_blob` for a store at a URL: the weights put unless they are there."""
    if remote.exists(key):
        return None
    remote.put(path, key)
    return lambda: _remove_remote_blob(graph, remote, key, sha)


def _already_registered(
    graph: Graph, mid: str, sha: str, reg: Registration, arch: str, spec: InputSpec
) -> RegisteredModel | None:
    """None when `mid` is free; the record when the identical model is registered under it;
    AlreadyExists when something else is."""
    existing = graph.read("hub/model_get", id=mid)
    if not existing:
        return None
    record = _plain(existing[0]["model"])
    if record["sha256"] == sha:
        differences = _differences(graph, record, reg, arch, spec)
        if differences:
            raise AlreadyExists(
                f"model {mid} is already registered with these weights but "
                f"{'; '.join(differences)}; versions are immutable: register a new "
                "version (or the same content again, which is a no-op)"
            )
        return RegisteredModel(record, created=False)
    raise AlreadyExists(
        f"model {mid} is already registered with other weights (sha256 "
        f"{record['sha256'][:12]}…); versions are immutable: register a new version"
    )


def _create(
    graph: Graph,
    reg: Registration,
    mid: str,
    arch: str,
    source: str,
    source_ref: str,
    sha: str,
    weights: str,
    size_bytes: int,
    spec: InputSpec,
    labels: list[str],
    wnids: list[str],
    discard: Discard | None,
    cost: dict[str, Any] | None = None,
) -> RegisteredModel:
    """Write the Model and its heads (under the store lock); on failure `discard` the blob
    this registration stored (it removes it unless a model references it)."""
    n_labels = len(labels)
    props = {
        "id": mid,
        "name": reg.name,
        "version": reg.version,
        "arch": arch,
        "source": source,
        "source_ref": source_ref,
        "sha256": sha,
        "num_classes": n_labels,
        "weights_path": weights,
        "size_bytes": size_bytes,
        "input_spec": json.dumps(spec.to_dict()),
        "input_size": spec.size,
        "input_channels": spec.channels,
        "input_resize": spec.resize,
        "input_crop_pct": spec.crop_pct,
        "input_mean": list(spec.mean),
        "input_std": list(spec.std),
        "metadata": json.dumps(reg.metadata, sort_keys=True),
        **(cost or {}),  # hub.cost: ms per image on the serving device, and how measured
    }
    if reg.top1_accuracy is not None:
        props["top1_accuracy"] = float(reg.top1_accuracy)
    head_rows = [{"index": i, "label": labels[i], "wnid": wnids[i]} for i in range(n_labels)]
    try:
        row = graph.write("hub/model_create", model=props, heads=head_rows)[0]
    except Exception:
        if discard is not None:
            with contextlib.suppress(Exception):  # the write's error is the one to report
                discard()
        raise
    return RegisteredModel(_plain(row["model"]), created=True)


def _differences(
    graph: Graph, record: dict[str, Any], reg: Registration, arch: str, spec: InputSpec
) -> list[str]:
    """What a registration of already registered weights asks differently from the record:
    arch, input spec, number of heads, and the wnids or class names given (whichever the
    request carries). Empty: the same content, an idempotent no-op."""
    out: list[str] = []
    if record.get("arch") != arch:
        out.append(f"a different arch (registered {record.get('arch')!r}, given {arch!r})")
    registered_spec = record.get("input_spec") or {}  # a dict (see _plain)
    if registered_spec != json.loads(json.dumps(spec.to_dict())):
        out.append(f"a different input_spec (registered {registered_spec}, given {spec.to_dict()})")
    given = (
        ("wnids", [w.strip() for w in reg.wnids])
        if reg.wnids
        else ("class names", [n.strip() for n in reg.class_names or []])
    )
    if not given[1]:
        return out
    n = int(record.get("num_classes") or 0)
    if len(given[1]) != n:
        out.append(f"{len(given[1])} {given[0]} for its {n} heads")
        return out
    heads = graph.read("hub/model_heads", id=record["id"], top_k=0)
    key = "declared_wnid" if given[0] == "wnids" else "label"
    registered = [h[key] for h in heads]
    changed = [i for i, (a, b) in enumerate(zip(registered, given[1], strict=True)) if a != b]
    if changed:
        i = changed[0]
        out.append(
            f"different {given[0]} ({len(changed)} of {n} heads; head {i}: registered "
            f"{registered[i]!r}, given {given[1][i]!r})"
        )
    return out


def is_safetensors(path: Path) -> bool:
    # safetensors starts with an 8-byte little-endian header length, then '{'.
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


# -- deleting --------------------------------------------------------------------------------


def delete_model(graph: Graph, settings: Settings, mid: str) -> dict[str, Any]:
    """Remove a model, its heads and labels, its probe outputs, and its blob if unshared."""
    record = get_model(graph, mid)
    weights_removed = False
    remote = store.model_remote(settings)
    with store_lock(settings):  # no registration copies or writes these weights meanwhile
        rows = graph.write("hub/model_delete", id=mid)
        if not rows:  # deleted by someone else since get_model
            raise NotFound(f"model {mid!r} is not registered (ids look like 'name@version')")
        row = rows[0]
        if row["still_in_use"] == 0 and remote is not None:
            key = remote.key_of(record["weights_path"])  # None: outside the store, kept
            weights_removed = key is not None and _remove_remote_blob(
                graph, remote, key, record["sha256"]
            )
        elif row["still_in_use"] == 0:  # counted in the delete's own transaction
            blob = paths.in_store(settings.model_store, record["weights_path"])
            if blob.is_file() and blob.is_relative_to(settings.model_store):
                blob.unlink()
                weights_removed = True
    shutil.rmtree(model_dir(settings, mid), ignore_errors=True)
    if remote is not None:
        remote.remove(model_key(mid), recursive=True)  # its probe outputs
    return {
        "model_id": mid,
        "deleted_heads": row["deleted_heads"],
        "deleted_label_edges": row["deleted_labels"],
        "weights_removed": weights_removed,
        "catalogue_version": row["catalogue_version"],
    }


def _remove_remote_blob(graph: Graph, remote: store.Remote, key: str, sha: str) -> bool:
    """Remove a blob of a store at a URL once the graph counted no model using it; True when
    removed. No lock spans machines, so a registration of the same weights elsewhere may
    have found the blob present just before: the blob is first moved aside, the graph asked
    again, and the blob put back if a model uses the weights now. That registration looks at
    its blob again after writing its Model (`_create_remote`), so either its Model was
    written before that second count (the blob is put back here) or after it, and so after
    the move (it finds the blob gone and puts it again). Either way the blob stays."""
    aside = f"trash/{key.rsplit('/', 1)[-1]}.{os.getpid()}-{threading.get_ident()}"
    try:
        remote.move(key, aside)
    except FileNotFoundError:
        return False
    try:
        in_use = graph.read("hub/sha256_in_use", sha256=sha)[0]["models"] > 0
    except BaseException:
        remote.move(aside, key)  # unsure: keep it
        raise
    if in_use:
        remote.move(aside, key)
        return False
    remote.remove(aside)
    store.clear_local(remote.cache / key)
    return True
