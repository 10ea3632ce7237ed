"""The notification flow: every notice an agency gets, from its claim to its acknowledgement.

One object, `NotificationFlow`, owns each step, wherever it runs (the referral service refers
and amends; the retraction service retracts and follows the acks):

1. refer: claim the report's agencies in the ledger (ledger.py); a report retracted first is
   withheld. Send each agency its referral (notices.py builds it, sending.py sends it), then
   ReportReferred after it.
2. confirm: once the referrals are delivered, record them; what the agencies were owed meanwhile
   (amendments, a correction) goes out after their referral.
3. amend: an AmendReport after release reaches every agency whose referral was delivered.
4. retract: mark the report; correct every agency that got its referral, then confirm the
   corrections once they are delivered for good.
5. acknowledge, resend_overdue: corrections and amendments await their agency's signed ack
   (awaiting.py); one overdue is sent again, then escalated (the story is in acks.py).
"""

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter

from services.notification import acks, notices
from services.notification.acknowledgements import escalates
from services.notification.awaiting import Due
from services.notification.referrals import (
    Amend,
    Amended,
    Claim,
    ClaimAgencies,
    Confirmed,
    Retract,
    Retraction,
)
from services.notification.sending import AwaitingStore, Outlet, Sending
from shared import topics
from shared.agencies import AgencyRegistry
from shared.audiences import Kind, escalated_of, resent_of
from shared.contracts import (
    AgencyNotice,
    AgencyResponse,
    AmendReport,
    Change,
    Fact,
    NoticeAcknowledged,
    NoticeEscalated,
    NoticeResent,
    OutcomeReported,
    Priority,
    ReportReferred,
    ReportRetracted,
    ReportSupplemented,
    RetractReport,
    derived_id,
)
from shared.facts import Recorder
from shared.metrics import corrections_pending
from shared.signing import Signer
from shared.topics import agency_topic

log = logging.getLogger("tipline.acks")

ESCALATED = Counter(
    "tipline_corrections_escalated",
    "Corrections or amendments escalated after the agency never acknowledged them",
    ["kind", "agency"],
)
RESENT = Counter("tipline_notices_resent", "Notices sent again for want of an ack", ["kind"])


class LedgerStore(Protocol):
    """Who got which report (ledger.py in Redis; the same state machine in memory)."""

    async def claim(self, reports: Mapping[str, ClaimAgencies]) -> dict[str, Claim]: ...

    async def confirm_referrals(self, reports: Mapping[str, list[str]]
                                ) -> dict[str, Confirmed]: ...

    async def retract(self, marks: Mapping[str, Retract]) -> dict[str, Retraction]: ...

    async def confirm_corrections(self, reports: Mapping[str, list[str]]) -> None: ...

    async def amend(self, amendments: Mapping[str, Amend]) -> dict[str, Amended]: ...

    async def retractions(self, report_ids: list[str]) -> dict[str, Retract | None]: ...

    async def received(self, report_id: str, agency_id: str) -> bool: ...

    async def referred_before(self, report_ids: list[str]) -> set[str]: ...


@dataclass(frozen=True)
class Recipients:
    """The agencies of one report that a step concerns, and the priority its notices carry."""

    agencies: Sequence[str]
    priority: Priority


@dataclass(frozen=True)
class AmendmentsOwed:
    """The amendments (in version order) that these agencies of one report are owed."""

    agencies: Sequence[str]
    amendments: Sequence[Amend]
    priority: Priority


class NotificationFlow:
    def __init__(self, publish: Outlet, ledger: LedgerStore, timeline: Recorder,
                 signer: Signer | None = None, awaiting: AwaitingStore | None = None) -> None:
        """`signer`: notices go out signed; `awaiting`: corrections and amendments are tracked
        until acknowledged (both are None only in tests of the flow's order)."""
        self.publish, self.ledger, self.timeline = publish, ledger, timeline
        self.awaiting = awaiting
        self.sending = Sending(publish, signer, awaiting)

    # --- referral -----------------------------------------------------------------------------

    async def refer(self, events: list[ReportSupplemented], confirm_now: bool = True
                    ) -> dict[str, list[str]]:
        """Refer reports (at most one event a report); returns the agencies each was referred to
        by this call. `confirm_now`: record the referrals as delivered once the broker has them;
        otherwise `confirm` does, on their committed ReportReferred (in a transaction nothing is
        delivered before the commit, and a step after it could be cut short)."""
        claims = await self.ledger.claim({
            e.report_id: ClaimAgencies(tuple(e.agencies), e.priority) for e in events})
        # Retracted before its claim: never referred. (A redelivery after the referral and its
        # retraction finds agencies in the ledger: nothing was withheld then.)
        blocked = [e.report_id for e in events if claims[e.report_id].withheld]
        already = await self.ledger.referred_before(blocked) if blocked else set()
        await self.timeline.record_many({r: [Fact(
            derived_id(r, "withheld"), Kind.REFERRAL_WITHHELD,
            detail={"reason": "retracted before referral"})] for r in blocked if r not in already})
        referred = {e.report_id: Recipients(claims[e.report_id].to_refer, e.priority)
                    for e in events if claims[e.report_id].to_refer}
        # Delivered and retracted, the correction not confirmed (a handling of this event was
        # cut short after the referral): corrected in this send, as the retraction could not.
        owed = {e.report_id: Recipients(claims[e.report_id].owed_correction, e.priority)
                for e in events if claims[e.report_id].owed_correction}
        marks = await self.ledger.retractions(list(owed)) if owed else {}
        built = [*_corrections(owed, marks), *(
            notices.referral_notice(e, a) for e in events
            for a in (referred[e.report_id].agencies if e.report_id in referred else ()))]
        # The facts and each ReportReferred go in the notices' own send, after them: one round
        # trip, and a send that fails is made again whole, so neither outlives a notice not
        # delivered.
        await self.timeline.record_many(notices.delivered(built))
        await self.sending.send(built, then=[(ReportReferred(
            event_id=derived_id(r, "referred"), report_id=r, agencies=list(to.agencies),
            priority=to.priority), topics.REPORTS_REFERRED, r) for r, to in referred.items()])
        await self._corrected(owed)
        if confirm_now and referred:
            await self.confirm(referred)
        return {r: list(to.agencies) for r, to in referred.items()}

    async def confirm(self, referred: Mapping[str, Recipients]) -> None:
        """Record delivered referrals; what the agencies are owed since they were claimed goes
        out after them."""
        confirmed = await self.ledger.confirm_referrals({
            r: list(to.agencies) for r, to in referred.items()})
        # Amended after release while these referrals were in flight: amend them now, after the
        # referral (an agency already amended drops the repeat by notice id).
        await self._send_amendments({
            r: AmendmentsOwed(referred[r].agencies, c.amendments, referred[r].priority)
            for r, c in confirmed.items() if c.amendments})
        # Retracted while these referrals were in flight: correct them now, after the referral.
        await self._correct({r: Recipients(c.owed_correction, referred[r].priority)
                             for r, c in confirmed.items()})

    async def amend(self, commands: list[AmendReport]) -> None:
        """Send changes made after release (at most one command a report) to every agency whose
        referral was delivered; agencies still being referred get them after their referral."""
        changes = {c.report_id: Amend(c.version, c.change.model_dump_json(exclude_none=True))
                   for c in commands}
        done = await self.ledger.amend(changes)
        await self.timeline.record_many({c.report_id: [Fact(
            derived_id(c.report_id, "amendment withheld", str(c.version)),
            Kind.AMENDMENT_WITHHELD,
            detail={"version": c.version, "reason": "retracted: its agencies disregard it"})]
            for c in commands if done[c.report_id].withheld})
        await self._send_amendments({c.report_id: AmendmentsOwed(
            done[c.report_id].to_notify, [changes[c.report_id]], c.priority) for c in commands})

    # --- retraction ---------------------------------------------------------------------------

    async def retract(self, commands: list[RetractReport]) -> None:
        """Retract reports (at most one command a report): mark each in the ledger, correct
        every agency that got its referral, and tell the pipeline which agencies were
        corrected."""
        retractions = await self.ledger.retract({c.report_id: Retract.of(c) for c in commands})
        # The fact and the event wait for the batch's next send: the corrections', after them.
        await self.timeline.record_many({c.report_id: [Fact(
            derived_id(c.report_id, "retracted"), Kind.RETRACTED, "retracted",
            {"requested_by": c.requested_by, "reason": c.reason,
             "requested_at": c.requested_at.isoformat()})] for c in commands})
        await self.publish.later((ReportRetracted(
            event_id=derived_id(c.report_id, "retracted"), report_id=c.report_id,
            requested_by=c.requested_by, actor=c.actor, reason=c.reason,
            corrected_agencies=retractions[c.report_id].to_correct,
        ), topics.REPORTS_RETRACTED, c.report_id) for c in commands)
        await self._correct(
            {r: Recipients(x.to_correct, x.priority) for r, x in retractions.items()},
            marks={r: x.mark for r, x in retractions.items()})

    # --- sending ------------------------------------------------------------------------------

    async def _correct(self, owed: Mapping[str, Recipients],
                       marks: Mapping[str, Retract | None] | None = None) -> None:
        """Correct each agency that got the referral of a retracted report, and record it.
        `marks`: each report's retraction mark, when the caller read it already."""
        owed = {r: to for r, to in owed.items() if to.agencies}
        if not owed:
            return
        if marks is None:
            marks = await self.ledger.retractions(list(owed))
        corrections = _corrections(owed, marks)
        # The facts go in the notices' own send, after them (as a referral's): a send that fails
        # is made again whole, so a fact never outlives a correction not delivered.
        await self.timeline.record_many(notices.delivered(corrections))
        await self.sending.send(corrections)
        await self._corrected(owed)

    async def _corrected(self, owed: Mapping[str, Recipients]) -> None:
        """Recorded once delivered: a correction not confirmed is only sent again (by notice
        id)."""
        if owed:
            await self.publish.once_delivered(lambda: self.ledger.confirm_corrections(
                {r: list(to.agencies) for r, to in owed.items()}))

    async def _send_amendments(self, owed: Mapping[str, AmendmentsOwed]) -> None:
        """Send amendments to the agencies owed them, then record them."""
        amendments = [
            notices.amendment_notice(report_id, agency, a.version,
                                     Change.model_validate_json(a.amendment), to.priority)
            for report_id, to in owed.items() for agency in to.agencies for a in to.amendments]
        if amendments:
            await self.sending.send(amendments)
            await self.timeline.record_many(notices.delivered(amendments))

    # --- acknowledgements (acks.py tells their story) -------------------------------------------

    async def acknowledge(self, response: AgencyResponse, registry: AgencyRegistry
                          ) -> NoticeAcknowledged | OutcomeReported:
        """An agency's signed ack of a notice it received, or its outcome on a report it
        received: into the report's timeline, and the fact to publish. Refusals raise Poison."""
        acks.authenticate(registry, response)
        if not await self.ledger.received(response.report_id, response.agency_id):
            raise acks.never_received(response)
        if response.outcome is not None and response.kind == "outcome":
            event_id = derived_id("outcome", response.response_id)
            await self.timeline.record(
                response.report_id, event_id, Kind.AGENCY_OUTCOME,
                agency=response.agency_id, outcome=response.outcome, text=response.text)
            return OutcomeReported(event_id=event_id, report_id=response.report_id,
                                   agency_id=response.agency_id, outcome=response.outcome,
                                   text=response.text)
        notice_id = str(response.notice_id)
        sent = (await self.awaiting.tracked(response.report_id, notice_id)
                if self.awaiting is not None else None)
        tracked = sent.notice if sent is not None else None
        if refusal := acks.misdirected(response, tracked):
            raise refusal
        state = (await self.awaiting.acknowledge(response.report_id, notice_id)
                 if self.awaiting is not None else "none")
        event_id = derived_id("ack", notice_id, response.agency_id)
        kind, late = (tracked.kind if tracked else None), state == "escalated"
        await self.timeline.record(
            response.report_id, event_id, Kind.ACKNOWLEDGED,
            agency=response.agency_id, notice_id=notice_id, kind=kind, late=late)
        return NoticeAcknowledged(event_id=event_id, report_id=response.report_id,
                                  agency_id=response.agency_id, notice_id=notice_id, kind=kind,
                                  late=late)

    async def resend_overdue(self, max_resends: int) -> int:
        """One pass: re-send what is overdue, escalate what was re-sent enough. Returns the
        count."""
        if self.awaiting is None:
            return 0
        due = await self.awaiting.take_due()
        for item in due:
            if escalates(item.resends, max_resends):
                # Recorded first (idempotently): if this process dies before the state moves,
                # the notice is due again and the next pass finishes the escalation.
                await self._escalated(item, max_resends)
                if await self.awaiting.escalate(item.report_id, item.notice.notice_id):
                    ESCALATED.labels(item.notice.kind, item.notice.agency_id).inc()
                    # The log line names ids only, never report content.
                    log.warning(
                        "correction escalated: report_id=%s agency_id=%s notice_id=%s kind=%s "
                        "resends=%d", item.report_id, item.notice.agency_id,
                        item.notice.notice_id, item.notice.kind, max_resends)
            else:
                RESENT.labels(item.notice.kind).inc()
                await self._resend(item)
        return len(due)

    async def follow_acks(self, max_resends: int, tick_s: float) -> None:
        """Forever: re-send overdue corrections and amendments, escalate the ones never acked."""
        while True:
            try:
                await self.resend_overdue(max_resends)
                if self.awaiting is not None:
                    corrections_pending("retraction", await self.awaiting.pending())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or the broker away: try again next tick
                log.warning("re-send pass failed, will retry: %r", exc)
            await asyncio.sleep(tick_s)

    async def _resend(self, item: Due) -> None:
        notice = item.notice
        event_id = derived_id("resent", notice.notice_id, str(item.resends))
        await self.timeline.record(
            item.report_id, event_id, resent_of(notice.kind), agency=notice.agency_id,
            notice_id=notice.notice_id, resend=item.resends)
        await self.publish.send([
            (item.body, agency_topic(notice.agency_id), item.report_id),  # as first sent
            (NoticeResent(event_id=event_id, report_id=item.report_id,
                          agency_id=notice.agency_id, notice_id=notice.notice_id,
                          kind=notice.kind, resend=item.resends),
             topics.NOTICES_RESENT, item.report_id)])

    async def _escalated(self, item: Due, max_resends: int) -> None:
        notice = item.notice
        event_id = derived_id("escalated", notice.notice_id)
        await self.timeline.record(
            item.report_id, event_id, escalated_of(notice.kind), status="correction_escalated",
            agency=notice.agency_id, notice_id=notice.notice_id, resends=max_resends)
        await self.publish.send([(NoticeEscalated(
            event_id=event_id, report_id=item.report_id, agency_id=notice.agency_id,
            notice_id=notice.notice_id, kind=notice.kind, resends=max_resends,
        ), topics.NOTICES_ESCALATED, item.report_id)])


def _corrections(owed: Mapping[str, Recipients], marks: Mapping[str, Retract | None]
                 ) -> list[AgencyNotice]:
    """A correction to each agency owed one, with its report's retraction mark."""
    return [notices.correction_notice(r, a, _marked(r, marks), to.priority)
            for r, to in owed.items() for a in to.agencies]


def _marked(report_id: str, marks: Mapping[str, Retract | None]) -> Retract:
    mark = marks.get(report_id)
    if mark is None:  # owing a correction means retracted: the mark is set first, never removed
        raise LookupError(f"report {report_id} owes corrections but carries no retraction mark")
    return mark
