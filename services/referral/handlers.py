"""Referral handlers: claim in the ledger, notify each agency, confirm, amend and correct."""

from faststream.kafka import KafkaBroker

from shared import notices, topics
from shared.contracts import ReportReferred, ReportSupplemented, derived_id
from shared.kafka import consumer_options
from shared.ledger import Ledger
from shared.settings import Settings
from shared.timeline import Fact, Timeline

# One subscriber (and consumer group) a priority class: a bulk backlog never delays an urgent
# referral, because they are not in the same queue.
SUPPLEMENTED = {
    topics.REPORTS_SUPPLEMENTED_URGENT: "referral-urgent",
    topics.REPORTS_SUPPLEMENTED: "referral",
    topics.REPORTS_SUPPLEMENTED_BULK: "referral-bulk",
}


async def refer(
    broker: KafkaBroker,
    ledger: Ledger,
    timeline: Timeline,
    event: ReportSupplemented,
    dispatch: notices.Dispatch = notices.UNSIGNED,
) -> list[str]:
    """Refer one report; returns the agencies notified by this call."""
    claim = await ledger.claim(event.report_id, event.agencies)
    if claim.retracted and not claim.to_refer:
        if await ledger.states(event.report_id):
            # A redelivery after the referral and its retraction: nothing was withheld.
            return []
        await timeline.record(
            event.report_id, derived_id(event.report_id, "withheld"), "referral withheld",
            reason="retracted before referral",
        )
        return []
    referrals = [notices.referral_notice(event, a) for a in claim.to_refer]
    await notices.send(broker, referrals, dispatch)
    confirmed = await ledger.confirm_referrals(event.report_id, claim.to_refer)
    await timeline.record_all(event.report_id, [
        Fact(notice.notice_id, "referral delivered", "referred",
             {"agency": notice.agency_id, "priority": event.priority.name.lower()})
        for notice in referrals
    ])
    # Amended after release while these referrals were in flight: amend them now, after the
    # referral (an agency already amended by the analyst API drops the repeat by notice id).
    changes = list(enumerate(confirmed.amendments, start=1))
    await notices.send_amendments(
        broker, timeline, event.report_id, claim.to_refer, changes, event.priority, dispatch
    )
    # Retracted while these referrals were in flight: correct them now, after the referral.
    await notices.send_corrections(
        broker, ledger, timeline, event.report_id, confirmed.owed_correction, event.priority,
        dispatch,
    )
    return claim.to_refer


def register(
    broker: KafkaBroker,
    settings: Settings,
    ledger: Ledger,
    timeline: Timeline,
    dispatch: notices.Dispatch = notices.UNSIGNED,
) -> None:
    referred = broker.publisher(topics.REPORTS_REFERRED, schema=ReportReferred)

    async def on_report_supplemented(event: ReportSupplemented) -> None:
        agencies = await refer(broker, ledger, timeline, event, dispatch)
        if agencies:
            await referred.publish(
                ReportReferred(
                    event_id=derived_id(event.report_id, "referred"),
                    report_id=event.report_id,
                    agencies=agencies,
                    priority=event.priority,
                ),
                key=event.report_id.encode(),
            )

    for topic, group in SUPPLEMENTED.items():
        broker.subscriber(topic, **consumer_options(settings, group))(on_report_supplemented)
