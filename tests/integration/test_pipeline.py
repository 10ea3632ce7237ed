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
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client.parser import text_string_to_metric_families

from services.intake.esps import EspRegistry
from services.intake.timeline import Timeline
from shared import topics
from shared.contracts import AgencyNotice, Report, ReportSubmitted, derived_id
from shared.settings import Settings
from shared.store import connect
from tests.catalogue import may_write
from tests.sealing import send_sealed
from tipline.stack import Stack, create_topics, services_on

VALID = {
    "incident_type": "Child Sex Tourism",
    "incident_at": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
    "reporter_email": "ts@esp.example",
    "location": {"country": "US", "us_state": "TX"},
}
TEXAS = ("icac-tx", "us-federal")  # where deploy/config/routing.yaml sends a Texas report
AVAILABLE = "available_to_law_enforcement"


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


async def notices_of(settings: Settings, report_id: str, kinds: dict[str, int],
                     ) -> list[AgencyNotice]:
    """The report's notices on the routing file's Texas agencies' topics, in each topic's order,
    once there are this many of each kind: where they went is the agencies' to see, not the
    ESP's."""
    out: list[AgencyNotice] = []
    for agency in TEXAS:
        def enough(records: list[Any], agency: str = agency) -> bool:
            mine = [AgencyNotice.model_validate_json(r.value) for r in records
                    if r.key == report_id.encode()]
            return all(sum(n.kind == k for n in mine) >= count for k, count in kinds.items())

        out += [AgencyNotice.model_validate_json(r.value)
                for r in await read_topic(settings, topics.agency_topic(agency), enough)
                if r.key == report_id.encode()]
    return out


async def test_a_report_is_referred_and_a_late_retraction_corrected(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    report_id = (await http.post("/v1/reports", json={"report": VALID})).json()["report_id"]
    status = await settle(http, report_id, lambda s: s["status"] == AVAILABLE)
    referred = await notices_of(settings, report_id, {"referral": 1})
    assert sorted(n.agency_id for n in referred if n.kind == "referral") == sorted(TEXAS)

    assert (await http.post(f"/v1/reports/{report_id}/retract")).status_code == 202
    status = await settle(http, report_id, lambda s: s["status"] == "retracted")
    notices = await notices_of(settings, report_id, {"referral": 1, "correction": 1})
    for agency in TEXAS:  # each agency's correction after its referral, on its own topic
        assert [n.kind for n in notices if n.agency_id == agency] == ["referral", "correction"]
    # The ESP was told it was received, made available to law enforcement, and retracted as it
    # asked: nothing of who validated, supplemented or received it, nor of the corrections.
    whats = [e["what"] for e in status["timeline"]]
    assert whats[:2] == ["submitted", "available to law enforcement"]
    # In the order things happened, though intake records its own step only once the broker
    # took it, and the retraction itself may be recorded first.
    assert whats[2:] == ["retraction requested", "retracted"]
    assert status["retraction"]["by"] == "esp"
    assert "agencies" not in status and not any(a in json.dumps(status) for a in TEXAS)


async def test_invalid_reports_are_rejected_with_field_reasons(http: httpx.AsyncClient) -> None:
    bad = {**VALID, "incident_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()}
    report_id = (await http.post("/v1/reports", json={"report": bad})).json()["report_id"]
    status = await settle(http, report_id, lambda s: s["status"] == "rejected")
    (rejected,) = [e for e in status["timeline"] if e["what"] == "rejected"]
    assert rejected["reasons"] == [
        {"path": "incidentSummary/incidentDateTime", "reason": "must be in the past"}
    ]
    assert [e["what"] for e in status["timeline"]] == ["submitted", "rejected"]


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
    status = await settle(http, report_id, lambda s: s["status"] == AVAILABLE)
    assert status["status"] == AVAILABLE


def partition_of(report_id: str, partitions: list[int]) -> int:
    """Where a producer puts a record keyed by this report id (murmur2, as every tipline hop)."""
    return int(DefaultPartitioner()(report_id.encode(), partitions, partitions))


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
        # Then a marker: another report on the same partitions at every hop (each keyed by its
        # report id), so once it is referred, whatever the copies caused has happened.
        partitions = sorted(await producer.partitions_for(topics.REPORTS_SUBMITTED))
        marker = next(m for m in (f"{report_id}-marker-{i}" for i in range(1000))
                      if partition_of(m, partitions) == partition_of(report_id, partitions))
        await send_sealed(producer, pipeline.workdir / "keys", "intake",
                          topics.REPORTS_SUBMITTED, event.model_copy(update={
                              "event_id": derived_id(marker, "submitted"),
                              "report_id": marker}), marker)
    finally:
        await producer.stop()
    # Not intake's reports (no ESP owns them): read their timelines where intake keeps them.
    redis = connect(settings)
    timeline = Timeline(redis)
    deadline = asyncio.get_running_loop().time() + 30
    for referred in (report_id, marker):
        while (await timeline.fields(referred)).get("status") != "referred":
            assert asyncio.get_running_loop().time() < deadline, f"{referred} not referred"
            await asyncio.sleep(0.05)
    whats = [e["what"] for e in await timeline.entries(report_id)]
    await redis.aclose()
    # Both agencies' referrals, each event three times: one entry (the ESP's; the others'
    # facts never left the services that learned them).
    assert whats == ["available to law enforcement"]

    notices = await read_topic(
        settings, topics.agency_topic("icac-tx"),
        lambda rs: any(r.key == report_id.encode() for r in rs), timeout=10)
    ids = {json.loads(r.value)["notice_id"] for r in notices if r.key == report_id.encode()}
    assert len(ids) == 1, "every copy of the referral carries the same notice id"


async def test_trace_context_travels_to_the_agency_topic(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    report_id = (await http.post("/v1/reports", json={"report": VALID})).json()["report_id"]
    await settle(http, report_id, lambda s: s["status"] == AVAILABLE)
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


async def published(pipeline: Stack) -> set[tuple[str, str]]:
    """(service, topic) of every record each service's process has published, as its metrics
    count them (`tipline_events_out`)."""
    out = set()
    async with httpx.AsyncClient(timeout=10) as client:
        for child in pipeline.children:
            if child.ops is None:
                continue
            text = (await client.get(f"{child.ops}/metrics")).text
            for family in text_string_to_metric_families(text):
                out |= {(sample.labels["service"], sample.labels["topic"])
                        for sample in family.samples
                        if family.name == "tipline_events_out" and sample.value > 0
                        and sample.name.endswith("_total")}
    return out


async def test_services_publish_only_where_the_catalogue_lets_them(
    http: httpx.AsyncClient, pipeline: Stack
) -> None:
    """What each service published as it ran (referral, retraction, correction, facts), each
    on a topic the catalogue gives that service."""
    report_id = (await http.post("/v1/reports", json={"report": VALID})).json()["report_id"]
    await settle(http, report_id, lambda s: s["status"] == AVAILABLE)
    assert (await http.post(f"/v1/reports/{report_id}/retract")).status_code == 202
    await settle(http, report_id, lambda s: s["status"] == "retracted")
    seen = await published(pipeline)
    # The whole path was counted, so the check below looked at it.
    assert {("intake", topics.REPORTS_SUBMITTED), ("validation", topics.REPORTS_VALIDATED),
            ("referral", topics.agency_topic("icac-tx")),
            ("retraction", topics.agency_topic("icac-tx"))} <= seen
    assert {(s, t) for s, t in seen if not may_write(s, t)} == set()


def test_every_service_writes_json_log_lines(pipeline: Stack, http: httpx.AsyncClient) -> None:
    for child in pipeline.children:
        assert child.log is not None
        lines = [json.loads(line) for line in child.log.read_text().splitlines()
                 if line.startswith("{")]
        assert any(line.get("service") == child.name for line in lines), child.name
