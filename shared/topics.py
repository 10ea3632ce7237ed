"""Topic names: one kind of message a topic."""

import re

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

PIPELINE_TOPICS = (
    REPORTS_DRAFTS,
    REPORTS_SUBMITTED,
    REPORTS_VALIDATED,
    REPORTS_REJECTED,
    REPORTS_SUPPLEMENTED,
    REPORTS_SUPPLEMENTED_URGENT,
    REPORTS_SUPPLEMENTED_BULK,
    REPORTS_REFERRED,
    RETRACTIONS_REQUESTED,
    AMENDMENTS_REQUESTED,
    REPORTS_RETRACTED,
    REPORTS_ADDITIONS,
    REPORTS_CLOSED,
    AGENCY_ACKS,
    NOTICES_ACKNOWLEDGED,
    NOTICES_RESENT,
    NOTICES_ESCALATED,
    REPORTS_OUTCOMES,
    REPORT_FACTS,
    DEAD_LETTERS,
    DEAD_LETTERS_INTAKE,
)


# The services, as they name themselves in seals, logs and consumer groups.
SERVICES = ("intake", "validation", "supplementation", "referral", "retraction", "console")

# Who may write each internal topic (shared/seals.py; the broker ACLs in docs/operations.md say
# the same). Agency topics and acks are not here: notices and responses are signed instead.
WRITERS: dict[str, frozenset[str]] = {
    REPORTS_DRAFTS: frozenset({"intake"}),
    REPORTS_SUBMITTED: frozenset({"intake"}),
    REPORTS_VALIDATED: frozenset({"validation"}),
    REPORTS_REJECTED: frozenset({"validation"}),
    REPORTS_SUPPLEMENTED: frozenset({"supplementation"}),
    REPORTS_SUPPLEMENTED_URGENT: frozenset({"supplementation"}),
    REPORTS_SUPPLEMENTED_BULK: frozenset({"supplementation"}),
    REPORTS_REFERRED: frozenset({"referral"}),
    RETRACTIONS_REQUESTED: frozenset({"intake", "validation", "supplementation"}),
    AMENDMENTS_REQUESTED: frozenset({"supplementation"}),
    REPORTS_RETRACTED: frozenset({"retraction"}),
    REPORTS_ADDITIONS: frozenset({"intake"}),
    REPORTS_CLOSED: frozenset({"supplementation"}),
    NOTICES_ACKNOWLEDGED: frozenset({"retraction"}),
    NOTICES_RESENT: frozenset({"retraction"}),
    NOTICES_ESCALATED: frozenset({"retraction"}),
    REPORTS_OUTCOMES: frozenset({"retraction"}),
    REPORT_FACTS: frozenset({"validation", "supplementation", "referral", "retraction"}),
    # The internal consumers' letters; intake's apart; the console writes none (it logs and
    # counts what it may not show).
    DEAD_LETTERS: frozenset({"validation", "supplementation", "referral", "retraction"}),
    DEAD_LETTERS_INTAKE: frozenset({"intake"}),
}
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
    return any(service in writers for writers in WRITERS.values())
