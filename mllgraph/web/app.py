"""The web page and its JSON API (`mllgraph serve web`), a FastAPI app over `mllgraph.client`.

* ``/`` — try a task: class names, uploaded or bundled sample images; predictions per image
  and the plan beside them (concepts, grounding, coverage, heads, estimated accuracy, reasons).
* ``/hub`` — the models with their heads and label edges; ``/concept?q=`` — a concept, its
  ancestors, children and the heads covering it, drawn as a small graph.
* ``/api/...`` — the same operations as JSON; the schema is at ``/openapi.json``, the
  interactive docs at ``/docs``.

Predictions, plans and models come from the gRPC services through the client; the concept
graph is read from Neo4j directly (read-only; no service serves it). Bad input — no classes,
one class, a file that is not a PNG or JPEG, an image over the services' pixel limit, a
number out of range — gives a message on the page (or a JSON error with an HTTP status),
never a stack trace. Uploads are checked from their headers and forwarded undecoded
(`mllgraph.web.uploads`); tokens, the Host allow-list, CSRF, body limits and the access log
are `mllgraph.web.security`.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from mllgraph import client as mc
from mllgraph.errors import InvalidArgument, MllgraphError, ResourceExhausted
from mllgraph.settings import Settings
from mllgraph.web import concepts
from mllgraph.web.samples import Sample, fashion_samples
from mllgraph.web.security import (
    CSRF_FIELD,
    TOKEN_COOKIE,
    Guard,
    WebSecurity,
    csrf_header,
    require_csrf,
    uvicorn_tls,
)
from mllgraph.web.uploads import MAX_UPLOAD_BYTES, admit, file_error, thumbnail

log = logging.getLogger("mllgraph.web")
HERE = Path(__file__).parent
MAX_IMAGES = 64  # per task
MAX_BUDGET = 1000  # models per plan (an int32 on the wire; more than any hub needs)
DEFAULT_BUDGET = 5
MAX_HEADS_SHOWN = 50  # per model on the hub page
_FIELD_PREFIX = re.compile(r"^([a-z_][a-z0-9_]*): ")  # "budget: ..." names the field budget
_COOKIE_SAFE = re.compile(r"^[A-Za-z0-9._~+/=-]{1,512}$")  # a token kept as a cookie value
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 409,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
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


def _field(e: MllgraphError) -> str | None:
    """The request field an error names: its ``field``, else its message's ``name: `` prefix."""
    given = getattr(e, "field", None)
    if given:
        return given
    match = _FIELD_PREFIX.match(str(e))
    return match.group(1) if match else None


class SelectBody(BaseModel):
    classes: list[str] | str
    budget: int = Field(DEFAULT_BUDGET, ge=1, le=MAX_BUDGET)


def parse_budget(text: str) -> int:
    """The form's budget: a whole number of models from 1 to MAX_BUDGET (InvalidArgument)."""
    text = text.strip() or str(DEFAULT_BUDGET)
    shown = text if len(text) <= 40 else text[:40] + "..."
    try:
        budget = int(text)
    except ValueError:
        raise InvalidArgument(f"budget: a whole number of models, got {shown!r}") from None
    if not 1 <= budget <= MAX_BUDGET:
        raise InvalidArgument(f"budget: from 1 to {MAX_BUDGET} models, got {shown}")
    return budget


def parse_flag(value: Any, name: str) -> bool:
    """A form checkbox: absent or empty (unchecked), "1", "true", "on" or "yes" (checked),
    "0", "false", "off" or "no"; anything else InvalidArgument naming the field."""
    text = "" if value is None else str(value).strip().lower()
    if text in ("", "0", "false", "off", "no"):
        return False
    if text in ("1", "true", "on", "yes"):
        return True
    shown = text if len(text) <= 40 else text[:40] + "..."
    raise InvalidArgument(f"{name}: a checkbox (1/true/on or 0/false/off), got {shown!r}")


def validation_message(e: RequestValidationError) -> tuple[str, str | None]:
    """FastAPI's validation errors as one line naming the fields, and the first field."""
    parts, fields = [], []
    for err in e.errors()[:3]:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path")]
        field = ".".join(loc) or "body"
        fields.append(field)
        parts.append(f"{field}: {err.get('msg', 'invalid')}")
    more = len(e.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else ""), (
        fields[0] if fields else None
    )


def local_path(target: str) -> str:
    """`target` if it is a path on this site (for redirects after signing in), else '/'."""
    ok = target.startswith("/") and not target.startswith(("//", "/\\"))
    return target if ok and target.isprintable() else "/"


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

    def admit_images(
        self, images: list[tuple[str, bytes]]
    ) -> tuple[list[Any], list[tuple[str, bytes]], list[dict[str, str]]]:
        """The images the inference service would admit (checked from their headers, nothing
        decoded), as its messages, with (label, bytes) to show, and an error per other file.
        Raises when none is left: InvalidArgument, or ResourceExhausted if every file was
        over a limit."""
        messages, shown, errors, refused = [], [], [], []
        for i, (name, data) in enumerate(images):
            label = name or f"image {i + 1}"
            try:
                messages.append(admit(data, str(len(messages)), where=label,
                                      max_pixels=self.settings.infer_max_image_pixels))  # fmt: skip
            except MllgraphError as e:
                errors.append({"image": label, "error": file_error(e, label)})
                refused.append(e)
                log.info("web_bad_image name=%r error=%r", label, str(e))
                continue
            shown.append((label, data))
        if not messages:
            why = " | ".join(f"{e['image']}: {e['error']}" for e in errors[:5])
            kind = (
                ResourceExhausted
                if refused and all(isinstance(e, ResourceExhausted) for e in refused)
                else InvalidArgument
            )
            raise kind(
                "images: pick a sample or upload at least one image"
                + (f" that can be read ({why})" if errors else "")
            )
        return messages, shown, errors

    def run_task(
        self, classes: str | list[str], budget: int, uploads: list[tuple[str, bytes]],
        sample_keys: list[str], allow_none: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """Classify uploads and samples into the classes: predictions, plan, per-file errors.
        `allow_none`: an image that fits no class may be answered "none of these".
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
        messages, shown, errors = self.admit_images(images)
        result = self.client.classify(
            messages, names, budget=budget, top_k=len(names), allow_none=allow_none
        )
        explanation = self.client.explain(result.plan_id)
        predictions = []
        for p, (label, data) in zip(result, shown, strict=True):
            predictions.append(
                {
                    "image": label,
                    "thumbnail": thumbnail(data, max_pixels=self.settings.infer_max_image_pixels),
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
            if allow_none:
                predictions[-1] |= {"none_of_these": p.none_of_these, "none_score": p.none_score}
        assert result.plan is not None
        return {
            "classes": names,
            "predictions": predictions,
            "errors": errors,
            "plan": plan_view(result.plan, explanation),
            "timings": asdict(result.timings),
        } | ({"none_threshold": result.none_threshold} if allow_none else {})


def create_app(
    client: mc.Client,
    settings: Settings,
    graph: Any | None = None,
    security: WebSecurity | None = None,
) -> FastAPI:
    """The app over `client` (the services) and `graph` (the concept search; default: a Graph
    over `settings`, opened on first use), guarded by `security` (default: from `settings`,
    for a page bound to loopback)."""
    web = Web(client, settings, graph)
    security = security or WebSecurity.from_settings(settings)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app = FastAPI(
        title="mllgraph",
        description="Zero-shot image classification by reusing expert heads (MLL). "
        "The same operations as the page, as JSON.",
        version="1",
    )
    app.state.web = web
    app.state.security = security
    app.add_middleware(Guard, security=security)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def page(request: Request, template: str, status: int = 200, /, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(
            request, template, {"samples": web.samples, **context}, status_code=status
        )

    @app.exception_handler(MllgraphError)
    async def domain_error(request: Request, e: MllgraphError) -> JSONResponse:
        code = _code(e)
        body = {"error": _message(e), "code": code, "field": _field(e)}
        return JSONResponse(body, status_code=HTTP_STATUS.get(code, 500))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError) -> JSONResponse:
        message, field = validation_message(e)
        body = {"error": message, "code": "INVALID_ARGUMENT", "field": field}
        return JSONResponse(body, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        code = {413: "RESOURCE_EXHAUSTED", 404: "NOT_FOUND"}.get(e.status_code, "HTTP_ERROR")
        body = {"error": str(e.detail), "code": code, "field": None}
        return JSONResponse(body, status_code=e.status_code, headers=e.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        log.error("web_internal_error path=%s", request.url.path, exc_info=e)
        return JSONResponse({"error": "internal error; see the server log"}, status_code=500)

    async def read_form(
        request: Request,
    ) -> tuple[str, int, list[tuple[str, bytes]], list[str], bool]:
        form = await request.form(max_files=MAX_IMAGES + 1, max_fields=MAX_IMAGES + 16)
        require_csrf(request, form.get(CSRF_FIELD))
        uploads = []
        for f in form.getlist("images"):
            if isinstance(f, str) or not getattr(f, "filename", ""):
                continue  # an empty file input
            uploads.append((f.filename, await f.read(MAX_UPLOAD_BYTES + 1)))
        budget = parse_budget(str(form.get("budget") or ""))
        samples = [str(s) for s in form.getlist("samples")]
        allow_none = parse_flag(form.get("allow_none"), "allow_none")
        return str(form.get("classes") or ""), budget, uploads, samples, allow_none

    # -- pages --

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def try_page(request: Request) -> HTMLResponse:
        return page(
            request, "try.html", classes="", budget=DEFAULT_BUDGET, chosen=[], allow_none=False
        )

    @app.post("/", response_class=HTMLResponse, include_in_schema=False)
    async def try_submit(request: Request) -> HTMLResponse:
        classes, budget, chosen, allow_none = "", DEFAULT_BUDGET, [], False
        try:
            classes, budget, uploads, chosen, allow_none = await read_form(request)
            task = await run_in_threadpool(
                web.run_task, classes, budget, uploads, chosen, allow_none
            )
        except MllgraphError as e:
            status = HTTP_STATUS.get(_code(e), 500)
            return page(request, "try.html", status, classes=classes, budget=budget,
                        chosen=chosen, allow_none=allow_none, error=_message(e))  # fmt: skip
        return page(request, "try.html", classes=classes, budget=budget, chosen=chosen,
                    allow_none=allow_none, task=task)  # fmt: skip

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
        `samples` (names of bundled samples, repeatable), `allow_none` ("1"/"true"/"on":
        an image that fits no class may be answered "none of these"). Returns predictions per
        image, the plan, and an error per file that could not be read."""
        classes, budget, uploads, chosen, allow_none = await read_form(request)
        task = await run_in_threadpool(web.run_task, classes, budget, uploads, chosen, allow_none)
        for p in task["predictions"]:
            p.pop("thumbnail", None)
        return task

    @app.post(
        "/api/select",
        tags=["api"],
        summary="Select a plan for class names",
        dependencies=[Depends(csrf_header)],
    )
    async def api_select(body: SelectBody) -> dict[str, Any]:
        """JSON `{"classes": [...] or "a, b", "budget": 1..1000}`; from a browser, send the
        X-CSRF-Token header (scripts send their bearer token instead)."""
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

    _add_login_routes(app, security, page)
    return app


def _add_login_routes(app: FastAPI, security: WebSecurity, page: Any) -> None:
    """/login (a token entered once, kept in an HttpOnly cookie) and /logout."""

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_page(request: Request, after: str = Query("/", alias="next")) -> Response:
        if not security.tokens:  # nothing to sign in to
            return RedirectResponse(local_path(after), status_code=303)
        return page(request, "login.html", next=local_path(after))

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=8)
        target = local_path(str(form.get("next") or "/"))
        token = str(form.get("token") or "").strip()
        try:
            require_csrf(request, form.get(CSRF_FIELD))
        except MllgraphError as e:
            return page(request, "login.html", 403, next=target, error=_message(e))
        if not security.tokens:
            return RedirectResponse(target, status_code=303)
        if not token or security.tokens.lookup(token) is None or not _COOKIE_SAFE.match(token):
            return page(request, "login.html", 401, next=target,
                        error="token: not one this server knows")  # fmt: skip
        response = RedirectResponse(target, status_code=303)
        response.headers.append("set-cookie", security.cookie(TOKEN_COOKIE, token))
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=8)
        require_csrf(request, form.get(CSRF_FIELD))
        response = RedirectResponse("/login", status_code=303)
        response.headers.append("set-cookie", security.cookie(TOKEN_COOKIE, "", max_age=0))
        return response


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    """`mllgraph serve web [--host H] [--port N] [--target T] [--local-services] [--insecure]
    [--log-level L]`: loopback unless TLS and tokens are configured (or --insecure)."""
    import argparse
    import dataclasses

    import uvicorn

    from services.common import configure_logging

    settings = settings or Settings.from_env()
    parser = argparse.ArgumentParser(prog="mllgraph serve web", description="the web page")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
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
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow --host other than loopback without TLS and tokens (logs a warning)",
    )
    parser.add_argument("--log-level", default="INFO", help="INFO logs one line per request")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    if args.insecure:
        settings = dataclasses.replace(settings, insecure=True)
    security = WebSecurity.from_settings(settings, bind_host=args.host)
    security.check_bind(args.host)
    tls = uvicorn_tls(settings)
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
            app = create_app(client, settings, security=security)
            scheme = "https" if tls else "http"
            print(f"mllgraph web page on {scheme}://{args.host}:{args.port}/", flush=True)
            uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                        access_log=False, **tls)  # fmt: skip
    finally:
        if services is not None:
            services.stop()
    return 0
