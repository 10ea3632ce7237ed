"""The console's store (SQLite files in the test's folder): counters that agree with the rows,
a batch and its offsets in one transaction, the attention queue and agency health, and a store
never erased."""

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from services.console import pages
from services.console.filters import Filters
from services.console.model import Report
from services.console.queries import Queries
from services.console.store import LAYOUT, Locked, Read, Store
from shared import topics
from shared.contracts import Priority
from shared.contracts import Report as Filed
from tipline import consolebench as events

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
TIMEOUT = 300.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def reads(pairs: list[tuple[str, BaseModel]], start: int = 0) -> list[Read]:
    return [Read(topic, 0, start + n, event) for n, (topic, event) in enumerate(pairs)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "console")
    yield opened
    opened.close()


def queries(store: Store, now: datetime) -> Queries:
    return Queries(store.db, now.timestamp(), TIMEOUT, 1)


def matches(report: Report, f: Filters, now: float) -> bool:
    """A filter, evaluated the slow way on a whole report (overdue with an agency: at that
    agency)."""
    since, until = f.window(now)
    overdue = any(t.correction() == "pending" and t.since() is not None
                  and t.since() < now - TIMEOUT  # type: ignore[operator]
                  for a, t in report.agencies.items() if a == f.agency or not f.agency)
    return all((
        not f.state or report.state == f.state,
        not f.esp or report.esp == f.esp,
        f.priority is None or report.priority == f.priority,
        not f.agency or f.agency in report.agencies,
        not f.correction or (overdue if f.correction == "overdue"
                             else report.correction() == f.correction),
        since is None or report.first >= since,
        until is None or report.first < until,
    ))


@pytest.mark.parametrize("walk", [20_000, 10])  # sorting what a filter keeps; or walking
def test_counts_and_pages_agree_with_the_reports(store: Store, walk: int,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.console.queries.WALK", walk)
    agencies = ["ag-a", "ag-b", "ag-c", "ag-d"]
    stream = list(events.synthetic_events(400, agencies, seed=3, span_s=7200))
    for start in range(0, len(stream), 97):  # batches that cut reports in two
        store.apply(reads(stream[start:start + 97], start), {})
    now = datetime.now(UTC)
    q = queries(store, now)
    every = [Report.load(doc) for (doc,) in store.db.execute("SELECT doc FROM docs")]
    assert len(every) == 400 == q.tally("reports")
    for query in ({}, {"state": "retracted"}, {"esp": "bench-esp-3"}, {"agency": "ag-b"},
                  {"priority": "imminent"}, {"correction": "escalated"},
                  {"correction": "overdue"}, {"correction": "acked", "agency": "ag-a"},
                  {"state": "referred", "esp": "bench-esp-1", "sort": "priority"},
                  {"agency": "ag-c", "state": "retracted", "sort": "priority", "order": "asc"},
                  {"agency": "ag-d", "correction": "overdue"}, {"agency": "ag-a", "last": "1h"},
                  {"last": "1h"}, {"since": (now - timedelta(minutes=90)).strftime(
                      "%Y-%m-%dT%H:%M"), "sort": "priority", "order": "asc"}):
        f = Filters.parse(query)
        want = [r for r in every if matches(r, f, now.timestamp())]
        found = q.reports(f, 1)
        assert found.total == len(want), query
        if f.sort == "first" and f.order == "desc":
            assert [r.report_id for r in found.rows] == [r.report_id for r in sorted(
                want, key=lambda r: r.first, reverse=True)][:25], query
        every_page = [r for p in range(1, found.pages + 1) for r in q.reports(f, p).rows]
        shown = [r.report_id for r in every_page]
        assert sorted(shown) == sorted(r.report_id for r in want), query
        keys = [(-1 if r.priority is None else r.priority, r.first) if f.sort == "priority"
                else r.first for r in every_page]
        assert keys == sorted(keys, reverse=f.order == "desc"), query
    # ESPs by prefix, their reports newest first.
    esps = q.esps("bench-esp-1")
    mine = sorted((r for r in every if (r.esp or "").startswith("bench-esp-1")),
                  key=lambda r: r.first, reverse=True)
    assert sum(esps.values()) == len(mine) and set(esps) == {r.esp for r in mine}
    assert [r.report_id for r in q.by_esps(esps, 2).rows] == [r.report_id for r in mine[25:50]]
    # Agency counters agree with the tracks.
    for agency in agencies:
        health = q.health(agency)
        tracks = [r.agencies[agency] for r in every if agency in r.agencies]
        assert health.referred == sum(t.referral_at is not None for t in tracks)
        assert health.referrals_acked == sum(t.referral_acked_at is not None for t in tracks)
        assert health.escalated == sum(t.correction() == "escalated" for t in tracks)
        assert health.acked == sum(t.correction() == "acked" for t in tracks)
    # A page past the last shows the last, and says so.
    far = q.reports(Filters(), 10_000)
    assert (far.page, far.pages, far.clamped, len(far.rows)) == (16, 16, True, 400 - 15 * 25)


def test_a_batch_and_its_offsets_are_one_transaction(store: Store,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    first = reads([events.record(topics.REPORTS_SUBMITTED, event_id="s1", report_id="r1",
                                 esp_id="e", report=Filed(), occurred_at=at(0))])
    store.apply(first, {(topics.REPORTS_SUBMITTED, 0): 1})
    batch = reads([events.record(topics.REPORTS_SUBMITTED, event_id=f"s{n}", report_id=f"r{n}",
                                 esp_id="e", report=Filed(), occurred_at=at(n))
                   for n in (2, 3)], 1)

    def broken(self: Report) -> bytes:
        if self.report_id == "r3":
            raise OSError("disk full (synthetic)")
        return original(self)

    original = Report.dump
    monkeypatch.setattr(Report, "dump", broken)
    with pytest.raises(OSError):
        store.apply(batch, {(topics.REPORTS_SUBMITTED, 0): 3})
    monkeypatch.undo()
    # Nothing of the failed batch, its offsets neither: it is read again from the checkpoint.
    assert store.positions() == {(topics.REPORTS_SUBMITTED, 0): 1}
    assert [r for (r,) in store.db.execute("SELECT report_id FROM reports")] == ["r1"]
    assert queries(store, at(10)).tally("reports") == 1
    store.apply(batch, {(topics.REPORTS_SUBMITTED, 0): 3})
    assert store.positions() == {(topics.REPORTS_SUBMITTED, 0): 3}
    assert queries(store, at(10)).tally("reports") == 3
    store.apply(batch, {(topics.REPORTS_SUBMITTED, 0): 3})  # read twice: nothing new
    assert queries(store, at(10)).tally("reports") == 3


def story(store: Store) -> None:
    """Four agencies: `good` acknowledges, `slow` leaves a correction overdue, `stuck`'s
    correction is escalated, `wrong-key`'s acks are refused; and a dead letter."""
    pairs: list[tuple[str, BaseModel]] = []
    for n, agency in enumerate(("good", "slow", "stuck", "wrong-key")):
        rid = f"r{n}"
        pairs += [
            events.record(topics.REPORTS_SUPPLEMENTED, event_id=f"u{rid}", report_id=rid,
                          esp_id="e", report=Filed(), agencies=[agency], priority=n % 4,
                          jurisdiction="x", rules_version="1", occurred_at=at(0)),
            events.notice("referral", rid, agency, at(1)),
            events.record(topics.REPORTS_RETRACTED, event_id=f"x{rid}", report_id=rid,
                          requested_by="esp", actor="e", reason="synthetic",
                          corrected_agencies=[agency], occurred_at=at(10)),
            events.notice("correction", rid, agency, at(10))]
        if agency != "wrong-key":
            pairs.append(events.ack(rid, agency, None, at(2)))
    pairs += [events.ack("r0", "good", "correction", at(11)),
              events.resent("r2", "stuck", "correction", 1, at(400)),
              events.escalated("r2", "stuck", "correction", 1, at(800)),
              events.refused_ack("r3", "wrong-key", at(3), 1),
              events.refused_ack("r3", "wrong-key", at(12), 2),
              events.record(topics.DEAD_LETTERS, service="validation",
                            topic=topics.REPORTS_SUBMITTED, partition=0, offset=9, key="r9",
                            value="synthetic", error="ValidationError: synthetic",
                            failed_at=at(20))]
    store.apply(reads(pairs), {})


def test_the_attention_queue_and_agency_health(store: Store) -> None:
    story(store)
    now = at(1000)
    q = queries(store, now)
    agencies = ["good", "slow", "stuck", "wrong-key"]
    queue = q.attention(agencies, 1)
    kinds = [(a.kind, a.agency_id, a.report_id) for a in queue.page.rows]
    assert kinds == [("refused", "wrong-key", "r3"), ("escalated", "stuck", "r2"),
                     ("overdue", "wrong-key", "r3"), ("overdue", "slow", "r1"),
                     ("unacknowledged", "wrong-key", "r3"), ("letters", None, "r9")]
    assert queue.counts == {"refused": 1, "escalated": 1, "overdue": 2, "unacknowledged": 1,
                            "letters": 1}
    # Overdue: the report of higher priority first (wrong-key's is 3, slow's 1).
    paged = [a.report_id for p in (1, 2, 3) for a in q.attention(agencies, p, size=2).page.rows]
    assert paged == [a.report_id for a in queue.page.rows]
    assert [a.kind for a in q.attention(agencies, 1, "overdue").page.rows] == ["overdue"] * 2
    refused = q.health("wrong-key")
    assert refused.refusing and refused.refused_since == at(3).timestamp()
    assert (refused.refused_lately, refused.refused_cause) == (2, "unknown key bench-unregistered")
    assert (refused.referred, refused.referrals_acked, refused.ack_rate) == (1, 0, 0.0)
    good = q.health("good")
    assert (good.referrals_acked, good.acked, good.last_ack_at) == (1, 1, at(11).timestamp())
    slow = q.health("slow")
    assert slow.next_due == (at(10).timestamp() + TIMEOUT, "re-send", "r1")
    assert (slow.overdue, slow.pending) == (1, 1)
    assert q.alerts()["stuck"]["escalated"] == 1 and q.alerts()["wrong-key"]["refused"] == 2
    # wrong-key registers its key: an accepted ack after the refusals ends them.
    store.apply(reads([events.ack("r3", "wrong-key", None, at(30))], 100), {})
    assert not queries(store, now).health("wrong-key").refusing
    assert queries(store, now).attention(agencies, 1).counts["refused"] == 0


def test_pages_show_the_cause_and_escape_whatever_the_topics_carry(store: Store) -> None:
    story(store)
    evil = '<script>alert("x")</script>'
    store.apply(reads([
        events.record(topics.REPORTS_VALIDATED, event_id="v", report_id=evil, esp_id=evil,
                      report=Filed(), occurred_at=at(0)),
        events.record(topics.DEAD_LETTERS, service="referral", topic="t", partition=0,
                      offset=1, key=evil, value="synthetic-content", error=evil,
                      failed_at=at(1))], 50), {})
    q = queries(store, at(1000))
    view = pages.View(q, {}, caught_up=True)
    report = q.report(evil)
    assert report is not None
    shown = [pages.overview(view, Filters(), 1, 1, ""), pages.report_page(view, report),
             pages.search_page(view, evil, "", 1), pages.search_page(view, "", evil, 1),
             pages.letters_page(view, "", "", "", 1), pages.agency_page(view, "wrong-key", {})]
    for html in shown:
        assert "<script>alert" not in html
        assert "synthetic-content" not in html  # a dead letter's content: never shown
    assert "&lt;script&gt;" in shown[0] and "&lt;script&gt;" in shown[1]
    assert "acks refused: unknown key bench-unregistered since" in shown[-1]


def test_reports_from_the_public_wait_in_triage_until_an_analyst_decides(store: Store) -> None:
    def validated(report: str, when: float, source: str = "public") -> tuple[str, BaseModel]:
        return events.record(topics.REPORTS_VALIDATED, event_id=f"v{report}", report_id=report,
                             esp_id="public form" if source == "public" else "esp-a",
                             report=Filed(), source=source, occurred_at=at(when))

    store.apply(reads([
        validated("p1", 1), validated("p2", 0), validated("e1", 0, source="esp"),
        # Released before its acceptance is read (topics are read side by side): never queued.
        events.record(topics.REPORTS_SUPPLEMENTED, event_id="s3", report_id="p3",
                      esp_id="public form", report=Filed(), agencies=["a"],
                      priority=Priority.NORMAL, jurisdiction="US", rules_version="1",
                      source="public", occurred_at=at(3)),
        validated("p3", 2)]), {})
    q = queries(store, at(60))
    assert q.triage(1).rows == [("p2", at(0).timestamp()), ("p1", at(1).timestamp())]
    # An analyst closes p2 (a later batch); the reporter adds to p1, which keeps waiting.
    store.apply(reads([
        events.record(topics.REPORTS_CLOSED, event_id="c2", report_id="p2", analyst_id="a1",
                      reason="synthetic", occurred_at=at(5)),
        events.record(topics.REPORTS_ADDITIONS, event_id="add-1", report_id="p1",
                      text="synthetic addition", occurred_at=at(6)),
        events.record(topics.DEAD_LETTERS_INTAKE, service="intake", topic="t", partition=0,
                      offset=1, key="k", value="synthetic-content", error="Poison: synthetic",
                      failed_at=at(7))], 10), {})
    q = queries(store, at(60))
    waiting = q.triage(1)
    assert (waiting.rows, waiting.total) == ([("p1", at(1).timestamp())], 1)
    closed = q.reports(Filters.parse({"state": "closed"}), 1)
    assert [r.report_id for r in closed.rows] == ["p2"] and closed.total == 1
    view = pages.View(q, {}, caught_up=True)
    page = pages.triage_page(view, 1)
    assert 'data-report="p1"' in page and 'data-report="p2"' not in page
    p1, e1 = q.report("p1"), q.report("e1")
    assert p1 is not None and e1 is not None
    assert 'class="badge public"' in pages.report_page(view, p1)
    assert "an ESP" in pages.report_page(view, e1)
    assert "information added by the reporter" in pages.report_page(view, p1)
    listed = pages.report_table(view, [p1, e1])
    assert listed.count('class="badge public"') == 1
    letters = pages.letters_page(view, "intake", "", "", 1)
    assert "Poison: synthetic" in letters and "synthetic-content" not in letters


def test_a_report_links_to_its_trace_where_a_trace_ui_is_configured(store: Store) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    topic, event = events.record(topics.REPORTS_SUBMITTED, event_id="s", report_id="r",
                                 esp_id="e", report=Filed(), occurred_at=at(0))
    store.apply([Read(topic, 0, 0, event, trace_id=trace)], {})
    q = queries(store, at(1))
    report = q.report("r")
    assert report is not None and report.trace_id == trace
    linked = pages.report_page(pages.View(q, {}, True, "http://jaeger/trace/{trace_id}"), report)
    assert f'href="http://jaeger/trace/{trace}"' in linked
    assert "/trace/" not in pages.report_page(pages.View(q, {}, True), report)


def test_a_store_is_never_erased_and_never_shared(tmp_path: Path) -> None:
    data = tmp_path / "console"
    store = Store(data)
    with pytest.raises(Locked, match="each copy of the console keeps its own"):
        Store(data)
    store.apply(reads([events.record(topics.REPORTS_SUBMITTED, event_id="s", report_id="r",
                                     esp_id="e", report=Filed(), occurred_at=at(0))]), {})
    store.db.execute("UPDATE meta SET value = '0' WHERE name = 'layout'")
    store.close()
    store = Store(data)  # an older layout: moved aside, a new one made
    assert queries(store, at(1)).tally("reports") == 0
    (aside,) = data.glob("console.db.*.aside")
    kept = sqlite3.connect(aside)
    assert kept.execute("SELECT report_id FROM reports").fetchall() == [("r",)]
    kept.close()
    assert store.db.execute("SELECT value FROM meta WHERE name = 'layout'").fetchone() == (
        str(LAYOUT),)
    store.close()


def test_prometheus_reads_each_agencys_figures_once_caught_up(store: Store) -> None:
    from prometheus_client import REGISTRY, generate_latest

    from services.console.alerts import PER_AGENCY_COLLECTOR

    story(store)
    PER_AGENCY_COLLECTOR.source = lambda: None  # rebuilding: nothing to say yet
    assert b"tipline_console_corrections_escalated{" not in generate_latest(REGISTRY)
    PER_AGENCY_COLLECTOR.source = lambda: (queries(store, at(1000)), {"idle"})
    try:
        text = generate_latest(REGISTRY).decode()
    finally:
        PER_AGENCY_COLLECTOR.source = None
    for line in ('tipline_console_corrections_escalated{agency="stuck"} 1.0',
                 'tipline_console_corrections_overdue{agency="slow"} 1.0',
                 'tipline_console_corrections_overdue{agency="wrong-key"} 1.0',
                 'tipline_console_referrals_unacknowledged{agency="wrong-key"} 1.0',
                 'tipline_console_acks_refused_total{agency="wrong-key"} 2.0',
                 'tipline_console_acks_refused_since_last_ack{agency="wrong-key"} 2.0',
                 'tipline_console_corrections_overdue{agency="idle"} 0.0'):
        assert line in text, line
