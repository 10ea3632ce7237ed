"""Retraction handlers: mark the report retracted (never erase it), fan out corrections, and
take the agencies' acknowledgements (the story of an ack is in acks.py)."""

import logging

from pydantic import BaseModel

from services.notification import notices
from services.notification.ledger import Ledger
from services.retraction.acks import on_response
from shared import topics
from shared.agencies import AgencyRegistry
from shared.audiences import Kind
from shared.batches import Poison, Publisher, in_rounds, refuse
from shared.contracts import (
    AgencyResponse,
    Fact,
    NoticeAcknowledged,
    ReportRetracted,
    RetractReport,
    derived_id,
)
from shared.facts import Recorder
from shared.kafka import TiplineBroker
from shared.settings import Settings

log = logging.getLogger("tipline.retraction")


async def retract(
    publish: Publisher,
    ledger: Ledger,
    timeline: Recorder,
    commands: list[RetractReport],
    dispatch: notices.Dispatch = notices.UNSIGNED,
) -> None:
    """Retract reports (at most one command a report): mark each in the ledger, correct every
    agency that got its referral, and tell the pipeline which agencies were corrected."""
    retractions = await ledger.retract({
        c.report_id: (c.requested_at, c.requested_by, c.actor, c.reason) for c in commands})
    # The fact and the event wait for the batch's next send: the corrections', after them.
    await timeline.record_many({c.report_id: [Fact(
        derived_id(c.report_id, "retracted"), Kind.RETRACTED, "retracted",
        {"requested_by": c.requested_by, "reason": c.reason,
         "requested_at": c.requested_at.isoformat()})] for c in commands})
    await publish.later((ReportRetracted(
        event_id=derived_id(c.report_id, "retracted"), report_id=c.report_id,
        requested_by=c.requested_by, actor=c.actor, reason=c.reason,
        corrected_agencies=retractions[c.report_id].to_correct,
    ), topics.REPORTS_RETRACTED, c.report_id) for c in commands)
    await notices.send_corrections(publish, ledger, timeline, {
        r: (x.to_correct, x.priority) for r, x in retractions.items()}, dispatch,
        marks={r: x.mark for r, x in retractions.items()})


def register(
    broker: TiplineBroker,
    settings: Settings,
    ledger: Ledger,
    timeline: Recorder,
    dispatch: notices.Dispatch = notices.UNSIGNED,
) -> None:
    publish = Publisher(broker)

    @broker.consume(topics.RETRACTIONS_REQUESTED, group="retraction", model=RetractReport)
    async def on_retract_reports(commands: list[RetractReport]) -> None:
        for commands_now in in_rounds(commands, key=lambda c: c.report_id):
            await retract(publish, ledger, timeline, commands_now, dispatch)

    if dispatch.outbox is not None:
        outbox, registry = dispatch.outbox, AgencyRegistry(settings.tipline_routing_file)
        for agency in registry.agencies.values():
            if not agency.verify_keys:
                log.warning("agency %s has no registered key: it cannot acknowledge notices, "
                            "so its corrections will be re-sent and escalated", agency.id)
        # An ack settles a notice that waits minutes for it: no need to ask every few ms.
        @broker.consume(topics.AGENCY_ACKS, group="retraction-acks", model=AgencyResponse,
                        patient=True)
        async def on_agency_responses(responses: list[AgencyResponse]) -> None:
            facts: list[tuple[BaseModel, str, str]] = []
            for response in responses:
                try:
                    fact = await on_response(outbox, ledger, timeline, response, registry)
                except Poison as exc:
                    refuse(response, exc)  # dead-lettered alone, with why
                    continue
                topic = (topics.NOTICES_ACKNOWLEDGED if isinstance(fact, NoticeAcknowledged)
                         else topics.REPORTS_OUTCOMES)
                facts.append((fact, topic, fact.report_id))
            await publish.send(facts)
