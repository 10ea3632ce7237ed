"""Fetch pacing: a quiet consumer polls slowly, a consumer with new data at once fast again."""

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition

from shared import kafka
from shared.settings import Settings

TP = TopicPartition("t", 0)


@dataclass
class FakeConsumer:
    mark: int = 0
    _fetcher: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(
        _fetch_max_wait_ms=5))

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def highwater(self, tp: TopicPartition) -> int:
        return self.mark


async def test_quiet_consumers_slow_down_and_speed_up_on_new_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka, "IDLE_AFTER_S", 0.05)
    consumer = FakeConsumer()
    broker = SimpleNamespace(subscribers=[SimpleNamespace(consumer=consumer)])
    settings = Settings(kafka_fetch_max_wait_ms=5, kafka_idle_fetch_wait_ms=100)
    task = asyncio.create_task(kafka.adapt_fetch_waits(broker, settings, tick_s=0.005))
    try:
        await asyncio.sleep(0.15)
        assert consumer._fetcher._fetch_max_wait_ms == 100
        consumer.mark = 7  # a message arrived
        await asyncio.sleep(0.02)
        assert consumer._fetcher._fetch_max_wait_ms == 5
    finally:
        task.cancel()


async def test_off_by_default() -> None:
    consumer = FakeConsumer()
    broker = SimpleNamespace(subscribers=[SimpleNamespace(consumer=consumer)])
    await asyncio.wait_for(kafka.adapt_fetch_waits(broker, Settings()), 1)  # returns at once
    assert consumer._fetcher._fetch_max_wait_ms == 5
