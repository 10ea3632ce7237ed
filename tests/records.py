"""Records on the real broker, for tests: written and read back raw, dead letters found, and a
service's consumer run in the test's process."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from faststream import FastStream
from pydantic import BaseModel

from shared.kafka import make_broker
from shared.settings import Settings
from tipline.deadletters import Found, read_letters


class Step(BaseModel):
    report_id: str
    n: int


async def produce(settings: Settings, topic: str, value: bytes, key: str,
                  headers: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key.encode(), headers=headers)
    finally:
        await producer.stop()


async def records_of(settings: Settings, topic: str, key: str, count: int,
                     ) -> list[ConsumerRecord[Any, Any]]:
    """Every record of `key` on `topic`, read to the end once there are `count` (bounded)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    found: list[ConsumerRecord[Any, Any]] = []
    try:
        quiet = 0
        for _ in range(150):
            batch = await consumer.getmany(timeout_ms=200)
            quiet = 0 if batch else quiet + 1
            for part in batch.values():
                found += [r for r in part if r.key == key.encode()]
            if len(found) >= count and quiet >= 3:
                break
    finally:
        await consumer.stop()
    return found


async def letters_of(settings: Settings, key: str, count: int,
                     consumes: dict[str, set[str]]) -> list[Found]:
    for _ in range(50):
        mine = [f for f in await read_letters(settings, timeout_s=10, consumes=consumes)
                if f.letter is not None and f.letter.key == key]
        if len(mine) >= count:
            return mine
        await asyncio.sleep(0.2)
    raise AssertionError(f"{count} letters of {key} never came")


@contextlib.asynccontextmanager
async def consuming(settings: Settings, topic: str,
                    handler: Callable[[list[Step]], Awaitable[None]]) -> AsyncIterator[None]:
    """`handler` consuming `topic` as validation does, in a group of its own."""
    broker = make_broker(settings, "validation")
    broker.consume(topic, group=f"test-requeue-{uuid.uuid4().hex[:8]}", model=Step)(handler)
    app = FastStream(broker)
    task = asyncio.create_task(app.run())
    try:
        yield
    finally:
        app.exit()
        await asyncio.wait_for(task, 30)
