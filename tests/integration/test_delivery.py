"""The delivery loop on the real broker: a transient failure is retried in place and holds back
only its own report and its partition's committed offset; once it passes, everything is handled,
in order per report, and committed."""

import asyncio
import uuid
from collections.abc import Callable

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import BaseModel

from shared.kafka import consumer_options, ensure_topics, make_broker
from shared.settings import Settings


class Step(BaseModel):
    report_id: str
    n: int


async def eventually(done: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not done():
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.02)


async def committed(settings: Settings, group: str, tp: TopicPartition) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
    finally:
        await admin.close()
    meta = offsets.get(tp)
    return meta.offset if meta is not None else -1


async def test_a_transient_failure_holds_back_its_report_and_the_commit_only(
    settings: Settings,
) -> None:
    local = settings.model_copy(update={"kafka_partitions": 1, "tipline_retry_backoff_s": 0.3})
    topic = f"tipline.test.delivery-{uuid.uuid4().hex[:8]}"
    group = f"test-delivery-{uuid.uuid4().hex[:8]}"
    await ensure_topics(local, [topic])
    broker = make_broker(local, "test-delivery", sealed=False)  # a test topic: no seals
    failing = {"left": 4}  # Redis away for four tries of report a's first step
    handled: list[tuple[str, int]] = []

    @broker.subscriber(topic, **consumer_options(local, group))
    async def on_step(step: Step) -> None:
        if step.report_id == "a" and step.n == 0 and failing["left"]:
            failing["left"] -= 1
            raise ConnectionError("Redis away")
        handled.append((step.report_id, step.n))

    await broker.start()
    try:
        for report_id, n in [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("c", 0)]:
            await broker.publish(Step(report_id=report_id, n=n), topic, key=report_id.encode())
        # Other reports go on while a's first step is retried; a's second waits for it.
        await eventually(lambda: {("b", 0), ("b", 1), ("c", 0)} <= set(handled))
        assert failing["left"] > 0 and ("a", 1) not in handled
        await asyncio.sleep(0.2)  # past a commit tick
        assert await committed(local, group, TopicPartition(topic, 0)) <= 0  # a0 is offset 0

        await eventually(lambda: len(handled) == 5)
        assert handled.index(("a", 0)) < handled.index(("a", 1))
        assert handled.count(("a", 0)) == 1
        for _ in range(100):
            if await committed(local, group, TopicPartition(topic, 0)) == 5:
                break
            await asyncio.sleep(0.05)
        assert await committed(local, group, TopicPartition(topic, 0)) == 5
    finally:
        await broker.stop()
