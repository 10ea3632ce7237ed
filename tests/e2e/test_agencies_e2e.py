"""Analysts and agencies across processes: supplementation (with the analyst API), referral and
retraction run as separate processes on the real broker and Valkey.

A report routed to three agencies is amended after referral and then retracted. Each agency
receives referral, amendment and correction in that order, exactly once after dedupe, every
signature verifies; acks (one agency's signed with its registered key) appear in the timeline;
the agency that never acknowledges gets re-sends and the report ends "correction escalated"; a
tampered notice is refused by the client.
The report enters at the validated topic (intake and validation are other tests' business).
"""

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from services.notification.ledger import Ledger
from shared import topics
from shared.analysts import AnalystDirectory
from shared.contracts import (
    AgencyNotice,
    Location,
    Priority,
    Report,
    ReportSupplemented,
    ReportValidated,
    derived_id,
)
from shared.seals import Seals
from shared.settings import Settings
from shared.signing import Signer
from tests.e2e.support import agencies_for_services, until
from tests.integration.agency_helpers import agency_ids, read_topic
from tests.sealing import send_sealed
from tipline.agency import AgencyClient
from tipline.stack import Stack, create_topics, free_port, start_services

pytestmark = pytest.mark.e2e

PASSWORD = "synthetic-e2e-password"
ACK_TIMEOUT_S, MAX_RESENDS = 1.5, 2


@pytest.fixture(scope="module")
def agencies() -> list[str]:
    return agency_ids(3)


@pytest.fixture(scope="module")
def system(
    servers: Stack, agencies: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("agencies")
    with pytest.MonkeyPatch.context() as env:
        # The two acking agencies sign their acks with keys registered in the routing file;
        # the third registered none, so it cannot ack.
        agencies_for_services(env, workdir, agencies, keyless=(agencies[2],),
                              ack_timeout_s=ACK_TIMEOUT_S, max_resends=MAX_RESENDS)
        env.setenv("TIPLINE_KEYS_DIR", str(workdir / "keys"))
        stack = Stack(kafka=servers.kafka, redis=servers.redis, http="http://127.0.0.1:1",
                      workdir=workdir, analyst=f"http://127.0.0.1:{free_port()}")
        create_topics(stack)
        try:
            start_services(stack, ("supplementation", "referral", "retraction"))
            yield stack
        finally:
            stack.stop()


@pytest.fixture
async def analyst(system: Stack, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    await AnalystDirectory(redis).add("e2e-analyst", PASSWORD)
    async with httpx.AsyncClient(base_url=f"{system.analyst}/v1/analyst", timeout=10,
                                 auth=("e2e-analyst", PASSWORD)) as client:
        yield client


async def test_amend_then_retract_across_three_agencies(
    system: Stack, settings: Settings, agencies: list[str], analyst: httpx.AsyncClient
) -> None:
    local = settings.model_copy(update={"tipline_keys_dir": system.workdir / "keys"})
    report_id = f"e2e-{uuid.uuid4().hex}"
    acking, silent = agencies[:2], agencies[2]
    clients = {a: AgencyClient(local, a, auto_ack=a != silent) for a in agencies}
    for agency in acking:
        clients[agency].signer = Signer(system.workdir / "agency-keys" / agency)
    got: dict[str, list[AgencyNotice]] = {a: [] for a in agencies}

    def kinds(agency: str) -> list[str]:
        return [n.kind for n in got[agency] if n.report_id == report_id]

    tasks = [asyncio.create_task(clients[a].collect(got[a])) for a in agencies]
    for client in clients.values():
        await client.ready()
    producer = AIOKafkaProducer(bootstrap_servers=local.kafka_bootstrap_servers)
    await producer.start()
    try:
        event = ReportValidated(
            event_id=derived_id(report_id, "validated"), report_id=report_id, esp_id="esp-e2e",
            report=Report(incident_type="Child Sex Tourism", additional_info="synthetic",
                          location=Location(country="US", us_state="TX")))
        await send_sealed(producer, local.tipline_keys_dir, "validation",
                          topics.REPORTS_VALIDATED, event, report_id)
        await until(lambda: all(kinds(a) == ["referral"] for a in agencies), "referrals", 60)

        amended = await analyst.post(f"/reports/{report_id}/amendments", json={
            "path": "location.us_state", "value": "NM", "reason": "synthetic correction"})
        assert amended.status_code == 202, amended.text
        assert amended.json()["version"] == 1
        await until(lambda: all(len(kinds(a)) == 2 for a in agencies), "amendments")

        retracted = await analyst.post(f"/reports/{report_id}/retract",
                                       json={"reason": "synthetic retraction"})
        assert retracted.status_code == 202, retracted.text
        await until(lambda: all(len(kinds(a)) == 3 for a in agencies), "corrections")

        async def refused() -> bool:  # once ReportRetracted reached supplementation
            late = await analyst.post(f"/reports/{report_id}/amendments", json={
                "path": "location.us_state", "value": "AZ", "reason": "too late"})
            return late.status_code == 409 and "retracted" in late.json()["detail"]
        await until(refused, "amendments refused after the retraction")

        def mine(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in records if r["report_id"] == report_id]

        # What an operator watches (the console shows the same): the retraction service's
        # events of what became of each notice.
        escalations = mine(await read_topic(
            local, topics.NOTICES_ESCALATED, lambda rs: len(mine(rs)) >= 2,
            (MAX_RESENDS + 3) * ACK_TIMEOUT_S + 10))
        assert sorted((e["agency_id"], e["kind"]) for e in escalations) == [
            (silent, "amendment"), (silent, "correction")]
        await until(lambda: clients[silent].duplicates >= 2 * MAX_RESENDS, "re-sends dropped")

        # A tampered copy of a genuine notice is refused, loudly, and never handed over.
        tampered = json.loads(got[silent][-1].model_dump_json())
        tampered["payload"]["reason"] = "altered in transit"
        await producer.send_and_wait(f"tipline.agency.{silent}", json.dumps(tampered).encode(),
                                     key=report_id.encode())
        await until(lambda: clients[silent].refused, "the tampered notice")
    finally:
        await producer.stop()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks)

    for agency in agencies:
        assert kinds(agency) == ["referral", "amendment", "correction"], (agency, kinds(agency))
        ids = [n.notice_id for n in got[agency]]
        assert len(ids) == len(set(ids))
        assert all(n.signature and n.key_id for n in got[agency])
    assert [reason for _, reason in clients[silent].refused] == [
        "bad signature: signature does not match "
        f"(key {got[silent][-1].key_id})"]
    assert not any(clients[a].refused for a in acking)

    acks = mine(await read_topic(local, topics.NOTICES_ACKNOWLEDGED,
                                 lambda rs: len(mine(rs)) >= 3 * len(acking)))
    acked = {(a["agency_id"], a["notice_id"]) for a in acks}
    for agency in acking:
        assert {(agency, n.notice_id) for n in got[agency]} <= acked
    assert not any(agency == silent for agency, _ in acked)
    assert sorted(a["kind"] for a in acks if a["kind"]) == ["amendment"] * 2 + ["correction"] * 2
    resent = mine(await read_topic(local, topics.NOTICES_RESENT,
                                   lambda rs: len(mine(rs)) >= 2 * MAX_RESENDS))
    assert sorted((r["agency_id"], r["kind"]) for r in resent) == sorted(
        [(silent, "amendment"), (silent, "correction")] * MAX_RESENDS)

    case = (await analyst.get(f"/reports/{report_id}")).json()
    assert case["amendments_after_release"][0]["amendment"]["previous"] == "TX"
    assert case["report"]["location"]["us_state"] == "TX"  # the ESP's original, kept


BULK = 500  # a backlog the bulk subscriber needs a few batches for


async def test_an_urgent_referral_is_not_queued_behind_bulk(
    system: Stack, settings: Settings, agencies: list[str], redis: Redis
) -> None:
    """A bulk backlog on its own topic; an urgent report published after it is referred first."""
    batch, agency = uuid.uuid4().hex[:8], agencies[0]

    def supplemented(report_id: str, priority: Priority) -> bytes:
        return ReportSupplemented(
            event_id=derived_id(report_id, "supplemented"), report_id=report_id, esp_id="esp",
            report=Report(additional_info="synthetic"), agencies=[agency], priority=priority,
            jurisdiction="test", rules_version="test",
        ).model_dump_json().encode()

    bulk = [f"bulk-{batch}-{i}" for i in range(BULK)]
    urgent = f"urgent-{batch}"
    ledger = Ledger(redis)

    async def referred(report_ids: list[str]) -> int:
        async with redis.pipeline(transaction=False) as pipe:
            for r in report_ids:
                pipe.hget(f"tipline:{{{r}}}:ledger", agency)
            return sum(state == "referred" for state in await pipe.execute())

    seals = Seals(system.workdir / "keys")

    def as_supplementation(topic: str, report_id: str, value: bytes) -> dict[str, Any]:
        return {"key": report_id.encode(), "headers": seals.headers(
            "supplementation", topic, report_id.encode(), value)}

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        bulk_topic = topics.REPORTS_SUPPLEMENTED_BULK
        urgent_topic = topics.REPORTS_SUPPLEMENTED_URGENT
        # One urgent report through first: the clock below times queueing, not a group join.
        first = f"urgent-first-{batch}"
        value = supplemented(first, Priority.IMMINENT)
        await producer.send_and_wait(urgent_topic, value,
                                     **as_supplementation(urgent_topic, first, value))
        deadline = asyncio.get_running_loop().time() + 30
        while (await ledger.states(first)).get(agency) != "referred":
            assert asyncio.get_running_loop().time() < deadline, "the urgent path never worked"
            await asyncio.sleep(0.05)
        sent = []
        for r in bulk:
            value = supplemented(r, Priority.BULK)
            sent.append(await producer.send(bulk_topic, value,
                                            **as_supplementation(bulk_topic, r, value)))
        await asyncio.gather(*sent)
        loop = asyncio.get_running_loop()
        start = loop.time()
        value = supplemented(urgent, Priority.IMMINENT)
        await producer.send_and_wait(urgent_topic, value,
                                     **as_supplementation(urgent_topic, urgent, value))
    finally:
        await producer.stop()
    while (await ledger.states(urgent)).get(agency) != "referred":
        assert loop.time() - start < 30, "the urgent report was not referred"
        await asyncio.sleep(0.01)
    urgent_s, bulk_done_then = loop.time() - start, await referred(bulk)
    while (bulk_done := await referred(bulk)) < BULK and loop.time() - start < 60:
        await asyncio.sleep(0.1)  # only to print how long the backlog took (bounded)
    print(f"\nurgent referred after {urgent_s * 1000:.0f} ms with {bulk_done_then}/{BULK} bulk "
          f"referred; {bulk_done}/{BULK} bulk referred after {loop.time() - start:.1f} s")
    assert bulk_done_then < BULK
