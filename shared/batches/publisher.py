"""Publishing a batch's records: all in flight together, straight to the service's producer
(or the batch's transaction), sealed, each under the trace of the record it came from."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import cached_property
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from opentelemetry.propagate import inject
from opentelemetry.trace import SpanKind, Tracer, set_span_in_context
from pydantic import BaseModel

from shared import metrics
from shared.batches.partitioner import RememberingPartitioner
from shared.batches.scope import current
from shared.seals import Seals
from shared.topics import WRITERS

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

    @cached_property
    def tracer(self) -> Tracer:
        return self.broker.tracer()

    async def send(self, items: Iterable[Item]) -> None:
        """(body, topic, report id) each, then what the batch left for later; returns once the
        broker acknowledged them all."""
        scope = current()
        items = list(items)
        if scope is not None and scope.later:
            items, scope.later = items + scope.later, []
        if not items:
            return
        producer = (scope.producer if scope is not None and scope.producer is not None
                    else await self.broker.sender())
        tracer = self.tracer
        partitions: dict[str, list[int]] = {}
        by_partition: dict[tuple[str, int], list[tuple[bytes, bytes, list[Any]]]] = {}
        for body, topic, report_id in items:
            key = report_id.encode()
            value = body if isinstance(body, bytes) else body.model_dump_json().encode()
            trace = scope.batch.trace_of(key) if scope is not None else None
            # Started and ended, never made current: nothing runs inside it.
            span = tracer.start_span(f"{topic} publish", context=trace, kind=SpanKind.PRODUCER,
                                     attributes={"report.id": report_id})
            carrier: dict[str, str] = {}
            inject(carrier, context=set_span_in_context(span, trace))
            span.end()
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
        scope = current()
        if scope is not None and scope.producer is not None:
            scope.committed.append(action)
        else:
            await action()

    async def later(self, items: Iterable[Item]) -> None:
        """Records nobody waits on (timeline facts): inside a batch they go out with its next
        send, after that send's own records, or when the handler returns, before the commit;
        outside a batch, at once. A round trip saved a batch, and never ahead of what others
        wait for."""
        scope = current()
        if scope is None:
            await self.send(items)
        else:
            scope.later.extend(items)
            scope.later_by = self


def sealed(service: str, seals: Seals | None, topic: str, key: bytes | None,
           value: bytes, headers: Sequence[tuple[str, bytes | str]] = ()
           ) -> list[tuple[str, bytes]]:
    """The seal header a record on an internal topic carries, over its other `headers` too
    (none on other topics)."""
    if seals is None or topic not in WRITERS:
        return []
    return seals.headers(service, topic, key, value, headers)
