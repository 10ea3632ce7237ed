"""Reading the topics into the console's store: from its checkpoint at every start, then live.

The console uses no consumer group and commits nothing to Kafka: it assigns itself every
partition of the topics it shows and reads each from the offset its own store checkpointed (the
beginning, for a partition it never read), so every copy keeps its own store. A batch's records
and the offsets after them are written in one transaction (services/console/store.py), on a
thread of its own.

It decodes through the pipeline's own plumbing (`shared.batches.decode`: seal checked, then the
contract model); notices on agency topics must carry tipline's Ed25519 signature. A record that
cannot be read is never shown. The console writes nothing to Kafka: on a topic a pipeline service
consumes, that service dead-letters such a record (the console shows its letter); on the others
the console keeps its own refusal in its store (the dead-letter page shows it, service
"console"), logs it and counts it (`tipline_records_refused_total`, service "console").

A store whose checkpoint lies past the end of a partition was filled from another history (the
embedded broker keeps nothing across its restart): it is moved aside and the model rebuilt.
"""

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import OffsetOutOfRangeError
from pydantic import BaseModel

from services.console import alerts
from services.console.model import MODELS, Letter, cause
from services.console.store import Read, Store
from services.console.web import Live
from shared import topics
from shared.agencies import AgencyRegistry
from shared.batches import UNREADABLE, Resting, decode, idle_wake_ms
from shared.contracts import AgencyNotice
from shared.kafka import LagProbe, described_partitions, kafka_client_options
from shared.metrics import REFUSED
from shared.seals import Seals
from shared.settings import Settings
from shared.signing import BadSignature, Verifier
from shared.telemetry import describe_error
from shared.topics import SERVICES, agency_of_topic

log = logging.getLogger("tipline.console")

REFRESH_S = 5.0  # how often new agencies (topics) and partitions are looked for
BATCH = 2000  # records a fetch, and a transaction once caught up
# While catching up, fetches are gathered up to this many records a transaction: a report's
# records come from several topics read side by side, and a larger batch writes it once, not
# once a topic (why 5,000: docs/load-testing.md).
CATCH_UP_BATCH = 5_000
# A fetch brings at most this much (a larger record still comes, alone): the memory is the
# store's page cache and one batch, whatever the history's size. A partition gives a slice of
# its records a fetch, so a batch holds every topic's records of about the same moments: a
# report's records from several topics land in one transaction more often (written once).
FETCH_MAX_BYTES = 8 * 1024 * 1024
PARTITION_FETCH_BYTES = 128 * 1024


# Topics a pipeline service consumes (the catalogue's readers): a record there that cannot be read
# is dead-lettered by that service (the console shows its dead letter); the console only leaves
# it out, or every such record would be listed twice. Records on the other topics (what became
# of reports and notices, agency notices) have no other reader in tipline: the console keeps its
# own refusal of those.
DEAD_LETTERED_BY_CONSUMERS = frozenset(
    t.name for t in topics.CATALOGUE
    if t.prefix is None and t.readers & (set(topics.SERVICES) - {"console"}))


class Misaddressed(ValueError):
    """A notice on one agency's topic addressed to another."""


class Reader:
    """Turns records into events for the store; refuses what the pipeline would refuse."""

    def __init__(self, seals: Seals | None, verifier: Verifier | None) -> None:
        self.seals, self.verifier = seals, verifier

    def event(self, record: ConsumerRecord[Any, Any]) -> BaseModel | None:
        """The record's event, None for a topic the console does not show; raises one of
        UNREADABLE or BadSignature for a record it must not show."""
        agency_id = agency_of_topic(record.topic)
        if agency_id is not None:
            document = json.loads(record.value or b"")
            if not isinstance(document, dict):
                raise ValueError("a notice is a JSON object")
            if self.verifier is not None:
                self.verifier.verify(document)
            notice = AgencyNotice.model_validate(document)
            if notice.agency_id != agency_id:
                raise Misaddressed(f"a notice to {notice.agency_id} on {record.topic}")
            return notice
        model = MODELS.get(record.topic)
        return decode(record, model, self.seals) if model is not None else None

    def read(self, record: ConsumerRecord[Any, Any]) -> Read | None:
        """The record as the store takes it; None when there is nothing to keep of it."""
        try:
            event = self.event(record)
        except (*UNREADABLE, BadSignature) as exc:
            REFUSED.labels("console", record.topic).inc()
            log.warning("console: refused %s[%s]@%s (not shown): %s", record.topic,
                        record.partition, record.offset, describe_error(exc))
            if record.topic in DEAD_LETTERED_BY_CONSUMERS:
                return None
            key = record.key.decode("utf-8", "replace")[:200] if isinstance(
                record.key, bytes) else None
            return Read(record.topic, record.partition, record.offset, None, Letter(
                time.time(), "console", record.topic, record.partition, record.offset, key,
                cause(f"{type(exc).__name__}: {exc}")))
        if event is None:
            return None
        return Read(record.topic, record.partition, record.offset, event,
                    trace_id=trace_id(record))


def trace_id(record: ConsumerRecord[Any, Any]) -> str | None:
    """The trace a record travelled in (its W3C traceparent header), for a link to a trace UI."""
    for name, value in record.headers or ():
        if name == "traceparent":
            parts = bytes(value).decode("latin-1").split("-")
            if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
                return parts[1]
    return None


def wanted_topics(registry: AgencyRegistry) -> list[str]:
    return [*MODELS, *(a.topic for a in registry.agencies.values())]


class Follower:
    """The one consumer of the console: every partition, from the store's checkpoint."""

    def __init__(self, settings: Settings, store: Store, live: Live, reader: Reader,
                 registry: AgencyRegistry) -> None:
        self.settings, self.store, self.live = settings, store, live
        self.reader, self.registry = reader, registry
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="console-store")
        self.applied = 0  # records read since this process started
        self.isolation = ("read_committed" if settings.kafka_transactions
                          else "read_uncommitted")

    def end(self, tp: TopicPartition) -> int | None:
        """Where a partition ends for this reader: past its last stable offset, records are of
        transactions still open, not read yet."""
        if self.isolation == "read_committed":
            return self.consumer.last_stable_offset(tp)
        return self.consumer.highwater(tp)

    async def run(self) -> None:
        fetch_max_wait_ms = max(self.settings.kafka_fetch_max_wait_ms, 100)
        self.consumer = AIOKafkaConsumer(
            **kafka_client_options(self.settings), group_id=None, enable_auto_commit=False,
            auto_offset_reset="none", client_id="tipline-console",
            fetch_max_wait_ms=fetch_max_wait_ms,
            consumer_timeout_ms=idle_wake_ms(fetch_max_wait_ms),
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
            fetch_max_bytes=FETCH_MAX_BYTES,
            # What a transaction its sender never committed holds is never shown (on Apache
            # Kafka, where notices go out in transactions).
            isolation_level=self.isolation,
        )
        # Kept open: a new client every REFRESH_S would cost a TLS handshake and a SCRAM login
        # on both ends each time, on Apache Kafka.
        self.admin = AIOKafkaAdminClient(**kafka_client_options(self.settings))
        resting = Resting.of(self.settings, "console")
        rest = resting.add(lambda: self.consumer, fetch_max_wait_ms, "reader")
        await self.admin.start()
        await self.consumer.start()
        resting.start()
        try:
            await self._assign()
            refreshed = time.monotonic()
            while True:
                try:
                    batches = await self._fetch()
                except OffsetOutOfRangeError as exc:  # Kafka says so; the embedded broker ...
                    await self._out_of_range(exc.args[0] if exc.args else {})
                    continue
                if batches:
                    rest.woke()
                    await self._apply(batches)
                if not self.live.caught_up and (past := await self._past_end()):  # shows it
                    await self._another_history(past)
                    continue
                if not self.live.caught_up and await self._at_end():
                    self.live.caught_up = True
                    self.live.version = self.store.version = self.store.version + 1
                    log.info("console: read model caught up (%d records read since start)",
                             self.applied)
                if time.monotonic() - refreshed > REFRESH_S:
                    refreshed = time.monotonic()
                    await self._assign()
                    await asyncio.get_running_loop().run_in_executor(self.writer,
                                                                     self.store.tune)
        finally:
            await resting.stop()
            await self.consumer.stop()
            await self.admin.close()
            self.writer.shutdown()

    async def _fetch(self) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        """What the next transaction takes: one fetch, or while catching up, every fetch
        already in hand up to CATCH_UP_BATCH records."""
        # Caught up, a turn with nothing has only the refresh to do.
        batches = await self.consumer.getmany(timeout_ms=1000 if self.live.caught_up else 200,
                                              max_records=BATCH)
        count = sum(map(len, batches.values()))
        while not self.live.caught_up and 0 < count < CATCH_UP_BATCH:
            more = await self.consumer.getmany(timeout_ms=50, max_records=BATCH)
            if not more:
                break
            for tp, records in more.items():
                batches.setdefault(tp, []).extend(records)
                count += len(records)
        return batches

    async def _apply(self, batches: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        records = [r for rs in batches.values() for r in rs]
        positions = {(tp.topic, tp.partition): rs[-1].offset + 1 for tp, rs in batches.items()}

        def apply() -> bool:  # on the store's thread: decoding too (as the store takes them)
            return self.store.apply(
                (read for r in records if (read := self.reader.read(r)) is not None), positions)

        if await asyncio.get_running_loop().run_in_executor(self.writer, apply):
            self.live.version = self.store.version
        self.applied += len(records)
        behind = 0
        for tp in self.consumer.assignment():
            end = self.end(tp)
            if end is not None:
                behind += max(0, end - await self.consumer.position(tp))
        alerts.BEHIND.set(behind)

    async def _at_end(self) -> bool:
        for tp in self.consumer.assignment():
            end = self.end(tp)
            if end is None or self.consumer.last_poll_timestamp(tp) is None:
                return False
            if end > 0 and await self.consumer.position(tp) < end:
                return False
        return True

    async def _assign(self) -> None:
        """Every partition of every wanted topic that exists: from the checkpoint, or from the
        start of one the store never read."""
        self.registry.get("")  # re-reads the routing file when it changed
        wanted = set(await described_partitions(self.admin, wanted_topics(self.registry)))
        held = self.consumer.assignment()
        if wanted <= held:
            return
        positions = {tp: await self.consumer.position(tp) for tp in held}
        checkpoint = self.store.positions()
        self.consumer.assign(sorted(wanted))
        fresh = []
        for tp in wanted:
            at = positions.get(tp, checkpoint.get((tp.topic, tp.partition)))
            if at is None:
                fresh.append(tp)
            else:
                self.consumer.seek(tp, at)
        if fresh:
            await self.consumer.seek_to_beginning(*fresh)

    async def _past_end(self) -> str:
        """A partition whose checkpoint lies past its end, named; "" when none."""
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is not None and await self.consumer.position(tp) > highwater:
                return f"{tp.topic}[{tp.partition}] ends at {highwater}"
        return ""

    async def _out_of_range(self, offsets: dict[TopicPartition, int]) -> None:
        """Offsets the broker no longer holds: below a partition's start, retention removed the
        records (read on from the start: the store keeps what it read); past its end, the
        store is of another history."""
        starts = await self.consumer.beginning_offsets(list(offsets))
        past = [f"{tp.topic}[{tp.partition}]@{at}" for tp, at in offsets.items()
                if at >= starts.get(tp, 0)]
        if past:
            await self._another_history(", ".join(past))
        else:
            await self.consumer.seek_to_beginning(*offsets)

    async def _another_history(self, why: str) -> None:
        """The checkpoint is past the end of a partition: the topics were made anew since the
        store was filled. Move the store aside and read everything from the start."""
        await asyncio.get_running_loop().run_in_executor(
            self.writer, self.store.set_aside, f"checkpoint past the end of the topics: {why}")
        self.live.caught_up = False
        self.live.version = self.store.version
        held = list(self.consumer.assignment())
        await self.consumer.seek_to_beginning(*held)


async def follow_lag(settings: Settings, live: Live, every_s: float = 10.0) -> None:
    """Forever: each service's consumer lag (summed over its groups), for the overview; never
    on the raw acknowledgements, which the console may not read. One probe is kept while it
    answers, and made anew after a failure."""
    while True:
        try:
            async with LagProbe(settings) as probe:
                while True:
                    live.lag = by_service(await asyncio.wait_for(
                        probe.lag(skip=frozenset({topics.AGENCY_ACKS})), 15))
                    live.lag_error = None
                    await asyncio.sleep(every_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the broker away, or no right to describe groups
            live.lag_error = describe_error(exc)
        await asyncio.sleep(every_s)


def by_service(lag: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """{group: {topic: n}} as {service: {"group topic": n}} (groups are `<service>[-...]`);
    groups of no service (agencies, tools) are left out."""
    out: dict[str, dict[str, int]] = {}
    for group, per_topic in lag.items():
        service = group.split("-", 1)[0]
        if service in SERVICES:
            for topic, n in per_topic.items():
                out.setdefault(service, {})[f"{group} {topic}"] = n
    return out
