"""A typed Python client for the three mllgraph gRPC services.

Plain Python in and out: images as paths, bytes (PNG/JPEG or any format Pillow reads), PIL
images or numpy arrays (uint8 HxW or HxWx3, float32 in [0, 1]); results as dataclasses
(defined in `mllgraph.client_types`, imported from here).
Errors arrive as the project's own exceptions (`mllgraph.errors`) with ``.code`` (the gRPC
status name) and ``.field`` (the request field the message names, when it names one).
Every call has a deadline; only UNAVAILABLE is retried, with exponential backoff.

    from mllgraph.client import Client

    with Client("127.0.0.1") as client:              # the default ports 50051/2/3
        result = client.classify(["shoe.png"], classes=["sandal", "sneaker", "handbag"])
        for p in result:
            print(p.image_id, p.class_name, round(p.probability, 3))

``Client(target)`` takes ``"host"`` (each service on its default port, from Settings),
``"host:port"`` (all three behind one address), or per-service ``ingestion=`` /
``selection=`` / ``inference=`` addresses, which win over ``target``.
"""

from __future__ import annotations

import hashlib
import io
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from mllgraph import errors
from mllgraph.auth import open_channel
from mllgraph.client_types import (
    Alternative,
    Candidate,
    ClassExplanation,
    Classification,
    ClassScore,
    Concept,
    Explanation,
    FrontPlan,
    Grounding,
    HeadLabels,
    HeadUse,
    LabelJob,
    Model,
    Plan,
    PlannedClass,
    Prediction,
    ProbeReport,
    Timings,
    explanation_from_proto,
    job_from_proto,
    model_from_proto,
    plan_from_proto,
    prediction_from_proto,
)
from mllgraph.errors import InvalidArgument, MllgraphError
from mllgraph.settings import Settings
from mllgraph.v1 import (
    common_pb2,
    inference_pb2,
    inference_pb2_grpc,
    ingestion_pb2,
    ingestion_pb2_grpc,
    selection_pb2,
    selection_pb2_grpc,
)
from mllgraph.wire import RESIZE_TO_PROTO, SOLVER_TO_PROTO

__all__ = [  # the client, and its results (defined in mllgraph.client_types)
    "CLASSIFY_BATCH",
    "DEFAULT_TIMEOUT_S",
    "INLINE_WEIGHTS_BYTES",
    "MAX_MESSAGE_BYTES",
    "PROBE_EXTENSIONS",
    "UPLOAD_CHUNK_BYTES",
    "Alternative",
    "Candidate",
    "ClassExplanation",
    "ClassScore",
    "Classification",
    "Client",
    "Concept",
    "Explanation",
    "FrontPlan",
    "Grounding",
    "HeadLabels",
    "HeadUse",
    "ImageLike",
    "LabelJob",
    "Model",
    "Plan",
    "PlannedClass",
    "Prediction",
    "ProbeReport",
    "RemoteError",
    "Timings",
    "error_from_rpc",
    "explanation_from_proto",
    "job_from_proto",
    "model_from_proto",
    "plan_from_proto",
    "prediction_from_proto",
    "split_classes",
    "to_image",
]

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT_S = 120.0
UPLOAD_CHUNK_BYTES = 1024 * 1024  # UploadWeights chunk size
INLINE_WEIGHTS_BYTES = 16 * 1024 * 1024  # smaller `bytes` weights travel in the request itself
PROBE_EXTENSIONS = (".jpg", ".jpeg", ".png")
CLASSIFY_BATCH = 64  # images per Classify request (servers refuse more than their limit)

ImageLike = str | Path | bytes | np.ndarray | Any  # Any: a PIL.Image.Image


class RemoteError(MllgraphError):
    """A status with no domain exception of its own (INTERNAL, UNKNOWN, CANCELLED, ...)."""


_ERROR_BY_CODE: dict[str, type[MllgraphError]] = {
    cls.grpc_code: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, MllgraphError) and cls is not MllgraphError
}
_FIELD = re.compile(
    r"^([a-z_][a-z0-9_]*(?:\[\d+\])?(?:\.[a-z_][a-z0-9_]*(?:\[\d+\])?)*)(?=:| is | must )"
)


def error_from_rpc(e: grpc.RpcError, what: str) -> MllgraphError:
    """The domain exception for a failed call, carrying ``code`` and ``field``."""
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    details = (e.details() if hasattr(e, "details") else None) or name
    cls = _ERROR_BY_CODE.get(name, RemoteError)
    exc = cls(f"{what}: {details}")
    exc.code = name  # type: ignore[attr-defined]
    match = _FIELD.match(details)
    exc.field = match.group(1) if match else None  # type: ignore[attr-defined]
    return exc


# --- images ------------------------------------------------------------------------------------

_ENCODED_FORMATS = {"PNG", "JPEG"}  # what the inference service decodes itself


def _raw(arr: np.ndarray, where: str) -> inference_pb2.RawArray:
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3)):
        raise InvalidArgument(f"{where}: an image array must be HxW or HxWx3, got {arr.shape}")
    if arr.dtype == np.uint8:
        dtype = "uint8"
    elif np.issubdtype(arr.dtype, np.floating):
        arr, dtype = arr.astype("<f4"), "float32"
    else:
        raise InvalidArgument(f"{where}: pixels must be uint8 or float in [0, 1], got {arr.dtype}")
    arr = np.ascontiguousarray(arr)
    return inference_pb2.RawArray(data=arr.tobytes(), shape=list(arr.shape), dtype=dtype)


def _pil_array(img: Any) -> np.ndarray:
    if img.mode not in ("L", "RGB"):
        img = img.convert("L" if img.mode in ("1", "I", "I;16", "F", "LA") else "RGB")
    return np.asarray(img)


def _from_bytes(data: bytes, where: str) -> inference_pb2.Image:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            img.load()
            if fmt in _ENCODED_FORMATS:
                return inference_pb2.Image(encoded=data)
            return inference_pb2.Image(raw=_raw(_pil_array(img), where))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InvalidArgument(f"{where}: not a readable image ({e})") from e


def to_image(image: ImageLike, image_id: str = "", where: str = "image") -> inference_pb2.Image:
    """One image as the inference service's `Image` message (checked here, so an unreadable
    file fails before any request is sent, naming `where`)."""
    if isinstance(image, inference_pb2.Image):
        msg = inference_pb2.Image()
        msg.CopyFrom(image)
        if image_id:
            msg.id = image_id
        return msg
    if isinstance(image, str | Path):
        path = Path(image)
        where = str(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise InvalidArgument(f"{where}: cannot read ({e.strerror or e})") from e
        msg = _from_bytes(data, where)
    elif isinstance(image, bytes | bytearray | memoryview):
        msg = _from_bytes(bytes(image), where)
    elif isinstance(image, np.ndarray):
        msg = inference_pb2.Image(raw=_raw(image, where))
    elif hasattr(image, "mode") and hasattr(image, "size"):  # a PIL image
        msg = inference_pb2.Image(raw=_raw(_pil_array(image), where))
    else:
        raise InvalidArgument(f"{where}: not an image: {type(image).__name__}")
    msg.id = image_id
    return msg


def _image_id(image: ImageLike, i: int) -> str:
    if isinstance(image, inference_pb2.Image) and image.id:
        return image.id
    return str(image) if isinstance(image, str | Path) else str(i)


# --- the client --------------------------------------------------------------------------------


class Client:
    """The ingestion, selection and inference services behind one object."""

    def __init__(
        self,
        target: str | None = None,
        *,
        ingestion: str | None = None,
        selection: str | None = None,
        inference: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = 4,
        backoff_s: float = 0.2,
        settings: Settings | None = None,
    ) -> None:
        settings = settings or Settings.from_env()
        host, _, port = (target or "127.0.0.1").rpartition(":") if _has_port(target) else (
            target or "127.0.0.1", "", "")  # fmt: skip

        def address(given: str | None, default_port: int) -> str:
            if given:
                return given
            return f"{host}:{port}" if port else f"{host}:{default_port}"

        self.addresses = {
            "ingestion": address(ingestion, settings.ingestion_port),
            "selection": address(selection, settings.selection_port),
            "inference": address(inference, settings.inference_port),
        }
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        self._channels: dict[str, grpc.Channel] = {}
        for addr in self.addresses.values():
            if addr not in self._channels:
                # Explicit credentials win; else the same ones the CLI and the pipelines use
                # (MLLGRAPH_TOKEN, MLLGRAPH_TLS_CA: plain text when none is configured).
                self._channels[addr] = (
                    grpc.secure_channel(addr, credentials, options=options)
                    if credentials is not None
                    else open_channel(addr, settings, options=options)
                )
        ch = self._channels
        self._ingestion = ingestion_pb2_grpc.IngestionServiceStub(ch[self.addresses["ingestion"]])
        self._selection = selection_pb2_grpc.SelectionServiceStub(ch[self.addresses["selection"]])
        self._inference = inference_pb2_grpc.InferenceServiceStub(ch[self.addresses["inference"]])

    # -- plumbing --

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., Any], request: Any, what: str, timeout: float | None):
        """One unary call with a deadline; UNAVAILABLE is retried with exponential backoff
        (within the same overall deadline); any failure becomes a domain exception."""
        budget = self.timeout if timeout is None else timeout
        end = time.monotonic() + budget
        attempt = 0
        while True:
            left = end - time.monotonic()
            try:
                return method(request, timeout=max(left, 0.001))
            except grpc.RpcError as e:
                delay = self.backoff_s * (2**attempt)
                retry = (
                    e.code() == grpc.StatusCode.UNAVAILABLE
                    and attempt < self.retries
                    and time.monotonic() + delay < end
                )
                if not retry:
                    raise error_from_rpc(e, what) from e
                time.sleep(delay)
                attempt += 1

    def _call_stream(
        self,
        method: Callable[..., Any],
        make_requests: Callable[[], Iterator[Any]],
        what: str,
        timeout: float | None,
    ):
        """`_call` for a client-streaming method: each attempt streams a fresh iterator."""
        return self._call(
            lambda _, timeout: method(make_requests(), timeout=timeout), None, what, timeout
        )

    # -- selection --

    def select(
        self,
        classes: Sequence[str] | str,
        budget: int = 5,
        *,
        pins: dict[str, str] | None = None,
        solver: str = "auto",
        allow_ancestor: bool = True,
        fit_params: bool = True,
        min_label_score: float = 0.0,
        models: Sequence[str] = (),
        max_cost_ms: float = 0.0,
        accuracy_slack: float | None = None,
        timeout: float | None = None,
    ) -> Plan:
        """Ground the class names and choose heads under `budget` models and `max_cost_ms`
        (the plan's models' cost, ms per image; 0: no cap); the service serves the cheapest
        plan within `accuracy_slack` of the best estimate (None: its default, half a point).
        The service reuses a stored plan for an identical request over an unchanged
        catalogue. `classes` may be one comma-separated string."""
        names = split_classes(classes)
        if solver not in SOLVER_TO_PROTO:
            raise InvalidArgument(f"solver {solver!r}: one of {', '.join(SOLVER_TO_PROTO)}")
        pins = pins or {}
        request = selection_pb2.SelectHeadsRequest(
            classes=[selection_pb2.TaskClass(name=n, pinned_wnid=pins.get(n, "")) for n in names],
            budget=budget,
            options=selection_pb2.SelectOptions(
                solver=SOLVER_TO_PROTO[solver],
                allow_ancestor=allow_ancestor,
                fit_params=fit_params,
                min_label_score=min_label_score,
                models=list(models),
                max_cost_ms=max_cost_ms,
                accuracy_slack=accuracy_slack,
            ),
        )
        t = time.perf_counter()
        plan = self._call(self._selection.SelectHeads, request, "SelectHeads", timeout)
        return plan_from_proto(plan, (time.perf_counter() - t) * 1000)

    def plan(self, plan_id: str, *, timeout: float | None = None) -> Plan:
        request = selection_pb2.GetPlanRequest(plan_id=plan_id)
        return plan_from_proto(self._call(self._selection.GetPlan, request, "GetPlan", timeout))

    def explain(self, plan: Plan | str, *, timeout: float | None = None) -> Explanation:
        plan_id = plan.plan_id if isinstance(plan, Plan) else plan
        request = selection_pb2.ExplainSelectionRequest(plan_id=plan_id)
        return explanation_from_proto(
            self._call(self._selection.ExplainSelection, request, "ExplainSelection", timeout)
        )

    # -- inference --

    def classify(
        self,
        images: ImageLike | Iterable[ImageLike],
        classes: Sequence[str] | str | None = None,
        *,
        plan: Plan | str | None = None,
        budget: int = 5,
        top_k: int = 3,
        ids: Sequence[str] | None = None,
        batch: int = CLASSIFY_BATCH,
        timeout: float | None = None,
        allow_none: bool = False,
        **select_options: Any,
    ) -> Classification:
        """Classify `images` into `classes` (selecting a plan first: a stored one for the same
        task is reused) or with a given `plan` (a Plan or a plan id). `allow_none`: an image
        the experts' evidence fits no class well is answered "none of these"
        (`Prediction.none_of_these`); a plan without that calibration is FailedPrecondition."""
        items = _as_list(images)
        if not items:
            raise InvalidArgument("images: no images to classify")
        if ids is not None and len(ids) != len(items):
            raise InvalidArgument(f"ids: {len(ids)} ids for {len(items)} images")
        if (classes is None) == (plan is None):
            raise InvalidArgument("classify: give either classes or a plan")
        messages = [
            to_image(im, ids[i] if ids else _image_id(im, i), where=f"images[{i}]")
            for i, im in enumerate(items)
        ]
        if plan is None:
            plan = self.select(classes, budget, timeout=timeout, **select_options)  # type: ignore[arg-type]
        elif isinstance(plan, str):
            plan = self.plan(plan, timeout=timeout)
        names = plan.class_names
        predictions: list[Prediction] = []
        uncovered: list[str] = []
        patch = ""
        per_model: dict[str, dict[str, float]] = {}
        server_ms = 0.0
        none_threshold: float | None = None
        t = time.perf_counter()
        for start in range(0, len(messages), max(batch, 1)):
            request = inference_pb2.ClassifyRequest(
                plan_id=plan.plan_id,
                images=messages[start : start + batch],
                top_k=top_k,
                allow_none=allow_none,
            )
            response = self._call(self._inference.Classify, request, "Classify", timeout)
            predictions += [
                prediction_from_proto(p, names, allow_none) for p in response.predictions
            ]
            if allow_none:
                none_threshold = response.none_threshold
            uncovered = list(response.uncovered_classes)
            patch = response.patch
            server_ms += response.total_ms
            for mt in response.model_timings:
                m = per_model.setdefault(
                    mt.model_id, {"forward_ms": 0.0, "preprocess_ms": 0.0, "cached_images": 0}
                )
                m["forward_ms"] += mt.forward_ms
                m["preprocess_ms"] += mt.preprocess_ms
                m["cached_images"] += mt.cached_images
        timings = Timings(plan.select_ms, (time.perf_counter() - t) * 1000, server_ms, per_model)
        return Classification(
            predictions, plan, plan.plan_id, uncovered, timings, patch, none_threshold
        )

    # -- ingestion --

    def upload_weights(self, weights: str | Path | bytes, *, timeout: float | None = None) -> str:
        """Stream a weights file (a local path, or its bytes) to the ingestion service with
        UploadWeights; returns its SHA-256, to register with `register_model(weights_sha256=)`."""
        if isinstance(weights, bytes | bytearray):
            data = bytes(weights)
            size, sha = len(data), hashlib.sha256(data).hexdigest()

            def pieces() -> Iterator[bytes]:
                for i in range(0, size, UPLOAD_CHUNK_BYTES):
                    yield data[i : i + UPLOAD_CHUNK_BYTES]
        else:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise InvalidArgument(f"weights: no such file {path}")
            size, sha = path.stat().st_size, _sha256_file(path)

            def pieces() -> Iterator[bytes]:
                with path.open("rb") as f:
                    while chunk := f.read(UPLOAD_CHUNK_BYTES):
                        yield chunk

        def chunks() -> Iterator[ingestion_pb2.WeightsChunk]:
            first = True
            for piece in pieces():
                extra = {"total_bytes": size, "sha256": sha} if first else {}
                first = False
                yield ingestion_pb2.WeightsChunk(data=piece, **extra)

        ref = self._call_stream(self._ingestion.UploadWeights, chunks, "UploadWeights", timeout)
        return ref.sha256

    def register_model(
        self,
        name: str,
        *,
        weights: str | Path | bytes | None = None,
        weights_sha256: str | None = None,
        server_path: str | None = None,
        builtin: str | None = None,
        arch: str = "",
        class_names: Sequence[str] = (),
        wnids: Sequence[str] = (),
        version: str = "",
        input_size: int = 0,
        channels: int = 0,
        mean: Sequence[float] = (),
        std: Sequence[float] = (),
        resize: str = "",
        crop_pct: float = 0.0,
        interpolation: str = "",
        metadata: dict[str, str] | None = None,
        top1_accuracy: float | None = None,
        timeout: float | None = None,
    ) -> Model:
        """Register an expert. Give exactly one weights source: `weights` (a local file, or
        its bytes: uploaded with UploadWeights; bytes under 16 MiB travel in the request),
        `weights_sha256` (an earlier `upload_weights`), `server_path` (a file in the server's
        import folder) or a `builtin` name. One class name (or wnid) per head, in logit order."""
        resize_modes = {"": common_pb2.RESIZE_MODE_UNSPECIFIED, **RESIZE_TO_PROTO}
        if resize not in resize_modes:
            raise InvalidArgument(f"resize {resize!r}: one of resize, resize_crop")
        request = ingestion_pb2.RegisterModelRequest(
            name=name,
            version=version,
            arch=arch,
            class_names=list(class_names),
            wnids=list(wnids),
            input_spec=common_pb2.InputSpec(
                size=input_size,
                channels=channels,
                mean=list(mean),
                std=list(std),
                resize_mode=resize_modes[resize],
                crop_pct=crop_pct,
                interpolation=interpolation,
            ),
            metadata=metadata or {},
        )
        if top1_accuracy is not None:
            request.top1_accuracy = top1_accuracy
        given = (weights, weights_sha256, server_path, builtin)
        if sum(x is not None for x in given) != 1:
            raise InvalidArgument(
                "register_model: give exactly one of weights, weights_sha256, server_path or "
                "builtin"
            )
        if builtin is not None:
            request.builtin = builtin
        elif server_path is not None:
            request.weights_path = server_path
        elif weights_sha256 is not None:
            request.weights_sha256 = weights_sha256
        elif isinstance(weights, bytes | bytearray) and len(weights) < INLINE_WEIGHTS_BYTES:
            request.weights_bytes = bytes(weights)
        else:
            request.weights_sha256 = self.upload_weights(weights, timeout=timeout)  # type: ignore[arg-type]
        return model_from_proto(
            self._call(self._ingestion.RegisterModel, request, "RegisterModel", timeout)
        )

    def add_probes(
        self, folder: str | Path, *, source: str = "", timeout: float | None = None
    ) -> ProbeReport:
        """Stream a local image folder (one sub-folder per concept, named by a wnid,
        `name.n.NN` or a class name; JPEG/PNG files) to AddProbes: one probe set per concept.
        Files that are not .jpg/.jpeg/.png and entries that are not sub-folders are refused
        here; the server refuses unreadable images and unknown concepts. All in one call
        (the server caps images per call: MLLGRAPH_MAX_PROBE_IMAGES)."""
        # The folder reader of `probes add --folder`: no symbolic link is followed and no
        # file outside the folder is read (it was: /etc/shadow through a link, as root).
        from mllgraph.hub.probe_folder import folder_files, folder_root, read_inside

        root = folder_root(folder)
        files, refusals = folder_files(root)
        refused = [(r["path"], r["reason"]) for r in refusals]
        if not files:
            raise InvalidArgument(f"folder {root}: no .jpg/.jpeg/.png file in any sub-folder")

        def images() -> Iterator[ingestion_pb2.ProbeImage]:
            for i, (concept, f) in enumerate(files):
                yield ingestion_pb2.ProbeImage(
                    concept=concept,
                    name=str(f),
                    encoded=read_inside(root, f),
                    source=(source or f"folder {root}") if i == 0 else "",
                )

        report = self._call_stream(self._ingestion.AddProbes, images, "AddProbes", timeout)
        return ProbeReport(
            attached=[
                {
                    "folder": a.folder,
                    "wnid": a.concept.wnid,
                    "concept": a.concept.name,
                    "set_id": a.set_id,
                    "images": a.images,
                    "created": a.created,
                }
                for a in report.attached
            ],
            refused=refused + [(r.path, r.reason) for r in report.refused],
            stale_models=list(report.stale_models),
        )

    def label(
        self,
        model_id: str,
        *,
        wait: bool = True,
        relabel: bool = False,
        samples_per_concept: int = 0,
        poll_s: float = 0.5,
        timeout: float | None = None,
    ) -> LabelJob:
        """Start labelling a model's heads; with `wait`, poll until the job is done (a failed
        job raises FailedPrecondition with its message) or `timeout` passes."""
        request = ingestion_pb2.LabelModelRequest(
            model_id=model_id,
            options=ingestion_pb2.LabelOptions(
                relabel=relabel, samples_per_concept=samples_per_concept
            ),
        )
        job = job_from_proto(self._call(self._ingestion.LabelModel, request, "LabelModel", timeout))
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        while wait and job.state in ("queued", "running"):
            if time.monotonic() > end:
                raise errors.DeadlineExceeded(
                    f"label {model_id}: job {job.job_id} still {job.state} "
                    f"({job.heads_done}/{job.heads_total} heads) after the timeout"
                )
            time.sleep(poll_s)
            job = self.label_job(job.job_id, timeout=timeout)
        if job.state == "failed":
            raise errors.FailedPrecondition(f"label {model_id}: {job.message}")
        return job

    def label_job(self, job_id: str, *, timeout: float | None = None) -> LabelJob:
        request = ingestion_pb2.GetLabelJobRequest(job_id=job_id)
        return job_from_proto(
            self._call(self._ingestion.GetLabelJob, request, "GetLabelJob", timeout)
        )

    def model(self, model_id: str, *, heads: bool = True, timeout: float | None = None) -> Model:
        request = ingestion_pb2.GetModelRequest(model_id=model_id, include_heads=heads)
        return model_from_proto(self._call(self._ingestion.GetModel, request, "GetModel", timeout))

    def models(
        self,
        *,
        name: str = "",
        arch: str = "",
        covers: str = "",
        min_label_score: float = 0.0,
        heads: bool = False,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> list[Model]:
        """Models matching every filter (`covers`: a wnid the model has a head under)."""
        out: list[Model] = []
        token = ""
        while True:
            request = ingestion_pb2.ListModelsRequest(
                name=name,
                arch=arch,
                covers_concept=covers,
                min_label_score=min_label_score,
                include_heads=heads,
                page_size=min(limit or 1000, 1000),
                page_token=token,
            )
            page = self._call(self._ingestion.ListModels, request, "ListModels", timeout)
            out += [model_from_proto(m) for m in page.models]
            token = page.next_page_token
            if not token or (limit is not None and len(out) >= limit):
                return out[:limit] if limit is not None else out

    def delete_model(
        self, model_id: str, *, allow_missing: bool = False, timeout: float | None = None
    ) -> bool:
        """Delete a model; True when its stored weights were removed."""
        request = ingestion_pb2.DeleteModelRequest(model_id=model_id, allow_missing=allow_missing)
        return self._call(
            self._ingestion.DeleteModel, request, "DeleteModel", timeout
        ).weights_removed


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(UPLOAD_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def _has_port(target: str | None) -> bool:
    if not target:
        return False
    if target.startswith("["):  # [v6]:port
        return "]:" in target
    return target.count(":") == 1


def split_classes(classes: Sequence[str] | str) -> list[str]:
    """Class names from a list, or from one comma-separated string."""
    if isinstance(classes, str):
        return [x.strip() for x in classes.split(",") if x.strip()]
    return [str(x).strip() for x in classes]


def _as_list(images: ImageLike | Iterable[ImageLike]) -> list[ImageLike]:
    if isinstance(images, str | Path | bytes | bytearray | inference_pb2.Image):
        return [images]
    if isinstance(images, np.ndarray):
        # One HxW / HxWx3 image, or a stack of them (N,H,W[,3]).
        if images.ndim == 2 or (images.ndim == 3 and images.shape[2] in (1, 3, 4)):
            return [images]
        return list(images)
    if hasattr(images, "mode") and hasattr(images, "size"):  # a PIL image
        return [images]
    return list(images)
