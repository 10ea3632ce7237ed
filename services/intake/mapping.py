"""From a valid <report>/<fileDetails> (as data) to the contract models the pipeline uses. Pure."""

from datetime import datetime
from typing import Any

from shared.contracts import FileInfo, Location, Report, ReportedUser

Data = dict[str, Any]


def items(value: Any) -> list[Any]:
    """A repeated element is a list in the data, a single one is not: always a list here."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def text(value: Any) -> str | None:
    """The text of a leaf, whether or not it carried attributes."""
    if isinstance(value, dict):
        value = value.get("#text")
    return value if isinstance(value, str) else None


def first(value: Any) -> Any:
    found = items(value)
    return found[0] if found else None


def _dig(data: Any, *path: str) -> Any:
    for key in path:
        data = first(data.get(key)) if isinstance(data, dict) else None
    return data


def report_from(data: Data) -> Report:
    summary = _dig(data, "incidentSummary") or {}
    users = []
    for entry in items(data.get("personOrUserReported")):
        entry = entry if isinstance(entry, dict) else {}
        users.append(
            ReportedUser(
                screen_name=text(entry.get("screenName")),
                esp_identifier=text(entry.get("espIdentifier")),
                email=text(_dig(entry, "personOrUserReportedPerson", "email")),
                ip_address=text(_dig(entry, "ipCaptureEvent", "ipAddress")),
            )
        )
    first_user = first(data.get("personOrUserReported"))
    address = _dig(first_user, "personOrUserReportedPerson", "address") or {}
    estimated = _dig(first_user, "estimatedLocation") or {}
    when = text(summary.get("incidentDateTime"))
    batched = _dig(data, "batchedReport")
    extra: Data = {"ispws": data}
    if isinstance(batched, dict):
        extra["batched"] = batched.get("@reason")
    return Report(
        incident_type=text(summary.get("incidentType")),
        incident_at=datetime.fromisoformat(when) if when else None,
        platform=text(summary.get("platform")),
        escalate_to_high_priority=text(summary.get("escalateToHighPriority")),
        reporter_email=text(_dig(data, "reporter", "reportingPerson", "email")),
        reported_users=users,
        location=Location(
            country=text(address.get("country")) or text(estimated.get("countryCode")),
            us_state=text(address.get("state")),
            ip_address=users[0].ip_address if users else None,
        ),
        additional_info=text(data.get("additionalInfo")),
        extra=extra,
    )


def relevance_of(details: Data) -> str:
    return text(details.get("fileRelevance")) or "Reported"


def with_details(file: FileInfo, details: Data) -> FileInfo:
    return file.model_copy(
        update={
            "details": details,
            "relevance": relevance_of(details),
            "original_name": text(details.get("originalFileName")) or file.original_name,
        }
    )
