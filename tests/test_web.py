"""The web page and its JSON API (mllgraph/web) over the real services and the real Neo4j
(tests/conftest.py `fashion_services`), served by uvicorn on a free port."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mllgraph import client as mc

pytestmark = pytest.mark.neo4j

CLASSES = "sandal, sneaker, trouser, bag, dog"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def site(fashion_services: dict[str, Any]):
    import uvicorn

    from mllgraph.web.app import create_app

    hub = fashion_services
    client = mc.Client(**hub["addresses"], timeout=300)
    app = create_app(client, hub["settings"], graph=hub["graph"])
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="web-test", daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < end, "the web app did not start"
        time.sleep(0.05)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "client": client, "hub": hub, "app": app}
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        client.close()


def _http() -> Any:
    import urllib3

    return urllib3.PoolManager(timeout=urllib3.Timeout(total=300))


def _image(hub: dict[str, Any], fashion_label: int) -> np.ndarray:
    x, y = hub["x_test"], hub["y_test"]
    return x[np.flatnonzero(y == fashion_label)[1]]  # not the sample (the first one)


def test_api_classify_equals_the_client(site: dict[str, Any]) -> None:
    hub, http = site["hub"], _http()
    sneaker = _png(_image(hub, 7))
    fields = [
        ("classes", CLASSES),
        ("budget", "2"),
        ("samples", "sandal"),
        ("samples", "trouser"),
        ("images", ("sneaker.png", sneaker, "image/png")),
        ("images", ("notes.png", b"this is text", "image/png")),
    ]
    r = http.request("POST", site["url"] + "/api/classify", fields=fields)
    assert r.status == 200, r.data[:500]
    body = json.loads(r.data)
    assert [p["image"] for p in body["predictions"]] == [
        "sample: Sandal",
        "sample: Trouser",
        "sneaker.png",
    ]
    assert body["errors"] == [{"image": "notes.png", "error": "not an image this server can read"}]
    plan = body["plan"]
    assert [c["name"] for c in plan["classes"]] == mc.split_classes(CLASSES)
    assert all(c["reasons"] for c in plan["classes"])

    app_samples = site["app"].state.web.samples
    direct = site["client"].classify(
        [app_samples["sandal"].png, app_samples["trouser"].png, sneaker],
        CLASSES,
        budget=2,
        top_k=5,
    )
    assert direct.plan_id == plan["plan_id"]
    for got, want in zip(body["predictions"], direct, strict=True):
        assert got["class"] == want.class_name
        assert dict(got["probabilities"]) == pytest.approx(want.probabilities, abs=1e-6)
        assert got["experts"] == want.models


def test_api_refuses_bad_input_with_messages(site: dict[str, Any]) -> None:
    http, url = _http(), site["url"]
    png = _png(_image(site["hub"], 5))
    cases = [
        ([("classes", ""), ("samples", "sandal")], "at least two class names"),
        ([("classes", "sandal"), ("samples", "sandal")], "at least two class names"),
        ([("classes", "sandal, bag")], "pick a sample or upload"),
        ([("classes", "sandal, bag"), ("images", ("a.txt", b"text", "text/plain"))], "can be read"),
        ([("classes", "sandal, bag"), ("budget", "many"), ("samples", "sandal")], "budget"),
        ([("classes", "sandal, bag"), ("samples", "no-such")], "no sample"),
    ]
    for fields, message in cases:
        r = http.request("POST", url + "/api/classify", fields=fields)
        body = json.loads(r.data)
        assert r.status == 400 and message in body["error"], (fields, body)
        assert body["code"] == "INVALID_ARGUMENT"
    from mllgraph.web.app import MAX_UPLOAD_BYTES

    huge = png + b"\0" * (MAX_UPLOAD_BYTES + 1 - len(png))
    fields = [
        ("classes", "sandal, bag"),
        ("images", ("huge.png", huge, "image/png")),
        ("images", ("ok.png", png, "image/png")),
    ]
    body = json.loads(http.request("POST", url + "/api/classify", fields=fields).data)
    assert body["errors"] == [{"image": "huge.png", "error": "the file is over 10 MB"}]
    assert [p["image"] for p in body["predictions"]] == ["ok.png"]

    # The page gives the same messages in the page, without a stack trace.
    r = http.request("POST", url + "/", fields=[("classes", "sandal"), ("samples", "sandal")])
    page = r.data.decode()
    assert r.status == 400 and 'class="error"' in page and "at least two class names" in page
    assert "Traceback" not in page
    r = http.request("GET", url + "/api/plans/no-such-plan")
    assert r.status == 404 and "no-such-plan" in json.loads(r.data)["error"]


def test_api_hub_concepts_and_schema(site: dict[str, Any]) -> None:
    http, url, hub = _http(), site["url"], site["hub"]
    schema = json.loads(http.request("GET", url + "/openapi.json").data)
    assert {"/api/classify", "/api/select", "/api/models", "/api/concepts"} <= set(schema["paths"])

    models = json.loads(http.request("GET", url + "/api/models?name=fashionhub&heads=true").data)
    mine = [m for m in models if m["id"] in hub["models"]]
    assert len(mine) == 2 and all(len(m["heads"]) == 3 and m["labelled"] for m in mine)

    found = json.loads(http.request("GET", url + "/api/concepts?q=sandal").data)
    assert found["concept"]["wnid"] == "n04133789"
    assert "n03380867" in {a["wnid"] for a in found["ancestors"]}  # footwear
    assert {h["model"] for h in found["heads"]} & set(hub["models"])
    edges = {(e["child"], e["parent"]) for e in found["edges"]}
    assert ("n04133789", "n04199027") in edges  # sandal IS_A shoe

    r = http.request("GET", url + "/api/concepts?q=nosuchwordatall")
    assert r.status == 404
    page = http.request("GET", url + "/concept?q=footwear").data.decode()
    assert "<svg" in page and "Heads covering it" in page
    page = http.request("GET", url + "/hub").data.decode()
    assert all(mid in page for mid in hub["models"])
