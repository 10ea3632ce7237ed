"""The notification flow over stores kept in memory, for unit tests of its steps.

`MemoryLedger` is the flow's ledger with each report run by the pure state machine
(services/notification/referrals.py), and `MemoryAwaiting` its notices awaiting an ack, each run
by services/notification/acknowledgements.py: the machines the Redis scripts agree with
(tests/integration/test_state_machines_agree.py). `Wire` stands for the broker: every record
sent, in order; records left for later go after the next send's own; what waits for delivery
runs at once (no transaction). The timeline keeps each report's facts as recorded. Time is the
test's (`Clock`).
"""

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.notification.acknowledgements import NoticeEvent, NoticeState, Refused, settle
from services.notification.awaiting import Due
from services.notification.notices import Encoded
from services.notification.referrals import (
    Amend,
    Amended,
    Claim,
    ClaimAgencies,
    Command,
    ConfirmCorrections,
    Confirmed,
    ConfirmReferrals,
    Effect,
    Referrals,
    Retract,
    Retraction,
    apply,
)
from shared.batches import Item
from shared.contracts import AgencyNotice, Fact


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class MemoryLedger:
    def __init__(self) -> None:
        self.reports: dict[str, Referrals] = {}

    def _apply(self, report_id: str, command: Command) -> Effect:
        self.reports[report_id], effect = apply(self.reports.get(report_id, Referrals()),
                                                command)
        return effect

    def _each(self, commands: Mapping[str, Command]) -> dict[str, Any]:
        return {r: self._apply(r, c) for r, c in commands.items()}

    async def claim(self, reports: Mapping[str, ClaimAgencies]) -> dict[str, Claim]:
        return self._each(reports)

    async def confirm_referrals(self, reports: Mapping[str, list[str]]) -> dict[str, Confirmed]:
        return self._each({r: ConfirmReferrals(tuple(a)) for r, a in reports.items()})

    async def retract(self, marks: Mapping[str, Retract]) -> dict[str, Retraction]:
        return self._each(marks)

    async def confirm_corrections(self, reports: Mapping[str, list[str]]) -> None:
        self._each({r: ConfirmCorrections(tuple(a)) for r, a in reports.items()})

    async def amend(self, amendments: Mapping[str, Amend]) -> dict[str, Amended]:
        return self._each(amendments)

    async def retractions(self, report_ids: list[str]) -> dict[str, Retract | None]:
        return {r: self.reports.get(r, Referrals()).retraction for r in report_ids}

    async def received(self, report_id: str, agency_id: str) -> bool:
        return agency_id in self.reports.get(report_id, Referrals()).agencies

    async def referred_before(self, report_ids: list[str]) -> set[str]:
        return {r for r in report_ids if self.reports.get(r, Referrals()).agencies}

    def states(self, report_id: str) -> dict[str, str]:
        return {a: str(s) for a, s in self.reports.get(report_id, Referrals()).agencies.items()}


class MemoryAwaiting:
    def __init__(self, ack_timeout_s: float, clock: Clock) -> None:
        self.ack_timeout_s, self.clock = ack_timeout_s, clock
        self.notices: dict[tuple[str, str], NoticeState] = {}
        self.sent: dict[tuple[str, str], Encoded] = {}
        self.due: dict[tuple[str, str], float] = {}
        self.resends: dict[tuple[str, str], int] = {}

    def _settle(self, key: tuple[str, str], event: NoticeEvent) -> NoticeState | Refused:
        after = settle(self.notices.get(key), event)
        if isinstance(after, NoticeState):
            self.notices[key] = after
        return after

    async def track(self, sent: Iterable[Encoded]) -> None:
        for e in sent:
            key = (e.notice.report_id, e.notice.notice_id)
            self.sent.setdefault(key, e)
            self._settle(key, NoticeEvent.TRACK)
            self.due.setdefault(key, self.clock() + self.ack_timeout_s)

    async def tracked(self, report_id: str, notice_id: str) -> Encoded | None:
        return self.sent.get((report_id, notice_id))

    async def acknowledge(self, report_id: str, notice_id: str) -> str:
        key = (report_id, notice_id)
        self._settle(key, NoticeEvent.ACKNOWLEDGE)
        if key in self.notices and self.notices[key].settled:
            self.due.pop(key, None)
        return str(self.notices.get(key, "none"))

    async def take_due(self, limit: int = 100) -> list[Due]:
        now, due = self.clock(), []
        for key in [k for k, at in self.due.items() if at <= now][:limit]:
            self.due[key] = now + self.ack_timeout_s  # leased until the next timeout
            if self.notices.get(key) is not NoticeState.AWAITING:
                del self.due[key]
                continue
            self.resends[key] = self.resends.get(key, 0) + 1
            sent = self.sent[key]
            due.append(Due(key[0], sent.notice, sent.body, self.resends[key]))
        return due

    async def escalate(self, report_id: str, notice_id: str) -> bool:
        key = (report_id, notice_id)
        before = self.notices.get(key)
        self._settle(key, NoticeEvent.ESCALATE)
        self.due.pop(key, None)
        return before is NoticeState.AWAITING and self.notices.get(key) is NoticeState.ESCALATED

    async def pending(self) -> int:
        return len(self.due)

    def states(self, report_id: str) -> dict[str, str]:
        return {n: str(s) for (r, n), s in self.notices.items() if r == report_id}


@dataclass
class Wire:
    """What the flow published, in order: (topic, key, body)."""

    records: list[tuple[str, str, bytes]] = field(default_factory=list)
    waiting: list[Item] = field(default_factory=list)
    away: bool = False  # the broker refuses every send

    async def send(self, items: Iterable[Item]) -> None:
        items, self.waiting = [*items, *self.waiting], []
        if self.away:
            raise ConnectionError("broker away")
        for body, topic, key in items:
            value = body if isinstance(body, bytes) else body.model_dump_json().encode()
            self.records.append((topic, key, value))

    async def later(self, items: Iterable[Item]) -> None:
        self.waiting.extend(items)

    async def handled(self) -> None:
        """The handler returned: what it left for later goes now (as before a commit)."""
        await self.send([])

    async def once_delivered(self, action: Callable[[], Awaitable[None]]) -> None:
        await action()

    def notices(self, agency_id: str | None = None) -> list[AgencyNotice]:
        return [AgencyNotice.model_validate_json(v) for t, _, v in self.records
                if t.startswith("tipline.agency.") and t != "tipline.agency.acks"
                and (agency_id is None or t == f"tipline.agency.{agency_id}")]

    def events(self, topic: str) -> list[bytes]:
        return [v for t, _, v in self.records if t == topic]


class MemoryTimeline:
    """The flow's facts, each report's in the order recorded."""

    def __init__(self) -> None:
        self.facts: dict[str, list[Fact]] = {}

    async def record(self, report_id: str, event_id: str, what: Any, *,
                     status: str | None = None, **detail: Any) -> None:
        await self.record_many({report_id: [Fact(event_id, what, status, detail)]})

    async def record_many(self, facts: Mapping[str, Iterable[Fact]],
                          fields: Mapping[str, dict[str, str]] | None = None) -> None:
        for report_id, recorded in facts.items():
            self.facts.setdefault(report_id, []).extend(recorded)

    def whats(self, report_id: str) -> list[str]:
        return [f.what for f in self.facts.get(report_id, [])]
