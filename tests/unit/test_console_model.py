"""The console's read model and pages: pure functions over synthetic events (made as the
console bench makes them: tipline.consolebench)."""

import base64
from datetime import UTC, datetime, timedelta

from services.console import pages, sessions
from services.console.follow import by_service
from services.console.model import ReadModel
from shared import topics
from shared.contracts import NoticeKind, Priority, Report, Supplement
from tipline import consolebench as events

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def referred(model: ReadModel, report: str, agencies: list[str], esp: str = "esp-a") -> None:
    model.apply(*events.record(topics.REPORTS_VALIDATED, event_id=f"v{report}",
                               report_id=report, esp_id=esp, report=Report(),
                               occurred_at=at(0)))
    model.apply(*events.record(
        topics.REPORTS_SUPPLEMENTED, event_id=f"s{report}", report_id=report, esp_id=esp,
        report=Report(), agencies=agencies, priority=Priority.HIGH, jurisdiction="US-TX",
        rules_version="1", occurred_at=at(1),
        supplements=[Supplement(supplement_id=f"{kind}-1", kind=kind, content="synthetic",
                                source="a source", verified=verified, analyst_id="a1",
                                added_at=at(1))
                     for kind, verified in (("geolocation", True), ("note", False))]))
    model.apply(*events.record(topics.REPORTS_REFERRED, event_id=f"r{report}",
                               report_id=report, agencies=agencies, occurred_at=at(2)))
    for agency in agencies:
        model.apply(*events.notice("referral", report, agency, at(2)))


def retracted(model: ReadModel, report: str, agencies: list[str], when: float = 10) -> None:
    model.apply(*events.record(topics.REPORTS_RETRACTED, event_id=f"x{report}",
                               report_id=report, requested_by="esp", actor="esp-a",
                               reason="in error", corrected_agencies=agencies,
                               occurred_at=at(when)))
    for agency in agencies:
        model.apply(*events.notice("correction", report, agency, at(when)))


def ack(model: ReadModel, report: str, agency: str, kind: NoticeKind | None, when: float,
        late: bool = False) -> bool:
    return model.apply(*events.ack(report, agency, kind, at(when), late))


def test_a_correction_goes_from_sent_to_acknowledged_and_counts_once() -> None:
    model = ReadModel(ack_timeout_s=30)
    referred(model, "r1", ["a", "b"])
    retracted(model, "r1", ["a", "b"])
    track = model.reports["r1"].agencies["a"]
    assert track.correction_state(now=T0.timestamp() + 12, ack_timeout_s=30) == "sent"
    assert model.agencies["a"].pending == {"r1": at(10).timestamp()}
    assert ack(model, "r1", "a", "correction", 12)
    assert not ack(model, "r1", "a", "correction", 12)  # a redelivery changes nothing
    assert track.correction_state(T0.timestamp() + 100, 30) == "acknowledged"
    a, b = model.agencies["a"], model.agencies["b"]
    assert (a.corrections, a.acked, a.pending, a.escalated) == (1, 1, {}, 0)
    assert (b.corrections, b.acked, b.overdue(T0.timestamp() + 100, 30)) == (1, 0, 1)
    assert model.reports["r1"].state == "retracted"
    assert model.totals["corrected"] == 2 and model.totals["retracted"] == 1


def test_an_ack_read_before_its_notice_still_counts_right() -> None:
    """The topics are read side by side: an acknowledgement may come first."""
    model = ReadModel()
    ack(model, "r1", "a", "correction", 12)
    retracted(model, "r1", ["a"])
    stats = model.agencies["a"]
    assert (stats.corrections, stats.acked, stats.pending) == (1, 1, {})


def test_re_sent_then_escalated_then_acknowledged_late() -> None:
    model = ReadModel(ack_timeout_s=5)
    referred(model, "r1", ["c"])
    retracted(model, "r1", ["c"])
    for n in (1, 2):
        model.apply(*events.resent("r1", "c", "correction", n, at(10 + 5 * n)))
        # the re-sent notice itself is the same notice again: one timeline entry
        model.apply(*events.notice("correction", "r1", "c", at(10)))
    track, stats = model.reports["r1"].agencies["c"], model.agencies["c"]
    assert track.correction_state(at(21).timestamp(), 5) == "overdue, re-sent 2x"
    assert stats.overdue(at(21).timestamp(), 5) == 1
    model.apply(*events.escalated("r1", "c", "correction", 2, at(25)))
    assert (stats.escalated, stats.pending, stats.escalations) == (1, {}, ["r1"])
    assert model.reports["r1"].state == "escalated"
    ack(model, "r1", "c", "correction", 30, late=True)
    assert track.correction_state(at(31).timestamp(), 5) == "escalated, acknowledged late"
    assert (stats.escalated, stats.acked) == (1, 0)
    sent = [e for e in model.reports["r1"].events if e[1] == "correction sent"]
    assert len(sent) == 1


def test_outcomes_supplements_esps_and_the_chart() -> None:
    model = ReadModel()
    referred(model, "r1", ["a"], esp="esp-a")
    referred(model, "r2", ["a"], esp="esp-b")
    model.apply(*events.record(topics.REPORTS_OUTCOMES, event_id="o1", report_id="r1",
                               agency_id="a", outcome="investigating", occurred_at=at(20)))
    assert model.reports["r1"].agencies["a"].outcome == "investigating"
    assert model.agencies["a"].outcomes == [(at(20).timestamp(), "r1", "investigating")]
    assert [s[:2] for s in model.reports["r1"].supplements] == [
        ("geolocation", "verified"), ("note", "UNVERIFIED")]
    assert model.by_esp == {"esp-a": ["r1"], "esp-b": ["r2"]}
    chart = dict(model.chart(at(30).timestamp()))
    assert chart[int(T0.timestamp() // 60)] == [2, 0, 2, 0, 0]
    assert len(chart) == 60
    assert [r.report_id for r in model.find("r")] == ["r1", "r2"]


def test_pages_paginate_newest_first() -> None:
    model = ReadModel()
    for i in range(60):
        referred(model, f"r{i:03d}", ["a"])
    first, pages_ = model.newest(model.order, 1, 25)
    last, _ = model.newest(model.order, 3, 25)
    assert pages_ == 3 and first[0].report_id == "r059" and len(first) == 25
    assert [r.report_id for r in last] == [f"r{i:03d}" for i in range(9, -1, -1)]
    html = pages.overview(model, {}, 2, at(30).timestamp())
    assert html.count('<tr data-report="') == 25 and "page 2 of 3" in html


def test_pages_escape_whatever_the_topics_carry() -> None:
    model = ReadModel()
    evil = '<script>alert("x")</script>'
    referred(model, evil, [], esp=evil)
    model.apply(*events.record(topics.DEAD_LETTERS, service="referral", topic="t",
                               partition=0, offset=1, key=evil, value="synthetic-content",
                               error=evil))
    now = at(30).timestamp()
    for html in (pages.overview(model, {}, 1, now), pages.report_page(model, model.reports[evil],
                 now), pages.search_page(model, evil, "", 1, now),
                 pages.search_page(model, "", evil, 1, now)):
        assert "<script>alert" not in html
        assert "&lt;script&gt;" in html
    # a dead letter's content: never shown
    assert "synthetic-content" not in pages.overview(model, {}, 1, now)


def test_the_report_page_says_who_got_what() -> None:
    model = ReadModel(ack_timeout_s=30)
    referred(model, "r1", ["a", "b"])
    ack(model, "r1", "a", None, 3)
    retracted(model, "r1", ["a", "b"])
    ack(model, "r1", "a", "correction", 12)
    html = pages.report_page(model, model.reports["r1"], at(100).timestamp())
    assert 'data-agency="a"' in html and 'data-state="acknowledged"' in html
    assert 'data-state="overdue"' in html  # b never acknowledged, 90 s after
    assert 'data-state="UNVERIFIED"' in html and 'data-state="verified"' in html


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


def test_a_dead_letters_cause_never_quotes_the_record() -> None:
    from services.console.model import cause

    error = ("ValidationError: 1 validation error for ReportValidated\nreport.platform\n  "
             "Input should be a valid string [type=string_type, input_value={'secret': 1}, "
             "input_type=dict]")
    assert cause(error) == "ValidationError: 1 validation error for ReportValidated"
    assert cause("X: bad input_value='synthetic secret', input_type=str") == (
        "X: bad input_value=…, input_type=str")


def test_public_reports_wait_in_triage_until_released_or_closed_in_any_order() -> None:
    model = ReadModel()

    def validated(report: str, when: float, source: str = "public") -> None:
        model.apply(*events.record(topics.REPORTS_VALIDATED, event_id=f"v{report}",
                                   report_id=report, esp_id="public form", report=Report(),
                                   source=source, occurred_at=at(when)))

    validated("p1", 1)
    validated("p2", 0)
    validated("e1", 0, source="esp")  # a provider's report is never triaged here
    assert list(sorted(model.triage, key=model.triage.__getitem__)) == ["p2", "p1"]
    model.apply(*events.record(topics.REPORTS_CLOSED, event_id="c", report_id="p2",
                               analyst_id="a1", reason="synthetic", occurred_at=at(5)))
    assert list(model.triage) == ["p1"] and model.reports["p2"].state == "closed"
    # Released before its acceptance is read (topics are read side by side): never queued.
    model.apply(*events.record(
        topics.REPORTS_SUPPLEMENTED, event_id="s3", report_id="p3", esp_id="public form",
        report=Report(), agencies=["a"], priority=Priority.NORMAL, jurisdiction="US",
        rules_version="1", source="public", occurred_at=at(3)))
    validated("p3", 2)
    assert "p3" not in model.triage
    page = pages.triage_page(model, 1, at(60).timestamp())
    assert 'data-report="p1"' in page and 'data-report="p2"' not in page
    shown = pages.report_page(model, model.reports["p1"], at(60).timestamp())
    assert 'class="badge public"' in shown
    assert "an ESP" in pages.report_page(model, model.reports["e1"], at(60).timestamp())
