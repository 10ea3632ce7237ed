"""Supplementation handlers: a validated report gets its jurisdiction and priority."""

from faststream.kafka import KafkaBroker

from services.supplementation.jurisdiction import RoutingRules, priority_of, resolve
from shared import topics
from shared.contracts import ReportSupplemented, ReportValidated, derived_id
from shared.kafka import consumer_options
from shared.settings import Settings
from shared.timeline import Timeline


def register(
    broker: KafkaBroker, settings: Settings, timeline: Timeline, routing: RoutingRules
) -> None:
    supplemented = broker.publisher(topics.REPORTS_SUPPLEMENTED, schema=ReportSupplemented)

    @broker.subscriber(topics.REPORTS_VALIDATED, **consumer_options(settings, "supplementation"))
    async def on_report_validated(event: ReportValidated) -> None:
        resolution = resolve(event.report_id, event.report, routing)
        out = ReportSupplemented(
            event_id=derived_id(event.report_id, "supplemented"),
            report_id=event.report_id,
            esp_id=event.esp_id,
            report=event.report,
            agencies=resolution.agencies,
            priority=priority_of(event.report),
            jurisdiction=resolution.basis,
            rules_version=routing.version,
        )
        await timeline.record(
            event.report_id,
            out.event_id,
            "supplemented",
            status="supplemented",
            agencies=out.agencies,
            jurisdiction=out.jurisdiction,
            priority=out.priority.name.lower(),
            rules_version=out.rules_version,
        )
        await supplemented.publish(out, key=event.report_id.encode())
