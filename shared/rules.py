"""The report rules: what a report must hold before it can be referred.

Pure functions over the contract models, used in-process by intake (to answer at once where the
CyberTipline API answers at once) and by the validation service (the authority on a report's state).
"""

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from shared.contracts import FieldError, Report, ReporterContact, Source, now

INCIDENT_TYPES = (
    "Child Pornography (possession, manufacture, and distribution)",
    "Child Sex Trafficking",
    "Child Sex Tourism",
    "Child Sexual Molestation",
    "Misleading Domain Name",
    "Misleading Words or Digital Images on the Internet",
    "Online Enticement of Children for Sexual Acts",
    "Unsolicited Obscene Material Sent to a Child",
)
MAX_TEXT = 3000
MAX_NAME = 200
MAX_URLS, MAX_URL = 20, 2000
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
PHONE = re.compile(r"^\+?[0-9 ().-]{3,40}$")
URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$", re.IGNORECASE)
US_STATE = re.compile(r"^[A-Z]{2}$")
COUNTRY = re.compile(r"^[A-Z]{2}$")


def check_report(report: Report, *, at: datetime | None = None,
                 source: Source = "esp") -> list[FieldError]:
    """Every reason this report cannot be accepted; empty when it can. A provider names the
    person who files for it (`reporter_email`); a member of the public need not say who they are
    (their contact details, if any, travel apart: `check_contact`)."""
    errors: list[FieldError] = []

    def fail(path: str, reason: str) -> None:
        errors.append(FieldError(path=path, reason=reason))

    if not report.incident_type:
        fail("incidentSummary/incidentType", "is required")
    elif report.incident_type not in INCIDENT_TYPES:
        fail("incidentSummary/incidentType", f"must be one of: {'; '.join(INCIDENT_TYPES)}")

    if report.incident_at is None:
        fail("incidentSummary/incidentDateTime", "is required")
    elif report.incident_at > (at or now()):
        fail("incidentSummary/incidentDateTime", "must be in the past")

    if not report.reporter_email:
        if source == "esp":
            fail("reporter/reportingPerson/email", "is required")
    elif not EMAIL.match(report.reporter_email) or len(report.reporter_email) > 255:
        fail("reporter/reportingPerson/email", "is not a valid email address")

    if source == "public" and report.additional_info is None:
        fail("additionalInfo", "is required")  # the public form's description: what happened
    for path, text in (
        ("incidentSummary/escalateToHighPriority", report.escalate_to_high_priority),
        ("additionalInfo", report.additional_info),
    ):
        if text is not None and not text.strip():
            fail(path, "must not be blank")
        elif text is not None and len(text) > MAX_TEXT:
            fail(path, f"must be at most {MAX_TEXT} characters")

    if report.platform is not None and len(report.platform) > 256:
        fail("incidentSummary/platform", "must be at most 256 characters")

    location = report.location
    if location.country is not None and not COUNTRY.match(location.country):
        fail("location/country", "must be an ISO 3166-1 alpha-2 code, such as US")
    if location.us_state is not None and not US_STATE.match(location.us_state):
        fail("location/usState", "must be a US postal code, such as CA")
    if location.place is not None and len(location.place) > MAX_NAME:
        fail("location/place", f"must be at most {MAX_NAME} characters")

    if len(report.urls) > MAX_URLS:
        fail("urls", f"must be at most {MAX_URLS} web addresses")
    for url in report.urls:
        if len(url) > MAX_URL or not URL.match(url):
            fail("urls", "each must be a web address starting with http:// or https://")
            break
    return errors


def check_contact(contact: ReporterContact) -> list[FieldError]:
    """A public reporter's contact details, each optional: well formed where given. A reason
    never quotes the value (it may reach a log)."""
    errors: list[FieldError] = []
    if contact.name is not None and not 0 < len(contact.name.strip()) <= MAX_NAME:
        errors.append(FieldError(path="contact/name",
                                 reason=f"must be 1 to {MAX_NAME} characters"))
    if contact.email is not None and (len(contact.email) > 255
                                      or not EMAIL.match(contact.email)):
        errors.append(FieldError(path="contact/email", reason="is not a valid email address"))
    if contact.phone is not None and not PHONE.match(contact.phone):
        errors.append(FieldError(path="contact/phone",
                                 reason="must be a phone number: digits, spaces, + ( ) . -"))
    return errors


# --- Rules over the CyberTipline-style document (report.extra["ispws"]) -----------------------
# Schema checks (element order, types) belong to the XSD; these are the rules a schema cannot say.

BATCHED_FORBIDDEN = (
    "escalateToHighPriority", "internetDetails", "lawEnforcement", "intendedRecipient", "victim",
    "additionalInfo",
)
INCIDENT_EMAIL_KINDS = ("emailIncident", "newsgroupIncident")
PERSON_ELEMENTS = (
    ("personOrUserReported", "personOrUserReportedPerson"),
    ("intendedRecipient", "intendedRecipientPerson"),
    ("victim", "victimPerson"),
)


def _items(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("#text")
    return value if isinstance(value, str) else None


def _leaves(data: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            if key.startswith("@"):
                continue
            sub = path if key == "#text" else f"{path}/{key}" if path else key
            for item in _items(value):
                yield from _leaves(item, sub)
    else:
        yield path, data


def check_document(doc: dict[str, Any]) -> list[FieldError]:
    """Rules over a <report> as data: no blank or oversized text; incident emails on a person."""
    errors: list[FieldError] = []
    for path, value in _leaves(doc, ""):
        if value == "":
            errors.append(FieldError(path=path, reason="must not be blank"))
        elif isinstance(value, str) and len(value) > MAX_TEXT:
            errors.append(FieldError(path=path, reason=f"must be at most {MAX_TEXT} characters"))

    on_people = {
        (_text(e) or "").lower()
        for section, person in PERSON_ELEMENTS
        for entry in _items(doc.get(section))
        if isinstance(entry, dict)
        for who in _items(entry.get(person))
        if isinstance(who, dict)
        for e in _items(who.get("email"))
    }
    for details in _items(doc.get("internetDetails")):
        for kind in INCIDENT_EMAIL_KINDS:
            for incident in _items(details.get(kind) if isinstance(details, dict) else None):
                for address in _items(incident.get("emailAddress") if incident else None):
                    email = _text(address)
                    if email and email.lower() not in on_people:
                        errors.append(FieldError(
                            path=f"internetDetails/{kind}/emailAddress",
                            reason=f"{email} must also appear as the email of a reported person, "
                                   "intended recipient or victim",
                        ))
    return errors


def check_file_details(details: dict[str, Any]) -> list[FieldError]:
    """Rules over one <fileDetails> as data."""
    errors: list[FieldError] = []
    if _text(details.get("exifViewedByEsp")) == "true" and _text(
        details.get("fileViewedByEsp")
    ) != "true":
        errors.append(FieldError(
            path="fileViewedByEsp", reason="must be true when exifViewedByEsp is true"
        ))
    relevance = _text(details.get("fileRelevance")) or "Reported"
    if details.get("industryClassification") is not None and relevance != "Reported":
        errors.append(FieldError(
            path="industryClassification",
            reason=f"is only allowed on Reported files, not on {relevance} files",
        ))
    for path, value in _leaves(details, ""):
        if value == "":
            errors.append(FieldError(path=path, reason="must not be blank"))
    return errors


def check_batched(report: Report) -> list[FieldError]:
    """The batched (VIRAL_POTENTIAL_MEME) rules, checked at /finish when the files are known."""
    doc = report.extra.get("ispws")
    if not report.extra.get("batched") or not isinstance(doc, dict):
        return []
    errors: list[FieldError] = []
    summary = doc.get("incidentSummary")
    summary = summary if isinstance(summary, dict) else {}
    for name in BATCHED_FORBIDDEN:
        present = summary.get(name) if name == "escalateToHighPriority" else doc.get(name)
        if present is not None:
            where = f"incidentSummary/{name}" if name == "escalateToHighPriority" else name
            errors.append(FieldError(path=where, reason="is not allowed in a batched report"))
    for user in _items(doc.get("personOrUserReported")):
        if not isinstance(user, dict) or set(user) - {"espIdentifier"}:
            errors.append(FieldError(
                path="personOrUserReported",
                reason="may only contain espIdentifier in a batched report",
            ))
            break
    if len(report.files) != 1:
        errors.append(FieldError(
            path="files", reason=f"a batched report has exactly one file, not {len(report.files)}"
        ))
    for file in report.files:
        annotations = file.details.get("fileAnnotations")
        flags = set(annotations) if isinstance(annotations, dict) else set()
        legacy = _text(file.details.get("potentialMeme")) == "true"
        if not (flags & {"viral", "potentialMeme"} or legacy) or file.relevance != "Reported":
            errors.append(FieldError(
                path=f"files/{file.file_id}",
                reason="the batched file must be Reported and annotated viral or potentialMeme",
            ))
    return errors


def check_submission(report: Report, *, at: datetime | None = None,
                     source: Source = "esp") -> list[FieldError]:
    """What /submit can say at once: the report rules and the document rules."""
    doc = report.extra.get("ispws")
    return check_report(report, at=at, source=source) + (
        check_document(doc) if isinstance(doc, dict) else [])


def check_finished(report: Report, *, at: datetime | None = None, source: Source = "esp",
                   contact: ReporterContact | None = None) -> list[FieldError]:
    """Every rule for a finished report: the whole module, as the validation service runs it."""
    errors = check_submission(report, at=at, source=source)
    if contact is not None:
        errors += check_contact(contact)
    for file in report.files:
        for e in check_file_details(file.details):
            errors.append(e.model_copy(update={"path": f"files/{file.file_id}/{e.path}"}))
    return errors + check_batched(report)
