"""The console's read model, filters and exports: pure functions over synthetic events (made as
the console bench makes them: tipline.consolebench)."""

import base64
from datetime import UTC, datetime, timedelta

import pytest

from services.console import exports, sessions
from services.console.filters import BadFilter, Filters, page_of
from services.console.follow import by_service
from services.console.model import Report, cause, letter_of, refusal
from shared import topics
from shared.contracts import NoticeKind, Priority, Supplement, SupplementKind
from shared.contracts import Report as Filed
from tipline import consolebench as events

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def referred(report: Report, agencies: list[str], esp: str = "esp-a") -> None:
    rid = report.report_id
    kinds: tuple[tuple[SupplementKind, bool], ...] = (("geolocation", True), ("note", False))
    report.apply(events.record(topics.REPORTS_VALIDATED, event_id=f"v{rid}", report_id=rid,
                               esp_id=esp, report=Filed(), occurred_at=at(0))[1])
    report.apply(events.record(
        topics.REPORTS_SUPPLEMENTED, event_id=f"s{rid}", report_id=rid, esp_id=esp,
        report=Filed(), agencies=agencies, priority=Priority.HIGH, jurisdiction="US-TX",
        rules_version="1", occurred_at=at(1),
        supplements=[Supplement(supplement_id=f"{kind}-1", kind=kind, content="synthetic",
                                source="a source", verified=verified, analyst_id="a1",
                                added_at=at(1))
                     for kind, verified in kinds])[1])
    report.apply(events.record(topics.REPORTS_REFERRED, event_id=f"r{rid}", report_id=rid,
                               agencies=agencies, occurred_at=at(2))[1])
    for agency in agencies:
        report.apply(events.notice("referral", rid, agency, at(2))[1])


def retracted(report: Report, agencies: list[str], when: float = 10) -> None:
    rid = report.report_id
    report.apply(events.record(topics.REPORTS_RETRACTED, event_id=f"x{rid}", report_id=rid,
                               requested_by="analyst", actor="analyst-7",
                               reason="reported in error", corrected_agencies=agencies,
                               occurred_at=at(when))[1])
    for agency in agencies:
        report.apply(events.notice("correction", rid, agency, at(when))[1])


def ack(report: Report, agency: str, kind: NoticeKind | None, when: float,
        late: bool = False) -> object:
    return report.apply(events.ack(report.report_id, agency, kind, at(when), late)[1])


def test_a_correction_goes_from_sent_to_acknowledged_and_counts_once() -> None:
    report = Report("r1", at(0).timestamp())
    referred(report, ["a", "b"])
    retracted(report, ["a", "b"])
    track = report.agencies["a"]
    assert track.correction_state(now=at(12).timestamp(), ack_timeout_s=30) == "sent"
    assert report.tallies()["a:a:pending"] == 1
    assert ack(report, "a", "correction", 12) == [("ack", at(12).timestamp(), "a")]
    assert ack(report, "a", "correction", 12) is None  # a redelivery tells nothing new
    assert track.correction_state(at(100).timestamp(), 30) == "acknowledged"
    assert report.agencies["b"].correction_state(at(100).timestamp(), 30) == "overdue"
    tallies = report.tallies()
    assert (tallies["a:a:corrections"], tallies["a:a:acked"], tallies["a:a:pending"]) == (1, 1, 0)
    assert (tallies["a:b:corrections"], tallies["a:b:pending"]) == (1, 1)
    # Both states: the report is retracted, and one of its corrections still waits.
    assert (report.state, report.retraction_state(), report.correction()) == (
        "retracted", "retracted", "pending")
    assert report.retraction is not None
    assert (report.retraction.actor, report.retraction.reason) == ("analyst-7",
                                                                  "reported in error")


def test_an_ack_read_before_its_notice_still_counts_right() -> None:
    """The topics are read side by side: an acknowledgement may come first."""
    report = Report("r1", at(12).timestamp())
    ack(report, "a", "correction", 12)
    retracted(report, ["a"])
    tallies = report.tallies()
    assert (tallies["a:a:corrections"], tallies["a:a:acked"], tallies["a:a:pending"]) == (1, 1, 0)
    assert report.first == at(10).timestamp()  # the earliest thing known of it


def test_re_sent_then_escalated_then_acknowledged_late() -> None:
    report = Report("r1", at(0).timestamp())
    referred(report, ["c"])
    retracted(report, ["c"])
    for n in (1, 2):
        report.apply(events.resent("r1", "c", "correction", n, at(10 + 5 * n))[1])
        # the re-sent notice itself is the same notice again: one timeline entry
        report.apply(events.notice("correction", "r1", "c", at(10))[1])
    track = report.agencies["c"]
    assert track.correction_state(at(21).timestamp(), 5) == "overdue, re-sent 2x"
    assert track.last_sent_at == at(20).timestamp()
    report.apply(events.escalated("r1", "c", "correction", 2, at(25))[1])
    assert report.tallies()["a:c:escalated"] == 1 and report.correction() == "escalated"
    assert report.state == "retracted"  # escalation no longer hides the retraction
    ack(report, "c", "correction", 30, late=True)
    assert track.correction_state(at(31).timestamp(), 5) == "escalated, acknowledged late"
    tallies = report.tallies()
    assert (tallies["a:c:escalated"], tallies["a:c:late"], tallies["a:c:acked"]) == (0, 1, 0)
    assert len([e for e in report.events if e[1] == "correction sent"]) == 1


def test_a_report_is_kept_and_read_back_whole() -> None:
    report = Report("r1", at(0).timestamp())
    referred(report, ["a", "b"], esp="esp-z")
    retracted(report, ["a"])
    report.apply(events.record(topics.REPORTS_OUTCOMES, event_id="o1", report_id="r1",
                               agency_id="b", outcome="investigating", occurred_at=at(20))[1])
    report.trace_id = "ab" * 16
    again = Report.load(report.dump())
    assert again.dump() == report.dump()
    assert again.tallies() == report.tallies()
    assert again.agencies["b"].outcome == "investigating"
    assert [s[:2] for s in again.supplements] == [("geolocation", "verified"),
                                                  ("note", "UNVERIFIED")]
    assert again.supplements[0][3] == at(1).timestamp()  # a time, not a raw string


def test_a_refused_ack_names_its_agency_and_never_its_content() -> None:
    _, letter = events.refused_ack("r9", "icac-tx", at(5), 1)
    shown = letter_of(letter)  # type: ignore[arg-type]
    assert (shown.agency, shown.service, shown.topic) == ("icac-tx", "retraction",
                                                          topics.AGENCY_ACKS)
    assert refusal(shown.cause) == "unknown key bench-unregistered"
    assert "synthetic" not in repr(shown)  # the response's signature: never kept


def test_a_dead_letters_cause_never_quotes_the_record() -> None:
    error = ("ValidationError: 1 validation error for ReportValidated\nreport.platform\n  "
             "Input should be a valid string [type=string_type, input_value={'secret': 1}, "
             "input_type=dict]")
    assert cause(error) == "ValidationError: 1 validation error for ReportValidated"
    assert cause("X: bad input_value='synthetic secret', input_type=str") == (
        "X: bad input_value=…, input_type=str")


def test_filters_round_trip_through_the_url() -> None:
    query = {"state": "retracted", "correction": "overdue", "agency": "icac-tx",
             "esp": "esp-1", "priority": "imminent", "since": "2030-01-01T10:00",
             "until": "2030-01-01T12:00", "sort": "priority", "order": "asc"}
    f = Filters.parse(query)
    assert f.priority == 3 and f.since == datetime(2030, 1, 1, 10, tzinfo=UTC)
    assert f.query() == query
    assert Filters.parse(f.query()) == f
    assert Filters().query() == {} and not Filters().narrowed
    assert Filters.parse({"last": "1h"}).window(10_000.0) == (10_000.0 - 3600, None)


@pytest.mark.parametrize(("query", "reason"), [
    ({"state": "bogus"}, "state must be one of"),
    ({"priority": "9"}, "priority must be one of"),
    ({"since": "yesterday"}, "since must be a time"),
    ({"since": "2030-01-02T00:00", "until": "2030-01-01T00:00"}, "since must be before"),
    ({"sort": "content"}, "sort must be one of"),
    ({"esp": "x" * 201}, "longer than 200"),
])
def test_a_filter_it_does_not_know_is_refused_with_the_reason(query: dict[str, str],
                                                              reason: str) -> None:
    with pytest.raises(BadFilter, match=reason):
        Filters.parse(query)


def test_page_numbers() -> None:
    assert page_of({}) == 1 and page_of({"page": "0"}) == 1 and page_of({"page": "7"}) == 7
    with pytest.raises(BadFilter, match="page number"):
        page_of({"page": "seven"})


def test_exports_quote_what_a_spreadsheet_would_run() -> None:
    report = Report("r1", at(0).timestamp())
    referred(report, ["a"])
    report.apply(events.record(topics.REPORTS_RETRACTED, event_id="x", report_id="r1",
                               requested_by="esp", actor="esp-a", reason="=HYPERLINK(1)",
                               corrected_agencies=["a"], occurred_at=at(5))[1])
    rows = exports.delivery(report, {}, at(9).timestamp(), 30)
    text = "".join(exports.as_csv(exports.DeliveryRow, rows))
    header, line = text.splitlines()
    assert header.split(",") == list(exports.DeliveryRow.model_fields)
    assert "'=HYPERLINK(1)" in line and ",=HYPERLINK" not in line
    assert "".join(exports.as_json(rows)).startswith('[{"report_id":"r1"')


def test_sessions_are_signed_and_expire() -> None:
    secret = b"s" * 32
    cookie = sessions.issue(secret, "ana", "operator", now=1000, ttl_s=60, stored="scrypt$1")
    assert sessions.check(secret, cookie, 1010) == sessions.Session(
        "ana", "operator", 1060, 1000, sessions.fingerprint(secret, "scrypt$1"))
    body = cookie.split(".")[0]
    assert b"scrypt" not in base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))  # no hash
    assert sessions.check(secret, cookie, 1061) is None
    assert sessions.check(b"t" * 32, cookie, 1010) is None
    _, mac = cookie.split(".")
    forged = sessions.issue(b"t" * 32, "ana", "analyst", 1000, 60, "scrypt$1").split(".")[0]
    assert sessions.check(secret, f"{forged}.{mac}", 1010) is None
    assert sessions.check(secret, "garbage", 1010) is None


def test_lag_by_service() -> None:
    lag = {"validation": {"t1": 2}, "validation-drafts": {"t2": 3}, "agency-x": {"t": 9},
           "referral-urgent": {"t3": 0}}
    assert by_service(lag) == {"validation": {"validation t1": 2, "validation-drafts t2": 3},
                               "referral": {"referral-urgent t3": 0}}


def test_the_console_leaves_dead_letters_of_consumed_topics_to_their_consumers() -> None:
    from services.console.follow import DEAD_LETTERED_BY_CONSUMERS
    from tipline.access import subscriptions

    consumed = {t for pairs in subscriptions().values() for t, _ in pairs}
    assert consumed == DEAD_LETTERED_BY_CONSUMERS


def test_a_reports_trace_is_the_one_its_records_travelled_in() -> None:
    from aiokafka import ConsumerRecord

    from services.console.follow import trace_id

    def record(*headers: tuple[str, bytes]) -> ConsumerRecord[bytes, bytes]:
        return ConsumerRecord("t", 0, 0, 0, 0, b"k", b"v", None, 1, 1, list(headers))

    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id(record(("traceparent", f"00-{trace}-00f067aa0ba902b7-01".encode()))) == trace
    assert trace_id(record()) is None
    assert trace_id(record(("traceparent", b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01"))) is None
    assert trace_id(record(("traceparent", b"garbage"))) is None


def test_public_reports_wait_in_triage_until_released_or_closed_in_any_order() -> None:
    def validated(report: Report, when: float, source: str = "public") -> None:
        report.apply(events.record(topics.REPORTS_VALIDATED, event_id=f"v{report.report_id}",
                                   report_id=report.report_id, esp_id="public form",
                                   report=Filed(), source=source, occurred_at=at(when))[1])

    p1, p2, e1 = (Report(r, at(9).timestamp()) for r in ("p1", "p2", "e1"))
    validated(p1, 1)
    validated(p2, 0)
    validated(e1, 0, source="esp")  # a provider's report is never triaged here
    assert (p1.triage_since(), p2.triage_since()) == (at(1).timestamp(), at(0).timestamp())
    assert e1.triage_since() is None and e1.source == "esp"
    assert p1.tallies()["triage"] == 1 and p1.tallies()["source:public"] == 1
    p2.apply(events.record(topics.REPORTS_CLOSED, event_id="c", report_id="p2",
                           analyst_id="a1", reason="synthetic", occurred_at=at(5))[1])
    assert p2.state == "closed" and p2.triage_since() is None and "triage" not in p2.tallies()
    assert ("closed as not actionable", None, "by a1") in [e[1:] for e in p2.events]
    p1.apply(events.record(topics.REPORTS_ADDITIONS, event_id="add-1", report_id="p1",
                           text="synthetic addition", occurred_at=at(6))[1])
    assert p1.triage_since() == at(1).timestamp()  # an addition leaves it waiting
    assert "information added by the reporter" in [e[1] for e in p1.events]
    # Released before its acceptance is read (topics are read side by side): never queued.
    p3 = Report("p3", at(3).timestamp())
    p3.apply(events.record(
        topics.REPORTS_SUPPLEMENTED, event_id="s3", report_id="p3", esp_id="public form",
        report=Filed(), agencies=["a"], priority=Priority.NORMAL, jurisdiction="US",
        rules_version="1", source="public", occurred_at=at(3))[1])
    validated(p3, 2)
    assert p3.source == "public" and p3.state == "released" and p3.triage_since() is None
    again = Report.load(p1.dump())
    assert (again.source, again.triage_since()) == ("public", at(1).timestamp())


def test_the_console_reads_every_pipeline_topic_but_the_raw_acks_and_intakes_facts() -> None:
    """A topic added to the pipeline is shown (public reporters' additions, closings, intake's
    dead letters ...) unless the console may not read it."""
    from services.console.model import MODELS

    assert set(MODELS) == set(topics.PIPELINE_TOPICS) - {topics.AGENCY_ACKS, topics.REPORT_FACTS}
