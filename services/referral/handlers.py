"""Referral handlers: claim in the ledger, notify each agency, confirm, correct if retracted."""

from faststream.kafka import KafkaBroker

from shared import notices, topics
from shared.contracts import ReportReferred, ReportSupplemented, derived_id
from shared.kafka import consumer_options
from shared.ledger import Ledger
from shared.settings import Settings
from shared.timeline import Timeline


async def refer(
    broker: KafkaBroker, ledger: Ledger, timeline: Timeline, event: ReportSupplemented
) -> list[str]:
    """Refer one report; returns the agencies notified by this call."""
    claim = await ledger.claim(event.report_id, event.agencies)
    if claim.retracted and not claim.to_refer:
        await timeline.record(
            event.report_id, derived_id(event.report_id, "withheld"), "referral withheld",
            reason="retracted before referral",
        )
        return []
    await notices.send(broker, [notices.referral_notice(event, a) for a in claim.to_refer])
    owed = [a for a in claim.to_refer if await ledger.confirm_referral(event.report_id, a)]
    for agency in claim.to_refer:
        await timeline.record(
            event.report_id,
            notices.notice_id("referral", event.report_id, agency),
            "referral delivered",
            status="referred",
            agency=agency,
        )
    # Retracted while these referrals were in flight: correct them now, after the referral.
    await notices.send_corrections(broker, ledger, timeline, event.report_id, owed, event.priority)
    return claim.to_refer


def register(broker: KafkaBroker, settings: Settings, ledger: Ledger, timeline: Timeline) -> None:
    referred = broker.publisher(topics.REPORTS_REFERRED, schema=ReportReferred)

    @broker.subscriber(topics.REPORTS_SUPPLEMENTED, **consumer_options(settings, "referral"))
    async def on_report_supplemented(event: ReportSupplemented) -> None:
        agencies = await refer(broker, ledger, timeline, event)
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
