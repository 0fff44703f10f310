"""The web page and its JSON API (`mllgraph serve web`), a FastAPI app over `mllgraph.client`.

* ``/`` — try a task: class names, uploaded or bundled sample images; predictions per image
  and the plan beside them (concepts, grounding, coverage, heads, estimated accuracy, reasons).
* ``/hub`` — the models with their heads and label edges; ``/concept?q=`` — a concept, its
  ancestors, children and the heads covering it, drawn as a small graph.
* ``/api/...`` — the same operations as JSON; the schema is at ``/openapi.json``, the
  interactive docs at ``/docs``.

Predictions, plans and models come from the gRPC services through the client; the concept
graph is read from Neo4j directly (read-only; no service serves it). Bad input — no classes,
one class, a file that is not an image, a file over the size limit — gives a message on the
page (or a JSON error with an HTTP status), never a stack trace.
"""

from __future__ import annotations

import base64
import io
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from mllgraph import client as mc
from mllgraph.errors import InvalidArgument, MllgraphError
from mllgraph.settings import Settings
from mllgraph.web import concepts
from mllgraph.web.samples import Sample, fashion_samples

log = logging.getLogger("mllgraph.web")
HERE = Path(__file__).parent
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # per image file
MAX_IMAGES = 64  # per task
MAX_HEADS_SHOWN = 50  # per model on the hub page
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 409,
    "RESOURCE_EXHAUSTED": 413,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def _code(e: MllgraphError) -> str:
    return getattr(e, "code", None) or type(e).grpc_code


def _message(e: MllgraphError) -> str:
    """The error for people: without the client's 'RpcName: ' prefix."""
    text = str(e)
    head, sep, rest = text.partition(": ")
    text = rest if sep and head.isidentifier() and head[:1].isupper() else text
    if _code(e) == "UNAVAILABLE":
        text = f"the mllgraph services do not answer; are they running? ({text})"
    return text


class SelectBody(BaseModel):
    classes: list[str] | str
    budget: int = 5


def _thumbnail(data: bytes) -> str | None:
    """A PNG data URI (at most 128 px) of an image, for the page; None if it does not decode."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB") if img.mode not in ("L", "RGB") else img.copy()
    except Exception:  # noqa: BLE001 - not an image: no thumbnail, the error says why
        return None
    img.thumbnail((128, 128))
    if max(img.size) < 96:  # tiny images (28x28 Fashion) are shown scaled up, pixelated
        img = img.resize((96 * img.size[0] // max(img.size), 96 * img.size[1] // max(img.size)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def plan_view(plan: mc.Plan, explanation: mc.Explanation | None) -> dict[str, Any]:
    reasons = {c.name: c.reasons for c in explanation.classes} if explanation else {}
    out = jsonable_encoder(asdict(plan))
    for c in out["classes"]:
        c["reasons"] = reasons.get(c["name"], [])
    out["uncovered"] = plan.uncovered
    out["notes"] = explanation.notes if explanation else []
    return out


class Web:
    """What the routes share: the client, the settings, the samples, a lazy Neo4j graph."""

    def __init__(self, client: mc.Client, settings: Settings, graph: Any | None = None) -> None:
        self.client = client
        self.settings = settings
        self._graph = graph
        self.samples: dict[str, Sample] = fashion_samples(settings.fashion_mnist_dir)

    @property
    def graph(self) -> Any:
        if self._graph is None:
            from mllgraph.graph.db import Graph

            self._graph = Graph(self.settings)
        return self._graph

    def run_task(
        self, classes: str | list[str], budget: int, uploads: list[tuple[str, bytes]],
        sample_keys: list[str],
    ) -> dict[str, Any]:  # fmt: skip
        """Classify uploads and samples into the classes: predictions, plan, per-file errors.
        Raises InvalidArgument for a task that cannot run (no classes, no image)."""
        names = mc.split_classes(classes)
        if len(names) < 2:
            raise InvalidArgument(
                f"classes: type at least two class names, separated by commas (got {len(names)})"
            )
        images: list[tuple[str, bytes]] = []
        for key in sample_keys:
            if key not in self.samples:
                raise InvalidArgument(f"samples: no sample called {key!r}")
            images.append((f"sample: {self.samples[key].label}", self.samples[key].png))
        images += uploads
        if len(images) > MAX_IMAGES:
            raise InvalidArgument(f"images: at most {MAX_IMAGES} at once, got {len(images)}")
        errors: list[dict[str, str]] = []
        messages, shown = [], []
        for i, (name, data) in enumerate(images):
            label = name or f"image {i + 1}"
            if len(data) > MAX_UPLOAD_BYTES:
                errors.append(
                    {"image": label, "error": f"the file is over {MAX_UPLOAD_BYTES >> 20} MB"}
                )
                continue
            try:
                messages.append(mc.to_image(data, str(len(messages)), where=label))
            except InvalidArgument as e:
                errors.append({"image": label, "error": "not an image this server can read"})
                log.info("web_bad_image name=%r error=%r", label, str(e))
                continue
            shown.append((label, data))
        if not messages:
            raise InvalidArgument(
                "images: pick a sample or upload at least one image"
                + (" that can be read" if errors else "")
            )
        result = self.client.classify(messages, names, budget=budget, top_k=len(names))
        explanation = self.client.explain(result.plan_id)
        predictions = []
        for p, (label, data) in zip(result, shown, strict=True):
            predictions.append(
                {
                    "image": label,
                    "thumbnail": _thumbnail(data),
                    "class": p.class_name,
                    "probability": p.probability,
                    "probabilities": sorted(
                        p.probabilities.items(), key=lambda kv: kv[1], reverse=True
                    ),
                    "experts": p.models,
                    "heads": [asdict(h) for h in p.heads],
                    "used_fallback": p.used_fallback,
                    "out_of_domain": p.out_of_domain,
                }
            )
        assert result.plan is not None
        return {
            "classes": names,
            "predictions": predictions,
            "errors": errors,
            "plan": plan_view(result.plan, explanation),
            "timings": asdict(result.timings),
        }


def create_app(client: mc.Client, settings: Settings, graph: Any | None = None) -> FastAPI:
    """The app over `client` (the services) and `graph` (the concept search; default: a Graph
    over `settings`, opened on first use)."""
    web = Web(client, settings, graph)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app = FastAPI(
        title="mllgraph",
        description="Zero-shot image classification by reusing expert heads (MLL). "
        "The same operations as the page, as JSON.",
        version="1",
    )
    app.state.web = web
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def page(request: Request, template: str, status: int = 200, /, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(
            request, template, {"samples": web.samples, **context}, status_code=status
        )

    @app.exception_handler(MllgraphError)
    async def domain_error(request: Request, e: MllgraphError) -> JSONResponse:
        code = _code(e)
        body = {"error": _message(e), "code": code, "field": getattr(e, "field", None)}
        return JSONResponse(body, status_code=HTTP_STATUS.get(code, 500))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        log.error("web_internal_error path=%s", request.url.path, exc_info=e)
        return JSONResponse({"error": "internal error; see the server log"}, status_code=500)

    async def read_form(request: Request) -> tuple[str, int, list[tuple[str, bytes]], list[str]]:
        form = await request.form(max_files=MAX_IMAGES + 1, max_fields=MAX_IMAGES + 16)
        uploads = []
        for f in form.getlist("images"):
            if isinstance(f, str) or not getattr(f, "filename", ""):
                continue  # an empty file input
            uploads.append((f.filename, await f.read(MAX_UPLOAD_BYTES + 1)))
        budget_text = str(form.get("budget") or "5").strip()
        try:
            budget = int(budget_text)
        except ValueError:
            raise InvalidArgument(
                f"budget: a whole number of models, got {budget_text!r}"
            ) from None
        samples = [str(s) for s in form.getlist("samples")]
        return str(form.get("classes") or ""), budget, uploads, samples

    # -- pages --

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def try_page(request: Request) -> HTMLResponse:
        return page(request, "try.html", classes="", budget=5, chosen=[])

    @app.post("/", response_class=HTMLResponse, include_in_schema=False)
    async def try_submit(request: Request) -> HTMLResponse:
        classes, budget, chosen = "", 5, []
        try:
            classes, budget, uploads, chosen = await read_form(request)
            task = await run_in_threadpool(web.run_task, classes, budget, uploads, chosen)
        except MllgraphError as e:
            status = HTTP_STATUS.get(_code(e), 500)
            return page(request, "try.html", status, classes=classes, budget=budget,
                        chosen=chosen, error=_message(e))  # fmt: skip
        return page(request, "try.html", classes=classes, budget=budget, chosen=chosen, task=task)

    @app.get("/hub", response_class=HTMLResponse, include_in_schema=False)
    async def hub_page(request: Request, name: str = "") -> HTMLResponse:
        try:
            models = await run_in_threadpool(web.client.models, name=name, heads=True)
        except MllgraphError as e:
            return page(request, "hub.html", HTTP_STATUS.get(_code(e), 500), models=[],
                        name=name, error=_message(e))  # fmt: skip
        return page(request, "hub.html", models=models, name=name, max_heads=MAX_HEADS_SHOWN)

    @app.get("/results", response_class=HTMLResponse, include_in_schema=False)
    async def results_page(request: Request) -> HTMLResponse:
        from mllgraph.web import results

        reports = settings.reports_dir
        path = results.latest_report(reports)
        if path is None:
            return page(request, "results.html", report_html="", reports_dir=str(reports))
        written = time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
        body = results.render_markdown(path.read_text(encoding="utf-8"))
        return page(request, "results.html", report_html=body, report_name=path.name,
                    written=written)  # fmt: skip

    @app.get("/reports/{name}", include_in_schema=False)
    async def report_file(name: str) -> Response:
        # Only the plots beside the reports, by plain file name.
        path = settings.reports_dir / name
        if "/" in name or not name.endswith(".png") or not path.is_file():
            return JSONResponse({"error": f"no report image {name!r}"}, status_code=404)
        return Response(path.read_bytes(), media_type="image/png")

    @app.get("/concept", response_class=HTMLResponse, include_in_schema=False)
    async def concept_page(request: Request, q: str = "") -> HTMLResponse:
        if not q.strip():
            return page(request, "concept.html", q=q)
        try:
            found = await run_in_threadpool(concepts.lookup, web.graph, q)
        except MllgraphError as e:
            return page(request, "concept.html", HTTP_STATUS.get(_code(e), 500), q=q,
                        error=_message(e))  # fmt: skip
        return page(request, "concept.html", q=q, n=found, svg=concepts.draw(found))

    @app.get("/samples/{key}.png", include_in_schema=False)
    async def sample(key: str) -> Response:
        if key not in web.samples:
            return JSONResponse({"error": f"no sample {key!r}"}, status_code=404)
        return Response(web.samples[key].png, media_type="image/png")

    # -- JSON API --

    @app.post("/api/classify", tags=["api"], summary="Select a plan and classify images")
    async def api_classify(request: Request) -> dict[str, Any]:
        """Multipart form: `classes` (comma-separated), `budget`, `images` (files, repeatable),
        `samples` (names of bundled samples, repeatable). Returns predictions per image, the
        plan, and an error per file that could not be read."""
        classes, budget, uploads, chosen = await read_form(request)
        task = await run_in_threadpool(web.run_task, classes, budget, uploads, chosen)
        for p in task["predictions"]:
            p.pop("thumbnail", None)
        return task

    @app.post("/api/select", tags=["api"], summary="Select a plan for class names")
    async def api_select(body: SelectBody) -> dict[str, Any]:
        plan = await run_in_threadpool(web.client.select, body.classes, body.budget)
        return plan_view(plan, None)

    @app.get("/api/plans/{plan_id}", tags=["api"], summary="A stored plan with its reasons")
    async def api_plan(plan_id: str) -> dict[str, Any]:
        plan = await run_in_threadpool(web.client.plan, plan_id)
        explanation = await run_in_threadpool(web.client.explain, plan_id)
        return plan_view(plan, explanation)

    @app.get("/api/models", tags=["api"], summary="Models, optionally with heads and labels")
    async def api_models(
        name: str = "", covers: str = "", heads: bool = False
    ) -> list[dict[str, Any]]:
        models = await run_in_threadpool(web.client.models, name=name, covers=covers, heads=heads)
        return jsonable_encoder([asdict(m) for m in models])

    @app.get("/api/concepts", tags=["api"], summary="A concept's neighbourhood in the SDAG")
    async def api_concept(q: str) -> dict[str, Any]:
        found = await run_in_threadpool(concepts.lookup, web.graph, q)
        return jsonable_encoder(found.to_dict())

    @app.get("/api/samples", tags=["api"], summary="The bundled sample images")
    async def api_samples() -> list[dict[str, str]]:
        return [{"key": s.key, "label": s.label, "url": f"/samples/{s.key}.png"}
                for s in web.samples.values()]  # fmt: skip

    return app


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    """`mllgraph serve web [--host H] [--port N] [--target T] [--local-services]`."""
    import argparse

    import uvicorn

    settings = settings or Settings.from_env()
    parser = argparse.ArgumentParser(prog="mllgraph serve web", description="the web page")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=settings.web_port)
    parser.add_argument(
        "--target", help="HOST or HOST:PORT of the gRPC services (default: 127.0.0.1 and the "
        "ports from the settings)"
    )  # fmt: skip
    parser.add_argument(
        "--local-services",
        action="store_true",
        help="start the three services in this process over the local hub",
    )
    args = parser.parse_args(argv)
    services = None
    if args.local_services:
        from rich.console import Console

        from services.local import start_local_services

        services = start_local_services(settings, Console().status)
    try:
        addresses = services.ports if services is not None else {}
        with mc.Client(
            args.target,
            **{n: f"127.0.0.1:{p}" for n, p in addresses.items()},
            settings=settings,
        ) as client:
            app = create_app(client, settings)
            print(f"mllgraph web page on http://{args.host}:{args.port}/", flush=True)
            uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        if services is not None:
            services.stop()
    return 0
