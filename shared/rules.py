"""The report rules: what a report must hold before it can be referred.

Pure functions over the contract models, used in-process by intake (to answer at once where the
CyberTipline API answers at once) and by the validation service (the authority on a report's state).
"""

import re
from datetime import datetime

from shared.contracts import FieldError, Report, now

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
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
US_STATE = re.compile(r"^[A-Z]{2}$")
COUNTRY = re.compile(r"^[A-Z]{2}$")


def check_report(report: Report, *, at: datetime | None = None) -> list[FieldError]:
    """Every reason this report cannot be accepted; empty when it can."""
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
        fail("reporter/reportingPerson/email", "is required")
    elif not EMAIL.match(report.reporter_email) or len(report.reporter_email) > 255:
        fail("reporter/reportingPerson/email", "is not a valid email address")

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
    return errors
