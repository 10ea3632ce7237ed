"""Acknowledgements on the real broker and Redis: the agency client verifies, dedupes and acks;
unacknowledged corrections are re-sent and then escalated; tampered notices are refused."""

import asyncio
import contextlib
import inspect
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

from services.retraction.handlers import follow_acks, on_response
from shared import notices
from shared.acks import Outbox
from shared.agencies import AgencyRegistry
from shared.contracts import AgencyNotice, AgencyResponse, Priority
from shared.delivery import Poison
from shared.kafka import make_broker
from shared.settings import Settings
from shared.signing import Signer, ensure_keys
from shared.timeline import Timeline
from shared.topics import AGENCY_ACKS, agency_topic
from tests.integration.agency_helpers import agency_ids, agency_key, routing_file
from tipline.agency import AgencyClient


@pytest.fixture
def local(settings: Settings, tmp_path: Path) -> Settings:
    ensure_keys(tmp_path / "keys")
    return settings.model_copy(update={
        "tipline_keys_dir": tmp_path / "keys", "tipline_ack_timeout_s": 1.0,
        "tipline_max_resends": 2, "tipline_resend_tick_s": 0.1,
    })


@contextlib.asynccontextmanager
async def running(*coroutines: object) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c) for c in coroutines]  # type: ignore[arg-type]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def feed_acks(settings: Settings, report_id: str, outbox: Outbox, timeline: Timeline) -> None:
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
                await on_response(outbox, timeline, response)
    finally:
        await consumer.stop()


async def until(check: Callable[[], Any], timeout: float = 20) -> None:
    """Wait until check() (a value or an awaitable) is true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check() if inspect.iscoroutinefunction(check) else not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_unacked_corrections_are_resent_then_escalated(local: Settings, redis: Redis) -> None:
    broker = make_broker(local, "test-acks")
    await broker.connect()
    outbox, timeline = Outbox(redis, local.tipline_ack_timeout_s), Timeline(redis)
    report_id = f"ack-{uuid.uuid4().hex}"
    acking, silent = agency_ids(2)
    got_acking: list[AgencyNotice] = []
    got_silent: list[AgencyNotice] = []
    loud, quiet = AgencyClient(local, acking), AgencyClient(local, silent, auto_ack=False)
    async with running(
        loud.collect(got_acking), quiet.collect(got_silent),
        feed_acks(local, report_id, outbox, timeline),
        follow_acks(broker, outbox, timeline, local),
    ):
        await loud.ready()
        await quiet.ready()
        sent = await notices.send(broker, [
            notices.correction_notice(report_id, a, {"reason": "synthetic"}, Priority.HIGH)
            for a in (acking, silent)
        ], notices.Dispatch(Signer(local.tipline_keys_dir), outbox))

        async def settled() -> bool:
            fields = await timeline.fields(report_id)
            return fields.get("status") == "correction_escalated" and await outbox.states(
                report_id) == {sent[0].notice_id: "acked", sent[1].notice_id: "escalated"}
        await until(settled)
        await until(lambda: len(got_silent) == 1 and quiet.duplicates >= 2)
    await broker.stop()

    assert [n.notice_id for n in got_acking] == [sent[0].notice_id]
    assert [n.notice_id for n in got_silent] == [sent[1].notice_id]  # re-sends dropped by id
    assert got_silent[0].priority == Priority.HIGH
    assert (await timeline.fields(report_id))["status"] == "correction_escalated"
    whats = [(e["what"], e.get("agency")) for e in await timeline.entries(report_id)]
    assert ("acknowledged", acking) in whats
    assert whats.count(("correction re-sent", silent)) == 2
    assert ("correction escalated", silent) in whats
    assert ("acknowledged", silent) not in whats


async def test_the_client_refuses_tampered_and_unsigned_notices(local: Settings) -> None:
    (agency,) = agency_ids(1)
    signer, report_id = Signer(local.tipline_keys_dir), f"tamper-{uuid.uuid4().hex}"

    def genuine(n: int) -> AgencyNotice:
        return notices.signed(notices.amendment_notice(
            report_id, agency, n, {"amendment": {"path": "x", "value": n}}, Priority.NORMAL
        ), signer)

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

    client, got = AgencyClient(local, agency, auto_ack=False), []
    async with running(client.collect(got)):
        await until(lambda: len(got) + len(client.refused) >= 4)
    assert [n.payload["version"] for n in got] == [3]
    reasons = [reason for _, reason in client.refused]
    assert reasons[0].startswith("bad signature: signature does not match")
    assert reasons[1] == "bad signature: not signed"
    assert reasons[2].startswith("not a notice")


async def test_outcomes_show_in_the_timeline_and_foreign_acks_are_refused(
    local: Settings, redis: Redis
) -> None:
    outbox, timeline = Outbox(redis, 60), Timeline(redis)
    report_id = f"out-{uuid.uuid4().hex}"
    mine, other = agency_ids(2)
    correction = notices.correction_notice(report_id, mine, {}, Priority.NORMAL)
    await outbox.track(correction)
    with pytest.raises(Poison):
        await on_response(outbox, timeline, AgencyResponse(
            response_id="r1", agency_id=other, report_id=report_id, kind="ack",
            notice_id=correction.notice_id))
    await on_response(outbox, timeline, AgencyResponse(
        response_id="r2", agency_id=mine, report_id=report_id, kind="outcome",
        outcome="investigating", text="synthetic note"))
    assert await outbox.states(report_id) == {correction.notice_id: "awaiting"}
    entries = await timeline.entries(report_id)
    assert entries[-1]["what"] == "agency outcome"
    assert entries[-1]["outcome"] == "investigating"


async def test_agencies_with_registered_keys_must_sign_their_responses(
    local: Settings, redis: Redis, tmp_path: Path
) -> None:
    keyed, open_agency = agency_ids(2)
    registry = AgencyRegistry(routing_file(
        tmp_path / "registry.yaml", [keyed, open_agency],
        verify_keys={keyed: [agency_key(tmp_path / "keyed")]}))
    agency_signer, stranger = Signer(tmp_path / "keyed"), tmp_path / "stranger"
    ensure_keys(stranger)
    outbox, timeline = Outbox(redis, 60), Timeline(redis)
    report_id = f"signed-{uuid.uuid4().hex}"

    def ack(agency: str, signer: Signer | None) -> AgencyResponse:
        response = AgencyResponse(response_id=uuid.uuid4().hex, agency_id=agency,
                                  report_id=report_id, kind="ack", notice_id=f"n-{agency}")
        doc = response.model_dump(mode="json")
        wire = json.dumps(signer.sign(doc) if signer else doc)
        return AgencyResponse.model_validate_json(wire)  # as the ack subscriber parses it

    for forged in (ack(keyed, None), ack(keyed, Signer(stranger)), ack("nobody", None)):
        with pytest.raises(Poison):
            await on_response(outbox, timeline, forged, registry)
    await on_response(outbox, timeline, ack(keyed, agency_signer), registry)
    await on_response(outbox, timeline, ack(open_agency, None), registry)  # no keys registered
    acked = [e["agency"] for e in await timeline.entries(report_id) if e["what"] == "acknowledged"]
    assert acked == [keyed, open_agency]
