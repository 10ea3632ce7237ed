"""Need to know: what each audience may learn of a report, in one place. Pure.

- **ESP**, the provider that filed the report (intake's `/ispws` and `/v1` status and timeline):
  its own submission, and the states NCMEC shows a provider: received, rejected (with the
  reasons, about its own document), available to law enforcement, retracted. Nothing of
  analysts, sources, amendments, agencies or outcomes: NCMEC never tells a provider where a
  report went or what came of it (a provider that learns "suspect arrested" can tip off its
  user).
- **Agency**: the notices addressed to it (`AGENCY_SEES`: referral, amendments, correction),
  never another agency's name or answer; it may acknowledge and report outcomes only on reports
  the notification ledger says it received (services/notification/acks.py).
- **Analyst** and **operator**: tipline's staff, on the console and the analyst API: every fact;
  an operator changes nothing.
- **Public reporter**, someone who filed through the public form (intake's `/report`), with no
  login: the receipt (`PUBLIC_REPORTER_SEES`: the report number, when it was received, and the
  secret code once), and with that receipt they may add information. Nothing of what tipline or
  any agency did with the report: the person filing may be the one it is about.
- **A public reporter's contact details** (`sees_contact`): analysts, to follow the report up;
  an agency only once an analyst marks them shareable (then they travel as a supplement of kind
  `reporter_contact`); nobody else, not operators, and never a log line.

The ESP's timeline is made of facts (`shared.contracts.Fact`), each of a `Kind` that every
service records in its own words. `ESP_SEES` says, for every kind, what the ESP is told of it:
nothing, or the fact under the ESP's own word with some of its fields. A fact leaves the service
that learned it for intake (which faces the internet and keeps only the ESP's view) in the ESP's
form or not at all (`for_esp`, in shared/facts.py), and intake shows an entry only as this table
lets it (`esp_entry`), so what was recorded before this table existed is shown by it too.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from shared.contracts import Fact, NoticeKind, SupplementKind, derived_id


class Status(StrEnum):
    """The status a fact may bring to its report's timeline (how it moves:
    services/intake/status.py)."""

    SUBMITTED = "submitted"
    VALIDATED = "validated"
    HELD = "held"
    SUPPLEMENTED = "supplemented"
    REFERRED = "referred"
    REJECTED = "rejected"
    RETRACTED = "retracted"
    CORRECTION_ESCALATED = "correction_escalated"


class Audience(StrEnum):
    ESP = "esp"
    AGENCY = "agency"
    ANALYST = "analyst"
    OPERATOR = "operator"
    PUBLIC_REPORTER = "public reporter"


class Kind(StrEnum):
    """Every kind of fact a report's timeline may be told, by the service that learns it."""

    # intake: the ESP's own steps
    OPENED = "opened"
    FILE_UPLOADED = "file uploaded"
    FILE_DESCRIBED = "file described"
    SUBMITTED = "submitted"
    FINISHED = "finished"
    RETRACTION_REQUESTED = "retraction requested"
    ABANDONED = "abandoned"
    INFORMATION_ADDED = "information added by the reporter"  # the public form's receipt
    # validation
    VALIDATED = "validated"
    REJECTED = "rejected"
    DUPLICATE_CONTENT = "duplicate content across reports"  # both reports the same ESP's
    DUPLICATE_CONTENT_ELSEWHERE = "duplicate content in another ESP's report"
    SUPERSEDES = "supersedes"
    SUPERSEDED = "superseded"
    # supplementation
    AWAITS_RELEASE = "validated report waits for the analyst's release"
    HELD = "held by analyst"
    RELEASED = "released by analyst"
    SUPPLEMENTED = "supplemented"
    SUPPLEMENT_ADDED = "supplement added"
    AMENDED = "amended by analyst"
    CLOSED = "closed as not actionable"
    # referral
    REFERRAL_DELIVERED = "referral delivered"
    REFERRAL_WITHHELD = "referral withheld"
    AMENDMENT_DELIVERED = "amendment delivered"
    AMENDMENT_WITHHELD = "amendment withheld"
    # retraction
    RETRACTED = "retracted"
    CORRECTION_DELIVERED = "correction delivered"
    ACKNOWLEDGED = "acknowledged"
    AGENCY_OUTCOME = "agency outcome"
    CORRECTION_RESENT = "correction re-sent"
    AMENDMENT_RESENT = "amendment re-sent"
    CORRECTION_ESCALATED = "correction escalated"
    AMENDMENT_ESCALATED = "amendment escalated"
    # what the ESP is told instead, in NCMEC's words
    AVAILABLE = "available to law enforcement"
    NOT_AVAILABLE = "not made available to law enforcement"


def resent_of(kind: NoticeKind) -> Kind:
    return Kind(f"{kind} re-sent")


def escalated_of(kind: NoticeKind) -> Kind:
    return Kind(f"{kind} escalated")


@dataclass(frozen=True)
class Shown:
    """What the ESP is told of a fact: these fields of its detail, under `told_as` (else its
    own kind); `once`: one entry a report however many such facts there are (how many agencies
    received it is not the ESP's to count)."""

    fields: frozenset[str] = frozenset()
    told_as: Kind | None = None
    once: bool = False


def _fields(*names: str) -> frozenset[str]:
    return frozenset(names)


_FILE = _fields("file_id", "sha256", "md5", "size", "original_name", "relevance",
                "duplicate_of")

# For every kind: what the ESP is told of it (None: nothing).
ESP_SEES: Mapping[Kind, Shown | None] = MappingProxyType({
    Kind.OPENED: Shown(_fields("supersedes", "via")),
    Kind.FILE_UPLOADED: Shown(_FILE),
    Kind.FILE_DESCRIBED: Shown(_FILE),
    Kind.SUBMITTED: Shown(_fields("via", "supersedes")),
    Kind.FINISHED: Shown(_fields("files")),
    Kind.RETRACTION_REQUESTED: Shown(_fields("by", "post_finish", "reason")),
    Kind.ABANDONED: Shown(_fields("by", "reason")),
    Kind.INFORMATION_ADDED: None,  # a public reporter's: a public report has no ESP
    Kind.VALIDATED: None,  # NCMEC's work: the provider sees "received"
    Kind.REJECTED: Shown(_fields("reasons")),  # about its own document
    Kind.DUPLICATE_CONTENT: Shown(_fields("file_id", "sha256", "other_report")),
    Kind.DUPLICATE_CONTENT_ELSEWHERE: None,  # another ESP's report
    Kind.SUPERSEDES: Shown(_fields("report")),
    Kind.SUPERSEDED: Shown(_fields("by_report")),
    Kind.AWAITS_RELEASE: None,  # analysts
    Kind.HELD: None,
    Kind.RELEASED: None,
    Kind.SUPPLEMENTED: None,  # agencies, jurisdiction, priority
    Kind.SUPPLEMENT_ADDED: None,  # analysts, sources
    Kind.AMENDED: None,  # analysts, reasons
    Kind.CLOSED: None,  # what came of it
    Kind.REFERRAL_DELIVERED: Shown(told_as=Kind.AVAILABLE, once=True),  # to whom: agencies'
    Kind.REFERRAL_WITHHELD: Shown(told_as=Kind.NOT_AVAILABLE, once=True),
    Kind.AMENDMENT_DELIVERED: None,
    Kind.AMENDMENT_WITHHELD: None,
    Kind.RETRACTED: Shown(),  # who asked, and why, only as its own request says
    Kind.CORRECTION_DELIVERED: None,
    Kind.ACKNOWLEDGED: None,
    Kind.AGENCY_OUTCOME: None,  # what came of it: never the provider's
    Kind.CORRECTION_RESENT: None,
    Kind.AMENDMENT_RESENT: None,
    Kind.CORRECTION_ESCALATED: None,
    Kind.AMENDMENT_ESCALATED: None,
    Kind.AVAILABLE: Shown(once=True),
    Kind.NOT_AVAILABLE: Shown(once=True),
})
assert set(ESP_SEES) == set(Kind), "every kind of fact says what the ESP sees of it"


class EspStatus(StrEnum):
    """A report's status as the ESP is told it."""

    OPEN = "open"  # opened on /ispws, not finished
    RECEIVED = "received"
    REJECTED = "rejected"
    AVAILABLE = "available_to_law_enforcement"
    RETRACTED = "retracted"


ESP_STATUS: Mapping[Status, EspStatus] = MappingProxyType({
    Status.SUBMITTED: EspStatus.RECEIVED,
    Status.VALIDATED: EspStatus.RECEIVED,
    Status.HELD: EspStatus.RECEIVED,
    Status.SUPPLEMENTED: EspStatus.RECEIVED,
    Status.REFERRED: EspStatus.AVAILABLE,
    Status.REJECTED: EspStatus.REJECTED,
    Status.RETRACTED: EspStatus.RETRACTED,
    Status.CORRECTION_ESCALATED: EspStatus.RETRACTED,  # the escalation is tipline's to chase
})
assert set(ESP_STATUS) == set(Status), "every status says what the ESP is told"

# What an agency finds in a notice's payload, by kind: the report as referred (the ESP's
# original, each file's viewed-by-ESP and classification, the analysts' supplements and
# amendments beside it), what changed, what was
# retracted. Never another agency's name or answer.
AGENCY_SEES: Mapping[NoticeKind, frozenset[str]] = MappingProxyType({
    "referral": _fields("kind", "esp_id", "source", "report", "files", "jurisdiction",
                        "rules_version", "supplements", "amendments", "amended_report"),
    "amendment": _fields("kind", "version", "amends_notice_id", "supplement", "amendment"),
    "correction": _fields("kind", "action", "corrects_notice_id", "reason", "requested_by",
                          "retracted_at"),
})


# What a public reporter is shown of their report: its number and when it was received (the
# receipt adds the secret code, once), and when each addition was.
PUBLIC_REPORTER_SEES = _fields("report_id", "received_at")

# A public reporter's contact details reach an agency as a supplement of this kind, and only so.
CONTACT_SUPPLEMENT: SupplementKind = "reporter_contact"


def sees_contact(audience: Audience, *, shareable: bool = False) -> bool:
    """Whether `audience` may see a public reporter's contact details; `shareable`: an analyst
    marked them so (for agencies)."""
    return audience is Audience.ANALYST or (audience is Audience.AGENCY and shareable)


def _shown(what: str) -> Shown | None:
    try:
        return ESP_SEES[Kind(what)]
    except ValueError:
        return None  # a kind this table does not know: nothing


def for_esp(report_id: str, fact: Fact) -> Fact | None:
    """The fact as the ESP is told it, or None when it is told nothing of it."""
    shown = _shown(fact.what)
    if shown is None:
        return None
    what = shown.told_as or Kind(fact.what)
    return Fact(derived_id(report_id, "esp", what) if shown.once else fact.event_id, what,
                fact.status, {k: v for k, v in fact.detail.items() if k in shown.fields})


def esp_timeline(entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Timeline entries ({"at", "what", ...its fields}, in order) as the ESP may see them. What
    was recorded before this table is shown by it too: a kind told once, once; what one ESP may
    not learn of another's report was marked `esp_visible: false` then."""
    out, told = [], set()
    for entry in entries:
        shown = _shown(str(entry.get("what")))
        if shown is None or entry.get("esp_visible", True) is False:
            continue
        what = shown.told_as or Kind(entry["what"])
        if shown.once and what in told:
            continue
        told.add(what)
        out.append({"at": entry["at"], "what": str(what),
                    **{k: v for k, v in entry.items() if k in shown.fields}})
    return out


def esp_status(status: str | None, open_draft: bool) -> EspStatus:
    """The status the ESP is told, from the one the timeline keeps (None: nothing recorded)."""
    if status is None:
        return EspStatus.OPEN if open_draft else EspStatus.RECEIVED
    return ESP_STATUS[Status(status)]
