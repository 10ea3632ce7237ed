"""Rewinding a consumer group makes it read a topic's messages again."""

import asyncio
import uuid
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.kafka import ensure_topics
from shared.settings import Settings
from tipline.rewind import rewind


async def consume_all(settings: Settings, topic: str, group: str, want: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", session_timeout_ms=1000,
                                heartbeat_interval_ms=100, fetch_max_wait_ms=5)
    await consumer.start()
    values: list[bytes] = []
    try:
        for _ in range(100):
            for records in (await consumer.getmany(timeout_ms=100)).values():
                values.extend(r.value for r in records if r.value is not None)
            if len(values) >= want:
                break
        await consumer.commit()
    finally:
        await consumer.stop()
    return values


async def test_a_rewound_group_reads_everything_again(settings: Settings) -> None:
    topic, group = f"tipline.test.rewind-{uuid.uuid4().hex[:8]}", f"test-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic])
    sent = [f"m{i}".encode() for i in range(8)]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for i, value in enumerate(sent):
            await producer.send_and_wait(topic, value, key=f"r{i}".encode())
    finally:
        await producer.stop()

    assert sorted(await consume_all(settings, topic, group, len(sent))) == sorted(sent)
    moved = await rewind(settings, group, topic)
    assert set(moved.values()) == {0}
    assert sorted(await consume_all(settings, topic, group, len(sent))) == sorted(sent)


async def test_rewinding_to_a_time_replays_only_what_came_after(settings: Settings) -> None:
    topic, group = f"tipline.test.rewind-{uuid.uuid4().hex[:8]}", f"test-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before", key=b"r", partition=0)
        await asyncio.sleep(0.05)
        middle = datetime.now(UTC)
        await asyncio.sleep(0.05)
        await producer.send_and_wait(topic, b"after", key=b"r", partition=0)
    finally:
        await producer.stop()
    assert sorted(await consume_all(settings, topic, group, 2)) == [b"after", b"before"]
    moved = await rewind(settings, group, topic, middle)
    assert moved[0] == 1
    assert await consume_all(settings, topic, group, 1) == [b"after"]
