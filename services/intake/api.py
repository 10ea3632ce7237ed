"""The JSON reporting API: submit a report, retract it, read its status and timeline.

An accepted call is never lost: the answer is sent only after the broker acknowledged the event.
"""

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from faststream.kafka import KafkaBroker
from opentelemetry.trace import Tracer
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis

from shared import topics
from shared.contracts import Report, ReportSubmitted, RetractReport, derived_id
from shared.ledger import Ledger
from shared.timeline import Fact, Timeline


@dataclass
class Intake:
    broker: KafkaBroker
    redis: Redis
    timeline: Timeline
    ledger: Ledger
    tracer: Tracer

    async def new_report_id(self) -> str:
        return str(await self.redis.incr("tipline:report-seq"))


def intake(request: Request) -> Intake:
    return request.app.state.intake  # type: ignore[no-any-return]


IntakeDep = Annotated[Intake, Depends(intake)]
EspId = Annotated[str, Header(alias="X-ESP-Id", pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


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
async def submit_report(body: Submission, svc: IntakeDep, esp_id: EspId = "demo-esp") -> Accepted:
    report_id = await svc.new_report_id()
    with svc.tracer.start_as_current_span("intake submit", attributes={"report.id": report_id}):
        event = ReportSubmitted(
            event_id=derived_id(report_id, "submitted"),
            report_id=report_id,
            esp_id=esp_id,
            report=body.report,
            supersedes=body.supersedes,
        )
        await svc.timeline.record_all(report_id, [Fact(event.event_id, "submitted", "submitted")],
                                      fields={"esp_id": esp_id})
        await svc.broker.publish(event, topics.REPORTS_SUBMITTED, key=report_id.encode())
    return Accepted(report_id=report_id, status="submitted")


async def _owned(svc: Intake, report_id: str, esp_id: str) -> dict[str, str]:
    fields = await svc.timeline.fields(report_id)
    if fields.get("esp_id") != esp_id:
        # Another ESP's report answers as if it did not exist.
        raise HTTPException(404, detail=f"report {report_id} does not exist")
    return fields


@router.post("/reports/{report_id}/retract", status_code=202, response_model=Accepted)
async def retract_report(
    report_id: str, svc: IntakeDep, body: Retraction | None = None, esp_id: EspId = "demo-esp"
) -> Accepted:
    await _owned(svc, report_id, esp_id)
    with svc.tracer.start_as_current_span("intake retract", attributes={"report.id": report_id}):
        command = RetractReport(
            command_id=derived_id(report_id, "retract", "esp"),
            report_id=report_id,
            requested_by="esp",
            actor=esp_id,
            reason=body.reason if body else "retracted by the reporter",
        )
        await svc.broker.publish(command, topics.RETRACTIONS_REQUESTED, key=report_id.encode())
    return Accepted(report_id=report_id, status="retraction requested")


@router.get("/reports/{report_id}")
async def report_status(report_id: str, svc: IntakeDep, esp_id: EspId = "demo-esp") -> Any:
    fields = await _owned(svc, report_id, esp_id)
    return {
        "report_id": report_id,
        "status": fields.get("status", "submitted"),
        "updated_at": fields.get("updated_at"),
        "agencies": await svc.ledger.states(report_id),
        "retraction": await svc.ledger.retraction(report_id),
        "timeline": await svc.timeline.entries(report_id),
    }


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
