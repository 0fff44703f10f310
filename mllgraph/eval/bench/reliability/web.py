"""Check 6, the web page (`mllgraph serve web` as a subprocess over the rig's services,
loopback only), each request a row with its HTTP status and the status expected:

* web_inputs (no tokens): a Fashion PNG is classified (200); bodies over
  MLLGRAPH_WEB_MAX_BODY_BYTES (declared or chunked) and 68 MB JSON bodies get 413, quickly;
  PNG headers of 13000x13000 and a 50000x50000 bomb (alone and 16 at once) get a 4xx, never a
  500; TIFF and BMP are refused naming the format; budget=10**30 is a 400; a foreign Host
  header is a 421; a POST without the CSRF token or a bearer header is a 403. The page's peak
  RSS over all of these stays under its RSS before them + RSS_GROWTH_MB.
* web_auth (tokens from a tokens file): no or an unknown token is a 401, a read token a 200,
  a browser is sent to /login and signs in with a cookie, a signed-in POST without the CSRF
  token is a 403 (a bearer header needs none), a foreign Host is a 421 even with a token, the
  access log has a line per request naming the caller and never the token, and a
  non-loopback bind without TLS and tokens is refused before anything listens (a TEST-NET
  address, so that a page that did not refuse could not bind it either).

Imports the rig and the web page helpers; it must not import the other checks or the report.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mllgraph.eval.bench.reliability.rig import REPO, Rig, free_port
from mllgraph.eval.bench.reliability.webpage import (
    CSRF_COOKIE,
    TOKEN_COOKIE,
    WebPage,
    csrf_token,
    encoded,
    png_header,
    raw_post,
    repeated,
    web_env,
)

BODY_CAP = 16 * 2**20  # MLLGRAPH_WEB_MAX_BODY_BYTES for web_inputs (the default is 32 MiB)
RSS_GROWTH_MB = 256  # the most the page's peak RSS may rise over every bad request together
QUICK_MS = 5000.0  # an oversized body is refused within this
CLASSES = "sandal, bag, boot"  # FASHION names: a task the rig's hub covers
NEVER_TEXT = "Traceback"  # the page's log shows no stack trace for any of these


def _row(case: str, status: int | None, expected: str, ok: bool, **extra: Any) -> dict[str, Any]:
    return {"case": case, "status": status, "expected": expected, "pass": bool(ok), **extra}


def _is_4xx(status: int | None) -> bool:
    return status is not None and 400 <= status < 500


def _fashion_png(rig: Rig, cls: int) -> bytes:
    assert rig.images is not None and rig.labels is not None
    return encoded(rig.images[list(rig.labels).index(cls)], "PNG")


def _multipart(name: str, data: bytes) -> tuple[bytes, bytes, bytes, str]:
    """A multipart form of CLASSES and one file: its start (up to and with `data`), a filler
    byte to pad the file with, its end, and its content type."""
    b = "mllgraphbenchboundary"
    head = (
        f'--{b}\r\nContent-Disposition: form-data; name="classes"\r\n\r\n{CLASSES}\r\n'
        f'--{b}\r\nContent-Disposition: form-data; name="images"; filename="{name}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + data
    return head, b"\0", f"\r\n--{b}--\r\n".encode(), f"multipart/form-data; boundary={b}"


def check_web_inputs(rig: Rig) -> dict[str, Any]:
    page = WebPage(
        web_env(rig, MLLGRAPH_WEB_MAX_BODY_BYTES=str(BODY_CAP)), rig.home / "web-inputs.log"
    )
    rows: list[dict[str, Any]] = []
    try:
        ready_s = page.start()
        with page.client() as web:
            csrf = csrf_token(web)
            form = {"classes": CLASSES, "csrf_token": csrf}
            good = _fashion_png(rig, 5)
            r = web.post("/api/classify", data=form, files=[("images", ("sandal.png", good))])
            preds = r.json().get("predictions", []) if r.status_code == 200 else []
            rows.append(
                _row(
                    "a 28x28 Fashion PNG (a sandal)",
                    r.status_code,
                    "200, one prediction",
                    r.status_code == 200 and len(preds) == 1,
                    predicted=preds[0]["class"] if preds else None,
                    ms=r.ms,
                )
            )
            peak_reset = page.reset_peak()
            before = page.rss_mb()
            rows += _oversized(page, csrf)
            rows += _images(web, form)
            rows += _numbers_host_csrf(web, csrf)
            after = page.rss_mb()
            r = web.post("/api/classify", data=form, files=[("images", ("sandal.png", good))])
            rows.append(
                _row(
                    "the same PNG again, after all of the above",
                    r.status_code,
                    "200",
                    r.status_code == 200,
                    ms=r.ms,
                )
            )
            alive = page.proc is not None and page.proc.poll() is None
    finally:
        page.stop()
    growth = round(after["peak_mb"] - before["rss_mb"], 1)
    memory = {
        "rss_before_mb": before["rss_mb"],
        "peak_mb": after["peak_mb"],
        "peak_counted_from": "the RSS before" if peak_reset else "the page's start",
        "rss_after_mb": after["rss_mb"],
        "peak_growth_mb": growth,
        "limit_growth_mb": RSS_GROWTH_MB,
        "pass": growth <= RSS_GROWTH_MB,
    }
    no_500 = all(r["status"] is not None and r["status"] < 500 for r in rows)
    return {
        "ready_s": round(ready_s, 1),
        "body_cap_bytes": BODY_CAP,
        "tried": rows,
        "memory": memory,
        "never_500": no_500,
        "page_alive": alive,
        "pass": alive and no_500 and memory["pass"] and all(r["pass"] for r in rows),
    }


def _oversized(page: WebPage, csrf: str) -> list[dict[str, Any]]:
    """Bodies over the cap (multipart) and over the JSON limit, declared and chunked."""
    rows = []
    cookie = {"Cookie": f"{CSRF_COOKIE}={csrf}", "X-CSRF-Token": csrf}
    for what, total, declared in (
        ("a 64 MiB multipart upload, Content-Length declared", 64 * 2**20, True),
        ("a 64 MiB multipart upload, chunked (no length)", 64 * 2**20, False),
    ):
        head, filler, tail, ctype = _multipart("huge.png", png_header(64, 64))
        body, length = repeated(head, filler, tail, total)
        res = raw_post(
            page.port,
            "/api/classify",
            {**cookie, "Content-Type": ctype},
            body,
            length if declared else None,
        )
        ok = res["status"] == 413 and f"{BODY_CAP:,} bytes" in res["answer"]
        ok = ok and res["ms"] is not None and res["ms"] <= QUICK_MS
        rows.append(
            _row(what, res.pop("status"), f"413 naming {BODY_CAP:,} bytes, ≤ 5 s", ok, **res)
        )
    for what, declared in (
        ("a 68 MB JSON body to /api/select, Content-Length declared", True),
        ("a 68 MB JSON body to /api/select, chunked (no length)", False),
    ):
        body, length = repeated(b'{"classes": ["', b"a", b'"], "budget": 5}', 68_000_000)
        res = raw_post(
            page.port,
            "/api/select",
            {**cookie, "Content-Type": "application/json"},
            body,
            length if declared else None,
        )
        ok = res["status"] == 413 and "JSON body" in res["answer"]
        ok = ok and res["ms"] is not None and res["ms"] <= QUICK_MS
        rows.append(_row(what, res.pop("status"), "413 (the 1 MiB JSON limit), ≤ 5 s", ok, **res))
    return rows


def _images(web: Any, form: dict[str, str]) -> list[dict[str, Any]]:
    """Headers over the pixel limit, a bomb, 16 at once, and formats the services refuse."""
    rows = []
    for what, data in (
        ("a 13000x13000 PNG header (a few hundred bytes)", png_header(13000, 13000)),
        ("a 50000x50000 PNG bomb header", png_header(50000, 50000)),
    ):
        r = web.post("/api/classify", data=form, files=[("images", ("big.png", data))])
        rows.append(
            _row(
                what,
                r.status_code,
                "4xx (not 500) naming the pixel limit",
                _is_4xx(r.status_code) and "pixels" in r.text,
                ms=r.ms,
                answer=r.text[:200],
            )
        )

    def one(i: int) -> int:
        files = [("images", (f"big{i}.png", png_header(13000, 13000)))]
        return int(web.post("/api/classify", data=form, files=files).status_code)

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(one, range(16)))
    rows.append(
        _row(
            "16 of the 13000x13000 PNG header at once",
            max(codes),
            "4xx for each",
            all(_is_4xx(c) for c in codes),
            statuses=sorted(set(codes)),
        )
    )
    for fmt in ("TIFF", "BMP"):
        name = f"picture.{fmt.lower()}"
        r = web.post("/api/classify", data=form, files=[("images", (name, encoded(None, fmt)))])
        rows.append(
            _row(
                f"a {fmt} file",
                r.status_code,
                f"400 naming {fmt}",
                r.status_code == 400 and f"a {fmt} file" in r.text,
                ms=r.ms,
                answer=r.text[:200],
            )
        )
    return rows


def _numbers_host_csrf(web: Any, csrf: str) -> list[dict[str, Any]]:
    rows = []
    r = web.post(
        "/api/select", json={"classes": CLASSES, "budget": 10**30}, headers={"x-csrf-token": csrf}
    )
    field = r.json().get("field") if r.status_code == 400 else None
    rows.append(
        _row(
            "/api/select with budget=10**30",
            r.status_code,
            "400 naming budget",
            r.status_code == 400 and field == "budget",
            ms=r.ms,
        )
    )
    r = web.post(
        "/api/classify", data={"classes": CLASSES, "budget": "1" + "0" * 30, "csrf_token": csrf}
    )
    rows.append(
        _row(
            "/api/classify with budget=10**30 (form)",
            r.status_code,
            "400",
            r.status_code == 400 and "budget" in r.text,
            ms=r.ms,
        )
    )
    r = web.get("/api/models", headers={"host": "evil.example"})
    rows.append(
        _row(
            "GET /api/models with Host: evil.example",
            r.status_code,
            "421",
            r.status_code == 421,
            ms=r.ms,
        )
    )
    # A cross-site form: the browser sends the page's cookies, not its token.
    r = web.post("/api/select", json={"classes": CLASSES})
    rows.append(
        _row(
            "POST /api/select with the cookie, no X-CSRF-Token, no bearer",
            r.status_code,
            "403",
            r.status_code == 403,
            ms=r.ms,
        )
    )
    r = web.post("/api/classify", data={"classes": CLASSES})
    rows.append(
        _row(
            "POST /api/classify with the cookie, no csrf_token field, no bearer",
            r.status_code,
            "403",
            r.status_code == 403,
            ms=r.ms,
        )
    )
    return rows


def check_web_auth(rig: Rig) -> dict[str, Any]:
    from mllgraph.auth import create_token

    read_token, read_entry = create_token("read", "bench-web-reader")
    _, write_entry = create_token("write", "bench-web-writer")
    tokens = rig.home / "web-tokens"
    tokens.write_text(f"{read_entry.line()}\n{write_entry.line()}\n")
    os.chmod(tokens, 0o600)
    page = WebPage(web_env(rig, MLLGRAPH_TOKENS_FILE=str(tokens)), rig.home / "web-auth.log")
    bearer = {"authorization": f"Bearer {read_token}"}
    rows: list[dict[str, Any]] = []

    def add(case: str, r: Any, expected: str, ok: Callable[[Any], bool]) -> None:
        rows.append(_row(case, r.status_code, expected, ok(r), ms=r.ms))

    try:
        ready_s = page.start()
        with page.client() as web:
            add(
                "GET /api/models, no token",
                web.get("/api/models"),
                "401 with WWW-Authenticate",
                lambda r: r.status_code == 401 and r.headers.get("www-authenticate") == "Bearer",
            )
            r = web.get("/api/models", headers={"authorization": "Bearer mlg_" + "x" * 43})
            add("GET /api/models, unknown token", r, "401", lambda r: r.status_code == 401)
            add(
                "GET /api/models, read token",
                web.get("/api/models", headers=bearer),
                f"200, {len(rig.models)} models",
                lambda r: r.status_code == 200 and len(r.json()) == len(rig.models),
            )
            r = web.get("/api/models", headers={**bearer, "host": "evil.example"})
            add(
                "GET /api/models, read token, Host: evil.example",
                r,
                "421",
                lambda r: r.status_code == 421,
            )
            r = web.get("/hub", headers={"accept": "text/html"})
            add(
                "GET /hub from a browser, no token",
                r,
                "303 to /login?next=/hub",
                lambda r: r.status_code == 303 and r.headers.get("location") == "/login?next=/hub",
            )
            csrf = csrf_token(web)
            r = web.post("/login", data={"token": read_token, "next": "/hub"})
            add("POST /login without the CSRF token", r, "403", lambda r: r.status_code == 403)
            r = web.post("/login", data={"token": read_token, "next": "/hub", "csrf_token": csrf})
            add(
                "POST /login with the read token",
                r,
                "303 setting the token cookie",
                lambda r: r.status_code == 303 and TOKEN_COOKIE in r.headers.get("set-cookie", ""),
            )
            add(
                "GET /api/samples, signed in (cookie)",
                web.get("/api/samples"),
                "200",
                lambda r: r.status_code == 200,
            )
            r = web.post("/api/select", json={"classes": CLASSES})
            add(
                "POST /api/select, signed in, no X-CSRF-Token",
                r,
                "403",
                lambda r: r.status_code == 403,
            )
        with page.client() as script:  # no cookies: a script with its bearer token
            r = script.post("/api/select", json={"classes": CLASSES, "budget": 2}, headers=bearer)
            add(
                "POST /api/select, read token as bearer, no CSRF token",
                r,
                "200, a plan",
                lambda r: r.status_code == 200 and "plan_id" in r.text,
            )
    finally:
        page.stop()
    log = page.log.read_text(errors="replace")
    access = [line for line in log.splitlines() if "web_request" in line]
    access_ok = (
        len(access) >= len(rows)
        and any("status=401" in line and "caller=-" in line for line in access)
        and any("caller=bench-web-reader" in line for line in access)
        and read_token not in log
        and NEVER_TEXT not in log
    )
    binds = [_bind_refused(rig, tokens=False), _bind_refused(rig, tokens=True, file=tokens)]
    return {
        "ready_s": round(ready_s, 1),
        "tried": rows,
        "access_log": {"lines": len(access), "example": access[:1], "pass": access_ok},
        "bind": binds,
        "pass": access_ok and all(r["pass"] for r in rows + binds),
    }


def _bind_refused(rig: Rig, *, tokens: bool, file: Any = None) -> dict[str, Any]:
    """`mllgraph serve web --host 192.0.2.1` (TEST-NET-1, never this machine's) without TLS:
    refused, naming what is missing, before it binds."""
    extra = {"MLLGRAPH_TOKENS_FILE": str(file)} if tokens else {}
    proc = subprocess.run(
        [sys.executable, "-m", "mllgraph", "serve", "web", "--host", "192.0.2.1"]
        + ["--port", str(free_port()), "--target", "127.0.0.1:1"],
        env=web_env(rig, **extra),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = (proc.stderr + proc.stdout).strip()
    want = "TLS (MLLGRAPH_TLS_CERT" if tokens else "and tokens"
    return {
        "case": f"--host 192.0.2.1 with {'tokens, no TLS' if tokens else 'neither TLS nor tokens'}",
        "exit_code": proc.returncode,
        "expected": f"refused naming {want!r} and --insecure",
        "said": said[-300:],
        "pass": proc.returncode != 0 and want in said and "--insecure" in said,
    }
