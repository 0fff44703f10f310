"""Authentication and TLS of the three services (services/security.py, mllgraph/auth.py).

Real servers on free loopback ports: ingestion and selection against the suite's Neo4j,
inference without Neo4j. Certificates are made here with `cryptography` (a CA, a server
certificate for 127.0.0.1/localhost, a client certificate for mutual TLS).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mllgraph import auth
from mllgraph.errors import FailedPrecondition, InvalidArgument
from mllgraph.settings import Settings
from mllgraph.v1 import (
    inference_pb2,
    inference_pb2_grpc,
    ingestion_pb2,
    ingestion_pb2_grpc,
    selection_pb2,
    selection_pb2_grpc,
)
from services import security
from tests.helpers import Loop

CODE = grpc.StatusCode

# --- certificates ---------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate | None, key: Any = None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, server_key, client_key, other_key = (
        ec.generate_private_key(ec.SECP256R1()) for _ in range(4)
    )
    ca = _cert("mllgraph test CA", ca_key, None, ca=True)
    issuer = (ca.subject, ca_key)
    return Pki(
        ca=_write(d / "ca.pem", ca),
        server_cert=_write(d / "server.pem", _cert("localhost", server_key, issuer, server=True)),
        server_key=_write(d / "server.key", None, server_key),
        client_cert=_write(d / "client.pem", _cert("alice", client_key, issuer)),
        client_key=_write(d / "client.key", None, client_key),
        other_ca=_write(d / "other.pem", _cert("someone else", other_key, None, ca=True)),
    )


# --- tokens ---------------------------------------------------------------------------------


@dataclass
class Tokens:
    read: str
    write: str
    admin: str
    file: Path


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Tokens:
    made = {scope: auth.create_token(scope, f"{scope}-user") for scope in auth.SCOPES}
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    path.write_text(
        "# scope name sha256\n" + "".join(e.line() + "\n" for _, e in made.values()),
        encoding="utf-8",
    )
    return Tokens(made["read"][0], made["write"][0], made["admin"][0], path)


def test_token_table_finds_the_entry_by_secret_and_stores_only_hashes(tokens: Tokens) -> None:
    table = auth.TokenTable(auth.parse_tokens(tokens.file.read_text(), "f"))
    assert [table.lookup(t).scope for t in (tokens.read, tokens.write, tokens.admin)] == list(
        auth.SCOPES
    )
    assert table.lookup(tokens.read + "x") is None
    assert table.lookup("") is None
    text = tokens.file.read_text()
    assert tokens.read not in text and auth.hash_token(tokens.read) in text


def test_token_entries_are_validated() -> None:
    token, entry = auth.create_token("write", "bob")
    assert token.startswith(auth.TOKEN_PREFIX) and len(token) > 40
    assert auth.parse_tokens(f"{entry.line()} ; # comment\n", "env") == [entry]
    with pytest.raises(InvalidArgument, match="SHA-256"):
        auth.parse_tokens(f"read bob {token}", "f")  # the secret itself, not its hash
    with pytest.raises(InvalidArgument, match="scope 'owner'"):
        auth.parse_tokens(f"owner bob {entry.sha256}", "f")
    with pytest.raises(InvalidArgument, match="got 2 fields"):
        auth.parse_tokens("read bob", "f")
    with pytest.raises(InvalidArgument, match="repeated: bob"):
        auth.TokenTable([entry, dataclasses.replace(entry, scope="read")])
    with pytest.raises(InvalidArgument, match="token name"):
        auth.create_token("read", "has space")


def test_scopes_are_ordered() -> None:
    assert auth.scope_allows("admin", "write") and auth.scope_allows("write", "read")
    assert not auth.scope_allows("read", "write") and not auth.scope_allows("write", "admin")


def test_every_rpc_of_the_three_services_has_a_scope() -> None:
    methods = {
        f"/{svc.full_name}/{m.name}"
        for pb2 in (ingestion_pb2, selection_pb2, inference_pb2)
        for svc in pb2.DESCRIPTOR.services_by_name.values()
        for m in svc.methods
    }
    assert methods == set(security.METHOD_SCOPES)
    writes = {m.rsplit("/", 1)[1] for m, s in security.METHOD_SCOPES.items() if s == "write"}
    assert writes == {"RegisterModel", "UploadWeights", "AddProbes", "LabelModel", "DeleteModel"}
    assert security.required_scope("/grpc.health.v1.Health/Check") is None
    assert security.required_scope("/mllgraph.v1.IngestionService/Unlisted") == "admin"


def test_loopback_hosts() -> None:
    assert all(map(auth.is_loopback_host, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]))
    assert not any(map(auth.is_loopback_host, ["0.0.0.0", "::", "10.0.0.1", "example.org"]))
    assert auth.target_host("127.0.0.1:50051") == "127.0.0.1"
    assert auth.target_host("[::1]:50051") == "::1"
    assert auth.target_host("dns:///svc.example:443") == "svc.example"


# --- running servers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


def _with_tokens(settings: Settings, tokens: Tokens, **changes: Any) -> Settings:
    return dataclasses.replace(settings, tokens_file=tokens.file, **changes)


@pytest.fixture(scope="module")
def ingestion_port(
    loop: Loop, neo4j_settings: Settings, graph: Any, tokens: Tokens
) -> Iterator[int]:
    from services import ingestion

    running = loop.call(
        ingestion.start(_with_tokens(neo4j_settings, tokens), 0, health_interval=0.5)
    )
    yield running.port
    loop.call(running.close(1.0))


@pytest.fixture(scope="module")
def selection_port(
    loop: Loop, neo4j_settings: Settings, graph: Any, tokens: Tokens
) -> Iterator[int]:
    from mllgraph.ground.resolve import default_resolver
    from services import selection

    settings = _with_tokens(neo4j_settings, tokens)
    servicer = selection.SelectionServicer(
        settings, resolver=default_resolver(settings, use_embeddings=False)
    )
    running = loop.call(selection.start(settings, 0, servicer=servicer))
    yield running.port
    loop.call(running.close(1.0))


def _start_inference(loop: Loop, settings: Settings) -> Any:
    from services import inference

    return loop.call(
        inference.start_server(settings, port=0, use_neo4j=False, health_interval_s=0.2)
    )


@pytest.fixture(scope="module")
def inference_port(loop: Loop, tokens: Tokens) -> Iterator[int]:
    running = _start_inference(loop, _with_tokens(Settings(device="cpu"), tokens))
    yield running.port
    loop.call(running.stop(1.0))


def _code(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    """The status a blocking call ends with (OK when it returns)."""
    try:
        result = call()
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            list(result)
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    return CODE.OK, ""


def _md(token: str | None) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")] if token else []


def _write_calls(stub: ingestion_pb2_grpc.IngestionServiceStub) -> dict[str, Callable[..., Any]]:
    return {
        "RegisterModel": lambda md: stub.RegisterModel(
            ingestion_pb2.RegisterModelRequest(), metadata=md, timeout=30
        ),
        "UploadWeights": lambda md: stub.UploadWeights(
            iter([ingestion_pb2.WeightsChunk()]), metadata=md, timeout=30
        ),
        "AddProbes": lambda md: stub.AddProbes(
            iter([ingestion_pb2.ProbeImage()]), metadata=md, timeout=30
        ),
        "LabelModel": lambda md: stub.LabelModel(
            ingestion_pb2.LabelModelRequest(model_id="nobody@1"), metadata=md, timeout=30
        ),
        "DeleteModel": lambda md: stub.DeleteModel(
            ingestion_pb2.DeleteModelRequest(model_id="nobody@1", allow_missing=True),
            metadata=md,
            timeout=30,
        ),
    }


def test_every_write_rpc_needs_a_write_token(ingestion_port: int, tokens: Tokens) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{ingestion_port}") as channel:
        calls = _write_calls(ingestion_pb2_grpc.IngestionServiceStub(channel))
        for name, call in calls.items():
            code, msg = _code(lambda call=call: call(_md(None)))
            assert code == CODE.UNAUTHENTICATED, (name, code, msg)
            assert "scope 'write'" in msg, msg
            code, msg = _code(lambda call=call: call(_md("mlg_not-a-token")))
            assert code == CODE.UNAUTHENTICATED, (name, code, msg)
            code, msg = _code(lambda call=call: call(_md(tokens.read)))
            assert code == CODE.PERMISSION_DENIED, (name, code, msg)
            assert "token 'read-user' has scope 'read'" in msg and "needs scope 'write'" in msg
            for token in (tokens.write, tokens.admin):  # past the check: the handler answers
                code, msg = _code(lambda call=call, token=token: call(_md(token)))
                assert code not in (CODE.UNAUTHENTICATED, CODE.PERMISSION_DENIED), (name, msg)
        # DeleteModel with allow_missing is a full success for a writer.
        assert _code(lambda: calls["DeleteModel"](_md(tokens.write)))[0] == CODE.OK


def test_a_read_token_lists_and_gets_but_nothing_without_one(
    ingestion_port: int, tokens: Tokens
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{ingestion_port}") as channel:
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
        listing = stub.ListModels(
            ingestion_pb2.ListModelsRequest(), metadata=_md(tokens.read), timeout=30
        )
        assert isinstance(listing, ingestion_pb2.ListModelsResponse)
        code, _ = _code(
            lambda: stub.GetModel(
                ingestion_pb2.GetModelRequest(model_id="nobody@1"), metadata=_md(tokens.read)
            )
        )
        assert code == CODE.NOT_FOUND
        code, msg = _code(lambda: stub.ListModels(ingestion_pb2.ListModelsRequest(), timeout=30))
        assert code == CODE.UNAUTHENTICATED and "scope 'read'" in msg


def test_health_and_reflection_need_no_token(ingestion_port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{ingestion_port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
        assert reply.status in (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = list(
            reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([request]), timeout=10
            )
        )
        names = {s.name for s in replies[0].list_services_response.service}
        assert "mllgraph.v1.IngestionService" in names


def test_a_read_token_selects(selection_port: int, tokens: Tokens) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{selection_port}") as channel:
        stub = selection_pb2_grpc.SelectionServiceStub(channel)
        request = selection_pb2.SelectHeadsRequest(
            classes=[selection_pb2.TaskClass(name=n) for n in ("sandal", "sneaker")], budget=2
        )
        code, msg = _code(lambda: stub.SelectHeads(request, timeout=60))
        assert code == CODE.UNAUTHENTICATED, msg
        code, msg = _code(lambda: stub.SelectHeads(request, metadata=_md(tokens.read), timeout=60))
        assert code not in (CODE.UNAUTHENTICATED, CODE.PERMISSION_DENIED, CODE.INTERNAL), msg
        code, msg = _code(
            lambda: stub.GetPlan(
                selection_pb2.GetPlanRequest(plan_id="nope"), metadata=_md(tokens.read), timeout=30
            )
        )
        assert code == CODE.NOT_FOUND, msg


def test_a_read_token_classifies(
    inference_port: int, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        grpc.insecure_channel(f"127.0.0.1:{inference_port}") as channel,
        caplog.at_level(logging.INFO, logger="mllgraph.services"),
    ):
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        empty = inference_pb2.ClassifyRequest()
        assert _code(lambda: stub.Classify(empty, timeout=30))[0] == CODE.UNAUTHENTICATED
        assert (
            _code(lambda: stub.ClassifyStream(iter([empty]), timeout=30))[0] == CODE.UNAUTHENTICATED
        )
        # Past the check, the handler itself refuses a request without a plan.
        code, msg = _code(lambda: stub.Classify(empty, metadata=_md(tokens.read), timeout=30))
        assert code == CODE.INVALID_ARGUMENT, msg
        code, msg = _code(
            lambda: stub.ClassifyStream(iter([empty]), metadata=_md(tokens.read), timeout=30)
        )
        assert code == CODE.INVALID_ARGUMENT, msg
    # The log names the caller by its token name (never the token).
    handled = [r for r in caplog.records if r.getMessage().startswith("rpc method=")]
    assert handled and all(r.caller == "read-user" for r in handled)
    assert not any(tokens.read in r.getMessage() for r in caplog.records)


# --- TLS ------------------------------------------------------------------------------------


def _tls_settings(pki: Pki, tokens: Tokens, **changes: Any) -> Settings:
    return Settings(
        device="cpu",
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tokens_file=tokens.file,
        **changes,
    )


def _classify_code(channel: grpc.Channel, **kwargs: Any) -> tuple[grpc.StatusCode, str]:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    return _code(lambda: stub.Classify(inference_pb2.ClassifyRequest(), timeout=10, **kwargs))


def test_tls_server_answers_tls_clients_and_refuses_plaintext(
    loop: Loop, pki: Pki, tokens: Tokens
) -> None:
    running = _start_inference(loop, _tls_settings(pki, tokens))
    target = f"127.0.0.1:{running.port}"
    try:
        client = Settings(tls_ca=pki.ca, client_token=tokens.read)
        with auth.open_channel(target, client) as channel:
            assert _classify_code(channel)[0] == CODE.INVALID_ARGUMENT  # answered
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert health.status in (1, 2)
        with auth.open_channel(target, dataclasses.replace(client, client_token="")) as channel:
            assert _classify_code(channel)[0] == CODE.UNAUTHENTICATED
        with grpc.insecure_channel(target) as channel:
            assert _classify_code(channel, metadata=_md(tokens.read))[0] == CODE.UNAVAILABLE
        untrusted = Settings(tls_ca=pki.other_ca, client_token=tokens.read)
        with auth.open_channel(target, untrusted) as channel:
            assert _classify_code(channel)[0] == CODE.UNAVAILABLE
    finally:
        loop.call(running.stop(0.5))


def test_mutual_tls_needs_a_client_certificate(loop: Loop, pki: Pki, tokens: Tokens) -> None:
    running = _start_inference(loop, _tls_settings(pki, tokens, tls_client_ca=pki.ca))
    target = f"127.0.0.1:{running.port}"
    try:
        with_cert = Settings(
            tls_ca=pki.ca,
            client_cert=pki.client_cert,
            client_key=pki.client_key,
            client_token=tokens.read,
        )
        with auth.open_channel(target, with_cert) as channel:
            assert _classify_code(channel)[0] == CODE.INVALID_ARGUMENT
        without = Settings(tls_ca=pki.ca, client_token=tokens.read)
        with auth.open_channel(target, without) as channel:
            assert _classify_code(channel)[0] == CODE.UNAVAILABLE
    finally:
        loop.call(running.stop(0.5))


def test_open_channel_sends_tokens_in_plain_text_only_to_loopback(
    inference_port: int, tokens: Tokens
) -> None:
    client = Settings(client_token=tokens.read)
    with auth.open_channel(f"127.0.0.1:{inference_port}", client) as channel:
        assert _classify_code(channel)[0] == CODE.INVALID_ARGUMENT  # token went through
    with pytest.raises(FailedPrecondition, match="plain text"):
        auth.open_channel("10.1.2.3:50053", client)
    with pytest.raises(FailedPrecondition, match="go together"):
        auth.channel_credentials(Settings(tls_ca=Path("ca"), client_cert=Path("c")))


def test_broken_tls_or_token_configuration_is_a_clear_error(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="go together"):
        security.ServerSecurity.from_settings(Settings(tls_cert=pki.server_cert))
    with pytest.raises(FailedPrecondition, match="cannot read the TLS key"):
        security.ServerSecurity.from_settings(
            Settings(tls_cert=pki.server_cert, tls_key=tmp_path / "missing.key")
        )
    with pytest.raises(FailedPrecondition, match="MLLGRAPH_TOKENS_FILE"):
        security.ServerSecurity.from_settings(Settings(tokens_file=tmp_path / "missing"))


# --- where a server may listen --------------------------------------------------------------


def test_binding_all_addresses_needs_tls_and_tokens_or_insecure(
    loop: Loop, pki: Pki, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    from services import inference

    def start(settings: Settings) -> Any:
        return loop.call(inference.start_server(settings, port=0, host="0.0.0.0", use_neo4j=False))

    for settings in (Settings(device="cpu"), Settings(device="cpu", tokens_file=tokens.file)):
        with pytest.raises(FailedPrecondition, match="refusing to listen on 0.0.0.0") as e:
            start(settings)
        assert "--insecure" in str(e.value)
    with caplog.at_level(logging.WARNING, logger="mllgraph.services.security"):
        running = start(Settings(device="cpu", insecure=True))
    try:
        assert any("INSECURE" in r.getMessage() for r in caplog.records)
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            assert _classify_code(channel)[0] == CODE.INVALID_ARGUMENT  # no token needed
    finally:
        loop.call(running.stop(0.5))
    running = start(_tls_settings(pki, tokens))  # TLS and tokens: allowed, no warning needed
    loop.call(running.stop(0.5))


def test_the_service_command_refuses_a_public_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    from services import inference

    for name in (
        "MLLGRAPH_TLS_CERT",
        "MLLGRAPH_TLS_KEY",
        "MLLGRAPH_TOKENS_FILE",
        "MLLGRAPH_TOKENS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLLGRAPH_DEVICE", "cpu")
    assert inference.main(["--host", "0.0.0.0", "--port", "0", "--no-neo4j"]) == 1


def test_cli_creates_a_token(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from mllgraph.cli import main

    assert main(["tokens", "create", "--scope", "write", "--name", "ci-bot"]) == 0
    out = capsys.readouterr().out
    token = next(w for w in out.split() if w.startswith(auth.TOKEN_PREFIX))
    line = next(x.strip() for x in out.splitlines() if x.strip().startswith("write ci-bot "))
    table = auth.TokenTable(auth.parse_tokens(line, "printed line"))
    assert table.lookup(token).name == "ci-bot"
    assert main(["tokens", "create", "--scope", "read", "--name", "has space"]) == 1
    with pytest.raises(SystemExit):
        main(["tokens", "create", "--scope", "root", "--name", "x"])
