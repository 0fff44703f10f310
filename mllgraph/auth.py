"""Bearer tokens and scopes, and the client side of TLS + tokens.

Scopes are ordered: ``read`` < ``write`` < ``admin`` (a token holds its scope and every
lower one). A token is ``mlg_`` + 43 URL-safe characters (256 random bits); the server keeps
only its SHA-256, as one entry per line::

    # scope  name   sha256 of the token (hex)
    read     alice  4f2c...e1

in the file named by ``MLLGRAPH_TOKENS_FILE`` and/or inline in ``MLLGRAPH_TOKENS`` (entries
separated by newlines or ``;``). ``#`` starts a comment. ``mllgraph tokens create`` makes a
token and prints its line. Presented tokens are hashed and compared with every entry in
constant time (`hmac.compare_digest`).

Clients (the CLI, `mllgraph.client`) open channels with `open_channel`: TLS when
``MLLGRAPH_TLS_CA`` is set (plus ``MLLGRAPH_CLIENT_CERT``/``_KEY`` for mutual TLS), and the
token in ``MLLGRAPH_TOKEN`` sent as ``authorization: Bearer <token>``. A token is never sent
in plain text to anything but a loopback address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mllgraph.errors import FailedPrecondition, InvalidArgument

if TYPE_CHECKING:
    import grpc

    from mllgraph.settings import Settings

SCOPES = ("read", "write", "admin")
"""Scopes from weakest to strongest; each implies the ones before it."""

TOKEN_PREFIX = "mlg_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def scope_allows(held: str, needed: str) -> bool:
    """Whether a token of scope `held` may make a call that needs `needed`."""
    return SCOPES.index(held) >= SCOPES.index(needed)


def hash_token(token: str) -> str:
    """The hex SHA-256 of `token` (what the tokens file stores)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_name(name: str) -> str:
    """`name` if it is a valid token name (letters, digits, ``._@-``; at most 64)."""
    if not _NAME.match(name):
        raise InvalidArgument(
            f"token name {name!r}: 1-64 letters, digits or ._@- (starting with a letter or digit)"
        )
    return name


def check_scope(scope: str) -> str:
    """`scope` if it is one of SCOPES."""
    if scope not in SCOPES:
        raise InvalidArgument(f"scope {scope!r}: one of {', '.join(SCOPES)}")
    return scope


@dataclass(frozen=True)
class TokenEntry:
    """One issued token: who, with which scope, and the SHA-256 of the secret."""

    scope: str
    name: str
    sha256: str

    def line(self) -> str:
        """The entry as a tokens-file line."""
        return f"{self.scope} {self.name} {self.sha256}"


def create_token(scope: str, name: str) -> tuple[str, TokenEntry]:
    """A new token for `name` with `scope`, and the entry to add to the tokens file."""
    token = new_token()
    return token, TokenEntry(check_scope(scope), check_name(name), hash_token(token))


def parse_tokens(text: str, source: str) -> list[TokenEntry]:
    """Entries from tokens-file text (lines or ``;``-separated); `source` names it in errors."""
    entries: list[TokenEntry] = []
    for number, raw in enumerate(re.split(r"[;\n]", text), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3:
            raise InvalidArgument(
                f"{source}, entry {number}: expected 'scope name sha256', got {len(parts)} fields"
            )
        scope, name, digest = parts
        try:
            check_scope(scope)
            check_name(name)
        except InvalidArgument as e:
            raise InvalidArgument(f"{source}, entry {number}: {e}") from e
        if not _HEX64.match(digest.lower()):
            raise InvalidArgument(
                f"{source}, entry {number}: the third field must be the 64 hex digits of the "
                "token's SHA-256 (never the token itself; see `mllgraph tokens create`)"
            )
        entries.append(TokenEntry(scope, name, digest.lower()))
    return entries


class TokenTable:
    """The issued tokens, looked up by presented secret in constant time per entry."""

    def __init__(self, entries: list[TokenEntry]) -> None:
        self.entries = list(entries)
        names = [e.name for e in self.entries]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise InvalidArgument(f"token names must be unique; repeated: {', '.join(dup)}")

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, token: str) -> TokenEntry | None:
        """The entry whose hash matches `token`, comparing against every entry."""
        digest = hash_token(token).encode()
        found: TokenEntry | None = None
        for entry in self.entries:
            if hmac.compare_digest(digest, entry.sha256.encode()) and found is None:
                found = entry
        return found

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenTable:
        """Entries from ``settings.tokens_file`` and ``settings.tokens`` together."""
        entries: list[TokenEntry] = []
        if settings.tokens_file is not None:
            try:
                text = Path(settings.tokens_file).read_text(encoding="utf-8")
            except OSError as e:
                raise FailedPrecondition(
                    f"cannot read the tokens file {settings.tokens_file} (MLLGRAPH_TOKENS_FILE): "
                    f"{e.strerror or e}"
                ) from e
            entries += parse_tokens(text, str(settings.tokens_file))
        if settings.tokens:
            entries += parse_tokens(settings.tokens, "MLLGRAPH_TOKENS")
        return cls(entries)


# --- addresses ------------------------------------------------------------------------------


def is_loopback_host(host: str) -> bool:
    """Whether `host` (a name or address, IPv6 possibly bracketed) is this machine only."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(
    host: str,
    *,
    tls: bool,
    tokens: bool,
    insecure: bool,
    log: logging.Logger,
    listen: tuple[str, str],
    risk: tuple[str, str],
) -> None:
    """The bind rule of every server here (the gRPC services and the web page): a
    non-loopback `host` needs TLS and tokens, unless `insecure` (then a warning is logged).

    `listen`: what the server does, as in "refusing to <listen[0]> on" and "<listen[1]> on"
    (e.g. ("listen", "listening")); `risk`: what anyone reaching the port could do without
    tokens, in the refusal and in the warning."""
    if is_loopback_host(host) or (tls and tokens):
        return
    missing = " and ".join(
        what
        for what, ok in (
            ("TLS (MLLGRAPH_TLS_CERT, MLLGRAPH_TLS_KEY)", tls),
            ("tokens (MLLGRAPH_TOKENS_FILE or MLLGRAPH_TOKENS)", tokens),
        )
        if not ok
    )
    if not insecure:
        raise FailedPrecondition(
            f"refusing to {listen[0]} on {host} without {missing}: anyone who reaches the port "
            f"could {risk[0]}. Configure them (see `mllgraph tokens create` and README "
            "'Running it for others'), bind 127.0.0.1, or pass --insecure to accept the risk"
        )
    log.warning(
        "INSECURE: %s on %s without %s (--insecure); anyone who can reach this port can %s",
        listen[1],
        host,
        missing,
        risk[1] if not tokens else "read the traffic",
    )


def target_host(target: str) -> str:
    """The host part of a gRPC target ``host:port`` / ``[v6]:port`` / ``dns:///host:port``."""
    rest = target.split("///", 1)[-1] if "///" in target else target
    if rest.startswith("["):
        return rest[1 : rest.index("]")]
    return rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest


# --- client credentials ---------------------------------------------------------------------


def read_pem(path: Path | None, what: str) -> bytes | None:
    """A certificate or key file's bytes (None for no path); FailedPrecondition naming it."""
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise FailedPrecondition(f"cannot read the {what} {path}: {e.strerror or e}") from e


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """TLS credentials from ``settings.tls_ca`` (+ client cert/key); None without a CA."""
    import grpc

    if settings.tls_ca is None:
        if settings.client_cert or settings.client_key:
            raise FailedPrecondition("a client certificate needs MLLGRAPH_TLS_CA as well")
        return None
    if bool(settings.client_cert) != bool(settings.client_key):
        raise FailedPrecondition("MLLGRAPH_CLIENT_CERT and MLLGRAPH_CLIENT_KEY go together")
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(settings.tls_ca, "CA certificate (MLLGRAPH_TLS_CA)"),
        private_key=read_pem(settings.client_key, "client key (MLLGRAPH_CLIENT_KEY)"),
        certificate_chain=read_pem(
            settings.client_cert, "client certificate (MLLGRAPH_CLIENT_CERT)"
        ),
    )


def call_credentials(token: str) -> grpc.CallCredentials:
    """Per-call credentials sending ``authorization: Bearer <token>``."""
    import grpc

    return grpc.access_token_call_credentials(token)


def open_channel(
    target: str,
    settings: Settings,
    *,
    token: str | None = None,
    aio: bool = False,
    options: list[tuple[str, Any]] | None = None,
) -> Any:
    """A channel to `target` with the credentials in `settings` (or `token`).

    TLS when a CA is configured; the token (``settings.client_token`` unless given) goes as
    call credentials. Without TLS a token is only sent to a loopback target (FailedPrecondition
    otherwise). `aio` gives a ``grpc.aio`` channel.
    """
    import grpc

    mod: Any = grpc.aio if aio else grpc
    token = settings.client_token if token is None else token
    tls = channel_credentials(settings)
    if tls is None and not token:
        return mod.insecure_channel(target, options=options)
    if tls is None:
        if not is_loopback_host(target_host(target)):
            raise FailedPrecondition(
                f"will not send a token in plain text to {target}: set MLLGRAPH_TLS_CA to the "
                "CA that signed the server's certificate"
            )
        tls = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    creds = grpc.composite_channel_credentials(tls, call_credentials(token)) if token else tls
    return mod.secure_channel(target, creds, options=options)
