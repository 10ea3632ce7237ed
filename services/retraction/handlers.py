"""Retraction handlers: retract reports (marked, never erased) and take the agencies'
acknowledgements, both through the notification flow (services/notification/flow.py; the story
of an ack is in services/notification/acks.py)."""

import logging

from pydantic import BaseModel

from services.notification.flow import NotificationFlow
from shared import topics
from shared.agencies import AgencyRegistry
from shared.batches import Poison, in_rounds, refuse
from shared.contracts import (
    AgencyResponse,
    NoticeAcknowledged,
    RetractReport,
)
from shared.kafka import TiplineBroker
from shared.settings import Settings

log = logging.getLogger("tipline.retraction")


def register(broker: TiplineBroker, settings: Settings, flow: NotificationFlow) -> None:
    @broker.consume(topics.RETRACTIONS_REQUESTED, group="retraction", model=RetractReport)
    async def on_retract_reports(commands: list[RetractReport]) -> None:
        for commands_now in in_rounds(commands, key=lambda c: c.report_id):
            await flow.retract(commands_now)

    if flow.awaiting is not None:
        registry = AgencyRegistry(settings.tipline_routing_file)
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
                    fact = await flow.acknowledge(response, registry)
                except Poison as exc:
                    refuse(response, exc)  # dead-lettered alone, with why
                    continue
                topic = (topics.NOTICES_ACKNOWLEDGED if isinstance(fact, NoticeAcknowledged)
                         else topics.REPORTS_OUTCOMES)
                facts.append((fact, topic, fact.report_id))
            await flow.publish.send(facts)
