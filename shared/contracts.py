"""The event contracts every service shares.

Commands are asks (RetractReport); events are facts in the past tense (ReportSubmitted).
Every event id is derived from what it is about, so a redelivery carries the same id and
consumers can recognise it.
"""

import hashlib
import uuid
from dataclasses import field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    model_validator,
)
from pydantic.dataclasses import dataclass

_NAMESPACE = uuid.UUID("6f1c1a52-54b6-4c39-9d6f-3b0f4c1d2e7a")


def derived_id(*parts: str) -> str:
    """A stable id for the thing named by `parts` (the same on every redelivery): exactly
    `str(uuid.uuid5(_NAMESPACE, "|".join(parts)))`, without building a UUID object (a few ids a
    record: uuid5 was 5% of referral's CPU)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE.bytes + "|".join(parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def now() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# --- The report as an ESP files it -------------------------------------------------------


class Location(Message):
    country: str | None = None
    us_state: str | None = None
    ip_address: str | None = None
    place: str | None = None  # a town or place, in the reporter's words (the public form)


class ReportedUser(Message):
    screen_name: str | None = None
    esp_identifier: str | None = None
    email: str | None = None
    ip_address: str | None = None


class FileInfo(Message):
    file_id: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    original_name: str | None = None
    relevance: str = "Reported"
    duplicate_of: str | None = None
    details: dict[str, JsonValue] = Field(default_factory=dict)  # a <fileDetails> as data


class Report(Message):
    """An ESP's report. Fields are optional here: the validation rules say what is required."""

    incident_type: str | None = None
    incident_at: AwareDatetime | None = None
    platform: str | None = None
    escalate_to_high_priority: str | None = None
    child_in_imminent_danger: bool = False
    reporter_email: str | None = None
    reported_users: list[ReportedUser] = Field(default_factory=list)
    location: Location = Field(default_factory=Location)
    files: list[FileInfo] = Field(default_factory=list)
    additional_info: str | None = None
    urls: list[str] = Field(default_factory=list)  # web addresses where it happened
    extra: dict[str, JsonValue] = Field(default_factory=dict)  # the ISPWS document, as data


# Who filed a report: a provider through its login (/ispws, /v1), or a member of the public
# through the form (/report), with no login. Set by intake, the door it came in by.
Source = Literal["esp", "public"]
# The `esp_id` a public report travels with: no ESP's name (they have no spaces), so no ESP
# login ever owns one.
PUBLIC_FORM = "public form"


class ReporterContact(Message):
    """A public reporter's name and contact details, given only if they chose to. Analysts see
    them; an agency only once an analyst marks them shareable (shared/audiences.py)."""

    name: str | None = None
    email: str | None = None
    phone: str | None = None


class FieldError(Message):
    """One reason a report was refused, tied to the element it concerns."""

    path: str
    reason: str
    line: int | None = None
    column: int | None = None


class Priority(IntEnum):
    BULK = 0
    NORMAL = 1
    HIGH = 2
    IMMINENT = 3


# --- Events ------------------------------------------------------------------------------


class Event(Message):
    event_id: str
    report_id: str
    occurred_at: datetime = Field(default_factory=now)


class ReportSubmitted(Event):
    esp_id: str
    report: Report
    supersedes: str | None = None
    source: Source = "esp"
    contact: ReporterContact | None = None  # a public report's, kept apart from the report


class ReportValidated(Event):
    esp_id: str
    report: Report
    supersedes: str | None = None
    source: Source = "esp"
    contact: ReporterContact | None = None


class ReportRejected(Event):
    esp_id: str
    reasons: list[FieldError]


SupplementKind = Literal["geolocation", "open_source", "related_report", "note",
                         "reporter_contact"]


class Supplement(Message):
    """An analyst's addition to a report, with its provenance."""

    supplement_id: str
    kind: SupplementKind
    content: dict[str, JsonValue] | str
    source: str = Field(min_length=1, max_length=500)
    verified: bool
    analyst_id: str
    added_at: AwareDatetime


class Amendment(Message):
    """An analyst's change to one field of a report; the ESP's value is kept beside it."""

    amendment_id: str
    path: str
    value: JsonValue
    previous: JsonValue = None
    reason: str = Field(min_length=1, max_length=3000)
    analyst_id: str
    amended_at: AwareDatetime


class ReportSupplemented(Event):
    esp_id: str
    report: Report
    agencies: list[str]
    priority: Priority
    jurisdiction: str
    rules_version: str
    supplements: list[Supplement] = Field(default_factory=list)
    # Analyst amendments made before referral; `report` stays the ESP's original.
    amendments: list[Amendment] = Field(default_factory=list)
    source: Source = "esp"


class InformationAdded(Event):
    """A public reporter added to their report, with its receipt code (intake checked it). An
    analyst reads it in the case file; it reaches no agency unless an analyst adds it."""

    text: str = Field(min_length=1, max_length=3000)


class ReportClosed(Event):
    """An analyst closed a held report as not actionable: it is never referred, and kept."""

    analyst_id: str
    reason: str = Field(min_length=1, max_length=3000)


class ReportReferred(Event):
    agencies: list[str]
    priority: Priority = Priority.NORMAL


Retractor = Literal["esp", "analyst", "system"]


class RetractReport(Message):
    """A command: retract this report, whoever asks (ESP, analyst, or the abandonment timer)."""

    command_id: str
    report_id: str
    requested_by: Retractor
    actor: str
    reason: str
    requested_at: datetime = Field(default_factory=now)


class ReportRetracted(Event):
    requested_by: Retractor
    actor: str
    reason: str
    corrected_agencies: list[str]


class Change(Message):
    """One change to a report after its referral: a new supplement, or one amended field."""

    supplement: Supplement | None = None
    amendment: Amendment | None = None

    @model_validator(mode="after")
    def _one(self) -> "Change":
        if (self.supplement is None) == (self.amendment is None):
            raise ValueError("a change is one supplement or one amendment")
        return self


class AmendReport(Message):
    """A command: send version `version` of a referred report's changes to every agency that
    received its referral (the analyst API asks; the referral service owns who received it)."""

    command_id: str
    report_id: str
    version: int = Field(ge=1)
    change: Change
    priority: Priority
    requested_at: datetime = Field(default_factory=now)


@dataclass(frozen=True)
class Fact:
    """One entry of a report's timeline, recorded once under its event id."""

    event_id: str
    what: str
    status: str | None = None  # moves the report's status forward (services/intake/status.py)
    detail: dict[str, JsonValue] = field(default_factory=dict)


class TimelineFacts(Message):
    """What a service learned about reports (a batch's worth), for their timelines: intake keeps
    the timeline (the ESP's status view) and records each fact once, by its event id."""

    event_id: str
    facts: dict[str, list[Fact]] = Field(default_factory=dict)  # report id -> its facts
    # Report fields to set (supersession), by report id.
    fields: dict[str, dict[str, str]] = Field(default_factory=dict)
    occurred_at: datetime = Field(default_factory=now)


NoticeKind = Literal["referral", "correction", "amendment"]


class ReferredFile(Message):
    """One file of a referred report, as an agency needs it first: which files no person at the
    ESP looked at (`fileViewedByEsp` false; None: the ESP did not say), and the industry's
    classification of each. The names are the CyberTipline's (ISPWS <fileDetails>)."""

    file_id: str
    sha256: str | None = None
    md5: str | None = None
    original_name: str | None = None
    relevance: str = "Reported"
    fileViewedByEsp: bool | None = None
    industryClassification: str | None = None


class LabelledSupplement(Supplement):
    """A supplement as a notice carries it: an unverified one says so in plain words."""

    label: Literal["verified", "UNVERIFIED"]


class ReferralPayload(Message):
    """A report as referred: the ESP's original, analysts' supplements and amendments beside it."""

    kind: Literal["referral"] = "referral"
    esp_id: str | None  # None: a report from the public (triaged by an analyst)
    source: Source = "esp"
    report: Report
    files: list[ReferredFile] = Field(default_factory=list)
    jurisdiction: str
    rules_version: str
    supplements: list[LabelledSupplement] = Field(default_factory=list)
    amendments: list[Amendment] = Field(default_factory=list)
    amended_report: Report | None = None  # the report with the amendments applied, if any


class CorrectionPayload(Message):
    """The referral `corrects_notice_id` was wrong: the report was retracted."""

    kind: Literal["correction"] = "correction"
    action: Literal["retracted"] = "retracted"
    corrects_notice_id: str
    reason: str
    requested_by: Retractor
    retracted_at: AwareDatetime


class AmendmentPayload(Message):
    """Version `version` of the changes to a referred report: one new supplement or one
    amended field."""

    kind: Literal["amendment"] = "amendment"
    version: int = Field(ge=1)
    amends_notice_id: str
    supplement: LabelledSupplement | None = None
    amendment: Amendment | None = None


NoticePayload = Annotated[ReferralPayload | CorrectionPayload | AmendmentPayload,
                          Field(discriminator="kind")]


class AgencyNotice(Message):
    """What an agency receives on tipline.agency.<agency_id>. The Kafka key is the report id."""

    kind: NoticeKind
    notice_id: str
    report_id: str
    agency_id: str
    issued_at: datetime
    priority: Priority = Priority.NORMAL
    payload: NoticePayload
    # Ed25519 signature over every other field (shared/signing.py), and the key that made it.
    key_id: str | None = None
    signature: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _payload_kind(cls, data: Any) -> Any:
        # Notices sent before payloads carried their kind (the console reads history) say it
        # once, on the notice.
        if isinstance(data, dict) and isinstance(data.get("payload"), dict) \
                and "kind" not in data["payload"]:
            data = {**data, "payload": {**data["payload"], "kind": data.get("kind")}}
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> "AgencyNotice":
        if self.payload.kind != self.kind:
            raise ValueError(f"a {self.kind} notice carries a {self.payload.kind} payload")
        return self


Outcome = Literal["received", "investigating", "closed", "unfounded", "note"]


class AgencyResponse(Message):
    """What an agency sends on tipline.agency.acks: an ack of one notice, or an outcome."""

    response_id: str
    agency_id: str
    report_id: str
    kind: Literal["ack", "outcome"]
    notice_id: str | None = None
    outcome: Outcome | None = None
    text: str | None = Field(default=None, max_length=3000)
    sent_at: datetime = Field(default_factory=now)
    # Ed25519 signature with one of the agency's registered keys (shared/agencies.py).
    key_id: str | None = None
    signature: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> "AgencyResponse":
        if self.kind == "ack" and not self.notice_id:
            raise ValueError("an ack names the notice_id it acknowledges")
        if self.kind == "outcome" and not self.outcome:
            raise ValueError("an outcome response names its outcome")
        return self


# --- What became of a notice, as the retraction service (which checks agency signatures) saw it.


class NoticeAcknowledged(Event):
    """An agency acknowledged a notice, with a signature by one of its registered keys."""

    agency_id: str
    notice_id: str
    kind: NoticeKind | None = None  # None: a notice not awaiting an ack (a referral)
    late: bool = False  # after the notice was escalated


class NoticeResent(Event):
    """A correction or amendment sent again, for want of an ack within the timeout."""

    agency_id: str
    notice_id: str
    kind: NoticeKind
    resend: int


class NoticeEscalated(Event):
    """A correction or amendment never acknowledged after every re-send: people must act."""

    agency_id: str
    notice_id: str
    kind: NoticeKind
    resends: int


class OutcomeReported(Event):
    """An agency's signed word on what became of a referral."""

    agency_id: str
    outcome: Outcome
    text: str | None = None


DraftChange = Literal["opened", "file uploaded", "file described"]


class ReportDraftChanged(Event):
    """A step in a report an ESP has opened but not finished (the /ispws flow).

    Every step carries when the report was opened, so a consumer can compute the abandonment
    deadline from any one of them. Finishing is ReportSubmitted.
    """

    esp_id: str
    change: DraftChange
    opened_at: AwareDatetime
    file: FileInfo | None = None
    supersedes: str | None = None


class DeadLetter(Message):
    """A message a service could not process, kept with its cause and origin: evidence, not
    authority. The letter is sealed by the service that wrote it; the record it holds can go back
    only as its writer sealed it (`seal` and the `headers` that seal covers, kept as they came),
    never sealed anew (tipline/deadletters.py)."""

    service: str
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str
    error: str
    failed_at: datetime = Field(default_factory=now)
    seal: str | None = None  # the record's own `tipline-seal` header
    headers: list[tuple[str, str]] = Field(default_factory=list)  # those its seal covers
    # The value is not the record's own bytes (cut to fit a letter, or not UTF-8): the record
    # cannot be sent back.
    incomplete: bool = False
