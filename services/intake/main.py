"""Intake wiring: one broker (it publishes, and records other services' facts in the timeline),
one Redis, the reporting core, the ESPs' two front doors and the public's (`/report`), the sweep
that sends what requests left in the outbox and abandons what was never finished.

The ESP port serves the ESP APIs and the public form only: health, readiness and metrics are on
the ops port (`shared.service.serve_http`), and the OpenAPI document is in docs/ (`tipline
docs`).
"""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.intake import api, ispws, public, publicpages
from services.intake.abandonment import DEADLINES, Abandonment, keep_sweeping
from services.intake.answers import Answer, Code, render
from services.intake.drafts import Drafts
from services.intake.esps import EspRegistry
from services.intake.files import FileStore
from services.intake.forms import Forms
from services.intake.handlers import register
from services.intake.idempotency import Idempotency
from services.intake.ids import ReportIds
from services.intake.outbox import DUE, Outbox
from services.intake.pool import DocumentPool
from services.intake.reporting import Policy, Reporting
from services.intake.reports import RedisReports
from services.intake.throttle import Throttle
from services.intake.timeline import Timeline
from shared import ops
from shared.clock import Clock
from shared.http import UNAVAILABLE, BodyLimit, BodyTooLarge, refuse_too_large
from shared.kafka import make_broker
from shared.logins import Limits, LoginGuard
from shared.schedule import DueIndex
from shared.settings import Settings
from shared.shutdown import cancel
from shared.store import connect
from shared.telemetry import instrument_http, tracer_provider

log = logging.getLogger("tipline.intake")


def refuse_body(scope: Scope, exc: BodyTooLarge) -> Response:
    if str(scope.get("path", "")).startswith(ispws.PREFIX):
        return render(Answer(Code.INVALID_REQUEST, str(exc), http_status=413), None)
    if str(scope.get("path", "")).startswith(public.PREFIX):
        return HTMLResponse(publicpages.too_long(), 413, headers=publicpages.HEADERS)
    return JSONResponse({"detail": str(exc)}, 413)


def create_app(settings: Settings, clock: Clock = time.time) -> FastAPI:
    """Intake; `clock` is when drafts, their abandonment and idempotency leases run out."""
    broker = make_broker(settings, "intake")
    redis = connect(settings)
    timeline = Timeline(redis)
    drafts = Drafts(redis, after_open_s=settings.tipline_abandon_after_open_s,
                    after_change_s=settings.tipline_abandon_after_change_s)
    outbox = Outbox(broker, drafts, timeline, DueIndex(redis, DUE),
                    publish_wait_s=settings.tipline_publish_wait_s,
                    grace_s=settings.tipline_publish_wait_s * 2)
    abandonment = Abandonment(drafts, outbox, DueIndex(redis, DEADLINES), clock)
    register(broker, timeline)
    tracer = tracer_provider(settings, "intake").get_tracer("tipline.intake")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await broker.start()  # publishes, and records other services' facts in the timeline
        sweeping = asyncio.create_task(
            keep_sweeping(abandonment, outbox, settings.tipline_abandon_tick_s))
        yield
        await cancel(sweeping)
        app.state.documents.close()
        # With the broker away, stopping waits for it (the producer flushes what it holds), and
        # what was not sent is in the outbox anyway. A stop cut short is not awaited: the process
        # ends next, and the shutdown deadline (shared/shutdown.py) bounds the rest.
        wait_s = settings.tipline_publish_wait_s
        stopping = asyncio.ensure_future(broker.stop())
        if not (await asyncio.wait({stopping}, timeout=wait_s))[0]:
            log.warning("the broker client did not stop within %.0f s; left to the exit", wait_s)
            stopping.cancel()
        await redis.aclose()

    app = FastAPI(title="tipline intake", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.reporting = Reporting(
        RedisReports(drafts, outbox, abandonment, timeline),
        FileStore(settings.tipline_files_dir), ReportIds(), Policy.of(settings), tracer,
        clock)
    app.state.settings = settings
    app.state.broker = broker
    app.state.esps = EspRegistry(redis, LoginGuard(Limits.of(settings)))
    app.state.idempotency = Idempotency(redis, settings.tipline_idempotency_ttl_s, clock)
    app.state.documents = DocumentPool(settings.tipline_document_threads,
                                       settings.tipline_documents_per_esp)
    app.state.ops = ops.Ops("intake", {
        "broker": lambda: broker.ping(timeout=ops.CHECK_TIMEOUT_S), "redis": redis.ping,
    }, [broker])
    app.state.public = public.PublicDoor(
        app.state.reporting,
        # A form's filing is kept while its token is valid, and an hour more.
        Forms(redis, int(settings.tipline_public_form_max_s) + 3600),
        Throttle(settings.tipline_public_per_address, settings.tipline_public_window_s,
                 settings.tipline_public_per_minute), settings)
    app.include_router(api.router)
    app.include_router(ispws.router)
    app.include_router(public.router)
    answer_errors(app)
    # Every body is bounded; an upload may carry a file up to the upload limit, a public form
    # no more than a form holds.
    app.add_middleware(BodyLimit, limit=settings.tipline_max_body_bytes, refusal=refuse_body,
                       larger={f"{ispws.PREFIX}/upload":
                               settings.tipline_max_upload_bytes + 64 * 1024,
                               public.PREFIX: public.BODY_LIMIT,
                               f"{public.PREFIX}/add": public.BODY_LIMIT})
    instrument_http(app, settings, "intake")
    ops.count_requests(app, "intake")
    return app


class RequestIds:
    """ASGI middleware: a Request-ID on every answer and a log line a request; an exception no
    handler took answered 503 with Retry-After while a dependency is away, else 500, in the
    API's own words. Plain ASGI, as `shared.ops.CountRequests` says why."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        rid = request.state.request_id = uuid.uuid4().hex
        trace.get_current_span().set_attribute("tipline.request_id", rid)
        status, started = 500, False

        async def sending(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            log.exception("request_id=%s %s %s failed", rid, request.method, request.url.path)
            if started:  # too late to answer: the server closes the connection
                raise
            await failed(request, exc)(scope, receive, sending)
        # A refusal's line names its code (5103, 2000...): why, not only that, it was refused.
        code = getattr(request.state, "code", None)
        log.info("request_id=%s %s %s -> %s%s esp=%s", rid, request.method, request.url.path,
                 status, f" code={int(code)}" if code is not None else "",
                 getattr(request.state, "esp_id", "-"),
                 extra={"report_id": getattr(request.state, "report_id", None)})


def failed(request: Request, exc: Exception) -> Response:
    """The answer to a request that raised: 503 with Retry-After while a dependency is away,
    else 500; never without the id to quote."""
    status = 503 if isinstance(exc, UNAVAILABLE) else 500
    if request.url.path.startswith(ispws.PREFIX):
        response = ispws.answered(request, Answer(Code.SERVER_ERROR, http_status=status))
    elif request.url.path.startswith(public.PREFIX):
        response = HTMLResponse(publicpages.unavailable(request.state.request_id), status,
                                headers=publicpages.HEADERS)
    else:
        response = JSONResponse({"detail": "server error" if status == 500 else
                                 "temporarily unavailable, retry",
                                 "request_id": request.state.request_id}, status)
    if status == 503:
        response.headers["Retry-After"] = "2"
    return response


def answer_errors(app: FastAPI) -> None:
    """Request-ID on every answer, and errors answered in each API's own words: never a 500
    without the id to quote, 503 with Retry-After while a dependency is away."""
    app.add_middleware(RequestIds)

    @app.exception_handler(Answer)
    async def on_answer(request: Request, answer: Answer) -> Response:
        return ispws.answered(request, answer)

    app.add_exception_handler(BodyTooLarge, refuse_too_large(refuse_body))  # type: ignore[arg-type]

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        if not request.url.path.startswith(ispws.PREFIX):
            return JSONResponse({"detail": ispws.jsonable(exc.errors())}, 422)
        return ispws.answered(request, Answer(Code.INVALID_REQUEST, "; ".join(
            f"{'/'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors()
        )))
