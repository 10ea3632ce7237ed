"""A stand-in for the part of aiokafka's producer that `shared.batches.Publisher` uses."""

import asyncio
from typing import Any


class Builder:
    """A producer batch: its records, as appended."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.closed = False

    def append(self, *, key: bytes, value: bytes, timestamp: None, headers: Any) -> object:
        assert not self.closed, "appended to a closed batch"
        self.records.append((key, value))
        return self

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """One partition a topic; each record of a batch is handed to `deliver`, in order, and the
    batch is acknowledged at once."""

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> Builder:
        return Builder()

    async def send_batch(self, batch: Builder, topic: str, *, partition: int
                         ) -> "asyncio.Future[None]":
        # Closed: complete, so aiokafka sends it at once rather than after linger_ms.
        assert batch.closed, "a batch sent open"
        for key, value in batch.records:
            await self.deliver(topic, key, value)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def deliver(self, topic: str, key: bytes, value: bytes) -> None:
        raise NotImplementedError
