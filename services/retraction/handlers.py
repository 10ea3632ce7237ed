"""Retraction handlers: mark the report retracted (never erase it), fan out corrections, and
follow each correction until the agency acknowledges it."""

import asyncio
import logging

from pydantic import BaseModel

from services.notification import notices
from services.notification.ledger import Ledger
from services.notification.outbox import Due, Outbox, resend_overdue
from shared import topics
from shared.agencies import AgencyRegistry
from shared.batches import Poison, Publisher, in_rounds, refuse
from shared.contracts import (
    AgencyResponse,
    Fact,
    NoticeAcknowledged,
    NoticeEscalated,
    NoticeResent,
    OutcomeReported,
    ReportRetracted,
    RetractReport,
    derived_id,
)
from shared.facts import Recorder
from shared.kafka import TiplineBroker
from shared.metrics import corrections_pending
from shared.settings import Settings
from shared.signing import BadSignature

log = logging.getLogger("tipline.retraction")


async def retract(
    publish: Publisher,
    ledger: Ledger,
    timeline: Recorder,
    commands: list[RetractReport],
    dispatch: notices.Dispatch = notices.UNSIGNED,
) -> dict[str, list[str]]:
    """Retract reports (at most one command a report); returns the agencies this call
    corrected, by report."""
    retractions = await ledger.retract({
        c.report_id: (c.requested_at, c.requested_by, c.actor, c.reason) for c in commands})
    await timeline.record_many({c.report_id: [Fact(
        derived_id(c.report_id, "retracted"), "retracted", "retracted",
        {"requested_by": c.requested_by, "reason": c.reason,
         "requested_at": c.requested_at.isoformat()})] for c in commands})
    owed = {r: x.to_correct for r, x in retractions.items() if x.to_correct}
    priorities = await ledger.priorities(list(owed))
    await notices.send_corrections(publish, ledger, timeline, {
        r: (agencies, priorities[r]) for r, agencies in owed.items()}, dispatch)
    return {c.report_id: retractions[c.report_id].to_correct for c in commands}


def authenticate(registry: AgencyRegistry, response: AgencyResponse) -> None:
    """Refuse a response unless it is signed by a key its agency registered: anyone who can
    write to the acks topic could otherwise stop re-sends and escalation."""
    agency = registry.get(response.agency_id)
    if agency is None:
        raise Poison(f"response from unknown agency {response.agency_id}")
    verifier = agency.verifier()
    if verifier is None:
        raise Poison(f"{response.agency_id} has no registered key, so it cannot acknowledge "
                     "(register one: tipline agency keys)")
    try:
        verifier.verify(response.model_dump(mode="json"))
    except BadSignature as exc:
        raise Poison(f"response from {response.agency_id} refused: {exc}") from None


async def on_response(
    outbox: Outbox, timeline: Recorder, response: AgencyResponse, registry: AgencyRegistry,
) -> NoticeAcknowledged | OutcomeReported:
    """An agency's signed ack of a notice, or its outcome: into the report's timeline, and the
    fact to publish."""
    authenticate(registry, response)
    if response.kind == "outcome":
        event_id = derived_id("outcome", response.response_id)
        await timeline.record(
            response.report_id, event_id, "agency outcome",
            agency=response.agency_id, outcome=response.outcome, text=response.text,
        )
        return OutcomeReported(event_id=event_id, report_id=response.report_id,
                               agency_id=response.agency_id,
                               outcome=response.outcome,  # type: ignore[arg-type]
                               text=response.text)
    notice_id = str(response.notice_id)
    tracked = await outbox.tracked(response.report_id, notice_id)
    if tracked is not None and tracked.agency_id != response.agency_id:
        raise Poison(f"{response.agency_id} acknowledged a notice sent to {tracked.agency_id}")
    state = await outbox.acknowledge(response.report_id, notice_id)
    event_id = derived_id("ack", notice_id, response.agency_id)
    kind, late = (tracked.kind if tracked else None), state == "escalated"
    await timeline.record(
        response.report_id, event_id, "acknowledged",
        agency=response.agency_id, notice_id=notice_id, kind=kind, late=late,
    )
    return NoticeAcknowledged(event_id=event_id, report_id=response.report_id,
                              agency_id=response.agency_id, notice_id=notice_id, kind=kind,
                              late=late)


async def follow_acks(
    broker: TiplineBroker, outbox: Outbox, timeline: Recorder, settings: Settings
) -> None:
    """Forever: re-send overdue corrections and amendments, escalate the ones never acked."""
    publish = Publisher(broker)

    async def resend(item: Due) -> None:
        notice = item.notice
        await notices.send(publish, [notice])  # the stored notice, signed as first sent
        event_id = derived_id("resent", notice.notice_id, str(item.resends))
        await timeline.record(
            item.report_id, event_id, f"{notice.kind} re-sent", agency=notice.agency_id,
            notice_id=notice.notice_id, resend=item.resends,
        )
        await publish.send([(NoticeResent(
            event_id=event_id, report_id=item.report_id, agency_id=notice.agency_id,
            notice_id=notice.notice_id, kind=notice.kind, resend=item.resends,
        ), topics.NOTICES_RESENT, item.report_id)])

    async def escalated(item: Due) -> None:
        notice = item.notice
        event_id = derived_id("escalated", notice.notice_id)
        await timeline.record(
            item.report_id, event_id, f"{notice.kind} escalated", status="correction_escalated",
            agency=notice.agency_id, notice_id=notice.notice_id,
            resends=settings.tipline_max_resends,
        )
        await publish.send([(NoticeEscalated(
            event_id=event_id, report_id=item.report_id, agency_id=notice.agency_id,
            notice_id=notice.notice_id, kind=notice.kind, resends=settings.tipline_max_resends,
        ), topics.NOTICES_ESCALATED, item.report_id)])

    while True:
        try:
            await resend_overdue(outbox, settings.tipline_max_resends, resend, escalated)
            corrections_pending("retraction", await outbox.pending())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis or the broker away: try again next tick
            log.warning("re-send pass failed, will retry: %r", exc)
        await asyncio.sleep(settings.tipline_resend_tick_s)


def register(
    broker: TiplineBroker,
    settings: Settings,
    ledger: Ledger,
    timeline: Recorder,
    dispatch: notices.Dispatch = notices.UNSIGNED,
) -> None:
    publish = Publisher(broker)
    broker.publisher(topics.REPORTS_RETRACTED, schema=ReportRetracted)  # for the AsyncAPI

    @broker.consume(topics.RETRACTIONS_REQUESTED, group="retraction", model=RetractReport)
    async def on_retract_reports(commands: list[RetractReport]) -> None:
        for commands_now in in_rounds(commands, key=lambda c: c.report_id):
            corrected = await retract(publish, ledger, timeline, commands_now, dispatch)
            await publish.send((ReportRetracted(
                event_id=derived_id(c.report_id, "retracted"), report_id=c.report_id,
                requested_by=c.requested_by, actor=c.actor, reason=c.reason,
                corrected_agencies=corrected[c.report_id],
            ), topics.REPORTS_RETRACTED, c.report_id) for c in commands_now)

    if dispatch.outbox is not None:
        outbox, registry = dispatch.outbox, AgencyRegistry(settings.tipline_routing_file)
        for agency in registry.agencies.values():
            if not agency.verify_keys:
                log.warning("agency %s has no registered key: it cannot acknowledge notices, "
                            "so its corrections will be re-sent and escalated", agency.id)
        # Declared for the AsyncAPI document.
        for topic, schema in ((topics.NOTICES_ACKNOWLEDGED, NoticeAcknowledged),
                              (topics.REPORTS_OUTCOMES, OutcomeReported),
                              (topics.NOTICES_RESENT, NoticeResent),
                              (topics.NOTICES_ESCALATED, NoticeEscalated)):
            broker.publisher(topic, schema=schema)

        # An ack settles a notice that waits minutes for it: no need to ask every few ms.
        @broker.consume(topics.AGENCY_ACKS, group="retraction-acks", model=AgencyResponse,
                        patient=True)
        async def on_agency_responses(responses: list[AgencyResponse]) -> None:
            facts: list[tuple[BaseModel, str, str]] = []
            for response in responses:
                try:
                    fact = await on_response(outbox, timeline, response, registry)
                except Poison as exc:
                    refuse(response, exc)  # dead-lettered alone, with why
                    continue
                topic = (topics.NOTICES_ACKNOWLEDGED if isinstance(fact, NoticeAcknowledged)
                         else topics.REPORTS_OUTCOMES)
                facts.append((fact, topic, fact.report_id))
            await publish.send(facts)
