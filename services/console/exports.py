"""Exports: a report's delivery record and an agency's backlog, as CSV or JSON.

One typed row a line (the CSV header is the row model's fields), times in ISO 8601 UTC. A CSV
cell that a spreadsheet would read as a formula is quoted with a leading apostrophe (a
retraction's reason is the ESP's or an analyst's text).
"""

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime

from pydantic import BaseModel

from services.console.model import PRIORITIES, Report
from services.console.queries import Waiting
from shared.agencies import Agency


def _at(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _when(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


class DeliveryRow(BaseModel):
    """What one agency was sent of one report, and what it answered."""

    report_id: str
    agency_id: str
    agency_name: str | None
    referral_sent_at: datetime | None
    referral_acknowledged_at: datetime | None
    amendments_sent: int
    amendments_acknowledged: int
    correction_sent_at: datetime | None
    correction_last_sent_at: datetime | None
    correction_resends: int
    correction_acknowledged_at: datetime | None
    correction_escalated_at: datetime | None
    correction_state: str
    outcome: str | None
    outcome_at: datetime | None
    retracted_at: datetime | None
    retracted_by: str | None
    retraction_actor: str | None
    retraction_reason: str | None


class BacklogRow(BaseModel):
    """One thing an agency has not acknowledged."""

    agency_id: str
    report_id: str
    waiting: str  # pending, overdue, escalated, referral unacknowledged
    priority: str
    since: datetime
    last_sent_at: datetime | None
    resends: int


def delivery(report: Report, agencies: Mapping[str, Agency], now: float,
             ack_timeout_s: float) -> list[DeliveryRow]:
    x = report.retraction
    return [DeliveryRow(
        report_id=report.report_id, agency_id=agency_id,
        agency_name=agencies[agency_id].name if agency_id in agencies else None,
        referral_sent_at=_at(t.referral_at), referral_acknowledged_at=_at(t.referral_acked_at),
        amendments_sent=t.amendments, amendments_acknowledged=t.amendments_acked,
        correction_sent_at=_at(t.correction_at), correction_last_sent_at=_at(t.last_sent_at),
        correction_resends=t.resends, correction_acknowledged_at=_at(t.correction_acked_at),
        correction_escalated_at=_at(t.escalated_at),
        correction_state=t.correction_state(now, ack_timeout_s), outcome=t.outcome,
        outcome_at=_at(t.outcome_at), retracted_at=_at(x.at) if x else None,
        retracted_by=x.requested_by if x else None, retraction_actor=x.actor if x else None,
        retraction_reason=x.reason if x else None,
    ) for agency_id, t in sorted(report.agencies.items())]


def backlog_row(w: Waiting) -> BacklogRow:
    return BacklogRow(agency_id=w.agency_id, report_id=w.report_id, waiting=w.state,
                      priority=PRIORITIES.get(w.priority, "-"), since=_when(w.since),
                      last_sent_at=_at(w.last_sent_at), resends=w.resends)


def as_csv(model: type[BaseModel], rows: Iterable[BaseModel]) -> Iterator[str]:
    """The header, then a line a row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(model.model_fields)
    for row in rows:
        writer.writerow(_cell(v) for v in row.model_dump(mode="json").values())
        yield _drain(out)
    yield _drain(out)


def as_json(rows: Iterable[BaseModel]) -> Iterator[str]:
    """A JSON array, a row at a time."""
    yield "["
    for n, row in enumerate(rows):
        yield ("," if n else "") + row.model_dump_json()
    yield "]"


def _cell(value: object) -> object:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def _drain(out: io.StringIO) -> str:
    text = out.getvalue()
    out.seek(0)
    out.truncate()
    return text
