"""Retraction handlers: mark the report retracted (never erase it) and fan out corrections."""

from faststream.kafka import KafkaBroker

from shared import notices, topics
from shared.contracts import ReportRetracted, RetractReport, derived_id
from shared.kafka import consumer_options
from shared.ledger import Ledger
from shared.settings import Settings
from shared.timeline import Timeline


async def retract(
    broker: KafkaBroker, ledger: Ledger, timeline: Timeline, command: RetractReport
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
    await notices.send_corrections(
        broker, ledger, timeline, command.report_id, retraction.to_correct
    )
    return retraction.to_correct


def register(broker: KafkaBroker, settings: Settings, ledger: Ledger, timeline: Timeline) -> None:
    retracted = broker.publisher(topics.REPORTS_RETRACTED, schema=ReportRetracted)

    @broker.subscriber(topics.RETRACTIONS_REQUESTED, **consumer_options(settings, "retraction"))
    async def on_retract_report(command: RetractReport) -> None:
        corrected = await retract(broker, ledger, timeline, command)
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
