"""Resting: a subscriber with nothing to read stops asking the broker every few milliseconds.

The embedded broker has no long poll: it answers a fetch when the fetch's wait is up, records or
not. So a subscriber that nobody writes to asks all the time, and an idle stack spent most of its
CPU on it (docs/load-testing.md, "tipline idle"). Apache Kafka answers a fetch as soon
as a record comes, so there a subscriber may simply wait long, and nobody rests
(`KAFKA_REST_MS=0`).

A subscriber that has handled no batch for `KAFKA_REST_AFTER_S` rests: its partitions are
paused, and every `KAFKA_REST_MS` resumed for one fetch. A record written while it rests waits
that long at most; its batch wakes the subscriber, which fetches as before until it has been
idle that long again. The console's reader rests alike. `tipline_resting` says which consumers
rest, so paused partitions are seen for what they are.

The race, and who wins it: a record may arrive in the very fetch a resting subscriber made, and
aiokafka drops what a fetch brought for a paused partition (without moving the position). So a
subscriber pauses again only after a fetch made since it resumed has answered on every partition
(`last_poll_timestamp`), and only when that answer showed nothing past its position
(`highwater`). If it showed a record, the subscriber stays resumed and the record is read:
the record wins. Nothing is lost either way; at worst a record is fetched twice.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.metrics import RESTING
from shared.settings import Settings

log = logging.getLogger("tipline.kafka")


@dataclass
class Rest:
    """One consumer's rest: how long its fetches wait, and when it last had records."""

    consumer: Callable[[], AIOKafkaConsumer | None]  # None: not started yet, or stopped
    fetch_wait_s: float
    group: str
    last_batch: float = field(default_factory=time.monotonic)

    def woke(self) -> None:
        """Records came: awake until it has been idle long enough again."""
        self.last_batch = time.monotonic()


def may_rest(resumed_ms: float, partitions: list[tuple[int | None, int | None, int]]) -> bool:
    """Whether a consumer that resumed at `resumed_ms` may pause again, given each partition's
    (last fetch answer's time in ms, highwater, position): only once every partition was
    answered since, and none holds a record past the position (it is read first)."""
    return bool(partitions) and all(
        answered is not None and answered >= resumed_ms
        and highwater is not None and highwater <= position
        for answered, highwater, position in partitions)


class Resting:
    """The rests of one process's consumers, and the tasks that keep them."""

    def __init__(self, service: str, rest_ms: int, rest_after_s: float) -> None:
        self.service = service
        self.every_s = rest_ms / 1000
        self.after_s = rest_after_s
        self.rests: list[Rest] = []
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def of(cls, settings: Settings, service: str) -> "Resting":
        return cls(service, settings.kafka_rest_ms, settings.kafka_rest_after_s)

    def add(self, consumer: Callable[[], AIOKafkaConsumer | None], fetch_wait_ms: int,
            group: str) -> Rest:
        """A consumer that rests when idle; `group` names it in `tipline_resting`."""
        rest = Rest(consumer, fetch_wait_ms / 1000, group)
        self.rests.append(rest)
        return rest

    @property
    def on(self) -> bool:
        """Whether consumers rest here at all (not where the broker has a long poll)."""
        return self.every_s > 0

    def start(self) -> None:
        """Once the consumers have started: idle from now, not from when they were made."""
        if self.on and not self._tasks:
            for rest in self.rests:  # each its own task: one waiting on a rebalance holds no other
                rest.woke()
                self._tasks.append(asyncio.create_task(self._keep(rest), name="tipline-resting"))

    async def stop(self) -> None:
        """Stop resting, every partition resumed (the consumers may finish what is in hand)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for rest in self.rests:
            consumer = rest.consumer()
            if consumer is not None and consumer.paused():
                consumer.resume(*consumer.paused())
            RESTING.labels(self.service, rest.group).set(0)

    async def _keep(self, rest: Rest) -> None:
        resting = RESTING.labels(self.service, rest.group)
        while True:
            await asyncio.sleep(self.every_s)
            await self._turn(rest, rest.last_batch < time.monotonic() - self.after_s)
            consumer = rest.consumer()
            resting.set(1 if consumer is not None and consumer.paused() else 0)

    async def _turn(self, rest: Rest, idle: bool) -> None:
        """Awake: fetching. Idle: one fetch, then paused again unless it found a record. On any
        error (a consumer stopping or rebalancing under it) the consumer is left awake, which is
        always safe, and the next turn looks again."""
        consumer = rest.consumer()
        if consumer is None:
            return
        try:
            assigned = consumer.assignment()
            if consumer.paused():
                consumer.resume(*consumer.paused())
            if idle and assigned:
                await asyncio.wait_for(self._one_fetch(rest, consumer, assigned),
                                       4 * rest.fetch_wait_s + 2)
        except Exception as error:
            if not isinstance(error, TimeoutError):  # a fetch not answered yet: no news
                log.warning("resting: %s; awake until the next turn", error)
            with contextlib.suppress(Exception):
                consumer.resume(*consumer.paused())

    async def _one_fetch(self, rest: Rest, consumer: AIOKafkaConsumer,
                         assigned: set[TopicPartition]) -> None:
        resumed_ms = time.time() * 1000
        # The embedded broker answers within the fetch's wait: no sooner than half of it.
        await asyncio.sleep(rest.fetch_wait_s / 2)
        while True:  # bounded by the turn's timeout: then awake until the next turn
            if consumer.assignment() != assigned:
                return  # a rebalance: awake, and the next turn looks again
            if may_rest(resumed_ms, [await _partition(consumer, tp) for tp in assigned]):
                consumer.pause(*assigned)
                return
            await asyncio.sleep(max(rest.fetch_wait_s / 4, 0.005))


async def _partition(consumer: AIOKafkaConsumer, tp: TopicPartition
                     ) -> tuple[int | None, int | None, int]:
    answered = consumer.last_poll_timestamp(tp)
    return (answered or None, consumer.highwater(tp), await consumer.position(tp))
