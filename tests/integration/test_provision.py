"""Topics are created with their preservation settings, and provisioning is idempotent."""

import uuid

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.kafka import ensure_topics
from shared.settings import Settings
from shared.topology import PRESERVE
from tipline.provision import provision


async def topic_configs(settings: Settings, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        (described,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)])
        return {c[0]: c[1] for c in described.resources[0][4]}
    finally:
        await admin.close()


async def test_a_new_topic_keeps_its_records_a_year_and_a_day(settings: Settings) -> None:
    topic = f"tipline.test.preserved-{uuid.uuid4().hex[:8]}"
    assert await ensure_topics(settings, [topic]) == [topic]
    assert await ensure_topics(settings, [topic]) == []  # already there: left as it is
    configs = await topic_configs(settings, topic)
    assert int(configs["retention.ms"]) == PRESERVE.total_seconds() * 1000
    assert configs["cleanup.policy"] == "delete"
    assert configs["retention.bytes"] == "-1"


async def test_provisioning_twice_creates_nothing_the_second_time(settings: Settings) -> None:
    await provision(settings, attempts=3, pause_s=0.1)
    assert await provision(settings, attempts=3, pause_s=0.1) == []


async def test_an_agency_topic_gets_its_own_partition_count(settings: Settings) -> None:
    """An agency's notice topic gets KAFKA_AGENCY_PARTITIONS; any other, KAFKA_PARTITIONS."""
    suffix = uuid.uuid4().hex[:8]
    agency, other = f"tipline.agency.p-{suffix}", f"tipline.test.p-{suffix}"
    custom = settings.model_copy(update={"kafka_partitions": 3, "kafka_agency_partitions": 2})
    await ensure_topics(custom, [agency, other])
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = {t["topic"]: len(t["partitions"])
                     for t in await admin.describe_topics([agency, other])}
    finally:
        await admin.close()
    assert described == {agency: 2, other: 3}
