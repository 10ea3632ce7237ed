"""The console's read model, pure: what the event topics say about one report, and about one dead
letter. No I/O here: `services/console/store.py` keeps these in SQLite.

`Report.apply(topic, event)` takes one decoded record, in whatever order the topics are read (an
acknowledgement may come before the notice it acknowledges), and answers what happened, for the
chart and the agencies' last acknowledgement; nothing when the record told nothing new (a
redelivery, a re-sent notice). No report content is kept: ids, states, agencies, times, the
ESP's name (or "public form"), whether the public filed it, supplement labels, amended field
paths, and the retraction's actor and reason.

`Report.tallies()` says what the report adds to every counter the pages show (reports by state,
ESP, priority; per agency, referrals sent and acknowledged, corrections by class ...): the store
moves each counter by the difference before and after a change, so no page counts by scanning.
"""

import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from shared import topics
from shared.contracts import (
    AgencyNotice,
    AgencyResponse,
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

# The chart's series.
FLOW = ("accepted", "rejected", "referred", "retracted", "corrected")

# A report's state only moves forward, as its timeline's status does
# (services/intake/status.py). Whether its corrections were acknowledged or escalated is apart:
# `Report.correction()`.
STATE_RANK = {"draft": 0, "submitted": 1, "accepted": 2, "released": 3, "referred": 4,
              "closed": 5, "rejected": 7, "retracted": 8}
STATES = tuple(STATE_RANK)

# A correction's class, as counted and queued: sent and waiting, acknowledged, escalated (people
# must act), or escalated and then acknowledged late (settled).
CORRECTIONS = ("pending", "acked", "escalated", "late")
# The report's correction: its worst agency's, in this order.
_WORST = {"escalated": 4, "pending": 3, "late": 2, "acked": 1}

PRIORITIES = {0: "bulk", 1: "normal", 2: "high", 3: "imminent"}

# Who filed a report (shared.contracts.Source): a provider, or the public through the form.
SOURCES = ("esp", "public")

_intern = sys.intern


def ts(moment: datetime) -> float:
    return moment.timestamp()


class Track:
    """One agency's part in one report: what it was sent and what it said back."""

    __slots__ = (
        "amendments",
        "amendments_acked",
        "correction_acked_at",
        "correction_at",
        "escalated_at",
        "last_sent_at",
        "late",
        "outcome",
        "outcome_at",
        "referral_acked_at",
        "referral_at",
        "resends",
    )

    def __init__(self) -> None:
        self.referral_at: float | None = None
        self.referral_acked_at: float | None = None
        self.amendments = 0
        self.amendments_acked = 0
        self.correction_at: float | None = None  # first sent
        self.last_sent_at: float | None = None  # first sent, or re-sent since
        self.correction_acked_at: float | None = None
        self.resends = 0
        self.escalated_at: float | None = None
        self.late = False  # acknowledged after the escalation
        self.outcome: str | None = None
        self.outcome_at: float | None = None

    def correction(self) -> str | None:
        """The correction's class (CORRECTIONS), None when no correction is known."""
        if self.escalated_at is not None:
            return "late" if self.late else "escalated"
        if self.correction_acked_at is not None:
            return "acked"
        return "pending" if self.correction_at is not None else None

    def since(self) -> float | None:
        """When the correction entered its class."""
        kind = self.correction()
        if kind in ("escalated", "late"):
            return self.escalated_at
        return self.correction_acked_at if kind == "acked" else self.correction_at

    def correction_state(self, now: float, ack_timeout_s: float) -> str:
        """What a person reads: sent, re-sent, overdue, acknowledged, escalated ("" = none)."""
        kind = self.correction()
        if kind == "late":
            return "escalated, acknowledged late"
        if kind == "escalated":
            return "escalated"
        if kind == "acked":
            return "acknowledged"
        if kind == "pending":
            assert self.correction_at is not None
            if now - self.correction_at > ack_timeout_s:
                return f"overdue, re-sent {self.resends}x" if self.resends else "overdue"
            return f"re-sent {self.resends}x" if self.resends else "sent"
        return ""

    def referral_state(self) -> str:
        if self.referral_at is None:
            return "acknowledged" if self.referral_acked_at is not None else ""
        return "acknowledged" if self.referral_acked_at is not None else "sent"

    def dump(self) -> list[Any]:
        return [getattr(self, name) for name in Track.__slots__]

    @classmethod
    def load(cls, values: list[Any]) -> "Track":
        track = cls()
        for name, value in zip(Track.__slots__, values, strict=True):
            setattr(track, name, value)
        return track


@dataclass(frozen=True)
class Retraction:
    """Who retracted the report, why, and when (the retraction service's word)."""

    requested_by: str  # esp, analyst or system
    actor: str
    reason: str
    at: float


# What a record told, beside the report's own facts: (what, when, agency). The store counts the
# flows per minute for the chart and keeps each agency's last acknowledgement.
Happening = tuple[str, float, str | None]


class Report:
    __slots__ = ("agencies", "esp", "events", "first", "priority", "report_id", "requested",
                 "retraction", "source", "state", "supplements", "trace_id")

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
        self.supplements: list[tuple[str, str, str, float | None]] = []
        self.requested: float | None = None  # a retraction was asked for, at
        self.retraction: Retraction | None = None
        self.trace_id: str | None = None

    def track(self, agency_id: str) -> Track:
        found = self.agencies.get(agency_id)
        if found is None:
            found = self.agencies[_intern(agency_id)] = Track()
        return found

    # --- what the report is now ---------------------------------------------------------------

    def correction(self) -> str | None:
        """The worst of its agencies' corrections (CORRECTIONS), None when none was sent."""
        worst, rank = None, 0
        for track in self.agencies.values():
            kind = track.correction()
            if kind is not None and _WORST[kind] > rank:
                worst, rank = kind, _WORST[kind]
        return worst

    def waiting_since(self) -> float | None:
        """When its oldest correction still awaiting an ack was sent (None: none awaits)."""
        sent = [t.since() for t in self.agencies.values() if t.correction() == "pending"]
        return min((s for s in sent if s is not None), default=None)

    def triage_since(self) -> float | None:
        """When a report from the public was accepted, while it waits for an analyst's decision
        (released, closed, rejected, retracted: its state only moves forward); else None."""
        if self.source != "public" or self.state != "accepted":
            return None
        return next((at for at, what, _, _ in self.events if what == "accepted"), self.first)

    def retraction_state(self) -> str:
        if self.retraction is not None:
            return "retracted"
        return "retraction requested" if self.requested is not None else ""

    def tallies(self) -> Counter[str]:
        """What this report adds to each counter (keys are the store's: `state:referred`,
        `a:<agency>:referred` ...)."""
        out: Counter[str] = Counter({"reports": 1, f"state:{self.state}": 1,
                                     f"priority:{self.priority}": 1,
                                     f"source:{self.source}": 1})
        if self.triage_since() is not None:
            out["triage"] = 1
        if self.esp is not None:
            out[f"esp:{self.esp}"] = 1
        if (kind := self.correction()) is not None:
            out[f"correction:{kind}"] = 1
        for agency_id, track in self.agencies.items():
            prefix = f"a:{agency_id}:"
            out[prefix + "reports"] = 1
            if track.referral_at is not None:
                out[prefix + "referred"] = 1
                out[prefix + "referral_acked"] = int(track.referral_acked_at is not None)
            out[prefix + "amendments"] = track.amendments
            out[prefix + "amendments_acked"] = track.amendments_acked
            out[prefix + "corrections"] = int(track.correction_at is not None)
            if (kind := track.correction()) is not None:
                out[prefix + kind] = 1
            out[prefix + "outcomes"] = int(track.outcome is not None)
        return +out  # zeros left out

    # --- applying one record ------------------------------------------------------------------

    def apply(self, event: BaseModel) -> list[Happening] | None:
        """One decoded record; None when it told nothing new, else what happened (maybe [])."""
        at = moment(event)
        self.first = min(self.first, at)
        if isinstance(event, AgencyNotice):
            return self._notice(event)
        if isinstance(event, RetractReport):
            self.requested = at if self.requested is None else min(self.requested, at)
            return self._fact(at, "retraction requested", None,
                              f"{event.requested_by}: {event.actor}")
        if isinstance(event, AmendReport):
            return self._fact(at, "amendment requested", None, f"version {event.version}")
        if isinstance(event, (ReportDraftChanged, ReportSubmitted, ReportValidated,
                              ReportRejected, ReportSupplemented)):
            self._esp(event.esp_id)
        if isinstance(event, (ReportSubmitted, ReportValidated, ReportSupplemented)) and (
                event.source == "public"):
            self.source = "public"  # every event of a public report says so; read in any order
        if isinstance(event, ReportDraftChanged):
            return self._fact(at, f"draft: {event.change}", None, None)
        if isinstance(event, ReportSubmitted):
            return self._fact(at, "submitted", None, None, "submitted")
        if isinstance(event, ReportValidated):
            return self._fact(at, "accepted", None, None, "accepted", flow="accepted")
        if isinstance(event, ReportClosed):
            return self._fact(at, "closed as not actionable", None, f"by {event.analyst_id}",
                              "closed")
        if isinstance(event, InformationAdded):
            return self._fact(at, "information added by the reporter", None,
                              f"addition {event.event_id[:8]}")
        if isinstance(event, ReportRejected):
            reasons = ", ".join(sorted({r.path for r in event.reasons}))[:200]
            return self._fact(at, "rejected", None, reasons, "rejected", flow="rejected")
        if isinstance(event, ReportSupplemented):
            return self._supplemented(at, event)
        if isinstance(event, ReportReferred):
            self.priority = int(event.priority)
            for agency_id in event.agencies:
                self.track(agency_id)
            return self._fact(at, "referred", None, ", ".join(event.agencies), "referred",
                              flow="referred")
        if isinstance(event, ReportRetracted):
            self.retraction = Retraction(event.requested_by, event.actor[:200],
                                         event.reason[:500], at)
            return self._fact(at, "retracted", None, f"{event.requested_by}: {event.actor}",
                              "retracted", flow="retracted")
        if isinstance(event, NoticeAcknowledged):
            return self._acknowledged(at, event)
        if isinstance(event, NoticeResent):
            return self._resent(at, event)
        if isinstance(event, NoticeEscalated):
            return self._escalated(at, event)
        if isinstance(event, OutcomeReported):
            if self._fact(at, "outcome", event.agency_id, event.outcome) is None:
                return None
            track = self.track(event.agency_id)
            if track.outcome_at is None or at >= track.outcome_at:
                track.outcome, track.outcome_at = event.outcome, at
            return []
        return None

    def _esp(self, esp_id: str) -> None:
        if self.esp is None:
            self.esp = _intern(esp_id)

    def _fact(self, at: float, what: str, agency: str | None, detail: str | None,
              state: str | None = None, flow: str | None = None) -> list[Happening] | None:
        """One entry of the report's timeline, once; moves its state forward."""
        entry = (_intern(what), _intern(agency) if agency else None, detail)
        if any(e[1:] == entry for e in self.events):
            return None
        self.events.append((at, *entry))
        if state is not None and STATE_RANK[state] > STATE_RANK[self.state]:
            self.state = state
        return [(flow, at, None)] if flow is not None else []

    def _supplemented(self, at: float, event: ReportSupplemented) -> list[Happening] | None:
        self.priority = int(event.priority)
        detail = f"{event.jurisdiction} (rules {event.rules_version})"[:200]
        done = self._fact(at, "released for referral", None, detail, "released")
        if done is None:
            return None
        for supplement in event.supplements:
            self._supplement(supplement.model_dump(mode="json"))
        for amendment in event.amendments:
            self._fact(at, "amended before referral", None, amendment.path)
        return done

    def _supplement(self, supplement: dict[str, Any]) -> None:
        label = str(supplement.get("label") or (
            "verified" if supplement.get("verified") else "UNVERIFIED"))
        try:
            added: float | None = datetime.fromisoformat(str(supplement.get("added_at"))
                                                         ).timestamp()
        except ValueError:
            added = None
        item = (_intern(str(supplement.get("kind", "?"))), _intern(label),
                str(supplement.get("analyst_id", "?")), added)
        if item not in self.supplements:
            self.supplements.append(item)

    def _notice(self, notice: AgencyNotice) -> list[Happening] | None:
        at = ts(notice.issued_at)
        track = self.track(notice.agency_id)
        payload = notice.payload
        version = str(payload.version) if payload.kind == "amendment" else None
        done = self._fact(at, f"{notice.kind} sent", notice.agency_id, version)
        if done is None:
            return None  # the same notice again (a re-send, or a redelivery)
        if self.priority is None:
            self.priority = int(notice.priority)
        if notice.kind == "referral":
            track.referral_at = at
        elif notice.kind == "amendment":
            track.amendments += 1
            if payload.kind == "amendment" and payload.supplement is not None:
                self._supplement(payload.supplement.model_dump(mode="json"))
        else:
            track.correction_at = at
            track.last_sent_at = max(track.last_sent_at or at, at)
            done.append(("corrected", at, None))
        return done

    def _acknowledged(self, at: float, event: NoticeAcknowledged) -> list[Happening] | None:
        kind = event.kind or "referral"
        detail = event.notice_id if kind == "amendment" else None
        if self._fact(at, f"{kind} acknowledged" + (" late" if event.late else ""),
                      event.agency_id, detail) is None:
            return None
        track = self.track(event.agency_id)
        if kind == "referral":
            track.referral_acked_at = at
        elif kind == "amendment":
            track.amendments_acked += 1
        else:
            track.correction_acked_at = at
            track.late = track.late or event.late
        return [("ack", at, event.agency_id)]

    def _resent(self, at: float, event: NoticeResent) -> list[Happening] | None:
        if self._fact(at, f"{event.kind} re-sent", event.agency_id, str(event.resend)) is None:
            return None
        if event.kind == "correction":
            track = self.track(event.agency_id)
            track.resends = max(track.resends, event.resend)
            track.last_sent_at = max(track.last_sent_at or at, at)
        return []

    def _escalated(self, at: float, event: NoticeEscalated) -> list[Happening] | None:
        if self._fact(at, f"{event.kind} escalated", event.agency_id,
                      str(event.resends)) is None:
            return None
        if event.kind == "correction":
            self.track(event.agency_id).escalated_at = at
        return []

    # --- as the store keeps it ----------------------------------------------------------------

    def dump(self) -> bytes:
        retraction = self.retraction
        return json.dumps([
            self.report_id, self.esp, self.state, self.priority, self.first, self.events,
            {a: t.dump() for a, t in self.agencies.items()}, self.supplements, self.requested,
            [retraction.requested_by, retraction.actor, retraction.reason, retraction.at]
            if retraction else None, self.trace_id, self.source,
        ], separators=(",", ":")).encode()

    @classmethod
    def load(cls, doc: bytes) -> "Report":
        (report_id, esp, state, priority, first, events, agencies, supplements, requested,
         retraction, trace_id, source) = json.loads(doc)
        report = cls(report_id, first)
        report.esp = _intern(esp) if esp else None
        report.state, report.priority = state, priority
        report.events = [(at, _intern(what), _intern(agency) if agency else None, detail)
                         for at, what, agency, detail in events]
        report.agencies = {_intern(a): Track.load(t) for a, t in agencies.items()}
        report.supplements = [tuple(s) for s in supplements]  # type: ignore[misc]
        report.requested = requested
        report.retraction = Retraction(*retraction) if retraction else None
        report.trace_id = trace_id
        report.source = _intern(source)
        return report


def moment(event: BaseModel) -> float:
    """When what a record tells happened."""
    if isinstance(event, AgencyNotice):
        return ts(event.issued_at)
    if isinstance(event, (RetractReport, AmendReport)):
        return ts(event.requested_at)
    if isinstance(event, DeadLetter):
        return ts(event.failed_at)
    return ts(event.occurred_at)  # type: ignore[attr-defined]


def report_id_of(event: BaseModel) -> str | None:
    """The report a record is about (None: a dead letter)."""
    return getattr(event, "report_id", None)


@dataclass(frozen=True)
class Letter:
    """A dead letter as the console shows it: where it failed and why, never its content. A
    refused agency response (on the acks topic) names its agency."""

    failed_at: float
    service: str
    topic: str
    partition: int
    offset: int
    key: str | None
    cause: str
    agency: str | None = None


def letter_of(letter: DeadLetter) -> Letter:
    agency = None
    if letter.topic == topics.AGENCY_ACKS:  # an agency's response the retraction service refused
        try:
            agency = AgencyResponse.model_validate_json(letter.value).agency_id
        except ValueError:
            agency = None
        if agency is not None and not topics.AGENCY_ID.match(agency):
            agency = None
    return Letter(ts(letter.failed_at), letter.service, letter.topic, letter.partition,
                  letter.offset, letter.key[:200] if letter.key else None, cause(letter.error),
                  agency)


def cause(error: str) -> str:
    """A dead letter's cause as the console shows it: its first line, without any input value a
    validation error quotes (a record's content is never shown)."""
    first = error.splitlines()[0] if error else ""
    return _INPUT.sub("input_value=…", first)[:200]


def refusal(cause_text: str) -> str:
    """What an agency reads of why its response was refused: "unknown key k1" of
    "Poison: response from icac-tx refused: unknown key k1"."""
    text = _ERROR_CLASS.sub("", cause_text, count=1)
    return _REFUSED.sub("", text, count=1)


_INPUT = re.compile(r"input_value=.*?(?=, input_type=|\]|$)")
_ERROR_CLASS = re.compile(r"^[A-Za-z_][\w.]*: ")
_REFUSED = re.compile(r"^response from \S+ refused: ")


# Which model each topic the console reads carries, from the catalogue (agency topics carry
# signed AgencyNotice, read apart). Never the raw acknowledgements (only what the retraction
# service checked), nor the timeline facts (intake's: the console builds its own from these).
MODELS: dict[str, type[BaseModel]] = {
    t.name: t.model for t in topics.read_by("console") if t.prefix is None}
