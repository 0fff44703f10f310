"""Replicated inference: N inference servers as separate processes, and a client channel that
balances over them with gRPC's own `round_robin` policy.

The inference service keeps no state between requests apart from its model cache, so it scales
by replicas. `mllgraph serve inference --replicas N [--port BASE]` starts N processes of
`python -m services.inference` on ports BASE..BASE+N-1 (`--ports P1,P2,...` names them
instead); any other flag is passed to every replica. It forwards SIGTERM/SIGINT to them, keeps
serving with those left when one dies, and exits when all are gone (status 1 if any failed).

`balanced_channel` builds the client side: a target list (`ipv4:127.0.0.1:P1,127.0.0.1:P2`,
from `target_for`) or a DNS name that resolves to every replica (`dns:///inference:50053`,
what a Kubernetes headless service or `docker compose --scale` gives), with a service config
choosing `round_robin` (each call goes to the next READY replica; a dead one is skipped once
its connection fails) and retrying Classify on UNAVAILABLE, so a call that meets a replica as
it dies is sent to another. A stream lives on one replica: if that replica dies the stream
fails with UNAVAILABLE and the caller opens a new one, which goes to a live replica.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from mllgraph.errors import InvalidArgument
from mllgraph.settings import Settings

log = logging.getLogger("services.replicas")

SERVICE = "mllgraph.v1.InferenceService"
MAX_MESSAGE = 64 * 1024 * 1024


def service_config(retries: int = 3) -> dict[str, Any]:
    """round_robin over every resolved address; Classify retried on UNAVAILABLE."""
    return {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{"service": SERVICE, "method": "Classify"}],
                "retryPolicy": {
                    "maxAttempts": retries,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }


def target_for(addresses: Sequence[str]) -> str:
    """One gRPC target naming several `host:port` addresses (IPv4 literals, or IPv6 in
    brackets); a single DNS name (`dns:///name:port`, `name:port`) is returned as it is."""
    if not addresses:
        raise InvalidArgument("no replica addresses given")
    if len(addresses) == 1:
        return addresses[0]
    if all(a.startswith("[") for a in addresses):
        return "ipv6:" + ",".join(addresses)
    if any(a.startswith("[") or "://" in a for a in addresses):
        raise InvalidArgument(f"mixed or non-literal replica addresses: {list(addresses)}")
    return "ipv4:" + ",".join(addresses)


def channel_options(retries: int = 3) -> list[tuple[str, Any]]:
    return [
        ("grpc.service_config", json.dumps(service_config(retries))),
        ("grpc.enable_retries", 1),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
    ]


def balanced_channel(target: str | Sequence[str], *, aio: bool = False, retries: int = 3) -> Any:
    """A channel spreading calls over the replicas at `target` (a target string or a list of
    `host:port`) with round_robin; `aio` gives a grpc.aio channel."""
    text = target if isinstance(target, str) else target_for(list(target))
    options = channel_options(retries)
    return grpc.aio.insecure_channel(text, options) if aio else grpc.insecure_channel(text, options)


# -- the replicas ----------------------------------------------------------------------------


def replica_ports(replicas: int | None, ports: str | None, base: int) -> list[int]:
    if ports:
        try:
            out = [int(p) for p in ports.split(",") if p.strip()]
        except ValueError as e:
            raise InvalidArgument(f"--ports must be comma-separated integers: {ports!r}") from e
    else:
        n = 1 if replicas is None else replicas
        if n < 1:
            raise InvalidArgument(f"--replicas must be at least 1, got {n}")
        out = list(range(base, base + n))
    if len(set(out)) != len(out) or any(not 0 < p < 65536 for p in out):
        raise InvalidArgument(f"replica ports must be distinct and in 1..65535: {out}")
    return out


def spawn(
    ports: Sequence[int],
    child_args: Sequence[str] = (),
    *,
    host: str = "127.0.0.1",
    log_dir: Path | None = None,
) -> list[subprocess.Popen]:
    """Start one `python -m services.inference` process per port (stderr to
    `log_dir/inference-<port>.log` when given, with its pid in `inference-<port>.pid`)."""
    procs = []
    for port in ports:
        cmd = [sys.executable, "-m", "services.inference", "--port", str(port), "--host", host]
        stderr: Any = None
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            stderr = open(log_dir / f"inference-{port}.log", "ab")  # noqa: SIM115 - the child's
        try:
            proc = subprocess.Popen([*cmd, *child_args], stderr=stderr)
        finally:
            if stderr is not None:
                stderr.close()
        if log_dir is not None:
            (log_dir / f"inference-{port}.pid").write_text(str(proc.pid))
        log.info("replica_started port=%d pid=%d", port, proc.pid)
        procs.append(proc)
    return procs


def supervise(procs: Sequence[subprocess.Popen], *, poll_s: float = 0.2) -> int:
    """Forward SIGTERM/SIGINT to the replicas and wait for all of them; 1 if any failed."""
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    failed = False
    try:
        alive = list(procs)
        while alive:
            for p in list(alive):
                rc = p.poll()
                if rc is None:
                    continue
                alive.remove(p)
                ok = rc == 0 or (stopping and rc in (-signal.SIGTERM, 130))
                failed |= not ok
                (log.info if ok else log.warning)(
                    "replica_exited pid=%d rc=%d serving=%d", p.pid, rc, len(alive)
                )
            time.sleep(poll_s)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    from services.common import configure_logging

    parser = argparse.ArgumentParser(
        prog="mllgraph serve inference --replicas N",
        description="N inference replicas as separate processes; other flags go to each",
    )
    parser.add_argument("--replicas", type=int, default=None, help="processes (default 1)")
    parser.add_argument("--ports", help="comma-separated ports, one replica each")
    parser.add_argument("--port", type=int, default=None, help="first port (default: settings)")
    parser.add_argument("--host", default="127.0.0.1", help="address every replica listens on")
    parser.add_argument("--log-dir", type=Path, help="one log and pid file per replica")
    parser.add_argument("--log-level", default="INFO")
    args, child_args = parser.parse_known_args(argv)
    configure_logging(args.log_level)
    base = Settings.from_env().inference_port if args.port is None else args.port
    try:
        ports = replica_ports(args.replicas, args.ports, base)
    except InvalidArgument as e:
        parser.error(str(e))
    procs = spawn(
        ports, [*child_args, "--log-level", args.log_level], host=args.host, log_dir=args.log_dir
    )
    targets = ",".join(f"{args.host}:{p}" for p in ports)
    log.info("replicas_started n=%d target=%s", len(ports), target_for(targets.split(",")))
    return supervise(procs)


if __name__ == "__main__":
    raise SystemExit(main())
