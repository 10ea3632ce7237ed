"""The JSON reporting API (`/v1`): submit a whole report, retract it, read its status.

The same ESP login as `/ispws` (HTTP Basic, services/intake/login.py), over the same reporting
core: one id scheme, one ownership check, one status view. A refusal is the CyberTipline code and
its description as JSON, with the HTTP status `/ispws` would answer (services/intake/answers.py).

Submit and retract take an `Idempotency-Key` header: a retry with the same key (same ESP) gets
the first answer, the same report id, and creates nothing new; the same key with another body is
refused with 422 and the reason; 409 with Retry-After while the first call still runs.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from services.intake import login
from services.intake.answers import Answer, Code, not_logged_in, refusal
from services.intake.idempotency import (
    SHORT_LEASE_S,
    Idempotency,
    KeyConflict,
    KeyReused,
    fingerprint,
)
from services.intake.outcomes import Refused, ReportView
from services.intake.reporting import Reporting, Reservation
from shared.contracts import Report


async def reporting(request: Request) -> Reporting:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a thread hop a request
    return request.app.state.reporting  # type: ignore[no-any-return]


async def esp(request: Request, _: Annotated[None, Depends(login.DECLARED)]) -> str:
    logged_in = await login.log_in(request)
    if isinstance(logged_in, login.LoginFailed):
        raise refused_with(not_logged_in(logged_in), request)
    return logged_in


def refused_with(answer: Answer, request: Request) -> HTTPException:
    request.state.code = answer.code  # for the request's log line
    headers = {}
    if answer.code is Code.AUTHENTICATION_REQUIRED:
        headers["WWW-Authenticate"] = 'Basic realm="tipline"'
    if answer.retry_after_s:
        headers["Retry-After"] = str(answer.retry_after_s)
    detail: dict[str, Any] = {"code": int(answer.code), "description": answer.description}
    if answer.errors:
        detail["errors"] = [e.model_dump(exclude_none=True) for e in answer.errors]
    return HTTPException(answer.status, detail, headers=headers or None)


Svc = Annotated[Reporting, Depends(reporting)]
EspId = Annotated[str, Depends(esp)]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", pattern=r"^[\x21-\x7e]{1,255}$",
    description="A retry with the same key returns the first answer and creates nothing new "
                "(1-255 visible ASCII characters, per ESP, kept 24 h); the same key with another "
                "body is refused (422).")]


class Submission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    report: Report
    supersedes: str | None = None


class Retraction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("retracted by the reporter", min_length=1, max_length=3000)


class Accepted(BaseModel):
    report_id: str
    status: str


router = APIRouter(prefix="/v1")


async def once(
    request: Request, esp_id: str, key: str | None, body: str,
    call: Callable[[Reservation], Awaitable[Accepted | Refused]], reserve: str | None = None,
) -> Response:
    """The answer of `call` (202, or its refusal), once per Idempotency-Key when one is given.
    `call` gets the key's reservation (`reserve` of the first run) and the key's slot."""
    slot = Idempotency.slot(esp_id, key) if key is not None else ""

    async def respond(reserved: str | None = None) -> Response:
        accepted = await call(Reservation(reserved, slot))
        if isinstance(accepted, Refused):
            exc = refused_with(refusal(accepted), request)
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
        request.state.report_id = accepted.report_id  # for the request's log line
        return JSONResponse(accepted.model_dump(), 202)

    if key is None:
        return await respond()
    try:
        return await request.app.state.idempotency.run(  # type: ignore[no-any-return]
            esp_id, key, request.url.path, respond, body=fingerprint(body), reserve=reserve,
            lease_s=SHORT_LEASE_S)
    except KeyReused as exc:
        raise HTTPException(422, str(exc)) from None
    except KeyConflict as exc:
        raise HTTPException(409, str(exc), headers={"Retry-After": "1"}) from None


@router.post("/reports", status_code=202, response_model=Accepted)
async def submit_report(
    body: Submission, svc: Svc, esp_id: EspId, request: Request, key: IdempotencyKey = None
) -> Response:
    async def call(reservation: Reservation) -> Accepted | Refused:
        submitted = await svc.submit(esp_id, body.report, body.supersedes, reservation)
        if isinstance(submitted, Refused):
            return submitted
        return Accepted(report_id=submitted.report_id, status="submitted")

    # A run after a failed one lands on the report the first reserved: a short lease is safe.
    return await once(request, esp_id, key, body.model_dump_json(), call,
                      reserve=svc.ids.next() if key is not None else None)


@router.post("/reports/{report_id}/retract", status_code=202, response_model=Accepted)
async def retract_report(
    report_id: str, svc: Svc, esp_id: EspId, request: Request, body: Retraction | None = None,
    key: IdempotencyKey = None,
) -> Response:
    request.state.report_id = report_id

    async def call(_: Reservation) -> Accepted | Refused:
        requested = await svc.retract(esp_id, report_id, body.reason if body else None)
        if isinstance(requested, Refused):
            return requested
        return Accepted(report_id=report_id, status="retraction requested")

    return await once(request, esp_id, key, body.model_dump_json() if body else "", call)


@router.get("/reports/{report_id}", response_model=ReportView)
async def report_status(report_id: str, svc: Svc, esp_id: EspId, request: Request) -> Response:
    view = await svc.status(esp_id, report_id)
    if isinstance(view, Refused):
        raise refused_with(refusal(view), request)
    return JSONResponse(view.model_dump(mode="json"))
