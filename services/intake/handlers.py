"""Intake's one subscriber: what other services learned about a report, into its timeline."""

from services.intake.timeline import Timeline
from shared import topics
from shared.contracts import TimelineFacts
from shared.kafka import TiplineBroker


def register(broker: TiplineBroker, timeline: Timeline) -> None:
    # The ESP's status view may trail by a fetch wait: nothing else waits on these facts.
    @broker.consume(topics.REPORT_FACTS, group="intake-timeline", model=TimelineFacts,
                    patient=True)
    async def on_report_facts(events: list[TimelineFacts]) -> None:
        await timeline.record_events(events)
