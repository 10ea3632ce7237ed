"""Supplementation handlers: validated reports are released for referral, unless held."""

from services.supplementation.casefile import CaseFiles
from services.supplementation.holds import CaseState
from services.supplementation.release import Releaser
from shared import topics
from shared.batches import in_rounds
from shared.contracts import (
    AmendReport,
    Fact,
    ReportRetracted,
    ReportSupplemented,
    ReportValidated,
    derived_id,
)
from shared.facts import Recorder
from shared.kafka import TiplineBroker


def register(
    broker: TiplineBroker, timeline: Recorder, cases: CaseFiles, releaser: Releaser
) -> None:
    # Declared for the AsyncAPI document; the releaser picks the topic by priority.
    for topic in (topics.REPORTS_SUPPLEMENTED_URGENT, topics.REPORTS_SUPPLEMENTED,
                  topics.REPORTS_SUPPLEMENTED_BULK):
        broker.publisher(topic, schema=ReportSupplemented)
    broker.publisher(topics.AMENDMENTS_REQUESTED, schema=AmendReport)  # by the analyst API

    @broker.consume(topics.REPORTS_VALIDATED, group="supplementation", model=ReportValidated)
    async def on_reports_validated(events: list[ReportValidated]) -> None:
        for events_now in in_rounds(events, key=lambda e: e.report_id):
            states = await cases.arrive([(e.report_id, e.report, e.esp_id) for e in events_now])
            held = [e.report_id for e, s in zip(events_now, states, strict=True)
                    if s != CaseState.RELEASED]
            await releaser.release([e.report_id for e, s in zip(events_now, states, strict=True)
                                    if s == CaseState.RELEASED])
            await timeline.record_many({r: [Fact(
                derived_id(r, "arrived-held"), "validated report waits for the analyst's release",
                "held")] for r in held})

    # No more changes to a retracted report (the analyst API refuses them); nobody waits.
    @broker.consume(topics.REPORTS_RETRACTED, group="supplementation-retractions",
                    model=ReportRetracted, patient=True)
    async def on_reports_retracted(events: list[ReportRetracted]) -> None:
        await cases.retracted([e.report_id for e in events])
