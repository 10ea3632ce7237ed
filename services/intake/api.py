"""The JSON reporting API (`/v1`): submit a whole report, retract it, read its status.

The same ESP login as `/ispws` (HTTP Basic), over the same reporting core: one id scheme, one
ownership check, one status view. A refusal is the CyberTipline code and its description as JSON,
with the HTTP status `/ispws` would answer.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPBasic
from pydantic import BaseModel, ConfigDict, Field

from services.intake.answers import Answer, Code
from services.intake.ispws import esp as esp_login
from services.intake.reporting import Reporting
from shared.contracts import Report


def reporting(request: Request) -> Reporting:
    return request.app.state.reporting  # type: ignore[no-any-return]


async def esp(request: Request, _: Annotated[Any, Depends(HTTPBasic(auto_error=False))]) -> str:
    try:
        return await esp_login(request, None)
    except Answer as refused:
        raise refusal(refused) from None


def refusal(answer: Answer) -> HTTPException:
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


@router.post("/reports", status_code=202, response_model=Accepted)
async def submit_report(body: Submission, svc: Svc, esp_id: EspId) -> Accepted:
    try:
        report_id = await svc.submit(esp_id, body.report, body.supersedes)
    except Answer as refused:
        raise refusal(refused) from None
    return Accepted(report_id=report_id, status="submitted")


@router.post("/reports/{report_id}/retract", status_code=202, response_model=Accepted)
async def retract_report(
    report_id: str, svc: Svc, esp_id: EspId, body: Retraction | None = None
) -> Accepted:
    try:
        await svc.retract(esp_id, report_id, body.reason if body else None)
    except Answer as refused:
        raise refusal(refused) from None
    return Accepted(report_id=report_id, status="retraction requested")


@router.get("/reports/{report_id}")
async def report_status(report_id: str, svc: Svc, esp_id: EspId) -> Any:
    try:
        return await svc.status(esp_id, report_id)
    except Answer as refused:
        raise refusal(refused) from None
