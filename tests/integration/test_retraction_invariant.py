"""The retraction invariant, under randomized interleavings against real Redis.

Referral and retraction run concurrently on the real ledger, through the same functions the
services use, with a recording broker that yields at random and sometimes "crashes" after
publishing (the service then gets the message again). For every interleaving:
1. a report retracted before its referral claim is never referred;
2. every agency that got the referral gets a correction, after it.
"""

import asyncio
import json
import random
import uuid
from collections import defaultdict
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from opentelemetry import trace
from pydantic import BaseModel
from redis.asyncio import Redis

from services.intake.timeline import Timeline
from services.notification.flow import NotificationFlow, Recipients
from services.notification.ledger import Ledger
from shared.batches import Decoder, Delivery, Publisher
from shared.contracts import (
    Priority,
    Report,
    ReportReferred,
    ReportSupplemented,
    RetractReport,
    derived_id,
)
from shared.settings import Settings
from shared.store import Store
from tests.fake_producer import FakeProducer

INTERLEAVINGS = 1000
AGENCIES = ["a1", "a2", "a3", "a4"]


class Crash(Exception):
    """The process died after the broker took the message, before the handler finished."""


class RecordingBroker(FakeProducer):
    """Stands in for Kafka: one ordered log per agency topic, random latency, random crashes
    (as the service's broker and its producer, for shared.batches.Publisher)."""

    service, seals = "test", None

    def __init__(self, rng: random.Random, crash_rate: float) -> None:
        self.rng = rng
        self.crash_rate = crash_rate
        self.logs: dict[str, list[tuple[str, str]]] = defaultdict(list)

    async def sender(self) -> "RecordingBroker":
        return self

    def tracer(self) -> trace.Tracer:
        return trace.NoOpTracer()

    async def deliver(self, topic: str, key: bytes, value: bytes) -> None:
        await asyncio.sleep(self.rng.random() * 0.0005)
        if topic.startswith("tipline.agency."):  # the referral's own event goes along
            notice = json.loads(value)
            self.logs[topic].append((notice["kind"], notice["notice_id"]))
        await asyncio.sleep(0)
        if self.rng.random() < self.crash_rate:
            raise Crash


class OrderedLedger(Ledger):
    """The real ledger, noting when claims start and retractions finish.

    A retraction that finished before the first claim started certainly came first.
    """

    def __init__(self, redis: Store, order: list[str]) -> None:
        super().__init__(redis)
        self.order = order

    async def claim(self, reports: Any) -> Any:
        self.order.append("claim")
        return await super().claim(reports)

    async def retract(self, commands: Any) -> Any:
        result = await super().retract(commands)
        self.order.append("retract")
        return result


async def until_done(step: Any, rng: random.Random, start_within_s: float) -> None:
    """Run a handler as the broker would: again and again until it finishes (redelivery)."""
    await asyncio.sleep(rng.random() * start_within_s)
    for _ in range(500):  # a gather of four sends at a crash rate of 0.5 succeeds 1 in 16
        try:
            await step()
            return
        except Crash:
            await asyncio.sleep(rng.random() * 0.001)
    raise AssertionError("handler never finished")


async def one_interleaving(
    redis: Store, rng: random.Random, start_within_s: float = 0.002
) -> dict[str, int]:
    """Referral and retraction of one report, each starting within `start_within_s` (longer
    than a round trip to Redis, so either may come first)."""
    report_id = f"inv-{uuid.uuid4().hex}"
    agencies = rng.sample(AGENCIES, rng.randint(1, len(AGENCIES)))
    order: list[str] = []
    ledger = OrderedLedger(redis, order)
    timeline = Timeline(redis)
    broker = RecordingBroker(rng, crash_rate=rng.choice([0.0, 0.2, 0.5]))
    flow = NotificationFlow(Publisher(broker), ledger, timeline)  # type: ignore[arg-type]
    supplemented = ReportSupplemented(
        event_id=derived_id(report_id, "supplemented"), report_id=report_id, esp_id="esp",
        report=Report(), agencies=agencies, priority=Priority.NORMAL,
        jurisdiction="test", rules_version="test",
    )
    command = RetractReport(command_id=derived_id(report_id, "retract"), report_id=report_id,
                            requested_by="esp", actor="esp", reason="test")
    await asyncio.gather(
        until_done(lambda: flow.refer([supplemented]), rng, start_within_s),
        until_done(lambda: flow.retract([command]), rng, start_within_s),
    )

    referred = 0
    for agency in agencies:
        log = broker.logs[f"tipline.agency.{agency}"]
        kinds = [kind for kind, _ in dict.fromkeys(log)]  # dedupe by notice id, keep order
        if order[0] == "retract":  # retracted before its referral: never referred
            assert "referral" not in kinds, (report_id, agency, log)
        if "referral" in kinds:
            referred += 1
            assert kinds == ["referral", "correction"], (report_id, agency, log)
        else:
            assert kinds == [], (report_id, agency, log)
    return {"referred_agencies": referred, "retracted_first": order[0] == "retract"}


async def test_retraction_invariant_holds_under_random_interleavings(redis: Redis) -> None:
    rng = random.Random(20261125)
    tallies = {"interleavings": 0, "referred_agencies": 0, "retracted_first": 0}
    for _ in range(INTERLEAVINGS):
        outcome = await one_interleaving(redis, rng)
        tallies["interleavings"] += 1
        tallies["referred_agencies"] += outcome["referred_agencies"]
        tallies["retracted_first"] += int(outcome["retracted_first"])
    print(tallies)
    assert tallies["interleavings"] >= 1000
    # Both orders must actually have been exercised for the test to mean anything.
    assert 0 < tallies["retracted_first"] < INTERLEAVINGS
    assert tallies["referred_agencies"] > 0


async def test_redelivery_after_referral_and_retraction_is_not_withheld(redis: Redis) -> None:
    """A late redelivery of the referral input (after the report was referred and retracted)
    has no second effect: the report's timeline does not say its referral was withheld."""
    rng = random.Random(7)
    report_id = f"redeliver-{uuid.uuid4().hex}"
    ledger, timeline = Ledger(redis), Timeline(redis)
    broker = RecordingBroker(rng, crash_rate=0.0)
    flow = NotificationFlow(Publisher(broker), ledger, timeline)  # type: ignore[arg-type]
    supplemented = ReportSupplemented(
        event_id=derived_id(report_id, "supplemented"), report_id=report_id, esp_id="esp",
        report=Report(), agencies=["a1", "a2"], priority=Priority.NORMAL,
        jurisdiction="test", rules_version="test",
    )
    command = RetractReport(command_id=derived_id(report_id, "retract"), report_id=report_id,
                            requested_by="esp", actor="esp", reason="test")
    assert await flow.refer([supplemented]) == {report_id: ["a1", "a2"]}
    await flow.retract([command])
    assert await flow.refer([supplemented]) == {}
    whats = {e["what"] for e in await timeline.entries(report_id)}
    assert "referral withheld" not in whats, whats
    assert "referral delivered" in whats


async def test_a_correction_carries_the_first_retraction_and_the_report_priority(
    redis: Redis,
) -> None:
    """What the ledger's retract step reads for the corrections (in the same script): the first
    retraction's when, who and why (a second retraction changes none of it), and the priority
    the report was referred with; the pipeline hears which agencies were corrected."""
    sent: list[tuple[str, dict[str, Any]]] = []

    class Capturing(RecordingBroker):
        async def deliver(self, topic: str, key: bytes, value: bytes) -> None:
            sent.append((topic, json.loads(value)))

    report_id = f"mark-{uuid.uuid4().hex}"
    ledger, timeline = Ledger(redis), Timeline(redis)
    flow = NotificationFlow(Publisher(Capturing(random.Random(3), crash_rate=0.0)),  # type: ignore[arg-type]
                            ledger, timeline)
    await flow.refer([ReportSupplemented(
        event_id=derived_id(report_id, "supplemented"), report_id=report_id, esp_id="esp",
        report=Report(), agencies=["a1", "a2"], priority=Priority.IMMINENT,
        jurisdiction="test", rules_version="test")])
    first = RetractReport(command_id=derived_id(report_id, "retract"), report_id=report_id,
                          requested_by="esp", actor="esp-7", reason="duplicate upload")
    await flow.retract([first])
    await flow.retract([first.model_copy(update={
        "command_id": derived_id(report_id, "again"), "requested_by": "analyst",
        "actor": "analyst-1",
        "reason": "something else"})])

    corrections = [v for t, v in sent if t.startswith("tipline.agency.")
                   and v["kind"] == "correction"]
    assert {c["agency_id"] for c in corrections} == {"a1", "a2"}
    for correction in corrections:
        assert correction["priority"] == Priority.IMMINENT.value
        assert correction["payload"]["reason"] == "duplicate upload"
        assert correction["payload"]["requested_by"] == "esp"
        assert datetime.fromisoformat(correction["payload"]["retracted_at"]) == first.requested_at
    retracted = [v for t, v in sent if t == "tipline.reports.retracted"]
    assert [r["corrected_agencies"] for r in retracted] == [["a1", "a2"], []]


# In transactions (Apache Kafka): nothing a handler sends is read before its commit, a crash
# anywhere aborts it and the record comes again, and a referral is confirmed by a third actor
# that reads its committed ReportReferred. Then each agency reads each notice exactly once:
# no copies at all, not just none after dedupe.
TRANSACTIONAL_INTERLEAVINGS = 300
SETTINGS = Settings(tipline_retry_backoff_s=0.0)


class Killed(ConnectionError):
    """The process died (a transient failure to Delivery: the batch is fetched again)."""


class Log:
    """What committed readers see: one ordered log per topic."""

    def __init__(self) -> None:
        self.topics: dict[str, list[bytes]] = defaultdict(list)


class Transaction(FakeProducer):
    """One actor's transactional producer: its records join the log only when it commits; it
    crashes at random after a send or before its commit."""

    service, seals = "test", None

    def __init__(self, log: Log, rng: random.Random, crash_rate: float) -> None:
        self.log, self.rng, self.crash_rate = log, rng, crash_rate
        self.pending: list[tuple[str, bytes]] = []
        self.commits = 0

    async def ready(self) -> "Transaction":
        return self

    def handled_here(self, record: ConsumerRecord[Any, Any]) -> bool:
        return False  # each delivery here is of a record not committed yet

    async def begin(self) -> "Transaction":
        self.pending = []
        return self

    async def commit(self, consumer: Any, offsets: Any) -> None:
        await self._maybe_crash()
        for topic, value in self.pending:
            self.log.topics[topic].append(value)
        self.pending, self.commits = [], self.commits + 1

    async def abort(self) -> None:
        self.pending = []

    async def deliver(self, topic: str, key: bytes, value: bytes) -> None:
        self.pending.append((topic, value))
        await self._maybe_crash()

    async def _maybe_crash(self) -> None:
        await asyncio.sleep(self.rng.random() * 0.0005)
        if self.rng.random() < self.crash_rate:
            raise Killed("killed")

    async def sender(self) -> "Transaction":
        raise AssertionError("in a transaction, records go out on its producer")

    def tracer(self) -> trace.Tracer:
        return trace.NoOpTracer()


class Consumer:
    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("in", 0)}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        pass

    async def committed(self, tp: TopicPartition) -> int | None:
        return None


async def until_committed(model: type[BaseModel], body: BaseModel, handler: Any,
                          transaction: Transaction, rng: random.Random) -> None:
    """Deliver one record to `handler` in transactions until one commits."""
    record = ConsumerRecord("in", 0, 0, 0, 0, b"k", body.model_dump_json().encode(), None, 1,
                            0, ())
    delivery = Delivery(None, SETTINGS,  # type: ignore[arg-type]
                        "test", transactions=transaction,  # type: ignore[arg-type]
                        letters=Publisher(transaction))  # type: ignore[arg-type]
    for _ in range(500):
        message = SimpleNamespace(raw_message=(record,), consumer=Consumer())
        decoder = Decoder(model, seals=None)
        await decoder(message)  # type: ignore[arg-type]
        committed = transaction.commits
        await delivery(message, decoder.take(message), handler)  # type: ignore[arg-type]
        if transaction.commits > committed:
            return
        await asyncio.sleep(rng.random() * 0.001)
    raise AssertionError("never committed")


async def one_transactional_interleaving(redis: Redis, rng: random.Random) -> dict[str, int]:
    report_id = f"txn-{uuid.uuid4().hex}"
    agencies = rng.sample(AGENCIES, rng.randint(1, len(AGENCIES)))
    order: list[str] = []
    ledger, timeline, log = OrderedLedger(redis, order), Timeline(redis), Log()
    crash_rate = rng.choice([0.0, 0.2, 0.4])
    referral, retraction, confirmation = (Transaction(log, rng, crash_rate) for _ in range(3))
    supplemented = ReportSupplemented(
        event_id=derived_id(report_id, "supplemented"), report_id=report_id, esp_id="esp",
        report=Report(), agencies=agencies, priority=Priority.NORMAL,
        jurisdiction="test", rules_version="test",
    )
    command = RetractReport(command_id=derived_id(report_id, "retract"), report_id=report_id,
                            requested_by="esp", actor="esp", reason="test")

    async def refer_then_confirm() -> None:
        await asyncio.sleep(rng.random() * 0.002)
        referring = NotificationFlow(Publisher(referral), ledger, timeline)  # type: ignore[arg-type]
        await until_committed(ReportSupplemented, supplemented, lambda events: referring.refer(
            events, confirm_now=False), referral, rng)
        confirming = NotificationFlow(Publisher(confirmation), ledger, timeline)  # type: ignore[arg-type]
        for value in log.topics["tipline.reports.referred"]:  # read back committed
            referred = ReportReferred.model_validate_json(value)
            await until_committed(ReportReferred, referred, lambda events: confirming.confirm(
                {e.report_id: Recipients(e.agencies, e.priority) for e in events}),
                confirmation, rng)

    async def retract_it() -> None:
        await asyncio.sleep(rng.random() * 0.002)
        retracting = NotificationFlow(Publisher(retraction), ledger, timeline)  # type: ignore[arg-type]
        await until_committed(RetractReport, command, retracting.retract, retraction, rng)

    await asyncio.gather(refer_then_confirm(), retract_it())
    referred = 0
    for agency in agencies:
        kinds = [json.loads(v)["kind"] for v in log.topics[f"tipline.agency.{agency}"]]
        if order[0] == "retract":
            assert "referral" not in kinds, (report_id, agency, kinds)
        if kinds:
            referred += 1
            assert kinds == ["referral", "correction"], (report_id, agency, kinds)
    return {"referred_agencies": referred, "retracted_first": order[0] == "retract"}


async def test_in_transactions_each_agency_reads_each_notice_exactly_once(redis: Redis) -> None:
    rng = random.Random(20261206)
    tallies = {"interleavings": 0, "referred_agencies": 0, "retracted_first": 0}
    for _ in range(TRANSACTIONAL_INTERLEAVINGS):
        outcome = await one_transactional_interleaving(redis, rng)
        tallies["interleavings"] += 1
        tallies["referred_agencies"] += outcome["referred_agencies"]
        tallies["retracted_first"] += int(outcome["retracted_first"])
    print(tallies)
    assert 0 < tallies["retracted_first"] < TRANSACTIONAL_INTERLEAVINGS
    assert tallies["referred_agencies"] > 0
