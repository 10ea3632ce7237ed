"""The notice senders' transactions on a running Apache Kafka (the `apache` fixture), as
`tipline up --kafka apache` runs them: referral's own subscribers, logged in as referral."""

import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared import topics
from shared.batches import Publisher
from shared.contracts import ReportReferred
from shared.kafka import kafka_client_options, make_broker, topic_partitions
from shared.settings import Settings
from tests.apache_support import ApacheKafka
from tests.e2e.support import until

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
    admin = AIOKafkaAdminClient(**kafka_client_options(apache.admin()))
    await broker.start()
    await admin.start()
    try:
        await Publisher(broker).send([
            (ReportReferred(event_id=f"referred-{r}", report_id=r, agencies=["us-federal"]),
             topics.REPORTS_REFERRED, r) for r in reports])
        await until(lambda: seen >= set(reports), "referral-confirm to read them", WITHIN_S)
        ends = await end_offsets(apache.admin(), topics.REPORTS_REFERRED)
        await until(lambda: committed_up_to(admin, "referral-confirm", ends),
                    f"referral-confirm's offsets committed up to {ends}", WITHIN_S)
    finally:
        await admin.close()
        await broker.stop()


async def end_offsets(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(**kafka_client_options(settings))
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(await topic_partitions(settings, [topic])))
    finally:
        await consumer.stop()


async def committed_up_to(admin: AIOKafkaAdminClient, group: str,
                          ends: dict[TopicPartition, int]) -> bool:
    """Whether the group's committed offsets reach `ends` on every partition with records."""
    offsets = await admin.list_consumer_group_offsets(group)
    return all(tp in offsets and offsets[tp].offset >= end for tp, end in ends.items() if end)
