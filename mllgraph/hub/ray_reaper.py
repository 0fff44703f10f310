"""Ends what is left of a local Ray once the process that started it is gone.

`executor.start` runs this file (by path: standard library only, nothing of mllgraph is
imported) in a session of its own, with the Ray processes the driver started (GCS, raylet,
dashboard, monitors) as arguments and the read end of a pipe from the driver as stdin. The
pipe closes when the driver has shut Ray down (`executor.shutdown` closes it last) or when
the driver dies in any way, `kill -9` included. Then every process of that Ray session that is
still alive gets SIGTERM, and SIGKILL after GRACE_S.

The session is the given processes and their descendants. Their descendants are looked up
every POLL_S while the driver lives and remembered with their start times, because a raylet
that dies first leaves its agents (dashboard agent, runtime-env agent) to init: those are the
two that outlived a killed driver before (issue 25). A remembered pid is only signalled while
its start time is the same, so a pid reused by another process is left alone.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time

POLL_S = 1.0
GRACE_S = 3.0


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":  # a zombie: already dead
        return None
    return int(fields[1]), fields[19]


def _all_parents() -> dict[int, tuple[int, str]]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            found = _stat(int(name))
            if found is not None:
                out[int(name)] = found
    return out


def remember(known: dict[int, str], roots: list[int]) -> None:
    """Add the descendants of the processes in `known` (pid -> start time) that are still the
    same processes; on the first call, of `roots`."""
    table = _all_parents()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    todo = [p for p in (list(known) or roots) if p in table and known.get(p) in (None, table[p][1])]
    while todo:
        pid = todo.pop()
        known.setdefault(pid, table[pid][1])
        todo += [c for c in children.get(pid, []) if c not in known]


def _alive(known: dict[int, str]) -> list[int]:
    return [pid for pid, start in known.items() if (_stat(pid) or (0, ""))[1] == start]


def end(known: dict[int, str]) -> None:
    """SIGTERM to every remembered process still alive, SIGKILL after GRACE_S."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _alive(known):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + GRACE_S
        while _alive(known) and time.monotonic() < deadline:
            time.sleep(0.1)


def main(argv: list[str]) -> int:
    roots = [int(a) for a in argv]
    known: dict[int, str] = {}
    remember(known, roots)
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], POLL_S)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break  # the driver closed the pipe, or died
        remember(known, roots)
    remember(known, roots)
    end(known)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the pipe ends it
    sys.exit(main(sys.argv[1:]))
