"""The web page for the web checks: `mllgraph serve web` as a subprocess over the rig's
services (loopback only), its RSS from /proc, and requests to it — ordinary ones (`Browser`,
http.client with a cookie jar: the project depends on no HTTP client) and raw ones whose body
is sent while the answer is read, so that a server answering before it has read a large body
is timed as it answers.

Imports the rig only; it must not import the checks or the report.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mllgraph.eval.bench.reliability.rig import REPO, Rig, free_port

CSRF_COOKIE = "mllgraph_csrf"  # mllgraph.web.security's names, as a browser sees them
TOKEN_COOKIE = "mllgraph_token"


def web_env(rig: Rig, **extra: str) -> dict[str, str]:
    """The rig's service environment, pointed at its three services; reports under its home."""
    ports = {f"MLLGRAPH_{n.upper()}_PORT": str(s.port) for n, s in rig.services.items()}
    return {**rig.env, **ports, "MLLGRAPH_REPORTS_DIR": str(rig.home), **extra}


@dataclass
class WebPage:
    """`python -m mllgraph serve web --host 127.0.0.1 --port N --log-level INFO`."""

    env: dict[str, str]
    log: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> float:
        """Seconds until the page answers (its style sheet, open with or without tokens)."""
        self.port = self.port or free_port()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mllgraph", "serve", "web", "--host", "127.0.0.1"]
                + ["--port", str(self.port), "--log-level", "INFO"],
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the web page exited ({self.proc.returncode}); see {self.log}")
            with contextlib.suppress(OSError):
                if Browser(self.port, timeout_s=5).get("/static/style.css").status_code == 200:
                    return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"the web page did not answer in {timeout_s:.0f} s")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def rss_mb(self) -> dict[str, float]:
        """VmRSS (now) and VmHWM (peak since start or `reset_peak`) of the page, in MB."""
        assert self.proc is not None
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = round(int(value.split()[0]) / 1024, 1)
        return {"rss_mb": fields["VmRSS"], "peak_mb": fields["VmHWM"]}

    def reset_peak(self) -> bool:
        """Start VmHWM again from the current RSS (Linux: clear_refs 5); False if refused."""
        assert self.proc is not None
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def client(self) -> Browser:
        return Browser(self.port)


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]  # lower-case names; Set-Cookie values joined by ", "
    text: str
    ms: float

    def json(self) -> Any:
        try:
            return json.loads(self.text)
        except ValueError:
            return {}


@dataclass
class Browser:
    """Requests to the page on 127.0.0.1:`port` (one connection each, so threads may share
    it), keeping the cookies it sets as a browser would; redirects are not followed."""

    port: int
    timeout_s: float = 120.0
    cookies: dict[str, str] = field(default_factory=dict)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cookies.clear()

    def get(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        return self.request("GET", path, headers=headers)

    def post(
        self,
        path: str,
        *,
        json: Any = None,
        data: dict[str, str] | None = None,
        files: list[tuple[str, tuple[str, bytes]]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        return self.request("POST", path, json=json, data=data, files=files, headers=headers)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: dict[str, str] | None = None,
        files: list[tuple[str, tuple[str, bytes]]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        import http.client
        import json as jsonlib
        from urllib.parse import urlencode

        sent = {
            "host": f"127.0.0.1:{self.port}",
            **{k.lower(): v for k, v in (headers or {}).items()},
        }
        if self.cookies:
            sent["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body: bytes | None = None
        if json is not None:
            body, sent["content-type"] = jsonlib.dumps(json).encode(), "application/json"
        elif files:
            body, sent["content-type"] = _form_data(data or {}, files)
        elif data is not None:
            body = urlencode(data).encode()
            sent["content-type"] = "application/x-www-form-urlencoded"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
        t0 = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=sent)
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
            ms = (time.perf_counter() - t0) * 1000
            pairs = resp.getheaders()
        finally:
            conn.close()
        got: dict[str, str] = {}
        for name, value in pairs:
            name = name.lower()
            got[name] = f"{got[name]}, {value}" if name in got else value
            if name == "set-cookie":
                cookie, _, attributes = value.partition(";")
                key, _, val = cookie.strip().partition("=")
                if "max-age=0" in attributes.lower().replace(" ", ""):
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = val
        return Answer(resp.status, got, text, round(ms, 1))


def _form_data(
    data: dict[str, str], files: list[tuple[str, tuple[str, bytes]]]
) -> tuple[bytes, str]:
    boundary = "mllgraph-bench-" + uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in data.items()
    ]
    for field_name, (filename, content) in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + content
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def csrf_token(client: Browser) -> str:
    """The CSRF token the page hands out (its cookie, now in `client`'s jar)."""
    client.get("/static/style.css")
    if CSRF_COOKIE not in client.cookies:
        client.get("/login")
    return str(client.cookies[CSRF_COOKIE])


def raw_post(
    port: int,
    path: str,
    headers: dict[str, str],
    body: Iterator[bytes],
    length: int | None,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """POST `body` (with Content-Length `length`, or chunked when None) while reading the
    answer: {status, ms (to the status line), sent_mb (body sent by then), error text}.
    The sending stops at the answer, or when the server closes the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    sent, done = [0], threading.Event()

    def send() -> None:
        try:
            for chunk in body:
                if done.is_set():
                    return
                framed = chunk if length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk)
                sock.sendall(framed)
                sent[0] += len(chunk)
            if length is None:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed: what a refusal looks like

    t0 = time.perf_counter()
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    got, status, error, ms, sent_then = b"", None, "", None, 0
    try:
        while b"\r\n\r\n" not in got or not _complete(got):
            data = sock.recv(65536)
            if not data:
                break
            if ms is None:
                ms, sent_then = (time.perf_counter() - t0) * 1000, sent[0]
            got += data
            if len(got) > 1 << 20:
                break
    except OSError as e:
        error = f"{type(e).__name__}: {e}"
    finally:
        done.set()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        sender.join(30)
    if got.startswith(b"HTTP/1.1 "):
        status = int(got[9:12])
    text = got.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")
    return {
        "status": status,
        "ms": round(ms, 1) if ms is not None else None,
        "sent_mb": round(sent_then / 2**20, 1),
        "answer": (error or text)[:300],
    }


def _complete(got: bytes) -> bool:
    head, _, rest = got.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(rest) >= int(value.strip())
    return False  # no length: read until the server closes


def repeated(
    prefix: bytes, filler: bytes, suffix: bytes, total: int
) -> tuple[Iterator[bytes], int]:
    """A body of `total` bytes (`prefix`, `filler` repeated, `suffix`) sent in 1 MiB chunks,
    never held whole in this process, and its exact length."""
    fill = total - len(prefix) - len(suffix)
    block = (filler * (2**20 // len(filler) + 1))[: 2**20]

    def chunks() -> Iterator[bytes]:
        yield prefix
        left = fill
        while left > 0:
            yield block[: min(left, len(block))]
            left -= len(block)
        yield suffix

    return chunks(), total


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header says width x height, with a few bytes of pixel data: what a
    compressed bomb looks like to anything that reads the header only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 100)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def encoded(img: np.ndarray | None, fmt: str) -> bytes:
    """`img` (or an 8x8 red square) saved as `fmt` by Pillow."""
    from PIL import Image

    buf = io.BytesIO()
    picture = Image.fromarray(img) if img is not None else Image.new("RGB", (8, 8), (200, 30, 30))
    picture.save(buf, format=fmt)
    return buf.getvalue()
