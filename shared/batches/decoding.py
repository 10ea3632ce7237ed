"""Decoding a fetched batch: each record on its own, its seal checked (shared/seals.py), its JSON
parsed and validated once, straight into the contract model. A record that cannot be (bad JSON,
wrong schema, no valid seal) is kept aside with its cause, for the dead letters; the rest go on.
"""

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiokafka import ConsumerRecord
from faststream.message import StreamMessage
from opentelemetry.propagate import extract
from pydantic import BaseModel, ValidationError

from shared.seals import HEADER as SEAL
from shared.seals import Seals, Unsealed, covers_headers

M = TypeVar("M", bound=BaseModel)
# What a record that cannot be read raises while it is decoded.
UNREADABLE = (Unsealed, ValidationError, ValueError, UnicodeDecodeError)


@dataclass
class Batch:
    """The records of one fetch: those decoded (in step with their events) and those that could
    not be, with why."""

    records: list[ConsumerRecord[Any, Any]] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    unreadable: list[tuple[ConsumerRecord[Any, Any], Exception]] = field(default_factory=list)
    _traces: dict[bytes, Any] | None = None

    def trace_of(self, key: bytes) -> Any:
        """The trace context of the last record of this report in the batch, or None."""
        if self._traces is None:  # read once a batch, on the first publish
            self._traces = {}
            for record in self.records:
                if not covers_headers(header(record, SEAL)):
                    continue  # nothing vouches for its trace headers (shared/seals.py)
                headers = {k: bytes(v).decode("latin-1") for k, v in record.headers or ()}
                if "traceparent" in headers and record.key is not None:
                    self._traces[record.key] = extract(headers)
        return self._traces.get(key)


def header(record: ConsumerRecord[Any, Any], name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode("ascii", "replace")
    return None


def decode(record: ConsumerRecord[Any, Any], model: type[M], seals: Seals | None) -> M:
    """One record into `model`, its seal checked first; raises one of UNREADABLE."""
    if seals is not None:
        seals.check(record.topic, record.key, record.value or b"", header(record, SEAL),
                    record.headers or ())
    return model.model_validate_json(record.value or b"")


def decode_batch(records: Any, model: type[M], seals: Seals | None) -> Batch:
    batch = Batch()
    for record in records:
        try:
            batch.events.append(decode(record, model, seals))
            batch.records.append(record)
        except UNREADABLE as exc:
            batch.unreadable.append((record, exc))
    return batch


class Decoder(Generic[M]):
    """One subscriber's decoder (FastStream's `decoder=` seam): the handler gets the events; the
    Batch they came from waits here for the subscriber's Delivery, which takes it by its message
    (`take`). A subscriber handles one batch at a time, so one waits at most."""

    def __init__(self, model: type[M], seals: Seals | None) -> None:
        self.model = model
        self.seals = seals
        self._last: tuple[StreamMessage[Any], Batch] | None = None

    async def __call__(self, msg: StreamMessage[Any]) -> list[M]:
        batch = decode_batch(msg.raw_message, self.model, self.seals)
        self._last = (msg, batch)
        return list(batch.events)

    def take(self, msg: StreamMessage[Any]) -> Batch:
        """The Batch `msg` was decoded into (decoded now if it was not)."""
        last, self._last = self._last, None
        if last is not None and last[0] is msg:
            return last[1]
        return decode_batch(msg.raw_message, self.model, self.seals)
