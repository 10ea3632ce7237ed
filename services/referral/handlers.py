"""Referral handlers: claim in the ledger, notify each agency, confirm, amend and correct; a
batch of supplemented reports at a time. Changes after release arrive as AmendReport commands."""

from collections.abc import Mapping

from services.notification import notices
from services.notification.ledger import Ledger
from shared import topics
from shared.audiences import Kind
from shared.batches import Publisher, in_rounds
from shared.contracts import (
    AmendReport,
    Fact,
    Priority,
    ReportReferred,
    ReportSupplemented,
    derived_id,
)
from shared.facts import Recorder
from shared.kafka import TiplineBroker

# One subscriber (and consumer group) a priority class: a bulk backlog never delays an urgent
# referral, because they are not in the same queue. They share the process's event loop, so a
# bulk batch is kept small: while it is handled, an urgent one waits (how long:
# docs/load-testing.md).
BULK_BATCH = 50
SUPPLEMENTED = {
    topics.REPORTS_SUPPLEMENTED_URGENT: "referral-urgent",
    topics.REPORTS_SUPPLEMENTED: "referral",
    topics.REPORTS_SUPPLEMENTED_BULK: "referral-bulk",
}


async def refer(
    publish: Publisher,
    ledger: Ledger,
    timeline: Recorder,
    events: list[ReportSupplemented],
    dispatch: notices.Dispatch = notices.UNSIGNED,
    confirm_now: bool = True,
) -> dict[str, list[str]]:
    """Refer reports (at most one event a report); returns the agencies each was referred to
    by this call. `confirm_now`: record the referrals as delivered once the broker has them;
    otherwise `confirm` does, on their committed ReportReferred (in a transaction nothing is
    delivered before the commit, and a step after it could be cut short)."""
    claims = await ledger.claim({e.report_id: (e.agencies, e.priority) for e in events})
    # Retracted before its claim: never referred. (A redelivery after the referral and its
    # retraction finds agencies in the ledger: nothing was withheld then.)
    blocked = [e.report_id for e in events if claims[e.report_id].withheld]
    already = await ledger.referred_before(blocked) if blocked else set()
    await timeline.record_many({r: [Fact(derived_id(r, "withheld"), Kind.REFERRAL_WITHHELD,
                                         detail={"reason": "retracted before referral"})]
                                for r in blocked if r not in already})
    priority = {e.report_id: e.priority for e in events}
    # Delivered and retracted, the correction not confirmed (a handling of this event was cut
    # short after the referral): correct them now, as the retraction could not.
    await notices.send_corrections(publish, ledger, timeline, {
        e.report_id: (claims[e.report_id].owed_correction, e.priority) for e in events
        if claims[e.report_id].owed_correction}, dispatch)
    to_refer = {e.report_id: claims[e.report_id].to_refer for e in events
                if claims[e.report_id].to_refer}
    if not to_refer:
        return {}
    referrals = [notices.referral_notice(e, a) for e in events for a in to_refer.get(
        e.report_id, [])]
    # The referral's event and facts go in the notices' own send, after them: one round trip,
    # and a send that fails is made again whole, so neither outlives a notice not delivered.
    delivered: dict[str, list[Fact]] = {}
    for n in referrals:
        delivered.setdefault(n.report_id, []).append(Fact(
            n.notice_id, Kind.REFERRAL_DELIVERED, "referred",
            {"agency": n.agency_id, "priority": n.priority.name.lower()}))
    await timeline.record_many(delivered)
    await notices.send(publish, referrals, dispatch, then=[(ReportReferred(
        event_id=derived_id(r, "referred"), report_id=r, agencies=agencies,
        priority=priority[r]), topics.REPORTS_REFERRED, r) for r, agencies in to_refer.items()])
    if confirm_now:
        await confirm(publish, ledger, timeline,
                      {r: (agencies, priority[r]) for r, agencies in to_refer.items()}, dispatch)
    return to_refer


async def confirm(
    publish: Publisher,
    ledger: Ledger,
    timeline: Recorder,
    referred: Mapping[str, tuple[list[str], Priority]],
    dispatch: notices.Dispatch = notices.UNSIGNED,
) -> None:
    """Record delivered referrals (report id -> agencies, priority); what the agencies are owed
    since they were claimed goes out after them."""
    confirmed = await ledger.confirm_referrals({r: a for r, (a, _) in referred.items()})
    # Amended after release while these referrals were in flight: amend them now, after the
    # referral (an agency already amended drops the repeat by notice id).
    await notices.send_amendments(publish, timeline, {
        r: (referred[r][0], c.amendments, referred[r][1])
        for r, c in confirmed.items() if c.amendments}, dispatch)
    # Retracted while these referrals were in flight: correct them now, after the referral.
    await notices.send_corrections(publish, ledger, timeline, {
        r: (c.owed_correction, referred[r][1]) for r, c in confirmed.items()}, dispatch)


async def amend(
    publish: Publisher,
    ledger: Ledger,
    timeline: Recorder,
    commands: list[AmendReport],
    dispatch: notices.Dispatch = notices.UNSIGNED,
) -> None:
    """Send changes made after release (at most one command a report) to every agency whose
    referral was delivered; agencies still being referred get them after their referral."""
    done = await ledger.amend({
        c.report_id: (c.version, c.change.model_dump_json(exclude_none=True)) for c in commands})
    await timeline.record_many({c.report_id: [Fact(
        derived_id(c.report_id, "amendment withheld", str(c.version)), Kind.AMENDMENT_WITHHELD,
        detail={"version": c.version, "reason": "retracted: its agencies disregard it"})]
        for c in commands if done[c.report_id].withheld})
    await notices.send_amendments(publish, timeline, {c.report_id: (
        done[c.report_id].to_notify,
        [(c.version, c.change.model_dump_json(exclude_none=True))], c.priority)
        for c in commands}, dispatch)


def register(
    broker: TiplineBroker, ledger: Ledger, timeline: Recorder,
    dispatch: notices.Dispatch = notices.UNSIGNED,
) -> None:
    publish = Publisher(broker)

    # In a transaction, a referral is recorded as delivered when its ReportReferred is read
    # back committed: the commit is the delivery, and a crash after it leaves the record to read.
    confirm_now = not broker.transactional

    async def on_reports_supplemented(events: list[ReportSupplemented]) -> None:
        for events_now in in_rounds(events, key=lambda e: e.report_id):
            await refer(publish, ledger, timeline, events_now, dispatch, confirm_now)

    if not confirm_now:
        @broker.consume(topics.REPORTS_REFERRED, group="referral-confirm", model=ReportReferred)
        async def on_reports_referred(events: list[ReportReferred]) -> None:
            for events_now in in_rounds(events, key=lambda e: e.report_id):
                await confirm(publish, ledger, timeline, {
                    e.report_id: (e.agencies, e.priority) for e in events_now}, dispatch)

    @broker.consume(topics.AMENDMENTS_REQUESTED, group="referral-amendments",
                    model=AmendReport, patient=True)
    async def on_amend_reports(commands: list[AmendReport]) -> None:
        for commands_now in in_rounds(commands, key=lambda c: c.report_id):
            await amend(publish, ledger, timeline, commands_now, dispatch)

    for topic, group in SUPPLEMENTED.items():
        bulk = topic == topics.REPORTS_SUPPLEMENTED_BULK
        broker.consume(topic, group=group, model=ReportSupplemented, patient=bulk,
                       max_records=BULK_BATCH if bulk else None)(on_reports_supplemented)
