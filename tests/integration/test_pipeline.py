"""The five services as separate processes on the session's broker and Valkey: delivery rules."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.intake.esps import EspRegistry
from services.intake.timeline import Timeline
from shared import topics
from shared.contracts import Report, ReportSubmitted, derived_id
from shared.settings import Settings
from shared.store import connect
from tests.sealing import send_sealed
from tipline.stack import Stack, create_topics, services_on

VALID = {
    "incident_type": "Child Sex Tourism",
    "incident_at": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
    "reporter_email": "ts@esp.example",
    "location": {"country": "US", "us_state": "TX"},
}


@pytest.fixture(scope="module")
def pipeline(servers: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    create_topics(servers)
    with services_on(servers.kafka, servers.redis, tmp_path_factory.mktemp("pipeline")) as stack:
        yield stack


@pytest.fixture(scope="module")
def logins(settings: Settings) -> dict[str, tuple[str, str]]:
    """Two ESPs with their own logins."""
    async def add() -> dict[str, tuple[str, str]]:
        redis = connect(settings)
        out = {}
        for who in ("mine", "other"):
            name = f"esp-{who}-{uuid.uuid4().hex[:6]}"
            out[who] = (name, await EspRegistry(redis).add(name))
        await redis.aclose()
        return out

    return asyncio.run(add())


@pytest.fixture
async def http(
    pipeline: Stack, logins: dict[str, tuple[str, str]]
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=pipeline.http, timeout=10,
                                 auth=logins["mine"]) as client:
        yield client


async def settle(http: httpx.AsyncClient, report_id: str, until: Any, timeout: float = 30) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = (await http.get(f"/v1/reports/{report_id}")).json()
        if until(status) or asyncio.get_running_loop().time() > deadline:
            return status
        await asyncio.sleep(0.05)


async def read_topic(settings: Settings, topic: str, want: Any, timeout: float = 20) -> list[Any]:
    """Records of a topic (from the start) until `want(records)` holds."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=f"test-{uuid.uuid4().hex}", auto_offset_reset="earliest",
                                fetch_max_wait_ms=5, session_timeout_ms=1000,
                                heartbeat_interval_ms=100)
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not want(records) and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


async def test_a_report_is_referred_and_a_late_retraction_corrected(
    http: httpx.AsyncClient,
) -> None:
    report_id = (await http.post("/v1/reports", json={"report": VALID})).json()["report_id"]
    status = await settle(http, report_id, lambda s: s["status"] == "referred")
    assert status["agencies"] == {"icac-tx": "referred", "us-federal": "referred"}

    assert (await http.post(f"/v1/reports/{report_id}/retract")).status_code == 202
    status = await settle(http, report_id,
                          lambda s: set(s["agencies"].values()) == {"corrected"})
    assert status["status"] == "retracted"
    whats = [e["what"] for e in status["timeline"]]
    assert whats[:3] == ["submitted", "validated", "supplemented"]
    assert whats.count("correction delivered") == 2
    last_referral = max(i for i, w in enumerate(whats) if w == "referral delivered")
    assert whats.index("retracted") > last_referral


async def test_invalid_reports_are_rejected_with_field_reasons(http: httpx.AsyncClient) -> None:
    bad = {**VALID, "incident_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()}
    report_id = (await http.post("/v1/reports", json={"report": bad})).json()["report_id"]
    status = await settle(http, report_id, lambda s: s["status"] == "rejected")
    (rejected,) = [e for e in status["timeline"] if e["what"] == "rejected"]
    assert rejected["reasons"] == [
        {"path": "incidentSummary/incidentDateTime", "reason": "must be in the past"}
    ]
    assert status["agencies"] == {}


async def test_malformed_requests_get_field_level_4xx(
    http: httpx.AsyncClient, logins: dict[str, tuple[str, str]]
) -> None:
    response = await http.post("/v1/reports", json={"report": {"incident_at": "yesterday"}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "report", "incident_at"]
    assert (await http.get("/v1/reports/999999999")).status_code == 404
    mine = (await http.post("/v1/reports", json={"report": VALID})).json()["report_id"]
    other = await http.get(f"/v1/reports/{mine}", auth=logins["other"])
    assert other.status_code == 404  # another ESP's report does not exist for it
    retract = await http.post(f"/v1/reports/{mine}/retract", auth=logins["other"])
    assert retract.status_code == 404
    for anonymous in ({}, {"X-ESP-Id": logins["mine"][0]}):  # the header once trusted: no more
        refused = await http.get(f"/v1/reports/{mine}", auth=None, headers=anonymous)
        assert refused.status_code == 401 and "Basic" in refused.headers["WWW-Authenticate"]


async def test_poison_goes_to_dead_letters_and_the_pipeline_keeps_flowing(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    marker = uuid.uuid4().hex
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topics.REPORTS_SUBMITTED, f"not json {marker}".encode(),
                                     key=b"poison")
        await producer.send_and_wait(topics.REPORTS_SUBMITTED,
                                     json.dumps({"wrong": marker}).encode(), key=b"poison")
    finally:
        await producer.stop()

    def both(records: list[Any]) -> bool:
        return sum(marker in r.value.decode() for r in records) >= 2

    letters = [json.loads(r.value) for r in await read_topic(settings, topics.DEAD_LETTERS, both)
               if marker in r.value.decode()]
    assert len(letters) == 2
    for letter in letters:
        assert letter["service"] == "validation"
        assert letter["topic"] == topics.REPORTS_SUBMITTED
        assert letter["offset"] >= 0 and letter["error"]

    report_id = (await http.post("/v1/reports", json={"report": VALID})).json()["report_id"]
    status = await settle(http, report_id, lambda s: s["status"] == "referred")
    assert status["status"] == "referred"


async def test_a_redelivered_event_has_no_second_effect(
    http: httpx.AsyncClient, settings: Settings, pipeline: Stack
) -> None:
    report_id = f"redelivered-{uuid.uuid4().hex[:8]}"
    event = ReportSubmitted(event_id=derived_id(report_id, "submitted"), report_id=report_id,
                            esp_id="esp-test", report=Report.model_validate(VALID))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for _ in range(3):  # the same event, three times, as intake writes it
            await send_sealed(producer, pipeline.workdir / "keys", "intake",
                              topics.REPORTS_SUBMITTED, event, report_id)
    finally:
        await producer.stop()
    # Not intake's report (no ESP owns it): read its timeline where the services write it.
    redis = connect(settings)
    timeline = Timeline(redis)
    deadline = asyncio.get_running_loop().time() + 30
    # Referred, and every hop's facts in: each service's travel on their own partition.
    while not ((await timeline.fields(report_id)).get("status") == "referred" and {
            "validated", "supplemented"} <= {e["what"] for e in await timeline.entries(report_id)}):
        assert asyncio.get_running_loop().time() < deadline, "not referred"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # give the duplicates time to arrive
    whats = [e["what"] for e in await timeline.entries(report_id)]
    await redis.aclose()
    assert whats.count("validated") == 1 and whats.count("supplemented") == 1
    assert whats.count("referral delivered") == 2

    notices = await read_topic(
        settings, topics.agency_topic("icac-tx"),
        lambda rs: any(r.key == report_id.encode() for r in rs), timeout=10)
    ids = {json.loads(r.value)["notice_id"] for r in notices if r.key == report_id.encode()}
    assert len(ids) == 1, "every copy of the referral carries the same notice id"


async def test_trace_context_travels_to_the_agency_topic(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    report_id = (await http.post("/v1/reports", json={"report": VALID})).json()["report_id"]
    await settle(http, report_id, lambda s: s["status"] == "referred")
    submitted = await read_topic(settings, topics.REPORTS_SUBMITTED,
                                 lambda rs: any(r.key == report_id.encode() for r in rs))
    notices = await read_topic(settings, topics.agency_topic("icac-tx"),
                               lambda rs: any(r.key == report_id.encode() for r in rs))

    def trace_id(record: Any) -> str:
        headers = dict(record.headers)
        return headers["traceparent"].decode().split("-")[1]

    (first,) = [r for r in submitted if r.key == report_id.encode()]
    (notice,) = [r for r in notices if r.key == report_id.encode()]
    assert trace_id(first) == trace_id(notice)


def test_every_service_writes_json_log_lines(pipeline: Stack, http: httpx.AsyncClient) -> None:
    for child in pipeline.children:
        assert child.log is not None
        lines = [json.loads(line) for line in child.log.read_text().splitlines()
                 if line.startswith("{")]
        assert any(line.get("service") == child.name for line in lines), child.name
