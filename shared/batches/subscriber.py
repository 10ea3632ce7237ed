"""Subscribing: a handler of `list[Model]` registered as a FastStream batch subscriber, its
batches decoded (`Decoder`) and delivered (`Delivery`), with the consumer settings every
tipline subscriber shares.

FastStream makes one consume span a batch, linked to each record's `traceparent`.
"""

import functools
import inspect
from collections.abc import Callable
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker

from shared.batches.commits import Commits, Transactions
from shared.batches.decoding import Decoder, M
from shared.batches.publisher import Publisher
from shared.batches.resting import Resting
from shared.batches.retries import Delivery, Handler
from shared.seals import Seals
from shared.settings import Settings


def consume(
    broker: KafkaBroker, settings: Settings, service: str, *topic_names: str, group: str,
    model: type[M], seals: Seals | None, patient: bool = False, max_records: int | None = None,
    commits: Commits | None = None, transactions: Transactions | None = None,
    letters: Publisher | None = None, resting: Resting | None = None,
) -> Callable[[Handler[M]], Handler[M]]:
    """Register `handler(events: list[model])` as a batch subscriber of `topic_names` in consumer
    group `group`, delivered as this module says; a `patient` one (nobody waits on its records)
    fetches what came over KAFKA_PATIENT_FETCH_WAIT_MS instead of every few milliseconds.
    `max_records` caps its batches below TIPLINE_BATCH_MAX_RECORDS: a batch holds the service's
    event loop while its CPU work runs, and other subscribers of the process wait that long.
    `commits`: where its commits go (the broker's, which drains them when it stops);
    `transactions`: its transactional producer instead, where the broker offers transactions
    (then `letters` publishes its dead letters, in the transaction);
    `resting`: where it rests when idle (shared/batches/resting.py)."""
    delivery = Delivery(broker, settings, service, commits, transactions, letters)
    decoder = Decoder(model, seals)

    def register(handler: Handler[M]) -> Handler[M]:
        if len(inspect.signature(handler).parameters) != 1:
            raise TypeError(f"{handler}: a batch handler takes one parameter, list[Model]")
        # Wrapped, so FastStream reads the handler's own name and signature (`list[Model]`) for
        # the AsyncAPI document, as fast_depends unwraps what it is given.
        @functools.wraps(handler)
        async def on_batch(*_: list[M], **__: list[M]) -> None:
            # FastStream passes the events under the handler's own parameter name; Delivery
            # takes the Batch they were decoded from, records beside them. The message from
            # FastStream's context, not as a `KafkaMessage` parameter: that one is resolved in
            # a worker thread, a thread hop every batch.
            message = broker.context.get_local("message")
            if rest is not None:
                rest.woke()
            await delivery(message, decoder.take(message), handler)

        options = consumer_options(settings, group, patient=patient)
        subscriber = broker.subscriber(
            *topic_names, batch=True, decoder=decoder,
            max_records=min(max_records or settings.tipline_batch_max_records,
                            settings.tipline_batch_max_records),
            batch_timeout_ms=UNTIL_RECORDS_COME_MS, **options)
        # FastStream's subscriber holds its aiokafka consumer, started with the broker.
        rest = (resting.add(lambda: subscriber.consumer, options["fetch_max_wait_ms"],
                            group) if resting is not None else None)
        subscriber(on_batch)
        return handler

    return register


# How long a subscriber's turn waits in aiokafka's `getmany`, which returns as soon as a fetch
# has brought a record. FastStream's batch loop sleeps as long again after a turn that brought
# nothing, and a record arriving meanwhile waits out the sleep: so the wait must never end while
# the service runs (a century). An idle subscriber then takes no turn at all; stopping cancels
# its wait.
UNTIL_RECORDS_COME_MS = 100 * 365 * 24 * 3600 * 1000

# A patient subscriber's fetch asks for more than a trickle brings, so the broker holds it for
# the whole wait and answers with all that came meanwhile (the embedded broker otherwise answers
# within half the wait): fewer, fuller batches (docs/load-testing.md).
PATIENT_FETCH_MIN_BYTES = 1024 * 1024


def idle_wake_ms(fetch_max_wait_ms: int) -> int:
    """aiokafka's `consumer_timeout_ms` for a consumer whose fetches wait this long: how often
    its fetch loop wakes with nothing to do (200 ms by default). An answer, an assignment or a
    drained batch wakes it sooner, so it need not wake oftener than its fetches answer."""
    return max(fetch_max_wait_ms, 200)


def consumer_options(settings: Settings, group: str, *, patient: bool = False) -> dict[str, Any]:
    """How every tipline subscriber consumes: its own group, commits by Delivery, short waits
    (a `patient` one waits KAFKA_PATIENT_FETCH_WAIT_MS for a fuller fetch)."""
    static = ({"group_instance_id": f"{group}-{settings.tipline_instance}"}
              if settings.kafka_static_membership else {})
    fetch_max_wait_ms = (settings.kafka_patient_fetch_wait_ms if patient
                         else settings.kafka_fetch_max_wait_ms)
    return {
        **static,
        "group_id": group,
        "ack_policy": AckPolicy.MANUAL,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
        "fetch_max_wait_ms": fetch_max_wait_ms,
        "consumer_timeout_ms": idle_wake_ms(fetch_max_wait_ms),
        "fetch_min_bytes": PATIENT_FETCH_MIN_BYTES if patient else 1,
        "max_partition_fetch_bytes": settings.kafka_max_message_bytes,
        # Records of a transaction not committed (a sender killed mid-batch) are never read.
        "isolation_level": "read_committed" if settings.kafka_transactions
        else "read_uncommitted",
    }

