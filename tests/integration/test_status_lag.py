"""`tipline status` reads consumer lag from the real broker: high-water mark minus committed."""

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.kafka import LagProbe, ensure_topics
from shared.settings import Settings
from tipline.status import consumer_lag, render


async def test_lag_is_highwater_minus_committed(settings: Settings) -> None:
    topic = f"test.lag.{uuid.uuid4().hex[:8]}"
    group = f"test-lag-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for i in range(7):
            await producer.send_and_wait(topic, f"m{i}".encode(), partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.commit({TopicPartition(topic, 0): 2})  # two of seven taken
    finally:
        await consumer.stop()

    lag = await consumer_lag(settings)

    assert lag[group] == {topic: 5}
    text = render({"kafka": "k", "redis": "r", "http": "h", "processes": [], "lag": lag,
                   "lag_error": None})
    assert group in text and topic in text


async def test_a_kept_probe_sees_the_lag_move_between_asks(settings: Settings) -> None:
    """The console keeps one probe open: its second answer must not be the first one's again
    (the partitions it paused after asking, the high-water marks it saw then)."""
    topic = f"test.lag.{uuid.uuid4().hex[:8]}"
    group = f"test-lag-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic])
    tp = TopicPartition(topic, 0)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=group, enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    consumer.assign([tp])
    try:
        async with LagProbe(settings) as probe:
            for i in range(4):
                await producer.send_and_wait(topic, f"m{i}".encode(), partition=0)
            await consumer.commit({tp: 1})
            assert (await probe.lag())[group] == {topic: 3}

            for i in range(4, 9):
                await producer.send_and_wait(topic, f"m{i}".encode(), partition=0)
            await consumer.commit({tp: 2})
            assert (await probe.lag())[group] == {topic: 7}
    finally:
        await consumer.stop()
        await producer.stop()
