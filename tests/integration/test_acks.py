"""Acknowledgements on the real broker and Redis: the agency client verifies, dedupes and acks;
unacknowledged corrections are re-sent and then escalated; tampered notices are refused."""

import asyncio
import contextlib
import inspect
import json
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

from services.intake.timeline import Timeline
from services.notification import notices
from services.notification.awaiting import AwaitingAcknowledgement
from services.notification.flow import NotificationFlow
from services.notification.ledger import Ledger
from services.notification.referrals import ClaimAgencies, Retract
from shared.agencies import AgencyRegistry
from shared.batches import Poison, Publisher
from shared.contracts import (
    AgencyNotice,
    AgencyResponse,
    Amendment,
    Change,
    NoticeAcknowledged,
    OutcomeReported,
    Priority,
    Report,
    ReportSupplemented,
    now,
)
from shared.kafka import make_broker
from shared.settings import Settings
from shared.signing import Signer, ensure_keys
from shared.topics import AGENCY_ACKS, agency_topic
from tests.integration.agency_helpers import agency_ids, registered
from tipline.agency import AgencyClient


@pytest.fixture
def local(settings: Settings, tmp_path: Path) -> Settings:
    ensure_keys(tmp_path / "keys")
    return settings.model_copy(update={
        "tipline_keys_dir": tmp_path / "keys", "tipline_ack_timeout_s": 1.0,
        "tipline_max_resends": 2, "tipline_resend_tick_s": 0.1,
    })


@contextlib.asynccontextmanager
async def running(*coroutines: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


MARK = Retract("2026-01-01T00:00:00+00:00", "esp", "esp-1", "synthetic")


async def feed_acks(settings: Settings, report_id: str, flow: NotificationFlow,
                    registry: AgencyRegistry) -> None:
    """What the retraction service's ack subscriber does, for this report's responses."""
    consumer = AIOKafkaConsumer(
        AGENCY_ACKS, bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"test-{uuid.uuid4().hex}", auto_offset_reset="earliest", fetch_max_wait_ms=5,
        session_timeout_ms=1000, heartbeat_interval_ms=100)
    await consumer.start()
    try:
        async for record in consumer:
            response = AgencyResponse.model_validate_json(record.value)
            if response.report_id == report_id:
                with contextlib.suppress(Poison):  # refused: the service dead-letters it
                    await flow.acknowledge(response, registry)
    finally:
        await consumer.stop()


async def referred(redis: Redis, report_id: str, agencies: list[str]) -> Ledger:
    """The ledger, once the report's referral to these agencies was delivered."""
    ledger = Ledger(redis)
    await ledger.claim({report_id: ClaimAgencies(tuple(agencies), Priority.HIGH)})
    await ledger.confirm_referrals({report_id: agencies})
    return ledger


async def until(check: Callable[[], Any], timeout: float = 20) -> None:
    """Wait until check() (a value or an awaitable) is true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check() if inspect.iscoroutinefunction(check) else not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_unacked_corrections_are_resent_then_escalated(
    local: Settings, redis: Redis, tmp_path: Path
) -> None:
    broker = make_broker(local, "retraction")
    await broker.connect()
    outbox = AwaitingAcknowledgement(redis, local.tipline_ack_timeout_s)
    timeline = Timeline(redis)
    report_id = f"ack-{uuid.uuid4().hex}"
    acking, silent, forger = agency_ids(3)
    ledger = await referred(redis, report_id, [acking, silent, forger])
    routing, signers = registered(tmp_path, [acking, silent, forger])
    flow = NotificationFlow(Publisher(broker), ledger, timeline, Signer(local.tipline_keys_dir),
                            outbox)
    got_acking: list[AgencyNotice] = []
    got_silent: list[AgencyNotice] = []
    got_forger: list[AgencyNotice] = []
    loud = AgencyClient(local, acking, signer=signers[acking])
    quiet = AgencyClient(local, silent, auto_ack=False)
    # Acks, but unsigned, as anyone who can write to the acks topic could: they never count.
    forging = AgencyClient(local, forger)
    async with running(
        loud.collect(got_acking), quiet.collect(got_silent), forging.collect(got_forger),
        feed_acks(local, report_id, flow, AgencyRegistry(routing)),
        flow.follow_acks(local.tipline_max_resends, local.tipline_resend_tick_s),
    ):
        for client in (loud, quiet, forging):
            await client.ready()
        sent = await flow.sending.send([notices.correction_notice(report_id, a, MARK, Priority.HIGH)
                                for a in (acking, silent, forger)])

        async def settled() -> bool:
            fields = await timeline.fields(report_id)
            return fields.get("status") == "correction_escalated" and await outbox.states(
                report_id) == {sent[0].notice_id: "acked", sent[1].notice_id: "escalated",
                               sent[2].notice_id: "escalated"}
        await until(settled)
        await until(lambda: len(got_silent) == 1 and quiet.duplicates >= 2)
    await broker.stop()

    assert [n.notice_id for n in got_acking] == [sent[0].notice_id]
    assert [n.notice_id for n in got_silent] == [sent[1].notice_id]  # re-sends dropped by id
    assert got_silent[0].priority == Priority.HIGH
    assert forging.duplicates >= 2  # it acked every re-send, unsigned: none counted
    assert (await timeline.fields(report_id))["status"] == "correction_escalated"
    whats = [(e["what"], e.get("agency")) for e in await timeline.entries(report_id)]
    assert ("acknowledged", acking) in whats
    for unacked in (silent, forger):
        assert whats.count(("correction re-sent", unacked)) == 2
        assert ("correction escalated", unacked) in whats
        assert ("acknowledged", unacked) not in whats


async def test_the_client_refuses_tampered_and_unsigned_notices(local: Settings) -> None:
    (agency,) = agency_ids(1)
    signer, report_id = Signer(local.tipline_keys_dir), f"tamper-{uuid.uuid4().hex}"

    def genuine(n: int) -> AgencyNotice:
        change = Change(amendment=Amendment(
            amendment_id=f"m{n}", path="incident_type", value=n, reason="synthetic",
            analyst_id="analyst-1", amended_at=now()))
        return notices.signed(notices.amendment_notice(
            report_id, agency, n, change, Priority.NORMAL), signer)

    tampered = json.loads(genuine(1).model_dump_json())
    tampered["payload"]["amendment"]["value"] = 999
    unsigned = json.loads(genuine(2).model_dump_json())
    del unsigned["signature"]
    producer = AIOKafkaProducer(bootstrap_servers=local.kafka_bootstrap_servers)
    await producer.start()
    for doc in (tampered, unsigned, json.loads(genuine(3).model_dump_json()), "not json {"):
        value = doc.encode() if isinstance(doc, str) else json.dumps(doc).encode()
        await producer.send_and_wait(agency_topic(agency), value, key=report_id.encode())
    await producer.stop()

    client, got = AgencyClient(local, agency, auto_ack=False), list[AgencyNotice]()
    async with running(client.collect(got)):
        await until(lambda: len(got) + len(client.refused) >= 4)
    assert [(n.kind, n.payload.model_dump().get("version")) for n in got] == [("amendment", 3)]
    reasons = [reason for _, reason in client.refused]
    assert reasons[0].startswith("bad signature: signature does not match")
    assert reasons[1] == "bad signature: not signed"
    assert reasons[2].startswith("not a notice")


async def test_a_restarted_client_hands_over_no_old_notice(local: Settings, tmp_path: Path) -> None:
    """The client keeps what it took under its data dir: after a restart, a replayed notice is
    a repeat, and an old referral of a report it holds a correction for is refused."""
    (agency,) = agency_ids(1)
    signer, data, group = Signer(local.tipline_keys_dir), tmp_path / "agency", uuid.uuid4().hex
    r, s, q = (f"{n}-{uuid.uuid4().hex[:8]}" for n in ("r", "s", "q"))

    def referral(report_id: str) -> AgencyNotice:
        return notices.signed(notices.referral_notice(ReportSupplemented(
            event_id="e", report_id=report_id, esp_id="esp", report=Report(),
            agencies=[agency], priority=Priority.NORMAL, jurisdiction="TX",
            rules_version="v"), agency), signer)

    def correction(report_id: str) -> AgencyNotice:
        return notices.signed(notices.correction_notice(report_id, agency, MARK,
                                                        Priority.NORMAL), signer)

    async def publish(*sent: AgencyNotice) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=local.kafka_bootstrap_servers)
        await producer.start()
        for notice in sent:
            await producer.send_and_wait(agency_topic(agency), notice.model_dump_json().encode(),
                                         key=notice.report_id.encode())
        await producer.stop()

    old = referral(r)
    await publish(old, correction(r), correction(s))
    first = AgencyClient(local, agency, group, auto_ack=False, data_dir=data)
    got: list[AgencyNotice] = []
    async with running(first.collect(got)):
        await until(lambda: len(got) == 3)
    # Restarted; meanwhile the old referral comes again (replayed), an old referral of s (its
    # correction taken already) comes late, and then a new one.
    await publish(old, referral(s), referral(q))
    again = AgencyClient(local, agency, group, auto_ack=False, data_dir=data)
    got_again: list[AgencyNotice] = []
    async with running(again.collect(got_again)):
        await until(lambda: len(got_again) == 1 and again.duplicates == 1 and again.refused)
    assert [(n.kind, n.report_id) for n in got_again] == [("referral", q)]
    ((_, why),) = again.refused
    assert why == f"a referral of report {s}, which this agency holds a correction for (retracted)"
    assert (data / "notices.sqlite3").stat().st_mode & 0o777 == 0o600


def signed(response: AgencyResponse, signer: Signer | None) -> AgencyResponse:
    """A response as the ack subscriber parses it off the wire (signed, or not)."""
    doc = response.model_dump(mode="json")
    return AgencyResponse.model_validate_json(json.dumps(signer.sign(doc) if signer else doc))


async def test_outcomes_show_in_the_timeline_and_foreign_acks_are_refused(
    local: Settings, redis: Redis, tmp_path: Path
) -> None:
    outbox, timeline = AwaitingAcknowledgement(redis, 60), Timeline(redis)
    report_id = f"out-{uuid.uuid4().hex}"
    mine, other, stranger = agency_ids(3)
    routing, signers = registered(tmp_path, [mine, other, stranger])
    registry = AgencyRegistry(routing)
    ledger = await referred(redis, report_id, [mine, other])
    flow = NotificationFlow(Publisher(make_broker(local, "retraction")), ledger, timeline,
                            awaiting=outbox)
    correction = notices.correction_notice(report_id, mine, MARK, Priority.NORMAL)
    await outbox.track([notices.encoded(correction, None)])
    with pytest.raises(Poison, match="acknowledged a notice sent to"):
        await flow.acknowledge(signed(AgencyResponse(
            response_id="r1", agency_id=other, report_id=report_id, kind="ack",
            notice_id=correction.notice_id), signers[other]), registry)
    with pytest.raises(Poison, match="which was not sent to it"):
        await flow.acknowledge(signed(AgencyResponse(
            response_id="r3", agency_id=other, report_id=report_id, kind="ack",
            notice_id=notices.notice_id("referral", report_id, mine)), signers[other]), registry)
    # An agency the report never went to answers for nothing: no outcome, no ack.
    for foreign in (
        AgencyResponse(response_id="r-outcome", agency_id=stranger, report_id=report_id,
                       kind="outcome", outcome="closed", text="synthetic"),
        AgencyResponse(response_id="r-ack", agency_id=stranger, report_id=report_id, kind="ack",
                       notice_id=notices.notice_id("referral", report_id, stranger)),
    ):
        with pytest.raises(Poison, match=f"{stranger} never received report"):
            await flow.acknowledge(signed(foreign, signers[stranger]), registry)
    fact = await flow.acknowledge(signed(AgencyResponse(
        response_id="r2", agency_id=mine, report_id=report_id, kind="outcome",
        outcome="investigating", text="synthetic note"), signers[mine]), registry)
    assert isinstance(fact, OutcomeReported) and fact.outcome == "investigating"
    assert await outbox.states(report_id) == {correction.notice_id: "awaiting"}
    entries = await timeline.entries(report_id)
    assert entries[-1]["what"] == "agency outcome"
    assert entries[-1]["outcome"] == "investigating"


async def test_only_acks_signed_by_a_registered_key_count(
    local: Settings, redis: Redis, tmp_path: Path
) -> None:
    keyed, keyless = agency_ids(2)
    routing, signers = registered(tmp_path, [keyed, keyless], keyless=(keyless,))
    registry, stranger = AgencyRegistry(routing), tmp_path / "stranger"
    ensure_keys(stranger)
    outbox, timeline = AwaitingAcknowledgement(redis, 60), Timeline(redis)
    report_id = f"signed-{uuid.uuid4().hex}"
    ledger = await referred(redis, report_id, [keyed, keyless])
    flow = NotificationFlow(Publisher(make_broker(local, "retraction")), ledger, timeline,
                            awaiting=outbox)

    def ack(agency: str, signer: Signer | None) -> AgencyResponse:
        return signed(AgencyResponse(
            response_id=uuid.uuid4().hex, agency_id=agency, report_id=report_id, kind="ack",
            notice_id=notices.notice_id("referral", report_id, agency)), signer)

    refused = {
        "unsigned": ack(keyed, None),
        "signed by a key it did not register": ack(keyed, Signer(stranger)),
        "unknown agency": ack("nobody", None),
        "agency with no registered key": ack(keyless, None),
        "agency with no key, signed anyway": ack(keyless, Signer(stranger)),
    }
    for why, forged in refused.items():
        with pytest.raises(Poison):
            await flow.acknowledge(forged, registry)
            pytest.fail(f"accepted: {why}")
    fact = await flow.acknowledge(ack(keyed, signers[keyed]), registry)
    assert isinstance(fact, NoticeAcknowledged) and fact.agency_id == keyed
    acked = [e["agency"] for e in await timeline.entries(report_id) if e["what"] == "acknowledged"]
    assert acked == [keyed]
