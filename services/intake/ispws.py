"""The CyberTipline-compatible reporting API under /ispws: thin routes over `Reporting`, its
outcomes said as CyberTipline answers (services/intake/answers.py).

An integrator points an existing client here by changing the base URL and credentials. Answers are
<reportResponse>/<reportDoneResponse> XML (JSON when the Accept header prefers it); every answer
carries a Request-ID header that is also in the log line of the call.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Message

from services.intake import documents, files, login
from services.intake.answers import Answer, Code, Done, answer, not_logged_in, refusal, render
from services.intake.idempotency import SHORT_LEASE_S, Idempotency, KeyConflict, KeyReused
from services.intake.mapping import report_from
from services.intake.outcomes import Refused, ReportView
from services.intake.pool import Busy, DocumentPool
from services.intake.reporting import Reporting, Reservation
from shared.contracts import FieldError
from shared.settings import Settings

log = logging.getLogger("tipline.intake.ispws")
PREFIX = "/ispws"
XML_TYPES = ("text/xml", "application/xml")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def esp(request: Request, _: Annotated[None, Depends(login.DECLARED)]) -> str:
    """The ESP these HTTP Basic credentials belong to; a refusal answered in XML (or JSON)."""
    logged_in = await login.log_in(request)
    if isinstance(logged_in, login.LoginFailed):
        raise not_logged_in(logged_in)
    return logged_in


async def reporting(request: Request) -> Reporting:  # async: no worker thread a request
    return request.app.state.reporting  # type: ignore[no-any-return]


def settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


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


async def _document(request: Request, esp_id: str, root: str, limit: int) -> dict[str, Any]:
    kind = _media(request)
    if kind not in (*XML_TYPES, "application/json") and not kind.endswith("+xml"):
        raise _unsupported(request, "text/xml (or application/json)")
    body = await _body(request, limit)
    pool: DocumentPool = request.app.state.documents
    try:
        # Parsing and schema checks are CPU work: off the event loop, in threads of their own.
        return await pool.run(esp_id, len(body), partial(documents.read, body, kind, root))
    except Busy as exc:
        raise Answer(Code.SERVER_ERROR if exc.status >= 500 else Code.INVALID_REQUEST,
                     exc.reason, http_status=exc.status, retry_after_s=exc.retry_after_s) from None
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
            async def again() -> Message:  # the form parser reads the body already read
                return {"type": "http.request", "body": body, "more_body": False}

            form = await Request(request.scope, again).form(max_files=0, max_fields=20)
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


def answered(request: Request, answer: Answer | Done) -> Response:
    """An answer in the client's spelling; /finish answers <reportDoneResponse>, errors too."""
    if isinstance(answer, Answer) and request.url.path == f"{PREFIX}/finish":
        answer.done = True
    if isinstance(answer, Answer):
        request.state.code = answer.code  # for the request's log line
    return render(answer, request.headers.get("accept"))


async def _answer(
    request: Request, esp_id: str, call: Callable[[Reservation], Awaitable[Answer | Done]],
    reserve: str | None = None,
) -> Response:
    """Run one call (once per Idempotency-Key) and render its answer. `call` gets the key's
    reservation (`reserve` of the first run, and the key's slot) when there is a key."""
    key = request.headers.get("idempotency-key")

    async def respond(reserved: str | None = None) -> Response:
        try:
            result = await call(Reservation(reserved, Idempotency.slot(esp_id, key) if key
                                            else ""))
        except Answer as refused:
            result = refused
        request.state.report_id = result.report_id  # for the request's log line
        return answered(request, result)

    if key is None:
        return await respond()
    if not Idempotency.valid(key):
        return answered(request, Answer(
            Code.INVALID_REQUEST, "Idempotency-Key must be 1-255 visible ASCII characters"))
    try:
        # A run after a failed one lands on the reserved report: a short lease is safe then.
        return await request.app.state.idempotency.run(  # type: ignore[no-any-return]
            esp_id, key, request.url.path, respond, reserve=reserve,
            **({"lease_s": SHORT_LEASE_S} if reserve is not None else {}))
    except KeyConflict as exc:
        return answered(request, Answer(Code.INVALID_REQUEST, str(exc), http_status=409,
                                        retry_after_s=1))
    except KeyReused as exc:
        return answered(request, Answer(Code.INVALID_REQUEST, str(exc), http_status=409))


# --- OpenAPI descriptions of the bodies (the routes read them raw, to stream and to answer XML) ---

_XML_OR_JSON = {"type": "string"}
_ANSWERS: dict[int | str, dict[str, Any]] = {
    code: {"description": what, "content": {"application/xml": {}, "application/json": {}}}
    for code, what in ((200, "reportResponse, code 0"), (400, "4000, 4100, 4110 or 4200"),
                       (401, "2000: missing or bad credentials"), (404, "5001 or 5002"),
                       (429, "2000: too many failed logins, or 4000: too many documents of "
                             "this ESP at once; Retry-After says when to try"),
                       (503, "1000: Redis or the broker away, or too many documents at once; "
                             "Retry-After says when to try"),
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
    async def call(reservation: Reservation) -> Answer | Done:
        data = await _document(request, esp_id, "report",
                               settings(request).tipline_max_body_bytes)
        try:
            report = report_from(data)
        except ValueError as exc:
            raise Answer(Code.VALIDATION_FAILED, errors=[FieldError(
                path="incidentSummary/incidentDateTime", reason=f"is not a usable date: {exc}"
            )]) from None
        supersedes = request.headers.get("tipline-supersedes", "").strip() or None
        return answer(await svc.open(esp_id, report, supersedes, reservation))

    return await _answer(request, esp_id, call, reserve=svc.ids.next()
                         if request.headers.get("idempotency-key") else None)


@router.post("/upload", summary="Add a file to an open report", openapi_extra=_UPLOAD_BODY)
async def upload(request: Request, esp_id: Esp, svc: Svc) -> Response:
    async def before_file(fields: dict[str, str]) -> None:
        # The form named its report before the file: refuse before a byte of it streams.
        if (report_id := fields.get("id", "").strip()) and isinstance(
                refused := await svc.may_upload(esp_id, report_id), Refused):
            raise refusal(refused)

    async def call(_: Reservation) -> Answer | Done:
        if _media(request) != "multipart/form-data":
            raise _unsupported(request, "multipart/form-data")
        try:
            received = await files.receive(
                request.stream(), request.headers["content-type"], svc.files,
                settings(request).tipline_max_upload_bytes, before_file,
            )
        except files.UploadTooLarge as exc:
            raise Answer(Code.MALFORMED_FILE, str(exc), http_status=413) from None
        except files.BadUpload as exc:
            raise Answer(Code.MALFORMED_FILE, str(exc)) from None
        if received.file is None:
            raise Answer(Code.MALFORMED_FILE, "the form has no part named file")
        try:
            added = await svc.add_file(esp_id, _id(received.fields), received.file)
        finally:
            svc.files.discard(received.file)  # kept by now, or refused: never left behind
        return answer(added)

    return await _answer(request, esp_id, call)


@router.post("/fileinfo", summary="Describe an uploaded file, once",
             openapi_extra=_doc_body("fileDetails"))
async def fileinfo(request: Request, esp_id: Esp, svc: Svc) -> Response:
    async def call(_: Reservation) -> Answer | Done:
        data = await _document(request, esp_id, "fileDetails",
                               settings(request).tipline_max_body_bytes)
        details = {k: v for k, v in data.items() if k not in ("reportId", "fileId")}
        return answer(await svc.describe_file(esp_id, str(data.get("reportId", "")),
                                              str(data.get("fileId", "")), details))

    return await _answer(request, esp_id, call)


@router.post("/finish", summary="Finish a report: the answer is the ESP's receipt",
             openapi_extra=_FORM_BODY)
async def finish(request: Request, esp_id: Esp, svc: Svc) -> Response:
    async def call(_: Reservation) -> Answer | Done:
        form = await _form(request, 64 * 1024)
        return answer(await svc.finish(esp_id, _id(form)))

    return await _answer(request, esp_id, call)


@router.post("/retract", summary="Retract a report (before finish, or post-finish)",
             openapi_extra=_FORM_BODY)
async def retract(request: Request, esp_id: Esp, svc: Svc) -> Response:
    async def call(_: Reservation) -> Answer | Done:
        form = await _form(request, 64 * 1024)
        reason = form.get("reason", "").strip()[:3000] or None
        return answer(await svc.retract(esp_id, _id(form), reason))

    return await _answer(request, esp_id, call)


@router.get("/reports/{report_id}", summary="A report's status and full timeline (tipline)",
            response_model=ReportView)
async def report(report_id: str, esp_id: Esp, svc: Svc) -> Response:
    view = await svc.status(esp_id, report_id)
    if isinstance(view, Refused):
        raise refusal(view)
    return JSONResponse(view.model_dump(mode="json"))


def jsonable(errors: Any) -> Any:
    return json.loads(json.dumps(errors, default=str))
