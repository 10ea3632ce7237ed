"""Supplementation handlers: a validated report is released for referral, unless held."""

from faststream.kafka import KafkaBroker

from services.supplementation.casefile import CaseFiles
from services.supplementation.release import Releaser
from shared import topics
from shared.contracts import ReportSupplemented, ReportValidated, derived_id
from shared.kafka import consumer_options
from shared.settings import Settings
from shared.timeline import Timeline


def register(
    broker: KafkaBroker, settings: Settings, timeline: Timeline, cases: CaseFiles,
    releaser: Releaser,
) -> None:
    # Declared for the AsyncAPI document; the releaser picks the topic by priority.
    for topic in (topics.REPORTS_SUPPLEMENTED_URGENT, topics.REPORTS_SUPPLEMENTED,
                  topics.REPORTS_SUPPLEMENTED_BULK):
        broker.publisher(topic, schema=ReportSupplemented)

    @broker.subscriber(topics.REPORTS_VALIDATED, **consumer_options(settings, "supplementation"))
    async def on_report_validated(event: ReportValidated) -> None:
        state = await cases.arrive(event.report_id, event.report, event.esp_id)
        if state == "released":
            await releaser.release(event.report_id)
        else:
            await timeline.record(
                event.report_id, derived_id(event.report_id, "arrived-held"),
                "validated report waits for the analyst's release", status="held",
            )
