"""Reading the topics into the read model: from the beginning at every start, then live.

The console uses no consumer group and commits nothing: it assigns itself every partition of the
topics it shows and reads them from their beginning (they are retained), so every copy of the
console rebuilds the whole model on start. It decodes through the pipeline's own plumbing
(`shared.batches.decode`: seal checked, then the contract model); notices on agency topics must
carry tipline's Ed25519 signature. A record that cannot be read is never shown: the console logs
it and counts it (`tipline_records_refused_total`), and writes nothing (on a topic a pipeline
service consumes, that service dead-letters it).
"""

import asyncio
import json
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from pydantic import BaseModel

from services.console.model import MODELS, ReadModel
from shared import topics
from shared.agencies import AgencyRegistry
from shared.batches import UNREADABLE, decode
from shared.contracts import AgencyNotice
from shared.kafka import consumer_lag, kafka_client_options, topic_partitions
from shared.metrics import REFUSED
from shared.seals import Seals
from shared.settings import Settings
from shared.signing import BadSignature, Verifier
from shared.telemetry import describe_error
from shared.topics import SERVICES, agency_of_topic

log = logging.getLogger("tipline.console")

REFRESH_S = 5.0  # how often new agencies (topics) and partitions are looked for
# A fetch brings at most this much (a larger record still comes, alone): a rebuild reads every
# partition at once, and the memory is the read model's, not the fetch buffers'.
FETCH_MAX_BYTES = 8 * 1024 * 1024


class Misaddressed(ValueError):
    """A notice on one agency's topic addressed to another."""


class Reader:
    """Turns records into events for the model; refuses what the pipeline would refuse."""

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


def wanted_topics(registry: AgencyRegistry) -> list[str]:
    return [*MODELS, *(a.topic for a in registry.agencies.values())]


class Follower:
    """The one consumer of the console: every partition, from the start, no group."""

    def __init__(self, settings: Settings, model: ReadModel, reader: Reader,
                 registry: AgencyRegistry) -> None:
        self.settings, self.model, self.reader, self.registry = settings, model, reader, registry

    async def run(self) -> None:
        self.consumer = AIOKafkaConsumer(
            **kafka_client_options(self.settings), group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", client_id="tipline-console",
            fetch_max_wait_ms=max(self.settings.kafka_fetch_max_wait_ms, 100),
            max_partition_fetch_bytes=self.settings.kafka_max_message_bytes,
            fetch_max_bytes=FETCH_MAX_BYTES,
        )
        await self.consumer.start()
        try:
            await self._assign()
            refreshed = asyncio.get_running_loop().time()
            while True:
                batches = await self.consumer.getmany(timeout_ms=200, max_records=2000)
                for records in batches.values():
                    for record in records:
                        self._take(record)
                if not self.model.caught_up and await self._at_end():
                    self.model.caught_up = True
                    self.model.version += 1
                    log.info("console: read model rebuilt from %d records (%d reports)",
                             self.model.events, len(self.model.reports))
                if asyncio.get_running_loop().time() - refreshed > REFRESH_S:
                    refreshed = asyncio.get_running_loop().time()
                    await self._assign()
        finally:
            await self.consumer.stop()

    def _take(self, record: ConsumerRecord[Any, Any]) -> None:
        try:
            event = self.reader.event(record)
        except (*UNREADABLE, BadSignature) as exc:
            REFUSED.labels("console", record.topic).inc()
            log.warning("console: refused %s[%s]@%s (not shown): %s", record.topic,
                        record.partition, record.offset, describe_error(exc))
            return
        if event is not None:
            self.model.apply(record.topic, event)

    async def _at_end(self) -> bool:
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is None or self.consumer.last_poll_timestamp(tp) is None:
                return False
            if highwater > 0 and await self.consumer.position(tp) < highwater:
                return False
        return True

    async def _assign(self) -> None:
        """Every partition of every wanted topic that exists; new ones from their start."""
        self.registry.get("")  # re-reads the routing file when it changed
        wanted = set(await topic_partitions(self.settings, wanted_topics(self.registry)))
        held = self.consumer.assignment()
        if wanted <= held:
            return
        positions = {tp: await self.consumer.position(tp) for tp in held}
        self.consumer.assign(sorted(wanted))
        for tp in wanted:
            if tp in positions:
                self.consumer.seek(tp, positions[tp])
        fresh = [tp for tp in wanted if tp not in positions]
        if fresh:
            await self.consumer.seek_to_beginning(*fresh)


async def follow_lag(settings: Settings, model: ReadModel, every_s: float = 10.0) -> None:
    """Forever: each service's consumer lag (summed over its groups), for the overview; never
    on the raw acknowledgements, which the console may not read."""
    while True:
        try:
            lag = await asyncio.wait_for(
                consumer_lag(settings, skip=frozenset({topics.AGENCY_ACKS})), 15)
            model.lag = by_service(lag)
            model.lag_error = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the broker away, or no right to describe groups
            model.lag_error = describe_error(exc)
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
