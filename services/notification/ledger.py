"""The referral ledger: which agency got which report, and who owes it a correction.

Referral and retraction meet here, in Redis, one Lua script at a time, so they never interleave
inside a step. The scripts run the state machine of `referrals.py` beside this file (which says
what each step does, in Python, and is checked against them). Each (report, agency) moves through:

    referring -> referred -> correcting -> corrected

- `claim` is the moment of referral: a report already retracted is never claimed, so it is never
  referred; agencies already claimed before the retraction are finished, then corrected.
- `confirm_referrals` runs once the referral notice is delivered. If the report was retracted
  meanwhile, the agency moves straight to `correcting after referral` and the referral service
  sends the correction itself, after its own referral.
- `retract` marks the report (the mark is never removed) and moves every `referred` agency to
  `correcting`. Agencies still `referring` are left to the referral service.
So an agency is only ever corrected after its referral was delivered, and every agency that got a
referral of a retracted report reaches one of the correcting states, whose name says which
service sends its correction. Corrections carry a stable notice id, so a correction sent again
on a redelivery is one correction to the agency.

Amendments after release (`amend`, asked for by the analyst API in an AmendReport) are kept by
version, never replaced, and owed at once only to agencies whose referral was delivered; the
referral service sends every amendment to the agencies it refers, after their referral. A
retracted report's agencies were told to disregard it: an amendment is kept but sent to none.
Amendments leave the states above untouched, so the retraction invariant is exactly as before.
"""

from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter
from redis.commands.core import AsyncScript

from services.notification.referrals import (
    Amend,
    Amended,
    Claim,
    ClaimAgencies,
    Confirmed,
    Retract,
    Retraction,
)
from shared.contracts import Priority, Retractor
from shared.store import Store, run_script

# Keeps the report's priority (its corrections carry it too). Returns the retraction mark's
# presence, the agencies to refer, then (after a '') those this service owes a correction not yet
# confirmed (a referral whose corrections were cut short is handled again).
_CLAIM = """
redis.call('SET', KEYS[4], ARGV[1], 'NX')
local retracted = redis.call('EXISTS', KEYS[2])
if retracted == 0 then
  for i = 2, #ARGV do redis.call('HSETNX', KEYS[1], ARGV[i], 'referring') end
end
local out, owed = {retracted}, {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i + 1] == 'referring' then table.insert(out, all[i]) end
  if all[i + 1] == 'correcting after referral' then table.insert(owed, all[i]) end
end
table.insert(out, '')
for _, agency in ipairs(owed) do table.insert(out, agency) end
return out
"""

# Returns the agencies now owed a correction, then (after a '') every amendment so far, as
# version/JSON pairs.
_CONFIRM_REFERRALS = """
local retracted = redis.call('EXISTS', KEYS[2]) == 1
local out = {}
for _, agency in ipairs(ARGV) do
  local state = redis.call('HGET', KEYS[1], agency)
  if state == 'referring' then
    if retracted then state = 'correcting after referral' else state = 'referred' end
    redis.call('HSET', KEYS[1], agency, state)
  end
  if state == 'correcting after referral' then table.insert(out, agency) end
end
table.insert(out, '')
for _, item in ipairs(redis.call('HGETALL', KEYS[3])) do table.insert(out, item) end
return out
"""

# Returns whether this mark is the first, the report's priority ('' when never claimed), the
# mark (the first one: at, by, actor, reason), then the agencies now owed a correction.
_RETRACT = """
local first = redis.call('HSETNX', KEYS[2], 'at', ARGV[1])
if first == 1 then
  redis.call('HSET', KEYS[2], 'by', ARGV[2], 'actor', ARGV[3], 'reason', ARGV[4])
end
local mark = redis.call('HMGET', KEYS[2], 'at', 'by', 'actor', 'reason')
local out = {first, redis.call('GET', KEYS[4]) or '', mark[1], mark[2], mark[3], mark[4]}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local state = all[i + 1]
  if state == 'referred' then
    redis.call('HSET', KEYS[1], all[i], 'correcting')
    state = 'correcting'
  end
  if state == 'correcting' then table.insert(out, all[i]) end
end
return out
"""

_CONFIRM_CORRECTIONS = """
for _, agency in ipairs(ARGV) do
  local state = redis.call('HGET', KEYS[1], agency)
  if state == 'correcting' or state == 'correcting after referral' then
    redis.call('HSET', KEYS[1], agency, 'corrected')
  end
end
return #ARGV
"""

# An amendment after referral: kept under its version (the first copy stays) and owed at once to
# every agency whose referral was delivered, unless the report was retracted. Agencies still
# `referring` get every amendment from the referral service, after their referral.
_AMEND = """
redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[2])
local retracted = redis.call('EXISTS', KEYS[2])
local out = {retracted}
if retracted == 1 then return out end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i + 1] == 'referred' then table.insert(out, all[i]) end
end
return out
"""

_RETRACTOR: TypeAdapter[Retractor] = TypeAdapter(Retractor)


def _mark(at: object, by: object, actor: object, reason: object) -> Retract:
    return Retract(str(at), _RETRACTOR.validate_python(str(by)), str(actor), str(reason))


class Ledger:
    def __init__(self, redis: Store) -> None:
        self._redis = redis
        self._claim = redis.register_script(_CLAIM)
        self._confirm_referrals = redis.register_script(_CONFIRM_REFERRALS)
        self._retract = redis.register_script(_RETRACT)
        self._confirm_corrections = redis.register_script(_CONFIRM_CORRECTIONS)
        self._amend = redis.register_script(_AMEND)

    @staticmethod
    def _keys(report_id: str) -> list[str]:
        # One hash tag a report, so all four keys live on one slot of a Redis cluster.
        return [
            f"tipline:{{{report_id}}}:ledger",
            f"tipline:{{{report_id}}}:retracted",
            f"tipline:{{{report_id}}}:amendments",
            f"tipline:{{{report_id}}}:priority",
        ]

    async def claim(self, reports: Mapping[str, ClaimAgencies]) -> dict[str, Claim]:
        """Claim each report's agencies for referral, in one round trip: what each report may
        now refer, and whether it was retracted first."""
        out = await self._each(self._claim, {
            r: [c.priority.name.lower(), *c.agencies] for r, c in reports.items()})
        claims = {}
        for report_id, (retracted, *found) in out.items():
            agencies = [str(a) for a in found]
            split = agencies.index("")
            claims[report_id] = Claim(bool(retracted), sorted(agencies[:split]),
                                      sorted(agencies[split + 1:]))
        return claims

    async def confirm_referrals(self, reports: Mapping[str, list[str]]) -> dict[str, Confirmed]:
        """Record delivered referrals: which agencies are now owed a correction, and the
        amendments they are owed (read in the same step, so none is missed or sent twice)."""
        out = await self._each(self._confirm_referrals, {r: list(a) for r, a in reports.items()})
        confirmed = {}
        for report_id, found in out.items():
            found = [str(x) for x in found]
            split = found.index("")
            pairs = found[split + 1:]
            confirmed[report_id] = Confirmed(found[:split], sorted(
                (Amend(int(v), a) for v, a in zip(pairs[::2], pairs[1::2], strict=True)),
                key=lambda a: a.version))
        return confirmed

    async def retract(self, marks: Mapping[str, Retract]) -> dict[str, Retraction]:
        """Mark reports retracted; the agencies each now owes a correction, with the report's
        first mark and its priority, which the corrections carry."""
        out = await self._each(self._retract, {
            r: [m.at, m.by, m.actor, m.reason] for r, m in marks.items()})
        return {r: Retraction(bool(first), sorted(map(str, to_correct)),
                              _mark(at, by, actor, reason),
                              Priority[(str(priority) or "normal").upper()])
                for r, (first, priority, at, by, actor, reason, *to_correct) in out.items()}

    async def confirm_corrections(self, reports: Mapping[str, list[str]]) -> None:
        await self._each(self._confirm_corrections, {r: list(a) for r, a in reports.items()})

    async def _each(self, script: AsyncScript, args: dict[str, list[str]]) -> dict[str, Any]:
        """One script a report, all in one pipeline (each on its report's cluster slot)."""
        if not args:
            return {}
        calls = [(self._keys(report_id), argv) for report_id, argv in args.items()]
        answers = await run_script(self._redis, script, calls)
        return dict(zip(args, answers, strict=True))

    async def states(self, report_id: str) -> dict[str, str]:
        states = await self._redis.hgetall(self._keys(report_id)[0])
        return {str(k): str(v) for k, v in states.items()}

    async def retractions(self, report_ids: list[str]) -> dict[str, Retract | None]:
        """Each report's retraction mark, or None; one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for report_id in report_ids:
                pipe.hgetall(self._keys(report_id)[1])
            marks = await pipe.execute()
        return {r: _mark(m["at"], m["by"], m.get("actor", ""), m["reason"]) if m else None
                for r, m in zip(report_ids, marks, strict=True)}

    async def received(self, report_id: str, agency_id: str) -> bool:
        """Whether this agency was ever claimed for this report: its referral is delivered, or
        on its way (an agency can ack as soon as the notice lands, before it is confirmed)."""
        return bool(await self._redis.hexists(self._keys(report_id)[0], agency_id))

    async def referred_before(self, report_ids: list[str]) -> set[str]:
        """The reports that have agencies in the ledger at all (one round trip)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for report_id in report_ids:
                pipe.exists(self._keys(report_id)[0])
            found = await pipe.execute()
        return {r for r, n in zip(report_ids, found, strict=True) if n}

    async def amend(self, amendments: Mapping[str, Amend]) -> dict[str, Amended]:
        """Keep amendments, in one round trip: the agencies each is owed to now (none once the
        report is retracted)."""
        out = await self._each(self._amend, {r: [str(a.version), a.amendment]
                                             for r, a in amendments.items()})
        return {r: Amended(amendments[r].version, sorted(map(str, to_notify)), bool(retracted))
                for r, (retracted, *to_notify) in out.items()}
