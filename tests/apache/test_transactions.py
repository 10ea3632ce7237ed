"""The notice senders' transactions on a running Apache Kafka (the `apache` fixture), as
`tipline up --kafka apache` runs them: referral's own subscribers, logged in as referral."""

import asyncio
import time
import uuid
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared import topics
from shared.batches import Publisher
from shared.contracts import ReportReferred
from shared.kafka import kafka_client_options, make_broker
from tests.apache_support import ApacheKafka

WITHIN_S = 60.0


async def test_a_batch_that_publishes_nothing_commits_its_offsets_all_the_same(
        apache: ApacheKafka) -> None:
    """Referral reads its own ReportReferred back in a transaction (`referral-confirm`) and
    publishes nothing with them: the transaction carries only the batch's offsets, and they are
    committed all the same. Were they not, a restart would read every referral again."""
    settings = apache.settings_for("referral", kafka_transactions=True, kafka_idempotence=True)
    broker = make_broker(settings, "referral", transactional=True)
    seen: set[str] = set()

    @broker.consume(topics.REPORTS_REFERRED, group="referral-confirm", model=ReportReferred)
    async def on_reports_referred(events: list[ReportReferred]) -> None:
        seen.update(e.report_id for e in events)

    reports = [f"txn-{uuid.uuid4().hex}" for _ in range(5)]
    await broker.start()
    try:
        await Publisher(broker).send([
            (ReportReferred(event_id=f"referred-{r}", report_id=r, agencies=["us-federal"]),
             topics.REPORTS_REFERRED, r) for r in reports])
        await until(lambda: seen >= set(reports), "the subscriber read them")
        ends = await end_offsets(apache, topics.REPORTS_REFERRED)
        await until_committed(apache, "referral-confirm", ends)
    finally:
        await broker.stop()


async def until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WITHIN_S
    while not done():
        assert time.monotonic() < deadline, f"not within {WITHIN_S} s: {what}"
        await asyncio.sleep(0.1)


async def end_offsets(apache: ApacheKafka, topic: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(**kafka_client_options(apache.admin()))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    assert partitions, f"no partitions of {topic}: {described}"
    consumer = AIOKafkaConsumer(**kafka_client_options(apache.admin()))
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def until_committed(apache: ApacheKafka, group: str,
                          ends: dict[TopicPartition, int]) -> None:
    """Until the group's committed offsets reach `ends` on every partition that has records."""
    admin = AIOKafkaAdminClient(**kafka_client_options(apache.admin()))
    await admin.start()
    try:
        deadline = time.monotonic() + WITHIN_S
        while True:
            offsets = await admin.list_consumer_group_offsets(group)
            committed = {tp: meta.offset for tp, meta in offsets.items()}
            behind = {tp: (committed.get(tp), end) for tp, end in ends.items()
                      if end and committed.get(tp, -1) < end}
            if not behind:
                return
            assert time.monotonic() < deadline, f"not committed within {WITHIN_S} s: {behind}"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
