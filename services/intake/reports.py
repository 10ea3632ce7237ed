"""Where the reporting core keeps its reports, in Redis: each draft and its files (drafts.py),
the events its steps owe the pipeline (outbox.py), its abandonment deadline (abandonment.py) and
its timeline (timeline.py). `Reporting` (reporting.py) decides; this stores and sends.

A step is accepted durably: its state change and its event are stored together in one script,
then the event is sent, or left to the sweep when the broker is away. An open report is watched
by the abandonment timer from before it exists, so it is never left unwatched.
"""

import contextlib
from collections.abc import Mapping
from functools import partial

from redis.exceptions import RedisError

from services.intake.abandonment import Abandonment
from services.intake.drafts import Drafts, Pending, Record
from services.intake.lifecycle import Command, DraftState, Mode, Step
from services.intake.outbox import Outbox
from services.intake.timeline import History, Timeline
from shared.contracts import FileInfo
from shared.store import REDIS_UNAVAILABLE


class RedisReports:
    def __init__(self, drafts: Drafts, outbox: Outbox, abandonment: Abandonment,
                 timeline: Timeline) -> None:
        self.drafts = drafts
        self.outbox = outbox
        self.abandonment = abandonment
        self.timeline = timeline

    async def record(self, report_id: str) -> Record | None:
        return await self.drafts.record(report_id)

    async def files(self, report_id: str) -> list[FileInfo]:
        return await self.drafts.files(report_id)

    async def history(self, report_id: str) -> History:
        return await self.timeline.history(report_id)

    async def first_copy(self, report_id: str, sha256: str) -> str | None:
        return await self.drafts.first_copy(report_id, sha256)

    async def note_copy(self, report_id: str, sha256: str, file_id: str) -> None:
        # Best effort: the upload it follows is accepted, and a 503 now would have the ESP send
        # the file again. The note only flags a later copy of the same content as a duplicate.
        with contextlib.suppress(RedisError, *REDIS_UNAVAILABLE):
            await self.drafts.note_copy(report_id, sha256, file_id)

    async def create(self, report_id: str, esp_id: str, at: float, state: DraftState,
                     pending: Pending, fields: Mapping[str, str]) -> bool:
        deadline = self.drafts.deadline(at, at)
        if state is DraftState.OPEN:  # watched first: an open report is never left unwatched
            await self.abandonment.expect(report_id, at)
        create = partial(self.drafts.create, report_id, esp_id, at, state, pending, **fields)
        if not await self.outbox.accept(report_id, pending, create):
            return False
        if state is DraftState.OPEN:
            # Accepted now, whatever happens next: if this fails, the timer still looks at the
            # report when the creation's grace is up, and the draft tells it the deadline.
            with contextlib.suppress(RedisError, *REDIS_UNAVAILABLE):
                await self.abandonment.opened(report_id, deadline)
        await self.outbox.deliver(report_id, pending)
        return True

    async def take(self, report_id: str, command: Command, at: float, pending: Pending) -> Step:
        taken = Step("", None)

        async def run() -> bool:
            nonlocal taken
            taken = await self.drafts.step(report_id, command, at, pending)
            if taken.ok and taken.deadline and command.rule.mode is Mode.TOUCH:
                # Accepted now, whatever happens next; a deadline not moved on heals itself
                # (the sweep asks the draft, which knows the later one).
                with contextlib.suppress(RedisError, *REDIS_UNAVAILABLE):
                    await self.abandonment.watch(report_id, taken.deadline)
            return taken.ok

        if await self.outbox.accept(report_id, pending, run):
            await self.outbox.deliver(report_id, pending)
        return taken

    async def complete(self, report_id: str, event_id: str) -> bool:
        return await self.outbox.deliver_pending(report_id, event_id) is not None
