"""What a call may hold of a service: call budgets, per-caller stream limits, idle and open
stream timeouts, and the server's default deadline (`LimitInterceptor`, the innermost
interceptor of every server, see `services.common.build_server`).

Calls fall in three budgets, counted apart so one kind cannot starve another:

* **unary** calls of the services' own RPCs (``MLLGRAPH_MAX_CONCURRENT_RPCS``);
* **streams** of the services' own RPCs: client-, server- or bidi-streaming (ClassifyStream,
  UploadWeights, AddProbes; ``MLLGRAPH_MAX_CONCURRENT_STREAMS``);
* **open streams**: health ``Watch`` and reflection, which need no token
  (``MLLGRAPH_MAX_OPEN_STREAMS``).

Health ``Check`` is never counted: it answers at once, whatever the budgets hold. One call
over its budget is refused at once with RESOURCE_EXHAUSTED naming the setting, never queued.
A caller (its token's name; without a token, its address) holds at most
``MLLGRAPH_MAX_STREAMS_PER_CALLER`` streams of each kind.

Time limits:

* a client- or bidi-streaming call that receives no message for
  ``MLLGRAPH_STREAM_IDLE_TIMEOUT_S`` ends DEADLINE_EXCEEDED (`StreamIdle`);
* open streams end DEADLINE_EXCEEDED after ``MLLGRAPH_OPEN_STREAM_MAX_S``, whatever deadline
  the client sent (watch or reflect again);
* a call of the services' own RPCs that came without a deadline gets the server's own:
  ``MLLGRAPH_RPC_DEFAULT_DEADLINE_S`` when its request is one message,
  ``MLLGRAPH_STREAM_DEFAULT_DEADLINE_S`` when it streams requests. `time_remaining` reports
  it to the handler (its graph calls get a share of it, services.common.rpc), and the call
  ends DEADLINE_EXCEEDED when it passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from mllgraph.errors import DeadlineExceeded, InvalidArgument
from mllgraph.settings import Settings
from services.telemetry import CALLER, is_open

log = logging.getLogger("mllgraph.services.limits")

UNARY, STREAM, OPEN_STREAM, UNLIMITED = "unary", "stream", "open stream", "unlimited"

_CALL_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "mllgraph_call_deadline", default=None
)
"""time.monotonic() at which the server's default deadline of the call being served passes
(None: the client sent a deadline, or outside a call)."""


class StreamIdle(DeadlineExceeded):
    """A streaming call received no message for the idle timeout."""


@dataclass(frozen=True)
class CallLimits:
    """The budgets and time limits of one server (see the module doc)."""

    unary: int | None  # None: no limit
    streams: int
    open_streams: int
    streams_per_caller: int
    idle_timeout_s: float
    open_stream_max_s: float
    unary_deadline_s: float
    stream_deadline_s: float

    def __post_init__(self) -> None:
        counts = ("streams", "open_streams", "streams_per_caller")
        for name in counts + (("unary",) if self.unary is not None else ()):
            if getattr(self, name) < 1:
                raise InvalidArgument(
                    f"call limits: {name} must be >= 1, got {getattr(self, name)}"
                )
        for name in (
            "idle_timeout_s",
            "open_stream_max_s",
            "unary_deadline_s",
            "stream_deadline_s",
        ):
            if not getattr(self, name) > 0:
                raise InvalidArgument(f"call limits: {name} must be > 0, got {getattr(self, name)}")

    @classmethod
    def from_settings(cls, settings: Settings) -> CallLimits:
        """The limits `settings` configure."""
        return cls(
            unary=settings.max_concurrent_rpcs,
            streams=settings.max_concurrent_streams,
            open_streams=settings.max_open_streams,
            streams_per_caller=settings.max_streams_per_caller,
            idle_timeout_s=settings.stream_idle_timeout_s,
            open_stream_max_s=settings.open_stream_max_s,
            unary_deadline_s=settings.rpc_default_deadline_s,
            stream_deadline_s=settings.stream_default_deadline_s,
        )


def time_remaining(context: Any) -> float | None:
    """Seconds the call being served has left: the client's deadline, else the server's
    default one (`LimitInterceptor`); None when neither applies."""
    try:
        left = context.time_remaining()
    except Exception:  # a context without deadlines (tests' fakes)
        left = None
    if left is not None:
        return max(0.0, left)
    at = _CALL_DEADLINE.get()
    return None if at is None else max(0.0, at - time.monotonic())


def budget_of(method: str, handler: grpc.RpcMethodHandler) -> str:
    """Which budget a call of `method` counts against."""
    streaming = handler.request_streaming or handler.response_streaming
    if is_open(method):
        return OPEN_STREAM if streaming else UNLIMITED
    return STREAM if streaming else UNARY


def caller_of(context: Any) -> str:
    """Who is calling: the token's name, else the peer's address without its port."""
    name = CALLER.get()
    if name:
        return f"token '{name}'"
    try:
        peer = context.peer() or ""
    except Exception:  # noqa: BLE001 - a context without a peer: one anonymous caller
        peer = ""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        address = address.rsplit(":", 1)[0].strip("[]")
    return f"address {address or peer or 'unknown'}"


class _IdleLimited:
    """A request iterator that raises StreamIdle when no message arrives within `idle_s`."""

    def __init__(self, inner: Any, idle_s: float, method: str) -> None:
        self.inner, self.idle_s, self.method = inner, idle_s, method

    def __aiter__(self) -> _IdleLimited:
        return self

    async def __anext__(self) -> Any:
        try:
            async with asyncio.timeout(self.idle_s):
                return await self.inner.__anext__()
        except TimeoutError:
            raise StreamIdle(
                f"{self.method}: no request message arrived for {self.idle_s:g} s; the server "
                "ends idle streams (MLLGRAPH_STREAM_IDLE_TIMEOUT_S)"
            ) from None


class _Admission:
    """One admitted call: its budget and caller, released once (whichever path ends it)."""

    def __init__(self, owner: LimitInterceptor, budget: str, caller: str) -> None:
        self.owner, self.budget, self.caller = owner, budget, caller
        self.released = False

    def release(self, *_: Any) -> None:
        if not self.released:
            self.released = True
            self.owner._release(self.budget, self.caller)


class LimitInterceptor(grpc.aio.ServerInterceptor):
    """Enforces `CallLimits` (see the module doc). All counting happens on the server's
    event loop, so plain counters suffice."""

    def __init__(self, limits: CallLimits) -> None:
        self.limits = limits
        self.in_use: Counter[str] = Counter()  # calls by budget
        self.by_caller: Counter[tuple[str, str]] = Counter()  # streams by (budget, caller)

    # -- counting --

    def _capacity(self, budget: str) -> int | None:
        lim = self.limits
        return {UNARY: lim.unary, STREAM: lim.streams, OPEN_STREAM: lim.open_streams}[budget]

    def _refusal(self, budget: str, caller: str) -> str | None:
        """Why a call of `budget` by `caller` cannot start now, or None."""
        capacity = self._capacity(budget)
        if capacity is not None and self.in_use[budget] >= capacity:
            setting, what = {
                UNARY: ("MLLGRAPH_MAX_CONCURRENT_RPCS", "calls"),
                STREAM: ("MLLGRAPH_MAX_CONCURRENT_STREAMS", "streaming calls"),
                OPEN_STREAM: ("MLLGRAPH_MAX_OPEN_STREAMS", "health-watch and reflection streams"),
            }[budget]
            return (
                f"this server is serving {capacity} {what} already, its limit ({setting}); "
                "try again shortly"
            )
        per_caller = self.limits.streams_per_caller
        if budget != UNARY and self.by_caller[budget, caller] >= per_caller:
            return (
                f"{caller} holds {per_caller} {budget}s on this server already, the limit per "
                "caller (MLLGRAPH_MAX_STREAMS_PER_CALLER); end one first"
            )
        return None

    def _release(self, budget: str, caller: str) -> None:
        self.in_use[budget] -= 1
        if budget != UNARY:
            key = (budget, caller)
            self.by_caller[key] -= 1
            if self.by_caller[key] <= 0:
                del self.by_caller[key]

    async def _admit(self, budget: str, method: str, context: Any) -> _Admission:
        """Count the call in, or end it RESOURCE_EXHAUSTED (always raises then)."""
        caller = caller_of(context)
        why = self._refusal(budget, caller)
        if why is not None:
            log.warning("rpc_refused method=%s budget=%s caller=%s", method, budget, caller)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, why)
        self.in_use[budget] += 1
        if budget != UNARY:
            self.by_caller[budget, caller] += 1
        admission = _Admission(self, budget, caller)
        with contextlib.suppress(Exception):  # released at the latest when the RPC ends
            context.add_done_callback(admission.release)
        return admission

    # -- time --

    def _time_limit(self, budget: str, request_streaming: bool, context: Any) -> float | None:
        """Seconds the call may run (None: the client's own deadline applies), and the
        server's default deadline stamped for `time_remaining` when it is the one."""
        try:
            client_left = context.time_remaining()
        except Exception:  # noqa: BLE001
            client_left = None
        if budget == OPEN_STREAM:
            limit = self.limits.open_stream_max_s
            return limit if client_left is None else min(limit, client_left)
        if client_left is not None:
            return None
        limit = self.limits.stream_deadline_s if request_streaming else self.limits.unary_deadline_s
        _CALL_DEADLINE.set(time.monotonic() + limit)
        return limit

    def _overtime(self, budget: str, method: str, limit: float) -> str:
        if budget == OPEN_STREAM:
            return (
                f"{method}: health-watch and reflection streams last at most {limit:g} s on this "
                "server (MLLGRAPH_OPEN_STREAM_MAX_S); open a new one"
            )
        return (
            f"{method} ran past the server's default deadline of {limit:g} s (the call came "
            "without one: MLLGRAPH_RPC_DEFAULT_DEADLINE_S / MLLGRAPH_STREAM_DEFAULT_DEADLINE_S); "
            "send a deadline"
        )

    # -- wrapping --

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        budget = budget_of(method, handler)
        if budget == UNLIMITED:
            return handler
        kinds = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
        return handler._replace(  # type: ignore[attr-defined]
            **{
                kind: self._wrap(getattr(handler, kind), budget, method, kind.startswith("stream"))
                for kind in kinds
                if getattr(handler, kind) is not None
            }
        )

    def _wrap(self, inner: Any, budget: str, method: str, request_streaming: bool) -> Any:
        """`inner` admitted, time-limited and (streaming requests) idle-limited; an async
        generator stays one, a coroutine (``context.write`` style) stays one."""
        if not inspect.isasyncgenfunction(inner):

            async def call(request: Any, context: Any) -> Any:
                admission = await self._admit(budget, method, context)
                try:
                    limit = self._time_limit(budget, request_streaming, context)
                    if request_streaming:
                        request = _IdleLimited(request, self.limits.idle_timeout_s, method)
                    try:
                        async with asyncio.timeout(limit) as timer:
                            return await inner(request, context)
                    except TimeoutError:
                        if not timer.expired():
                            raise
                        await context.abort(
                            grpc.StatusCode.DEADLINE_EXCEEDED, self._overtime(budget, method, limit)
                        )
                    except StreamIdle as idle:  # a handler without services.common.rpc
                        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(idle))
                finally:
                    admission.release()

            return call

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            admission = await self._admit(budget, method, context)
            try:
                limit = self._time_limit(budget, request_streaming, context)
                if request_streaming:
                    request = _IdleLimited(request, self.limits.idle_timeout_s, method)
                until = None if limit is None else time.monotonic() + limit
                responses = inner(request, context)
                try:
                    while True:
                        left = None if until is None else max(0.0, until - time.monotonic())
                        try:
                            async with asyncio.timeout(left) as timer:
                                response = await responses.__anext__()
                        except StopAsyncIteration:
                            return
                        except TimeoutError:
                            if not timer.expired():
                                raise
                            await context.abort(
                                grpc.StatusCode.DEADLINE_EXCEEDED,
                                self._overtime(budget, method, limit or 0.0),
                            )
                        except StreamIdle as idle:
                            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(idle))
                        yield response
                finally:
                    await responses.aclose()
            finally:
                admission.release()

        return stream
