"""The CyberTipline-compatible reporting API under /ispws: thin routes over `Reporting`.

An integrator points an existing client here by changing the base URL and credentials. Answers are
<reportResponse>/<reportDoneResponse> XML (JSON when the Accept header prefers it); every answer
carries a Request-ID header that is also in the log line of the call.
"""

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import parse_qsl

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBasic
from faststream.kafka import KafkaBroker
from opentelemetry import trace
from opentelemetry.trace import Tracer
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisUnavailable
from redis.exceptions import TimeoutError as RedisTimeout

from services.intake import documents, files
from services.intake.answers import Answer, Code, Done, render
from services.intake.esps import EspRegistry
from services.intake.idempotency import Idempotency, KeyConflict
from services.intake.reporting import Reporting
from shared.drafts import Drafts
from shared.ledger import Ledger
from shared.settings import Settings
from shared.timeline import Timeline

# A dependency away (Redis, the broker): the call was not accepted and can be retried.
UNAVAILABLE = (RedisUnavailable, RedisTimeout, KafkaError, TimeoutError, ConnectionError)

log = logging.getLogger("tipline.intake.ispws")
PREFIX = "/ispws"
XML_TYPES = ("text/xml", "application/xml")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


class BasicAuth(HTTPBasic):
    """Declares HTTP Basic in the OpenAPI; the check itself is `esp` (it answers in XML)."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


async def esp(request: Request, _: Annotated[None, Depends(BasicAuth())]) -> str:
    name = await request.app.state.esps.authenticate(request.headers.get("authorization"))
    if name is None:
        raise Answer(Code.AUTHENTICATION_REQUIRED)
    request.state.esp_id = name
    return str(name)


def reporting(request: Request) -> Reporting:
    return request.app.state.reporting  # type: ignore[no-any-return]


Esp = Annotated[str, Depends(esp)]
Svc = Annotated[Reporting, Depends(reporting)]


def _media(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _unsupported(request: Request, wanted: str) -> Answer:
    return Answer(Code.INVALID_REQUEST, f"Content-Type must be {wanted}, not "
                  f"{_media(request) or 'missing'}", http_status=415)


async def _body(request: Request, limit: int) -> bytes:
    too_big = Answer(Code.INVALID_REQUEST, f"the body is larger than {limit} bytes",
                     http_status=413)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise too_big
    return bytes(body)


async def _document(request: Request, root: str, limit: int) -> dict[str, Any]:
    kind = _media(request)
    if kind not in (*XML_TYPES, "application/json") and not kind.endswith("+xml"):
        raise _unsupported(request, "text/xml (or application/json)")
    body = await _body(request, limit)
    try:
        if kind == "application/json":
            try:
                body = documents.from_json(json.loads(body), root)
            except (ValueError, RecursionError) as exc:
                raise documents.MalformedDocument(f"not well-formed JSON: {exc}") from None
        return documents.to_data_of(documents.parse(body, root))
    except documents.MalformedDocument as exc:
        raise Answer(Code.MALFORMED_XML, str(exc)) from None
    except documents.InvalidDocument as exc:
        raise Answer(Code.VALIDATION_FAILED, errors=exc.errors) from None


async def _form(request: Request, limit: int) -> dict[str, str]:
    kind = _media(request)
    body = await _body(request, limit)
    try:
        if kind == "application/x-www-form-urlencoded":
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        if kind == "application/json":
            data = json.loads(body)
            return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        if kind == "multipart/form-data":
            request._body = body  # the form parser reads the body already read
            form = await request.form(max_files=0, max_fields=20)
            return {k: v for k, v in form.items() if isinstance(v, str)}
    except (UnicodeDecodeError, ValueError, HTTPException) as exc:
        detail = getattr(exc, "detail", None) or str(exc)
        raise Answer(Code.INVALID_REQUEST, f"unreadable form: {detail}") from None
    raise _unsupported(request, "multipart/form-data or application/x-www-form-urlencoded")


def _id(form: dict[str, str]) -> str:
    report_id = form.get("id", "").strip()
    if not report_id:
        raise Answer(Code.INVALID_REQUEST, "the form field id (the report id) is required")
    return report_id


async def _answer(
    request: Request, esp_id: str, call: Callable[[], Awaitable[Answer | Done]]
) -> Response:
    """Run one call (once per Idempotency-Key) and render its answer."""
    accept = request.headers.get("accept")

    async def respond() -> Response:
        try:
            result = await call()
        except Answer as refused:
            result = refused
        return render(result, accept)

    key = request.headers.get("idempotency-key")
    if key is None:
        return await respond()
    if not Idempotency.valid(key):
        return render(Answer(Code.INVALID_REQUEST,
                             "Idempotency-Key must be 1-255 visible ASCII characters"), accept)
    try:
        return await request.app.state.idempotency.run(esp_id, key, request.url.path, respond)
    except KeyConflict as exc:
        return render(Answer(Code.INVALID_REQUEST, str(exc), http_status=409), accept)


# --- OpenAPI descriptions of the bodies (the routes read them raw, to stream and to answer XML) ---

_XML_OR_JSON = {"type": "string"}
_ANSWERS: dict[int | str, dict[str, Any]] = {
    code: {"description": what, "content": {"application/xml": {}, "application/json": {}}}
    for code, what in ((200, "reportResponse, code 0"), (400, "4000, 4100, 4110 or 4200"),
                       (401, "2000: missing or bad credentials"), (404, "5001 or 5002"),
                       (409, "5101, 5102 or 5103"), (413, "body or file too large"),
                       (415, "wrong Content-Type"))
}


_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
                "description": "A retry with the same key returns the first answer and creates "
                               "nothing new (1-255 visible ASCII characters, per ESP).",
                "schema": {"type": "string", "maxLength": 255}}
_SUPERSEDES = {"name": "Tipline-Supersedes", "in": "header", "required": False,
               "description": "The id of an earlier report of this ESP that this one replaces; "
                              "the timeline links both ways.",
               "schema": {"type": "string"}}


def _doc_body(root: str) -> dict[str, Any]:
    return {"parameters": [_IDEMPOTENCY, *([_SUPERSEDES] if root == "report" else [])],
            "requestBody": {"required": True, "content": {
        "text/xml": {"schema": _XML_OR_JSON},
        "application/json": {"schema": {"type": "object", "description": f"a <{root}> as JSON"}},
    }}}


_ID_FORM = {"type": "object", "required": ["id"], "properties": {
    "id": {"type": "string"}, "reason": {"type": "string"}}}
_FORM_BODY = {"parameters": [_IDEMPOTENCY], "requestBody": {"required": True, "content": {
    t: {"schema": _ID_FORM} for t in (*FORM_TYPES, "application/json")}}}
_UPLOAD_BODY = {"parameters": [_IDEMPOTENCY], "requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
    "type": "object", "required": ["id", "file"],
    "properties": {"id": {"type": "string"}, "file": {"type": "string", "format": "binary"}},
}}}}}

router = APIRouter(prefix=PREFIX, tags=["ispws"], responses=_ANSWERS)


@router.get("/status", summary="Check the connection and the credentials")
async def status(request: Request, esp_id: Esp) -> Response:
    client = request.client.host if request.client else "unknown"
    answer = Answer(Code.SUCCESS, f"Remote User : {esp_id}, Remote Ip : {client}")
    return render(answer, request.headers.get("accept"))


@router.get("/xsd", summary="The schema of report, fileDetails and the responses")
async def xsd() -> Response:
    return Response(documents.xsd_text(), media_type="application/xml")


@router.post("/submit", summary="Open a report", openapi_extra=_doc_body("report"))
async def submit(request: Request, esp_id: Esp, svc: Svc) -> Response:
    async def call() -> Answer:
        data = await _document(request, "report", svc.settings.tipline_max_body_bytes)
        supersedes = request.headers.get("tipline-supersedes", "").strip() or None
        return await svc.open(esp_id, data, supersedes)

    return await _answer(request, esp_id, call)


@router.post("/upload", summary="Add a file to an open report", openapi_extra=_UPLOAD_BODY)
async def upload(request: Request, esp_id: Esp, svc: Svc) -> Response:
    async def call() -> Answer:
        if _media(request) != "multipart/form-data":
            raise _unsupported(request, "multipart/form-data")
        limit = svc.settings.tipline_max_upload_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit + 64 * 1024:
            raise Answer(Code.MALFORMED_FILE, f"the file is larger than {limit} bytes",
                         http_status=413)
        try:
            received = await files.receive(
                request.stream(), request.headers["content-type"], svc.store, limit
            )
        except files.UploadTooLarge as exc:
            raise Answer(Code.MALFORMED_FILE, str(exc), http_status=413) from None
        except files.BadUpload as exc:
            raise Answer(Code.MALFORMED_FILE, str(exc)) from None
        report_id = _id(received.fields)
        if received.file is None:
            raise Answer(Code.MALFORMED_FILE, "the form has no part named file")
        return await svc.add_file(esp_id, report_id, received.file, received.filename)

    return await _answer(request, esp_id, call)


@router.post("/fileinfo", summary="Describe an uploaded file, once",
             openapi_extra=_doc_body("fileDetails"))
async def fileinfo(request: Request, esp_id: Esp, svc: Svc) -> Response:
    async def call() -> Answer:
        data = await _document(request, "fileDetails", svc.settings.tipline_max_body_bytes)
        return await svc.describe_file(esp_id, data)

    return await _answer(request, esp_id, call)


@router.post("/finish", summary="Finish a report: the answer is the ESP's receipt",
             openapi_extra=_FORM_BODY)
async def finish(request: Request, esp_id: Esp, svc: Svc) -> Response:
    async def call() -> Done:
        form = await _form(request, 64 * 1024)
        return await svc.finish(esp_id, _id(form))

    return await _answer(request, esp_id, call)


@router.post("/retract", summary="Retract a report (before finish, or post-finish)",
             openapi_extra=_FORM_BODY)
async def retract(request: Request, esp_id: Esp, svc: Svc) -> Response:
    async def call() -> Answer:
        form = await _form(request, 64 * 1024)
        reason = form.get("reason", "").strip()[:3000] or None
        return await svc.retract(esp_id, _id(form), reason)

    return await _answer(request, esp_id, call)


@router.get("/reports/{report_id}", summary="A report's status and full timeline (tipline)")
async def report(report_id: str, esp_id: Esp, svc: Svc) -> JSONResponse:
    return JSONResponse(await svc.status(esp_id, report_id))


# --- Wiring -------------------------------------------------------------------------------


def install(app: FastAPI, settings: Settings, broker: KafkaBroker, redis: Redis,
            tracer: Tracer) -> None:
    """Add /ispws to the intake app: its state, routes, Request-ID and error answers."""
    drafts = Drafts(redis, after_open_s=settings.tipline_abandon_after_open_s,
                    after_change_s=settings.tipline_abandon_after_change_s)
    app.state.reporting = Reporting(
        broker=broker, redis=redis, timeline=Timeline(redis), ledger=Ledger(redis),
        drafts=drafts, store=files.FileStore(settings.tipline_files_dir), settings=settings,
        tracer=tracer,
    )
    app.state.esps = EspRegistry(redis)
    app.state.idempotency = Idempotency(redis, settings.tipline_idempotency_ttl_s)
    app.include_router(router)

    @app.middleware("http")
    async def request_id(request: Request, call_next: Any) -> Response:
        rid = uuid.uuid4().hex
        request.state.request_id = rid
        trace.get_current_span().set_attribute("tipline.request_id", rid)
        try:
            response: Response = await call_next(request)
        except Exception as exc:
            # Never a bare 500: the ESP gets code 1000 and the id to quote; the log has the cause.
            # Redis or the broker away is 503 with Retry-After: nothing was accepted, try again.
            log.exception("request_id=%s %s %s failed", rid, request.method, request.url.path)
            status = 503 if isinstance(exc, UNAVAILABLE) else 500
            response = (render(Answer(Code.SERVER_ERROR, http_status=status),
                               request.headers.get("accept"))
                        if request.url.path.startswith(PREFIX)
                        else JSONResponse({"detail": "server error" if status == 500 else
                                           "temporarily unavailable, retry", "request_id": rid},
                                          status))
            if status == 503:
                response.headers["Retry-After"] = "2"
        response.headers["Request-ID"] = rid
        log.info("request_id=%s %s %s -> %s esp=%s", rid, request.method, request.url.path,
                 response.status_code, getattr(request.state, "esp_id", "-"))
        return response

    @app.exception_handler(Answer)
    async def on_answer(request: Request, answer: Answer) -> Response:
        return render(answer, request.headers.get("accept"))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        if not request.url.path.startswith(PREFIX):
            return JSONResponse({"detail": jsonable(exc.errors())}, 422)
        return render(Answer(Code.INVALID_REQUEST, "; ".join(
            f"{'/'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors()
        )), request.headers.get("accept"))


def jsonable(errors: Any) -> Any:
    return json.loads(json.dumps(errors, default=str))
