"""The web page's guards (mllgraph/web/security.py, mllgraph/web/uploads.py): the bind rule,
tokens (header and sign-in cookie), the Host allow-list, CSRF, body limits, the access log,
uploads checked from their headers, and numbers out of range. No services run: calls that
pass every guard reach a client whose services do not answer (503)."""

from __future__ import annotations

import io
import logging
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mllgraph import client as mc
from mllgraph.auth import create_token
from mllgraph.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from mllgraph.reuse.images import check_encoded
from mllgraph.settings import Settings
from mllgraph.web.app import MAX_BUDGET, create_app
from mllgraph.web.app import main as web_main
from mllgraph.web.security import CSRF_COOKIE, TOKEN_COOKIE, WebSecurity, uvicorn_tls
from mllgraph.web.uploads import admit, thumbnail

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
LOCAL = "http://127.0.0.1:8080"
HTML = {"accept": "text/html,application/xhtml+xml"}


def _settings(tmp_path: Path, **changes: object) -> Settings:
    return replace(Settings.from_env(), reports_dir=tmp_path, **changes)


def _client(settings: Settings, base_url: str = LOCAL) -> TestClient:
    dead = mc.Client(target="127.0.0.1:1", retries=0, timeout=2, settings=settings)
    return TestClient(create_app(dead, settings), base_url=base_url, follow_redirects=False)


def _csrf(web: TestClient) -> str:
    """The CSRF token a page hands out (and its cookie, now in `web`'s jar)."""
    web.get("/results")
    return web.cookies[CSRF_COOKIE]


def _encoded(fmt: str, size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header says width x height, with a few bytes of pixel data: what a
    compressed bomb looks like to anything that reads the header only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 100)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- uploads -----------------------------------------------------------------------------------


def test_check_encoded_reads_the_header_only() -> None:
    assert check_encoded(_encoded("PNG", (30, 20)), max_pixels=600) == (20, 30)
    assert check_encoded(_encoded("JPEG", (30, 20)), max_pixels=600) == (20, 30)
    for fmt in ("TIFF", "BMP", "ICO", "PPM", "GIF", "WEBP"):
        with pytest.raises(InvalidArgument, match=f"a {fmt} file.*PNG or JPEG images only"):
            check_encoded(_encoded(fmt), max_pixels=10**6, where="x")
    with pytest.raises(InvalidArgument, match="not a PNG or JPEG image"):
        check_encoded(b"this is text", max_pixels=10**6)
    with pytest.raises(InvalidArgument, match="empty"):
        check_encoded(b"", max_pixels=10**6)
    # 13000x13000 in 200 bytes: refused from the header (the pixel data is not even valid).
    with pytest.raises(ResourceExhausted, match=r"13000x13000 = 169,000,000 pixels"):
        check_encoded(_png_header(13000, 13000), max_pixels=4096 * 4096, where="big.png")
    # 50000x50000: Pillow's own bomb guard fires while opening; still ResourceExhausted.
    with pytest.raises(ResourceExhausted, match="limit of 16,777,216 pixels"):
        check_encoded(_png_header(50000, 50000), max_pixels=4096 * 4096)
    assert check_encoded(_png_header(4096, 4096), max_pixels=4096 * 4096) == (4096, 4096)


def test_an_admitted_upload_is_forwarded_undecoded() -> None:
    data = _png_header(4000, 3000)  # valid header, pixel data the page never decodes
    msg = admit(data, "7", max_pixels=4096 * 4096, where="a.png")
    assert msg.encoded == data and msg.id == "7" and not msg.HasField("raw")
    assert thumbnail(data, max_pixels=4096 * 4096) is None  # undecodable: no thumbnail, no error
    assert thumbnail(_encoded("PNG", (300, 200)), max_pixels=300 * 200).startswith("data:image/png")
    assert thumbnail(_encoded("PNG", (300, 200)), max_pixels=300 * 200 - 1) is None


def test_uploads_are_refused_by_format_and_size_never_500(tmp_path: Path) -> None:
    web = _client(_settings(tmp_path))
    token = _csrf(web)
    form = {"classes": "sandal, bag", "csrf_token": token}
    files = [
        ("images", ("a.tiff", _encoded("TIFF"), "image/tiff")),
        ("images", ("a.bmp", _encoded("BMP"), "image/bmp")),
        ("images", ("notes.png", b"just text", "image/png")),
    ]
    r = web.post("/api/classify", data=form, files=files)
    body = r.json()
    assert r.status_code == 400 and body["field"] == "images", body
    assert "a.tiff: a TIFF file" in body["error"] and "a.bmp: a BMP file" in body["error"]
    assert "notes.png: 9 bytes are not a PNG or JPEG image" in body["error"]

    for name, data in (
        ("big.png", _png_header(13000, 13000)),
        ("bomb.png", _png_header(50000, 50000)),
    ):
        r = web.post("/api/classify", data=form, files=[("images", (name, data, "image/png"))])
        assert r.status_code == 413, r.text
        assert r.json()["code"] == "RESOURCE_EXHAUSTED" and "16,777,216 pixels" in r.json()["error"]

    # The page says the same in the page.
    r = web.post(
        "/", data=form, files=[("images", ("bomb.png", _png_header(50000, 50000), "image/png"))]
    )
    assert r.status_code == 413 and 'class="error"' in r.text and "16,777,216 pixels" in r.text

    # A readable PNG next to refused files passes every check and reaches the services.
    files = [("images", ("ok.png", _encoded("PNG"), "image/png")), files[0]]
    assert web.post("/api/classify", data=form, files=files).status_code == 503


# --- numbers -----------------------------------------------------------------------------------


def test_budget_out_of_range_is_a_400_naming_the_field(tmp_path: Path) -> None:
    web = _client(_settings(tmp_path))
    token = _csrf(web)
    json_headers = {"x-csrf-token": token}
    for budget in (10**30, 0, -1, MAX_BUDGET + 1, "many", 2.5):
        r = web.post(
            "/api/select", json={"classes": "a, b", "budget": budget}, headers=json_headers
        )
        assert r.status_code == 400, (budget, r.text)
        assert r.json()["field"] == "budget" and "budget" in r.json()["error"]
    for budget in ("1" + "0" * 30, "0", "-3", "1e3", "9" * 5000):
        r = web.post(
            "/api/classify", data={"classes": "a, b", "budget": budget, "csrf_token": token}
        )
        assert r.status_code == 400, (budget[:20], r.text)
        assert r.json()["field"] == "budget" and len(r.json()["error"]) < 200
    r = web.get("/api/models", params={"heads": "maybe"})
    assert r.status_code == 400 and r.json()["field"] == "heads"
    # In range, the request passes and reaches the (absent) services.
    r = web.post(
        "/api/select", json={"classes": "a, b", "budget": MAX_BUDGET}, headers=json_headers
    )
    assert r.status_code == 503


# --- bodies ------------------------------------------------------------------------------------


def test_request_bodies_are_capped(tmp_path: Path) -> None:
    web = _client(_settings(tmp_path, web_max_body_bytes=64 * 1024))
    token = _csrf(web)
    big = _encoded("PNG") + b"\0" * (80 * 1024)
    form = {"classes": "a, b", "csrf_token": token}
    r = web.post("/api/classify", data=form, files=[("images", ("big.png", big, "image/png"))])
    assert r.status_code == 413 and "MLLGRAPH_WEB_MAX_BODY_BYTES" in r.json()["error"]
    assert "65,536 bytes" in r.json()["error"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(100):
            yield b"x" * 1024

    r = web.post("/api/select", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "RESOURCE_EXHAUSTED"
    r = web.post("/", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413

    # JSON has its own, smaller limit (1 MiB) under a larger body limit.
    web = _client(_settings(tmp_path))
    token = _csrf(web)
    body = b'{"classes": [' + b'"a",' * 400_000 + b'"b"]}'
    r = web.post(
        "/api/select",
        content=body,
        headers={"content-type": "application/json", "x-csrf-token": token},
    )
    assert r.status_code == 413 and "JSON body" in r.json()["error"]


# --- Host, bind, tokens, CSRF, log ---------------------------------------------------------


def test_only_allowed_host_names_are_answered(tmp_path: Path) -> None:
    web = _client(_settings(tmp_path))
    for host in ("127.0.0.1:8080", "localhost", "LOCALHOST:80", "[::1]:8080"):
        assert web.get("/api/samples", headers={"host": host}).status_code == 200, host
    for host in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example"):
        r = _client(_settings(tmp_path)).get("/api/models", headers={"host": host})
        assert r.status_code == 421 and "MLLGRAPH_WEB_ALLOWED_HOSTS" in r.json()["error"], host
        assert "set-cookie" not in r.headers  # nothing handed to another name
    web = _client(_settings(tmp_path, web_allowed_hosts="mll.example.org, other.example"))
    assert web.get("/api/samples", headers={"host": "mll.example.org:8443"}).status_code == 200
    assert web.get("/api/samples", headers={"host": "evil.example"}).status_code == 421
    # The address the page is bound to (not a wildcard) is allowed too.
    security = WebSecurity.from_settings(_settings(tmp_path), bind_host="10.1.2.3")
    assert security.host_allowed("10.1.2.3:8080") and not security.host_allowed("10.1.2.4")
    assert not WebSecurity.from_settings(_settings(tmp_path), "0.0.0.0").host_allowed("0.0.0.0")


def test_bind_rule(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, entry = create_token("read", "alice")
    plain = WebSecurity.from_settings(_settings(tmp_path))
    plain.check_bind("127.0.0.1")
    plain.check_bind("::1")
    with pytest.raises(FailedPrecondition, match=r"without TLS .* and tokens"):
        plain.check_bind("0.0.0.0")
    tokens_only = WebSecurity.from_settings(_settings(tmp_path, tokens=entry.line()))
    with pytest.raises(FailedPrecondition, match=r"without TLS \(MLLGRAPH_TLS_CERT"):
        tokens_only.check_bind("10.0.0.5")
    replace(tokens_only, tls=True).check_bind("0.0.0.0")
    with caplog.at_level(logging.WARNING, logger="mllgraph.web"):
        replace(plain, insecure=True).check_bind("0.0.0.0")
    assert "INSECURE" in caplog.text
    # `mllgraph serve web --host 0.0.0.0` refuses before it serves anything.
    argv = ["--host", "0.0.0.0", "--port", "1", "--target", "127.0.0.1:1", "--log-level", "ERROR"]
    with pytest.raises(FailedPrecondition, match="--insecure"):
        web_main(argv, _settings(tmp_path))


def test_tls_options_check_the_files(tmp_path: Path) -> None:
    assert uvicorn_tls(_settings(tmp_path)) == {}
    missing = _settings(tmp_path, tls_cert=tmp_path / "no.pem", tls_key=tmp_path / "no.key")
    with pytest.raises(FailedPrecondition, match="MLLGRAPH_TLS_CERT"):
        uvicorn_tls(missing)
    with pytest.raises(FailedPrecondition, match="go together"):
        WebSecurity.from_settings(_settings(tmp_path, tls_cert=tmp_path / "c.pem"))
    (tmp_path / "c.pem").write_text("x")
    (tmp_path / "k.pem").write_text("x")
    on = _settings(tmp_path, tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem")
    assert uvicorn_tls(on)["ssl_certfile"] == str(tmp_path / "c.pem")
    assert "Secure" in WebSecurity.from_settings(on).cookie(TOKEN_COOKIE, "t")


def test_tokens_guard_pages_and_api(tmp_path: Path) -> None:
    secret, entry = create_token("read", "alice")
    web = _client(_settings(tmp_path, tokens=entry.line()))
    r = web.get("/api/samples")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in r.json()["error"]
    for path in ("/api/models", "/openapi.json", "/samples/sandal.png", "/reports/x.png"):
        assert web.get(path).status_code == 401, path
    assert web.get("/api/samples", headers={"authorization": "Bearer mlg_wrong"}).status_code == 401
    assert web.get("/api/samples", headers={"authorization": f"Bearer {secret}"}).status_code == 200
    assert web.get("/static/style.css").status_code == 200  # the sign-in page's style

    # A browser is sent to sign in, and comes back with a cookie.
    r = web.get("/hub", headers=HTML)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/hub"
    page = web.get("/login?next=/hub")
    assert page.status_code == 200 and 'name="token"' in page.text
    csrf = web.cookies[CSRF_COOKIE]
    r = web.post("/login", data={"token": "mlg_wrong", "next": "/hub", "csrf_token": csrf})
    assert r.status_code == 401 and "not one this server knows" in r.text
    r = web.post("/login", data={"token": secret, "next": "/hub"})  # no CSRF token
    assert r.status_code == 403 and TOKEN_COOKIE not in r.cookies
    r = web.post(
        "/login", data={"token": secret, "next": "https://evil.example/", "csrf_token": csrf}
    )
    assert r.status_code == 303 and r.headers["location"] == "/"  # only local redirects
    cookie = r.headers["set-cookie"]
    assert (
        cookie.startswith(f"{TOKEN_COOKIE}=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    )
    r = web.get("/results", headers=HTML)
    assert r.status_code == 200 and "signed in as alice" in r.text
    assert web.get("/api/samples").status_code == 200  # the cookie works for the API too

    r = web.post("/logout", data={"csrf_token": csrf})
    assert r.status_code == 303 and "Max-Age=0" in r.headers["set-cookie"]
    web.cookies.delete(TOKEN_COOKIE)
    assert web.get("/api/samples").status_code == 401


def test_every_post_needs_the_csrf_token_or_a_bearer_header(tmp_path: Path) -> None:
    secret, entry = create_token("read", "bob")
    web = _client(_settings(tmp_path, tokens=entry.line()))
    web.cookies.set(TOKEN_COOKIE, secret)  # a signed-in browser: the cookie alone
    csrf = _csrf(web)
    posts = {
        route.path
        for route in web.app.routes
        if "POST" in getattr(route, "methods", ()) and route.path != "/login"
    }
    assert posts == {"/", "/logout", "/api/classify", "/api/select"}
    for path in sorted(posts):
        r = web.post(path, data={"classes": "sandal"})
        assert r.status_code == 403 and "csrf_token" in r.text, path
    r = web.post("/api/select", json={"classes": "a, b"})
    assert r.status_code == 403
    r = web.post("/api/select", json={"classes": "a, b"}, headers={"x-csrf-token": "forged" * 8})
    assert r.status_code == 403
    # With the token from the page (form field or header), the request goes on.
    r = web.post("/", data={"classes": "sandal", "csrf_token": csrf})
    assert r.status_code == 400 and "at least two class names" in r.text
    r = web.post("/api/select", json={"classes": "a, b"}, headers={"x-csrf-token": csrf})
    assert r.status_code == 503
    # A script with its bearer token and no cookies at all needs no CSRF token.
    script = _client(_settings(tmp_path, tokens=entry.line()))
    r = script.post(
        "/api/select", json={"classes": "a, b"}, headers={"authorization": f"Bearer {secret}"}
    )
    assert r.status_code == 503


def test_one_access_log_line_per_request(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret, entry = create_token("read", "carol")
    web = _client(_settings(tmp_path, tokens=entry.line()))
    with caplog.at_level(logging.INFO, logger="mllgraph.web.access"):
        web.get("/api/samples?q=" + secret, headers={"authorization": f"Bearer {secret}"})
        web.get("/api/models")
        web.get("/api/samples", headers={"host": "evil.example"})
    lines = [r.getMessage() for r in caplog.records if r.name == "mllgraph.web.access"]
    assert len(lines) == 3, lines
    assert lines[0].startswith("web_request method=GET path=/api/samples status=200 ms=")
    assert "caller=carol" in lines[0] and "client=" in lines[0]
    assert "status=401" in lines[1] and "caller=-" in lines[1]
    assert "status=421" in lines[2]
    assert all(secret not in line and "?" not in line for line in lines)
