"""Domain errors -> gRPC status codes, and ending an RPC with the status of an exception.

* `STATUS_BY_ERROR` / `status_for`: the one mapping from mllgraph.errors to gRPC status codes.
* `abort_with`: end an RPC with the status (and message) an exception is reported with.

Imports no other services module: services.common and services.security both use it.
"""

from __future__ import annotations

import logging
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


def _short(text: str, limit: int = 500) -> str:
    """`text` cut to `limit` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
    """End the RPC with the status for `exc` (always raises, as context.abort does).

    A domain error sends its own message. Anything else sends INTERNAL with only the
    exception type and a reference id; the traceback is logged under that id.
    """
    if isinstance(exc, MllgraphError):
        message = _short(str(exc) or type(exc).__name__)
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
