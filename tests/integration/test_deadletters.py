"""Dead letters on the real broker: evidence, not authority. A service's letter is sealed by it
and keeps the record's own seal and trace headers; requeue sends that record back exactly as it
was, and refuses (sending nothing) a letter it cannot believe or a record whose seal fails."""

import asyncio
import uuid

import pytest

from shared import topics
from shared.batches import Poison
from shared.contracts import DeadLetter, RetractReport
from shared.kafka import ensure_topics
from shared.seals import Seals
from shared.settings import Settings
from tests.records import Step, consuming, letters_of, produce, records_of
from tipline.deadletters import coordinate, requeue, summary

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
async def origin(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh internal topic only intake may write, consumed by validation."""
    topic = f"tipline.test.requeue-{uuid.uuid4().hex[:8]}"
    monkeypatch.setitem(topics.WRITERS, topic, frozenset({"intake"}))
    await ensure_topics(settings.model_copy(update={"kafka_partitions": 1}),
                        [topic, *topics.DEAD_LETTER_TOPICS])
    return topic


async def test_a_record_that_failed_goes_back_as_its_writer_sealed_it(
    settings: Settings, origin: str
) -> None:
    key = f"r-{uuid.uuid4().hex[:8]}"
    value = Step(report_id=key, n=1).model_dump_json().encode()
    trace = [("traceparent", TRACE.encode())]
    sealed = Seals(settings.tipline_keys_dir).headers("intake", origin, key.encode(), value, trace)
    consumes = {"validation": {origin}}
    fixed, handled = asyncio.Event(), []

    async def on_steps(events: list[Step]) -> None:
        if not fixed.is_set():
            raise Poison("the cause, not fixed yet")
        handled.extend(events)

    async with consuming(settings, origin, on_steps):
        await produce(settings, origin, value, key, [*trace, *sealed])
        (found,) = await letters_of(settings, key, 1, consumes)
        shown = summary(found)
        assert (shown["service"], shown["topic"], shown["from"]) == ("validation", origin, "0:0")
        assert (shown["letter_seal"], shown["record_seal"], shown["requeue"]) == ("ok",) * 3
        assert "report_id" not in str(shown)  # never the value
        assert found.letter is not None and found.letter.seal == sealed[0][1].decode()

        fixed.set()
        (sent,) = await requeue(settings, [coordinate(found.at)], consumes=consumes)
        assert sent.topic == origin
        for _ in range(100):
            if handled:
                break
            await asyncio.sleep(0.1)
    assert handled == [Step(report_id=key, n=1)]
    first, again = await records_of(settings, origin, key, 2)
    # The very record: its value, its seal, its trace, nothing sealed anew.
    assert (again.value, sorted(again.headers)) == (first.value, sorted(first.headers))
    # The letter stays: requeuing removes nothing.
    assert len(await letters_of(settings, key, 1, consumes)) == 1


async def test_forged_letters_are_marked_and_never_requeued(
    settings: Settings, origin: str
) -> None:
    """Letters written by whoever can reach the broker, keyless or holding a key: each refused
    with why, and a requeue naming one sends nothing at all (the genuine one requeued after it
    is the only record that arrives)."""
    seals = Seals(settings.tipline_keys_dir)
    key = f"r-{uuid.uuid4().hex[:8]}"
    marker = f"MARK{uuid.uuid4().hex}"
    command = RetractReport(command_id=marker, report_id=key, requested_by="analyst",
                            actor="x", reason=marker).model_dump_json()
    record_seal = seals.seal("intake", origin, key.encode(), command.encode())

    def letter(service: str = "validation", topic: str = origin, seal: str | None = record_seal,
               value: str = command) -> bytes:
        return DeadLetter(service=service, topic=topic, partition=0, offset=0, key=key,
                          value=value, error="Unsealed: whatever its writer says",
                          seal=seal).model_dump_json().encode()

    def sealed_as(service: str, body: bytes) -> list[tuple[str, bytes]]:
        return seals.headers(service, topics.DEAD_LETTERS, key.encode(), body)

    forged = [  # (the letter, its headers, why requeue refuses it)
        (letter(), [], "the letter: not sealed"),
        (letter(), [("tipline-seal", b"validation:v2:" + b"A" * 44)],
         "the letter: the seal of validation does not match"),
        (body := letter(service="referral"), sealed_as("validation", body),
         "the letter: sealed by validation, yet it names 'referral'"),
        (body := letter(seal=None), sealed_as("validation", body), "the record: not sealed"),
        (body := letter(value=command.replace(marker, "changed")), sealed_as("validation", body),
         "the record: the seal of intake does not match"),
        (body := letter(topic=topics.RETRACTIONS_REQUESTED), sealed_as("validation", body),
         f"validation does not consume {topics.RETRACTIONS_REQUESTED}"),
        # intake may not write tipline.deadletter at all.
        (body := letter(service="intake"), sealed_as("intake", body),
         "the letter: sealed by 'intake', which may not write tipline.deadletter"),
    ]
    genuine = letter()
    for body, headers, _ in [*forged, (genuine, sealed_as("validation", genuine), "")]:
        await produce(settings, topics.DEAD_LETTERS, body, key, headers)
    consumes = {"validation": {origin}, "referral": {origin}, "intake": {origin}}
    found = await letters_of(settings, key, len(forged) + 1, consumes)
    for (_, _, why), letter_found in zip(forged, found, strict=False):
        assert letter_found.refused is not None and why in letter_found.refused, (
            why, letter_found.refused)
        assert summary(letter_found)["requeue"] == letter_found.refused
    assert found[-1].refused is None

    for bad in found[:-1]:
        with pytest.raises(ValueError, match="nothing requeued"):
            await requeue(settings, [coordinate(found[-1].at), coordinate(bad.at)],
                          consumes=consumes)
    await requeue(settings, [coordinate(found[-1].at)], consumes=consumes)
    # The marker: the genuine letter's record arrives, and it is the only one.
    (only,) = await records_of(settings, origin, key, 1)
    assert only.value == command.encode()
    assert (await records_of(settings, topics.RETRACTIONS_REQUESTED, key, 0)) == []
