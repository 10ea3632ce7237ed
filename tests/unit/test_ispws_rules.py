"""The rules beyond the schema (shared/rules.py), on documents as data."""

from datetime import UTC, datetime, timedelta
from typing import Any

from shared.contracts import FileInfo, Report
from shared.rules import (
    INCIDENT_TYPES,
    check_batched,
    check_document,
    check_file_details,
    check_finished,
    check_submission,
)


def report(doc: dict[str, Any], *, batched: bool = False, files: list[FileInfo] = ()) -> Report:  # type: ignore[assignment]
    extra: dict[str, Any] = {"ispws": doc}
    if batched:
        extra["batched"] = "VIRAL_POTENTIAL_MEME"
    return Report(incident_type=INCIDENT_TYPES[0], reporter_email="a@esp.example",
                  incident_at=datetime.now(UTC) - timedelta(days=1), extra=extra,
                  files=list(files))


def test_exif_viewed_implies_file_viewed() -> None:
    assert [e.path for e in check_file_details({"exifViewedByEsp": "true"})] == ["fileViewedByEsp"]
    assert check_file_details({"exifViewedByEsp": "true", "fileViewedByEsp": "true"}) == []


def test_industry_classification_only_on_reported_files() -> None:
    assert check_file_details({"industryClassification": "A1"}) == []
    errors = check_file_details({"fileRelevance": "Supplemental Reported",
                                 "industryClassification": "B2"})
    assert [e.path for e in errors] == ["industryClassification"]


def test_blank_and_oversized_text_anywhere_in_the_document() -> None:
    doc = {"incidentSummary": {"platform": ""}, "victim": [{"additionalInfo": "x" * 3001}]}
    assert {(e.path, e.reason[:8]) for e in check_document(doc)} == {
        ("incidentSummary/platform", "must not"), ("victim/additionalInfo", "must be ")}


def test_incident_emails_must_be_on_a_person() -> None:
    incident = {"internetDetails": {"emailIncident": {"emailAddress": "x@else.example"}}}
    assert len(check_document(incident)) == 1
    on_victim = {**incident, "victim": {"victimPerson": {"email": {"#text": "X@else.example"}}}}
    assert check_document(on_victim) == []


def test_batched_rules() -> None:
    meme = FileInfo(file_id="f1", details={"fileAnnotations": {"viral": None}})
    assert check_batched(report({}, batched=True, files=[meme])) == []
    paths = {e.path for e in check_batched(report(
        {"additionalInfo": "x", "incidentSummary": {"escalateToHighPriority": "y"},
         "personOrUserReported": [{"espIdentifier": "1", "screenName": "s"}]},
        batched=True, files=[meme, FileInfo(file_id="f2")]))}
    assert paths == {"additionalInfo", "incidentSummary/escalateToHighPriority",
                     "personOrUserReported", "files", "files/f2"}
    assert check_batched(report({}, files=[])) == []  # not batched: no such rules


def test_submission_and_finished_run_the_whole_module() -> None:
    doc = {"incidentSummary": {"platform": ""}}
    assert [e.path for e in check_submission(report(doc))] == ["incidentSummary/platform"]
    bad_file = FileInfo(file_id="f1", details={"exifViewedByEsp": "true"})
    assert [e.path for e in check_finished(report({}, files=[bad_file]))] == [
        "files/f1/fileViewedByEsp"]
