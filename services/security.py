"""Who may call what: server TLS, bearer tokens with scopes, and where a server may listen.

* `ServerSecurity.from_settings`: TLS from ``MLLGRAPH_TLS_CERT``/``MLLGRAPH_TLS_KEY`` (mutual
  TLS when ``MLLGRAPH_TLS_CLIENT_CA`` is set) and the token table from
  ``MLLGRAPH_TOKENS_FILE``/``MLLGRAPH_TOKENS`` (format: `mllgraph.auth`).
* `AuthInterceptor`: with tokens configured, every call of the mllgraph services needs
  ``authorization: Bearer <token>`` whose scope covers `METHOD_SCOPES` (``read`` < ``write``
  < ``admin``). No or unknown token: UNAUTHENTICATED; a known token without the scope:
  PERMISSION_DENIED; both messages name the scope needed. Health and reflection stay open.
  A method missing from the table needs ``admin``.
* `check_bind`: with neither TLS nor tokens a server listens on loopback only; another
  address needs both, or ``--insecure`` (``MLLGRAPH_INSECURE=1``), which logs a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from mllgraph.auth import SCOPES, TokenTable, check_bind, read_pem, scope_allows
from mllgraph.errors import FailedPrecondition, MllgraphError, PermissionDenied, Unauthenticated
from mllgraph.settings import Settings
from services.errors import status_for
from services.telemetry import CALLER, is_open, metadata_value, wrap_handler

log = logging.getLogger("mllgraph.services.security")

_READ = ("SelectHeads", "GetPlan", "ExplainSelection", "Classify", "ClassifyStream")
_READ_INGESTION = ("GetModel", "ListModels", "GetLabelJob")
_WRITE_INGESTION = ("RegisterModel", "UploadWeights", "AddProbes", "LabelModel", "DeleteModel")

METHOD_SCOPES: dict[str, str] = {
    **{f"/mllgraph.v1.SelectionService/{m}": "read" for m in _READ[:3]},
    **{f"/mllgraph.v1.InferenceService/{m}": "read" for m in _READ[3:]},
    **{f"/mllgraph.v1.IngestionService/{m}": "read" for m in _READ_INGESTION},
    **{f"/mllgraph.v1.IngestionService/{m}": "write" for m in _WRITE_INGESTION},
}
"""The scope each RPC needs (full method path). Unlisted methods need ``admin``."""


def required_scope(method: str) -> str | None:
    """The scope `method` needs; None for health and reflection (open to all)."""
    if is_open(method):
        return None
    return METHOD_SCOPES.get(method, "admin")


def bearer_token(metadata: Any) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header, or None."""
    value = metadata_value(metadata, "authorization")
    if value is None:
        return None
    kind, _, token = value.strip().partition(" ")
    token = token.strip()
    return token if kind.lower() == "bearer" and token else None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks bearer tokens against `table` (see the module doc)."""

    def __init__(self, table: TokenTable) -> None:
        self.table = table

    def check(self, method: str, metadata: Any) -> str | None:
        """The caller's name, or None for an open method; raises Unauthenticated or
        PermissionDenied naming the scope `method` needs."""
        needed = required_scope(method)
        if needed is None:
            return None
        token = bearer_token(metadata)
        if token is None:
            raise Unauthenticated(
                f"{method} needs a bearer token with scope '{needed}' "
                "(metadata 'authorization: Bearer <token>'; set MLLGRAPH_TOKEN for the CLI)"
            )
        entry = self.table.lookup(token)
        if entry is None:
            raise Unauthenticated(
                f"the bearer token is not one this server knows; {method} needs a token "
                f"with scope '{needed}'"
            )
        if not scope_allows(entry.scope, needed):
            raise PermissionDenied(
                f"token '{entry.name}' has scope '{entry.scope}'; {method} needs scope '{needed}'"
            )
        return entry.name

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        try:
            name = self.check(method, handler_call_details.invocation_metadata)
        except MllgraphError as denied:
            return _denying(handler, method, denied)
        if name is None:
            return handler

        def enter(_context: Any) -> None:
            CALLER.set(name)

        return wrap_handler(handler, enter, lambda *_: None)


def _denying(
    handler: grpc.RpcMethodHandler, method: str, denied: MllgraphError
) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that only refuses the call."""
    code = status_for(denied)

    async def deny(_request: Any, context: grpc.aio.ServicerContext) -> None:
        log.warning("rpc_denied method=%s status=%s msg=%r", method, code.name, str(denied))
        await context.abort(code, str(denied))

    kinds = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
    return handler._replace(  # type: ignore[attr-defined]
        **{kind: deny for kind in kinds if getattr(handler, kind) is not None}
    )


@dataclass(frozen=True)
class ServerSecurity:
    """What `build_server` needs: TLS credentials (or None) and the token table."""

    credentials: grpc.ServerCredentials | None
    tokens: TokenTable
    mutual_tls: bool = False
    insecure: bool = False

    @property
    def tls(self) -> bool:
        return self.credentials is not None

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerSecurity:
        """Read certificates and tokens; FailedPrecondition naming what is missing or wrong."""
        credentials = None
        if bool(settings.tls_cert) != bool(settings.tls_key):
            raise FailedPrecondition("MLLGRAPH_TLS_CERT and MLLGRAPH_TLS_KEY go together")
        if settings.tls_client_ca and not settings.tls_cert:
            raise FailedPrecondition(
                "MLLGRAPH_TLS_CLIENT_CA (mutual TLS) needs MLLGRAPH_TLS_CERT and MLLGRAPH_TLS_KEY"
            )
        if settings.tls_cert and settings.tls_key:
            key = read_pem(settings.tls_key, "TLS key (MLLGRAPH_TLS_KEY)")
            cert = read_pem(settings.tls_cert, "TLS certificate (MLLGRAPH_TLS_CERT)")
            client_ca = read_pem(settings.tls_client_ca, "client CA (MLLGRAPH_TLS_CLIENT_CA)")
            credentials = grpc.ssl_server_credentials(
                [(key, cert)],
                root_certificates=client_ca,
                require_client_auth=client_ca is not None,
            )
        return cls(
            credentials,
            TokenTable.from_settings(settings),
            mutual_tls=bool(settings.tls_client_ca),
            insecure=settings.insecure,
        )

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """The auth interceptor when tokens are configured."""
        return [AuthInterceptor(self.tokens)] if self.tokens else []

    def check_bind(self, host: str) -> None:
        """Refuse a non-loopback `host` without TLS and tokens, unless insecure (warned)."""
        check_bind(
            host,
            tls=self.tls,
            tokens=bool(self.tokens),
            insecure=self.insecure,
            log=log,
            listen=("listen", "listening"),
            risk=("register, label and delete models", "read and change the catalogue"),
        )

    def describe(self) -> str:
        tls = "mutual" if self.mutual_tls else ("on" if self.tls else "off")
        return f"tls={tls} tokens={len(self.tokens)} scopes={'/'.join(SCOPES)}"
