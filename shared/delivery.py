"""How every tipline subscriber handles its messages: concurrently, in order per report, at least
once (the embedded broker has no idempotent producer, so every consumer is idempotent).

- Up to `tipline_handler_concurrency` messages of a subscriber are handled at once, but the
  messages of one key (one report) one after another, in offset order.
- A partition's offset is committed only up to its oldest message not yet handled, so what is
  committed has had its effects. Commits go out every COMMIT_EVERY_S while messages keep coming,
  and at once when the subscriber catches up or is stopping.
- A message that can never be processed (bad JSON, wrong schema, `Poison`) goes to the
  dead-letter topic with its cause and origin, then counts as handled: it neither blocks nor
  vanishes.
- Any other failure (Redis down, broker hiccup) is retried in place after a pause: the message
  keeps its place, so nothing of the same report overtakes it and its offset is not committed.
"""

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Hashable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream._internal.middlewares import BaseMiddleware
from faststream.kafka import KafkaBroker
from faststream.kafka.subscriber.usecase import BatchSubscriber
from faststream.message import AckStatus, StreamMessage
from pydantic import BaseModel, ValidationError

from shared import metrics, topics
from shared.contracts import DeadLetter
from shared.seals import HEADER as SEAL
from shared.seals import Seals, Unsealed
from shared.settings import Settings
from shared.telemetry import describe_error, report_id_var
from shared.topics import WRITERS

log = logging.getLogger("tipline.kafka")

# Errors that redelivery cannot fix: the message itself is wrong.
POISON = (ValidationError, ValueError, TypeError, UnicodeDecodeError, json.JSONDecodeError)
COMMIT_EVERY_S = 0.1


class Poison(Exception):
    """Raised by a handler for a well-formed message it must refuse (for example, a bad id)."""


class Offsets:
    """The offsets one consumer has in hand, per partition, in one group generation.

    A rebalance starts a new generation: offsets taken in an older one are never committed (the
    partition may belong to another consumer by then), so a rebalance redelivers, never skips.
    """

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.generation = _generation(consumer)
        self._in_hand: dict[TopicPartition, set[int]] = {}
        self._handled: dict[TopicPartition, int] = {}  # next offset after the highest handled
        self._committed: dict[TopicPartition, int] = {}
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def take(self, tp: TopicPartition, offset: int) -> None:
        self._in_hand.setdefault(tp, set()).add(offset)

    def handled(self, tp: TopicPartition, offset: int) -> None:
        self._in_hand.get(tp, set()).discard(offset)
        self._handled[tp] = max(self._handled.get(tp, 0), offset + 1)

    def idle(self) -> bool:
        """Nothing in hand, and nothing known to be waiting on the broker."""
        return not any(self._in_hand.values()) and all(
            (mark := self.consumer.highwater(tp)) is None or upto >= mark
            for tp, upto in self._handled.items()
        )

    def commit_points(self) -> dict[TopicPartition, int]:
        """Per partition, the oldest offset in hand (or the next after the last handled)."""
        points = {}
        for tp, upto in self._handled.items():
            in_hand = self._in_hand.get(tp)
            point = min(in_hand) if in_hand else upto
            if point > self._committed.get(tp, -1):
                points[tp] = point
        return points

    async def commit(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        async with self._lock:
            if self.generation != _generation(self.consumer):
                return
            assigned = self.consumer.assignment()
            points = {tp: o for tp, o in self.commit_points().items() if tp in assigned}
            if not points:
                return
            try:
                await self.consumer.commit(points)
            except Exception as exc:  # stopping or rebalancing: delivered again, no harm
                log.info("offsets not committed: %s", describe_error(exc))
                return
            self._committed.update(points)

    def commit_soon(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(COMMIT_EVERY_S, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self.commit())
        self._pending.add(task)  # held until done, so it is not collected mid-commit
        task.add_done_callback(self._pending.discard)


def _generation(consumer: AIOKafkaConsumer) -> int:
    # aiokafka keeps the group generation on its (private) coordinator.
    coordinator = getattr(consumer, "_coordinator", None)
    return int(getattr(coordinator, "generation", -1))


_offsets: "weakref.WeakKeyDictionary[AIOKafkaConsumer, Offsets]" = weakref.WeakKeyDictionary()


def offsets_of(consumer: AIOKafkaConsumer) -> Offsets:
    """The consumer's offsets in its current generation."""
    current = _offsets.get(consumer)
    if current is None or current.generation != _generation(consumer):
        current = _offsets[consumer] = Offsets(consumer)
    return current


class Dispatcher:
    """Hands a subscriber's messages to its handler, many at once but one at a time per key.

    It takes the place of the subscriber's `consume_one`: FastStream's consume loop fetches a
    message and awaits this, which returns as soon as the message is scheduled (or, with
    `limit` messages in hand, once one of them is done).
    """

    def __init__(self, subscriber: Any, limit: int) -> None:
        self._subscriber = subscriber
        self._slots = asyncio.Semaphore(max(1, limit))
        self._last: dict[Hashable, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_hand(self) -> int:
        return len(self._tasks)

    async def consume_one(self, record: Any) -> None:
        consumer = getattr(self._subscriber, "consumer", None)
        if not isinstance(consumer, AIOKafkaConsumer):
            await self._subscriber.consume(record)  # not a fetching subscriber: as FastStream does
            return
        await self._slots.acquire()
        record.offsets = offsets = offsets_of(consumer)
        offsets.take(TopicPartition(record.topic, record.partition), record.offset)
        chain: Hashable = (record.topic, record.key if record.key is not None else record.partition)
        before = self._last.get(chain)
        task = asyncio.create_task(self._handle(record, before))
        self._last[chain] = task
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(chain, t))

    async def _handle(self, record: Any, before: "asyncio.Task[None] | None") -> None:
        try:
            if before is not None:
                await asyncio.wait([before])
            # Not running any more (stopping): returns at once and the offset stays in hand.
            await self._subscriber.consume(record)
        finally:
            self._slots.release()

    def _done(self, chain: Hashable, task: "asyncio.Task[None]") -> None:
        self._tasks.discard(task)
        if self._last.get(chain) is task:
            del self._last[chain]


def handle_concurrently(subscriber: Any, limit: int) -> None:
    """Install a Dispatcher on a FastStream Kafka subscriber (one record a message, not batches);
    a broker started again gets a fresh one."""
    if not isinstance(subscriber, BatchSubscriber):
        subscriber.consume_one = Dispatcher(subscriber, limit).consume_one


async def _handled(msg: StreamMessage[Any], broker: KafkaBroker) -> None:
    """The handler of `msg` is done: its offset may be committed."""
    record = msg.raw_message
    offsets = getattr(record, "offsets", None)
    if not isinstance(offsets, Offsets):
        await msg.ack()  # not through a Dispatcher (a test broker): FastStream's own ack
        return
    msg.committed = AckStatus.ACKED
    offsets.handled(TopicPartition(record.topic, record.partition), record.offset)
    if offsets.idle() or _stopping(broker):
        await offsets.commit()
    else:
        offsets.commit_soon()


def _stopping(broker: KafkaBroker) -> bool:
    return not all(getattr(sub, "running", True) for sub in broker.subscribers)


def delivery_middleware(
    broker: KafkaBroker, settings: Settings, service: str, seals: Seals | None
) -> type[BaseMiddleware[Any, Any]]:
    class Delivery(BaseMiddleware[Any, Any]):
        async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
            record = _record(msg)
            topic = getattr(record, "topic", "?")
            key = getattr(record, "key", None)
            # Every topic is keyed by report id: log lines of this message carry it.
            token = report_id_var.set(key.decode("utf-8", "replace") if key else None)
            metrics.EVENTS_IN.labels(service, topic).inc()
            started = time.perf_counter()
            try:
                while True:
                    try:
                        if seals is not None:
                            seals.check(topic, key, msg.body, _header(record, SEAL))
                        result = await call_next(msg)
                        break
                    except (*POISON, Poison, Unsealed) as exc:
                        metrics.ERRORS.labels(service, topic, "poison").inc()
                        await dead_letter(broker, service, msg, exc)
                        result = None
                        break
                    except Exception as exc:
                        metrics.ERRORS.labels(service, topic, "transient").inc()
                        log.warning("%s: transient failure, will retry: %s",
                                    service, describe_error(exc))
                        await asyncio.sleep(settings.tipline_retry_backoff_s)
                        if _stopping(broker):
                            return None  # not handled: delivered again after the restart
            finally:
                elapsed = time.perf_counter() - started
                metrics.HANDLER_SECONDS.labels(service, topic).observe(elapsed)
                # Inside the consume span and with the report id: this line joins the trace.
                log.debug("%s: handled %s[%s]@%s in %.1f ms", service, topic,
                          getattr(record, "partition", "?"), getattr(record, "offset", "?"),
                          elapsed * 1000)
                report_id_var.reset(token)
            await _handled(msg, broker)
            return result

        async def publish_scope(self, call_next: Any, cmd: Any) -> Any:
            if seals is not None and cmd.destination in WRITERS:
                # Sealed over the bytes that go out, so encode here (as FastStream would).
                body = cmd.body
                if isinstance(body, BaseModel):
                    cmd.body = body = body.model_dump_json().encode()
                cmd.headers[SEAL] = seals.seal(service, cmd.destination, cmd.key, body)
            result = await call_next(cmd)
            metrics.EVENTS_OUT.labels(service, getattr(cmd, "destination", "?")).inc()
            return result

    return Delivery


def _header(record: Any, name: str) -> str | None:
    for key, value in getattr(record, "headers", ()) or ():
        if key == name:
            return bytes(value).decode("ascii", "replace")
    return None


def _record(msg: StreamMessage[Any]) -> Any:
    raw = msg.raw_message
    return raw[0] if isinstance(raw, tuple) else raw


async def dead_letter(
    broker: KafkaBroker, service: str, msg: StreamMessage[Any], exc: BaseException
) -> None:
    record = _record(msg)
    key = getattr(record, "key", None)
    letter = DeadLetter(
        service=service,
        topic=getattr(record, "topic", "?"),
        partition=getattr(record, "partition", -1),
        offset=getattr(record, "offset", -1),
        key=key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
        value=msg.body.decode("utf-8", "replace")[:65536],
        error=f"{type(exc).__name__}: {exc}"[:4096],
    )
    metrics.DEAD_LETTERS.labels(service, letter.topic).inc()
    log.error(
        "%s: dead-lettered %s[%s]@%s: %s",
        service, letter.topic, letter.partition, letter.offset, describe_error(exc),
    )
    key_bytes = letter.key.encode() if letter.key else None
    await broker.publish(letter, topics.DEAD_LETTERS, key=key_bytes)

