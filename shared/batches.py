"""How every tipline consumer handles what it reads: a fetched batch as one, at least once.

FastStream's batch subscriber hands a service up to `TIPLINE_BATCH_MAX_RECORDS` records at once
(`consume`). Then:

- **Decode**: each record on its own: its seal checked (shared/seals.py), its JSON parsed and
  validated once, straight into the contract model. A record that cannot be (bad JSON, wrong
  schema, no valid seal) goes to the dead-letter topic alone, with its cause; the rest go on.
- **Handle**: the service's handler gets the batch as one list, in the order the partitions hold
  it (so a report's records, one partition's, in offset order). It does its Redis work in a round
  trip or a few for the whole batch, and publishes everything together (`Publisher`).
- **Commit**: once, after every effect of the batch was acknowledged, of the batch's own
  offsets (`Commits`). The next batch is fetched and handled while the commit travels; the
  commits go in the batches' order, and a stopping service waits for each.
- **A transient failure** (Redis or the broker away): nothing is committed; after a pause the
  batch is fetched again from its first record. Every effect is idempotent (derived ids, the
  ledger and timeline only move forward), so handling a record twice is harmless.
- **Any other failure**: the batch's records are handled one at a time; a record that still fails
  after `TIPLINE_MAX_ATTEMPTS` goes to the dead-letter topic with its cause (at once when the
  handler says it is `Poison`), and the rest go on.
- **A dead letter that cannot be published** is retried in place: its batch is not committed
  before it is out.
- **A partition taken away** in a rebalance is not committed by this consumer past what it
  handled: a commit covers the batch's partitions still assigned, at the offsets after the
  batch's records; a commit refused by the new generation just means the new owner handles the
  batch again.

Spans: FastStream makes one consume span a batch, linked to each record's `traceparent`;
publishing about a report continues that report's own trace (`Publisher`), so a report's hops
stay one trace.
"""

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner, murmur2
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import SpanKind, Tracer
from pydantic import BaseModel, ValidationError

from shared import metrics, topics
from shared.contracts import DeadLetter
from shared.seals import HEADER as SEAL
from shared.seals import Seals, Unsealed, covered, covers_headers
from shared.settings import Settings
from shared.store import REDIS_UNAVAILABLE
from shared.telemetry import describe_error
from shared.topics import WRITERS

log = logging.getLogger("tipline.kafka")

M = TypeVar("M", bound=BaseModel)
# Failures that waiting cures: a dependency away. Anything else is a bug or a bad record.
TRANSIENT = (*REDIS_UNAVAILABLE, KafkaError, ConnectionError, TimeoutError, OSError)
# What a record that cannot be read raises while it is decoded.
UNREADABLE = (Unsealed, ValidationError, ValueError, UnicodeDecodeError)


class Poison(Exception):
    """Raised by a handler for a well-formed record it must refuse (an agency it cannot name):
    that record goes to the dead-letter topic at once."""


@dataclass
class Batch:
    """The records of one fetch: those decoded (in step with the handler's events) and those
    that could not be, with why."""

    records: list[ConsumerRecord[Any, Any]] = field(default_factory=list)
    unreadable: list[tuple[ConsumerRecord[Any, Any], Exception]] = field(default_factory=list)
    refused: list[tuple[Any, Exception]] = field(default_factory=list)
    later: list["Item"] = field(default_factory=list)  # Publisher.later: for the next send
    later_by: "Publisher | None" = None
    # In a transaction (Transactions): the producer its records go out on, and what waits for
    # them to be committed (Publisher.once_delivered).
    producer: AIOKafkaProducer | None = None
    committed: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _traces: dict[bytes, Any] | None = None

    def trace_of(self, key: bytes) -> Any:
        """The trace context of the last record of this report in the batch, or None."""
        if self._traces is None:  # read once a batch, on the first publish
            self._traces = {}
            for record in self.records:
                if not covers_headers(header(record, SEAL)):
                    continue  # nothing vouches for its trace headers (shared/seals.py)
                headers = {k: bytes(v).decode("latin-1") for k, v in record.headers or ()}
                if "traceparent" in headers and record.key is not None:
                    self._traces[record.key] = extract(headers)
        return self._traces.get(key)


_batch: ContextVar[Batch] = ContextVar("tipline_batch")


def refuse(event: Any, reason: Exception) -> None:
    """Called by a handler for one event of its batch it must refuse (a forged response, say):
    the event's record goes to the dead-letter topic with the reason, and the batch goes on."""
    _batch.get().refused.append((event, reason))


def header(record: ConsumerRecord[Any, Any], name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode("ascii", "replace")
    return None


class Decoder(Generic[M]):
    """Each record of a batch into the model, once; what cannot be is kept aside for the dead
    letters (FastStream's `decoder=` seam)."""

    def __init__(self, model: type[M], seals: Seals | None) -> None:
        self.model = model
        self.seals = seals

    async def __call__(self, msg: StreamMessage[Any]) -> list[M]:
        batch, events = Batch(), []
        for record in msg.raw_message:
            try:
                events.append(decode(record, self.model, self.seals))
                batch.records.append(record)
            except UNREADABLE as exc:
                batch.unreadable.append((record, exc))
        _batch.set(batch)
        return events


def decode(record: ConsumerRecord[Any, Any], model: type[M], seals: Seals | None) -> M:
    """One record into `model`, its seal checked first; raises one of UNREADABLE."""
    if seals is not None:
        seals.check(record.topic, record.key, record.value or b"", header(record, SEAL),
                    record.headers or ())
    return model.model_validate_json(record.value or b"")


# A letter's value when the record's own does not fit in one: enough to see what it was.
CUT_VALUE_CHARS = 65536


def dead_letter_of(service: str, record: ConsumerRecord[Any, Any], exc: BaseException,
                   max_bytes: int = 1024 * 1024) -> DeadLetter:
    """The dead letter of a record `service` could not handle, with its cause and origin, and
    what its seal covers, so that it can go back as its writer sealed it. Its value is kept
    whole while the letter stays under `max_bytes` (the broker's message size)."""
    key = record.key.decode("utf-8", "replace") if isinstance(record.key, bytes) else None
    raw = record.value or b""
    try:
        value, incomplete = raw.decode("utf-8"), False
    except UnicodeDecodeError:
        value, incomplete = raw.decode("utf-8", "replace"), True
    letter = DeadLetter(
        service=service, topic=record.topic, partition=record.partition,
        offset=record.offset, key=key, value=value,
        error=f"{type(exc).__name__}: {exc}"[:4096], seal=header(record, SEAL),
        headers=[(k, v.decode("latin-1")) for k, v in covered(record.headers or ())],
        incomplete=incomplete,
    )
    if len(raw) * 6 > max_bytes and len(letter.model_dump_json()) > max_bytes:
        # Escaped as a JSON string a byte takes 6 at worst (a control character): only then
        # is the letter's size worth measuring.
        letter = letter.model_copy(update={"value": value[:CUT_VALUE_CHARS], "incomplete": True})
    return letter


Handler = Callable[[list[M]], Awaitable[None]]


def rewind(consumer: AIOKafkaConsumer, records: Iterable[ConsumerRecord[Any, Any]]) -> None:
    """Back to the first of these records on each partition still assigned (a partition taken
    in a rebalance is its new owner's, from the group's committed offset)."""
    for tp, offset in _first_offsets(consumer, records).items():
        consumer.seek(tp, offset)


async def rewind_to_committed(consumer: AIOKafkaConsumer,
                              records: Iterable[ConsumerRecord[Any, Any]]) -> None:
    """Back to the group's committed offset on each partition of these records still assigned
    (the first record's, where the group has none)."""
    for tp, first in _first_offsets(consumer, records).items():
        committed = await consumer.committed(tp)
        consumer.seek(tp, first if committed is None else committed)


def _first_offsets(consumer: AIOKafkaConsumer, records: Iterable[ConsumerRecord[Any, Any]],
                   ) -> dict[TopicPartition, int]:
    """The first offset of these records on each partition still assigned."""
    first: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        first[tp] = min(first.get(tp, record.offset), record.offset)
    assigned = consumer.assignment()
    return {tp: offset for tp, offset in first.items() if tp in assigned}


def next_offsets(records: Iterable[ConsumerRecord[Any, Any]]) -> dict[TopicPartition, int]:
    """Where each partition of these records goes on from once they are all handled."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
    return offsets


class Commits:
    """One subscriber's commits, a batch's own offsets each, in the batches' order.

    A batch's commit is sent once its effects are acknowledged, and the subscriber fetches and
    handles the next batch while it travels: its round trip (3-4 ms a hop at 500 reports/s,
    measured) is off the path every record waits on. Only partitions still assigned are
    committed, so a revoked one never goes past what this consumer handled. Once the service is
    stopping (`drain`), each commit is awaited: the batch in hand is committed before its
    consumer stops."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.stopping = False
        self._last: asyncio.Task[None] | None = None  # which holds the chain before it

    async def commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        self._last = asyncio.create_task(self._commit(consumer, offsets, self._last))
        if self.stopping:
            await self.drain()

    async def drain(self) -> None:
        """From now on each commit is awaited; returns once those sent so far are done."""
        self.stopping = True
        if self._last is not None:
            await asyncio.wait([self._last])

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int],
                      after: "asyncio.Task[None] | None") -> None:
        if after is not None:
            await asyncio.wait([after])  # its own failure it logged itself
        assigned = consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance took the partitions: their new owner redoes it
            log.info("%s: offsets not committed (%s): the batch is handled again",
                     self.service, describe_error(exc))
        except Exception as exc:  # a commit not made is a batch handled again, never a loss
            log.warning("%s: offsets not committed (%s): the batch is handled again",
                        self.service, describe_error(exc))


class Transactions:
    """One subscriber's transactional producer, where the broker offers transactions: what a
    batch publishes and the offsets it consumed are committed together, or neither is.

    The story of a sender killed mid-batch: its transaction stays open, so readers of committed
    records (every consumer, and the agencies' clients) see none of its records. The copy that
    starts in its place has the same transactional id (service, group and TIPLINE_INSTANCE), so
    the broker fences the dead one and aborts its transaction; the batch comes again from the
    committed offsets and is handled anew. Where no copy takes the name back, the broker aborts
    it after KAFKA_TRANSACTION_TIMEOUT_MS. A batch that fails is aborted, never half-committed.

    A commit that fails may have been made all the same (its answer lost while a broker failed
    over): the producer is dropped, and the next one, of the same transactional id, starts only
    once the broker has finished that transaction one way or the other. The batch then goes on
    from the group's committed offsets, which were committed with it or not at all: a batch whose
    commit went through is not handled twice (`Delivery`).

    aiokafka commits offsets in a transaction with TxnOffsetCommit v0, which carries no group
    generation (KIP-447), so a copy that lost its partitions in a rebalance but still runs is
    not fenced by the broker: the commit checks the partitions are still assigned first, and the
    ledger's idempotence is the second line."""

    def __init__(self, options: dict[str, Any], group: str) -> None:
        self.options, self.group = options, group
        self._producer: AIOKafkaProducer | None = None
        self._open = False  # a transaction begun and neither committed nor aborted
        # Where this copy's own transactions left each partition. The broker makes offsets
        # committed in a transaction readable once it has written the commit's markers, a moment
        # after the commit returns, longer while a broker fails over; and aiokafka asks for them
        # without KIP-447's require_stable, so a rebalance in that moment hands back the offsets
        # from before: the records below these were handled and committed here already.
        self.committed_past: dict[TopicPartition, int] = {}

    def handled_here(self, record: ConsumerRecord[Any, Any]) -> bool:
        """Whether this record was committed in one of this copy's transactions already."""
        return record.offset < self.committed_past.get(
            TopicPartition(record.topic, record.partition), 0)

    async def ready(self) -> AIOKafkaProducer:
        """The producer, started if need be: its start fences an earlier producer of the same
        transactional id, and waits for the broker to finish any transaction that one left."""
        if self._producer is None:
            producer = AIOKafkaProducer(**self.options)
            await producer.start()
            self._producer = producer
        return self._producer

    async def begin(self) -> AIOKafkaProducer:
        producer = await self.ready()
        await producer.begin_transaction()
        self._open = True
        return producer

    async def commit(self, consumer: AIOKafkaConsumer,
                     offsets: dict[TopicPartition, int]) -> None:
        assert self._producer is not None and self._open
        assigned = consumer.assignment()
        if lost := sorted(str(tp) for tp in offsets if tp not in assigned):
            raise KafkaError(f"partitions taken in a rebalance: {', '.join(lost)}")
        try:
            if offsets:
                await self._producer.send_offsets_to_transaction(offsets, self.group)
            await self._producer.commit_transaction()
        except BaseException:
            await self.stop()  # in doubt: the next producer starts once it is settled
            raise
        self._open = False
        self.note_committed(offsets)

    def note_committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            self.committed_past[tp] = max(self.committed_past.get(tp, 0), offset)

    async def abort(self) -> None:
        """Abort the transaction in hand, if any: its records are never read as committed. A
        producer that cannot abort is dropped: the next one, of the same transactional id,
        fences it and the broker aborts what it left open."""
        if not self._open or self._producer is None:
            return
        self._open = False
        try:
            await self._producer.abort_transaction()
        except Exception as exc:
            log.warning("transaction %s not aborted (%s): a new producer takes over",
                        self.options.get("transactional_id"), describe_error(exc))
            await self.stop()

    async def stop(self) -> None:
        producer, self._producer, self._open = self._producer, None, False
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()


class Delivery:
    """Handles one batch for a service: dead letters, the handler, isolation, the commit."""

    def __init__(self, broker: KafkaBroker, settings: Settings, service: str,
                 commits: Commits | None = None,
                 transactions: Transactions | None = None,
                 letters: "Publisher | None" = None) -> None:
        self.broker = broker
        self.letters = letters  # how dead letters go out inside a transaction
        self.service = service
        self.backoff_s = settings.tipline_retry_backoff_s
        self.attempts = settings.tipline_max_attempts
        # Room for the envelope beside the letter, under what the broker takes.
        self.max_letter_bytes = settings.kafka_max_message_bytes - 64 * 1024
        self.commits = commits or Commits(service)
        self.transactions = transactions

    async def __call__(self, message: StreamMessage[Any], events: list[Any],
                       handler: Handler[Any]) -> None:
        batch = _batch.get()
        topic = batch.records[0].topic if batch.records else (
            batch.unreadable[0][0].topic if batch.unreadable else "?")
        metrics.EVENTS_IN.labels(self.service, topic).inc(len(batch.records) +
                                                          len(batch.unreadable))
        started = time.perf_counter()
        # FastStream types a message's consumer as its own protocol (a `commit()` of whatever
        # was consumed, which by now may include the next fetch): a subscribed message's is the
        # aiokafka consumer, whose `commit(offsets)` takes this batch's own.
        consumer: AIOKafkaConsumer = message.consumer  # type: ignore[attr-defined]
        pairs = list(zip(batch.records, events, strict=True))
        if self.transactions is not None and (
                again := [r for r in message.raw_message if self.transactions.handled_here(r)]):
            log.info("%s: %d records of %s fetched again from offsets committed before this "
                     "copy's last transaction (a rebalance as it committed): passed over",
                     self.service, len(again), topic)
            pairs = [(r, e) for r, e in pairs if not self.transactions.handled_here(r)]
            batch.unreadable = [(r, x) for r, x in batch.unreadable
                                if not self.transactions.handled_here(r)]
            if not pairs and not batch.unreadable:
                return
        try:
            await self._handle(consumer, batch, pairs, handler)
        except TRANSIENT as exc:
            metrics.ERRORS.labels(self.service, topic, "transient").inc()
            log.warning("%s: %d records of %s not handled, fetched again after a pause: %s",
                        self.service, len(batch.records), topic, describe_error(exc))
            await asyncio.sleep(self.backoff_s)
            if self.transactions is None:
                rewind(consumer, message.raw_message)
            else:  # to what committed with the batch's transactions, or before them
                await self.transactions.ready()
                await rewind_to_committed(consumer, message.raw_message)
            return
        finally:
            metrics.HANDLER_SECONDS.labels(self.service, topic).observe(
                time.perf_counter() - started)
        if self.transactions is None:
            await self.commits.commit(consumer, next_offsets(message.raw_message))
        # One line a batch, naming its reports (inside the batch's span: its trace id too).
        log.debug("%s: handled %d records of %s in %.1f ms", self.service, len(events), topic,
                  (time.perf_counter() - started) * 1000, extra={"report_ids": sorted(
                      {r.key.decode("utf-8", "replace") for r in batch.records if r.key})})

    async def _handle(self, consumer: AIOKafkaConsumer, batch: Batch,
                      pairs: list[tuple[ConsumerRecord[Any, Any], Any]],
                      handler: Handler[Any]) -> None:
        """The batch as one; after a failure, a record at a time, each with its attempts."""
        try:
            async with self._unit(consumer, batch, [r for r, _ in batch.unreadable] +
                                  [r for r, _ in pairs]):
                for record, exc in batch.unreadable:
                    await self.dead_letter(record, exc)
                if pairs:
                    await self._call(handler, pairs)
            return
        except TRANSIENT:
            raise
        except Exception as exc:
            failed: Exception | None = exc
            log.warning("%s: a batch of %d failed (%s): its records one at a time now",
                        self.service, len(pairs), describe_error(exc))
        # In offset order, unreadable records among the rest: in a transaction each record's
        # offset is committed with its own outcome, never ahead of one before it.
        cause: dict[int, Exception] = {id(r): e for r, e in batch.unreadable}
        events = {id(r): e for r, e in pairs}
        records = sorted([*(r for r, _ in batch.unreadable), *(r for r, _ in pairs)],
                         key=lambda r: (r.topic, r.partition, r.offset))
        for record in records:
            if id(record) in cause:
                async with self._unit(consumer, batch, [record]):
                    await self.dead_letter(record, cause[id(record)])
                continue
            # The batch's try was a lone record's first attempt; a record of a larger batch
            # gets its attempts alone.
            attempt, error = (1, failed) if len(pairs) == 1 else (0, None)
            while True:
                if error is not None and (isinstance(error, Poison) or attempt >= self.attempts):
                    async with self._unit(consumer, batch, [record]):
                        await self.dead_letter(record, error)
                    break
                if attempt:
                    await asyncio.sleep(self.backoff_s)
                attempt += 1
                try:
                    async with self._unit(consumer, batch, [record]):
                        await self._call(handler, [(record, events[id(record)])])
                    break
                except TRANSIENT:
                    raise
                except Exception as failure:
                    error = failure

    @contextlib.asynccontextmanager
    async def _unit(self, consumer: AIOKafkaConsumer, batch: Batch,
                    records: list[ConsumerRecord[Any, Any]]) -> AsyncIterator[None]:
        """What commits as one. In a transaction: these records' effects and offsets, then what
        waited for them to be committed; an exception aborts it all. Otherwise nothing here:
        the batch's offsets are committed once it is all handled (Commits)."""
        if self.transactions is None:
            yield
            return
        batch.producer, batch.committed = await self.transactions.begin(), []
        try:
            yield
            await self.transactions.commit(consumer, next_offsets(records))
        except BaseException:
            batch.committed = []
            await self.transactions.abort()
            raise
        finally:
            batch.producer = None
        for action in batch.committed:
            await self._after_commit(action)

    async def _after_commit(self, action: Callable[[], Awaitable[None]]) -> None:
        """What waited for a commit: its batch is committed, so a failure here must not bring it
        back (its records would go out twice); it is tried again, then left with its cause."""
        for attempt in range(self.attempts):
            try:
                await action()
                return
            except Exception as exc:
                if attempt + 1 == self.attempts:
                    log.error("%s: after a commit, %s failed: %s", self.service,
                              getattr(action, "__qualname__", action), describe_error(exc))
                    return
                await asyncio.sleep(self.backoff_s)

    async def _call(self, handler: Handler[Any],
                    pairs: list[tuple[ConsumerRecord[Any, Any], Any]]) -> None:
        """The handler on these records, then what it left for later (Publisher.later); then
        the dead letters of those it refused."""
        batch = _batch.get()
        batch.refused, batch.later = [], []
        await handler([event for _, event in pairs])
        if batch.later and batch.later_by is not None:
            await batch.later_by.send([])  # which takes them along
        record_of = {id(event): record for record, event in pairs}
        for event, reason in batch.refused:
            await self.dead_letter(record_of[id(event)], reason)

    async def dead_letter(self, record: ConsumerRecord[Any, Any], exc: BaseException) -> None:
        """Out to the dead-letter topic with its cause; retried until it is (or we stop)."""
        letter = dead_letter_of(self.service, record, exc, self.max_letter_bytes)
        key = letter.key
        metrics.ERRORS.labels(self.service, record.topic, "poison").inc()
        metrics.DEAD_LETTERS.labels(self.service, record.topic).inc()
        log.error("%s: dead-lettered %s[%s]@%s: %s", self.service, record.topic,
                  record.partition, record.offset, describe_error(exc))
        batch = _batch.get(None)
        if batch is not None and batch.producer is not None and self.letters is not None:
            # In the transaction, with the record's offset: an aborted batch leaves no letter.
            await self.letters.send([(letter, topics.DEAD_LETTERS, key or "")])
            return
        while True:
            try:
                # Through the broker's publish: sealed as this service's, as every record.
                await self.broker.publish(letter, topics.dead_letter_topic(self.service),
                                          key=key.encode() if key else None)
                return
            except TRANSIENT as failed:
                if not all(getattr(s, "running", True) for s in self.broker.subscribers):
                    raise  # stopping: not committed, so the record comes back after the restart
                log.warning("%s: dead letter not published, retrying: %s", self.service,
                            describe_error(failed))
                await asyncio.sleep(self.backoff_s)


def consume(
    broker: KafkaBroker, settings: Settings, service: str, *topic_names: str, group: str,
    model: type[M], seals: Seals | None, patient: bool = False, max_records: int | None = None,
    commits: Commits | None = None, transactions: Transactions | None = None,
    letters: "Publisher | None" = None,
) -> Callable[[Handler[M]], Handler[M]]:
    """Register `handler(events: list[model])` as a batch subscriber of `topic_names` in consumer
    group `group`, delivered as this module says; a `patient` one (nobody waits on its records)
    fetches what came over KAFKA_PATIENT_FETCH_WAIT_MS instead of every few milliseconds.
    `max_records` caps its batches below TIPLINE_BATCH_MAX_RECORDS: a batch holds the service's
    event loop while its CPU work runs, and other subscribers of the process wait that long.
    `commits`: where its commits go (the broker's, which drains them when it stops);
    `transactions`: its transactional producer instead, where the broker offers transactions
    (then `letters` publishes its dead letters, in the transaction)."""
    delivery = Delivery(broker, settings, service, commits, transactions, letters)

    def register(handler: Handler[M]) -> Handler[M]:
        async def on_batch(events: list[Any]) -> None:
            # The message from FastStream's context, not as a `KafkaMessage` parameter: that
            # one is resolved in a worker thread, a thread hop every batch.
            await delivery(broker.context.get_local("message"), events, handler)

        # The handler's own name and types, for logs and the AsyncAPI document.
        on_batch.__name__ = on_batch.__qualname__ = handler.__name__
        on_batch.__doc__ = handler.__doc__
        on_batch.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
            inspect.Parameter("events", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              annotation=list[model]),  # type: ignore[valid-type]
        ], return_annotation=None)
        options = consumer_options(settings, group, patient=patient)
        # A patient subscriber waits as long for a batch as for a fetch.
        batch_timeout_ms = (options["fetch_max_wait_ms"] if patient
                            else settings.tipline_batch_timeout_ms)
        broker.subscriber(*topic_names, batch=True, decoder=Decoder(model, seals),
                          max_records=min(max_records or settings.tipline_batch_max_records,
                                          settings.tipline_batch_max_records),
                          batch_timeout_ms=batch_timeout_ms, **options)(on_batch)
        return handler

    return register


# A patient subscriber's fetch asks for more than a trickle brings, so the broker holds it for
# the whole wait and answers with all that came meanwhile (the embedded broker otherwise answers
# within half the wait): at 500 reports/s intake's timeline took 8 batches a second instead of
# 67, at half its CPU a report (measured).
PATIENT_FETCH_MIN_BYTES = 1024 * 1024


def consumer_options(settings: Settings, group: str, *, patient: bool = False) -> dict[str, Any]:
    """How every tipline subscriber consumes: its own group, commits by Delivery, short waits
    (a `patient` one waits KAFKA_PATIENT_FETCH_WAIT_MS for a fuller fetch)."""
    static = ({"group_instance_id": f"{group}-{settings.tipline_instance}"}
              if settings.kafka_static_membership else {})
    return {
        **static,
        "group_id": group,
        "ack_policy": AckPolicy.MANUAL,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
        "fetch_max_wait_ms": (settings.kafka_patient_fetch_wait_ms if patient
                              else settings.kafka_fetch_max_wait_ms),
        "fetch_min_bytes": PATIENT_FETCH_MIN_BYTES if patient else 1,
        "max_partition_fetch_bytes": settings.kafka_max_message_bytes,
        # Records of a transaction not committed (a sender killed mid-batch) are never read.
        "isolation_level": "read_committed" if settings.kafka_transactions
        else "read_uncommitted",
    }


def in_rounds(events: Sequence[M], key: Callable[[M], str]) -> list[list[M]]:
    """The batch in rounds: round n holds each report's n-th event, so a round has at most one
    event a report and handling the rounds in turn keeps each report's order. (Mostly one.)"""
    rounds: list[list[M]] = []
    seen: dict[str, int] = {}
    for event in events:
        n = seen.get(key(event), 0)
        seen[key(event)] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(event)
    return rounds


Item = tuple[BaseModel | bytes, str, str]  # what Publisher.send takes: body, topic, key


class Sender(Protocol):
    """Where a Publisher's records go: the service's own producer (TiplineBroker.sender)."""

    service: str
    seals: Seals | None

    async def sender(self) -> AIOKafkaProducer: ...

    def tracer(self) -> Tracer: ...


class Publisher:
    """Everything a batch publishes, in flight together, straight to the service's producer:
    each record keyed by its report, sealed, and published in a span under the trace of the
    record it came from (so the next hop's batch span links to it). The records of each
    partition go as one producer batch (`send_batch`): a record costs no future and no
    coroutine of its own, and a report's records stay in order, as one key is one partition."""

    def __init__(self, broker: Sender) -> None:
        self.broker = broker
        self.partitioner = RememberingPartitioner()  # where the producer's own would put them

    async def send(self, items: Iterable[Item]) -> None:
        """(body, topic, report id) each, then what the batch left for later; returns once the
        broker acknowledged them all."""
        batch = _batch.get(None)
        items = list(items)
        if batch is not None and batch.later:
            items, batch.later = items + batch.later, []
        if not items:
            return
        producer = (batch.producer if batch is not None and batch.producer is not None
                    else await self.broker.sender())
        tracer = self.broker.tracer()
        partitions: dict[str, list[int]] = {}
        by_partition: dict[tuple[str, int], list[tuple[bytes, bytes, list[Any]]]] = {}
        for body, topic, report_id in items:
            key = report_id.encode()
            value = body if isinstance(body, bytes) else body.model_dump_json().encode()
            trace = batch.trace_of(key) if batch is not None else None
            with tracer.start_as_current_span(f"{topic} publish", context=trace,
                                              kind=SpanKind.PRODUCER) as span:
                span.set_attribute("report.id", report_id)
                carrier: dict[str, str] = {}
                inject(carrier)
            # FastStream links a batch span only to records that carry a correlation id.
            carrier["correlation_id"] = str(getattr(body, "event_id", "") or uuid.uuid4())
            headers = [(k, v.encode()) for k, v in carrier.items()]
            headers += sealed(self.broker.service, self.broker.seals, topic, key, value, headers)
            if topic not in partitions:
                partitions[topic] = sorted(await producer.partitions_for(topic))
            partition = self.partitioner(key, partitions[topic], partitions[topic])
            by_partition.setdefault((topic, partition), []).append((key, value, headers))
        sent: list[asyncio.Future[Any]] = []

        async def send_batch(builder: Any, topic: str, partition: int) -> None:
            builder.close()  # complete: the producer sends it at once instead of lingering
            sent.append(await producer.send_batch(builder, topic, partition=partition))

        for (topic, partition), records in by_partition.items():
            builder = producer.create_batch()
            for key, value, headers in records:
                if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    await send_batch(builder, topic, partition)
                    builder = producer.create_batch()  # full: the rest in the next one
                    builder.append(key=key, value=value, timestamp=None, headers=headers)
            await send_batch(builder, topic, partition)
        await asyncio.gather(*sent)
        for (topic, _), records in by_partition.items():
            metrics.EVENTS_OUT.labels(self.broker.service, topic).inc(len(records))

    async def once_delivered(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run `action` once what was sent so far is delivered for good: now, when each send was
        acknowledged; after the commit, inside a transaction (whose records no one reads before
        it). If the process dies in between, the action is not run: it must only record what
        was done, never be needed for it."""
        batch = _batch.get(None)
        if batch is not None and batch.producer is not None:
            batch.committed.append(action)
        else:
            await action()

    async def later(self, items: Iterable[Item]) -> None:
        """Records nobody waits on (timeline facts): inside a batch they go out with its next
        send, after that send's own records, or when the handler returns, before the commit;
        outside a batch, at once. A round trip saved a batch, and never ahead of what others
        wait for."""
        batch = _batch.get(None)
        if batch is None:
            await self.send(items)
        else:
            batch.later.extend(items)
            batch.later_by = self


def sealed(service: str, seals: Seals | None, topic: str, key: bytes | None,
           value: bytes, headers: Sequence[tuple[str, bytes | str]] = ()
           ) -> list[tuple[str, bytes]]:
    """The seal header a record on an internal topic carries, over its other `headers` too
    (none on other topics)."""
    if seals is None or topic not in WRITERS:
        return []
    return seals.headers(service, topic, key, value, headers)


class RememberingPartitioner:
    """aiokafka's default partitioner (murmur2 of the key, as the Java client; a random partition
    for no key), remembering recent keys' hashes: murmur2 is pure Python (3-6% of a service's CPU
    in the bench's profiles) and a report's key goes out several times a hop."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int],
                 available: list[int]) -> int:
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        found = self._hashes.get(key)
        if found is None:
            if len(self._hashes) >= self._size:
                self._hashes.clear()
            found = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[found % len(all_partitions)]
