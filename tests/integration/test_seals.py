"""The seal covers the headers consumers act on: a genuine record with its traceparent swapped
is refused (dead-lettered with why), on the real broker, through the pipeline's own publish and
consume paths."""

import asyncio
import uuid

import pytest

from shared import topics
from shared.batches import Publisher, header
from shared.kafka import ensure_topics, make_broker
from shared.seals import covers_headers
from shared.settings import Settings
from tests.records import Step, consuming, letters_of, produce, records_of

OTHER_TRACE = "00-11111111111111111111111111111111-2222222222222222-01"


async def test_a_genuine_record_with_a_swapped_traceparent_is_refused(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"tipline.test.seals-{uuid.uuid4().hex[:8]}"
    monkeypatch.setitem(topics.WRITERS, topic, frozenset({"intake"}))
    await ensure_topics(settings.model_copy(update={"kafka_partitions": 1}),
                        [topic, topics.DEAD_LETTERS])
    key = f"r-{uuid.uuid4().hex[:8]}"
    intake = make_broker(settings, "intake")
    await Publisher(intake).send([(Step(report_id=key, n=1), topic, key)])
    await (await intake.sender()).stop()
    (genuine,) = await records_of(settings, topic, key, 1)
    assert header(genuine, "traceparent") and covers_headers(header(genuine, "tipline-seal"))
    swapped = [(k, OTHER_TRACE.encode() if k == "traceparent" else v)
               for k, v in genuine.headers]
    await produce(settings, topic, genuine.value, key, swapped)

    handled: list[Step] = []

    async def on_steps(events: list[Step]) -> None:
        handled.extend(events)

    async with consuming(settings, topic, on_steps):
        (letter,) = await letters_of(settings, key, 1, {"validation": {topic}})
        for _ in range(50):
            if handled:
                break
            await asyncio.sleep(0.1)
    assert handled == [Step(report_id=key, n=1)]  # the genuine one, once
    assert letter.letter is not None and letter.letter.offset == 1
    assert "the seal of intake does not match" in letter.letter.error
