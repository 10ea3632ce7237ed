from datetime import UTC, datetime, timedelta

from shared.contracts import Location, Report
from shared.rules import INCIDENT_TYPES, check_report

PAST = datetime.now(UTC) - timedelta(days=1)


def valid(**changes: object) -> Report:
    base = Report(
        incident_type=INCIDENT_TYPES[0], incident_at=PAST, reporter_email="ts@esp.example"
    )
    return base.model_copy(update=changes)


def paths(report: Report) -> set[str]:
    return {e.path for e in check_report(report)}


def test_a_complete_report_passes() -> None:
    assert check_report(valid()) == []


def test_missing_required_fields_are_named() -> None:
    assert paths(Report()) == {
        "incidentSummary/incidentType",
        "incidentSummary/incidentDateTime",
        "reporter/reportingPerson/email",
    }


def test_incident_in_the_future_is_refused() -> None:
    errors = check_report(valid(incident_at=datetime.now(UTC) + timedelta(hours=1)))
    assert [(e.path, e.reason) for e in errors] == [
        ("incidentSummary/incidentDateTime", "must be in the past")
    ]


def test_unknown_incident_type_lists_the_allowed_ones() -> None:
    (error,) = check_report(valid(incident_type="Something else"))
    assert "Child Sex Trafficking" in error.reason


def test_blank_and_oversized_text() -> None:
    assert paths(valid(escalate_to_high_priority="   ")) == {
        "incidentSummary/escalateToHighPriority"
    }
    assert paths(valid(additional_info="x" * 3001)) == {"additionalInfo"}


def test_bad_location_codes() -> None:
    assert paths(valid(location=Location(country="usa", us_state="California"))) == {
        "location/country",
        "location/usState",
    }
