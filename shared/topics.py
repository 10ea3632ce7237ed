"""Topic names, and the catalogue: which model travels on each topic, who writes and who reads
it (one kind of message a topic)."""

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel

from shared import contracts

REPORTS_SUBMITTED = "tipline.reports.submitted"
# Steps of a report opened over /ispws and not finished yet (ReportDraftChanged).
REPORTS_DRAFTS = "tipline.reports.drafts"
REPORTS_VALIDATED = "tipline.reports.validated"
REPORTS_REJECTED = "tipline.reports.rejected"
REPORTS_SUPPLEMENTED = "tipline.reports.supplemented"
# Urgent (high, imminent) and bulk supplemented reports travel on their own topics, each consumed
# by its own subscriber, so a bulk backlog never delays an urgent referral.
REPORTS_SUPPLEMENTED_URGENT = "tipline.reports.supplemented.urgent"
REPORTS_SUPPLEMENTED_BULK = "tipline.reports.supplemented.bulk"
REPORTS_REFERRED = "tipline.reports.referred"
RETRACTIONS_REQUESTED = "tipline.retractions.requested"
# Changes to a referred report, for the agencies that received it (AmendReport).
AMENDMENTS_REQUESTED = "tipline.amendments.requested"
REPORTS_RETRACTED = "tipline.reports.retracted"
# What a public reporter added later with their receipt (InformationAdded), for the analysts.
REPORTS_ADDITIONS = "tipline.reports.additions"
# Held reports an analyst closed as not actionable (ReportClosed): never referred.
REPORTS_CLOSED = "tipline.reports.closed"
AGENCY_ACKS = "tipline.agency.acks"
# What became of notices: acknowledgements (checked), re-sends, escalations, agency outcomes.
NOTICES_ACKNOWLEDGED = "tipline.notices.acknowledged"
NOTICES_RESENT = "tipline.notices.resent"
NOTICES_ESCALATED = "tipline.notices.escalated"
REPORTS_OUTCOMES = "tipline.reports.outcomes"
# Timeline facts from every service but intake, which keeps the timeline (TimelineFacts).
REPORT_FACTS = "tipline.reports.facts"
# What a service could not process, with its cause (shared.contracts.DeadLetter): the internal
# consumers' letters, and intake's apart (it faces the internet, so it never writes where the
# others' letters are).
DEAD_LETTERS = "tipline.deadletter"
DEAD_LETTERS_INTAKE = "tipline.deadletter.intake"

AGENCY_PREFIX = "tipline.agency."
AGENCY_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
RESERVED_AGENCY_IDS = frozenset({"acks"})

# The services, as they name themselves in seals, logs and consumer groups.
SERVICES = ("intake", "validation", "supplementation", "referral", "retraction", "console")
# The agencies, as writers and readers in the catalogue: each is its own principal.
AGENCIES = "agencies"


@dataclass(frozen=True)
class Topic:
    """A row of the catalogue: what one topic carries, who may write it and who reads it."""

    name: str  # for a pattern, its AsyncAPI address ("tipline.agency.{agency_id}")
    model: type[BaseModel]
    writers: frozenset[str]
    readers: frozenset[str]
    description: str
    # Internal topics carry their writer's seal (shared/seals.py); notices and agencies'
    # responses are signed instead (shared/signing.py), so their writers are checked there.
    sealed: bool = True
    prefix: str | None = None  # a pattern row: every topic that starts with it


def _topic(name: str, model: type[BaseModel], writers: Iterable[str], readers: Iterable[str],
           description: str, *, sealed: bool = True, prefix: str | None = None) -> Topic:
    return Topic(name, model, frozenset(writers), frozenset(readers), description, sealed,
                 prefix)


# Every topic of tipline, the one place that says which model travels on it, who may write it
# and who reads it. Generated from it: the writers check of seals (WRITERS), the broker ACLs
# (tipline/access.py), the AsyncAPI document (tipline/docs.py) and the console's decoders.
# The console reads every topic but the raw acknowledgements and the timeline facts.
CATALOGUE: tuple[Topic, ...] = (
    _topic(REPORTS_DRAFTS, contracts.ReportDraftChanged, {"intake"}, {"validation", "console"},
           "a step of a report still open"),
    _topic(REPORTS_SUBMITTED, contracts.ReportSubmitted, {"intake"}, {"validation", "console"},
           "a report an ESP finished"),
    _topic(REPORTS_VALIDATED, contracts.ReportValidated, {"validation"},
           {"supplementation", "console"}, "a report that passed validation"),
    _topic(REPORTS_REJECTED, contracts.ReportRejected, {"validation"}, {"console"},
           "a report refused by validation, with its reasons"),
    *(_topic(name, contracts.ReportSupplemented, {"supplementation"}, {"referral", "console"},
             f"a report released for referral ({priority})")
      for name, priority in ((REPORTS_SUPPLEMENTED_URGENT, "urgent: high and imminent"),
                             (REPORTS_SUPPLEMENTED, "normal"),
                             (REPORTS_SUPPLEMENTED_BULK, "bulk"))),
    # Read back by referral itself where it publishes in transactions: the commit is delivery.
    _topic(REPORTS_REFERRED, contracts.ReportReferred, {"referral"}, {"referral", "console"},
           "a report referred to its agencies"),
    _topic(RETRACTIONS_REQUESTED, contracts.RetractReport, {"intake", "supplementation"},
           {"retraction", "console"},
           "an ESP retracts its report, an unfinished one is abandoned (intake), or an analyst "
           "retracts one (supplementation's analyst API)"),
    _topic(AMENDMENTS_REQUESTED, contracts.AmendReport, {"supplementation"},
           {"referral", "console"}, "an analyst's change to a referred report"),
    _topic(REPORTS_RETRACTED, contracts.ReportRetracted, {"retraction"},
           {"supplementation", "console"}, "a report retracted, its corrections sent"),
    _topic(REPORTS_ADDITIONS, contracts.InformationAdded, {"intake"},
           {"supplementation", "console"}, "what a public reporter added with their receipt"),
    _topic(REPORTS_CLOSED, contracts.ReportClosed, {"supplementation"}, {"console"},
           "a held report an analyst closed as not actionable"),
    _topic(AGENCY_ACKS, contracts.AgencyResponse, {AGENCIES}, {"retraction"},
           "an agency's signed acknowledgement or outcome of a notice (raw: only retraction "
           "reads them, and checks their signatures)", sealed=False),
    _topic(AGENCY_PREFIX + "{agency_id}", contracts.AgencyNotice, {"referral", "retraction"},
           {AGENCIES, "console"},
           "signed notices to one agency: referrals, amendments (the analyst API's too) and "
           "corrections (key: report id)", sealed=False, prefix=AGENCY_PREFIX),
    _topic(NOTICES_ACKNOWLEDGED, contracts.NoticeAcknowledged, {"retraction"}, {"console"},
           "a notice an agency acknowledged, its signature checked"),
    _topic(NOTICES_RESENT, contracts.NoticeResent, {"retraction"}, {"console"},
           "a notice sent again for want of an acknowledgement"),
    _topic(NOTICES_ESCALATED, contracts.NoticeEscalated, {"retraction"}, {"console"},
           "a notice still unacknowledged after its re-sends"),
    _topic(REPORTS_OUTCOMES, contracts.OutcomeReported, {"retraction"}, {"console"},
           "what an agency did with a report"),
    _topic(REPORT_FACTS, contracts.TimelineFacts,
           {"validation", "supplementation", "referral", "retraction"}, {"intake"},
           "what each service learned about reports, a batch at a time, for their timelines "
           "(intake keeps them; key: the service)"),
    # The console writes no letters: it logs and counts what it may not show.
    _topic(DEAD_LETTERS, contracts.DeadLetter,
           {"validation", "supplementation", "referral", "retraction"}, {"console"},
           "a message the service could not process, with its cause and what the message's "
           "seal covers (sealed by the service)"),
    _topic(DEAD_LETTERS_INTAKE, contracts.DeadLetter, {"intake"}, {"console"},
           "a message intake could not process (sealed by intake)"),
)

PIPELINE_TOPICS = tuple(t.name for t in CATALOGUE if t.prefix is None)
# Who may write each internal topic: the seal check (shared/seals.py).
WRITERS: dict[str, frozenset[str]] = {t.name: t.writers for t in CATALOGUE
                                      if t.sealed and t.prefix is None}
DEAD_LETTER_TOPICS = (DEAD_LETTERS, DEAD_LETTERS_INTAKE)


def dead_letter_topic(service: str) -> str:
    """Where `service`'s dead letters go."""
    return DEAD_LETTERS_INTAKE if service == "intake" else DEAD_LETTERS


def agency_topic(agency_id: str) -> str:
    if not AGENCY_ID.match(agency_id) or agency_id in RESERVED_AGENCY_IDS:
        raise ValueError(f"not a valid agency id: {agency_id!r}")
    return AGENCY_PREFIX + agency_id


def agency_of_topic(topic: str) -> str | None:
    """The agency id a notice topic belongs to, or None for any other topic."""
    if not topic.startswith(AGENCY_PREFIX):
        return None
    agency_id = topic.removeprefix(AGENCY_PREFIX)
    return None if agency_id in RESERVED_AGENCY_IDS else agency_id


def writes(service: str) -> bool:
    """Whether `service` publishes at all (the console only reads)."""
    return any(service in t.writers for t in CATALOGUE)


def written_by(service: str) -> list[Topic]:
    """The catalogue's rows `service` may write."""
    return [t for t in CATALOGUE if service in t.writers]


def read_by(reader: str) -> list[Topic]:
    """The catalogue's rows `reader` reads."""
    return [t for t in CATALOGUE if reader in t.readers]
