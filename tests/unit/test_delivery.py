"""The delivery contract of every subscriber, without a broker: many messages at once but one at a
time per report, and never a committed offset past a message not yet handled."""

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.delivery import Dispatcher, Offsets

TP = TopicPartition("tipline.reports.submitted", 0)


class Consumer(AIOKafkaConsumer):
    """Never connected: only its identity and group generation are read."""

    def __init__(self) -> None:
        pass


def offsets() -> Offsets:
    return Offsets(Consumer())


async def test_the_commit_point_stops_at_the_oldest_message_in_hand() -> None:
    held = offsets()
    for offset in range(5):
        held.take(TP, offset)
    for offset in (1, 2, 4):
        held.handled(TP, offset)
    assert held.commit_points() == {TP: 0}  # 0 is still in hand: nothing past it
    held.handled(TP, 0)
    assert held.commit_points() == {TP: 3}
    held.handled(TP, 3)
    assert held.commit_points() == {TP: 5}


async def test_a_message_never_handled_holds_its_partition_back_but_not_others() -> None:
    held, other = offsets(), TopicPartition(TP.topic, 1)
    held.take(TP, 7)  # e.g. its handler was still retrying when the service stopped
    held.take(other, 3)
    held.handled(other, 3)
    held.take(TP, 8)
    held.handled(TP, 8)
    assert held.commit_points() == {TP: 7, other: 4}


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None


class Subscriber:
    """Stands in for a FastStream subscriber: `consume` is the handler, with random delays."""

    def __init__(self) -> None:
        self.consumer = Consumer()
        self.running: dict[bytes | None, int] = {}
        self.order: dict[bytes | None, list[int]] = {}
        self.at_once = self.most_at_once = 0
        self.rng = random.Random(7)

    async def consume(self, record: Any) -> None:
        assert not self.running.get(record.key), "two messages of one report at once"
        self.running[record.key] = 1
        self.at_once += 1
        self.most_at_once = max(self.most_at_once, self.at_once)
        await asyncio.sleep(self.rng.random() / 200)
        self.order.setdefault(record.key, []).append(record.offset)
        self.at_once -= 1
        self.running[record.key] = 0


async def test_messages_of_one_report_are_handled_one_at_a_time_in_order() -> None:
    subscriber = Subscriber()
    dispatcher = Dispatcher(subscriber, limit=8)
    keys = [f"report-{i}".encode() for i in range(5)]
    for offset in range(200):
        await dispatcher.consume_one(Record(TP.topic, 0, offset, random.choice(keys)))
    while dispatcher.in_hand:
        await asyncio.sleep(0.01)
    assert sum(len(v) for v in subscriber.order.values()) == 200
    assert all(order == sorted(order) for order in subscriber.order.values())
    assert 1 < subscriber.most_at_once <= 5  # reports side by side, never more than keys


async def test_no_more_than_the_limit_are_in_hand() -> None:
    subscriber = Subscriber()
    dispatcher = Dispatcher(subscriber, limit=4)
    for offset in range(100):
        await dispatcher.consume_one(Record(TP.topic, offset % 3, offset, str(offset).encode()))
    while dispatcher.in_hand:
        await asyncio.sleep(0.01)
    assert subscriber.most_at_once == 4
