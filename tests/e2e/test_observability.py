"""Traces and logs of the whole system, every service a separate process.

- One trace per report: the intake HTTP request, each publish and consume, and the agency notice,
  exported over OTLP/HTTP to a receiver this test runs on loopback.
- Logs are JSON with the report id and trace id, and never carry report content: a unique marker
  planted in every field of reports, a retraction and a poison message appears in no log.
"""

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.intake.esps import EspRegistry
from shared import topics
from shared.settings import Settings
from shared.store import connect
from tests.e2e.otlp import Receiver, Span, receiving
from tipline.stack import Stack, create_topics, free_port, start_services

pytestmark = pytest.mark.e2e
AVAILABLE = "available_to_law_enforcement"  # the status its ESP is told once referred

SERVER, PRODUCER, CONSUMER = 2, 4, 5  # OTLP span kinds


@pytest.fixture(scope="module")
def observed(
    servers: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, Receiver]]:
    with receiving() as (receiver, endpoint), pytest.MonkeyPatch.context() as env:
        env.setenv("TIPLINE_TRACE_EXPORTER", "otlp")
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        env.setenv("TIPLINE_LOG_FORMAT", "json")
        env.setenv("TIPLINE_LOG_LEVEL", "DEBUG")  # the most a service ever logs
        workdir = tmp_path_factory.mktemp("observed")
        env.setenv("TIPLINE_WORKDIR", str(workdir))
        stack = Stack(kafka=servers.kafka, redis=servers.redis,
                      http=f"http://127.0.0.1:{free_port()}", workdir=workdir)
        create_topics(stack)
        _signing_keys(workdir / "keys")
        try:
            start_services(stack)
            yield stack, receiver
        finally:
            stack.stop()


def _signing_keys(keys_dir: Path) -> None:
    """Notice-signing keys for the services that sign (where this checkout signs notices)."""
    try:
        from shared.signing import ensure_keys
    except ImportError:
        return
    ensure_keys(keys_dir)


@pytest.fixture
async def http(
    observed: tuple[Stack, Receiver], settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    redis = connect(settings)
    login = ("esp-observed", await EspRegistry(redis).add("esp-observed"))
    await redis.aclose()
    async with httpx.AsyncClient(base_url=observed[0].http, timeout=10, auth=login) as client:
        yield client


def valid_report(text: str = "synthetic") -> dict[str, Any]:
    return {
        "incident_type": "Child Sex Tourism",
        "incident_at": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
        "reporter_email": "reporter@esp.example",
        "location": {"country": "US", "us_state": "TX"},
        "platform": text,
    }


async def settle(http: httpx.AsyncClient, report_id: str, status: str, timeout: float = 30) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = (await http.get(f"/v1/reports/{report_id}")).json()
        if got.get("status") == status or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.05)


async def trace_of(
    receiver: Receiver, report_id: str, until: Any, timeout: float = 15
) -> list[Span]:
    """Every span of the trace that holds intake's span for this report, once `until` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    spans: list[Span] = []
    while asyncio.get_running_loop().time() < deadline:
        everything = receiver.snapshot()
        ids = {s.trace_id for s in everything if s.attributes.get("report.id") == report_id
               and s.service == "tipline-intake"}
        spans = [s for s in everything if s.trace_id in ids]
        if ids and until(spans):
            break
        await asyncio.sleep(0.1)
    return spans


async def test_one_trace_from_the_intake_request_to_the_agency_notice(
    observed: tuple[Stack, Receiver], http: httpx.AsyncClient
) -> None:
    _, receiver = observed
    answer = await http.post("/v1/reports", json={"report": valid_report()})
    assert answer.status_code == 202, answer.text
    report_id = answer.json()["report_id"]
    assert (await settle(http, report_id, AVAILABLE))["status"] == AVAILABLE

    def complete(spans: list[Span]) -> bool:
        # Both notices published and every span's parent exported (spans end child first).
        ids = {s.span_id for s in spans}
        return len([s for s in spans if s.parent_id not in ids]) == 1 and {
            "tipline.agency.icac-tx publish", "tipline.agency.us-federal publish"
        } <= {s.name for s in spans}

    spans = await trace_of(receiver, report_id, complete)
    assert len({s.trace_id for s in spans}) == 1, "the report's hops are in more than one trace"
    by_id = {s.span_id: s for s in spans}
    # Unbroken: one root, the HTTP request; every other span's parent is in the same trace.
    roots = [s for s in spans if s.parent_id not in by_id]
    assert [(r.service, r.name, r.kind) for r in roots] == [
        ("tipline-intake", "POST /v1/reports", SERVER)]
    # Each hop: the next service publishes about the report under the publish that brought it.
    hops = {
        (by_id[s.parent_id].service, s.service)
        for s in spans
        if s.kind == PRODUCER and by_id[s.parent_id].kind == PRODUCER
    }
    chain = ["intake", "validation", "supplementation", "referral"]
    expected = {(f"tipline-{a}", f"tipline-{b}") for a, b in itertools.pairwise(chain)}
    assert expected <= hops, f"missing hops: {sorted(expected - hops)}"
    notices = [s for s in spans if s.name.startswith("tipline.agency.") and s.kind == PRODUCER]
    assert {s.service for s in notices} == {"tipline-referral"}
    # And each service consumed it in a batch, one span a batch linked to what it read.
    # A batch span ends after its handler commits, so it may be exported after the trace is.
    publishes = {s.span_id: s.service for s in spans if s.kind == PRODUCER}
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        consumed = {(publishes[link], b.service) for b in receiver.snapshot()
                    if b.kind == CONSUMER for link in b.links if link in publishes}
        if expected <= consumed or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert expected <= consumed, f"batch spans not linked: {sorted(expected - consumed)}"


async def test_no_report_content_in_any_log(
    observed: tuple[Stack, Receiver], http: httpx.AsyncClient
) -> None:
    stack, _ = observed
    marker = f"MARK{uuid.uuid4().hex}"
    email = f"{marker}@esp.example"
    planted = {
        **valid_report(marker),
        "escalate_to_high_priority": marker,
        "reporter_email": email,
        "additional_info": marker,
        "reported_users": [{"screen_name": marker, "esp_identifier": marker, "email": email,
                            "ip_address": marker}],
        "location": {"country": "US", "us_state": "TX", "ip_address": marker},
        "files": [{"file_id": marker, "sha256": marker, "md5": marker, "original_name": marker,
                   "relevance": marker, "details": {marker: marker}}],
        "extra": {marker: marker},
    }
    # A report that goes all the way (and is then retracted), one refused in every field, and a
    # message no service can read.
    first = (await http.post("/v1/reports", json={"report": planted})).json()["report_id"]
    assert (await settle(http, first, AVAILABLE))["status"] == AVAILABLE
    retracted = await http.post(f"/v1/reports/{first}/retract", json={"reason": marker})
    assert retracted.status_code == 202, retracted.text
    refused: dict[str, Any] = {key: marker for key in (
        "incident_type", "platform", "reporter_email", "escalate_to_high_priority",
        "additional_info")}
    refused["incident_at"] = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    refused["location"] = {"country": marker, "us_state": marker, "ip_address": marker}
    second = (await http.post("/v1/reports", json={"report": refused})).json()["report_id"]
    bad = await http.post("/v1/reports", json={"report": {"incident_at": marker}})
    assert bad.status_code == 422  # refused at the door, with the field named
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka)
    await producer.start()
    try:
        poison = json.dumps({"report_id": marker, "report": {"platform": marker}}).encode()
        await producer.send_and_wait(topics.REPORTS_SUBMITTED, poison, key=b"poison-1")
    finally:
        await producer.stop()
    assert (await settle(http, first, "retracted"))["status"] == "retracted"
    assert (await settle(http, second, "rejected"))["status"] == "rejected"
    # The poison message's dead letter, logged by validation (wait for it, within bounds).
    validation_log = stack.workdir / "logs" / "validation.log"
    for _ in range(200):
        if "poison-1" in validation_log.read_text() and "dead-lettered" in \
                validation_log.read_text():
            break
        await asyncio.sleep(0.1)

    logs = sorted((stack.workdir / "logs").glob("*.log"))
    assert {p.stem for p in logs} >= {"intake", "validation", "supplementation", "referral",
                                      "retraction"}
    leaks = [f"{p.name}: {line[:300]}" for p in logs
             for line in p.read_text(errors="replace").splitlines() if marker in line]
    assert not leaks, "report content in the logs:\n" + "\n".join(leaks[:20])

    # The lines are JSON; those about a report carry its id and the trace it belongs to.
    lines = [json.loads(line) for p in logs if p.stem != "broker" and p.stem != "valkey"
             for line in p.read_text().splitlines() if line.startswith("{")]
    about_first = [e for e in lines
                   if e.get("report_id") == first or first in e.get("report_ids", [])]
    assert {e["service"] for e in about_first} >= {"intake", "validation", "supplementation",
                                                   "referral"}, "a service's lines lack its id"
    assert all("trace_id" in e for e in about_first)
    assert any(e.get("msg", "").startswith("validation: dead-lettered") for e in lines)


def test_logs_are_json_lines(observed: tuple[Stack, Receiver]) -> None:
    stack, _ = observed
    for name in ("validation", "supplementation", "referral", "retraction"):
        text = (stack.workdir / "logs" / f"{name}.log").read_text()
        not_json = [line for line in text.splitlines() if line and not line.startswith("{")]
        assert not not_json, f"{name}: {not_json[:3]}"
        assert all(json.loads(line)["service"] == name for line in text.splitlines() if line)

