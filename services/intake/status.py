"""A report's status, as its timeline keeps it (`services/intake/timeline.py`). Pure.

The statuses (`shared.audiences.Status`) are the contract every service's facts use
(shared/facts.py); how they move is intake's alone.

Every fact is recorded once, under its event id (a redelivered event adds nothing). A fact may
carry a status, and the status only moves forward by rank: a late "referred" never hides an
earlier "retracted". Statuses of the same rank (held, supplemented) replace each other.
"""

from dataclasses import dataclass
from types import MappingProxyType

from shared.audiences import Status

RANK = MappingProxyType({
    Status.SUBMITTED: 1,
    Status.VALIDATED: 2,
    Status.HELD: 3,
    Status.SUPPLEMENTED: 3,
    Status.REFERRED: 4,
    Status.REJECTED: 7,
    Status.RETRACTED: 8,
    Status.CORRECTION_ESCALATED: 9,
})


def rank(status: str | None) -> int:
    """A status's rank (0 for a fact without one); an unknown status is a bug, so it raises."""
    return RANK[Status(status)] if status else 0


@dataclass(frozen=True)
class Record:
    """Record one fact: its event id, and the status it brings, if any."""

    event_id: str
    status: Status | None = None


@dataclass(frozen=True)
class ReportStatus:
    status: Status | None = None
    rank: int = 0
    seen: frozenset[str] = frozenset()  # the event ids recorded
    entries: int = 0  # the timeline's length


@dataclass(frozen=True)
class Recorded:
    status_moved: bool  # the fact's status is the report's status now


@dataclass(frozen=True)
class Refused:
    reason: str


def record(report: ReportStatus, fact: Record) -> tuple[ReportStatus, Recorded | Refused]:
    if fact.event_id in report.seen:
        return report, Refused("recorded before")
    seen, entries = report.seen | {fact.event_id}, report.entries + 1
    if fact.status is None or rank(fact.status) < report.rank:
        return ReportStatus(report.status, report.rank, seen, entries), Recorded(False)
    return ReportStatus(fact.status, rank(fact.status), seen, entries), Recorded(True)
