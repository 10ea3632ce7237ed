"""Dead letters: what failed and why, and sending a record back once its cause is fixed.

A dead letter is evidence, not authority. Whoever can write a dead-letter topic chooses what a
letter says, so nothing in it is believed for its own sake:

- a letter counts only when it carries the seal of a service that may write its dead-letter
  topic, and names that service (`shared.topics.WRITERS`: intake writes only
  `tipline.deadletter.intake`, the internal consumers `tipline.deadletter`, the console nothing);
- the record it holds goes back only to a topic that service consumes, and only as its writer
  sealed it: the letter keeps the record's own seal and the headers that seal covers, and
  `requeue` re-publishes them as they were. It never seals anything: a record whose own seal does
  not verify as a writer of its topic stays where it is. (On a topic without seals, the agencies'
  acknowledgements, the record's authority is its agency's signature, which the consumer checks
  again.)

`tipline deadletters show` lists every letter of both dead-letter topics: where it came from, its
key, the first line of its error and what the checks above found, never its value (a dead
letter's value is a report). `tipline deadletters requeue AT ...` sends those records back, all
or none. Nothing leaves a dead-letter topic, and consumers are idempotent (derived ids), so a
second requeue is harmless.
"""

import asyncio
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from pydantic import ValidationError

from shared.batches import header
from shared.contracts import DeadLetter
from shared.kafka import kafka_client_options
from shared.seals import HEADER as SEAL
from shared.seals import Seals, Unsealed
from shared.settings import Settings
from shared.topics import DEAD_LETTER_TOPICS, DEAD_LETTERS, WRITERS

OK = "ok"


@dataclass(frozen=True)
class Found:
    """One record of a dead-letter topic, as read, and what its checks found."""

    topic: str  # the dead-letter topic
    partition: int
    offset: int
    letter: DeadLetter | None  # None: not a dead letter at all
    letter_seal: str  # OK, or why the letter itself is not to be believed
    record_seal: str  # OK, or why the record it holds may not go back as it is
    refused: str | None  # why it may not be requeued; None: it may

    @property
    def at(self) -> str:
        """Where it is, as `show` prints it and `requeue` takes it."""
        place = f"{self.partition}:{self.offset}"
        return place if self.topic == DEAD_LETTERS else f"{self.topic}:{place}"


def coordinate(text: str) -> tuple[str, int, int]:
    """`P:O` (in tipline.deadletter) or `TOPIC:P:O`: the dead-letter topic, partition, offset."""
    topic, _, place = text.rpartition(":")
    topic, _, partition = topic.rpartition(":")
    if not partition.isdigit() or not place.isdigit():
        raise ValueError(f"not PARTITION:OFFSET or TOPIC:PARTITION:OFFSET: {text!r}")
    return topic or DEAD_LETTERS, int(partition), int(place)


def examine(record: ConsumerRecord[Any, Any], seals: Seals,
            consumes: Mapping[str, set[str]]) -> Found:
    """A record of a dead-letter topic, checked: the letter's own seal and whom it names, where
    it would go back to, and its record's seal."""
    where = (record.topic, record.partition, record.offset)
    try:
        letter = DeadLetter.model_validate_json(record.value or b"")
    except ValidationError as exc:
        why = f"not a dead letter ({exc.error_count()} errors)"
        return Found(*where, None, why, why, why)
    try:
        sealer = seals.check(record.topic, record.key, record.value or b"",
                             header(record, SEAL), record.headers or ())
        letter_seal = OK if sealer == letter.service else (
            f"sealed by {sealer}, yet it names {letter.service[:40]!r}")
    except Unsealed as exc:
        letter_seal = f"{exc}"
    record_seal = original_seal(letter, seals)
    refused = None
    if letter_seal != OK:
        refused = f"the letter: {letter_seal}"
    elif letter.topic not in consumes.get(letter.service, set()):
        refused = (f"{letter.service} does not consume {letter.topic[:80]}: a record goes back "
                   "only to what the service that refused it reads")
    elif record_seal != OK:
        refused = f"the record: {record_seal}"
    return Found(*where, letter, letter_seal, record_seal, refused)


def original_seal(letter: DeadLetter, seals: Seals) -> str:
    """OK when the record the letter holds may go back exactly as it is; else why not."""
    if letter.incomplete:
        return "its value was not kept whole"
    if letter.topic not in WRITERS:
        return OK  # not a sealed topic: the consumer checks the agency's signature again
    try:
        seals.check(letter.topic, _key(letter), letter.value.encode(), letter.seal,
                    [(k, v.encode("latin-1")) for k, v in letter.headers])
    except Unsealed as exc:
        return f"{exc}"
    return OK


def _key(letter: DeadLetter) -> bytes | None:
    return letter.key.encode() if letter.key is not None else None


def consumed_topics() -> dict[str, set[str]]:
    """The topics each service consumes, from its subscribers (as the Kafka ACLs are)."""
    from tipline.access import subscriptions  # builds every service's broker: only when asked

    return {service: {topic for topic, _ in pairs}
            for service, pairs in subscriptions().items()}


async def read_letters(settings: Settings, timeout_s: float = 10.0,
                       consumes: Mapping[str, set[str]] | None = None) -> list[Found]:
    """Every record of both dead-letter topics, checked, read from the start without joining a
    group (nothing is committed)."""
    seals = Seals(settings.tipline_keys_dir)
    consumes = consumed_topics() if consumes is None else consumes
    consumer = AIOKafkaConsumer(
        *DEAD_LETTER_TOPICS, **kafka_client_options(settings), group_id=None,
        enable_auto_commit=False, auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_partition_fetch_bytes=settings.kafka_max_message_bytes,
    )
    await consumer.start()
    found: list[Found] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        quiet = 0
        while quiet < 3 and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            quiet = 0 if batch else quiet + 1
            for records in batch.values():
                found.extend(examine(r, seals, consumes) for r in records if r.value is not None)
    finally:
        await consumer.stop()
    return sorted(found, key=lambda f: (f.topic, f.partition, f.offset))


def summary(found: Found) -> dict[str, Any]:
    """What an operator needs to decide, and no report content."""
    letter = found.letter
    out: dict[str, Any] = {"at": found.at}
    if letter is not None:
        out.update({
            "service": letter.service, "topic": letter.topic,
            "from": f"{letter.partition}:{letter.offset}", "key": letter.key,
            "error": letter.error.splitlines()[0][:300] if letter.error else "",
            "failed_at": letter.failed_at.isoformat(),
        })
    out.update({"letter_seal": found.letter_seal, "record_seal": found.record_seal,
                "requeue": found.refused or OK})
    return out


async def requeue(settings: Settings, coordinates: list[tuple[str, int, int]],
                  consumes: Mapping[str, set[str]] | None = None) -> list[DeadLetter]:
    """Send these letters' records back to their topics, each exactly as its writer sealed it;
    all or none: a letter that may not go back refuses the lot (ValueError, saying why)."""
    wanted = set(coordinates)
    found = {(f.topic, f.partition, f.offset): f
             for f in await read_letters(settings, consumes=consumes)
             if (f.topic, f.partition, f.offset) in wanted}
    if missing := wanted - set(found):
        raise KeyError("no dead letter at "
                       + ", ".join(f"{t}:{p}:{o}" for t, p, o in sorted(missing)))
    if refused := [f"{found[c].at}: {found[c].refused}" for c in coordinates
                   if found[c].refused is not None]:
        raise ValueError("nothing requeued; " + "; ".join(refused))
    letters = [letter for c in coordinates if (letter := found[c].letter) is not None]
    producer = AIOKafkaProducer(**kafka_client_options(settings), acks="all",
                                max_request_size=settings.kafka_max_message_bytes)
    await producer.start()
    try:
        await asyncio.gather(*(producer.send_and_wait(
            letter.topic, letter.value.encode(), key=_key(letter),
            headers=[*([(SEAL, letter.seal.encode())] if letter.seal else []),
                     *((k, v.encode("latin-1")) for k, v in letter.headers)],
        ) for letter in letters))
    finally:
        await producer.stop()
    return letters


def _settings() -> Settings:
    """The environment's, or where it says nothing, `tipline up`'s broker and admin login."""
    from tipline.cli import WORKDIR
    from tipline.status import tool_settings

    return tool_settings(WORKDIR)


def cmd_show(args: Any) -> int:
    for found in asyncio.run(read_letters(_settings())):
        if args.service in (None, found.letter and found.letter.service):
            print(json.dumps(summary(found)))
    return 0


def cmd_requeue(args: Any) -> int:
    try:
        sent = asyncio.run(requeue(_settings(), args.letters))
    except (KeyError, ValueError) as exc:
        print(f"tipline deadletters requeue: {exc.args[0]}", file=sys.stderr)
        return 2
    for letter in sent:
        print(f"requeued to {letter.topic} (key {letter.key}), as sealed by "
              f"{(letter.seal or 'nobody: an agency response').split(':')[0]}")
    return 0


def add_commands(sub: Any) -> None:
    letters = sub.add_parser("deadletters", help="list dead letters; requeue them once fixed")
    letters_sub = letters.add_subparsers(dest="deadletters_command", required=True)
    show = letters_sub.add_parser("show", help="every dead letter, checked, without its content")
    show.add_argument("--service", help="only letters from this service")
    show.set_defaults(func=cmd_show)
    again = letters_sub.add_parser("requeue", help="send letters' records back to their topics")
    again.add_argument("letters", nargs="+", metavar="AT", type=coordinate,
                       help="where the letter is, as `show` prints it: PARTITION:OFFSET in "
                            "tipline.deadletter, TOPIC:PARTITION:OFFSET in another")
    again.set_defaults(func=cmd_requeue)
