"""Commits: a batch's own offsets, once its effects are acknowledged (`Commits`), or with its
records in one transaction where the broker offers them (`Transactions`); and where a batch
fetched again starts from (`rewind`).

A partition taken away in a rebalance is not committed by this consumer past what it handled: a
commit covers the batch's partitions still assigned, at the offsets after the batch's records;
a commit refused by the new generation just means the new owner handles the batch again.
"""

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from shared.telemetry import describe_error

log = logging.getLogger("tipline.kafka")


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
    handles the next batch while it travels: its round trip is off the path every record waits
    on. Only partitions still assigned are committed, so a revoked one never goes past what this
    consumer handled. Once the service is stopping (`drain`), each commit is awaited: the batch
    in hand is committed before its consumer stops."""

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
