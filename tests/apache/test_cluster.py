"""Three Apache Kafka nodes as `tipline up --kafka apache --brokers 3` runs them: every topic on
all three with min.insync.replicas 2, so a write acknowledged by all in-sync replicas survives the
kill -9 of the node that led its partition (the `apache_cluster` fixture the chaos tests use)."""

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from shared.agencies import load_agencies
from shared.kafka import kafka_client_options
from shared.topology import topic_names
from tests.apache_support import ApacheKafka

TOPIC = "tipline.reports.submitted"


def until(what: str, check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


async def write(kafka: ApacheKafka, value: bytes) -> int:
    producer = AIOKafkaProducer(**kafka_client_options(kafka.admin()), acks="all",
                                enable_idempotence=True, request_timeout_ms=30_000)
    await producer.start()
    try:
        return (await producer.send_and_wait(TOPIC, value, partition=0)).offset
    finally:
        await producer.stop()


async def read(kafka: ApacheKafka, offset: int) -> bytes | None:
    consumer = AIOKafkaConsumer(**kafka_client_options(kafka.admin()), group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(TOPIC, 0)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        record = await asyncio.wait_for(consumer.getone(), 30)
        return record.value
    finally:
        await consumer.stop()


async def test_every_topic_is_on_three_nodes_and_a_killed_leader_loses_nothing(
    apache_cluster: ApacheKafka,
) -> None:
    kafka = apache_cluster
    admin = AdminClient(kafka.config_for("admin"))
    names = topic_names(load_agencies(kafka.admin().tipline_routing_file))
    metadata = admin.list_topics(timeout=10)
    for name in names:
        assert all(len(p.replicas) == 3 for p in metadata.topics[name].partitions.values()), name
    configs = admin.describe_configs([ConfigResource("TOPIC", n) for n in names])
    for resource, future in configs.items():
        assert future.result(30)["min.insync.replicas"].value == "2", resource

    offset = await write(kafka, b"acknowledged by all in-sync replicas")
    victim = kafka.leader(TOPIC, 0)
    kafka.kill(victim)
    await asyncio.to_thread(until, "another node leads", lambda: kafka.leader(TOPIC, 0) != victim)
    assert await read(kafka, offset) == b"acknowledged by all in-sync replicas"
    # Two in-sync replicas are left: writes go on.
    assert await write(kafka, b"written while a node is down") == offset + 1

    kafka.restart(victim)
    await asyncio.to_thread(until, "the restarted node back in sync",
                            lambda: (TOPIC, 0) not in kafka.under_replicated())
