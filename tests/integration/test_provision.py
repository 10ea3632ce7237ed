"""Topics are created with their preservation settings, and provisioning is idempotent."""

import uuid

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.kafka import ensure_topics
from shared.provision import provision
from shared.settings import Settings
from shared.topology import PRESERVE


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
