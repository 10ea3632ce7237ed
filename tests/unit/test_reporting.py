"""The reporting core's decisions (services/intake/reporting.py) over reports kept in memory
(tests/intake_memory.py): what each step answers, in the domain's words, and what the pipeline
gets. No Redis, no broker; how the doors say these answers is tested against the real ones
(tests/integration/test_ispws_api.py, test_v1_idempotency.py, test_public_form.py)."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from opentelemetry.trace import NoOpTracer

from services.intake import documents
from services.intake.answers import REFUSALS, refusal
from services.intake.files import FileStore, Received, Sink
from services.intake.ids import ReportIds
from services.intake.lifecycle import DraftState
from services.intake.mapping import report_from
from services.intake.outcomes import (
    Added,
    FileAdded,
    Finished,
    Opened,
    Reason,
    Refused,
    ReportView,
    RetractionRequested,
    Submitted,
)
from services.intake.receipts import Tokens
from services.intake.reporting import MESSAGE_OVERHEAD, Policy, Reporting, Reservation
from shared.audiences import Kind
from shared.contracts import Report
from tests.intake_memory import WINDOWS, Clock, MemoryReports
from tests.ispws_support import report_xml

ESP, OTHER = "esp-a", "esp-b"
POLICY = Policy(strict_compat=False, max_message_bytes=1024 * 1024)


@pytest.fixture
def reports() -> MemoryReports:
    return MemoryReports()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(tmp_path: Path, reports: MemoryReports, clock: Clock) -> Reporting:
    return reporting(tmp_path, reports, clock)


def reporting(tmp_path: Path, reports: MemoryReports, clock: Clock,
              policy: Policy | None = None) -> Reporting:
    return Reporting(reports, FileStore(tmp_path / "files"), ReportIds(node=7),
                     policy or POLICY, NoOpTracer(), clock)


def report(*, batched: bool = False) -> Report:
    return report_from(documents.read(report_xml(batched=batched), "text/xml", "report"))


async def opened(svc: Reporting, esp_id: str = ESP, **kwargs: bool) -> str:
    outcome = await svc.open(esp_id, report(**kwargs), None)
    assert isinstance(outcome, Opened), outcome
    return outcome.report_id


async def added(svc: Reporting, report_id: str, content: bytes) -> str:
    outcome = await svc.add_file(ESP, report_id, received(svc, content))
    assert isinstance(outcome, FileAdded), outcome
    return outcome.file_id


def received(svc: Reporting, content: bytes) -> Received:
    sink = Sink(svc.files, 1 << 20)
    sink.write(content)
    return sink.close("synthetic.jpg")


def reason(outcome: object) -> Reason | None:
    return outcome.reason if isinstance(outcome, Refused) else None


async def test_another_esps_report_is_no_report_at_all(
        svc: Reporting, reports: MemoryReports) -> None:
    """Another ESP's report is answered as one that does not exist, whatever the step."""
    theirs = await opened(svc, OTHER)
    for report_id in (theirs, "123456789", "not an id " * 10):
        for outcome in (await svc.status(ESP, report_id), await svc.finish(ESP, report_id),
                        await svc.retract(ESP, report_id, None),
                        await svc.may_upload(ESP, report_id),
                        await svc.add_file(ESP, report_id, received(svc, b"synthetic")),
                        await svc.describe_file(ESP, report_id, "0" * 32, {})):
            assert reason(outcome) is Reason.NO_SUCH_REPORT, (report_id, outcome)
            assert isinstance(outcome, Refused) and len(outcome.detail) < 60
    assert reports.events(theirs) == [Kind.OPENED]
    assert isinstance(await svc.status(OTHER, theirs), ReportView)


async def test_a_report_is_opened_completed_and_finished_with_its_receipt(
        svc: Reporting, reports: MemoryReports) -> None:
    report_id = await opened(svc)
    first = await added(svc, report_id, b"synthetic content")
    again = await added(svc, report_id, b"synthetic content")
    described = await svc.describe_file(ESP, report_id, first,
                                        {"fileViewedByEsp": "true", "fileRelevance": "Reported"})
    assert not isinstance(described, Refused), described
    finished = await svc.finish(ESP, report_id)
    assert finished == Finished(report_id, [first, again])
    assert reports.events(report_id) == [Kind.OPENED, Kind.FILE_UPLOADED, Kind.FILE_UPLOADED,
                                         Kind.FILE_DESCRIBED, Kind.FINISHED]
    # The finished report carries its files as last described; the same content, flagged.
    submitted = json.loads(reports.sent[report_id][-1].value)
    files = {f["file_id"]: f for f in submitted["report"]["files"]}
    assert files[first]["details"]["fileViewedByEsp"] == "true"
    assert files[again]["duplicate_of"] == first and files[first]["duplicate_of"] is None
    view = await svc.status(ESP, report_id)
    assert isinstance(view, ReportView)
    assert (view.state, view.status, view.abandoned_after) == (DraftState.FINISHED, "received",
                                                               None)


async def test_a_finished_report_takes_a_retraction_and_nothing_else(
        svc: Reporting, reports: MemoryReports) -> None:
    report_id = await opened(svc)
    assert isinstance(await svc.finish(ESP, report_id), Finished)
    assert reason(await svc.finish(ESP, report_id)) is Reason.FINISHED
    assert reason(await svc.may_upload(ESP, report_id)) is Reason.FINISHED
    assert reason(await svc.describe_file(ESP, report_id, "0" * 32, {})) is Reason.FINISHED
    retracted = await svc.retract(ESP, report_id, "wrong account")
    assert retracted == RetractionRequested(report_id, post_finish=True)
    command = json.loads(reports.sent[report_id][-1].value)
    assert command["reason"] == "post-finish retraction: wrong account"
    assert command["requested_by"] == "esp"
    assert reason(await svc.retract(ESP, report_id, None)) is Reason.RETRACTED
    assert reports.events(report_id)[-1] == Kind.RETRACTION_REQUESTED


async def test_strict_compatibility_refuses_a_retraction_after_finish(
        tmp_path: Path, reports: MemoryReports, clock: Clock) -> None:
    svc = reporting(tmp_path, reports, clock, replace(POLICY, strict_compat=True))
    finished, cancelled = await opened(svc), await opened(svc)
    await svc.finish(ESP, finished)
    assert reason(await svc.retract(ESP, finished, None)) is Reason.FINISHED
    assert await svc.retract(ESP, cancelled, None) == RetractionRequested(cancelled, False)
    assert json.loads(reports.sent[cancelled][-1].value)["reason"] == "cancelled by the ESP"


async def test_past_its_deadline_an_open_report_refuses_every_step_as_abandoned(
        svc: Reporting, clock: Clock) -> None:
    report_id = await opened(svc)
    file_id = await added(svc, report_id, b"synthetic")
    view = await svc.status(ESP, report_id)
    assert isinstance(view, ReportView) and view.abandoned_after is not None
    clock.now += WINDOWS.after_open_s + 1
    for outcome in (await svc.finish(ESP, report_id), await svc.retract(ESP, report_id, None),
                    await svc.add_file(ESP, report_id, received(svc, b"late")),
                    await svc.describe_file(ESP, report_id, file_id, {})):
        assert reason(outcome) is Reason.ABANDONED, outcome


async def test_a_retry_completes_a_step_whose_event_waits_for_the_broker(
        svc: Reporting, reports: MemoryReports) -> None:
    """The broker away: a step is accepted with its event kept; the ESP's retry (its answer was
    lost) is answered as the first was, and the pipeline gets the event once."""
    finishing, retracting = await opened(svc), await opened(svc)
    reports.broker_away = True
    for _ in range(2):
        assert isinstance(await svc.finish(ESP, finishing), Finished)
        assert isinstance(await svc.retract(ESP, retracting, None), RetractionRequested)
    assert reports.events(finishing) == reports.events(retracting) == [Kind.OPENED]
    await reports.sweep()
    assert reports.events(finishing) == [Kind.OPENED, Kind.FINISHED]
    assert reports.events(retracting) == [Kind.OPENED, Kind.RETRACTION_REQUESTED]
    # Sent: a retry now is a second call, refused.
    assert reason(await svc.finish(ESP, finishing)) is Reason.FINISHED
    assert reason(await svc.retract(ESP, retracting, None)) is Reason.RETRACTED


async def test_a_files_details_are_taken_once_for_a_file_of_the_report(
        svc: Reporting, reports: MemoryReports) -> None:
    report_id = await opened(svc)
    file_id = await added(svc, report_id, b"synthetic")
    missing = await svc.describe_file(ESP, report_id, "f" * 32, {"fileViewedByEsp": "true"})
    assert reason(missing) is Reason.NO_SUCH_FILE
    invalid = await svc.describe_file(ESP, report_id, file_id, {"exifViewedByEsp": "true"})
    assert isinstance(invalid, Refused) and invalid.reason is Reason.INVALID
    assert [e.path for e in invalid.errors] == ["fileViewedByEsp"]
    reports.broker_away = True
    details = {"fileViewedByEsp": "true"}
    assert not isinstance(await svc.describe_file(ESP, report_id, file_id, details), Refused)
    # Its retry while the event waits completes it; once sent, another is refused.
    assert not isinstance(await svc.describe_file(ESP, report_id, file_id, details), Refused)
    await reports.sweep()
    twice = await svc.describe_file(ESP, report_id, file_id, details)
    assert isinstance(twice, Refused) and twice.reason is Reason.DESCRIBED
    assert twice.detail == "file details were already sent for this file"
    assert reports.events(report_id).count(Kind.FILE_DESCRIBED) == 1


async def test_a_batched_report_is_checked_at_finish_and_stays_open(svc: Reporting) -> None:
    report_id = await opened(svc, batched=True)
    refused = await svc.finish(ESP, report_id)
    assert isinstance(refused, Refused) and refused.reason is Reason.INVALID
    assert "files" in [e.path for e in refused.errors]
    view = await svc.status(ESP, report_id)
    assert isinstance(view, ReportView) and view.state is DraftState.OPEN


async def test_a_report_too_large_for_the_pipeline_is_refused_and_kept_nowhere(
        tmp_path: Path, reports: MemoryReports, clock: Clock) -> None:
    small = replace(POLICY, max_message_bytes=MESSAGE_OVERHEAD + 200)
    svc = reporting(tmp_path, reports, clock, small)
    for outcome in (await svc.open(ESP, report(), None), await svc.submit(ESP, report(), None)):
        assert reason(outcome) is Reason.TOO_LARGE
    assert reports.drafts == {}


async def test_a_report_supersedes_only_one_of_its_esps_own(svc: Reporting) -> None:
    theirs, mine = await opened(svc, OTHER), await opened(svc)
    refused = await svc.submit(ESP, report(), theirs)
    assert isinstance(refused, Refused) and refused.reason is Reason.NO_SUCH_REPORT
    assert "superseded" in refused.detail
    submitted = await svc.submit(ESP, report(), mine)
    assert isinstance(submitted, Submitted)
    view = await svc.status(ESP, submitted.report_id)
    assert isinstance(view, ReportView) and view.supersedes == mine


async def test_every_run_under_one_reservation_makes_one_report(
        svc: Reporting, reports: MemoryReports) -> None:
    """An Idempotency-Key's runs: the first made the report and its answer was lost (its event
    waiting); the next lands on the same report and sends the event, once. Another ESP's run
    with the same id in hand makes a report of its own."""
    reservation = Reservation(svc.ids.next(), "slot of a key")
    reports.broker_away = True
    first = await svc.submit(ESP, report(), None, reservation)
    reports.broker_away = False
    again = await svc.submit(ESP, report(), None, reservation)
    assert isinstance(first, Submitted) and first == again
    assert reports.events(first.report_id) == [Kind.SUBMITTED]
    theirs = await svc.submit(OTHER, report(), None, reservation)
    assert isinstance(theirs, Submitted) and theirs.report_id != first.report_id


async def test_a_report_submitted_whole_is_never_finished(
        svc: Reporting, reports: MemoryReports) -> None:
    """A /v1 report starts finished: /ispws finish refuses it, even while its submitted event
    (the same event id as a finish's) waits for the broker."""
    reports.broker_away = True
    submitted = await svc.submit(ESP, report(), None)
    assert isinstance(submitted, Submitted)
    assert reason(await svc.finish(ESP, submitted.report_id)) is Reason.FINISHED
    assert isinstance(await svc.retract(ESP, submitted.report_id, None), RetractionRequested)


async def test_information_is_added_to_a_public_report_with_its_code_only(
        svc: Reporting, reports: MemoryReports) -> None:
    tokens = Tokens(b"synthetic key", 0, 3600)
    code = tokens.code("nonce-1")
    public = await svc.file_public(report(), None, code, Reservation(svc.ids.next(), "form 1"))
    assert isinstance(public, Submitted)
    esps = await opened(svc)
    wrong = tokens.code("nonce-2")
    for report_id, given in ((public.report_id, wrong), (esps, code), ("123", code)):
        assert reason(await svc.add_information(report_id, given, "more", "form 2")) is (
            Reason.NO_SUCH_REPORT)
    for form, text in (("form 2", "more"), ("form 2", "more"), ("form 3", "and more")):
        assert await svc.add_information(public.report_id, code.lower(), text, form) == (
            Added(public.report_id))
    # A resend of the same form is the same addition: one event id, which consumers keep once.
    additions = [e.event_id for e in reports.sent[public.report_id][1:]]
    assert len(additions) == 3 and len(set(additions)) == 2


def test_every_refusal_has_its_cybertipline_answer() -> None:
    """Each reason the core refuses with is a code /ispws and /v1 answer (docs/ispws.md)."""
    assert set(REFUSALS) == set(Reason)
    answers = {r: (int(refusal(Refused(r)).code), refusal(Refused(r)).status) for r in Reason}
    assert answers[Reason.NO_SUCH_REPORT] == (5001, 404)
    assert answers[Reason.NO_SUCH_FILE] == (5002, 404)
    assert answers[Reason.RETRACTED] == (5101, 409)
    assert answers[Reason.FINISHED] == (5102, 409)
    assert answers[Reason.ABANDONED] == (5103, 409)
    assert answers[Reason.DESCRIBED] == (4000, 409)
    assert answers[Reason.INVALID] == (4100, 400)
    assert answers[Reason.TOO_LARGE] == (4000, 413)
