"""Parsing /ispws documents: safety, plain-worded schema errors, the JSON spelling, the mapping."""

import pytest

from services.intake import documents
from services.intake.mapping import report_from
from tests.ispws_support import INCIDENT, report_xml


def test_a_valid_report_becomes_data_and_a_contract_report() -> None:
    tail = """<personOrUserReported>
      <personOrUserReportedPerson>
        <email>user@else.example</email><address><state>CA</state><country>US</country></address>
      </personOrUserReportedPerson>
      <espIdentifier>u-1</espIdentifier><screenName>someone</screenName>
      <ipCaptureEvent><ipAddress>192.0.2.7</ipAddress><eventName>Login</eventName></ipCaptureEvent>
    </personOrUserReported>"""
    data = documents.to_data_of(documents.parse(report_xml(tail=tail), "report"))
    report = report_from(data)
    assert report.incident_type == INCIDENT and report.incident_at is not None
    assert report.reporter_email == "safety@esp.example"
    assert report.location.us_state == "CA" and report.location.ip_address == "192.0.2.7"
    (user,) = report.reported_users
    assert (user.screen_name, user.esp_identifier, user.email) == ("someone", "u-1",
                                                                  "user@else.example")
    assert report.extra["ispws"] == data


def test_out_of_order_elements_are_named_with_line_and_column() -> None:
    body = b"""<report>
  <reporter><reportingPerson><email>a@esp.example</email></reportingPerson></reporter>
  <incidentSummary><incidentType>Child Sex Tourism</incidentType>
    <incidentDateTime>2020-01-01T00:00:00Z</incidentDateTime></incidentSummary>
</report>"""
    with pytest.raises(documents.InvalidDocument) as caught:
        documents.parse(body, "report")
    error = caught.value.errors[0]
    assert error.path == "reporter"
    assert (error.line, error.column) == (2, 3)
    assert error.reason == ("<reporter> is out of order (or repeated too often): "
                            "expected <batchedReport> or <incidentSummary> here")


def test_missing_and_unknown_elements_and_bad_values() -> None:
    body = b"""<report><incidentSummary><incidentType>Nope</incidentType>
<incidentDateTime>2020-01-01T00:00:00</incidentDateTime><bogus/></incidentSummary></report>"""
    with pytest.raises(documents.InvalidDocument) as caught:
        documents.parse(body, "report")
    reasons = {e.path: e.reason for e in caught.value.errors}
    assert "is not an element of the set" in reasons["incidentSummary/incidentType"]
    assert "with a time zone" in reasons["incidentSummary/incidentDateTime"]
    assert reasons["incidentSummary/bogus"].startswith("<bogus> is not allowed here")
    assert reasons["report"].startswith("<report> is missing required element")
    assert "<reporter>" in reasons["report"]


@pytest.mark.parametrize("body", [
    b'<!DOCTYPE report [<!ENTITY a "x">]><report>&a;</report>',
    b'<!DOCTYPE report SYSTEM "http://example.invalid/x.dtd"><report/>',
    b"<report><unclosed></report>",
    b"",
])
def test_dtds_entities_and_broken_xml_are_malformed(body: bytes) -> None:
    with pytest.raises(documents.MalformedDocument):
        documents.parse(body, "report")


def test_the_root_must_be_the_expected_document() -> None:
    with pytest.raises(documents.InvalidDocument) as caught:
        documents.parse(b"<fileDetails/>", "report")
    assert "must be a <report>" in caught.value.errors[0].reason


def test_json_spelling_round_trips_through_the_same_schema() -> None:
    doc = {"report": {
        "incidentSummary": {"incidentType": INCIDENT, "reportAnnotations": {"sextortion": None},
                            "incidentDateTime": "2020-01-01T00:00:00Z"},
        "reporter": {"reportingPerson": {"email": [{"@type": "Work", "#text": "a@esp.example"}]}},
    }}
    data = documents.to_data_of(documents.parse(documents.from_json(doc, "report"), "report"))
    assert data["reporter"]["reportingPerson"]["email"] == {"@type": "Work",
                                                            "#text": "a@esp.example"}
    assert data["incidentSummary"]["reportAnnotations"] == {"sextortion": None}


@pytest.mark.parametrize("bad", [[1, 2], {"a b": 1}, {"x": {"y": object()}}, {"x": "\x00"}])
def test_json_that_cannot_be_xml_is_malformed(bad: object) -> None:
    with pytest.raises(documents.MalformedDocument):
        documents.from_json(bad, "report")


def test_child_order_is_read_from_our_schema() -> None:
    order = documents.child_order()
    assert order["report"][:3] == ["batchedReport", "incidentSummary", "internetDetails"]
    assert order["fileDetails"].index("ipCaptureEvent") < order["fileDetails"].index("deviceId")
