"""Resting on the real embedded broker: a subscriber with nothing to read pauses its partitions
and fetches once a rest, says so on `tipline_resting`, and a record written at any moment of a
rest is handled all the same (shared/batches/resting.py)."""

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import REGISTRY
from pydantic import BaseModel

from shared.batches import Resting
from shared.batches.resting import Rest, may_rest
from shared.kafka import TiplineBroker, ensure_topics, make_broker
from shared.settings import Settings
from tests.integration.test_delivery import running, until

REST_MS = 150


class Step(BaseModel):
    report_id: str
    n: int


async def resting_subscriber(settings: Settings) -> tuple[Settings, str, TiplineBroker,
                                                         list[int]]:
    """A subscriber of a fresh four-partition topic that rests after 0.3 s with nothing, and
    the steps it handled."""
    local = settings.model_copy(update={"kafka_rest_ms": REST_MS, "kafka_rest_after_s": 0.3,
                                        "kafka_partitions": 4})
    topic = f"tipline.test.resting-{uuid.uuid4().hex[:8]}"
    await ensure_topics(local, [topic])
    handled: list[int] = []
    broker = make_broker(local, "test-resting", sealed=False)  # a test topic: no seals

    @broker.consume(topic, group=f"test-resting-{uuid.uuid4().hex[:8]}", model=Step)
    async def on_steps(events: list[Step]) -> None:
        handled.extend(e.n for e in events)

    return local, topic, broker, handled


def consumer_of(rest: Rest) -> AIOKafkaConsumer:
    consumer = rest.consumer()
    assert consumer is not None
    return consumer


def gauge(rest: Rest) -> float | None:
    """What the subscriber's `tipline_resting` says, as Prometheus scrapes it."""
    return REGISTRY.get_sample_value("tipline_resting",
                                     {"service": "test-resting", "group": rest.group})


def resting(consumer: AIOKafkaConsumer) -> bool:
    assigned = consumer.assignment()
    return bool(assigned) and consumer.paused() == assigned


async def write(producer: AIOKafkaProducer, topic: str, n: int) -> None:
    report_id = f"synthetic-{uuid.uuid4().hex[:8]}"  # a key of its own: any partition
    await producer.send_and_wait(topic, json.dumps({"report_id": report_id, "n": n}).encode(),
                                 key=report_id.encode())


@asynccontextmanager
async def woken_once(settings: Settings) -> AsyncIterator[
        tuple[Callable[[int], Awaitable[None]], Rest, list[int]]]:
    """The resting subscriber running, once it has handled step 0: a way to write step n, its
    rest, and the steps it handled."""
    local, topic, broker, handled = await resting_subscriber(settings)
    producer = AIOKafkaProducer(bootstrap_servers=local.kafka_bootstrap_servers)
    await producer.start()
    try:
        async with running(broker):
            await write(producer, topic, 0)
            await until(lambda: handled == [0])
            (rest,) = broker.resting.rests
            yield (lambda n: write(producer, topic, n)), rest, handled
    finally:
        await producer.stop()


async def test_an_idle_subscriber_rests_and_a_record_written_meanwhile_wakes_it(
    settings: Settings,
) -> None:
    async with woken_once(settings) as (step, rest, handled):
        consumer = consumer_of(rest)
        await until(lambda: resting(consumer))  # nothing more came: it rests
        await until(lambda: gauge(rest) == 1)  # and says so
        for n in range(1, 21):  # a burst, to every partition, while it rests
            await step(n)
        await until(lambda: sorted(set(handled)) == list(range(21)))
        await until(lambda: resting(consumer))  # and rests again once idle
        await until(lambda: gauge(rest) == 1)
    assert gauge(rest) == 0  # stopped: every partition resumed


async def test_a_record_written_at_any_moment_of_a_rest_is_handled(settings: Settings) -> None:
    """The race: a record may come in the very fetch a resting subscriber makes, which aiokafka
    drops for a paused partition. Records written at random moments of the rest, one a round,
    are each handled."""
    rng = random.Random(28)
    async with woken_once(settings) as (step, rest, handled):
        consumer = consumer_of(rest)
        for n in range(1, 12):
            await until(lambda: resting(consumer))
            # Anywhere in the rest, its fetch included.
            await asyncio.sleep(rng.uniform(0, 2 * REST_MS / 1000))
            await step(n)
            await until(lambda n=n: n in handled)  # type: ignore[misc]
    assert sorted(set(handled)) == list(range(12))


def test_a_subscriber_pauses_only_once_every_partition_was_answered_with_nothing_new() -> None:
    resumed = 1_000.0
    quiet = (1_010, 7, 7)  # answered since it resumed, nothing past the position
    assert may_rest(resumed, [quiet, quiet])
    assert not may_rest(resumed, [quiet, (990, 7, 7)])  # one not answered since
    assert not may_rest(resumed, [quiet, (None, None, 0)])  # one never fetched
    assert not may_rest(resumed, [quiet, (1_010, 8, 7)])  # a record to read first
    assert not may_rest(resumed, [])  # nothing assigned: nothing to say


def test_a_broker_with_a_long_poll_never_rests() -> None:
    assert not Resting("test-resting", rest_ms=0, rest_after_s=10).on  # Apache Kafka
    assert Resting("test-resting", rest_ms=REST_MS, rest_after_s=10).on
