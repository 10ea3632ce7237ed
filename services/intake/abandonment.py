"""An abandoned report is retracted: one not finished in time, as NCMEC's default abandonment.

Every open report is in a due index by its deadline (24 h after it was opened or 1 h after its
last change, whichever is later), moved on by every step. The timer takes what is due and asks
the draft: the step that abandons it checks the deadline from the stored times in the same
script as any racing finish or upload, so the step that came first wins. An abandoned report's
retraction is an accepted step like any other: its RetractReport (requested by "system") goes
out through the outbox to the retraction service, which corrects whoever got the report.
"""

import asyncio
import contextlib
import logging
import time

from services.intake.drafts import Drafts, Pending
from services.intake.lifecycle import Abandon, Refusal
from services.intake.outbox import Outbox
from shared import topics
from shared.audiences import Kind
from shared.clock import Clock
from shared.contracts import RetractReport, derived_id
from shared.schedule import DueIndex

DEADLINES = "tipline:abandonment:deadlines"
REASON = "abandoned"
LEASE_S = 60.0
# Longer than any creation waits (its request gives up well before): the timer looks at a report
# being opened this late at the latest, whatever happened to the watch after its creation.
CREATION_GRACE_S = 60.0
log = logging.getLogger("tipline.intake.abandonment")


def abandon_command(report_id: str) -> RetractReport:
    return RetractReport(
        command_id=derived_id(report_id, "retract", "abandoned"), report_id=report_id,
        requested_by="system", actor="abandonment timer", reason=REASON,
    )


class Abandonment:
    def __init__(self, drafts: Drafts, outbox: Outbox, deadlines: DueIndex,
                 clock: Clock = time.time) -> None:
        self._drafts = drafts
        self._outbox = outbox
        self._deadlines = deadlines
        self._clock = clock

    async def expect(self, report_id: str, at: float) -> None:
        """A report about to be opened at `at`. Its creation may wait (its shard restarting) past
        its deadline, and the timer forgets a report it finds no draft of: so it is looked at
        after the creation's grace, not before, unless `opened` says when first."""
        await self._deadlines.add({report_id: at + CREATION_GRACE_S}, nx=True)

    async def opened(self, report_id: str, deadline: float) -> None:
        # Exactly, earlier than the grace too: nobody has its id yet to move the deadline on.
        await self._deadlines.add({report_id: deadline})

    async def watch(self, report_id: str, deadline: float) -> None:
        # gt: a late answer never pulls a deadline back.
        await self._deadlines.add({report_id: deadline}, gt=True)

    async def sweep(self, at: float | None = None, limit: int = 100) -> list[str]:
        """Abandon every open report whose time is up; returns the ones abandoned now."""
        at = at or self._clock()
        taken = await self._deadlines.take(at, LEASE_S, limit)
        abandoned = []
        for i, report_id in enumerate(taken):
            try:
                if await self._abandon(report_id, at):
                    abandoned.append(report_id)
            except Exception:
                # This one (Redis away) and the rest are due again at once, not when their
                # lease ends: a moment's outage would hold them a minute.
                with contextlib.suppress(Exception):  # still away: the lease brings them back
                    await self._deadlines.add({r: at for r in taken[i:]})
                raise
        return abandoned

    async def _abandon(self, report_id: str, at: float) -> bool:
        """Abandon one report if its time is up (its draft decides); True when it was now."""
        command = abandon_command(report_id)
        pending = Pending(command.command_id, topics.RETRACTIONS_REQUESTED,
                          command.model_dump_json(), Kind.ABANDONED,
                          detail={"reason": REASON, "by": command.actor})

        async def abandon() -> bool:
            step = await self._drafts.step(report_id, Abandon(), at, pending)
            if step.outcome == Refusal.NOT_YET and step.deadline is not None:
                await self._deadlines.add({report_id: step.deadline})
                return False
            if step.outcome != Refusal.NOT_YET:
                await self._deadlines.remove(report_id)
            return step.ok

        if await self._outbox.accept(report_id, pending, abandon):
            await self._outbox.deliver(report_id, pending)
            return True
        return False


async def keep_sweeping(abandonment: Abandonment, outbox: Outbox, tick_s: float) -> None:
    """Forever: abandon what is due, and send what requests left in the outbox."""
    while True:
        try:
            await abandonment.sweep()
            await outbox.sweep()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis or the broker away: try again next tick
            log.warning("sweep failed, will retry: %r", exc)
        await asyncio.sleep(tick_s)
