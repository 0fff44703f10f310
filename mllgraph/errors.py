"""Domain errors. Each names what was wrong; the gRPC layer maps them to status codes in one
place (services/common.py), the CLI prints them as one line."""

from __future__ import annotations


class MllgraphError(Exception):
    """Base class: a clear, actionable message, never a bare traceback for bad input."""

    grpc_code = "UNKNOWN"


class InvalidArgument(MllgraphError):
    grpc_code = "INVALID_ARGUMENT"


class NotFound(MllgraphError):
    grpc_code = "NOT_FOUND"


class AlreadyExists(MllgraphError):
    grpc_code = "ALREADY_EXISTS"


class FailedPrecondition(MllgraphError):
    grpc_code = "FAILED_PRECONDITION"


class Unavailable(MllgraphError):
    grpc_code = "UNAVAILABLE"


class ResourceExhausted(MllgraphError):
    grpc_code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(MllgraphError):
    grpc_code = "DEADLINE_EXCEEDED"


class Unauthenticated(MllgraphError):
    """No credentials, or credentials nobody issued."""

    grpc_code = "UNAUTHENTICATED"


class PermissionDenied(MllgraphError):
    """Known credentials without the scope the call needs."""

    grpc_code = "PERMISSION_DENIED"


class Aborted(MllgraphError):
    """Work stopped before it finished (a labelling job cancelled at shutdown)."""

    grpc_code = "ABORTED"
