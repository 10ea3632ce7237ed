"""The abandonment timer: an unfinished report is retracted as "abandoned" when its time is up.

Deadlines live in a Redis sorted set (report id -> epoch seconds), moved forward by every step
event. A sweep takes the due ones; `Drafts.abandon` decides atomically from the stored times (so a
step that raced the sweep wins), and the retraction goes through the retraction service like any
other: RetractReport(requested_by="system", reason="abandoned"). Sweeps are safe to run in several
instances at once: the command id is derived, so a second publish is the same command.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from shared.contracts import ReportDraftChanged, RetractReport, derived_id
from shared.drafts import Drafts
from shared.timeline import Timeline

DEADLINES = "tipline:abandonment:deadlines"
REASON = "abandoned"
log = logging.getLogger("tipline.validation.abandonment")

Publish = Callable[[RetractReport], Awaitable[object]]


def deadline_of(event: ReportDraftChanged, after_open_s: float, after_change_s: float) -> float:
    """When a report is abandoned if nothing else happens after this step. Pure."""
    return max(event.opened_at.timestamp() + after_open_s,
               event.occurred_at.timestamp() + after_change_s)


def abandon_command(report_id: str) -> RetractReport:
    return RetractReport(
        command_id=derived_id(report_id, "retract", "abandoned"), report_id=report_id,
        requested_by="system", actor="abandonment timer", reason=REASON,
    )


class Abandonment:
    def __init__(self, redis: Redis, drafts: Drafts, timeline: Timeline, publish: Publish) -> None:
        self._redis = redis
        self._drafts = drafts
        self._timeline = timeline
        self._publish = publish

    async def watch(self, report_id: str, deadline: float) -> None:
        # GT: a late, redelivered step never pulls a deadline back.
        await self._redis.zadd(DEADLINES, {report_id: deadline}, gt=True)

    async def forget(self, report_id: str) -> None:
        await self._redis.zrem(DEADLINES, report_id)

    async def sweep(self, at: float | None = None, batch: int = 100) -> list[str]:
        """Abandon every report whose deadline has passed; returns the ones abandoned."""
        at = at or time.time()
        abandoned = []
        due = await self._redis.zrangebyscore(DEADLINES, "-inf", at, 0, batch)
        for report_id in map(str, due):
            step = await self._drafts.abandon(report_id, at)
            if step.outcome == "not yet" and step.deadline is not None:
                await self._redis.zadd(DEADLINES, {report_id: step.deadline}, xx=True)
                continue
            if step.outcome == "ok":
                event_id = derived_id(report_id, "abandoned")
                await self._timeline.record(report_id, event_id, "abandoned", reason=REASON,
                                            by="abandonment timer")
                await self._publish(abandon_command(report_id))
                abandoned.append(report_id)
            await self.forget(report_id)
        return abandoned

    async def run(self, tick_s: float) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or broker away: try again next tick
                log.warning("abandonment sweep failed, will retry: %r", exc)
            await asyncio.sleep(tick_s)
