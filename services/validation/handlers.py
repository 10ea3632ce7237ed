"""Validation handlers: a finished report is validated or rejected, with reasons; the files of an
unfinished report feed the checks across reports."""

from faststream.kafka import KafkaBroker

from services.validation.crosscheck import CrossCheck
from shared import topics
from shared.contracts import (
    ReportDraftChanged,
    ReportRejected,
    ReportSubmitted,
    ReportValidated,
    derived_id,
)
from shared.kafka import consumer_options
from shared.rules import check_finished
from shared.settings import Settings
from shared.timeline import Timeline


def register(
    broker: KafkaBroker,
    settings: Settings,
    timeline: Timeline,
    crosscheck: CrossCheck,
) -> None:
    validated = broker.publisher(topics.REPORTS_VALIDATED, schema=ReportValidated)
    rejected = broker.publisher(topics.REPORTS_REJECTED, schema=ReportRejected)

    @broker.subscriber(topics.REPORTS_SUBMITTED, **consumer_options(settings, "validation"))
    async def on_report_submitted(event: ReportSubmitted) -> None:
        key = event.report_id.encode()
        if event.supersedes:
            await crosscheck.link_supersession(event.report_id, event.esp_id, event.supersedes)
        errors = check_finished(event.report, at=event.occurred_at)
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

    @broker.subscriber(topics.REPORTS_DRAFTS, **consumer_options(settings, "validation-drafts"))
    async def on_report_draft_changed(event: ReportDraftChanged) -> None:
        if event.change == "file uploaded" and event.file is not None:
            await crosscheck.content_seen(event.report_id, event.esp_id, event.file)
