"""Telling a report's timeline what happened: intake keeps the timeline (it answers the ESP's
status view), so every other service sends its facts there, as TimelineFacts on
tipline.reports.facts: each fact as the ESP is told it, or not at all (shared/audiences.py).
Intake faces the internet, and holds nothing of the ESP's report the ESP may not see.

Services write facts through a `Recorder`: `Facts` publishes a batch's facts, for all its reports,
as one record (or a few, for a large batch) keyed by the service, so one service's facts stay in
order; intake's `Timeline` records them. Each fact carries its own event id, so a redelivered one
is recorded once. (A record a report cost as much as the event it describes.)
"""

from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any, Protocol

from shared import topics
from shared.audiences import Kind, for_esp
from shared.batches import Publisher
from shared.contracts import Fact, TimelineFacts, derived_id

CHUNK = 200  # reports a record: well under the broker's record size, with 50 agencies each


class Recorder(Protocol):
    async def record(self, report_id: str, event_id: str, what: Kind, *,
                     status: str | None = None, **detail: Any) -> object: ...

    async def record_many(self, facts: Mapping[str, Iterable[Fact]],
                          fields: Mapping[str, dict[str, str]] | None = None) -> None: ...


class Facts:
    """A service's facts, on their way to the timeline."""

    def __init__(self, publish: Publisher) -> None:
        self._publish = publish

    async def record(self, report_id: str, event_id: str, what: Kind, *,
                     status: str | None = None, **detail: Any) -> None:
        await self.record_many({report_id: [Fact(event_id, what, status, detail)]})

    async def record_many(self, facts: Mapping[str, Iterable[Fact]],
                          fields: Mapping[str, dict[str, str]] | None = None) -> None:
        """Sent with the batch's next send, after its records (`Publisher.later`)."""
        service = self._publish.broker.service
        await self._publish.later([(event, topics.REPORT_FACTS, service)
                                   for event in timeline_facts(facts, fields or {})])


def timeline_facts(facts: Mapping[str, Iterable[Fact]],
                   fields: Mapping[str, dict[str, str]]) -> list[TimelineFacts]:
    """The records that carry these facts (as the ESP is told them: the others stay where they
    were learned) and fields: one a CHUNK of reports."""
    listed = {r: list({e.event_id: e for fact in f if (e := for_esp(r, fact))}.values())
              for r, f in facts.items()}
    reports = [r for r in dict.fromkeys([*listed, *fields]) if listed.get(r) or fields.get(r)]
    out, it = [], iter(reports)
    while chunk := list(islice(it, CHUNK)):
        # Derived from what it carries: a redelivery publishes the same record.
        event_id = derived_id("facts", *(f"{r}:{f.event_id}" for r in chunk
                                         for f in listed.get(r, ())),
                              *(f"{r}:{k}={v}" for r in chunk
                                for k, v in sorted(fields.get(r, {}).items())))
        out.append(TimelineFacts(
            event_id=event_id, facts={r: listed[r] for r in chunk if listed.get(r)},
            fields={r: dict(fields[r]) for r in chunk if fields.get(r)}))
    return out
