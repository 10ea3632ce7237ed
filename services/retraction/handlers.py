"""Retraction handlers: mark the report retracted (never erase it), fan out corrections, and
follow each correction until the agency acknowledges it."""

import asyncio
import logging

from faststream.kafka import KafkaBroker

from shared import notices, topics
from shared.acks import Due, Outbox, resend_overdue
from shared.agencies import AgencyRegistry
from shared.contracts import (
    AgencyResponse,
    NoticeAcknowledged,
    NoticeEscalated,
    NoticeResent,
    OutcomeReported,
    Priority,
    ReportRetracted,
    RetractReport,
    derived_id,
)
from shared.delivery import Poison
from shared.kafka import consumer_options
from shared.ledger import Ledger
from shared.metrics import corrections_pending
from shared.settings import Settings
from shared.signing import BadSignature
from shared.timeline import Timeline

log = logging.getLogger("tipline.retraction")


async def retract(
    broker: KafkaBroker,
    ledger: Ledger,
    timeline: Timeline,
    command: RetractReport,
    dispatch: notices.Dispatch = notices.UNSIGNED,
) -> list[str]:
    """Retract one report; returns the agencies this call corrected."""
    retraction = await ledger.retract(
        command.report_id,
        at=command.requested_at,
        by=command.requested_by,
        actor=command.actor,
        reason=command.reason,
    )
    await timeline.record(
        command.report_id,
        derived_id(command.report_id, "retracted"),
        "retracted",
        status="retracted",
        requested_by=command.requested_by,
        reason=command.reason,
    )
    fields = await timeline.fields(command.report_id)
    priority = Priority[fields["priority"].upper()] if "priority" in fields else Priority.NORMAL
    await notices.send_corrections(
        broker, ledger, timeline, command.report_id, retraction.to_correct, priority, dispatch
    )
    return retraction.to_correct


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
    outbox: Outbox, timeline: Timeline, response: AgencyResponse, registry: AgencyRegistry,
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
    broker: KafkaBroker, outbox: Outbox, timeline: Timeline, settings: Settings
) -> None:
    """Forever: re-send overdue corrections and amendments, escalate the ones never acked."""

    async def resend(item: Due) -> None:
        notice = item.notice
        await notices.send(broker, [notice])  # the stored notice, signed as first sent
        event_id = derived_id("resent", notice.notice_id, str(item.resends))
        await timeline.record(
            item.report_id, event_id, f"{notice.kind} re-sent", agency=notice.agency_id,
            notice_id=notice.notice_id, resend=item.resends,
        )
        await broker.publish(NoticeResent(
            event_id=event_id, report_id=item.report_id, agency_id=notice.agency_id,
            notice_id=notice.notice_id, kind=notice.kind, resend=item.resends,
        ), topics.NOTICES_RESENT, key=item.report_id.encode())

    async def escalated(item: Due) -> None:
        notice = item.notice
        event_id = derived_id("escalated", notice.notice_id)
        await timeline.record(
            item.report_id, event_id, f"{notice.kind} escalated", status="correction_escalated",
            agency=notice.agency_id, notice_id=notice.notice_id,
            resends=settings.tipline_max_resends,
        )
        await broker.publish(NoticeEscalated(
            event_id=event_id, report_id=item.report_id, agency_id=notice.agency_id,
            notice_id=notice.notice_id, kind=notice.kind, resends=settings.tipline_max_resends,
        ), topics.NOTICES_ESCALATED, key=item.report_id.encode())

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
    broker: KafkaBroker,
    settings: Settings,
    ledger: Ledger,
    timeline: Timeline,
    dispatch: notices.Dispatch = notices.UNSIGNED,
) -> None:
    retracted = broker.publisher(topics.REPORTS_RETRACTED, schema=ReportRetracted)

    @broker.subscriber(topics.RETRACTIONS_REQUESTED, **consumer_options(settings, "retraction"))
    async def on_retract_report(command: RetractReport) -> None:
        corrected = await retract(broker, ledger, timeline, command, dispatch)
        await retracted.publish(
            ReportRetracted(
                event_id=derived_id(command.report_id, "retracted"),
                report_id=command.report_id,
                requested_by=command.requested_by,
                actor=command.actor,
                reason=command.reason,
                corrected_agencies=corrected,
            ),
            key=command.report_id.encode(),
        )

    if dispatch.outbox is not None:
        outbox, registry = dispatch.outbox, AgencyRegistry(settings.tipline_routing_file)
        for agency in registry.agencies.values():
            if not agency.verify_keys:
                log.warning("agency %s has no registered key: it cannot acknowledge notices, "
                            "so its corrections will be re-sent and escalated", agency.id)
        acknowledged = broker.publisher(topics.NOTICES_ACKNOWLEDGED, schema=NoticeAcknowledged)
        outcomes = broker.publisher(topics.REPORTS_OUTCOMES, schema=OutcomeReported)
        # Declared for the AsyncAPI document; follow_acks publishes these.
        broker.publisher(topics.NOTICES_RESENT, schema=NoticeResent)
        broker.publisher(topics.NOTICES_ESCALATED, schema=NoticeEscalated)

        @broker.subscriber(topics.AGENCY_ACKS, **consumer_options(settings, "retraction-acks"))
        async def on_agency_response(response: AgencyResponse) -> None:
            fact = await on_response(outbox, timeline, response, registry)
            out = acknowledged if isinstance(fact, NoticeAcknowledged) else outcomes
            await out.publish(fact, key=fact.report_id.encode())
