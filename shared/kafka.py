"""Kafka plumbing, written once: the broker, how a subscriber consumes, and dead letters.

Delivery is at-least-once (the embedded broker has no idempotent producer):
- a message's offset is committed only after its handler finished, so its effects are durable;
- a message that can never be processed (bad JSON, wrong schema) goes to the dead-letter topic
  with its cause and origin, then is committed, so it neither blocks nor vanishes;
- any other failure (Redis down, broker hiccup) is retried after a pause, without committing.
"""

import asyncio
import json
import logging
import time
import weakref
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faststream import AckPolicy
from faststream._internal.middlewares import BaseMiddleware
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.message import AckStatus, StreamMessage
from pydantic import ValidationError

from shared import metrics, topics
from shared.contracts import DeadLetter
from shared.settings import Settings
from shared.telemetry import describe_error, report_id_var, tracer_provider
from shared.topology import topic_config

log = logging.getLogger("tipline.kafka")

# Errors that redelivery cannot fix: the message itself is wrong.
POISON = (ValidationError, ValueError, TypeError, UnicodeDecodeError, json.JSONDecodeError)


class Poison(Exception):
    """Raised by a handler for a well-formed message it must refuse (for example, a bad id)."""


def make_broker(settings: Settings, service: str) -> KafkaBroker:
    broker = KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=f"tipline-{service}",
        acks="all",
        linger_ms=settings.kafka_linger_ms,
        max_request_size=settings.kafka_max_message_bytes,
        graceful_timeout=settings.tipline_shutdown_grace_s,
        middlewares=[KafkaTelemetryMiddleware(tracer_provider=tracer_provider(settings, service))],
        logger=logging.getLogger(f"tipline.{service}"),
        log_level=logging.DEBUG,  # one line a message is too much at INFO
    )
    broker.add_middleware(_delivery_middleware(broker, settings, service))
    return broker


def consumer_options(settings: Settings, group: str) -> dict[str, Any]:
    """How every tipline subscriber consumes: its own group, manual commits, short fetch waits."""
    return {
        "group_id": group,
        "ack_policy": AckPolicy.MANUAL,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
        "max_partition_fetch_bytes": settings.kafka_max_message_bytes,
    }


def _delivery_middleware(
    broker: KafkaBroker, settings: Settings, service: str
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
                result = await call_next(msg)
            except (*POISON, Poison) as exc:
                metrics.ERRORS.labels(service, topic, "poison").inc()
                await dead_letter(broker, service, msg, exc)
                await _completed(msg, broker)
                return None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.ERRORS.labels(service, topic, "transient").inc()
                log.warning("%s: transient failure, will retry: %s", service, describe_error(exc))
                await asyncio.sleep(settings.tipline_retry_backoff_s)
                await _flush(getattr(msg, "consumer", None))  # completed ones, before the seek
                await msg.nack()
                return None
            finally:
                elapsed = time.perf_counter() - started
                metrics.HANDLER_SECONDS.labels(service, topic).observe(elapsed)
                # Inside the consume span and with the report id: this line joins the trace.
                log.debug("%s: handled %s[%s]@%s in %.1f ms", service, topic,
                          getattr(record, "partition", "?"), getattr(record, "offset", "?"),
                          elapsed * 1000)
                report_id_var.reset(token)
            await _completed(msg, broker)
            return result

        async def publish_scope(self, call_next: Any, cmd: Any) -> Any:
            result = await call_next(cmd)
            metrics.EVENTS_OUT.labels(service, getattr(cmd, "destination", "?")).inc()
            return result

    return Delivery


# Commits under load. Committing after every message costs a broker round trip a message, in
# series with the handlers. A subscriber handles one message at a time, so the offset after its
# last completed message covers only completed messages: while more is already known to be
# waiting on the partition, that offset is held and committed with later ones (within
# COMMIT_EVERY_S, by a timer if no later message completes, or after COMMIT_EVERY_N messages).
# The last message of a burst is committed at once, as is everything held when the subscriber is
# stopping, and before a transient failure's seek back. Held offsets are tagged with the group
# generation they were completed in and dropped if it changed (the partition may belong to
# another consumer by then): a crash or rebalance redelivers at most that much, never skips it.
COMMIT_EVERY_S = 0.1
COMMIT_EVERY_N = 100


class _Held:
    __slots__ = ("count", "generation", "offsets", "since", "timer")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.offsets: dict[TopicPartition, int] = {}
        self.count = 0
        self.since = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None


_held: "weakref.WeakKeyDictionary[AIOKafkaConsumer, _Held]" = weakref.WeakKeyDictionary()
_flushing: set["asyncio.Task[None]"] = set()


def _generation(consumer: AIOKafkaConsumer) -> int:
    coordinator = getattr(consumer, "_coordinator", None)
    return int(getattr(coordinator, "generation", -1))


async def _completed(msg: StreamMessage[Any], broker: KafkaBroker) -> None:
    """The handler of `msg` is done: commit its offset now, or hold it for a moment under load."""
    consumer = getattr(msg, "consumer", None)
    if not isinstance(consumer, AIOKafkaConsumer) or isinstance(msg.raw_message, tuple) \
            or msg.committed is not None:
        await msg.ack()
        return
    record = msg.raw_message
    tp = TopicPartition(record.topic, record.partition)
    generation = _generation(consumer)
    held = _held.get(consumer)
    if held is None or held.generation != generation:
        if held is not None and held.timer is not None:
            held.timer.cancel()
        held = _held[consumer] = _Held(generation)
    held.offsets[tp] = record.offset + 1
    held.count += 1
    msg.committed = AckStatus.ACKED
    highwater = consumer.highwater(tp)
    more_waiting = highwater is not None and record.offset + 1 < highwater
    stopping = not all(getattr(sub, "running", True) for sub in broker.subscribers)
    if more_waiting and not stopping and held.count < COMMIT_EVERY_N \
            and time.monotonic() - held.since < COMMIT_EVERY_S:
        if held.timer is None:
            held.timer = asyncio.get_running_loop().call_later(
                COMMIT_EVERY_S, _flush_later, consumer, held)
        return
    await _flush(consumer)


def _flush_later(consumer: AIOKafkaConsumer, held: _Held) -> None:
    held.timer = None
    if _held.get(consumer) is not held:
        return
    task = asyncio.ensure_future(_flush(consumer))
    _flushing.add(task)
    task.add_done_callback(_flushed)


def _flushed(task: "asyncio.Task[None]") -> None:
    _flushing.discard(task)
    if not task.cancelled() and (exc := task.exception()) is not None:
        # Not committed: those messages are delivered again (consumers are idempotent).
        log.info("held offsets not committed: %s", describe_error(exc))


async def _flush(consumer: Any) -> None:
    """Commit the held offsets of `consumer` (those of its current generation and assignment)."""
    if not isinstance(consumer, AIOKafkaConsumer):
        return
    held = _held.pop(consumer, None)
    if held is None:
        return
    if held.timer is not None:
        held.timer.cancel()
    if not held.offsets or held.generation != _generation(consumer):
        return
    assigned = consumer.assignment()
    offsets = {tp: offset for tp, offset in held.offsets.items() if tp in assigned}
    if offsets:
        await consumer.commit(offsets)


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


async def ensure_topics(settings: Settings, names: list[str]) -> list[str]:
    """Create topics up front (so consumers join at once and partitions are what we want).

    tipline's topics get their retention from `shared.topology` (preservation); returns the
    names created by this call.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    replication = settings.kafka_replication_factor
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        n, settings.kafka_partitions, replication,
                        topic_configs=topic_config(n, replication)
                        if n.startswith("tipline.") else None,
                    )
                    for n in missing
                ]
            )
        return missing
    finally:
        await admin.close()


IDLE_AFTER_S = 1.0  # a consumer with nothing new for this long polls at the idle pace


async def adapt_fetch_waits(broker: Any, settings: Settings, tick_s: float = 0.05) -> None:
    """Poll busy topics fast and quiet ones slowly, for as long as it runs.

    The embedded broker holds every fetch for the full `fetch_max_wait_ms` (it does not answer
    early when data arrives), so a short wait is what keeps a hop at a few milliseconds, and
    every consumer of every quiet topic then asks again ~150 times a second. Profiles of the
    pipeline under load put most of the services' and the broker's CPU there. So: a consumer
    that has seen nothing new for a second fetches with `kafka_idle_fetch_wait_ms`; as soon as
    its high-water mark moves it is back at `kafka_fetch_max_wait_ms`. Only the pace of fetches
    changes: what is delivered, and when offsets are committed, does not.
    """
    busy, idle = settings.kafka_fetch_max_wait_ms, settings.kafka_idle_fetch_wait_ms
    if idle <= busy:
        return
    last: dict[int, tuple[tuple[int, ...], float]] = {}
    while True:
        await asyncio.sleep(tick_s)
        now = time.monotonic()
        for sub in getattr(broker, "subscribers", []):
            for consumer in _consumers(sub):
                fetcher = getattr(consumer, "_fetcher", None)
                if fetcher is None:
                    continue
                marks = tuple(consumer.highwater(tp) or -1 for tp in sorted(
                    consumer.assignment(), key=lambda tp: (tp.topic, tp.partition)))
                seen, since = last.get(id(consumer), ((), now))
                if marks != seen:
                    since = now
                fetcher._fetch_max_wait_ms = idle if now - since > IDLE_AFTER_S else busy
                last[id(consumer)] = (marks, since)


def _consumers(sub: Any) -> list[Any]:
    """The aiokafka consumers behind a FastStream subscriber (one, or a subgroup)."""
    found = [getattr(sub, "consumer", None), *getattr(sub, "consumer_subgroup", [])]
    return [c for c in found if c is not None]
