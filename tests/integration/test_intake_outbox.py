"""Intake records its own step once the broker has its event; a service downstream may record
what it did with that event first. The ESP's timeline is still in the order things happened."""

import uuid
from typing import cast

from faststream.kafka import KafkaBroker
from redis.asyncio import Redis

from services.intake.drafts import Drafts, Pending
from services.intake.outbox import Outbox
from services.intake.timeline import Timeline
from shared import topics
from shared.audiences import Status
from shared.contracts import derived_id
from shared.schedule import DueIndex


class QuickValidation:
    """The broker, and a validation so quick that it has rejected the report and recorded so
    before the broker's answer reaches intake."""

    def __init__(self, timeline: Timeline, report_id: str) -> None:
        self.timeline, self.report_id = timeline, report_id

    async def publish(self, value: bytes, topic: str, *, key: bytes) -> None:
        await self.timeline.record(self.report_id, derived_id(self.report_id, "rejected"),
                                   "rejected", status=Status.REJECTED)


async def test_a_rejection_recorded_before_intake_records_the_submission_comes_after_it(
    redis: Redis,
) -> None:
    report_id = f"race-{uuid.uuid4().hex[:8]}"
    timeline = Timeline(redis)
    broker = cast(KafkaBroker, QuickValidation(timeline, report_id))
    outbox = Outbox(broker, Drafts(redis, after_open_s=60, after_change_s=60), timeline,
                    DueIndex(redis, f"test:due:{report_id}"), publish_wait_s=5, grace_s=60)
    submitted = Pending(event_id=derived_id(report_id, "submitted"),
                        topic=topics.REPORTS_SUBMITTED, value="{}", what="submitted",
                        status=Status.SUBMITTED)

    assert await outbox.deliver(report_id, submitted)

    history = await timeline.history(report_id)
    assert [e["what"] for e in history.entries] == ["submitted", "rejected"]
    assert history.status == Status.REJECTED
