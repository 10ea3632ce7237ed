"""The analyst API: supplements, holds, amendments and retractions, for role analyst only
(role operator may read case files).

Reports from the public wait in the triage queue (oldest first) until an analyst releases them
(with what they added, as for any held report) or closes them as not actionable (never
referred, kept). Their reporter's contact details are shown to analysts only, and reach the
agencies only when an analyst shares them: a supplement of kind `reporter_contact`.

A change to a report already released is kept in its case file as the next version and asked of
the referral service in an AmendReport, which sends it to every agency that received the report:
the ledger and the notices are the notification context's, not this service's.

HTTP Basic against the analyst directory (salted scrypt hashes); ESP credentials live elsewhere
and never open it. Every change carries its provenance: analyst, time, source, verified or not.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, ConfigDict, Field

from services.supplementation.casefile import Case, CaseFiles, Kept, addition_facts
from services.supplementation.holds import CaseState
from services.supplementation.release import Releaser
from shared import topics
from shared.amendments import BadAmendment, amended, apply, current_value
from shared.analysts import AnalystDirectory
from shared.audiences import CONTACT_SUPPLEMENT, Audience, Kind, sees_contact
from shared.batches import Publisher
from shared.contracts import (
    Amendment,
    AmendReport,
    Priority,
    ReportClosed,
    RetractReport,
    Supplement,
    SupplementKind,
    derived_id,
    now,
)
from shared.facts import Recorder, timeline_facts
from shared.http import RETRY_SOON
from shared.kafka import TiplineBroker
from shared.logins import LoginRefused


@dataclass
class Analysis:
    broker: TiplineBroker
    cases: CaseFiles
    timeline: Recorder
    directory: AnalystDirectory
    releaser: Releaser


async def analysis(request: Request) -> Analysis:  # async: no worker thread a request
    return request.app.state.analysis  # type: ignore[no-any-return]


Svc = Annotated[Analysis, Depends(analysis)]
_basic = HTTPBasic(realm="tipline analysts")


async def analyst(
    credentials: Annotated[HTTPBasicCredentials, Depends(_basic)], svc: Svc, request: Request
) -> str:
    address = request.client.host if request.client else "unknown"
    try:
        ok = await svc.directory.verify(credentials.username, credentials.password, address)
    except LoginRefused as exc:
        raise HTTPException(exc.status, exc.reason,
                            headers={"Retry-After": str(exc.retry_after_s)}) from None
    if not ok:
        raise HTTPException(401, "unknown analyst or wrong password",
                            headers={"WWW-Authenticate": 'Basic realm="tipline analysts"'})
    return credentials.username


ReaderId = Annotated[str, Depends(analyst)]  # any role: analysts and operators read


async def writer(analyst_id: ReaderId, svc: Svc) -> str:
    """An analyst who may change reports: operators (read-only) are refused."""
    if await svc.directory.role(analyst_id) != "analyst":
        raise HTTPException(403, "operators may read case files, not change them")
    return analyst_id


AnalystId = Annotated[str, Depends(writer)]


class Hold(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=3000)


class NewSupplement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: SupplementKind  # not reporter_contact: only share_contact adds those
    content: dict[str, Any] | str
    source: str = Field(min_length=1, max_length=500)
    verified: bool


class NewAmendment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=200)
    value: Any
    reason: str = Field(min_length=1, max_length=3000)


class Retraction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=3000)


class Closing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=3000)


router = APIRouter(prefix="/v1/analyst")


async def _case(svc: Analysis, report_id: str) -> Case:
    case = await svc.cases.get(report_id)
    if case is None or case.report is None:
        raise HTTPException(404, f"report {report_id} has not been validated (yet)")
    return case


def _not_retracted(case: Case, report_id: str) -> None:
    # A retracted report's agencies were told to disregard it; an amendment now would follow
    # the correction and confuse them. (One in flight while the report is retracted is kept by
    # the referral service and sent to nobody.)
    if case.retracted:
        raise HTTPException(409, f"report {report_id} was retracted")


def being_released(report_id: str) -> HTTPException:
    """A release in flight (or one the broker cut short, which the analyst's retry finishes):
    a moment's state, so the answer says when to try again."""
    return HTTPException(409, f"report {report_id} is being released: try again",
                         headers={"Retry-After": "1"})


def _field_error(field: str, reason: str) -> HTTPException:
    return HTTPException(422, [{"loc": ["body", field], "msg": reason, "type": "value_error"}])


async def _announce(svc: Analysis, report_id: str, kept: Kept) -> dict[str, Any]:
    """An addition is kept: its timeline entry to intake, and, after release, the change to the
    referral service for every agency that received the report. Every addition's entry and every
    change not sent yet go again (each once by its id), so what the broker missed goes with the
    next addition."""
    if kept.state == CaseState.RELEASING:
        raise being_released(report_id)
    case = await _case(svc, report_id)
    priority = case.routing.level if case.routing else Priority.NORMAL
    unsent = case.unsent
    out: list[tuple[BaseModel, str, str]] = [
        (event, topics.REPORT_FACTS, svc.broker.service)  # in order with the service's facts
        for event in timeline_facts({report_id: addition_facts(case)}, {})]
    out += [(AmendReport(command_id=derived_id(report_id, "amend", str(v)), report_id=report_id,
                         version=v, change=change, priority=priority),
             topics.AMENDMENTS_REQUESTED, report_id) for v, change in unsent]
    kept_as = f" as version {kept.version}" if kept.version else ""
    try:
        await Publisher(svc.broker).send(out)
    except Exception as exc:  # the broker away: kept, and sent with the next addition
        raise HTTPException(503, f"kept{kept_as} in the case of {report_id}, not sent yet "
                                 f"({type(exc).__name__}): it goes with the next change",
                            headers=RETRY_SOON) from None
    if unsent:
        await svc.cases.sent(report_id, unsent[-1][0])
    if kept.state == CaseState.RELEASED:
        return {"version": kept.version, "status": "amendment requested"}
    return {}


@router.get("/reports/{report_id}")
async def read_case(report_id: str, svc: Svc, reader: ReaderId) -> Any:
    case = await _case(svc, report_id)
    role = Audience(await svc.directory.role(reader))
    return {
        "report_id": report_id,
        "state": case.state,
        "source": case.source,
        "report": case.report.model_dump(mode="json") if case.report else None,
        "contact": _contact(case, role),
        "additions": [{"at": a.occurred_at.isoformat(), "text": a.text} for a in case.additions],
        "closed": {"analyst_id": case.closed.analyst_id, "reason": case.closed.reason,
                   "at": datetime.fromtimestamp(case.closed.at, UTC).isoformat()}
        if case.closed else None,
        "supplements": [_supplement(s, role) for s in case.supplements],
        "amendments": [a.model_dump(mode="json") for a in case.amendments],
        "amendments_after_release": [
            {"supplement": _supplement(c.supplement, role)} if c.supplement else
            c.model_dump(mode="json", exclude_none=True) for c in case.after_release],
        "amendments_unsent": [v for v, _ in case.unsent],
        "retracted": case.retracted,
        "routing": case.routing.model_dump() if case.routing else None,
    }


WITHHELD = "withheld: analysts only"


def _contact(case: Case, role: Audience) -> dict[str, str] | str | None:
    """The reporter's contact details as this reader may see them (shared/audiences.py)."""
    if case.contact is None:
        return None
    if not sees_contact(role):
        return WITHHELD
    return case.contact.model_dump(exclude_none=True)


def _supplement(supplement: Supplement, role: Audience) -> dict[str, Any]:
    shown = supplement.model_dump(mode="json")
    if supplement.kind == CONTACT_SUPPLEMENT and not sees_contact(role):
        shown["content"] = WITHHELD
    return shown


@router.get("/triage")
async def triage(svc: Svc, _: ReaderId, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                 offset: Annotated[int, Query(ge=0)] = 0) -> Any:
    """Reports from the public waiting for an analyst's decision, oldest first."""
    waiting = await svc.cases.triage(limit, offset)
    return {"reports": [{
        "report_id": report_id,
        "arrived_at": datetime.fromtimestamp(at, UTC).isoformat(),
        "incident_type": case.report.incident_type if case.report else None,
        "location": case.report.location.model_dump(exclude_none=True) if case.report else {},
        "contact_given": case.contact is not None,
        "additions": len(case.additions),
    } for report_id, at, case in waiting], "offset": offset, "limit": limit}


@router.post("/reports/{report_id}/hold", status_code=202)
async def hold(report_id: str, body: Hold, svc: Svc, analyst_id: AnalystId) -> Any:
    state = await svc.cases.hold(report_id, body.reason, analyst_id)
    if state == CaseState.RELEASING:
        raise being_released(report_id)
    if state == CaseState.CLOSED:
        raise HTTPException(409, f"report {report_id} was closed as not actionable")
    if state != CaseState.HELD:
        raise HTTPException(409, f"report {report_id} is {state} for referral: amend it instead")
    await svc.timeline.record(report_id, derived_id(report_id, "held"), Kind.HELD,
                              status="held", analyst=analyst_id, reason=body.reason)
    return {"report_id": report_id, "state": state}


@router.post("/reports/{report_id}/release", status_code=202)
async def release(report_id: str, svc: Svc, analyst_id: AnalystId) -> Any:
    state = await svc.cases.begin_release(report_id)
    if state not in (CaseState.RELEASING, CaseState.OPEN):
        raise HTTPException(409, f"report {report_id} is {state}, not held")
    await svc.timeline.record(report_id, derived_id(report_id, "released"), Kind.RELEASED,
                              analyst=analyst_id)
    if state == CaseState.RELEASING:
        (event,) = await svc.releaser.release([report_id])  # published, then released
        await svc.cases.finish_release(report_id)
        return {"report_id": report_id, "state": CaseState.RELEASED, "agencies": event.agencies}
    return {"report_id": report_id, "state": CaseState.OPEN}


@router.post("/reports/{report_id}/close", status_code=202)
async def close(report_id: str, body: Closing, svc: Svc, analyst_id: AnalystId) -> Any:
    """Close a held report as not actionable: never referred, never deleted. Closing again
    changes nothing and tells the pipeline again (the first closing's analyst and reason)."""
    state = await svc.cases.close(report_id, body.reason, analyst_id)
    if state != CaseState.CLOSED:
        raise HTTPException(409, f"report {report_id} is {state}, not held: only a held report "
                                 "can be closed")
    case = await svc.cases.get(report_id)
    assert case is not None and case.closed is not None
    event = ReportClosed(event_id=derived_id(report_id, "closed"), report_id=report_id,
                         analyst_id=case.closed.analyst_id, reason=case.closed.reason,
                         occurred_at=datetime.fromtimestamp(case.closed.at, UTC))
    await svc.timeline.record(report_id, event.event_id, Kind.CLOSED,
                              analyst=event.analyst_id, reason=event.reason)
    await Publisher(svc.broker).send([(event, topics.REPORTS_CLOSED, report_id)])
    return {"report_id": report_id, "state": CaseState.CLOSED}


@router.post("/reports/{report_id}/share-contact", status_code=202)
async def share_contact(report_id: str, svc: Svc, analyst_id: AnalystId) -> Any:
    """Mark the public reporter's contact details shareable: they go to the agencies as a
    supplement (in the referral, or as an amendment to every agency that received it)."""
    case = await _case(svc, report_id)
    _not_retracted(case, report_id)
    if case.contact is None:
        raise HTTPException(409, f"report {report_id} has no contact details to share")
    supplement_id = derived_id(report_id, "contact shared")
    shared = [*case.supplements, *(c.supplement for c in case.after_release if c.supplement)]
    if any(s.supplement_id == supplement_id for s in shared):
        raise HTTPException(409, f"the contact details of report {report_id} are shared already")
    item = Supplement(supplement_id=supplement_id, kind=CONTACT_SUPPLEMENT,
                      content=case.contact.model_dump(exclude_none=True),
                      source="the public reporter, in the form", verified=False,
                      analyst_id=analyst_id, added_at=now())
    kept = await svc.cases.keep_supplement(report_id, item)
    return {"report_id": report_id, "supplement_id": supplement_id,
            **await _announce(svc, report_id, kept)}


@router.post("/reports/{report_id}/supplements", status_code=202)
async def add_supplement(
    report_id: str, body: NewSupplement, svc: Svc, analyst_id: AnalystId
) -> Any:
    if body.kind == CONTACT_SUPPLEMENT:
        raise _field_error("kind", "a reporter's contact details are shared with "
                                   "POST /reports/{report_id}/share-contact")
    _not_retracted(await _case(svc, report_id), report_id)
    item = Supplement(supplement_id=str(uuid.uuid4()), analyst_id=analyst_id, added_at=now(),
                      **body.model_dump())
    kept = await svc.cases.keep_supplement(report_id, item)
    return {"report_id": report_id, "supplement": item.model_dump(mode="json"),
            **await _announce(svc, report_id, kept)}


@router.post("/reports/{report_id}/amendments", status_code=202)
async def amend(report_id: str, body: NewAmendment, svc: Svc, analyst_id: AnalystId) -> Any:
    case = await _case(svc, report_id)
    _not_retracted(case, report_id)
    assert case.report is not None
    before = case.amendments + [c.amendment for c in case.after_release if c.amendment]
    try:
        effective = amended(case.report, before)
        previous = current_value(effective, body.path)
        apply(effective, body.path, body.value)
    except BadAmendment as exc:
        raise _field_error(exc.field, exc.reason) from None
    change = Amendment(amendment_id=str(uuid.uuid4()), path=body.path, value=body.value,
                       previous=previous, reason=body.reason, analyst_id=analyst_id,
                       amended_at=now())
    kept = await svc.cases.keep_amendment(report_id, change)
    return {"report_id": report_id, "amendment": change.model_dump(mode="json"),
            **await _announce(svc, report_id, kept)}


@router.post("/reports/{report_id}/retract", status_code=202)
async def retract(report_id: str, body: Retraction, svc: Svc, analyst_id: AnalystId) -> Any:
    """Retract a report: every agency that received it is corrected. 202 once the retraction is
    requested; 503 with Retry-After while it cannot be, and asking again is the same retraction."""
    # No outbox at this door: it changes no state here and answers 202 only once the broker has
    # the command, whose id comes from the report, so a second ask is the same command.
    await _case(svc, report_id)
    command = RetractReport(
        command_id=derived_id(report_id, "retract", "analyst"), report_id=report_id,
        requested_by="analyst", actor=analyst_id, reason=body.reason,
    )
    try:
        await Publisher(svc.broker).send([(command, topics.RETRACTIONS_REQUESTED, report_id)])
    except Exception as exc:  # the broker away, or not connected yet
        raise HTTPException(503, f"the retraction of {report_id} is not requested yet "
                                 f"({type(exc).__name__}): retry", headers=RETRY_SOON) from None
    return {"report_id": report_id, "status": "retraction requested"}


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
