"""Sending notices: each signed, tracked until its agency acknowledges it (where its kind awaits
an ack), then published on its agency's topic keyed by report id, with whatever records go
after it. The flow (flow.py) decides what to send; this is how anything is sent."""

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from services.notification.awaiting import Due
from services.notification.notices import TRACKED_KINDS, Encoded, encoded
from shared.batches import Item
from shared.contracts import AgencyNotice
from shared.signing import Signer
from shared.topics import agency_topic


class Outlet(Protocol):
    """Where the flow's records go (shared.batches' Publisher)."""

    async def send(self, items: Iterable[Item]) -> None: ...

    async def later(self, items: Iterable[Item]) -> None: ...

    async def once_delivered(self, action: Callable[[], Awaitable[None]]) -> None: ...


class AwaitingStore(Protocol):
    """The notices awaiting their agency's ack (awaiting.py in Redis, or in memory)."""

    async def track(self, sent: Iterable[Encoded]) -> None: ...

    async def tracked(self, report_id: str, notice_id: str) -> Encoded | None: ...

    async def acknowledge(self, report_id: str, notice_id: str) -> str: ...

    async def take_due(self, limit: int = 100) -> list[Due]: ...

    async def escalate(self, report_id: str, notice_id: str) -> bool: ...

    async def pending(self) -> int: ...


@dataclass(frozen=True)
class Sending:
    publish: Outlet
    signer: Signer | None  # None only in tests of the flow's order: notices go out unsigned
    awaiting: AwaitingStore | None  # None: nothing is tracked

    async def send(self, built: Iterable[AgencyNotice], then: Iterable[Item] = ()
                   ) -> list[AgencyNotice]:
        """Sign, track, then publish notices keyed by report id, and the records `then` after
        them, all in flight together; returns the notices (as built: their signed bodies went
        out) once the broker acknowledged every one."""
        out = [encoded(n, self.signer) for n in built]
        if self.awaiting is not None:
            # Tracked before the first send: if this process dies now, the re-send loop sends it.
            await self.awaiting.track(e for e in out if e.notice.kind in TRACKED_KINDS)
        await self.publish.send([*((e.body, agency_topic(e.notice.agency_id), e.notice.report_id)
                                   for e in out), *then])
        return [e.notice for e in out]
