"""Domain errors -> gRPC status codes, and ending an RPC with the status of an exception.

* `STATUS_BY_ERROR` / `status_for`: the one mapping from mllgraph.errors to gRPC status codes.
* `abort_with`: end an RPC with the status (and message) an exception is reported with.
* `redact`: what of a message may leave the server: no server paths (a file is named by its
  last component), no torch advice text (retry with weights_only=False, file an issue, read
  the docs). `abort_with` sends domain errors through it; the log keeps them whole.

Imports no other services module: services.common and services.security both use it.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import NoReturn

import grpc

from mllgraph import errors
from mllgraph.errors import MllgraphError

# The plumbing's logger (services.common logs its rpc lines there too).
log = logging.getLogger("mllgraph.services")


def _status_code(name: str) -> grpc.StatusCode:
    """The grpc.StatusCode called `name`; ValueError for an unknown name."""
    try:
        return grpc.StatusCode[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a grpc.StatusCode name") from None


def _error_classes() -> list[type[MllgraphError]]:
    """MllgraphError and every subclass defined in mllgraph.errors."""
    return [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, MllgraphError)
    ]


STATUS_BY_ERROR: dict[type[MllgraphError], grpc.StatusCode] = {
    cls: _status_code(cls.grpc_code) for cls in _error_classes()
}
"""The one mapping from domain error classes to gRPC status codes (via `grpc_code`)."""


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status code an exception is reported with.

    Domain errors map through STATUS_BY_ERROR; a subclass defined outside mllgraph.errors
    uses its (inherited or overridden) `grpc_code`; anything else is INTERNAL.
    """
    if isinstance(exc, MllgraphError):
        cls = type(exc)
        code = STATUS_BY_ERROR.get(cls)
        if code is not None:
            return code
        try:
            return _status_code(cls.grpc_code)
        except ValueError:
            return grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.INTERNAL


_PATH = re.compile(
    r"(?:(?<=file://)|(?<![\w/.:~-])~?)"  # a file:// URL's path; else not inside a word,
    # another URL (scheme://host/...) or a relative path; ~/ counts as absolute
    r"/(?!mllgraph\.v1\.|grpc\.)"  # gRPC method names (/pkg.Service/Method) stay
    r"(?:[^\s/'\"`<>|;,()\[\]{}]+/)+"  # the folders: one or more
    r"(?=[^\s/'\"`<>|;,()\[\]{}])"  # followed by the last component, which is kept
)
"""An absolute path's folders (what `redact` removes), e.g. ``/srv/x/.register-1/`` of
``/srv/x/.register-1/weights.pt``."""

_TORCH_ADVICE = [
    re.compile(pattern, re.S)
    for pattern in (
        r"This file can still be loaded, to do so you have two options,.*?checkpoint\.",
        r"\(1\)\s*",
        r"In PyTorch \d+\.\d+, we changed the default value of the `weights_only` argument.*?"
        r"(?:trusted source\.|$)",
        r"Re-running `torch\.load` with `weights_only` set to `False`.*?(?:trusted source\.|$)",
        r"\(2\) Alternatively, to load with `weights_only=True`.*?error message\.",
        r"Please file an issue with the following so that we can make `weights_only=True` "
        r"compatible with your use case:?",
        r"Please use `torch\.serialization\.(?:add_safe_globals|safe_globals)`?.*?"
        r"(?:class/function\.|$)",
        r"Check the documentation of torch\.load to learn more.*?(?:\.html\.?|$)",
        r"https?://pytorch\.org/\S*",
    )
]
"""Torch's advice in a weights-only load error: its reason (``WeightsUnpickler error: ...``)
stays, the invitations to turn the safety off or to file issues go."""


def redact(message: str) -> str:
    """`message` as a remote caller may see it: server paths cut to their last component
    (``…/weights.pt``) and torch's advice removed; whitespace folded."""
    for advice in _TORCH_ADVICE:
        message = advice.sub(" ", message)
    message = " ".join(_PATH.sub("…/", message).split())
    return message.replace("( ", "(").replace(" )", ")")


def _short(text: str, limit: int = 500) -> str:
    """`text` cut to `limit` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
    """End the RPC with the status for `exc` (always raises, as context.abort does).

    A domain error sends its own message, `redact`ed. Anything else sends INTERNAL with only
    the exception type and a reference id; the traceback is logged under that id.
    """
    if isinstance(exc, MllgraphError):
        message = _short(redact(str(exc)) or type(exc).__name__)
        await context.abort(status_for(exc), message)
    ref = uuid.uuid4().hex[:12]
    log.error(
        "rpc_internal_error ref=%s error=%s msg=%r",
        ref,
        type(exc).__name__,
        _short(str(exc)),
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error ({type(exc).__name__}); see the server log, ref={ref}",
    )
    raise AssertionError("unreachable: context.abort returned")  # pragma: no cover
