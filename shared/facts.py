"""Telling a report's timeline what happened: intake keeps the timeline (it answers the ESP's
status view), so every other service sends its facts there as ReportFacts events.

Services write facts through a `Recorder`: `Facts` publishes them on tipline.reports.facts, keyed
by report id (so a report's facts stay in order); intake's `Timeline` records them. Each fact
carries its own event id, so a redelivered one is recorded once.
"""

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from shared import topics
from shared.batches import Publisher
from shared.contracts import Fact, ReportFacts, derived_id


class Recorder(Protocol):
    async def record(self, report_id: str, event_id: str, what: str, *,
                     status: str | None = None, **detail: Any) -> object: ...

    async def record_many(self, facts: Mapping[str, Iterable[Fact]],
                          fields: Mapping[str, dict[str, str]] | None = None) -> None: ...


class Facts:
    """A service's facts, on their way to the timeline: one event a report, all in flight."""

    def __init__(self, publish: Publisher) -> None:
        self._publish = publish

    async def record(self, report_id: str, event_id: str, what: str, *,
                     status: str | None = None, **detail: Any) -> None:
        await self.record_many({report_id: [Fact(event_id, what, status, detail)]})

    async def record_many(self, facts: Mapping[str, Iterable[Fact]],
                          fields: Mapping[str, dict[str, str]] | None = None) -> None:
        fields = fields or {}
        events = [report_facts(r, list(facts.get(r, ())), fields.get(r, {}))
                  for r in dict.fromkeys([*facts, *fields])]
        await self._publish.send((e, topics.REPORT_FACTS, e.report_id) for e in events
                                 if e.facts or e.fields)


def report_facts(report_id: str, facts: list[Fact], fields: dict[str, str]) -> ReportFacts:
    # Derived from what it carries: a redelivery publishes the same event.
    event_id = derived_id("facts", report_id, *(f.event_id for f in facts),
                          *(f"{k}={v}" for k, v in sorted(fields.items())))
    return ReportFacts(event_id=event_id, report_id=report_id, facts=facts, fields=fields)
