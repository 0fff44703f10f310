"""One settings object, read from the environment.

Every knob that differs between a laptop, CI and a user's deployment lives here, so the
rest of the code takes a `Settings` and never reads `os.environ` itself.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from mllgraph import paths

log = logging.getLogger(__name__)

# The password every project-managed Neo4j got before issue 25 (printed in the README, so
# known to every local user). A server started since gets a random one (`local_password`).
LEGACY_NEO4J_PASSWORD = "mllgraph-local"
PASSWORD_FILE = "password"  # in the local server's folder (<home>/neo4j/password), mode 0600
_legacy_reported: set[Path] = set()


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _path_env(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def password_file(neo4j_home: Path) -> Path:
    """Where the project-managed server's password is kept."""
    return neo4j_home / PASSWORD_FILE


def has_legacy_database(neo4j_home: Path) -> bool:
    """True for a local server's data without a password file: first started before the
    password was random, so it still has `LEGACY_NEO4J_PASSWORD` (until `rotate_password`)."""
    return not password_file(neo4j_home).exists() and (neo4j_home / "data" / "databases").is_dir()


def local_password(neo4j_home: Path) -> str:
    """The project-managed server's password: the one kept in its folder; for a new server a
    random one, written there first (owner-only, 0600); for data started before that file
    existed, the old default (said once in the log, with what to do)."""
    path = password_file(neo4j_home)
    try:
        return _read_password(path)
    except FileNotFoundError:
        pass
    if has_legacy_database(neo4j_home):
        if neo4j_home not in _legacy_reported:
            _legacy_reported.add(neo4j_home)
            log.warning(
                "neo4j_legacy_password home=%s: this local Neo4j was first started with the "
                "README's default password, which every local user knows; `mllgraph neo4j "
                "start` gives it a random one (kept in %s, 0600) when it next starts it",
                neo4j_home,
                path,
            )
        return LEGACY_NEO4J_PASSWORD
    return _create_password(path)


def _read_password(path: Path) -> str:
    """The password in `path` (FileNotFoundError when there is none), its mode made 0600."""
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    password = path.read_text().strip()
    if not password:
        raise ValueError(f"{path} is empty: remove it, or put the local Neo4j's password in it")
    return password


def write_password(path: Path, password: str) -> None:
    """`password` into `path` atomically (a 0600 file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def _create_password(path: Path) -> str:
    """A new random password in `path`, unless another process wrote one first (then that)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.new-{os.getpid()}-{secrets.token_hex(4)}")
    write_password(part, secrets.token_urlsafe(24))
    try:
        os.link(part, path)  # fails when another process's password is already there
    except FileExistsError:
        pass
    finally:
        part.unlink(missing_ok=True)
    return _read_password(path)


@dataclass(frozen=True)
class Settings:
    # Neo4j. `neo4j_uri` None means: use (and if needed start) the project-managed server.
    neo4j_uri: str | None = None
    neo4j_user: str = "neo4j"
    # NEO4J_PASSWORD as given; None: see the `neo4j_password` property.
    neo4j_password_given: str | None = None
    neo4j_database: str = "neo4j"
    # The project-managed local server (Bolt on 127.0.0.1 only).
    local_neo4j_port: int = 7687
    local_neo4j_heap: str = "768m"
    local_neo4j_pagecache: str = "384m"
    # The local server's `db.transaction.timeout`: no transaction runs longer, whoever sent it.
    # Generous: it also bounds the first start's password change and big writes on a slow,
    # shared machine (60 s was hit there); user queries have their own, shorter timeout.
    neo4j_transaction_timeout_s: int = 600
    # `mllgraph query` / Graph.run_user_query: per-query transaction timeout and row cap.
    query_timeout_s: float = 30.0
    query_max_rows: int = 10_000
    # Where the project keeps what it builds: Neo4j jars and data, NLTK data, model store, probes.
    home: Path = field(default_factory=lambda: Path(".mllgraph").resolve())
    # gRPC services.
    ingestion_port: int = 50051
    selection_port: int = 50052
    inference_port: int = 50053
    # The web page (`mllgraph serve web`).
    web_port: int = 8080
    # Largest request body the web page reads (uploads included); more: 413, nothing read.
    web_max_body_bytes: int = 32 * 1024 * 1024
    # Host names the web page answers besides the loopback ones (comma-separated; "*": any);
    # other Host headers are refused (DNS rebinding).
    web_allowed_hosts: str = ""
    # Calls in progress per service, in budgets counted apart (services/limits.py); one more
    # is refused (RESOURCE_EXHAUSTED), never queued. Unary calls of the services' RPCs:
    max_concurrent_rpcs: int = 128
    # ... their streaming calls (ClassifyStream, UploadWeights, AddProbes):
    max_concurrent_streams: int = 32
    # ... health Watch and reflection streams (they need no token); health Check is never counted:
    max_open_streams: int = 16
    # ... and streams of each of those two kinds one caller (token name, else address) holds.
    max_streams_per_caller: int = 8
    # A client- or bidi-streaming call that receives no message this long ends DEADLINE_EXCEEDED.
    stream_idle_timeout_s: float = 30.0
    # Health Watch and reflection streams end after this, whatever deadline the client sent.
    open_stream_max_s: float = 300.0
    # The deadline of a call that came without one: one request message / streamed requests.
    rpc_default_deadline_s: float = 60.0
    stream_default_deadline_s: float = 3600.0
    # Stored plans (mllgraph.select.retention): the newest plan_max_count are kept, and none
    # older than plan_max_age_s (0: no age limit); an evicted plan is NOT_FOUND.
    plan_max_count: int = 10_000
    plan_max_age_s: float = 7 * 24 * 3600.0
    # "auto" picks CUDA when present, else the CPU.
    device: str = "auto"
    # Inference service limits and batching (see mllgraph.reuse).
    infer_max_image_pixels: int = 4096 * 4096  # per image; more: RESOURCE_EXHAUSTED
    infer_max_images: int = 256  # per request; more: RESOURCE_EXHAUSTED
    infer_max_batch: int = 64  # images per model pass (larger requests are split)
    # On the CPU a pass runs in chunks of this many images (0: the whole pass at once):
    # small chunks keep a convnet's activations in cache: 3.2x the images/s of whole batches
    # for an EfficientNet-Lite0/1/2 plan on 2 cores (`mllgraph bench infer --cpu-chunks`).
    infer_cpu_chunk: int = 4
    infer_max_delay_ms: float = 2.0  # longest a request waits for others to batch with
    infer_cache_mb: int = 4096  # device memory for loaded experts (LRU beyond)
    # Host memory for experts' outputs kept by image content (mllgraph.reuse.outputs): an
    # image asked about again, under any plan, runs no model it has met. 0: off.
    infer_output_cache_mb: int = 256
    # Admission control: decoded pixels of all requests in flight together (one budget per
    # service process). A request waits for room (up to its deadline); one that alone needs
    # more is RESOURCE_EXHAUSTED. Default: two requests at the per-request limit.
    infer_max_inflight_pixels: int = 2 * 4 * 4096 * 4096
    # The same for AddProbes' decoding in the ingestion service (one image at a time per call,
    # kept at 224 px afterwards). Default: two images at the per-image limit.
    probe_max_inflight_pixels: int = 2 * 4096 * 4096
    # Inputs from callers (README "Running it for others"). RegisterModel's weights_path is
    # read only under `import_dir` (None: weights_path refused; upload instead).
    import_dir: Path | None = None
    # Uploads kept until registered plus uploads in progress, together (one caller: half).
    max_pending_upload_bytes: int = 8 * 1024**3
    max_upload_bytes: int = 2 * 1024**3  # UploadWeights and weights_bytes; more: RESOURCE_EXHAUSTED
    upload_ttl_s: float = 24 * 3600.0  # uploads not registered within this are removed
    max_probe_images: int = 2000  # images per AddProbes call; more: RESOURCE_EXHAUSTED
    # Largest model RegisterModel builds (parameters; checked on the meta device, before any
    # memory is spent): more is INVALID_ARGUMENT. ViT-L/16 has 304M, ViT-H/14 632M.
    max_model_params: int = 500_000_000
    # Selection service: what SelectHeads reads from the graph, kept per catalogue version
    # (entries: one per concept and query kind; LRU beyond; 0 turns the cache off).
    select_cache_entries: int = 20_000
    # ... and each model's softmax row statistics on its probe images (16 bytes per image per
    # model), so a candidate's evidence reads only its heads (LRU beyond; 0: off).
    select_probe_stats_mb: int = 256
    # numpy's and scipy's BLAS threads, set once at start-up (`threads.set_blas_threads`; 0:
    # the library's default, one per core). Selection and combination are many small matrix
    # operations, where a second thread only waits: on a loaded 2-core machine two threads
    # made SelectHeads 4x slower. OPENBLAS_NUM_THREADS in the environment wins.
    blas_threads: int = 1
    # Threads on which one request's independent numeric work runs at once (a selection's
    # stacked fits; `threads.work_pool`, shared by all requests): 0 one per core, at most 4;
    # 1 runs it in the request's own thread.
    work_threads: int = 0
    # Processes that train a hub's experts at once, one torch thread each (`hub.workers`;
    # 0: one per core this process may use, at most 4).
    train_workers: int = 0
    # Where batch work (labelling) runs: "local" (this process) or "ray" (one task per model;
    # a local Ray started on this machine, or the cluster at ray_address).
    executor: str = "local"
    ray_address: str | None = None  # MLLGRAPH_RAY_ADDRESS, else RAY_ADDRESS; None: start one
    ray_num_cpus: int | None = None  # CPUs of a Ray started here; None: this machine's
    wordnet_dir: Path = Path("/usr/share/wordnet")
    fashion_mnist_dir: Path = Path("/usr/share/datasets/fashion-mnist")
    # The emoji world's npm packages and rasters (mllgraph.hubs.emoji): outside the home on
    # purpose, so every test run (each with its own temporary home) reuses one download.
    emoji_cache: Path = field(
        default_factory=lambda: Path("~/.cache/mllgraph/emoji").expanduser().resolve()
    )
    # Benchmark and demo reports (the web page's Results page reads the latest one).
    reports_dir: Path = Path("reports")
    # Serving to others (see services/security.py and README "Running it for others").
    tls_cert: Path | None = None  # server certificate chain (PEM)
    tls_key: Path | None = None  # its private key (PEM)
    tls_client_ca: Path | None = None  # set: mutual TLS, clients need a cert from this CA
    tokens_file: Path | None = None  # lines "scope name sha256-of-token"
    tokens: str = ""  # the same entries inline, separated by newlines or ";"
    insecure: bool = False  # allow a non-loopback bind without TLS and tokens (--insecure)
    # Clients (CLI, mllgraph.auth.open_channel): the token to send and the CA to trust.
    client_token: str = ""
    tls_ca: Path | None = None
    client_cert: Path | None = None  # mutual TLS: the client's certificate and key
    client_key: Path | None = None
    # Prometheus endpoints (0: off), on `metrics_host`.
    ingestion_metrics_port: int = 0
    selection_metrics_port: int = 0
    inference_metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    # A model or probe store at a URL (mllgraph.hub.store): a model's CURRENT probe outputs
    # are looked up there at most this often (s); in between a reader keeps the version it has.
    store_refresh_s: float = 5.0

    @property
    def uses_local_neo4j(self) -> bool:
        return self.neo4j_uri is None

    @property
    def neo4j_password(self) -> str:
        """NEO4J_PASSWORD when given. Else, for the project-managed server, the random
        password kept in its folder (`local_password`: made on first use); for a server of
        your own (NEO4J_URI), the old default."""
        if self.neo4j_password_given is not None:
            return self.neo4j_password_given
        if self.uses_local_neo4j:
            return local_password(self.neo4j_home)
        return LEGACY_NEO4J_PASSWORD

    @property
    def bolt_uri(self) -> str:
        return self.neo4j_uri or f"bolt://127.0.0.1:{self.local_neo4j_port}"

    @property
    def neo4j_home(self) -> Path:
        return self.home / "neo4j"

    @property
    def nltk_data(self) -> Path:
        return self.home / "nltk_data"

    @property
    def model_store_url(self) -> str:
        """Where the model store is: a local path (the default) or any fsspec URL."""
        return _env("MLLGRAPH_MODEL_STORE", str(self.home / "models"))

    @property
    def probe_store_url(self) -> str:
        """Where the probe images are: a local path (the default) or any fsspec URL."""
        return _env("MLLGRAPH_PROBE_STORE", str(self.home / "probes"))

    @property
    def model_store(self) -> Path:
        """The model store's local folder: the store, or a remote store's local cache."""
        return paths.local_root(self.home, paths.MODEL_STORE_VAR, self.model_store_url)

    @property
    def probe_store(self) -> Path:
        """The probe store's local folder: the store, or a remote store's local cache."""
        return paths.local_root(self.home, paths.PROBE_STORE_VAR, self.probe_store_url)

    @property
    def upload_dir(self) -> Path:
        """Streamed weights (UploadWeights), content-addressed, until registered."""
        return self.model_store / "uploads"

    @property
    def plan_store(self) -> Path:
        return self.home / "plans"

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            neo4j_uri=os.environ.get("NEO4J_URI") or None,
            neo4j_user=_env("NEO4J_USER", cls.neo4j_user),
            neo4j_password_given=os.environ.get("NEO4J_PASSWORD") or None,
            neo4j_database=_env("NEO4J_DATABASE", cls.neo4j_database),
            local_neo4j_port=int(_env("MLLGRAPH_NEO4J_PORT", str(cls.local_neo4j_port))),
            local_neo4j_heap=_env("MLLGRAPH_NEO4J_HEAP", cls.local_neo4j_heap),
            local_neo4j_pagecache=_env("MLLGRAPH_NEO4J_PAGECACHE", cls.local_neo4j_pagecache),
            neo4j_transaction_timeout_s=int(
                _env("MLLGRAPH_NEO4J_TX_TIMEOUT_S", str(cls.neo4j_transaction_timeout_s))
            ),
            query_timeout_s=float(_env("MLLGRAPH_QUERY_TIMEOUT_S", str(cls.query_timeout_s))),
            query_max_rows=int(_env("MLLGRAPH_QUERY_MAX_ROWS", str(cls.query_max_rows))),
            home=Path(_env("MLLGRAPH_HOME", ".mllgraph")).resolve(),
            ingestion_port=int(_env("MLLGRAPH_INGESTION_PORT", str(cls.ingestion_port))),
            selection_port=int(_env("MLLGRAPH_SELECTION_PORT", str(cls.selection_port))),
            inference_port=int(_env("MLLGRAPH_INFERENCE_PORT", str(cls.inference_port))),
            web_port=int(_env("MLLGRAPH_WEB_PORT", str(cls.web_port))),
            web_max_body_bytes=int(
                _env("MLLGRAPH_WEB_MAX_BODY_BYTES", str(cls.web_max_body_bytes))
            ),
            web_allowed_hosts=_env("MLLGRAPH_WEB_ALLOWED_HOSTS", cls.web_allowed_hosts),
            max_concurrent_rpcs=int(
                _env("MLLGRAPH_MAX_CONCURRENT_RPCS", str(cls.max_concurrent_rpcs))
            ),
            max_concurrent_streams=int(
                _env("MLLGRAPH_MAX_CONCURRENT_STREAMS", str(cls.max_concurrent_streams))
            ),
            max_open_streams=int(_env("MLLGRAPH_MAX_OPEN_STREAMS", str(cls.max_open_streams))),
            max_streams_per_caller=int(
                _env("MLLGRAPH_MAX_STREAMS_PER_CALLER", str(cls.max_streams_per_caller))
            ),
            stream_idle_timeout_s=float(
                _env("MLLGRAPH_STREAM_IDLE_TIMEOUT_S", str(cls.stream_idle_timeout_s))
            ),
            open_stream_max_s=float(_env("MLLGRAPH_OPEN_STREAM_MAX_S", str(cls.open_stream_max_s))),
            rpc_default_deadline_s=float(
                _env("MLLGRAPH_RPC_DEFAULT_DEADLINE_S", str(cls.rpc_default_deadline_s))
            ),
            stream_default_deadline_s=float(
                _env("MLLGRAPH_STREAM_DEFAULT_DEADLINE_S", str(cls.stream_default_deadline_s))
            ),
            plan_max_count=int(_env("MLLGRAPH_PLAN_MAX_COUNT", str(cls.plan_max_count))),
            plan_max_age_s=float(_env("MLLGRAPH_PLAN_MAX_AGE_S", str(cls.plan_max_age_s))),
            device=_env("MLLGRAPH_DEVICE", cls.device),
            infer_max_image_pixels=int(
                _env("MLLGRAPH_INFER_MAX_IMAGE_PIXELS", str(cls.infer_max_image_pixels))
            ),
            infer_max_images=int(_env("MLLGRAPH_INFER_MAX_IMAGES", str(cls.infer_max_images))),
            infer_max_batch=int(_env("MLLGRAPH_INFER_MAX_BATCH", str(cls.infer_max_batch))),
            infer_cpu_chunk=int(_env("MLLGRAPH_INFER_CPU_CHUNK", str(cls.infer_cpu_chunk))),
            infer_max_delay_ms=float(
                _env("MLLGRAPH_INFER_MAX_DELAY_MS", str(cls.infer_max_delay_ms))
            ),
            infer_cache_mb=int(_env("MLLGRAPH_INFER_CACHE_MB", str(cls.infer_cache_mb))),
            infer_output_cache_mb=int(
                _env("MLLGRAPH_INFER_OUTPUT_CACHE_MB", str(cls.infer_output_cache_mb))
            ),
            infer_max_inflight_pixels=int(
                _env("MLLGRAPH_INFER_MAX_INFLIGHT_PIXELS", str(cls.infer_max_inflight_pixels))
            ),
            probe_max_inflight_pixels=int(
                _env("MLLGRAPH_PROBE_MAX_INFLIGHT_PIXELS", str(cls.probe_max_inflight_pixels))
            ),
            import_dir=_path_env("MLLGRAPH_IMPORT_DIR"),
            max_pending_upload_bytes=int(
                _env("MLLGRAPH_MAX_PENDING_UPLOAD_BYTES", str(cls.max_pending_upload_bytes))
            ),
            max_upload_bytes=int(_env("MLLGRAPH_MAX_UPLOAD_BYTES", str(cls.max_upload_bytes))),
            upload_ttl_s=float(_env("MLLGRAPH_UPLOAD_TTL_S", str(cls.upload_ttl_s))),
            max_probe_images=int(_env("MLLGRAPH_MAX_PROBE_IMAGES", str(cls.max_probe_images))),
            max_model_params=int(_env("MLLGRAPH_MAX_MODEL_PARAMS", str(cls.max_model_params))),
            select_cache_entries=int(
                _env("MLLGRAPH_SELECT_CACHE_ENTRIES", str(cls.select_cache_entries))
            ),
            select_probe_stats_mb=int(
                _env("MLLGRAPH_SELECT_PROBE_STATS_MB", str(cls.select_probe_stats_mb))
            ),
            blas_threads=int(_env("MLLGRAPH_BLAS_THREADS", str(cls.blas_threads))),
            work_threads=int(_env("MLLGRAPH_WORK_THREADS", str(cls.work_threads))),
            train_workers=int(_env("MLLGRAPH_TRAIN_WORKERS", str(cls.train_workers))),
            executor=_env("MLLGRAPH_EXECUTOR", cls.executor).strip().lower(),
            ray_address=os.environ.get("MLLGRAPH_RAY_ADDRESS")
            or os.environ.get("RAY_ADDRESS")
            or None,
            ray_num_cpus=int(os.environ["MLLGRAPH_RAY_NUM_CPUS"])
            if os.environ.get("MLLGRAPH_RAY_NUM_CPUS")
            else None,
            wordnet_dir=Path(_env("MLLGRAPH_WORDNET_DIR", str(cls.wordnet_dir))),
            fashion_mnist_dir=Path(_env("MLLGRAPH_FASHION_MNIST_DIR", str(cls.fashion_mnist_dir))),
            emoji_cache=Path(_env("MLLGRAPH_EMOJI_CACHE", "~/.cache/mllgraph/emoji"))
            .expanduser()
            .resolve(),
            reports_dir=Path(_env("MLLGRAPH_REPORTS_DIR", str(cls.reports_dir))),
            tls_cert=_path_env("MLLGRAPH_TLS_CERT"),
            tls_key=_path_env("MLLGRAPH_TLS_KEY"),
            tls_client_ca=_path_env("MLLGRAPH_TLS_CLIENT_CA"),
            tokens_file=_path_env("MLLGRAPH_TOKENS_FILE"),
            tokens=_env("MLLGRAPH_TOKENS", ""),
            insecure=_env("MLLGRAPH_INSECURE", "0").lower() in ("1", "true", "yes"),
            client_token=_env("MLLGRAPH_TOKEN", ""),
            tls_ca=_path_env("MLLGRAPH_TLS_CA"),
            client_cert=_path_env("MLLGRAPH_CLIENT_CERT"),
            client_key=_path_env("MLLGRAPH_CLIENT_KEY"),
            ingestion_metrics_port=int(_env("MLLGRAPH_METRICS_PORT_INGESTION", "0")),
            selection_metrics_port=int(_env("MLLGRAPH_METRICS_PORT_SELECTION", "0")),
            inference_metrics_port=int(_env("MLLGRAPH_METRICS_PORT_INFERENCE", "0")),
            metrics_host=_env("MLLGRAPH_METRICS_HOST", cls.metrics_host),
            store_refresh_s=float(_env("MLLGRAPH_STORE_REFRESH_S", str(cls.store_refresh_s))),
        )

    def torch_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
