"""Getting an accepted step's event to the pipeline, whatever happens to the request.

A step is accepted when its state change and its event are stored together in Redis
(`Drafts.step` with a `Pending`). Before that, the event is put in the due index, so the sweep
finds it even if this process dies the next instant; an index entry with nothing pending behind
it (the step was refused, or the event was sent) is simply dropped by the sweep. Then `deliver`
publishes it, records the fact in the report's timeline, and marks it sent. Every part is
idempotent (event ids are derived), so a second delivery by the sweep or an ESP's retry is the
same event again, which consumers drop.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from redis.exceptions import RedisError

from services.intake.drafts import Drafts, Pending
from services.intake.timeline import Fact, Timeline
from shared import contracts
from shared.schedule import DueIndex
from shared.store import REDIS_UNAVAILABLE

log = logging.getLogger("tipline.intake.outbox")
DUE = "tipline:intake:due"  # "report_id|event_id" of accepted events, by when the sweep may send


class Outbox:
    def __init__(self, broker: KafkaBroker, drafts: Drafts, timeline: Timeline, due: DueIndex,
                 *, publish_wait_s: float, grace_s: float) -> None:
        self.broker = broker
        self._drafts = drafts
        self._timeline = timeline
        self._due = due
        self.publish_wait_s = publish_wait_s  # how long a request waits for the broker
        self.grace_s = grace_s  # how long the sweep leaves a fresh event to its request

    async def accept(self, report_id: str, pending: Pending,
                     step: Callable[[], Awaitable[bool]]) -> bool:
        """Run `step` (which stores `pending` when it accepts); True when it accepted."""
        await self._due.add({f"{report_id}|{pending.event_id}": time.time() + self.grace_s},
                           nx=True)
        return await step()

    async def deliver(self, report_id: str, pending: Pending) -> bool:
        """Publish an accepted event now if the broker takes it in time, and mark it sent; False
        leaves the rest to the sweep. Never raises: the step is accepted (safe in Redis), so the
        caller answers that it was, whatever fails now."""
        try:
            sending_at = contracts.now()
            await asyncio.wait_for(self._send(report_id, pending), self.publish_wait_s)
            await self._sent(report_id, pending, sending_at)
        except (KafkaError, RedisError, *REDIS_UNAVAILABLE, TimeoutError, OSError) as exc:
            log.warning("event %s of report %s left to the sweep: %r", pending.event_id,
                        report_id, exc)
            return False
        return True

    async def deliver_pending(self, report_id: str, event_id: str) -> bool | None:
        """Deliver the event of an earlier call still pending (a retry completes it); None when
        there is none."""
        pending = await self._drafts.pending(report_id, event_id)
        return None if pending is None else await self.deliver(report_id, pending)

    async def _send(self, report_id: str, pending: Pending) -> None:
        await self.broker.publish(pending.value.encode(), pending.topic,
                                   key=report_id.encode())

    async def _sent(self, report_id: str, pending: Pending, sending_at: datetime) -> None:
        """Record the fact at the time its event was sent, before any service could act on it:
        a rejection or a retraction may reach the timeline before this record does, and the
        timeline is in the order things happened."""
        await self._timeline.record_all(report_id, [
            Fact(pending.event_id, pending.what, pending.status, pending.detail)], at=sending_at)
        await self._drafts.sent(report_id, pending.event_id)
        await self._due.remove(f"{report_id}|{pending.event_id}")

    async def sweep(self, now: float | None = None, limit: int = 100) -> int:
        """Send what requests left behind; returns how many events went out."""
        sent = 0
        for member in await self._due.take(now or time.time(), self.grace_s, limit):
            report_id, event_id = member.split("|", 1)
            pending = await self._drafts.pending(report_id, event_id)
            if pending is None:
                await self._due.remove(member)  # refused, or sent already
                continue
            sending_at = contracts.now()
            await self._send(report_id, pending)
            await self._sent(report_id, pending, sending_at)
            sent += 1
        return sent
