"""An agency acknowledges a correction (or an amendment), and what happens when it does not.

1. Referral and retraction track every correction and amendment before its first send
   (services/notification/outbox.py: `awaiting`).
2. The agency's client verifies the notice's signature and answers on tipline.agency.acks with an
   ack signed by a key it registered (`tipline agency keys`).
3. The retraction service (`on_response`, below) refuses a response not signed by one of that
   agency's registered keys, about a report the ledger says the agency never received, or
   acking a notice that was not sent to it (dead-lettered with why): an agency answers only for
   what it was told. Otherwise the notice moves `awaiting -> acked` and NoticeAcknowledged goes
   out (the console shows it; the report's ESP is told nothing of it: shared/audiences.py).
4. A notice still awaiting after `TIPLINE_ACK_TIMEOUT_S` is sent again, the same signed notice
   (`follow_acks`); after `TIPLINE_MAX_RESENDS` re-sends it is escalated (NoticeEscalated):
   people must act. An ack after that is recorded as late.
"""

import asyncio
import logging

from services.notification import notices
from services.notification.ledger import Ledger
from services.notification.outbox import Due, Outbox, resend_overdue
from shared import topics
from shared.agencies import AgencyRegistry
from shared.audiences import Kind, escalated_of, resent_of
from shared.batches import Poison, Publisher
from shared.contracts import (
    AgencyResponse,
    NoticeAcknowledged,
    NoticeEscalated,
    NoticeResent,
    OutcomeReported,
    derived_id,
)
from shared.facts import Recorder
from shared.kafka import TiplineBroker
from shared.metrics import corrections_pending
from shared.settings import Settings
from shared.signing import BadSignature

log = logging.getLogger("tipline.retraction")


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
    outbox: Outbox, ledger: Ledger, timeline: Recorder, response: AgencyResponse,
    registry: AgencyRegistry,
) -> NoticeAcknowledged | OutcomeReported:
    """An agency's signed ack of a notice it received, or its outcome on a report it received:
    into the report's timeline, and the fact to publish."""
    authenticate(registry, response)
    if not await ledger.received(response.report_id, response.agency_id):
        raise Poison(f"{response.agency_id} never received report {response.report_id[:40]}: "
                     f"its {response.kind} is refused")
    if response.kind == "outcome":
        event_id = derived_id("outcome", response.response_id)
        await timeline.record(
            response.report_id, event_id, Kind.AGENCY_OUTCOME,
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
    # Referrals are not tracked: theirs is the one id a referral to this agency has.
    if tracked is None and notice_id != notices.notice_id(
            "referral", response.report_id, response.agency_id):
        raise Poison(f"{response.agency_id} acknowledged {notice_id[:60]}, which was not sent "
                     "to it")
    state = await outbox.acknowledge(response.report_id, notice_id)
    event_id = derived_id("ack", notice_id, response.agency_id)
    kind, late = (tracked.kind if tracked else None), state == "escalated"
    await timeline.record(
        response.report_id, event_id, Kind.ACKNOWLEDGED,
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
            item.report_id, event_id, resent_of(notice.kind), agency=notice.agency_id,
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
            item.report_id, event_id, escalated_of(notice.kind), status="correction_escalated",
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
