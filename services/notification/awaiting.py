"""Notices awaiting an agency's acknowledgement: tracked, re-sent, and escalated.

Corrections and amendments are tracked from the moment before they are first sent until the
agency acknowledges them on tipline.agency.acks. One that stays unacknowledged for the ack timeout
is sent again (the same signed notice, so the agency keeps one); after `max_resends` re-sends the
report is marked "correction escalated". Per notice the state only moves forward, as
`services/notification/acknowledgements.py` says (the script below runs it atomically):

    awaiting -> acked | escalated
"""

import time
from collections.abc import Iterable
from dataclasses import dataclass

from services.notification.acknowledgements import SETTLES_AS, NoticeEvent, NoticeState
from services.notification.notices import Encoded
from shared.contracts import AgencyNotice
from shared.schedule import DueIndex
from shared.store import Store, run_script

DUE = "tipline:acks:due"  # "report_id|notice_id" by when the next step is due

# Track a notice: its state (ARGV[3], awaiting) and the bytes sent, each kept as first set.
_TRACK = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3])
return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
"""

# Move a notice forward from 'awaiting' only; returns the state it is in afterwards.
_SETTLE = """
local state = redis.call('HGET', KEYS[1], ARGV[1])
if state == 'awaiting' then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]); state = ARGV[2] end
return state or 'none'
"""


@dataclass(frozen=True)
class Due:
    report_id: str
    notice: AgencyNotice
    body: bytes  # as first sent (signed): a re-send sends these very bytes
    resends: int  # including the one about to happen


class AwaitingAcknowledgement:
    """The corrections and amendments sent and not yet acknowledged, in Redis."""

    def __init__(self, redis: Store, ack_timeout_s: float) -> None:
        self._redis = redis
        self.ack_timeout_s = ack_timeout_s
        self._due = DueIndex(redis, DUE)
        self._settle = redis.register_script(_SETTLE)
        self._track = redis.register_script(_TRACK)

    @staticmethod
    def _keys(report_id: str) -> tuple[str, str, str]:
        tag = f"tipline:{{{report_id}}}"
        return f"{tag}:acks", f"{tag}:notices", f"{tag}:resends"

    async def track(self, sent: Iterable[Encoded]) -> None:
        """Await an ack for these notices (once: tracking one again changes nothing), each with
        the bytes that go out (signed): a re-send sends those."""
        # The state and the bytes first, then the due entry (which so always finds them). Each
        # step is idempotent, so a crash anywhere is mended by tracking again. A notice acked
        # already gets a due entry that `take_due` drops unsent.
        sent = list(sent)
        if not sent:
            return
        due = time.time() + self.ack_timeout_s
        await run_script(self._redis, self._track, [
            (self._keys(e.notice.report_id)[:2],
             [e.notice.notice_id, e.body, NoticeState.AWAITING]) for e in sent])
        await self._due.add({f"{e.notice.report_id}|{e.notice.notice_id}": due for e in sent},
                            nx=True)

    async def acknowledge(self, report_id: str, notice_id: str) -> str:
        """Record an ack; returns the notice's state after it ('none' if it was not tracked)."""
        state = await self._settle_as(report_id, notice_id, NoticeEvent.ACKNOWLEDGE)
        if state != "none" and NoticeState(state).settled:
            await self._due.remove(f"{report_id}|{notice_id}")
        return state

    async def _settle_as(self, report_id: str, notice_id: str, event: NoticeEvent) -> str:
        """Settle a notice (ack or escalate) in one script; its state after ('none' if it was
        not tracked)."""
        return str(await self._settle(keys=[self._keys(report_id)[0]],
                                      args=[notice_id, SETTLES_AS[event]]))

    async def tracked(self, report_id: str, notice_id: str) -> Encoded | None:
        raw = await self._redis.hget(self._keys(report_id)[1], notice_id)
        if not raw:
            return None
        body = raw.encode() if isinstance(raw, str) else raw
        return Encoded(AgencyNotice.model_validate_json(body), body)

    async def states(self, report_id: str) -> dict[str, str]:
        states = await self._redis.hgetall(self._keys(report_id)[0])
        return {str(k): str(v) for k, v in states.items()}

    async def pending(self) -> int:
        return await self._due.count()

    async def take_due(self, limit: int = 100) -> list[Due]:
        """Notices whose ack is overdue, each counted as one more re-send."""
        items = await self._due.take(time.time(), self.ack_timeout_s, limit)
        due = []
        for item in items:
            report_id, notice_id = str(item).split("|", 1)
            states, _, resends = self._keys(report_id)
            if await self._redis.hget(states, notice_id) != NoticeState.AWAITING:
                await self._due.remove(item)
                continue
            sent = await self.tracked(report_id, notice_id)
            if sent is None:
                continue
            count = int(await self._redis.hincrby(resends, notice_id, 1))
            due.append(Due(report_id, sent.notice, sent.body, count))
        return due

    async def escalate(self, report_id: str, notice_id: str) -> bool:
        """Stop re-sending; True when this call moved the notice to 'escalated'."""
        before = await self._redis.hget(self._keys(report_id)[0], notice_id)
        state = await self._settle_as(report_id, notice_id, NoticeEvent.ESCALATE)
        await self._due.remove(f"{report_id}|{notice_id}")
        return before == NoticeState.AWAITING and state == NoticeState.ESCALATED
