"""Batch delivery on the real broker and Valkey: per-report order across batches, poison kept
apart, a transient failure redelivered with nothing committed, a bug dead-lettered after its
attempts, a dead letter that could not be published retried before the commit, and a patient
subscriber fetching a trickle in few batches."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faststream import FastStream
from pydantic import BaseModel
from redis.asyncio import Redis

from shared import topics
from shared.kafka import TiplineBroker, ensure_topics, make_broker
from shared.settings import Settings


class Step(BaseModel):
    report_id: str
    n: int


@asynccontextmanager
async def running(broker: TiplineBroker) -> AsyncIterator[FastStream]:
    app = FastStream(broker)
    task = asyncio.create_task(app.run())
    try:
        yield app
    finally:
        app.exit()
        await asyncio.wait_for(task, 30)


async def produce(settings: Settings, topic: str, values: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for key, value in values:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


def steps(report_id: str, ns: range) -> list[tuple[str, bytes]]:
    return [(report_id, json.dumps({"report_id": report_id, "n": n}).encode()) for n in ns]


async def committed(settings: Settings, group: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return (await consumer.committed(TopicPartition(topic, 0))) or 0
    finally:
        await consumer.stop()


async def letters_for(settings: Settings, topic: str, want: int) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(topics.DEAD_LETTERS,
                                bootstrap_servers=settings.kafka_bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        for _ in range(100):
            for records in (await consumer.getmany(timeout_ms=100)).values():
                found += [letter for r in records
                          if (letter := json.loads(r.value))["topic"] == topic]
            if len(found) >= want:
                break
    finally:
        await consumer.stop()
    return found


async def until(check: Any, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def setup(settings: Settings) -> tuple[Settings, str, str]:
    local = settings.model_copy(update={"kafka_partitions": 1, "tipline_retry_backoff_s": 0.3,
                                        "tipline_batch_max_records": 4})
    topic = f"tipline.test.delivery-{uuid.uuid4().hex[:8]}"
    await ensure_topics(local, [topic, topics.DEAD_LETTERS])
    return local, topic, f"test-delivery-{uuid.uuid4().hex[:8]}"


async def test_order_poison_and_a_transient_failure_on_the_real_broker(
    settings: Settings, redis: Redis
) -> None:
    local, topic, group = await setup(settings)
    broker = make_broker(local, "test-delivery", sealed=False)  # a test topic: no seals
    handled: list[tuple[str, int]] = []
    failing = {"left": 3}  # Redis away for three tries of the batch holding (a, 3)

    @broker.consume(topic, group=group, model=Step)
    async def on_steps(steps: list[Step]) -> None:  # the batch under a name of its own
        if any((e.report_id, e.n) == ("a", 3) for e in steps) and failing["left"]:
            failing["left"] -= 1
            await redis.ping()
            raise ConnectionError("Redis away")
        handled.extend((e.report_id, e.n) for e in steps)

    values = [*steps("a", range(0, 3)), ("a", b"{not json"), *steps("b", range(0, 3)),
              *steps("a", range(3, 6))]
    await produce(local, topic, values)
    async with running(broker):
        await until(lambda: len(handled) >= 9 and failing["left"] == 0)
        # A marker after them, on the one partition: once it is handled, anything handled
        # twice before it has been too.
        await produce(local, topic, steps("marker", range(1)))
        await until(lambda: ("marker", 0) in handled)
    handled.remove(("marker", 0))
    # The failed batch came back whole from its first record, each record was handled once,
    # and each report's records in the order they were written.
    assert sorted(handled) == sorted([("a", n) for n in range(6)] + [("b", n) for n in range(3)])
    for report in ("a", "b"):
        mine = [n for r, n in handled if r == report]
        assert mine == sorted(mine), f"{report} out of order: {mine}"
    letters = await letters_for(local, topic, 1)
    assert [(letter["offset"], letter["key"]) for letter in letters] == [(3, "a")]
    assert letters[0]["error"].startswith("ValidationError")
    assert await committed(local, group, topic) == len(values) + 1  # the marker's too


async def test_no_commit_while_a_batch_fails_and_a_bug_is_dead_lettered(
    settings: Settings, redis: Redis
) -> None:
    local, topic, group = await setup(settings)
    broker = make_broker(local, "test-delivery", sealed=False)
    tries: dict[str, int] = {}
    away = asyncio.Event()

    @broker.consume(topic, group=group, model=Step)
    async def on_steps(events: list[Step]) -> None:
        for e in events:
            tries[e.report_id] = tries.get(e.report_id, 0) + 1
        if not away.is_set():
            raise ConnectionError("Redis away")
        if any(e.report_id == "bug" for e in events):
            raise KeyError("a bug in the handler")

    await produce(local, topic, [*steps("ok", range(1)), *steps("bug", range(1))])
    async with running(broker):
        await until(lambda: tries.get("ok", 0) >= 3)
        assert await committed(local, group, topic) == 0  # failing: nothing committed
        away.set()
        await until(lambda: tries.get("bug", 0) >= 3 + local.tipline_max_attempts)
        letters = await letters_for(local, topic, 1)
    assert [(letter["key"], letter["error"]) for letter in letters] == [
        ("bug", "KeyError: 'a bug in the handler'")]
    assert await committed(local, group, topic) == 2


async def test_a_dead_letter_the_broker_refuses_is_retried_before_the_commit(
    settings: Settings, monkeypatch: Any
) -> None:
    local, topic, group = await setup(settings)
    broker = make_broker(local, "test-delivery", sealed=False)
    publish, refusals = broker.publish, {"left": 3}

    async def flaky(body: Any, destination: str, **kwargs: Any) -> Any:
        if destination == topics.DEAD_LETTERS and refusals["left"]:
            refusals["left"] -= 1
            raise ConnectionError("broker away")
        return await publish(body, destination, **kwargs)

    monkeypatch.setattr(broker, "publish", flaky)

    @broker.consume(topic, group=group, model=Step)
    async def on_steps(events: list[Step]) -> None:
        pass

    await produce(local, topic, [("x", b"{not json"), *steps("y", range(1))])
    async with running(broker):
        await until(lambda: refusals["left"] == 0)
        letters = await letters_for(local, topic, 1)
    assert len(letters) == 1
    assert await committed(local, group, topic) == 2


async def test_a_patient_subscriber_takes_a_trickle_in_few_batches(settings: Settings) -> None:
    """What nobody waits on (the timeline's facts, acks, bulk referrals) is fetched over the
    patient wait, not as it trickles in: each batch costs a fetch, a commit and a round trip."""
    local, topic, group = await setup(settings)
    local = local.model_copy(update={"kafka_patient_fetch_wait_ms": 400,
                                     "tipline_batch_max_records": 500})
    batches: dict[str, list[int]] = {"patient": [], "quick": []}
    brokers = []
    def counted(kind: str) -> Callable[[list[Step]], Awaitable[None]]:
        async def on_steps(events: list[Step]) -> None:
            batches[kind].append(len(events))
        return on_steps

    for kind in batches:
        broker = make_broker(local, "test-delivery", sealed=False)
        broker.consume(topic, group=f"{group}-{kind}", model=Step,
                       patient=kind == "patient")(counted(kind))
        brokers.append(broker)
    async with running(brokers[0]), running(brokers[1]):
        await produce(local, topic, steps("warm", range(1)))
        await until(lambda: all(batches.values()))
        producer = AIOKafkaProducer(bootstrap_servers=local.kafka_bootstrap_servers)
        await producer.start()
        try:
            for key, value in steps("trickle", range(120)):  # a step every ~23 ms, ~2.8 s
                await producer.send_and_wait(topic, value, key=key.encode())
                await asyncio.sleep(0.02)
        finally:
            await producer.stop()
        await until(lambda: all(sum(b) == 121 for b in batches.values()))
    # Quick: about a batch a step. Patient: about a batch a wait (measured 5-7 batches over the
    # ~2.8 s). A fetch that waits only for something to come is answered every half wait or
    # sooner: 15-17 batches (measured).
    assert len(batches["quick"]) > 60, batches
    assert len(batches["patient"]) <= 10, batches
