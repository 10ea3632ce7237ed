"""Dead letters: listed without their content, requeued to where they came from."""

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.contracts import DeadLetter
from shared.kafka import ensure_topics
from shared.settings import Settings
from shared.topics import DEAD_LETTERS
from tipline.deadletters import read_letters, requeue, summary


async def test_show_hides_content_and_requeue_sends_it_back(settings: Settings) -> None:
    origin = f"tipline.test.requeue-{uuid.uuid4().hex[:8]}"
    marker, key = f"MARK{uuid.uuid4().hex}", f"r-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [DEAD_LETTERS, origin])
    letter = DeadLetter(service="validation", topic=origin, partition=0, offset=7, key=key,
                        value=f'{{"platform": "{marker}"}}',
                        error=f"ValidationError: 1 validation error\n  input_value='{marker}'")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(DEAD_LETTERS, letter.model_dump_json().encode(),
                                     key=key.encode())
    finally:
        await producer.stop()

    mine = [(p, o, d) for p, o, d in await read_letters(settings, timeout_s=10) if d.key == key]
    assert len(mine) == 1
    shown = summary(*mine[0])
    assert shown["topic"] == origin and shown["from"] == "0:7"
    assert marker not in str(shown)

    (sent,) = await requeue(settings, [mine[0][:2]])
    assert sent.topic == origin
    consumer = AIOKafkaConsumer(origin, bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        records = []
        for _ in range(50):
            for part in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(part)
            if records:
                break
    finally:
        await consumer.stop()
    assert [(r.key, r.value) for r in records] == [(key.encode(), letter.value.encode())]
    # The letter is still there: requeuing removes nothing.
    again = [d for _, _, d in await read_letters(settings, timeout_s=10) if d.key == key]
    assert len(again) == 1
