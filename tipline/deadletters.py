"""Dead letters: what failed and why, and sending a letter back once its cause is fixed.

`tipline deadletters show` lists every dead letter: where it came from, its key and the first line
of its error, never its value (a dead letter's value is a report). `tipline deadletters requeue
P:O ...` publishes the original value of those letters (partition:offset in the dead-letter topic)
back to the topic each came from, with its key. Nothing leaves the dead-letter topic: a requeued
letter stays there, and consumers are idempotent (derived ids), so a second requeue is harmless.
"""

import asyncio
import json
import sys
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.contracts import DeadLetter
from shared.kafka import kafka_client_options
from shared.seals import Seals, Unsealed
from shared.settings import Settings
from shared.topics import DEAD_LETTERS, WRITERS

Letter = tuple[int, int, DeadLetter]  # partition and offset in the dead-letter topic, the letter


async def read_letters(settings: Settings, timeout_s: float = 10.0) -> list[Letter]:
    """Every dead letter, read from the start without joining a group (nothing is committed)."""
    consumer = AIOKafkaConsumer(
        DEAD_LETTERS, **kafka_client_options(settings), group_id=None,
        enable_auto_commit=False, auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_partition_fetch_bytes=settings.kafka_max_message_bytes,
    )
    await consumer.start()
    letters: list[Letter] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        quiet = 0
        while quiet < 3 and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            quiet = 0 if batch else quiet + 1
            for records in batch.values():
                letters.extend(
                    (r.partition, r.offset, DeadLetter.model_validate_json(r.value))
                    for r in records if r.value is not None
                )
    finally:
        await consumer.stop()
    return sorted(letters, key=lambda item: item[:2])


def summary(partition: int, offset: int, letter: DeadLetter) -> dict[str, Any]:
    """What an operator needs to decide, and no report content."""
    return {
        "at": f"{partition}:{offset}", "service": letter.service, "topic": letter.topic,
        "from": f"{letter.partition}:{letter.offset}", "key": letter.key,
        "error": letter.error.splitlines()[0][:300] if letter.error else "",
        "failed_at": letter.failed_at.isoformat(),
    }


async def requeue(settings: Settings, coordinates: list[tuple[int, int]]) -> list[DeadLetter]:
    """Publish these letters' values back to their topics; returns the letters sent."""
    wanted = set(coordinates)
    found = {(p, o): letter for p, o, letter in await read_letters(settings) if (p, o) in wanted}
    if missing := wanted - set(found):
        raise KeyError(f"no dead letter at {', '.join(f'{p}:{o}' for p, o in sorted(missing))}")
    letters = [found[c] for c in coordinates]
    if forged := [f"{p}:{o}" for p, o in coordinates if found[(p, o)].error.startswith(
            Unsealed.__name__)]:
        # Refused because no tipline service wrote it: requeuing would vouch for a forgery.
        raise ValueError(f"not requeued: {', '.join(forged)} had no valid seal")
    seals = Seals(settings.tipline_keys_dir)
    producer = AIOKafkaProducer(**kafka_client_options(settings), acks="all",
                                max_request_size=settings.kafka_max_message_bytes)
    await producer.start()
    try:
        sends = []
        for letter in letters:
            key = letter.key.encode() if letter.key is not None else None
            value = letter.value.encode()
            # The operator vouches for the letter: sealed as the service that first wrote it.
            writers = sorted(WRITERS.get(letter.topic, ()))
            headers = (seals.headers(letter.service if letter.service in writers else writers[0],
                                     letter.topic, key, value) if writers else None)
            sends.append(producer.send_and_wait(letter.topic, value, key=key, headers=headers))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    return letters


def _coordinate(text: str) -> tuple[int, int]:
    partition, _, offset = text.partition(":")
    return int(partition), int(offset)


def cmd_show(args: Any) -> int:
    for partition, offset, letter in asyncio.run(read_letters(Settings())):
        if args.service in (None, letter.service):
            print(json.dumps(summary(partition, offset, letter)))
    return 0


def cmd_requeue(args: Any) -> int:
    try:
        sent = asyncio.run(requeue(Settings(), args.letters))
    except (KeyError, ValueError) as exc:
        print(f"tipline deadletters requeue: {exc.args[0]}", file=sys.stderr)
        return 2
    for letter in sent:
        print(f"requeued to {letter.topic} (key {letter.key}), from {letter.service}")
    return 0


def add_commands(sub: Any) -> None:
    letters = sub.add_parser("deadletters", help="list dead letters; requeue them once fixed")
    letters_sub = letters.add_subparsers(dest="deadletters_command", required=True)
    show = letters_sub.add_parser("show", help="every dead letter, without its content")
    show.add_argument("--service", help="only letters from this service")
    show.set_defaults(func=cmd_show)
    again = letters_sub.add_parser("requeue", help="publish letters back to their topics")
    again.add_argument("letters", nargs="+", metavar="PARTITION:OFFSET", type=_coordinate,
                       help="where the letter is in tipline.deadletter (see `show`)")
    again.set_defaults(func=cmd_requeue)


