"""The local Ray started for labelling (mllgraph.hub.executor): it listens on the loopback
only, and nothing of it outlives the process that started it, whether that process exits
(without shutting Ray down) or is killed with SIGKILL (issue 25: Ray listened on every
interface, and two Ray agents kept running after the driver was killed).

Each test runs a small driver in a subprocess and looks at its processes through /proc.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
DRIVER = """
import sys, time
from dataclasses import replace
from mllgraph.hub import executor
from mllgraph.settings import Settings
executor.start(replace(Settings(), executor="ray", ray_address=None, device="cpu"), num_cpus=1)
import ray
ray.get(ray.remote(lambda: 1).remote())
print("READY", flush=True)
if sys.argv[1] == "exit":
    time.sleep(3)
    sys.exit(0)  # no executor.shutdown(): the exit handler must end Ray
time.sleep(600)
"""
LOOPBACK_V4 = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it
LOOPBACK_V6 = ("00000000000000000000000001000000", "0000000000000000FFFF00000100007F")


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a process; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0]


def _descendants(root: int) -> set[int]:
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (found := _stat(int(name))) is not None:
            parents[int(name)] = found[0]
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        kids = [p for p, parent in parents.items() if parent == pid and p not in out]
        out.update(kids)
        todo += kids
    return out


def _alive(pids: set[int]) -> set[int]:
    return {p for p in pids if (s := _stat(p)) is not None and s[1] != "Z"}


def _listening(pids: set[int]) -> list[tuple[int, str]]:
    """(pid, local address in /proc/net hex) of every listening TCP socket of `pids`."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    out = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                out.append((inodes[cols[9]], cols[1].split(":")[0]))
    return out


def _driver(mode: str, tmp_path: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLLGRAPH_RAY_ADDRESS")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, mode],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # Ray starts within the driver's own retries
    if line.strip() != "READY":
        proc.kill()
        pytest.fail(f"the driver did not start Ray (exit {proc.wait()})")
    time.sleep(5)  # the raylet's agents start after ray.init returns
    return proc


def _wait_gone(pids: set[int], timeout: float = 60.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    return _alive(pids)


def test_a_killed_driver_leaves_no_ray_process_and_ray_listens_on_loopback(
    tmp_path: Path,
) -> None:
    proc = _driver("kill", tmp_path)
    try:
        tree = _descendants(proc.pid)
        names = {Path(f"/proc/{p}/comm").read_text().strip() for p in _alive(tree)}
        assert {"gcs_server", "raylet"} <= names, names
        listening = _listening(_alive(tree))
        assert listening, "no Ray process listens at all?"
        exposed = [
            (pid, addr)
            for pid, addr in listening
            if addr != LOOPBACK_V4 and addr not in LOOPBACK_V6
        ]
        assert exposed == [], f"listening beyond the loopback: {exposed}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _wait_gone(tree) == set()


def test_a_driver_exiting_without_shutdown_ends_its_ray(tmp_path: Path) -> None:
    proc = _driver("exit", tmp_path)
    tree = _descendants(proc.pid)
    assert proc.wait(120) == 0
    assert _wait_gone(tree) == set()
