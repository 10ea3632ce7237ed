"""Writing to an internal topic as a tipline service does: the record sealed with its key."""

from pathlib import Path

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel

from shared.seals import Seals


async def send_sealed(
    producer: AIOKafkaProducer, keys_dir: Path, service: str, topic: str, event: BaseModel,
    key: str,
) -> None:
    value = event.model_dump_json().encode()
    headers = Seals(keys_dir).headers(service, topic, key.encode(), value)
    await producer.send_and_wait(topic, value, key=key.encode(), headers=headers)
