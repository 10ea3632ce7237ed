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
    """Refuse a response from an unknown agency, or unsigned by a key the agency registered."""
    agency = registry.get(response.agency_id)
    if agency is None:
        raise Poison(f"response from unknown agency {response.agency_id}")
    verifier = agency.verifier()
    if verifier is not None:
        try:
            verifier.verify(response.model_dump(mode="json"))
        except BadSignature as exc:
            raise Poison(f"response from {response.agency_id} refused: {exc}") from None


async def on_response(
    outbox: Outbox,
    timeline: Timeline,
    response: AgencyResponse,
    registry: AgencyRegistry | None = None,
) -> None:
    """An agency's ack of a notice, or its outcome, goes into the report's timeline."""
    if registry is not None:
        authenticate(registry, response)
    if response.kind == "outcome":
        await timeline.record(
            response.report_id, derived_id("outcome", response.response_id), "agency outcome",
            agency=response.agency_id, outcome=response.outcome, text=response.text,
        )
        return
    notice_id = str(response.notice_id)
    tracked = await outbox.tracked(response.report_id, notice_id)
    if tracked is not None and tracked.agency_id != response.agency_id:
        raise Poison(f"{response.agency_id} acknowledged a notice sent to {tracked.agency_id}")
    state = await outbox.acknowledge(response.report_id, notice_id)
    await timeline.record(
        response.report_id,
        derived_id("ack", notice_id, response.agency_id),
        "acknowledged",
        agency=response.agency_id,
        notice_id=notice_id,
        kind=tracked.kind if tracked else None,
        late=state == "escalated",
    )


async def follow_acks(
    broker: KafkaBroker, outbox: Outbox, timeline: Timeline, settings: Settings
) -> None:
    """Forever: re-send overdue corrections and amendments, escalate the ones never acked."""

    async def resend(item: Due) -> None:
        await notices.send(broker, [item.notice])  # the stored notice, signed as first sent
        await timeline.record(
            item.report_id, derived_id("resent", item.notice.notice_id, str(item.resends)),
            f"{item.notice.kind} re-sent", agency=item.notice.agency_id,
            notice_id=item.notice.notice_id, resend=item.resends,
        )

    async def escalated(item: Due) -> None:
        await timeline.record(
            item.report_id, derived_id("escalated", item.notice.notice_id),
            f"{item.notice.kind} escalated", status="correction_escalated",
            agency=item.notice.agency_id, notice_id=item.notice.notice_id,
            resends=settings.tipline_max_resends,
        )

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

        @broker.subscriber(topics.AGENCY_ACKS, **consumer_options(settings, "retraction-acks"))
        async def on_agency_response(response: AgencyResponse) -> None:
            await on_response(outbox, timeline, response, registry)
