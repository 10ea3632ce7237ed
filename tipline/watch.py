"""Watching what agencies receive, from outside: every agency topic, no consumer group.

Load tools and chaos tests use this as their ground-truth observer. It reads every agency's
topic from its current end (no group, so no join delay and no effect on the agencies' own
offsets), drops redelivered notices by notice_id and counts them, and records when each notice
arrived, so latencies are measured where the agency sees the notice. Every distinct notice is
also kept whole (`notices`: agency, kind, report, id, partition, offset, arrival) for the
oracle (tipline/oracle.py), which counts a second notice with a new id as the duplicate it is.
Reading topics that way is `Tail`'s; the bench's raw sink (tipline/bench.py) is one too.
"""

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from shared.kafka import kafka_client_options, topic_partitions
from shared.settings import Settings
from shared.topics import agency_of_topic, agency_topic
from tipline.oracle import Notice


@dataclass
class Seen:
    """The notices of one report, first arrival of each (monotonic seconds, arrival order)."""

    referrals: dict[str, tuple[float, int]] = field(default_factory=dict)
    corrections: dict[str, tuple[float, int]] = field(default_factory=dict)
    amendments: dict[str, tuple[float, int]] = field(default_factory=dict)


class Tail:
    """Records of some topics as they arrive, read from outside: every partition assigned, no
    consumer group (so no join delay and no effect on anyone's offsets), from the current end
    (or the beginning), in a task of its own until stop(). A subclass takes each fetch."""

    max_records = 2000  # a fetch at most

    def __init__(self, settings: Settings, topics: list[str], **options: Any) -> None:
        self.topics, self.settings = topics, settings
        self._task: asyncio.Task[None] | None = None
        self._consumer = AIOKafkaConsumer(
            **kafka_client_options(settings),
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            **options,
        )

    async def start(self, from_beginning: bool = False) -> None:
        await self._consumer.start()
        partitions = await topic_partitions(self.settings, self.topics)
        self._consumer.assign(partitions)
        if from_beginning:
            await self._consumer.seek_to_beginning(*partitions)
        else:
            # The embedded broker's "end" is the last batch's start (see embedded-broker.md), so a
            # few older records may be read: a tail must take them for what they are.
            await self._consumer.seek_to_end(*partitions)
        for tp in partitions:
            await self._consumer.position(tp)  # resolve now, so nothing sent later is skipped
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=self.max_records)
            arrived = time.monotonic()
            for tp, records in batches.items():
                self.took(tp, records, arrived)

    def took(self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]],
             arrived: float) -> None:
        """The records of one partition that one fetch brought, at `arrived` (monotonic)."""
        raise NotImplementedError


class NoticeWatch(Tail):
    def __init__(self, settings: Settings, agencies: Iterable[str]) -> None:
        super().__init__(
            settings, [agency_topic(a) for a in agencies],
            max_partition_fetch_bytes=settings.kafka_max_message_bytes,
            fetch_max_bytes=max(settings.kafka_max_message_bytes, 52428800),
        )
        self.reports: dict[str, Seen] = defaultdict(Seen)
        self.notice_ids: set[str] = set()
        self.duplicates = 0
        self.refused = 0  # records on agency topics that are not notices (poison)
        self.received = 0
        self.notices: list[Notice] = []  # each distinct notice, in arrival order
        self.of_report: dict[str, list[Notice]] = defaultdict(list)  # the same, by report
        self.on_notice: Callable[[str], None] | None = None
        self._order = 0

    def took(self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]],
             arrived: float) -> None:
        agency = agency_of_topic(tp.topic) or "?"
        for record in records:
            self._take(agency, record.value, arrived, tp.partition, record.offset)

    def _take(self, agency: str, value: bytes | None, arrived: float, partition: int = 0,
              offset: int = 0) -> None:
        try:
            notice = json.loads(value or b"")
            kind, notice_id, report_id = notice["kind"], notice["notice_id"], notice["report_id"]
            if notice["agency_id"] != agency:
                raise ValueError("addressed to another agency")
        except (ValueError, KeyError, TypeError):
            self.refused += 1
            return
        self.received += 1
        if notice_id in self.notice_ids:
            self.duplicates += 1
            return
        self.notice_ids.add(notice_id)
        whole = Notice(agency, str(kind), str(report_id), str(notice_id), partition, offset,
                       arrived)
        self.notices.append(whole)
        self.of_report[whole.report_id].append(whole)
        self._order += 1
        seen = self.reports[report_id]
        where = {"referral": seen.referrals, "correction": seen.corrections}.get(
            kind, seen.amendments
        )
        where.setdefault(agency, (arrived, self._order))
        if self.on_notice:
            self.on_notice(report_id)
