"""A report's status and timeline: what happened to it, in order, each fact once.

Intake owns it: it records its own facts, and every other service's arrive as TimelineFacts events
(shared/facts.py). Each fact is keyed by its event id, so a redelivered one adds nothing. Nothing
is ever removed: a retraction is one more entry and a status, not an erasure.
"""

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.intake.status import rank
from shared.audiences import Kind
from shared.contracts import Fact, TimelineFacts, now
from shared.store import Store, run_script

# The machine of services/intake/status.py: each fact once, the status forward by rank only.
# ARGV: when, then (event id, entry, status, rank) a fact, then field/value pairs to set.
_RECORD = """
local added = 0
local facts = tonumber(ARGV[2])
for i = 0, facts - 1 do
  local at = 3 + i * 4
  if redis.call('SADD', KEYS[2], ARGV[at]) == 1 then
    added = added + 1
    redis.call('RPUSH', KEYS[3], ARGV[at + 1])
    if ARGV[at + 2] ~= '' then
      local rank = tonumber(redis.call('HGET', KEYS[1], 'rank') or '0')
      if tonumber(ARGV[at + 3]) >= rank then
        redis.call('HSET', KEYS[1], 'status', ARGV[at + 2], 'rank', ARGV[at + 3])
      end
    end
  end
end
for at = 3 + facts * 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[at], ARGV[at + 1]) end
if added > 0 then redis.call('HSET', KEYS[1], 'updated_at', ARGV[1]) end
return added
"""


@dataclass(frozen=True)
class History:
    """What a report's timeline holds: its status (services/intake/status.py), the report that
    superseded it, and its entries in the order they happened."""

    status: str | None
    superseded_by: str | None
    entries: list[dict[str, Any]]


class Timeline:
    def __init__(self, redis: Store) -> None:
        self._redis = redis
        self._record = redis.register_script(_RECORD)

    @staticmethod
    def _keys(report_id: str) -> list[str]:
        tag = f"tipline:{{{report_id}}}"
        return [f"{tag}:report", f"{tag}:seen", f"{tag}:timeline"]

    async def record(
        self,
        report_id: str,
        event_id: str,
        what: str,
        *,
        status: str | None = None,
        at: datetime | None = None,
        **detail: Any,
    ) -> bool:
        """Append one fact; False when this event was recorded before."""
        return bool(await self.record_all(report_id, [Fact(event_id, what, status, detail)], at=at))

    async def record_all(
        self,
        report_id: str,
        facts: Iterable[Fact],
        *,
        at: datetime | None = None,
        fields: dict[str, str] | None = None,
    ) -> int:
        """Append facts (and set report fields) in one step; returns how many were new."""
        return int(await self._record(keys=self._keys(report_id),
                                      args=self._args(facts, at, fields)))

    async def record_many(
        self, facts: Mapping[str, Iterable[Fact]],
        fields: Mapping[str, dict[str, str]] | None = None,
    ) -> None:
        """Facts (and report fields) of many reports, in one round trip: one script a report, so
        each stays on its report's slot of a Redis cluster."""
        fields = fields or {}
        reports = dict.fromkeys([*facts, *fields])
        if not reports:
            return
        await run_script(self._redis, self._record, [
            (self._keys(r), self._args(facts.get(r, ()), None, fields.get(r))) for r in reports])

    async def record_events(self, events: Iterable[TimelineFacts]) -> None:
        """Other services' facts, in one round trip: one script a report for all the records of
        the batch (each on its report's slot), each entry at the time its record was sent. The
        records in the order they were sent: each service's records share a partition, but a
        fetch brings partitions one after another. Facts before fields, as the script applies
        them: each fact once, the status by rank, a later value of a field over an earlier."""
        facts: dict[str, list[tuple[Fact, datetime]]] = {}
        fields: dict[str, dict[str, str]] = {}
        for event in sorted(events, key=lambda e: e.occurred_at):
            for report_id, told in event.facts.items():
                facts.setdefault(report_id, []).extend((f, event.occurred_at) for f in told)
            for report_id, values in event.fields.items():
                fields.setdefault(report_id, {}).update(values)
        reports = dict.fromkeys([*facts, *fields])
        if reports:
            await run_script(self._redis, self._record, [
                (self._keys(r), self._args_at(facts.get(r, []), fields.get(r)))
                for r in reports])

    @staticmethod
    def _args(facts: Iterable[Fact], at: datetime | None = None,
              fields: dict[str, str] | None = None) -> list[str | int]:
        when = at or now()
        return Timeline._args_at([(f, when) for f in facts], fields, when)

    @staticmethod
    def _args_at(facts: list[tuple[Fact, datetime]], fields: dict[str, str] | None = None,
                 last: datetime | None = None) -> list[str | int]:
        """The script's arguments: facts each at its own time; `updated_at` the latest."""
        args: list[str | int] = []
        for fact, at in facts:
            entry = json.dumps({"at": at.isoformat(), "what": fact.what, **fact.detail},
                               default=str)
            args += [fact.event_id, entry, fact.status or "", rank(fact.status)]
        pairs = [x for item in (fields or {}).items() for x in item]
        when = max((at for _, at in facts), default=last or now())
        return [when.isoformat(), len(args) // 4, *args, *pairs]

    async def fields(self, report_id: str) -> dict[str, str]:
        return dict(await self._redis.hgetall(self._keys(report_id)[0]))  # type: ignore[arg-type]

    async def history(self, report_id: str) -> History:
        fields = await self.fields(report_id)
        return History(fields.get("status"), fields.get("superseded_by") or None,
                       await self.entries(report_id))

    async def entries(self, report_id: str) -> list[dict[str, Any]]:
        """The entries in the order they happened: each service's facts travel on their own
        partition, so a later hop's record can be fetched a batch before an earlier hop's."""
        entries = [json.loads(e)
                   for e in await self._redis.lrange(self._keys(report_id)[2], 0, -1)]
        return sorted(entries, key=lambda e: _instant(e["at"]))


# --- what the status view reads from the entries (pure) ------------------------------------------

def _instant(at: str) -> datetime:
    """An entry's time, comparable with any other's (one written without a zone is UTC)."""
    when = datetime.fromisoformat(at)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def retraction_of(entries: Iterable[Mapping[str, Any]]) -> dict[str, str | None] | None:
    """Once the report is retracted: when, and by whom and why as the ESP's own steps say (its
    request, or its abandonment); "tipline" when it asked for nothing. None before."""
    entries = list(entries)
    done = next((e for e in entries if e["what"] == Kind.RETRACTED), None)
    if done is None:
        return None
    asked = next((e for e in entries
                  if e["what"] in (Kind.RETRACTION_REQUESTED, Kind.ABANDONED)), None)
    if asked is None:
        return {"at": done["at"], "by": "tipline", "reason": None}
    return {"at": done["at"], "by": "system" if asked["what"] == Kind.ABANDONED else "esp",
            "reason": asked.get("reason")}
