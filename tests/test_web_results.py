"""The Results page: the latest zero-shot report rendered as HTML, and its plot served."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from fastapi.testclient import TestClient

from mllgraph import client as mc
from mllgraph.settings import Settings
from mllgraph.web.app import create_app
from mllgraph.web.results import latest_report, render_markdown

REPORT = """# Zero-shot evaluation (demo)

MLL uses the class names and the hub's own probe images.

## Per task

| task | MLL | oracle |
|---|---:|---:|
| footwear-3 | 0.912 | 0.930 |
| <script>x</script> | 0.1 | 0.2 |

![accuracy against hub size](demo_hub_size.png)

```
{"hub_build_s": 12}
```
"""


def test_render_markdown_tables_images_and_escaping() -> None:
    out = render_markdown(REPORT)
    assert "<h2>Zero-shot evaluation (demo)</h2>" in out
    assert "<th>task</th><th>MLL</th><th>oracle</th>" in out
    assert "<td>footwear-3</td><td>0.912</td><td>0.930</td>" in out
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert (
        '<img class="report" alt="accuracy against hub size" src="/reports/demo_hub_size.png">'
        in out
    )
    assert "<pre>" in out and "&quot;hub_build_s&quot;" in out


def test_latest_report_prefers_the_newest(tmp_path: Path) -> None:
    assert latest_report(tmp_path) is None
    (tmp_path / "zeroshot.md").write_text("# old")
    (tmp_path / "demo.md").write_text("# new")
    os.utime(tmp_path / "zeroshot.md", (1, 1))
    assert latest_report(tmp_path) == tmp_path / "demo.md"


def test_results_page_and_plot(tmp_path: Path) -> None:
    settings = replace(Settings.from_env(), reports_dir=tmp_path)
    # The Results page needs no service; the client is never called here.
    app = create_app(mc.Client(target="127.0.0.1:1"), settings)
    web = TestClient(app, base_url="http://127.0.0.1:8080")  # a Host the page answers
    empty = web.get("/results")
    assert empty.status_code == 200 and "No zero-shot report yet" in empty.text
    (tmp_path / "demo.md").write_text(REPORT)
    (tmp_path / "demo_hub_size.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    page = web.get("/results")
    assert page.status_code == 200 and "<td>footwear-3</td>" in page.text
    assert web.get("/reports/demo_hub_size.png").content.startswith(b"\x89PNG")
    assert web.get("/reports/demo.md").status_code == 404  # only plots
    assert web.get("/reports/..%2Fsecret.png").status_code == 404


def test_serve_web_command_serves_the_page(tmp_path: Path) -> None:
    """`mllgraph serve web` as documented: a real process answering HTTP until stopped."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MLLGRAPH_REPORTS_DIR": str(tmp_path)}
    argv = ["serve", "web", "--port", str(port), "--target", "127.0.0.1:1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mllgraph", *argv],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline, body = time.monotonic() + 120, ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/results", timeout=5) as r:
                    body = r.read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert "No zero-shot report yet" in body, proc.stdout.read().decode() if proc.poll() else ""
    finally:
        proc.terminate()
        proc.wait(timeout=30)
