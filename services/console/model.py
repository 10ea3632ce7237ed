"""The console's read model: what the event topics say, kept small, answered without I/O.

Everything here is pure: `ReadModel.apply(topic, event)` takes one decoded record (whatever
order the topics are read in: an acknowledgement may come before the notice it acknowledges)
and the page functions read the result. No report content is kept: ids, states, agencies, times,
the ESP's name, supplement labels and amended field paths.

Sizes: a report is one `Report` (slots) with a short list of `(time, what, agency, detail)`
tuples and one `Track` (slots) per agency; per-agency counters move when a track's correction
changes class, so a page never scans every report; the chart counts per minute.
"""

import re
import sys
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from shared import topics
from shared.contracts import (
    AgencyNotice,
    AmendReport,
    DeadLetter,
    InformationAdded,
    NoticeAcknowledged,
    NoticeEscalated,
    NoticeResent,
    OutcomeReported,
    ReportClosed,
    ReportDraftChanged,
    ReportReferred,
    ReportRejected,
    ReportRetracted,
    ReportSubmitted,
    ReportSupplemented,
    ReportValidated,
    RetractReport,
)

# The chart's series, in the order each minute's counts are kept.
FLOW = ("accepted", "rejected", "referred", "retracted", "corrected")
CHART_KEEP_S = 2 * 3600  # minutes older than this are not counted (the chart shows one hour)

# A report's state only moves forward, as its timeline's status does (services/intake/timeline.py).
STATE_RANK = {"draft": 0, "submitted": 1, "accepted": 2, "released": 3, "referred": 4,
              "closed": 5, "rejected": 7, "retracted": 8, "escalated": 9}

_intern = sys.intern


def ts(moment: datetime) -> float:
    return moment.timestamp()


class Track:
    """One agency's part in one report: what it was sent and what it said back."""

    __slots__ = (
        "amendments",
        "amendments_acked",
        "correction_acked",
        "correction_at",
        "escalated",
        "late",
        "outcome",
        "referral_acked",
        "referral_at",
        "resends",
    )

    def __init__(self) -> None:
        self.referral_at: float | None = None
        self.referral_acked = False
        self.amendments = 0
        self.amendments_acked = 0
        self.correction_at: float | None = None
        self.correction_acked = False
        self.resends = 0
        self.escalated = False
        self.late = False  # acknowledged after the escalation
        self.outcome: str | None = None

    def correction_class(self) -> str | None:
        """None (no correction known), pending, acked or escalated."""
        if self.escalated:
            return "escalated"
        if self.correction_acked:
            return "acked"
        return "pending" if self.correction_at is not None else None

    def correction_state(self, now: float, ack_timeout_s: float) -> str:
        """What a person reads: sent, re-sent, overdue, acknowledged, escalated ("" = none)."""
        kind = self.correction_class()
        if kind == "escalated":
            return "escalated, acknowledged late" if self.late else "escalated"
        if kind == "acked":
            return "acknowledged"
        if kind == "pending":
            assert self.correction_at is not None
            if now - self.correction_at > ack_timeout_s:
                return f"overdue, re-sent {self.resends}x" if self.resends else "overdue"
            return f"re-sent {self.resends}x" if self.resends else "sent"
        return ""


class Report:
    __slots__ = ("agencies", "esp", "events", "first", "priority", "report_id", "source",
                 "state", "supplements")

    def __init__(self, report_id: str, at: float) -> None:
        self.report_id = report_id
        self.esp: str | None = None
        self.source = "esp"  # or "public": filed through the public form
        self.state = "draft"
        self.priority: int | None = None
        self.first = at
        self.events: list[tuple[float, str, str | None, str | None]] = []
        self.agencies: dict[str, Track] = {}
        # (kind, label, analyst, added at): label "verified" or "UNVERIFIED"
        self.supplements: list[tuple[str, str, str, str]] = []

    def track(self, agency_id: str) -> Track:
        found = self.agencies.get(agency_id)
        if found is None:
            found = self.agencies[_intern(agency_id)] = Track()
        return found


@dataclass
class AgencyStats:
    """Counters of one agency, moved as its reports' tracks change."""

    sent: Counter[str] = field(default_factory=Counter)  # notices by kind
    corrections: int = 0  # corrections known to have been sent
    acked: int = 0
    escalated: int = 0
    pending: dict[str, float] = field(default_factory=dict)  # report -> correction sent at
    escalations: list[str] = field(default_factory=list)  # report ids, in order
    outcomes: list[tuple[float, str, str]] = field(default_factory=list)  # (at, report, outcome)
    reports: list[str] = field(default_factory=list)  # reports referred to it, in order

    def overdue(self, now: float, ack_timeout_s: float) -> int:
        return sum(1 for at in self.pending.values() if now - at > ack_timeout_s)


@dataclass(frozen=True)
class Letter:
    failed_at: float
    service: str
    topic: str
    partition: int
    offset: int
    key: str | None
    error: str


@dataclass
class ReadModel:
    """Every report, agency and dead letter the topics told of; `version` moves on each change."""

    ack_timeout_s: float = 300.0
    reports: dict[str, Report] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # report ids, in the order first seen
    by_esp: dict[str, list[str]] = field(default_factory=dict)
    # Reports from the public accepted and waiting for an analyst's decision: id -> since.
    triage: dict[str, float] = field(default_factory=dict)
    agencies: dict[str, AgencyStats] = field(default_factory=dict)
    minutes: dict[int, list[int]] = field(default_factory=dict)  # minute -> counts of FLOW
    newest_minute: int = 0
    totals: Counter[str] = field(default_factory=Counter)
    letters: Counter[tuple[str, str]] = field(default_factory=Counter)  # (service, topic)
    recent_letters: deque[Letter] = field(default_factory=lambda: deque(maxlen=50))
    lettered: set[tuple[str, int, int]] = field(default_factory=set)  # by the console
    events: int = 0
    version: int = 0
    lag: dict[str, dict[str, int]] = field(default_factory=dict)  # service -> group:topic -> n
    lag_error: str | None = None
    caught_up: bool = False

    # --- applying one record ---------------------------------------------------------------

    def apply(self, topic: str, event: BaseModel) -> bool:
        """One decoded record of `topic`; False when it told nothing new (a redelivery)."""
        self.events += 1
        changed = self._apply(topic, event)
        if changed:
            self.version += 1
            self._triaged(getattr(event, "report_id", None))
        return changed

    def _triaged(self, report_id: str | None) -> None:
        """A public report waits for triage while it is accepted and nothing came of it yet
        (released, closed, rejected, retracted: its state only moves forward)."""
        report = self.reports.get(report_id) if report_id else None
        if report is None:
            return
        if report.source == "public" and report.state == "accepted":
            self.triage.setdefault(report.report_id, next(
                (at for at, what, _, _ in report.events if what == "accepted"), report.first))
        else:
            self.triage.pop(report.report_id, None)

    def _apply(self, topic: str, event: Any) -> bool:
        if isinstance(event, AgencyNotice):
            return self._notice(event)
        if isinstance(event, DeadLetter):
            return self._letter(event)
        if isinstance(event, RetractReport):
            report = self.report(event.report_id, ts(event.requested_at))
            return self._fact(report, ts(event.requested_at), "retraction requested", None,
                              event.requested_by)
        if isinstance(event, AmendReport):
            report = self.report(event.report_id, ts(event.requested_at))
            return self._fact(report, ts(event.requested_at), "amendment requested", None,
                              f"version {event.version}")
        at = ts(event.occurred_at)
        report = self.report(event.report_id, at)
        if isinstance(event, ReportDraftChanged):
            self._esp(report, event.esp_id)
            return self._fact(report, at, f"draft: {event.change}", None, None)
        if isinstance(event, ReportSubmitted):
            self._esp(report, event.esp_id)
            report.source = event.source
            return self._fact(report, at, "submitted", None, None, "submitted")
        if isinstance(event, ReportValidated):
            self._esp(report, event.esp_id)
            report.source = event.source
            return self._fact(report, at, "accepted", None, None, "accepted", flow="accepted")
        if isinstance(event, ReportClosed):
            return self._fact(report, at, "closed as not actionable", None,
                              f"by {event.analyst_id}", "closed")
        if isinstance(event, InformationAdded):
            return self._fact(report, at, "information added by the reporter", None,
                              f"addition {event.event_id[:8]}")
        if isinstance(event, ReportRejected):
            self._esp(report, event.esp_id)
            reasons = ", ".join(sorted({r.path for r in event.reasons}))[:200]
            return self._fact(report, at, "rejected", None, reasons, "rejected", flow="rejected")
        if isinstance(event, ReportSupplemented):
            return self._supplemented(report, at, event)
        if isinstance(event, ReportReferred):
            report.priority = int(event.priority)
            for agency_id in event.agencies:
                report.track(agency_id)
            return self._fact(report, at, "referred", None, ", ".join(event.agencies),
                              "referred", flow="referred")
        if isinstance(event, ReportRetracted):
            return self._fact(report, at, "retracted", None, event.requested_by, "retracted",
                              flow="retracted")
        if isinstance(event, NoticeAcknowledged):
            return self._acknowledged(report, at, event)
        if isinstance(event, NoticeResent):
            return self._resent(report, at, event)
        if isinstance(event, NoticeEscalated):
            return self._escalated(report, at, event)
        if isinstance(event, OutcomeReported):
            if not self._fact(report, at, "outcome", event.agency_id, event.outcome):
                return False
            report.track(event.agency_id).outcome = event.outcome
            self.agency(event.agency_id).outcomes.append((at, report.report_id, event.outcome))
            return True
        return False

    def report(self, report_id: str, at: float) -> Report:
        found = self.reports.get(report_id)
        if found is None:
            found = self.reports[report_id] = Report(report_id, at)
            self.order.append(report_id)
        elif at < found.first:
            found.first = at
        return found

    def agency(self, agency_id: str) -> AgencyStats:
        found = self.agencies.get(agency_id)
        if found is None:
            found = self.agencies[_intern(agency_id)] = AgencyStats()
        return found

    def _esp(self, report: Report, esp_id: str) -> None:
        if report.esp is None:
            report.esp = _intern(esp_id)
            self.by_esp.setdefault(report.esp, []).append(report.report_id)

    def _fact(self, report: Report, at: float, what: str, agency: str | None,
              detail: str | None, state: str | None = None, flow: str | None = None) -> bool:
        """One entry of the report's timeline, once; moves its state forward."""
        entry = (_intern(what), _intern(agency) if agency else None, detail)
        if any(e[1:] == entry for e in report.events):
            return False
        report.events.append((at, *entry))
        if state is not None and STATE_RANK[state] > STATE_RANK[report.state]:
            report.state = state
        if flow is not None:
            self._count(flow, at)
        return True

    def _count(self, flow: str, at: float) -> None:
        self.totals[flow] += 1
        minute, keep = int(at // 60), CHART_KEEP_S // 60
        if minute < self.newest_minute - keep:
            return
        counts = self.minutes.get(minute)
        if counts is None:
            counts = self.minutes[minute] = [0] * len(FLOW)
            if minute > self.newest_minute:  # forget what the chart no longer shows
                self.newest_minute = minute
                for old in [m for m in self.minutes if m < minute - keep]:
                    del self.minutes[old]
        counts[FLOW.index(flow)] += 1

    def _supplemented(self, report: Report, at: float, event: ReportSupplemented) -> bool:
        self._esp(report, event.esp_id)
        report.priority = int(event.priority)
        detail = f"{event.jurisdiction} (rules {event.rules_version})"[:200]
        if not self._fact(report, at, "released for referral", None, detail, "released"):
            return False
        for supplement in event.supplements:
            self._supplement(report, supplement.model_dump(mode="json"))
        for amendment in event.amendments:
            self._fact(report, at, "amended before referral", None, amendment.path)
        return True

    def _supplement(self, report: Report, supplement: dict[str, Any]) -> None:
        label = str(supplement.get("label") or (
            "verified" if supplement.get("verified") else "UNVERIFIED"))
        item = (_intern(str(supplement.get("kind", "?"))), _intern(label),
                str(supplement.get("analyst_id", "?")), str(supplement.get("added_at", "")))
        if item not in report.supplements:
            report.supplements.append(item)

    def _notice(self, notice: AgencyNotice) -> bool:
        at = ts(notice.issued_at)
        report = self.report(notice.report_id, at)
        track = report.track(notice.agency_id)
        stats = self.agency(notice.agency_id)
        version = str(notice.payload.get("version", "")) if notice.kind == "amendment" else None
        if not self._fact(report, at, f"{notice.kind} sent", notice.agency_id, version):
            return False  # the same notice again (a re-send, or a redelivery)
        stats.sent[notice.kind] += 1
        if notice.kind == "referral":
            track.referral_at = at
            stats.reports.append(report.report_id)
        elif notice.kind == "amendment":
            track.amendments += 1
            if isinstance(notice.payload.get("supplement"), dict):
                self._supplement(report, notice.payload["supplement"])
        else:
            before = track.correction_class()
            track.correction_at = at
            stats.corrections += 1
            self._count("corrected", at)
            self._moved(report.report_id, track, stats, before)
        return True

    def _acknowledged(self, report: Report, at: float, event: NoticeAcknowledged) -> bool:
        kind = event.kind or "referral"
        detail = event.notice_id if kind == "amendment" else None
        if not self._fact(report, at, f"{kind} acknowledged" + (" late" if event.late else ""),
                          event.agency_id, detail):
            return False
        track, stats = report.track(event.agency_id), self.agency(event.agency_id)
        if kind == "referral":
            track.referral_acked = True
        elif kind == "amendment":
            track.amendments_acked += 1
        else:
            before = track.correction_class()
            track.correction_acked = True
            track.late = track.late or event.late
            self._moved(report.report_id, track, stats, before)
        return True

    def _resent(self, report: Report, at: float, event: NoticeResent) -> bool:
        if not self._fact(report, at, f"{event.kind} re-sent", event.agency_id,
                          str(event.resend)):
            return False
        track = report.track(event.agency_id)
        if event.kind == "correction":
            track.resends = max(track.resends, event.resend)
        return True

    def _escalated(self, report: Report, at: float, event: NoticeEscalated) -> bool:
        if not self._fact(report, at, f"{event.kind} escalated", event.agency_id,
                          str(event.resends), "escalated"):
            return False
        if event.kind == "correction":
            track, stats = report.track(event.agency_id), self.agency(event.agency_id)
            before = track.correction_class()
            track.escalated = True
            stats.escalations.append(report.report_id)
            self._moved(report.report_id, track, stats, before)
        return True

    @staticmethod
    def _moved(report_id: str, track: Track, stats: AgencyStats, before: str | None) -> None:
        """Keep the agency's counters in step with one track's correction class."""
        after = track.correction_class()
        if after == before:
            return
        for kind, step in ((before, -1), (after, 1)):
            if kind == "acked":
                stats.acked += step
            elif kind == "escalated":
                stats.escalated += step
        if after == "pending":
            assert track.correction_at is not None
            stats.pending[report_id] = track.correction_at
        else:
            stats.pending.pop(report_id, None)

    def _letter(self, letter: DeadLetter) -> bool:
        self.letters[(letter.service, letter.topic)] += 1
        self.recent_letters.appendleft(Letter(
            ts(letter.failed_at), letter.service, letter.topic, letter.partition, letter.offset,
            letter.key, cause(letter.error)))
        if letter.service == "console":
            self.lettered.add((letter.topic, letter.partition, letter.offset))
        return True

    # --- reading ---------------------------------------------------------------------------

    def chart(self, now: float, minutes: int = 60) -> list[tuple[int, list[int]]]:
        """(minute, counts of FLOW) for each of the last `minutes` minutes, oldest first."""
        last = int(now // 60)
        empty = [0] * len(FLOW)
        return [(m, self.minutes.get(m, empty)) for m in range(last - minutes + 1, last + 1)]

    def newest(self, ids: list[str], page: int, size: int) -> tuple[list[Report], int]:
        """Page `page` (from 1) of `ids` newest first, and the number of pages."""
        pages = max(1, -(-len(ids) // size))
        end = len(ids) - (page - 1) * size
        chosen = ids[max(0, end - size):max(0, end)]
        return [self.reports[r] for r in reversed(chosen)], pages

    def find(self, text: str, limit: int = 50) -> list[Report]:
        """Reports whose id is `text`, or else starts with it."""
        text = text.strip()
        if not text:
            return []
        if text in self.reports:
            return [self.reports[text]]
        return [self.reports[r] for r in _take(
            (r for r in self.order if r.startswith(text)), limit)]


def cause(error: str) -> str:
    """A dead letter's cause as the console shows it: its first line, without any input value a
    validation error quotes (a record's content is never shown)."""
    first = error.splitlines()[0] if error else ""
    return _INPUT.sub("input_value=…", first)[:200]


_INPUT = re.compile(r"input_value=.*?(?=, input_type=|\]|$)")


def _take(items: Iterator[str], limit: int) -> list[str]:
    out = []
    for item in items:
        out.append(item)
        if len(out) >= limit:
            break
    return out


# Which model each topic carries (agency topics carry signed AgencyNotice).
MODELS: dict[str, type[BaseModel]] = {
    topics.REPORTS_DRAFTS: ReportDraftChanged,
    topics.REPORTS_SUBMITTED: ReportSubmitted,
    topics.REPORTS_VALIDATED: ReportValidated,
    topics.REPORTS_REJECTED: ReportRejected,
    topics.REPORTS_SUPPLEMENTED: ReportSupplemented,
    topics.REPORTS_SUPPLEMENTED_URGENT: ReportSupplemented,
    topics.REPORTS_SUPPLEMENTED_BULK: ReportSupplemented,
    topics.REPORTS_REFERRED: ReportReferred,
    topics.RETRACTIONS_REQUESTED: RetractReport,
    topics.AMENDMENTS_REQUESTED: AmendReport,
    topics.REPORTS_RETRACTED: ReportRetracted,
    topics.REPORTS_ADDITIONS: InformationAdded,
    topics.REPORTS_CLOSED: ReportClosed,
    topics.NOTICES_ACKNOWLEDGED: NoticeAcknowledged,
    topics.NOTICES_RESENT: NoticeResent,
    topics.NOTICES_ESCALATED: NoticeEscalated,
    topics.REPORTS_OUTCOMES: OutcomeReported,
    topics.DEAD_LETTERS: DeadLetter,
    topics.DEAD_LETTERS_INTAKE: DeadLetter,
}
# Never the raw acknowledgements: only what the retraction service checked (tipline/access.py).
assert topics.AGENCY_ACKS not in MODELS
# Nor the timeline facts: they are intake's; the console builds its own from the events above.
assert topics.REPORT_FACTS not in MODELS
