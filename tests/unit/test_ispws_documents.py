"""Parsing /ispws documents: safety, plain-worded schema errors, the JSON spelling, the mapping."""

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def errors_of(body: bytes) -> list[tuple[str, int | None, int | None, str]]:
    with pytest.raises(documents.InvalidDocument) as caught:
        documents.parse(body, "report")
    return [(e.path, e.line, e.column, e.reason) for e in caught.value.errors]


MISPLACED = "<victim><x/></victim>"  # one misplaced element a victim


def test_a_flood_of_errors_lists_the_same_first_ones_as_a_few() -> None:
    """A flood is explained from its first elements only (its errors past them are counted):
    its first MAX_ERRORS are those of a document holding just a few more of the same, which the
    whole tree's check explains."""
    few = documents.MAX_ERRORS + 10  # under the flood mark: the whole tree is checked
    flood = 30_000  # past it, and past the window of elements explained
    assert few < documents.FLOOD < flood and 2 * flood > documents.WINDOW
    listed = errors_of(report_xml(tail=MISPLACED * few))
    flooded = errors_of(report_xml(tail=MISPLACED * flood))
    assert flooded[:-1] == listed[:-1]
    assert all(line and column and path for path, line, column, _ in flooded[:-1])
    assert flooded[-1][3] == f"... and {flood - documents.MAX_ERRORS} more errors like these, " \
                             "not listed"


def test_a_flood_past_the_explained_window_is_still_told() -> None:
    """Clean elements first, then the flood: what the window holds is clean, so the errors are
    given in the schema's words without their place, and counted."""
    clean = "<victim><victimPerson><firstName>A</firstName></victimPerson></victim>"
    body = report_xml(tail=clean * documents.WINDOW + MISPLACED * 500)
    errors = errors_of(body)
    assert len(errors) == documents.MAX_ERRORS + 1
    assert errors[0][3].startswith("<x> is not allowed here")
    assert errors[-1][3] == "... and 450 more errors like these, not listed"


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


@pytest.mark.parametrize(
    "bad", [[1, 2], {"a b": 1}, {"x": {"y": object()}}, {"x": "\x00"}, {"A¹": 1}]
)
def test_json_that_cannot_be_xml_is_malformed(bad: object) -> None:
    with pytest.raises(documents.MalformedDocument):
        documents.from_json(bad, "report")


def test_child_order_is_read_from_our_schema() -> None:
    order = documents.child_order()
    assert order["report"][:3] == ["batchedReport", "incidentSummary", "internetDetails"]
    assert order["fileDetails"].index("ipCaptureEvent") < order["fileDetails"].index("deviceId")


@settings(deadline=None)
@given(st.data())
def test_any_mangled_report_is_refused_in_words_never_crashes(data: st.DataObject) -> None:
    body = bytearray(report_xml(tail="<victim><victimPerson><age>9</age></victimPerson></victim>"))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(body) - 1))
        action = data.draw(st.sampled_from(["delete", "insert", "replace"]))
        junk = data.draw(st.binary(min_size=1, max_size=6))
        if action == "delete":
            del body[at:at + len(junk)]
        elif action == "insert":
            body[at:at] = junk
        else:
            body[at:at + len(junk)] = junk
    try:
        doc = documents.parse(bytes(body), "report")
    except documents.MalformedDocument:
        return
    except documents.InvalidDocument as refused:
        assert all(e.reason for e in refused.errors)
        return
    # A schema-valid date Python cannot hold raises ValueError: intake answers 4100.
    with contextlib.suppress(ValueError):
        report_from(documents.to_data_of(doc))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=12,
)


@settings(deadline=None)
@given(json_values)
def test_any_json_is_a_document_or_malformed(value: object) -> None:
    with contextlib.suppress(documents.MalformedDocument, documents.InvalidDocument):
        documents.parse(documents.from_json(value, "report"), "report")
