"""The web page and its JSON API (mllgraph/web) over the real services and the real Neo4j
(tests/conftest.py `fashion_services`), served by uvicorn on a free port; the page is driven
by headless Chromium (Debian's chromium + chromium-driver), which takes a screenshot into
the test's temporary folder: the suite writes nothing into the working tree. To refresh the
README's screenshot, run `MLLGRAPH_SCREENSHOT_TO=docs/web.png .venv/bin/python -m pytest
tests/test_web.py -k browser`. Without a browser the browser test skips, except under
CI=true where it fails."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mllgraph import client as mc

pytestmark = pytest.mark.neo4j

CLASSES = "sandal, sneaker, trouser, bag, dog"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


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


def _csrf(url: str) -> dict[str, str]:
    """Headers that pass the page's CSRF check: its cookie, sent back with X-CSRF-Token."""
    from http.cookies import SimpleCookie

    from mllgraph.web.security import CSRF_COOKIE

    r = _http().request("GET", url + "/results")
    token = SimpleCookie(r.headers["set-cookie"])[CSRF_COOKIE].value
    return {"Cookie": f"{CSRF_COOKIE}={token}", "X-CSRF-Token": token}


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
    csrf = _csrf(site["url"])
    r = http.request("POST", site["url"] + "/api/classify", fields=fields, headers=csrf)
    assert r.status == 200, r.data[:500]
    body = json.loads(r.data)
    assert [p["image"] for p in body["predictions"]] == [
        "sample: Sandal",
        "sample: Trouser",
        "sneaker.png",
    ]
    assert body["errors"] == [
        {
            "image": "notes.png",
            "error": "12 bytes are not a PNG or JPEG image (UnidentifiedImageError)",
        }
    ]
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


def test_allow_none_checkbox_and_api(site: dict[str, Any]) -> None:
    hub, http, url = site["hub"], _http(), site["url"]
    csrf = _csrf(url)
    dress = _png(_image(hub, 3))  # a concept outside the task
    fields = [("classes", CLASSES), ("budget", "2"), ("samples", "sandal")]
    fields += [("images", ("dress.png", dress, "image/png"))]
    plain = json.loads(
        http.request("POST", url + "/api/classify", fields=fields, headers=csrf).data
    )
    assert "none_threshold" not in plain
    assert all("none_score" not in p for p in plain["predictions"])
    r = http.request(
        "POST", url + "/api/classify", fields=[*fields, ("allow_none", "1")], headers=csrf
    )
    assert r.status == 200, r.data[:500]
    body = json.loads(r.data)
    app_samples = site["app"].state.web.samples
    direct = site["client"].classify(
        [app_samples["sandal"].png, dress], CLASSES, budget=2, top_k=5, allow_none=True
    )
    assert body["none_threshold"] == pytest.approx(direct.none_threshold)
    for got, want in zip(body["predictions"], direct, strict=True):
        assert got["none_score"] == pytest.approx(want.none_score, abs=1e-6)
        assert (got["class"], got["none_of_these"]) == (want.class_name, want.none_of_these)

    # The page: the checkbox stays ticked and each prediction shows its score.
    r = http.request("POST", url + "/", fields=[*fields, ("allow_none", "1")], headers=csrf)
    page = r.data.decode()
    assert r.status == 200 and 'class="none-score"' in page
    assert page.count('class="none-score"') == 2
    assert re.search(r'id="allow_none"[^>]*checked', page)
    r = http.request("POST", url + "/", fields=fields, headers=csrf)
    assert 'class="none-score"' not in r.data.decode()
    assert not re.search(r'id="allow_none"[^>]*checked', r.data.decode())


def test_api_refuses_bad_input_with_messages(site: dict[str, Any]) -> None:
    http, url = _http(), site["url"]
    csrf = _csrf(url)
    png = _png(_image(site["hub"], 5))
    cases = [
        ([("classes", ""), ("samples", "sandal")], "at least two class names"),
        ([("classes", "sandal"), ("samples", "sandal")], "at least two class names"),
        ([("classes", "sandal, bag")], "pick a sample or upload"),
        ([("classes", "sandal, bag"), ("images", ("a.txt", b"text", "text/plain"))], "can be read"),
        ([("classes", "sandal, bag"), ("budget", "many"), ("samples", "sandal")], "budget"),
        ([("classes", "sandal, bag"), ("samples", "no-such")], "no sample"),
        (
            [("classes", "sandal, bag"), ("samples", "sandal"), ("allow_none", "maybe")],
            "allow_none",
        ),
    ]
    for fields, message in cases:
        r = http.request("POST", url + "/api/classify", fields=fields, headers=csrf)
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
    body = json.loads(http.request("POST", url + "/api/classify", fields=fields, headers=csrf).data)
    assert body["errors"] == [{"image": "huge.png", "error": "the file is over 10 MB"}]
    assert [p["image"] for p in body["predictions"]] == ["ok.png"]

    # Formats the services do not take, and sizes over their pixel limit, are refused from the
    # file's first bytes and header; the readable image beside them is classified.
    tiff = io.BytesIO()
    Image.fromarray(_image(site["hub"], 5)).save(tiff, format="TIFF")
    bomb = Image.new("L", (5000, 5000))  # 25 M pixels, over the 16.7 M limit; 25 KB as a PNG
    fields = [
        ("classes", "sandal, bag"),
        ("images", ("a.tiff", tiff.getvalue(), "image/tiff")),
        ("images", ("bomb.png", _png(np.asarray(bomb)), "image/png")),
        ("images", ("ok.png", png, "image/png")),
    ]
    r = http.request("POST", url + "/api/classify", fields=fields, headers=csrf)
    body = json.loads(r.data)
    assert r.status == 200, body
    errors = dict((e["image"], e["error"]) for e in body["errors"])
    assert (
        errors["a.tiff"]
        == "a TIFF file (by its first bytes); this server reads PNG or JPEG images only"
    )
    assert errors["bomb.png"].startswith("5000x5000 = 25,000,000 pixels is over")
    assert [p["image"] for p in body["predictions"]] == ["ok.png"]
    r = http.request("POST", url + "/api/select", body=b'{"classes": "a, b", "budget": 1e30}',
                     headers={**csrf, "Content-Type": "application/json"})  # fmt: skip
    assert r.status == 400 and json.loads(r.data)["field"] == "budget"

    # The page gives the same messages in the page, without a stack trace.
    fields = [("classes", "sandal"), ("samples", "sandal")]
    r = http.request("POST", url + "/", fields=fields, headers=csrf)
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


# --- the browser -------------------------------------------------------------------------------


def _browser():
    """Headless Chromium through chromedriver; skip (fail under CI=true) when it cannot run."""
    why = None
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1500,1100"):  # fmt: skip
            options.add_argument(arg)
        return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as e:  # noqa: BLE001 - reported through the CI rule
        why = f"{type(e).__name__}: {e}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and headless Chromium cannot run: {why}")
    pytest.skip(f"no headless Chromium: {why}")


def test_the_page_in_a_browser(site: dict[str, Any], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    hub = site["hub"]
    upload = tmp_path / "my-sneaker.png"
    upload.write_bytes(_png(_image(hub, 7)))
    driver = _browser()
    try:
        wait = WebDriverWait(driver, 300)
        driver.get(site["url"] + "/")
        driver.find_element(By.ID, "classes").send_keys(CLASSES)
        budget = driver.find_element(By.ID, "budget")
        budget.clear()
        budget.send_keys("2")
        driver.find_element(By.ID, "images").send_keys(str(upload))
        for key in ("sandal", "bag"):
            driver.find_element(By.CSS_SELECTOR, f"input[name=samples][value={key}]").click()
        driver.find_element(By.ID, "run").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".prediction")))

        shown = {
            el.find_element(By.CLASS_NAME, "image-name").text: el.find_element(
                By.CLASS_NAME, "class-name"
            ).text
            for el in driver.find_elements(By.CSS_SELECTOR, ".prediction")
        }
        samples = site["app"].state.web.samples
        direct = site["client"].classify(
            [samples["sandal"].png, samples["bag"].png, upload], CLASSES, budget=2
        )
        assert shown == {
            "sample: Sandal": direct[0].class_name,
            "sample: Bag": direct[1].class_name,
            "my-sneaker.png": direct[2].class_name,
        }

        # The plan: one row per class; closing and opening it works.
        plan = driver.find_element(By.ID, "plan")
        rows = plan.find_elements(By.CSS_SELECTOR, "tr.plan-class")
        assert [r.find_element(By.TAG_NAME, "td").text for r in rows] == mc.split_classes(CLASSES)
        summary = plan.find_element(By.TAG_NAME, "summary")
        summary.click()
        assert not rows[0].is_displayed()
        summary.click()
        assert rows[0].is_displayed()
        assert direct.plan_id in summary.text
        shot = Path(os.environ.get("MLLGRAPH_SCREENSHOT_TO") or tmp_path / "web.png")
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

        # Search a concept from the hub page.
        driver.get(site["url"] + "/hub")
        box = driver.find_element(By.ID, "concept-q")
        box.send_keys("sandal")
        driver.find_element(By.ID, "concept-go").click()
        title = wait.until(ec.presence_of_element_located((By.ID, "concept-name")))
        assert "sandal" in title.text and "n04133789" in title.text
        assert driver.find_elements(By.CSS_SELECTOR, "svg.concept-graph .node.focus")
        heads = driver.find_element(By.ID, "heads").text
        assert any(mid in heads for mid in hub["models"])
    finally:
        driver.quit()
