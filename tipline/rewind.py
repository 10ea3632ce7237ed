"""Rewind a consumer group so its service handles a topic's messages again (a replay).

    tipline rewind GROUP TOPIC [--to-datetime 2026-11-24T00:00:00+00:00]

Stop the group's consumers first: Kafka refuses to move the offsets of a group with members.
Safe because every consumer is idempotent (docs/operations.md, "Replaying a topic"). Works on
real Kafka and on the embedded broker alike, where Kafka's own tools are not at hand.
"""

import asyncio
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from shared.kafka import kafka_client_options
from shared.settings import Settings


async def rewind(
    settings: Settings, group: str, topic: str, to: datetime | None = None, wait_s: float = 30.0
) -> dict[int, int]:
    """Commit, for each partition, the first offset at or after `to` (the start when None).

    Joins the group as its only member (so the commit is the group's own, on any broker), and
    refuses when other members hold partitions. Returns partition -> new committed offset; a
    partition with nothing after `to` is left as it is (there is nothing to replay there).
    """
    consumer = AIOKafkaConsumer(
        topic, **kafka_client_options(settings), group_id=group,
        enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms, max_poll_records=1,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            raise LookupError(f"no topic {topic!r} on {settings.kafka_bootstrap_servers}")
        tps = {TopicPartition(topic, p) for p in partitions}
        deadline = asyncio.get_running_loop().time() + wait_s
        while consumer.assignment() != tps:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"group {group!r} has other members: stop its consumers first")
            await consumer.getmany(timeout_ms=100)  # drives the join; nothing is committed
        if to is None:
            targets: dict[TopicPartition, int] = await consumer.beginning_offsets(list(tps))
        else:
            found = await consumer.offsets_for_times({tp: int(to.timestamp() * 1000) for tp in tps})
            targets = {tp: f.offset for tp, f in found.items() if f is not None}
        await consumer.commit({tp: OffsetAndMetadata(o, "rewound") for tp, o in targets.items()})
        return {tp.partition: offset for tp, offset in targets.items()}
    finally:
        await consumer.stop()


def cmd_rewind(args: Any) -> int:
    to = datetime.fromisoformat(args.to_datetime) if args.to_datetime else None
    moved = asyncio.run(rewind(Settings(), args.group, args.topic, to))
    for partition, offset in sorted(moved.items()):
        print(f"{args.topic}[{partition}] -> {offset}")
    return 0


def add_commands(sub: Any) -> None:
    rew = sub.add_parser("rewind", help="move a stopped consumer group back, to replay a topic")
    rew.add_argument("group", help="the consumer group, e.g. validation (docs/operations.md)")
    rew.add_argument("topic")
    rew.add_argument("--to-datetime", help="ISO 8601 with a zone; default: the very start")
    rew.set_defaults(func=cmd_rewind)
