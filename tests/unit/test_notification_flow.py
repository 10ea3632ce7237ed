"""The notification flow's steps over the in-memory ledger and awaiting-ack stores
(tests/notification_memory.py): what each agency receives, in what order, and what is recorded.
The same steps run against the real broker and Redis in tests/integration (test_acks.py,
test_retraction_invariant.py)."""

import json
from pathlib import Path

import pytest

from services.notification.flow import NotificationFlow, Recipients
from services.notification.notices import referral_notice
from shared import topics
from shared.agencies import AgencyRegistry
from shared.batches import Poison
from shared.contracts import (
    AgencyResponse,
    Amendment,
    AmendReport,
    Change,
    FileInfo,
    NoticeAcknowledged,
    Priority,
    Report,
    ReportRetracted,
    ReportSupplemented,
    RetractReport,
    now,
)
from shared.signing import Signer
from tests.integration.agency_helpers import registered
from tests.notification_memory import (
    Clock,
    MemoryAwaiting,
    MemoryLedger,
    MemoryTimeline,
    Wire,
)

AGENCIES = ["icac-a", "icac-b"]
REPORT = "r-1"


class Flow:
    def __init__(self) -> None:
        self.wire, self.ledger, self.clock = Wire(), MemoryLedger(), Clock()
        self.awaiting = MemoryAwaiting(ack_timeout_s=300, clock=self.clock)
        self.timeline = MemoryTimeline()
        self.run = NotificationFlow(self.wire, self.ledger, self.timeline, None, self.awaiting)

    def kinds(self, agency: str) -> list[str]:
        return [n.kind for n in self.wire.notices(agency) if n.report_id == REPORT]


@pytest.fixture
def flow() -> Flow:
    return Flow()


def supplemented(files: list[FileInfo] | None = None) -> ReportSupplemented:
    return ReportSupplemented(
        event_id="e", report_id=REPORT, esp_id="esp-1", report=Report(files=files or []),
        agencies=AGENCIES, priority=Priority.HIGH, jurisdiction="TX", rules_version="v1")


def retraction(by: str = "esp") -> RetractReport:
    return RetractReport(command_id=f"c-{by}", report_id=REPORT, requested_by=by,  # type: ignore[arg-type]
                         actor=f"{by}-1", reason="proved wrong")


def amendment(version: int) -> AmendReport:
    return AmendReport(command_id=f"m{version}", report_id=REPORT, version=version,
                       priority=Priority.HIGH, change=Change(amendment=Amendment(
                           amendment_id=f"a{version}", path="platform", value=f"v{version}",
                           reason="synthetic", analyst_id="analyst-1", amended_at=now())))


async def test_each_agency_gets_one_referral_then_the_pipeline_hears_it(flow: Flow) -> None:
    assert await flow.run.refer([supplemented()]) == {REPORT: AGENCIES}
    assert await flow.run.refer([supplemented()]) == {}  # a redelivery: nothing again
    for agency in AGENCIES:
        assert flow.kinds(agency) == ["referral"]
    topics_sent = [t for t, _, _ in flow.wire.records]
    assert topics_sent.index(topics.REPORTS_REFERRED) > max(
        i for i, t in enumerate(topics_sent) if t.startswith("tipline.agency."))
    assert flow.ledger.states(REPORT) == dict.fromkeys(AGENCIES, "referred")
    assert flow.awaiting.notices == {}  # a referral awaits no ack
    assert flow.timeline.whats(REPORT) == ["referral delivered"] * len(AGENCIES)


async def test_a_report_retracted_first_is_never_referred(flow: Flow) -> None:
    await flow.run.retract([retraction()])
    assert await flow.run.refer([supplemented()]) == {}
    assert flow.wire.notices() == []
    assert "referral withheld" in flow.timeline.whats(REPORT)


async def test_a_retraction_corrects_every_agency_after_its_referral_once(flow: Flow) -> None:
    await flow.run.refer([supplemented()])
    await flow.run.retract([retraction("analyst")])
    await flow.run.retract([retraction("esp")])  # a second retraction corrects no one again
    await flow.wire.handled()
    for agency in AGENCIES:
        referral, correction = flow.wire.notices(agency)
        assert (referral.kind, correction.kind) == ("referral", "correction")
        assert correction.payload.kind == "correction"
        assert correction.payload.corrects_notice_id == referral.notice_id
        assert correction.payload.requested_by == "analyst"  # the first retraction's mark
        assert correction.priority == Priority.HIGH
    assert flow.ledger.states(REPORT) == dict.fromkeys(AGENCIES, "corrected")
    retracted = [ReportRetracted.model_validate_json(v)
                 for v in flow.wire.events(topics.REPORTS_RETRACTED)]
    assert [r.corrected_agencies for r in retracted] == [AGENCIES, []]
    assert sorted(flow.awaiting.states(REPORT).values()) == ["awaiting", "awaiting"]


async def test_retracted_while_the_referral_was_in_flight_corrected_after_it(flow: Flow) -> None:
    referred = await flow.run.refer([supplemented()], confirm_now=False)
    await flow.run.retract([retraction()])  # the referrals are not confirmed yet: left to them
    assert all(flow.kinds(a) == ["referral"] for a in AGENCIES)
    await flow.run.confirm({r: Recipients(a, Priority.HIGH) for r, a in referred.items()})
    assert all(flow.kinds(a) == ["referral", "correction"] for a in AGENCIES)
    assert flow.ledger.states(REPORT) == dict.fromkeys(AGENCIES, "corrected")


async def test_amendments_follow_the_referral_and_stop_at_the_retraction(flow: Flow) -> None:
    referred = await flow.run.refer([supplemented()], confirm_now=False)
    await flow.run.amend([amendment(1)])  # while the referral is in flight: kept for it
    assert all(flow.kinds(a) == ["referral"] for a in AGENCIES)
    await flow.run.confirm({r: Recipients(a, Priority.HIGH) for r, a in referred.items()})
    await flow.run.amend([amendment(2)])
    await flow.run.retract([retraction()])
    await flow.run.amend([amendment(3)])
    for agency in AGENCIES:
        got = flow.wire.notices(agency)
        assert [n.kind for n in got] == ["referral", "amendment", "amendment", "correction"]
        assert [n.payload.version for n in got if n.payload.kind == "amendment"] == [1, 2]
    assert "amendment withheld" in flow.timeline.whats(REPORT)


async def test_an_unacked_correction_is_resent_as_sent_then_escalated(
    flow: Flow, tmp_path: Path
) -> None:
    routing, signers = registered(tmp_path, AGENCIES)
    registry = AgencyRegistry(routing)
    await flow.run.refer([supplemented()])
    await flow.run.retract([retraction()])
    acking, silent = (next(n for n in flow.wire.notices(a) if n.kind == "correction")
                      for a in AGENCIES)

    def ack(notice_id: str, agency: str, signer: Signer | None) -> AgencyResponse:
        doc = AgencyResponse(response_id=f"ack-{agency}", agency_id=agency, report_id=REPORT,
                             kind="ack", notice_id=notice_id).model_dump(mode="json")
        return AgencyResponse.model_validate_json(json.dumps(signer.sign(doc) if signer
                                                             else doc))

    fact = await flow.run.acknowledge(ack(acking.notice_id, AGENCIES[0], signers[AGENCIES[0]]),
                                      registry)
    assert isinstance(fact, NoticeAcknowledged) and fact.kind == "correction" and not fact.late
    with pytest.raises(Poison, match="not signed"):  # anyone could write it: it counts for none
        await flow.run.acknowledge(ack(silent.notice_id, AGENCIES[1], None), registry)
    with pytest.raises(Poison, match="acknowledged a notice sent to"):
        await flow.run.acknowledge(ack(silent.notice_id, AGENCIES[0], signers[AGENCIES[0]]),
                                   registry)
    first = [v for t, _, v in flow.wire.records if t == f"tipline.agency.{AGENCIES[1]}"][-1]
    for _ in range(2):  # re-sent twice, the very bytes first sent
        flow.clock.now += 301
        assert await flow.run.resend_overdue(max_resends=2) == 1
        assert [v for t, _, v in flow.wire.records
                if t == f"tipline.agency.{AGENCIES[1]}"][-1] == first
    flow.clock.now += 301
    await flow.run.resend_overdue(max_resends=2)
    assert flow.awaiting.states(REPORT) == {acking.notice_id: "acked",
                                            silent.notice_id: "escalated"}
    assert len(flow.wire.events(topics.NOTICES_RESENT)) == 2
    assert len(flow.wire.events(topics.NOTICES_ESCALATED)) == 1
    flow.clock.now += 301
    assert await flow.run.resend_overdue(max_resends=2) == 0  # settled: never due again
    late = await flow.run.acknowledge(ack(silent.notice_id, AGENCIES[1], signers[AGENCIES[1]]),
                                      registry)
    assert isinstance(late, NoticeAcknowledged) and late.late


def test_a_referral_says_which_files_no_person_at_the_esp_viewed() -> None:
    files = [FileInfo(file_id="seen", details={"fileViewedByEsp": "true",
                                               "industryClassification": "A1"}),
             FileInfo(file_id="unseen", details={"fileViewedByEsp": {"#text": "false"}}),
             FileInfo(file_id="unsaid")]
    notice = referral_notice(supplemented(files), AGENCIES[0])
    assert notice.payload.kind == "referral"
    shown = {f.file_id: (f.fileViewedByEsp, f.industryClassification)
             for f in notice.payload.files}
    assert shown == {"seen": (True, "A1"), "unseen": (False, None), "unsaid": (None, None)}
    wire = json.loads(notice.model_dump_json())
    assert wire["payload"]["files"][1]["fileViewedByEsp"] is False
