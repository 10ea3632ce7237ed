"""Supplementation handlers: validated reports are released for referral, unless held (reports
from the public always are, for triage); what public reporters add is kept in the case file."""

from services.supplementation.casefile import CaseFiles
from services.supplementation.release import Releaser, routing_of
from shared import topics
from shared.audiences import Kind
from shared.batches import in_rounds
from shared.contracts import (
    Fact,
    InformationAdded,
    ReportRetracted,
    ReportValidated,
    derived_id,
)
from shared.kafka import TiplineBroker


def register(
    broker: TiplineBroker, cases: CaseFiles, releaser: Releaser
) -> None:
    @broker.consume(topics.REPORTS_VALIDATED, group="supplementation", model=ReportValidated)
    async def on_reports_validated(events: list[ReportValidated]) -> None:
        for events_now in in_rounds(events, key=lambda e: e.report_id):
            # Routed on the report as it arrives, so a report nobody holds is released in the
            # same round trip (the case file keeps the first routing: never routed twice).
            rules = releaser.rules.rules()
            arrived = await cases.arrive([
                (e, routing_of(e.report_id, e.report, [], rules)) for e in events_now])
            await releaser.publish_cases(
                {e.report_id: a.case for e, a in zip(events_now, arrived, strict=True) if a.case},
                facts={e.report_id: [Fact(
                    derived_id(e.report_id, "arrived-held"),
                    Kind.AWAITS_RELEASE, "held")]
                    for e, a in zip(events_now, arrived, strict=True) if a.case is None})

    # No more changes to a retracted report (the analyst API refuses them); nobody waits.
    @broker.consume(topics.REPORTS_RETRACTED, group="supplementation-retractions",
                    model=ReportRetracted, patient=True)
    async def on_reports_retracted(events: list[ReportRetracted]) -> None:
        await cases.retracted([e.report_id for e in events])

    # Kept for the analysts; an agency learns of it only if an analyst adds it as a supplement.
    @broker.consume(topics.REPORTS_ADDITIONS, group="supplementation-additions",
                    model=InformationAdded, patient=True)
    async def on_information_added(events: list[InformationAdded]) -> None:
        await cases.add_information(events)
