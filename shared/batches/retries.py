"""Handling one batch for a service, at least once: the handler, then the commit; retries and
dead letters when it fails.

- **Handle**: the service's handler gets the batch as one list, in the order the partitions hold
  it (so a report's records, one partition's, in offset order). It does its Redis work in a round
  trip or a few for the whole batch, and publishes everything together (`Publisher`).
- **Commit**: once, after every effect of the batch was acknowledged, of the batch's own
  offsets (`Commits`), or with its records in a transaction (`Transactions`).
- **A transient failure** (Redis or the broker away): nothing is committed; after a pause the
  batch is fetched again from its first record. Every effect is idempotent (derived ids, the
  ledger and timeline only move forward), so handling a record twice is harmless.
- **Any other failure**: the batch's records are handled one at a time; a record that still fails
  after `TIPLINE_MAX_ATTEMPTS` goes to the dead-letter topic with its cause (at once when the
  handler says it is `Poison`), and the rest go on. So does a record that could not be decoded.
- **A dead letter that cannot be published** is retried in place: its batch is not committed
  before it is out.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage

from shared import metrics, topics
from shared.batches.commits import (
    Commits,
    Transactions,
    next_offsets,
    rewind,
    rewind_to_committed,
)
from shared.batches.decoding import Batch, M, header
from shared.batches.scope import Scope, current, handling
from shared.contracts import DeadLetter
from shared.seals import HEADER as SEAL
from shared.seals import covered
from shared.settings import Settings
from shared.store import REDIS_UNAVAILABLE
from shared.telemetry import describe_error

if TYPE_CHECKING:
    from shared.batches.publisher import Publisher

log = logging.getLogger("tipline.kafka")

# Failures that waiting cures: a dependency away. Anything else is a bug or a bad record.
TRANSIENT = (*REDIS_UNAVAILABLE, KafkaError, ConnectionError, TimeoutError, OSError)
Handler = Callable[[list[M]], Awaitable[None]]


class Poison(Exception):
    """Raised by a handler for a well-formed record it must refuse (an agency it cannot name):
    that record goes to the dead-letter topic at once."""


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

    async def __call__(self, message: StreamMessage[Any], batch: Batch,
                       handler: Handler[Any]) -> None:
        """Handle `batch`, the records of `message` decoded (Decoder.take)."""
        topic = batch.records[0].topic if batch.records else (
            batch.unreadable[0][0].topic if batch.unreadable else "?")
        metrics.EVENTS_IN.labels(self.service, topic).inc(len(batch.records) +
                                                          len(batch.unreadable))
        started = time.perf_counter()
        # FastStream types a message's consumer as its own protocol (a `commit()` of whatever
        # was consumed, which by now may include the next fetch): a subscribed message's is the
        # aiokafka consumer, whose `commit(offsets)` takes this batch's own.
        consumer: AIOKafkaConsumer = message.consumer  # type: ignore[attr-defined]
        pairs = list(zip(batch.records, batch.events, strict=True))
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
        log.debug("%s: handled %d records of %s in %.1f ms", self.service, len(pairs), topic,
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
            with handling(Scope(batch)):
                yield
            return
        scope = Scope(batch, producer=await self.transactions.begin())
        try:
            with handling(scope):
                yield
            await self.transactions.commit(consumer, next_offsets(records))
        except BaseException:
            await self.transactions.abort()
            raise
        for action in scope.committed:
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
        scope = current()
        assert scope is not None  # inside _unit
        scope.refused, scope.later = [], []
        await handler([event for _, event in pairs])
        if scope.later and scope.later_by is not None:
            await scope.later_by.send([])  # which takes them along
        record_of = {id(event): record for record, event in pairs}
        for event, reason in scope.refused:
            await self.dead_letter(record_of[id(event)], reason)

    async def dead_letter(self, record: ConsumerRecord[Any, Any], exc: BaseException) -> None:
        """Out to the dead-letter topic with its cause; retried until it is (or we stop)."""
        letter = dead_letter_of(self.service, record, exc, self.max_letter_bytes)
        key = letter.key
        metrics.ERRORS.labels(self.service, record.topic, "poison").inc()
        metrics.DEAD_LETTERS.labels(self.service, record.topic).inc()
        log.error("%s: dead-lettered %s[%s]@%s: %s", self.service, record.topic,
                  record.partition, record.offset, describe_error(exc))
        scope = current()
        if scope is not None and scope.producer is not None and self.letters is not None:
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
