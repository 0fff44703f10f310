"""Who may use the web page, from where, and how much one request may send.

The rules of the gRPC services (services/security.py, README "Running it for others"):

* **Bind** (`WebSecurity.check_bind`): with neither TLS (``MLLGRAPH_TLS_CERT``/``_KEY``) nor
  tokens the page listens on loopback only; another address needs both, or ``--insecure``
  (``MLLGRAPH_INSECURE=1``), which logs a warning.
* **Tokens**: with tokens configured (``MLLGRAPH_TOKENS_FILE``/``MLLGRAPH_TOKENS``; any scope,
  the page only reads) every page and ``/api/*`` needs one, except ``/login`` and
  ``/static/``. Scripts send ``Authorization: Bearer <token>``; a browser enters the token
  once on ``/login`` and keeps it in an HttpOnly cookie. No or unknown token: 401 (JSON) for
  the API and anything that does not ask for HTML, a redirect to ``/login`` for pages.
* **Host** (DNS rebinding): only the loopback names, the address the page is bound to and
  ``MLLGRAPH_WEB_ALLOWED_HOSTS`` are answered; any other Host header gets 421.
* **CSRF**: a POST needs the page's CSRF token (form field ``csrf_token`` or header
  ``X-CSRF-Token``, equal to the ``mllgraph_csrf`` cookie every response sets when missing),
  unless it carries ``Authorization: Bearer``, which a browser never adds to a cross-site
  request by itself. The routes check it (`require_csrf`): a form field is in the body.
* **Body**: at most ``MLLGRAPH_WEB_MAX_BODY_BYTES`` per request and `MAX_JSON_BYTES` for
  JSON: 413 before reading when Content-Length says so, else as soon as the count passes.
* **Access log**: one line per request on ``mllgraph.web.access``: method, path (no query
  string), status, duration, caller (the token's name, ``-`` without tokens), client address.
  Never a token.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from mllgraph.auth import TokenTable, check_bind, read_pem
from mllgraph.errors import FailedPrecondition, PermissionDenied
from mllgraph.settings import Settings

log = logging.getLogger("mllgraph.web")
ACCESS = logging.getLogger("mllgraph.web.access")

TOKEN_COOKIE = "mllgraph_token"
CSRF_COOKIE = "mllgraph_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
MAX_JSON_BYTES = 1024 * 1024  # 1000 class names of 256 characters fit several times over
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
OPEN_PATHS = ("/login",)  # answered without a token, with everything under /static/
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CSRF_VALUE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


class BodyTooLarge(HTTPException):
    """A request body over its limit (413), raised while the body is being read."""

    def __init__(self, limit: int, json_body: bool) -> None:
        super().__init__(
            413,
            f"the JSON body is over this server's limit of {limit:,} bytes; send fewer class names"
            if json_body
            else f"the request body is over this server's limit of {limit:,} bytes "
            "(MLLGRAPH_WEB_MAX_BODY_BYTES); send fewer or smaller images",
        )


def host_name(host: str) -> str:
    """A Host header's (or bind address's) name without port, lower case:
    ``[::1]:8080`` -> ``::1``, ``Example.org:80`` -> ``example.org``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host_name(host)).is_unspecified
    except ValueError:
        return False


def allowed_hosts(settings: Settings, bind_host: str | None = None) -> frozenset[str]:
    """The Host names the page answers: loopback names, the bind address unless it is a
    wildcard (0.0.0.0, ::), and ``MLLGRAPH_WEB_ALLOWED_HOSTS`` (comma-separated; ``*``: any)."""
    names = set(LOOPBACK_NAMES)
    names |= {host_name(n) for n in settings.web_allowed_hosts.split(",") if n.strip()}
    if bind_host and not _is_unspecified(bind_host):
        names.add(host_name(bind_host))
    return frozenset(names)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    kind, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if kind.lower() == "bearer" and token else None


@dataclass(frozen=True)
class WebSecurity:
    """The page's rules, from the settings (see the module doc)."""

    tokens: TokenTable
    hosts: frozenset[str]
    max_body_bytes: int
    tls: bool = False
    insecure: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, bind_host: str | None = None) -> WebSecurity:
        """FailedPrecondition naming the setting that is wrong."""
        if settings.web_max_body_bytes < 1:
            raise FailedPrecondition(
                f"MLLGRAPH_WEB_MAX_BODY_BYTES must be at least 1, got {settings.web_max_body_bytes}"
            )
        if bool(settings.tls_cert) != bool(settings.tls_key):
            raise FailedPrecondition("MLLGRAPH_TLS_CERT and MLLGRAPH_TLS_KEY go together")
        return cls(
            tokens=TokenTable.from_settings(settings),
            hosts=allowed_hosts(settings, bind_host),
            max_body_bytes=settings.web_max_body_bytes,
            tls=bool(settings.tls_cert),
            insecure=settings.insecure,
        )

    def check_bind(self, host: str) -> None:
        """Refuse a non-loopback `host` without TLS and tokens, unless insecure (warned)."""
        check_bind(
            host,
            tls=self.tls,
            tokens=bool(self.tokens),
            insecure=self.insecure,
            log=log,
            listen=("serve the web page", "serving the web page"),
            risk=(
                "use the services and Neo4j with this page's credentials",
                "use it with this page's credentials",
            ),
        )

    def host_allowed(self, host_header: str | None) -> bool:
        return bool(host_header) and ("*" in self.hosts or host_name(host_header) in self.hosts)

    def body_limit(self, content_type: str | None) -> tuple[int, bool]:
        """The byte limit for a body of `content_type`, and whether it is the JSON one."""
        if (content_type or "").split(";", 1)[0].strip().lower().endswith("json"):
            return min(self.max_body_bytes, MAX_JSON_BYTES), True
        return self.max_body_bytes, False

    def caller(self, headers: Headers, cookies: dict[str, str]) -> str | None:
        """The token's name; ``-`` when no tokens are configured; None without a known one.
        An Authorization header, when sent, decides alone (a bad one is not rescued by the
        cookie)."""
        if not self.tokens:
            return "-"
        authorization = headers.get("authorization")
        token = bearer_token(authorization) if authorization else cookies.get(TOKEN_COOKIE)
        entry = self.tokens.lookup(token) if token else None
        return entry.name if entry is not None else None

    def cookie(self, name: str, value: str, *, max_age: int | None = None) -> str:
        """A Set-Cookie value: HttpOnly, SameSite=Lax, Path=/, Secure under TLS."""
        parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Lax"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if self.tls:
            parts.append("Secure")
        return "; ".join(parts)


def uvicorn_tls(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS options from ``MLLGRAPH_TLS_CERT``/``_KEY`` (and ``_CLIENT_CA``: client
    certificates required), the files checked first; {} without TLS."""
    import ssl

    if not settings.tls_cert or not settings.tls_key:
        return {}
    read_pem(settings.tls_cert, "TLS certificate (MLLGRAPH_TLS_CERT)")
    read_pem(settings.tls_key, "TLS key (MLLGRAPH_TLS_KEY)")
    options: dict[str, Any] = {
        "ssl_certfile": str(settings.tls_cert),
        "ssl_keyfile": str(settings.tls_key),
    }
    if settings.tls_client_ca:
        read_pem(settings.tls_client_ca, "client CA (MLLGRAPH_TLS_CLIENT_CA)")
        options |= {"ssl_ca_certs": str(settings.tls_client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options


def _error(status: int, code: str, message: str, **headers: str) -> Response:
    return JSONResponse(
        {"error": message, "code": code, "field": None}, status_code=status, headers=headers
    )


def scope_path(request: Request) -> str:
    """The request's path (from the ASGI scope, whatever the Host header says)."""
    return str(request.scope.get("path") or "/")


def is_open(path: str) -> bool:
    """Whether `path` is answered without a token (signing in, the style sheet and script)."""
    return path in OPEN_PATHS or path.startswith("/static/")


def _wants_html(request: Request) -> bool:
    path = scope_path(request)
    return not path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


class Guard:
    """ASGI middleware applying a `WebSecurity` to every HTTP request (see the module doc)."""

    def __init__(self, app: ASGIApp, security: WebSecurity) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        started, status = time.perf_counter(), [500]
        state = scope.setdefault("state", {})
        csrf = request.cookies.get(CSRF_COOKIE, "")
        fresh_csrf = not _CSRF_VALUE.match(csrf)
        state["csrf_token"] = secrets.token_urlsafe(32) if fresh_csrf else csrf
        state["caller"] = self.security.caller(request.headers, request.cookies)

        async def send_logged(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                if fresh_csrf and state.get("host_ok"):
                    MutableHeaders(scope=message).append(
                        "set-cookie", self.security.cookie(CSRF_COOKIE, state["csrf_token"])
                    )
            await send(message)

        try:
            refusal = self.refusal(request, state)
            if refusal is not None:
                await refusal(scope, receive, send_logged)
                return
            state["csrf_ok"] = self._csrf_header_ok(request, state, fresh_csrf)
            limit, json_body = self.security.body_limit(request.headers.get("content-type"))
            await self.app(scope, _limited(receive, limit, json_body), send_logged)
        finally:
            self._log(request, status[0], started, state.get("caller"))

    def refusal(self, request: Request, state: dict) -> Response | None:
        """The response refusing `request` (Host, token, declared size), or None."""
        host = request.headers.get("host")
        if not self.security.host_allowed(host):
            return _error(
                421,
                "MISDIRECTED_REQUEST",
                f"this server does not answer for the host {host_name(host or '')[:100]!r}; "
                "add it to MLLGRAPH_WEB_ALLOWED_HOSTS if it is this server's name",
            )
        state["host_ok"] = True
        path = scope_path(request)
        if state["caller"] is None and not is_open(path):
            if _wants_html(request):
                return RedirectResponse(f"/login?next={quote(path)}", status_code=303)
            return _error(
                401,
                "UNAUTHENTICATED",
                "this server needs a token: send 'Authorization: Bearer <token>' (see `mllgraph "
                "tokens create`), or sign in on /login in a browser",
                **{"WWW-Authenticate": "Bearer"},
            )
        limit, json_body = self.security.body_limit(request.headers.get("content-type"))
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return _error(413, "RESOURCE_EXHAUSTED", BodyTooLarge(limit, json_body).detail)
        return None

    @staticmethod
    def _csrf_header_ok(request: Request, state: dict, fresh: bool) -> bool:
        """Whether an unsafe request already proved it is no cross-site form: a bearer header,
        or an X-CSRF-Token header equal to the cookie."""
        if request.method not in UNSAFE_METHODS:
            return True
        if bearer_token(request.headers.get("authorization")):
            return True
        sent = request.headers.get(CSRF_HEADER, "")
        return not fresh and bool(sent) and hmac.compare_digest(sent, state["csrf_token"])

    @staticmethod
    def _log(request: Request, status: int, started: float, caller: str | None) -> None:
        client = request.client.host if request.client else "-"
        ACCESS.info(
            "web_request method=%s path=%s status=%d ms=%.1f caller=%s client=%s",
            request.method,
            quote(scope_path(request), safe="/._-~"),
            status,
            (time.perf_counter() - started) * 1000,
            caller or "-",
            client,
        )


def _limited(receive: Callable, limit: int, json_body: bool) -> Callable[[], Awaitable[dict]]:
    """`receive` raising BodyTooLarge once more than `limit` body bytes have arrived."""
    seen = 0

    async def limited() -> dict:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit, json_body)
        return message

    return limited


def require_csrf(request: Request, submitted: Any = None) -> None:
    """PermissionDenied unless the request proved it comes from this site's own page (the
    Guard's header check) or `submitted` (the form's field) equals the CSRF cookie."""
    if getattr(request.state, "csrf_ok", False):
        return
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if isinstance(submitted, str) and cookie and hmac.compare_digest(submitted, cookie):
        return
    raise PermissionDenied(
        f"{CSRF_FIELD}: missing or not this browser's CSRF token; reload the page and send the "
        "form again (scripts: send 'Authorization: Bearer <token>', or the X-CSRF-Token header "
        f"equal to the {CSRF_COOKIE} cookie)"
    )


def csrf_header(request: Request) -> None:
    """`require_csrf` as a route dependency, for JSON routes (the token comes as a header)."""
    require_csrf(request)
