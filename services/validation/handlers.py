"""Validation handlers: a submitted report is validated or rejected, with reasons."""

from faststream.kafka import KafkaBroker

from shared import topics
from shared.contracts import ReportRejected, ReportSubmitted, ReportValidated, derived_id
from shared.kafka import consumer_options
from shared.rules import check_report
from shared.settings import Settings
from shared.timeline import Timeline


def register(broker: KafkaBroker, settings: Settings, timeline: Timeline) -> None:
    validated = broker.publisher(topics.REPORTS_VALIDATED, schema=ReportValidated)
    rejected = broker.publisher(topics.REPORTS_REJECTED, schema=ReportRejected)

    @broker.subscriber(topics.REPORTS_SUBMITTED, **consumer_options(settings, "validation"))
    async def on_report_submitted(event: ReportSubmitted) -> None:
        key = event.report_id.encode()
        errors = check_report(event.report, at=event.occurred_at)
        if errors:
            await timeline.record(
                event.report_id,
                derived_id(event.report_id, "rejected"),
                "rejected",
                status="rejected",
                reasons=[e.model_dump(exclude_none=True) for e in errors],
            )
            await rejected.publish(
                ReportRejected(
                    event_id=derived_id(event.report_id, "rejected"),
                    report_id=event.report_id,
                    esp_id=event.esp_id,
                    reasons=errors,
                ),
                key=key,
            )
            return
        await timeline.record(
            event.report_id, derived_id(event.report_id, "validated"), "validated",
            status="validated",
        )
        await validated.publish(
            ReportValidated(
                event_id=derived_id(event.report_id, "validated"),
                report_id=event.report_id,
                esp_id=event.esp_id,
                report=event.report,
                supersedes=event.supersedes,
            ),
            key=key,
        )
