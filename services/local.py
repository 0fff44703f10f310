"""The three gRPC services in this process: `Services` (ingestion, selection and inference on
one background event loop, on free local ports) and `start_local_services` (the same, after
starting the project-managed Neo4j when the settings name it).

Used by `mllgraph classify`, `mllgraph serve web --local-services` (and so `mllgraph demo
--serve`), the evaluation's gRPC pipeline and the tests. It may import services.* and the
mllgraph library; never mllgraph.cli, mllgraph.web or mllgraph.eval (they import it).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from mllgraph.settings import Settings

# What shows a step while it runs: a callable taking the message and giving a context manager
# around the step (the CLI passes rich's `Console.status`, a spinner).
Status = Callable[[str], AbstractContextManager[Any]]


class Services:
    """Ingestion, selection and inference servers on one event loop in a daemon thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, daemon=True, name="mllgraph-services"
        )
        self._running: dict[str, Any] = {}
        self.ports: dict[str, int] = {}

    def _run(self, coro: Any, timeout: float = 600.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> Services:
        from services import inference, ingestion, selection

        self._thread.start()
        try:
            self._running["ingestion"] = self._run(ingestion.start(self.settings, port=0))
            self._running["selection"] = self._run(selection.start(self.settings, 0))
            self._running["inference"] = self._run(inference.start(self.settings, port=0))
        except BaseException:
            self.stop()
            raise
        self.ports = {name: r.port for name, r in self._running.items()}
        return self

    def stop(self) -> None:
        for name in ("inference", "selection", "ingestion"):
            running = self._running.pop(name, None)
            if running is not None:
                self._run(running.close(1.0))
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def __enter__(self) -> Services:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _quiet(message: str) -> AbstractContextManager[Any]:
    return nullcontext()


def start_local_services(settings: Settings, status: Status = _quiet) -> Services:
    """The three services in this process, on free ports, over the local hub (started; the
    caller stops them). Starts the project-managed Neo4j first when the settings use it."""
    if settings.uses_local_neo4j:
        from mllgraph.graph import neo4j_server

        with status("starting Neo4j"):
            neo4j_server.start(settings)
    with status("starting the services in this process (grounding warm-up)"):
        return Services(settings).start()
